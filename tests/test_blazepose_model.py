"""BlazePose with the real networks: photos, world points, rotation, tracking, bad input, COCO."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatarlink.benches.blazepose import (
    SequenceSpec,
    accuracy_detector,
    accuracy_gt_boxes,
    load_people,
    synthetic_sequence,
)
from avatarlink.models.blazepose import BlazePoseConfig, BlazePoseEstimator, blazepose_to_coco17
from avatarlink.models.registry import get_spec
from avatarlink.preprocess import Box
from avatarlink.roi import RotatedRect
from avatarlink.session import SessionOptions
from avatarlink.skeletons import BlazePose33, KeypointLayout
from avatarlink.sources import SAMPLE_IMAGE, read_image
from avatarlink.types import Space
from tests.conftest import shared_data

SPEC = get_spec("blazepose-full")
DETECTOR = SPEC.path.parent / BlazePoseConfig().detector_file
pytestmark = pytest.mark.skipif(
    not (SPEC.path.is_file() and DETECTOR.is_file()),
    reason=f"model files not found: {SPEC.path}, {DETECTOR}",
)
OPTIONS = SessionOptions(device="cpu", threads=1)
B = BlazePose33


def make(**config: object) -> BlazePoseEstimator:
    return BlazePoseEstimator(SPEC, OPTIONS, BlazePoseConfig(**config))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def estimator() -> BlazePoseEstimator:
    return make()


@pytest.fixture(scope="module")
def skier() -> np.ndarray:
    """A full-body COCO photo with one person (640 x 425)."""
    return read_image(shared_data("coco", "000000000785.jpg"))


def test_astronaut_upper_body(estimator: BlazePoseEstimator) -> None:
    estimator.reset()
    image = read_image(SAMPLE_IMAGE)
    result = estimator.estimate(image)
    kp, world = result.image, result.world
    assert world is not None
    assert kp.num_persons == 1 and world.num_persons == 1
    assert kp.layout is KeypointLayout.BLAZEPOSE33 and kp.space is Space.IMAGE
    assert world.space is Space.WORLD and kp.xyz.shape == world.xyz.shape == (1, 33, 3)
    assert np.isfinite(kp.xyz).all() and np.isfinite(world.xyz).all()
    xy = kp.xyz[0, :, :2]
    # The face is in the upper half, the shoulders below it; the person's left is image right.
    assert 0 < xy[B.NOSE, 1] < image.shape[0] / 2
    assert xy[B.LEFT_SHOULDER, 1] > xy[B.NOSE, 1] and xy[B.RIGHT_SHOULDER, 1] > xy[B.NOSE, 1]
    assert xy[B.LEFT_SHOULDER, 0] > xy[B.RIGHT_SHOULDER, 0]
    assert kp.score[0, B.NOSE] > 0.9 and kp.person_score[0] > 0.9
    assert set(result.timings_ms) == {"preprocess", "detector", "landmark", "postprocess"}


def _check_world(w: np.ndarray) -> None:
    """Adult proportions in the documented frame: metres, +Y up, +X the camera's right."""
    hip_centre = (w[B.LEFT_HIP] + w[B.RIGHT_HIP]) / 2
    np.testing.assert_allclose(hip_centre, 0.0, atol=1e-6)
    shoulder_width = np.linalg.norm(w[B.LEFT_SHOULDER] - w[B.RIGHT_SHOULDER])
    assert 0.25 <= shoulder_width <= 0.5
    assert 0.1 <= np.linalg.norm(w[B.LEFT_HIP] - w[B.RIGHT_HIP]) <= 0.4
    upper_arm = np.linalg.norm(w[B.LEFT_SHOULDER] - w[B.LEFT_ELBOW])
    assert 0.15 <= upper_arm <= 0.45
    assert w[B.NOSE, 1] > 0.4  # head above the hips
    assert w[B.LEFT_SHOULDER, 0] > w[B.RIGHT_SHOULDER, 0]  # facing the camera: left is +X


def test_world_landmarks_are_plausible(estimator: BlazePoseEstimator, skier: np.ndarray) -> None:
    estimator.reset()
    result = estimator.estimate(skier)
    assert result.world is not None and result.world.num_persons == 1
    w = result.world.xyz[0]
    _check_world(w)
    # A standing full body: ankles well below the hips, heels and toes near the ankles.
    assert w[B.LEFT_ANKLE, 1] < -0.5 and w[B.RIGHT_ANKLE, 1] < -0.5
    assert np.linalg.norm(w[B.LEFT_HEEL] - w[B.LEFT_ANKLE]) < 0.2
    assert np.linalg.norm(w[B.LEFT_FOOT_INDEX] - w[B.LEFT_ANKLE]) < 0.3
    np.testing.assert_array_equal(result.world.score, result.image.score)


