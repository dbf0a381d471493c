"""Compatibility patches for the pinned converter toolchain (build time only).

tf2onnx 1.17 and tfjs-graph-converter 1.6.3 predate TensorFlow 2.21, numpy 2 and onnx 1.23. The
patches below are the smallest changes that let them convert the TF.js graph models:

1. numpy 2 removed ``np.product``, which tf2onnx still calls (tfjs_utils, graph).
2. TF 2.21's grappler leaves ``_input_shapes`` / ``_output_shapes`` attributes (lists of
   TensorShapeProto) on nodes; onnx 1.23's ``make_attribute`` cannot infer their type, so tf2onnx
   must ignore them like its other TF-internal attributes.
3. TF.js JSON stores ``_FusedConv2D`` nodes without the ``TArgs`` attribute that TF 2.21's op
   definition requires for shape inference; it is rebuilt from ``T`` and ``num_args``.

:func:`import_tfjs_graph_converter` additionally imports tfjs-graph-converter without running
``tensorflowjs/__init__.py`` (which pulls in tf_keras, TF Decision Forests, jax, ...): the converter
only needs two leaf modules of tensorflowjs, so its parent packages are registered as bare modules.

Call :func:`apply` once, after importing TensorFlow and before converting anything.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any

_APPLIED = False


def apply() -> None:
    """Patch numpy and tf2onnx in place (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    import numpy as np

    if not hasattr(np, "product"):  # patch 1
        np.product = np.prod  # noqa: NPY003, NPY201 - restoring the removed alias on purpose

    import tf2onnx.tf_utils as tf_utils

    tf_utils.TF_IGNORED_NODE_ATTRS.update({"_input_shapes", "_output_shapes"})  # patch 2

    import tf2onnx.tfjs_utils as tfjs_utils

    original = tfjs_utils.tfjs_node_to_tf_node_def

    def node_def_with_targs(node: dict[str, Any]) -> Any:  # patch 3
        node_def = original(node)
        if node_def.op == "_FusedConv2D" and "TArgs" not in node_def.attr:
            n_args = max(node_def.attr["num_args"].i, 1)
            node_def.attr["TArgs"].list.type.extend([node_def.attr["T"].type] * n_args)
        return node_def

    tfjs_utils.tfjs_node_to_tf_node_def = node_def_with_targs
    _APPLIED = True


def import_tfjs_graph_converter() -> types.ModuleType:
    """Return ``tfjs_graph_converter.api`` without executing ``tensorflowjs/__init__.py``."""
    if "tfjs_graph_converter.api" in sys.modules:
        return sys.modules["tfjs_graph_converter.api"]
    spec = importlib.util.find_spec("tensorflowjs")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflowjs is not installed (pip install --no-deps tensorflowjs)")
    root = next(iter(spec.submodule_search_locations))
    for name, path in (
        ("tensorflowjs", root),
        ("tensorflowjs.converters", os.path.join(root, "converters")),
    ):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module
    import tfjs_graph_converter.api as api

    return api
