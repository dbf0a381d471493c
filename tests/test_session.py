"""ONNX Runtime session: provider choice, clear errors for missing/corrupt files and absent CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatarlink.errors import ConfigError, ModelError
from avatarlink.session import InferenceSession, SessionOptions, default_threads

onnx = pytest.importorskip("onnx")


def _tiny_model(path: Path) -> Path:
    """A model y = x + 1 with a dynamic batch, input 'x' float32 (N, 3)."""
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_runs_on_cpu_and_reads_io_from_the_model(tmp_path: Path) -> None:
    session = InferenceSession(_tiny_model(tmp_path / "tiny.onnx"), SessionOptions("cpu", 1))
    assert session.provider == "CPUExecutionProvider"
    assert [i.name for i in session.inputs] == ["x"]
    assert session.inputs[0].shape == (None, 3)
    assert session.inputs[0].dtype == np.float32
    out = session.run({"x": np.zeros((2, 3), np.float32)})
    assert np.array_equal(out["y"], np.ones((2, 3), np.float32))


def test_auto_device_falls_back_to_a_provider_that_really_runs(tmp_path: Path) -> None:
    session = InferenceSession(_tiny_model(tmp_path / "tiny.onnx"), SessionOptions("auto"))
    assert session.provider in session.providers
    assert "CPUExecutionProvider" in session.providers


def test_missing_model_names_the_file_and_how_to_restore(tmp_path: Path) -> None:
    missing = tmp_path / "movenet_lightning.onnx"
    with pytest.raises(ModelError, match=r"not found: .*movenet_lightning\.onnx.*git checkout"):
        InferenceSession(missing)


def test_corrupt_model_names_the_file_and_how_to_restore(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelError, match=r"broken\.onnx could not be loaded.*restore"):
        InferenceSession(corrupt)


def test_cuda_request_without_usable_cuda_says_so_in_one_line(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    try:
        session = InferenceSession(model, SessionOptions("cuda"))
    except ModelError as exc:
        text = str(exc)
        assert "\n" not in text
        assert "CUDA" in text and ("--device auto" in text or "--device cpu" in text)
    else:  # a machine with working CUDA
        assert session.provider == "CUDAExecutionProvider"


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="device must be one of"):
        SessionOptions("gpu")
    with pytest.raises(ConfigError, match="threads"):
        SessionOptions("cpu", 0)
    assert default_threads() >= 1