def test_rotated_frame_gives_rotated_keypoints(
    estimator: BlazePoseEstimator, skier: np.ndarray
) -> None:
    """A camera rolled by 90 degrees: image points rotate with the frame (rotated ROI and its
    inverse), world points rotate about the camera axis (the ROI rotation undone)."""
    estimator.reset()
    upright = estimator.estimate(skier)
    estimator.reset()
    turned = estimator.estimate(cv2.rotate(skier, cv2.ROTATE_90_CLOCKWISE))
    assert upright.world is not None and turned.world is not None
    assert turned.image.num_persons == 1
    h = skier.shape[0]
    xy = upright.image.xyz[0, :, :2]
    expected = np.stack([h - xy[:, 1], xy[:, 0]], axis=1)  # clockwise: (x, y) -> (H - y, x)
    err = np.linalg.norm(turned.image.xyz[0, :, :2] - expected, axis=1)
    assert np.median(err) < 6.0  # px, for a person about 350 px tall
    w = upright.world.xyz[0]
    w_expected = np.stack([w[:, 1], -w[:, 0], w[:, 2]], axis=1)
    assert np.median(np.linalg.norm(turned.world.xyz[0] - w_expected, axis=1)) < 0.06  # m


def test_two_people_are_tracked_with_stable_ids(skier: np.ndarray) -> None:
    batter = read_image(shared_data("coco", "000000196141.jpg"))
    frame = np.hstack([skier[:, 200:560], cv2.resize(batter, (640, 425))[:, 180:480]])
    est = make(max_persons=2)
    previous = None
    for shift in range(0, 30, 3):  # both move right by 3 px per frame
        m = np.array([[1, 0, shift], [0, 1, 0]], np.float64)
        moved = cv2.warpAffine(frame, m, frame.shape[1::-1])
        kp = est.estimate(moved).image
        assert kp.num_persons == 2
        assert kp.ids.tolist() == [0, 1]
        hips = kp.xyz[:, [B.LEFT_HIP, B.RIGHT_HIP], 0].mean(axis=1)
        if previous is not None:
            np.testing.assert_allclose(hips - previous, 3.0, atol=3.0)
        previous = hips
    assert est.stats.detector_runs == 1


def test_region_picks_the_person_in_the_box(skier: np.ndarray) -> None:
    batter = read_image(shared_data("coco", "000000196141.jpg"))
    frame = np.ascontiguousarray(
        np.hstack([skier[:, 200:560], cv2.resize(batter, (640, 425))[:, 180:480]])
    )
    est = make()
    for x0 in (0, 360):  # left half: the skier; right half: the batter
        kp = est.estimate(frame, Box(x0, 0, 300, 425)).image
        assert kp.num_persons == 1 and kp.ids.tolist() == [-1]
        hip_x = kp.xyz[0, [B.LEFT_HIP, B.RIGHT_HIP], 0].mean()
        assert x0 < hip_x < x0 + 300
    assert est.stats.detector_runs == 0  # regions do not touch the tracker


def test_tracking_runs_the_detector_rarely_and_redetects(skier: np.ndarray) -> None:
    spec = SequenceSpec(sway=12, exit=6, gone=4, enter=6)
    frames = synthetic_sequence(skier, spec)
    est = make()
    found = [est.estimate(f).image.num_persons for f in frames]
    runs = est.stats.detector_runs
    assert runs <= spec.gone + spec.exit + spec.enter  # never during the sways
    assert runs < len(frames) / 2
    gone_start = spec.sway + spec.exit
    assert found[:8] == [1] * 8
    assert found[gone_start : gone_start + spec.gone] == [0] * spec.gone
    assert found[-spec.sway :] == [1] * spec.sway  # re-detected after re-entering
    # The same frames without tracking: the detector runs on every one.
    static = make(tracking=False)
    for f in frames[:5]:
        static.estimate(f)
    assert static.stats.detector_runs == 5


@pytest.mark.parametrize(
    "shape", [(0, 0, 3), (0, 10, 3), (1, 1, 3), (3, 5, 3), (480, 640, 3), (2, 2000, 3)]
)
def test_tiny_empty_and_blank_frames_have_no_person(shape: tuple[int, int, int]) -> None:
    est = make()
    for _ in range(2):
        result = est.estimate(np.zeros(shape, np.uint8))
        assert result.image.num_persons == 0
        assert result.world is not None and result.world.num_persons == 0


def test_person_cut_at_the_frame_edge(skier: np.ndarray) -> None:
    est = make()
    for cut in (430, 400, 330):  # the person is at x 280..500: keep only part of them
        est.reset()
        for _ in range(3):
            kp = est.estimate(np.ascontiguousarray(skier[:, :cut])).image
            assert kp.num_persons <= 1
            assert np.isfinite(kp.xyz).all()


