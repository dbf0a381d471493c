"""Append PoseNet's single-pose decode to the ONNX graph, so the runtime returns (K, 3), not maps.

The appended nodes compute, for every keypoint k (all K at once, dynamic grid size):

1. ``flat = Reshape(heatmap, [1, H*W, K])``; ``peak = ReduceMax(flat, axis 1)``;
2. the first flat index holding ``peak`` (row-major order, :mod:`avatarlink.decode`'s tie rule):
   ``ReduceMin(Where(flat == peak, arange(H*W), H*W - 1))``. An explicit rule rather than
   ``ArgMax``, whose tie behaviour is up to each execution provider's kernel;
3. ``row = index // W``, ``col = index - row * W``;
4. ``GatherElements`` of dy and dx at that index from ``Reshape(offsets, [1, H*W, 2K])``;
5. ``y = (row * stride + dy) + origin``, ``x = (col * stride + dx) + origin`` (model-input pixels,
   corner convention, see :mod:`avatarlink.decode`), ``score = Sigmoid(peak)``;
6. output ``keypoints``: float32 (K, 3) = (y, x, score).

The letterbox back to source pixels stays in numpy (34 multiply-adds).

The ``onnx`` package is needed only to *build* the fused file (by ``models/build.py`` or
``python -m avatarlink.fuse SRC DST``); at run time the fused file is an ordinary ONNX model.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatarlink.decode import POSENET_GRID_ORIGIN, POSENET_STRIDE

log = logging.getLogger(__name__)

FUSED_OUTPUT = "keypoints"
"""Name of the fused decoder's output: float32 (K, 3) = y, x (model-input pixels), score."""

FUSED_SUFFIX = "_fused"
"""A fused model sits next to its source: ``posenet_mobilenet.onnx`` -> ``..._fused.onnx``."""

_PREFIX = "decode/"


@dataclass(frozen=True)
class DecodeGraphSpec:
    """What the appended decoder reads and writes.

    Attributes:
        heatmap: name of the (1, H, W, K) logits tensor.
        offsets: name of the (1, H, W, 2K) offsets tensor (K dy then K dx, input pixels).
        output: name of the (K, 3) result.
        num_keypoints: K.
        stride: model-input pixels per heatmap cell.
        origin: corner-convention pixel coordinate of cell 0's centre.
    """

    heatmap: str = "heatmap"
    offsets: str = "offsets"
    output: str = FUSED_OUTPUT
    num_keypoints: int = 17
    stride: float = POSENET_STRIDE
    origin: float = POSENET_GRID_ORIGIN


def fused_path(model_path: Path) -> Path:
    """Where the fused variant of ``model_path`` lives (same folder, ``_fused`` suffix)."""
    return model_path.with_name(f"{model_path.stem}{FUSED_SUFFIX}{model_path.suffix}")


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ValueError("model has no default-domain opset import")


