"""Source model -> ONNX with the shipped tensor names and shapes (build time, needs TensorFlow)."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnx_tools import (
    canonicalize,
    drop_inner_value_info,
    order_outputs,
    rename_tensors,
    set_io_shape,
)
from specs import ModelSpec
from tflite_densify import densify_tflite

log = logging.getLogger(__name__)

OPSET = 17


def _tf2onnx_tfjs(spec: ModelSpec, model_json: Path) -> onnx.ModelProto:
    """tf2onnx's own TF.js reader (needs the patches in convert_patches)."""
    import tensorflow as tf
    from tf2onnx import convert as tf2onnx_convert

    shape_override = {k: list(v) for k, v in spec.convert_shapes.items()} or None
    with tf.device("/cpu:0"):
        # _convert_common is what `python -m tf2onnx.convert --tfjs` calls; it has no public twin.
        model, _ = tf2onnx_convert._convert_common(
            None,
            name=model_json.name,
            opset=OPSET,
            input_names=list(spec.inputs.values()),
            output_names=list(spec.outputs.values()),
            shape_override=shape_override,
            tfjs_path=str(model_json),
            continue_on_error=False,
            tensors_to_rename={},
        )
    return model


def _tf2onnx_tfjs_graph(spec: ModelSpec, model_json: Path) -> onnx.ModelProto:
    """tfjs-graph-converter rebuilds a TF graph (fused ops split), then tf2onnx converts it."""
    from references import load_tfjs_graph
    from tf2onnx import convert as tf2onnx_convert

    graph_def = load_tfjs_graph(model_json).as_graph_def()
    model, _ = tf2onnx_convert.from_graph_def(
        graph_def,
        name=model_json.name,
        input_names=list(spec.inputs.values()),
        output_names=list(spec.outputs.values()),
        opset=OPSET,
    )
    return model


def _tf2onnx_tflite(spec: ModelSpec, tflite: Path, work: Path) -> onnx.ModelProto:
    from tf2onnx import convert as tf2onnx_convert

    if spec.densify:
        dense = work / f"{tflite.stem}_dense.tflite"
        densify_tflite(tflite, dense)
        tflite = dense
    model, _ = tf2onnx_convert.from_tflite(
        str(tflite),
        input_names=list(spec.inputs.values()),
        output_names=list(spec.outputs.values()),
        opset=OPSET,
    )
    return model


def convert(spec: ModelSpec, original: Path, work: Path) -> onnx.ModelProto:
    """Convert ``original`` (TF.js model.json or .tflite) to a checked fp32 ONNX model.

    The result has the spec's input/output names, output order and declared shapes.
    """
    if spec.method == "tfjs":
        model = _tf2onnx_tfjs(spec, original)
    elif spec.method == "tfjs-graph":
        model = _tf2onnx_tfjs_graph(spec, original)
    elif spec.method == "tflite":
        model = _tf2onnx_tflite(spec, original, work)
    else:
        raise ValueError(f"{spec.name}: unknown conversion method {spec.method!r}")

    renames = {src: dst for dst, src in (*spec.inputs.items(), *spec.outputs.items())}
    rename_tensors(model, {k: v for k, v in renames.items() if k != v})
    order_outputs(model, list(spec.outputs))
    if spec.io_shapes:
        for name, dims in spec.io_shapes.items():
            set_io_shape(model, name, dims)
        if any(not isinstance(d, int) for dims in spec.io_shapes.values() for d in dims):
            drop_inner_value_info(model)
    dropped = canonicalize(model, spec.name)
    if dropped:
        log.warning("%s: dropped %d nodes no output depends on", spec.name, dropped)
    onnx.checker.check_model(model, full_check=True)
    return model
