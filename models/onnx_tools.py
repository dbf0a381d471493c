"""ONNX graph edits used after conversion: renames, input/output shapes, fp16 weight storage.

Only ``onnx`` and ``numpy`` are needed here (no TensorFlow).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str | None
"""One dimension of a tensor shape: a fixed size, a symbolic name, or unknown."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _subgraphs(graph: onnx.GraphProto) -> Iterable[onnx.GraphProto]:
    """``graph`` and every subgraph nested in its nodes' attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _subgraphs(sub)


def rename_tensors(model: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
    """Rename tensors (graph inputs/outputs included) everywhere they are produced or consumed."""
    if not mapping:
        return
    existing = {o for g in _subgraphs(model.graph) for n in g.node for o in n.output}
    existing |= {i.name for g in _subgraphs(model.graph) for i in (*g.input, *g.initializer)}
    clash = (set(mapping.values()) & existing) - set(mapping)
    if clash:
        raise ValueError(f"renaming would clash with existing tensors: {sorted(clash)[:5]}")
    missing = set(mapping) - existing
    if missing:
        raise ValueError(f"tensors to rename not found: {sorted(missing)[:5]}")
    for graph in _subgraphs(model.graph):
        for node in graph.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]
        for info in (*graph.input, *graph.output, *graph.value_info):
            info.name = mapping.get(info.name, info.name)
        for init in graph.initializer:
            init.name = mapping.get(init.name, init.name)


def set_io_shape(model: onnx.ModelProto, name: str, dims: Sequence[Dim]) -> None:
    """Overwrite the declared shape of graph input or output ``name``."""
    for info in (*model.graph.input, *model.graph.output):
        if info.name != name:
            continue
        shape = info.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
        return
    raise ValueError(f"{name!r} is not a graph input or output")


def drop_inner_value_info(model: onnx.ModelProto) -> None:
    """Forget the converter's intermediate shape annotations (stale once an input is dynamic)."""
    del model.graph.value_info[:]


def order_outputs(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Put the graph outputs in the order ``names`` (which must list every output)."""
    by_name = {o.name: o for o in model.graph.output}
    if set(by_name) != set(names):
        raise ValueError(f"outputs {sorted(by_name)} != expected {sorted(names)}")
    ordered = [onnx.ValueInfoProto.FromString(by_name[n].SerializeToString()) for n in names]
    del model.graph.output[:]
    model.graph.output.extend(ordered)


def canonicalize(model: onnx.ModelProto, graph_name: str) -> int:
    """Make the serialised model depend only on the graph's structure, not on converter luck.

    tf2onnx's optimisers iterate over sets of node objects, so the node order, the generated
    names (``const_fold_opt__613``) and which of several equal constants survives vary from run to
    run. This pass orders nodes depth-first from the graph outputs (inputs in order), names every
    inner tensor after its producer (``Conv_12``) or, for weights, its first consumer
    (``Conv_12_in1``), orders initializers by first use and drops the converter's inner shape
    annotations. Graph input/output names are kept. Nodes no output depends on are dropped;
    their count is returned.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output if out}
    order: list[onnx.NodeProto] = []
    done: set[int] = set()
    for output in graph.output:
        start = producer.get(output.name)
        if start is None or id(start) in done:
            continue
        stack = [(start, iter(start.input))]
        on_stack = {id(start)}
        while stack:
            node, inputs = stack[-1]
            for name in inputs:
                dep = producer.get(name)
                if dep is not None and id(dep) not in done and id(dep) not in on_stack:
                    stack.append((dep, iter(dep.input)))
                    on_stack.add(id(dep))
                    break
            else:
                stack.pop()
                done.add(id(node))
                order.append(node)
    dropped = len(graph.node) - len(order)

    keep = {i.name for i in graph.input} | {o.name for o in graph.output}
    initializers = {i.name: i for i in graph.initializer}
    mapping: dict[str, str] = {}
    used_inits: list[TensorProto] = []
    for k, node in enumerate(order):
        node.name = f"{node.op_type}_{k}"
        for j, out in enumerate(node.output):
            if out and out not in keep:
                mapping[out] = node.name if len(node.output) == 1 else f"{node.name}:{j}"
        for j, name in enumerate(node.input):
            if name in initializers and name not in mapping and name not in keep:
                mapping[name] = f"{node.name}_in{j}"
                used_inits.append(initializers[name])
    del graph.node[:]
    graph.node.extend(order)
    del graph.initializer[:]
    graph.initializer.extend(used_inits)
    del graph.value_info[:]
    rename_tensors(model, {old: new for old, new in mapping.items() if old != new})
    graph.name = graph_name
    graph.doc_string = ""
    return dropped


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str], doc: str) -> None:
    """Replace the model's metadata properties and doc string."""
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = doc


def describe_io(model: onnx.ModelProto) -> dict[str, list[dict[str, object]]]:
    """Names, element types and shapes of the graph inputs and outputs, for the manifest."""

    def one(info: onnx.ValueInfoProto) -> dict[str, object]:
        tensor = info.type.tensor_type
        dims: list[Dim] = []
        for d in tensor.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        return {"name": info.name, "dtype": dtype, "shape": dims}

    return {
        "inputs": [one(i) for i in model.graph.input],
        "outputs": [one(o) for o in model.graph.output],
    }


@dataclass(frozen=True)
class Fp16Report:
    """What :func:`store_weights_fp16` changed.

    Attributes:
        converted: float32 initializers now stored as float16 (each behind a Cast node).
        kept_fp32: float32 initializers left alone because fp16 cannot hold them exactly.
        bytes_before: initializer payload bytes before the pass.
        bytes_after: initializer payload bytes after the pass.
    """

    converted: int
    kept_fp32: int
    bytes_before: int
    bytes_after: int


def store_weights_fp16(model: onnx.ModelProto, min_elements: int = 16) -> Fp16Report:
    """Store float32 initializers as float16 + ``Cast`` to float32, only where that is lossless.

    A tensor is converted only when every value survives float32 -> float16 -> float32 bit for bit,
    so the Cast (which ONNX Runtime folds when it loads the model) restores exactly the original
    weights and outputs stay bit-identical. Tensors with fewer than ``min_elements`` values
    (shape constants, scalars) are left as they are.
    """
    graph = model.graph
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    new_inits: list[TensorProto] = []
    casts: list[onnx.NodeProto] = []
    converted = kept = before = after = 0
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        before += arr.nbytes
        if init.data_type != TensorProto.FLOAT or arr.size < min_elements:
            new_inits.append(init)
            after += arr.nbytes
            continue
        half = arr.astype(np.float16)
        if not np.array_equal(half.astype(np.float32).view(np.uint32), arr.view(np.uint32)):
            kept += 1
            new_inits.append(init)
            after += arr.nbytes
            continue
        half_name = f"{init.name}_fp16"
        while half_name in taken:
            half_name += "_"
        taken.add(half_name)
        new_inits.append(numpy_helper.from_array(half, half_name))
        casts.append(
            helper.make_node(
                "Cast", [half_name], [init.name], name=f"{half_name}_cast", to=TensorProto.FLOAT
            )
        )
        converted += 1
        after += half.nbytes
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return Fp16Report(converted, kept, before, after)