def decode_nodes(spec: DecodeGraphSpec, opset: int) -> tuple[list[Any], list[Any]]:
    """ONNX nodes and initializers of the decoder (names prefixed ``decode/``).

    Reads ``spec.heatmap`` and ``spec.offsets``, writes ``spec.output``. Works for opsets 13..21
    (``ReduceMax``/``ReduceMin`` take ``axes`` as an attribute before opset 18, an input after).
    """
    from onnx import TensorProto, helper, numpy_helper

    if opset < 13:
        raise ValueError(f"the fused decoder needs opset >= 13, model has {opset}")
    k = spec.num_keypoints
    p = _PREFIX

    def const(name: str, value: Any, dtype: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), p + name)

    inits = [
        const("flat_shape_k", [1, -1, k], np.int64),
        const("flat_shape_2k", [1, -1, 2 * k], np.int64),
        const("i3_k", [3, k], np.int64),
        const("axis1", [1], np.int64),
        const("i2", [2], np.int64),
        const("one_i", 1, np.int64),
        const("zero_f", 0.0, np.float32),
        const("one_f", 1.0, np.float32),
        const("stride", spec.stride, np.float32),
        const("origin", spec.origin, np.float32),
    ]

    def reduce(op: str, x: str, out: str) -> Any:
        if opset >= 18:
            return helper.make_node(op, [x, p + "axis1"], [out], name=out, keepdims=1)
        return helper.make_node(op, [x], [out], name=out, axes=[1], keepdims=1)

    def node(op: str, inputs: Sequence[str], output: str, **attrs: Any) -> Any:
        return helper.make_node(op, list(inputs), [output], name=output, **attrs)

    nodes = [
        # grid size from the heatmap's runtime shape
        node("Shape", [spec.heatmap], p + "shape"),
        node("Gather", [p + "shape", p + "i2"], p + "w"),  # [W] int64
        node("Reshape", [spec.heatmap, p + "flat_shape_k"], p + "flat"),  # [1, HW, K]
        node("Shape", [p + "flat"], p + "flat_shape"),
        node("Gather", [p + "flat_shape", p + "one_i"], p + "hw"),  # scalar HW
        # first index of the maximum, row-major (explicit tie rule)
        reduce("ReduceMax", p + "flat", p + "peak"),  # [1, 1, K]
        node("Equal", [p + "flat", p + "peak"], p + "is_peak"),
        node("Cast", [p + "hw"], p + "hw_f", to=TensorProto.FLOAT),
        node("Range", [p + "zero_f", p + "hw_f", p + "one_f"], p + "arange"),  # [HW]
        node("Unsqueeze", [p + "arange", p + "axis1"], p + "arange_col"),  # [HW, 1]
        node("Sub", [p + "hw_f", p + "one_f"], p + "last_f"),
        node("Where", [p + "is_peak", p + "arange_col", p + "last_f"], p + "candidates"),
        reduce("ReduceMin", p + "candidates", p + "index_f"),  # [1, 1, K]
        node("Cast", [p + "index_f"], p + "index", to=TensorProto.INT64),
        # offsets at the peak: one gather for dy (channels 0..K-1) and dx (K..2K-1)
        node("Reshape", [spec.offsets, p + "flat_shape_2k"], p + "off_flat"),  # [1, HW, 2K]
        node("Concat", [p + "index", p + "index"], p + "index2", axis=2),  # [1, 1, 2K]
        node("GatherElements", [p + "off_flat", p + "index2"], p + "dydx", axis=1),
        # cell -> model-input pixels: (cell * stride + offset) + origin
        node("Div", [p + "index", p + "w"], p + "row"),
        node("Mul", [p + "row", p + "w"], p + "row_w"),
        node("Sub", [p + "index", p + "row_w"], p + "col"),
        node("Concat", [p + "row", p + "col"], p + "rowcol", axis=2),  # [1, 1, 2K]
        node("Cast", [p + "rowcol"], p + "rowcol_f", to=TensorProto.FLOAT),
        node("Mul", [p + "rowcol_f", p + "stride"], p + "scaled"),
        node("Add", [p + "scaled", p + "dydx"], p + "shifted"),
        node("Add", [p + "shifted", p + "origin"], p + "yx_flat"),  # [1, 1, 2K]: y..., x...
        node("Sigmoid", [p + "peak"], p + "score"),  # [1, 1, K]
        node("Concat", [p + "yx_flat", p + "score"], p + "yxs_flat", axis=2),  # [1, 1, 3K]
        node("Reshape", [p + "yxs_flat", p + "i3_k"], p + "yxs_3k"),  # [3, K]
        node("Transpose", [p + "yxs_3k"], spec.output, perm=[1, 0]),  # [K, 3]
    ]
    return nodes, inits


