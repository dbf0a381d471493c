"""The original runtimes, run for comparison with ONNX Runtime (build time, needs TensorFlow).

- TF.js graph models: the graph is rebuilt as a TensorFlow graph by tfjs-graph-converter and run in
  a TF session (the same ops TF.js runs, on TensorFlow's CPU kernels).
- mediapipe .tflite models: the TFLite interpreter, built-in kernels without default delegates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Reference(Protocol):
    """Runs the source model: feeds and fetches are keyed by source tensor names."""

    def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        """Outputs for ``fetches``, in that order."""
        ...


def load_tfjs_graph(model_json: Path) -> Any:
    """The TF.js graph model as a ``tf.Graph`` (fused ops split, as TF's TFLite-compatible ops)."""
    from convert_patches import import_tfjs_graph_converter

    api = import_tfjs_graph_converter()
    from tfjs_graph_converter.common import CompatMode

    return api.load_graph_model(str(model_json), compat_mode=CompatMode.TFLITE)


class TfjsGraphReference:
    """A TF.js graph model in a TensorFlow session; placeholders may be made shape-free."""

    def __init__(
        self, model_json: Path, free_placeholders: Mapping[str, Sequence[int]] | None = None
    ):
        """``free_placeholders``: placeholder name -> new shape (-1 = any) to allow other sizes."""
        import tensorflow as tf

        free = dict(free_placeholders or {})
        graph_def = load_tfjs_graph(model_json).as_graph_def()
        for node in graph_def.node:
            if node.op == "Placeholder" and node.name in free:
                shape = node.attr["shape"].shape
                del shape.dim[:]
                for size in free[node.name]:
                    shape.dim.add().size = size
        self._graph = tf.Graph()
        with self._graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self._session = tf.compat.v1.Session(graph=self._graph)

    def resolve(self, tensor: str) -> str:
        """The graph tensor computing the TF.js tensor ``tensor`` (``op:index``).

        tfjs-graph-converter splits fused TF.js ops into a chain named ``op/Conv2D``,
        ``op/BiasAdd``, ...; the value of ``op`` is then the chain's last node.
        """
        op_name, index = tensor.rsplit(":", 1)
        try:
            self._graph.get_operation_by_name(op_name)
            return tensor
        except KeyError:
            pass
        chain = [op for op in self._graph.get_operations() if op.name.startswith(op_name + "/")]
        inner = {inp.op.name for op in chain for inp in op.inputs}
        ends = [op.name for op in chain if op.name not in inner]
        if len(ends) != 1:
            raise KeyError(f"{tensor}: not in the converted TF graph (candidates {ends[:5]})")
        return f"{ends[0]}:{index}"

    def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        """Run the graph; names are TF.js tensor names such as ``input:0``."""
        out = self._session.run(
            [self.resolve(f) for f in fetches],
            feed_dict={self.resolve(k): v for k, v in feeds.items()},
        )
        return [np.asarray(o) for o in out]


class TfliteReference:
    """A .tflite model in the TFLite interpreter (built-in kernels, no default delegate)."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self._interpreter = tf.lite.Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=(
                tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )
        self._interpreter.allocate_tensors()
        self._inputs = {d["name"]: d["index"] for d in self._interpreter.get_input_details()}
        self._outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}

    def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        """Run the interpreter; names are the tflite tensor names such as ``input_1``."""
        for name, value in feeds.items():
            self._interpreter.set_tensor(self._inputs[name], value)
        self._interpreter.invoke()
        return [np.array(self._interpreter.get_tensor(self._outputs[n])) for n in fetches]
