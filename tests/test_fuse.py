"""The decode fused into the ONNX graph (avatarlink.fuse) against the numpy decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from avatarlink.decode import decode_offsets
from avatarlink.fuse import (
    FUSED_OUTPUT,
    DecodeGraphSpec,
    build_fused_model,
    fuse_decode,
    fused_path,
    make_decode_model,
)
from avatarlink.models.posenet import run_bound, to_model_input
from avatarlink.models.registry import get_spec
from avatarlink.preprocess import letterbox_image
from avatarlink.session import InferenceSession, SessionOptions
from tests.conftest import shared_data

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper = onnx.helper
TensorProto = onnx.TensorProto

TOLERANCE_PX = 1e-3


def ort_session(model: Any) -> Any:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def random_maps(rng: np.random.Generator, h: int, w: int, k: int = 17) -> tuple[Any, Any]:
    heatmap = np.round(rng.normal(0.0, 3.0, size=(1, h, w, k)), 0).astype(np.float32)  # ties
    heatmap[0, :, :, 2] = 7.0  # one channel entirely tied
    heatmap[0, -1, -1, 3] = 40.0  # saturating logit next to another: 30 vs 40
    heatmap[0, 0, 0, 3] = 30.0
    offsets = rng.normal(0.0, 10.0, size=(1, h, w, 2 * k)).astype(np.float32)
    return heatmap, offsets


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_decode_graph_equals_numpy_on_random_tensors(opset: int) -> None:
    session = ort_session(make_decode_model(opset=opset))
    rng = np.random.default_rng(opset)
    for h, w in [(17, 17), (25, 25), (46, 46), (21, 31), (1, 1), (2, 40)]:
        heatmap, offsets = random_maps(rng, h, w)
        fused = session.run(None, {"heatmap": heatmap, "offsets": offsets})[0]
        expected = decode_offsets(heatmap, offsets)
        assert fused.shape == (17, 3)
        # same float32 operations in the same order: positions agree exactly, ties included
        np.testing.assert_array_equal(fused[:, :2], expected[:, :2])
        np.testing.assert_allclose(fused[:, 2], expected[:, 2], atol=1e-6)


def test_decode_graph_other_keypoint_count_and_stride() -> None:
    spec = DecodeGraphSpec(num_keypoints=5, stride=8.0, origin=4.0)
    session = ort_session(make_decode_model(spec))
    heatmap, offsets = random_maps(np.random.default_rng(1), 12, 9, k=5)
    fused = session.run(None, {"heatmap": heatmap, "offsets": offsets})[0]
    np.testing.assert_array_equal(
        fused[:, :2], decode_offsets(heatmap, offsets, stride=8.0, origin=4.0)[:, :2]
    )


def tiny_posenet_like(opset: int = 17) -> Any:
    """image (1, h, w, 17) -> heatmap = 2 x, offsets = [3 x, -x], displacement_fwd = x + 1."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", ["image", "two"], ["heatmap"]),
        helper.make_node("Mul", ["image", "three"], ["dy"]),
        helper.make_node("Neg", ["image"], ["dx"]),
        helper.make_node("Concat", ["dy", "dx"], ["offsets"], axis=3),
        helper.make_node("Add", ["image", "one"], ["displacement_fwd"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array(v, np.float32), n)
        for n, v in (("two", 2.0), ("three", 3.0), ("one", 1.0))
    ]
    dims: list[Any] = [1, "h", "w"]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", f, [*dims, 17])],
        [
            helper.make_tensor_value_info("heatmap", f, [*dims, 17]),
            helper.make_tensor_value_info("offsets", f, [*dims, 34]),
            helper.make_tensor_value_info("displacement_fwd", f, [*dims, 17]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("opset", [17, 18])
def test_fuse_appends_decode_and_prunes_dead_heads(opset: int) -> None:
    model = tiny_posenet_like(opset)
    fused = fuse_decode(model)
    assert [o.name for o in fused.graph.output] == [FUSED_OUTPUT]
    assert not any(n.op_type == "Add" and "displacement_fwd" in n.output for n in fused.graph.node)
    assert "one" not in {i.name for i in fused.graph.initializer}
    assert len(model.graph.output) == 3  # the input model is left untouched
    x = np.random.default_rng(2).normal(size=(1, 13, 9, 17)).astype(np.float32)
    out = ort_session(fused).run(None, {"image": x})[0]
    expected = decode_offsets(2 * x, np.concatenate([3 * x, -x], axis=3))
    np.testing.assert_array_equal(out[:, :2], expected[:, :2])


def test_fuse_rejects_models_without_the_outputs() -> None:
    model = tiny_posenet_like()
    with pytest.raises(ValueError, match="no output 'heat'"):
        fuse_decode(model, DecodeGraphSpec(heatmap="heat"))


def test_build_fused_model_writes_a_loadable_file(tmp_path: Path) -> None:
    src = tmp_path / "tiny.onnx"
    onnx.save(tiny_posenet_like(), src)
    info = build_fused_model(src)
    assert info.path == fused_path(src) == tmp_path / "tiny_fused.onnx"
    assert info.bytes == info.path.stat().st_size and len(info.sha256) == 64
    props = {p.key: p.value for p in onnx.load(info.path).metadata_props}
    assert "decode" in props and len(props["decode_source_sha256"]) == 64
    session = InferenceSession(info.path, SessionOptions(device="cpu", threads=1))
    assert session.output_names == (FUSED_OUTPUT,)
    x = np.zeros((1, 5, 5, 17), np.float32)
    plain = session.run({"image": x})[FUSED_OUTPUT]
    np.testing.assert_array_equal(run_bound(session, "image", x), plain)


# --- the real PoseNet model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def posenet_sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    raw_path = get_spec("posenet").path
    if not raw_path.is_file():
        pytest.skip(f"PoseNet model not present: {raw_path}")
    shipped = fused_path(raw_path)
    path = shipped
    if not shipped.is_file():
        path = build_fused_model(raw_path, tmp_path_factory.mktemp("fused") / shipped.name).path
    options = SessionOptions(device="cpu", threads=1)
    return InferenceSession(raw_path, options), InferenceSession(path, options)


def compare_real(sessions: tuple[Any, Any], batch: Any) -> float:
    raw, fused = sessions
    maps = raw.run({"image": batch}, ("heatmap", "offsets"))
    expected = decode_offsets(maps["heatmap"], maps["offsets"])
    got = fused.run({"image": batch})[FUSED_OUTPUT]
    np.testing.assert_allclose(got[:, 2], expected[:, 2], atol=1e-5)
    return float(np.abs(got[:, :2] - expected[:, :2]).max())


@pytest.mark.parametrize("size", [257, 385])
def test_fused_posenet_equals_numpy_on_real_photos(
    posenet_sessions: tuple[Any, Any], size: int
) -> None:
    folder = shared_data("coco")
    for path in sorted(folder.glob("*.jpg")):
        image = cv2.imread(str(path))
        assert image is not None, path
        rgb, _ = letterbox_image(image, size, size)
        assert compare_real(posenet_sessions, to_model_input(rgb)) <= TOLERANCE_PX, path.name


def test_fused_posenet_equals_numpy_on_random_inputs(posenet_sessions: tuple[Any, Any]) -> None:
    rng = np.random.default_rng(4)
    for h, w in [(257, 257), (161, 289), (353, 353)]:
        batch = rng.uniform(-1.0, 1.0, size=(1, h, w, 3)).astype(np.float32)
        assert compare_real(posenet_sessions, batch) <= TOLERANCE_PX


def test_shipped_fused_model_is_the_rebuild_of_the_shipped_raw_model(tmp_path: Path) -> None:
    raw_path = get_spec("posenet").path
    shipped = fused_path(raw_path)
    if not (raw_path.is_file() and shipped.is_file()):
        pytest.skip("PoseNet raw or fused model not shipped")
    rebuilt = build_fused_model(raw_path, tmp_path / shipped.name)
    assert rebuilt.path.read_bytes() == shipped.read_bytes(), (
        f"{shipped.name} is stale: rebuild it with `python -m avatarlink.fuse {raw_path}`"
    )