def make_decode_model(spec: DecodeGraphSpec | None = None, opset: int = 17) -> Any:
    """A standalone model: inputs heatmap (1, H, W, K) and offsets (1, H, W, 2K) -> (K, 3).

    Used to time the appended nodes alone and to test them on synthetic tensors.
    """
    import onnx
    from onnx import TensorProto, helper

    spec = spec or DecodeGraphSpec()
    k = spec.num_keypoints
    nodes, inits = decode_nodes(spec, opset)
    graph = helper.make_graph(
        nodes,
        "posenet_decode",
        [
            helper.make_tensor_value_info(
                spec.heatmap, TensorProto.FLOAT, [1, "grid_height", "grid_width", k]
            ),
            helper.make_tensor_value_info(
                spec.offsets, TensorProto.FLOAT, [1, "grid_height", "grid_width", 2 * k]
            ),
        ],
        [helper.make_tensor_value_info(spec.output, TensorProto.FLOAT, [k, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _prune(graph: Any) -> None:
    """Drop nodes and initializers no graph output depends on."""
    needed = {o.name for o in graph.output}
    kept = []
    for n in reversed(list(graph.node)):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]  # stale for pruned tensors; ONNX Runtime re-infers shapes


def fuse_decode(model: Any, spec: DecodeGraphSpec | None = None) -> Any:
    """A copy of ``model`` whose only output is the decoded (K, 3) ``keypoints``.

    Args:
        model: an ``onnx.ModelProto`` with outputs ``spec.heatmap`` and ``spec.offsets``.
        spec: tensor names and grid geometry; ``num_keypoints`` is read from the heatmap output's
            static last dimension when it has one.

    Returns:
        The fused ``onnx.ModelProto`` (checked); dead heads (displacements) are pruned.
    """
    import onnx
    from onnx import TensorProto, helper

    spec = spec or DecodeGraphSpec()
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    graph = fused.graph
    outputs = {o.name: o for o in graph.output}
    for name in (spec.heatmap, spec.offsets):
        if name not in outputs:
            raise ValueError(f"model has no output {name!r} (outputs: {sorted(outputs)})")
    last = outputs[spec.heatmap].type.tensor_type.shape.dim
    if last and last[-1].HasField("dim_value"):
        spec = DecodeGraphSpec(
            spec.heatmap,
            spec.offsets,
            spec.output,
            int(last[-1].dim_value),
            spec.stride,
            spec.origin,
        )
    nodes, inits = decode_nodes(spec, _opset(fused))
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer}
    clash = taken & ({o for n in nodes for o in n.output} | {i.name for i in inits})
    if clash:
        raise ValueError(f"decoder tensor names already used in the model: {sorted(clash)}")
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(spec.output, TensorProto.FLOAT, [spec.num_keypoints, 3])
    )
    _prune(graph)
    props = {p.key: p.value for p in fused.metadata_props}
    props.update(
        {
            "decode": "posenet single-pose: first row-major argmax + offsets (avatarlink.fuse)",
            "decode_output": f"{spec.output} ({spec.num_keypoints}, 3) = y, x, score; "
            f"y, x in model-input pixels, corner convention (cell*{spec.stride:g} + offset "
            f"+ {spec.origin:g})",
        }
    )
    del fused.metadata_props[:]
    for key, value in props.items():
        fused.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(fused, full_check=True)
    return fused


@dataclass(frozen=True)
class FusedBuild:
    """What :func:`build_fused_model` wrote (for a build manifest).

    Attributes:
        path: the fused file.
        sha256: its hex digest.
        bytes: its size.
        nodes: node count of the fused graph.
        source_sha256: hex digest of the model it was built from.
    """

    path: Path
    sha256: str
    bytes: int
    nodes: int
    source_sha256: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_fused_model(
    src: Path, dst: Path | None = None, spec: DecodeGraphSpec | None = None
) -> FusedBuild:
    """Fuse the decoder into the ONNX file ``src``; write it to ``dst`` (default: ``fused_path``).

    This is the step ``models/build.py`` calls after writing ``posenet_mobilenet.onnx``.
    """
    import onnx

    src = Path(src)
    dst = Path(dst) if dst is not None else fused_path(src)
    raw = src.read_bytes()
    fused = fuse_decode(onnx.load_from_string(raw), spec)
    props = {p.key: p.value for p in fused.metadata_props}
    props["decode_source_sha256"] = _sha256(raw)
    del fused.metadata_props[:]
    for key, value in props.items():
        fused.metadata_props.add(key=key, value=value)
    data = fused.SerializeToString()
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(dst)
    log.info("wrote %s (%d nodes, %d bytes)", dst, len(fused.graph.node), len(data))
    return FusedBuild(dst, _sha256(data), len(data), len(fused.graph.node), _sha256(raw))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avatarlink.fuse SRC [DST]``: write the fused PoseNet model."""
    parser = argparse.ArgumentParser(prog="python -m avatarlink.fuse", description=__doc__)
    parser.add_argument("src", type=Path, help="PoseNet ONNX file with heatmap/offsets outputs")
    parser.add_argument("dst", type=Path, nargs="?", help="output (default: SRC with _fused)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_fused_model(args.src, args.dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