def test_degenerate_roi_means_no_person_then_redetection(skier: np.ndarray) -> None:
    est = make()
    assert est.estimate(skier).image.num_persons == 1
    for bad in (RotatedRect(np.nan, 10.0, 100.0), RotatedRect(100.0, 100.0, 1e-9)):
        est.tracker._tracks[0].roi = bad  # what NaN landmarks would leave behind
        assert est.estimate(skier).image.num_persons == 1  # lost, re-detected in the same frame
    runs = est.stats.detector_runs
    assert runs == 3
    # The landmark model on a degenerate ROI itself does not crash.
    lm = est._landmarks(skier, RotatedRect(100.0, 100.0, 1e-9))
    assert lm is None or lm.flag >= 0.0


def test_coco17_mapping_of_a_real_result(estimator: BlazePoseEstimator, skier: np.ndarray) -> None:
    estimator.reset()
    kp = estimator.estimate(skier).image
    coco = blazepose_to_coco17(kp)
    np.testing.assert_array_equal(coco.xyz[0, 0], kp.xyz[0, B.NOSE])
    np.testing.assert_array_equal(coco.xyz[0, 16], kp.xyz[0, B.RIGHT_ANKLE])


def test_estimate_cli_writes_world_keypoints(tmp_path: Path) -> None:
    from avatarlink.cli import main

    out = tmp_path / "out.json"
    assert main(["estimate", str(SAMPLE_IMAGE), "--model", "blazepose-full", "--json", str(out),
                 "--device", "cpu", "--threads", "1"]) == 0  # fmt: skip
    record = json.loads(out.read_text().splitlines()[0])
    assert record["layout"] == "blazepose33"
    (person,) = record["persons"]
    assert len(person["keypoints"]) == 33 and all(len(k) == 3 for k in person["keypoints"])
    world = np.array(person["world_keypoints"], np.float64)
    assert world.shape == (33, 3)
    _check_world(world)


def test_coco_accuracy() -> None:
    """Detector recall, PCK@0.2 and OKS AP on the annotated COCO people (regression guard;
    MediaPipe Pose full: AP 0.550, PCK@0.2 0.840 with ground-truth boxes)."""
    people, ignore = load_people(shared_data("coco"))
    assert len(people) == 12
    boxed = accuracy_gt_boxes(make(tracking=False), people)
    assert boxed.found == 12
    assert boxed.pck >= 0.9
    assert boxed.ap >= 0.5
    # Heatmap refinement moves points onto their peaks: closer to the truth, no PCK lost (with
    # the wrong heatmap grid origin, 4 i + 2 instead of 4 i px, it makes them worse).
    refined = accuracy_gt_boxes(make(tracking=False, heatmap_refine="quadratic"), people)
    assert refined.error_px < boxed.error_px
    assert refined.pck >= boxed.pck - 0.01
    # The detector favours the most prominent person of its input: the whole photo alone finds
    # about one person per photo, the tiled search about half of the annotated people.
    single = accuracy_detector(
        make(tracking=False, max_persons=10, detector_tiles=0), people, ignore
    )
    assert single.found >= 3 and single.predictions >= 4
    tiled = accuracy_detector(make(tracking=False, max_persons=10), people, ignore)
    assert tiled.found >= 5
    assert tiled.pck >= 0.5 and tiled.pck > single.pck


@pytest.mark.parametrize("name", ["blazepose-lite", "blazepose-full", "blazepose-heavy"])
def test_every_variant_runs_and_its_heatmap_activation_is_known(name: str) -> None:
    spec = get_spec(name)
    if not spec.path.is_file():
        pytest.skip(f"model file not found: {spec.path}")
    est = BlazePoseEstimator(spec, OPTIONS, BlazePoseConfig(heatmap_refine="quadratic"))
    # ONNX Runtime computes every output of a file, requested or not: the shipped files carry
    # only what the adapter reads (no segmentation mask, which cost ~40% of full's time).
    lm = est.landmark_model
    assert sorted(lm.session.output_names) == sorted(lm.requested)
    image = read_image(SAMPLE_IMAGE)
    result = est.estimate(image)
    assert result.image.num_persons == 1 and result.world is not None
    w = result.world.xyz[0]
    assert 0.25 <= np.linalg.norm(w[B.LEFT_SHOULDER] - w[B.RIGHT_SHOULDER]) <= 0.5
    # Logit heatmaps have negative background; probability heatmaps never do.
    roi = est.tracker._tracks[0].roi
    heatmap = est.landmark_model.infer(est.landmark_model.preprocess(image, roi))["heatmap"]
    if est.heatmap_activation == "logit":
        assert heatmap.min() < -1.0
    else:
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
