"""The shipped ONNX files agree with models/manifest.json: present, intact, loadable, same I/O.

Needs only onnx and onnxruntime (no converter toolchain). The numeric comparison with the
original runtimes happens in models/build.py and is recorded in the manifest.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MANIFEST_PATH = MODELS_DIR / "manifest.json"
MANIFEST: dict[str, Any] = json.loads(MANIFEST_PATH.read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST["models"]
ORT_TYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64"}

by_model = pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])


@functools.cache
def _session(file: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(MODELS_DIR / file), options, providers=["CPUExecutionProvider"])


def test_manifest_names_are_unique_and_match_files() -> None:
    names = [e["name"] for e in ENTRIES]
    assert len(names) == len(set(names))
    assert names, "manifest lists no models"
    for entry in ENTRIES:
        assert entry["file"] == f"{entry['name']}.onnx"
        assert (MODELS_DIR / entry["file"]).is_file(), entry["file"]


@by_model
def test_file_matches_manifest_sha256_and_size(entry: dict[str, Any]) -> None:
    path = MODELS_DIR / entry["file"]
    assert path.stat().st_size == entry["bytes"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]


@by_model
def test_session_io_matches_manifest(entry: dict[str, Any]) -> None:
    sess = _session(entry["file"])
    for actual, declared in (
        (sess.get_inputs(), entry["inputs"]),
        (sess.get_outputs(), entry["outputs"]),
    ):
        assert [a.name for a in actual] == [d["name"] for d in declared]
        assert [ORT_TYPES[a.type] for a in actual] == [d["dtype"] for d in declared]
        assert [list(a.shape) for a in actual] == [d["shape"] for d in declared]


@by_model
def test_runs_at_a_verified_size_with_declared_output_shapes(entry: dict[str, Any]) -> None:
    """One inference at the first size the build verified; symbolic dims must resolve
    consistently (the same name -> the same size in every output)."""
    sess = _session(entry["file"])
    (inp,) = entry["inputs"]
    shape = entry["verification"]["cases"][0]["input_shape"]
    rng = np.random.default_rng(0)
    feed = rng.integers(0, 256, size=shape).astype(inp["dtype"])
    if inp["dtype"] != "int32":
        feed = (feed / 255.0).astype(inp["dtype"])
    outputs = sess.run(None, {inp["name"]: feed})
    bound: dict[str, int] = {}
    for value, declared in zip(outputs, entry["outputs"], strict=True):
        assert value.dtype == np.dtype(declared["dtype"])
        assert np.isfinite(value).all(), declared["name"]
        assert value.ndim == len(declared["shape"])
        for size, dim in zip(value.shape, declared["shape"], strict=True):
            if isinstance(dim, int):
                assert size == dim, declared["name"]
            else:
                assert bound.setdefault(dim, size) == size, (declared["name"], dim)


@by_model
def test_weight_storage_matches_manifest(entry: dict[str, Any]) -> None:
    """fp16 files store weights as float16 initializers each read by a Cast to float32 only;
    fp32 files have no float16 initializers."""
    model = onnx.load(str(MODELS_DIR / entry["file"]))
    graph = model.graph
    half = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    weights = entry["weights"]
    if not weights["storage"].startswith("float16"):
        assert not half
        return
    assert len(half) == weights["fp16_initializers"] > 0
    consumers: dict[str, list[onnx.NodeProto]] = {name: [] for name in half}
    for node in graph.node:
        for name in node.input:
            if name in consumers:
                consumers[name].append(node)
    for name, nodes in consumers.items():
        assert nodes, f"{name} is unused"
        for node in nodes:
            assert node.op_type == "Cast", (name, node.op_type)
            (to,) = [a.i for a in node.attribute if a.name == "to"]
            assert to == onnx.TensorProto.FLOAT
    assert weights["bit_identical_to_fp32"] is True


def _float32_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network with every float16 initializer + Cast replaced by a float32 initializer."""
    from onnx import numpy_helper

    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    graph = twin.graph
    half = {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    keep_nodes = []
    new_inits = []
    for node in graph.node:
        if node.op_type == "Cast" and node.input[0] in half:
            values = numpy_helper.to_array(half[node.input[0]]).astype(np.float32)
            new_inits.append(numpy_helper.from_array(values, node.output[0]))
        else:
            keep_nodes.append(node)
    del graph.node[:]
    graph.node.extend(keep_nodes)
    kept = [i for i in graph.initializer if i.name not in half]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return twin


@pytest.mark.parametrize(
    "entry",
    [e for e in ENTRIES if e["weights"]["storage"].startswith("float16")],
    ids=[e["name"] for e in ENTRIES if e["weights"]["storage"].startswith("float16")],
)
def test_float16_storage_gives_bit_identical_outputs(entry: dict[str, Any]) -> None:
    """Storing weights as float16 + Cast loses nothing: a float32 twin built from the same values
    gives exactly the same outputs (ONNX Runtime folds the Cast at load)."""
    model = onnx.load(str(MODELS_DIR / entry["file"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    twin = ort.InferenceSession(
        _float32_twin(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (inp,) = entry["inputs"]
    shape = entry["verification"]["cases"][0]["input_shape"]
    feed = np.random.default_rng(1).integers(0, 256, size=shape).astype(inp["dtype"])
    if inp["dtype"] != "int32":
        feed = (feed / 255.0).astype(inp["dtype"])
    shipped = _session(entry["file"]).run(None, {inp["name"]: feed})
    reference = twin.run(None, {inp["name"]: feed})
    for a, b, out in zip(shipped, reference, entry["outputs"], strict=True):
        assert np.array_equal(a, b), out["name"]
