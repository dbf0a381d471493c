"""Densify sparse weights in a .tflite file so tf2onnx can read it (build time, needs TensorFlow).

mediapipe's ``pose_detection.tflite`` stores 38 float16 weight tensors in TFLite's sparse format
and expands them at run time with ``DENSIFY`` ops; tf2onnx cannot read sparse tensors. This pass
takes the dense values from the TFLite interpreter itself (after one invocation), stores them as
ordinary constant buffers, and drops the DENSIFY ops. The result computes bit-identical outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DENSIFY_OPCODE = 124  # tflite BuiltinOperator.DENSIFY


def densify_tflite(src: Path, dst: Path) -> int:
    """Write ``src`` with every DENSIFY op folded into a dense constant to ``dst``.

    Returns the number of DENSIFY ops removed.
    """
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    interpreter = tf.lite.Interpreter(
        model_path=str(src),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=(
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()

    model = flatbuffer_utils.read_model(str(src))
    if len(model.subgraphs) != 1:
        raise ValueError(f"{src}: expected one subgraph, found {len(model.subgraphs)}")
    graph = model.subgraphs[0]
    kept = []
    removed = 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != DENSIFY_OPCODE:
            kept.append(op)
            continue
        sparse_index, dense_index = int(op.inputs[0]), int(op.outputs[0])
        dense = np.ascontiguousarray(interpreter.get_tensor(dense_index))
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(dense.tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        graph.tensors[dense_index].buffer = len(model.buffers) - 1
        # The sparse source tensor is now unused: detach its data so nothing tries to read it.
        graph.tensors[sparse_index].sparsity = None
        graph.tensors[sparse_index].buffer = 0
        removed += 1
    graph.operators = kept
    flatbuffer_utils.write_model(model, str(dst))
    log.info("densified %d tensors: %s -> %s", removed, src.name, dst.name)
    return removed
