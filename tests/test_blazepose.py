"""BlazePose without the networks: anchors, detection decoding, weighted NMS, landmark decoding,
world-frame conversion and the ROI tracker (driven by a scripted scene)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatarlink.errors import ConfigError
from avatarlink.models.blazepose import (
    BlazePoseConfig,
    PoseLandmarks,
    PoseTracker,
    blazepose_to_coco17,
    decode_landmarks,
    refine_from_heatmap,
    world_to_avatarlink,
)
from avatarlink.models.blazepose_detector import (
    Detections,
    DetectorConfig,
    decode_detections,
    ssd_anchors,
    weighted_nms,
)
from avatarlink.preprocess import Box
from avatarlink.roi import RotatedRect
from avatarlink.skeletons import BlazePose33, KeypointLayout
from avatarlink.types import Keypoints, Space

# --- anchors -----------------------------------------------------------------------------------


def test_anchor_count_and_positions() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6, 2) == (2254, 2)
    # Stride 8 grid: 28 x 28 cells, 2 anchors per cell, row-major, centres at (i + 0.5) * 8.
    np.testing.assert_array_equal(anchors[:4], [[4, 4], [4, 4], [12, 4], [12, 4]])
    np.testing.assert_array_equal(anchors[2 * 28], [4, 12])
    np.testing.assert_array_equal(anchors[1567], [220, 220])
    # Stride 16 grid starts after 1568 anchors.
    np.testing.assert_array_equal(anchors[1568], [8, 8])
    np.testing.assert_array_equal(anchors[1568 + 2], [24, 8])
    # The three stride-32 layers share one 7 x 7 grid with 6 anchors per cell.
    start = 1568 + 392
    np.testing.assert_array_equal(anchors[start : start + 6], np.full((6, 2), 16.0))
    np.testing.assert_array_equal(anchors[start + 6], [48, 16])
    np.testing.assert_array_equal(anchors[-1], [208, 208])
    # Every grid is symmetric about the input centre.
    assert anchors.mean(axis=0) == pytest.approx([112, 112])


def test_anchor_config_variants() -> None:
    cfg = DetectorConfig(input_size=128, strides=(8, 16, 16, 16), anchors_per_layer=2)
    assert ssd_anchors(cfg).shape == (16 * 16 * 2 + 8 * 8 * 6, 2)
    cfg = DetectorConfig(input_size=100, strides=(32,), anchors_per_layer=1, anchor_offset=0.0)
    anchors = ssd_anchors(cfg)
    assert anchors.shape == (16, 2)  # ceil(100 / 32) = 4 cells per side
    np.testing.assert_allclose(anchors[:2], [[0, 0], [25, 0]])


# --- detection decoding and NMS ---------------------------------------------------------------


def _raw_for(
    anchors: np.ndarray, index: int, box: tuple[float, ...], kps: np.ndarray
) -> np.ndarray:
    """Regressor row that decodes to ``box`` (cx, cy, w, h) and keypoints (4, 2), model px."""
    a = anchors[index]
    row = np.zeros(12, np.float32)
    row[0:2] = np.array(box[:2]) - a
    row[2:4] = box[2:4]
    row[4:] = (kps - a).ravel()
    return row


def test_decode_detections_positions_and_threshold() -> None:
    anchors = ssd_anchors()
    reg = np.random.default_rng(1).normal(0, 5, (2254, 12)).astype(np.float32)
    logits = np.full((2254, 1), -8.0, np.float32)
    kps = np.array([[100, 120], [100, 40], [100, 80], [100, 60]], np.float32)
    reg[700] = _raw_for(anchors, 700, (100, 110, 60, 150), kps)
    logits[700] = 2.0
    logits[5] = 1e6  # clipped, no overflow
    boxes, keypoints, scores = decode_detections(reg, logits, anchors, min_score=0.5)
    assert len(scores) == 2
    i = int(np.argmin(scores))
    assert scores[i] == pytest.approx(1 / (1 + math.exp(-2.0)))
    np.testing.assert_allclose(boxes[i], [70, 35, 130, 185], atol=1e-4)
    np.testing.assert_allclose(keypoints[i], kps, atol=1e-4)
    assert scores[1 - i] == pytest.approx(1.0)
    none = decode_detections(reg, logits, anchors, min_score=1.01)
    assert all(len(x) == 0 for x in none)


def test_weighted_nms_merges_overlaps_and_keeps_the_best_score() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0.5, 0, 10.5, 10]], np.float32
    )
    kps = np.repeat(boxes[:, None, :2], 4, axis=1)
    scores = np.array([0.9, 0.6, 0.8, 0.3], np.float32)
    dets = weighted_nms(boxes, kps, scores, iou_threshold=0.3)
    assert len(dets) == 2
    np.testing.assert_allclose(dets.scores, [0.9, 0.8])
    w = np.array([0.9, 0.6, 0.3]) / 1.8
    np.testing.assert_allclose(dets.boxes[0], w @ boxes[[0, 1, 3]], atol=1e-5)
    np.testing.assert_allclose(dets.keypoints[0, 0], w @ boxes[[0, 1, 3], :2], atol=1e-5)
    np.testing.assert_allclose(dets.boxes[1], boxes[2])
    assert len(weighted_nms(boxes, kps, scores, 0.3, max_detections=1)) == 1
    assert len(weighted_nms(boxes[:0], kps[:0], scores[:0])) == 0


def test_detection_roi_is_hip_centred_and_upright() -> None:
    kps = np.array([[[100, 200], [100, 80], [100, 120], [100, 90]]], np.float32)
    dets = Detections(np.array([[60, 60, 140, 260]], np.float32), kps, np.ones(1, np.float32))
    (roi,) = dets.rois(scale=1.25)
    assert (roi.cx, roi.cy) == (100, 200)
    assert roi.size == pytest.approx(2 * 120 * 1.25)
    assert roi.rotation == pytest.approx(0.0)


# --- landmark decoding and the world frame ----------------------------------------------------


def _raw_landmarks(uv: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    raw = np.zeros((39, 5), np.float32)
    raw[:, :2] = uv
    raw[:, 2] = 0.0 if z is None else z
    raw[:, 3] = 3.0  # visibility logit
    raw[:, 4] = -3.0  # presence logit
    return raw.ravel()


@pytest.mark.parametrize("rotation", [0.0, 0.6, math.pi / 2, -2.5])
def test_decode_landmarks_maps_crop_to_source(rotation: float) -> None:
    rng = np.random.default_rng(2)
    uv = rng.uniform(0, 256, (39, 2)).astype(np.float32)
    z = rng.uniform(-50, 50, 39).astype(np.float32)
    roi = RotatedRect(320.0, 240.0, 512.0, rotation)
    world = rng.normal(0, 0.3, (39, 3)).astype(np.float32)
    lm = decode_landmarks(_raw_landmarks(uv, z), world.ravel(), 0.8, roi, 256)
    np.testing.assert_allclose(lm.xyz[:, :2], roi.to_source(uv, 256), atol=1e-3)
    np.testing.assert_allclose(lm.xyz[:, 2], z * 2.0, rtol=1e-6)  # 512 px ROI on a 256 crop
    np.testing.assert_allclose(lm.visibility, 1 / (1 + math.exp(-3.0)), rtol=1e-6)
    np.testing.assert_allclose(lm.presence, 1 / (1 + math.exp(3.0)), rtol=1e-6)
    assert lm.world.shape == (33, 3) and lm.flag == pytest.approx(0.8) and lm.finite


@pytest.mark.parametrize("rotation", [0.0, 0.6, math.pi / 2, 3.0])
def test_world_and_image_directions_agree(rotation: float) -> None:
    """World landmarks built parallel to the crop offsets (MediaPipe axes: x right, y down) must
    come out parallel to the source-image offsets, with y flipped (+Y up) and z flipped."""
    rng = np.random.default_rng(3)
    uv = rng.uniform(0, 256, (39, 2)).astype(np.float32)
    world = np.zeros((39, 3), np.float32)
    world[:, :2] = (uv - 128.0) * 0.01
    world[:, 2] = rng.uniform(-1, 1, 39)
    roi = RotatedRect(300.0, 200.0, 256.0, rotation)
    lm = decode_landmarks(_raw_landmarks(uv), world.ravel(), 1.0, roi, 256)
    image_offsets = lm.xyz[:33, :2] - lm.xyz[_hips(), :2].mean(axis=0)
    expected = np.stack([image_offsets[:, 0], -image_offsets[:, 1]], axis=1) * 0.01
    np.testing.assert_allclose(lm.world[:, :2], expected, atol=1e-5)
    z = -world[:33, 2] + world[_hips(), 2].mean()
    np.testing.assert_allclose(lm.world[:, 2], z, atol=1e-6)


def _hips() -> list[int]:
    return [BlazePose33.LEFT_HIP, BlazePose33.RIGHT_HIP]


def test_world_conversion_is_a_proper_rotation_and_hip_centred() -> None:
    rng = np.random.default_rng(4)
    world = rng.normal(0, 0.5, (33, 3))
    out = world_to_avatarlink(world, 0.4).astype(np.float64)
    np.testing.assert_allclose(out[_hips()].mean(axis=0), 0.0, atol=1e-6)
    # Distances are kept and handedness too (a rotation, not a mirror).
    a, b, c = out[1] - out[0], out[2] - out[0], out[3] - out[0]
    a0, b0, c0 = world[1] - world[0], world[2] - world[0], world[3] - world[0]
    assert np.linalg.norm(a) == pytest.approx(np.linalg.norm(a0), rel=1e-5)
    assert np.dot(np.cross(a, b), c) == pytest.approx(np.dot(np.cross(a0, b0), c0), rel=1e-4)
    # MediaPipe "up" (-y) is avatarlink +Y; MediaPipe "towards the camera" (-z) is +Z.
    unit = np.zeros((33, 3))
    unit[0] = [0.0, -1.0, -1.0]
    np.testing.assert_allclose(world_to_avatarlink(unit, 0.0)[0], [0.0, 1.0, 1.0], atol=1e-7)


def _gaussian_heatmaps(peaks_cells: np.ndarray, height: float, size: int = 64) -> np.ndarray:
    """(size, size, 39) logit heatmaps whose probabilities are Gaussians (sigma 1.5 cells) of
    peak ``height`` at ``peaks_cells`` (K, 2) (x, y) cell coordinates."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    k = len(peaks_cells)
    d2 = (xs[..., None] - peaks_cells[:, 0]) ** 2 + (ys[..., None] - peaks_cells[:, 1]) ** 2
    prob = np.full((size, size, 39), 1e-6)
    prob[:, :, :k] = np.clip(height * np.exp(-d2 / (2 * 1.5**2)), 1e-6, 1 - 1e-6)
    logits: np.ndarray = np.log(prob / (1 - prob)).astype(np.float32)
    return logits


def test_heatmap_refinement_finds_subcell_peaks_near_the_regression() -> None:
    rng = np.random.default_rng(5)
    true_cells = rng.uniform(5, 58, (33, 2))
    heatmap = _gaussian_heatmaps(true_cells, 0.95)
    stride = 256 / 64
    true_px = true_cells * stride  # cell i is centred on crop pixel i * stride
    uv = np.zeros((39, 2), np.float32)
    uv[:33] = true_px + rng.uniform(-2.5, 2.5, (33, 2)) * stride  # within the 7 x 7 window
    uv[33:] = 77.0
    out = refine_from_heatmap(uv, heatmap, 256, "logit", window_cells=3, min_score=0.5)
    np.testing.assert_allclose(out[:33], true_px, atol=0.05 * stride)
    np.testing.assert_array_equal(out[33:], uv[33:])
    # The same maps as probabilities give the same result.
    prob = (1 / (1 + np.exp(-heatmap.astype(np.float64)))).astype(np.float32)
    np.testing.assert_allclose(refine_from_heatmap(uv, prob, 256, "prob"), out, atol=1e-3)


def test_heatmap_refinement_keeps_weak_or_distant_peaks_and_nan() -> None:
    true_cells = np.full((33, 2), 30.0)
    uv = np.full((39, 2), 30.0 * 4, np.float32)
    weak = refine_from_heatmap(uv + 3, _gaussian_heatmaps(true_cells, 0.3), 256, min_score=0.5)
    np.testing.assert_array_equal(weak, uv + 3)
    far = uv.copy()
    far[:33] = 50 * 4  # 20 cells away: the peak is outside the window
    out = refine_from_heatmap(far, _gaussian_heatmaps(true_cells, 0.95), 256)
    assert np.abs(out[:33] - 30 * 4).min() > 10 * 4  # not pulled to the distant peak
    nan = uv.copy()
    nan[0] = np.nan
    assert np.isnan(refine_from_heatmap(nan, _gaussian_heatmaps(true_cells, 0.95), 256)[0]).all()


def test_coco17_mapping() -> None:
    xyz = np.arange(2 * 33 * 3, dtype=np.float32).reshape(2, 33, 3)
    kp = Keypoints(xyz, np.ones((2, 33), np.float32), KeypointLayout.BLAZEPOSE33, Space.WORLD)
    coco = blazepose_to_coco17(kp)
    assert coco.layout is KeypointLayout.COCO17 and coco.space is Space.WORLD
    np.testing.assert_array_equal(coco.xyz[:, 5], xyz[:, BlazePose33.LEFT_SHOULDER])
    np.testing.assert_array_equal(coco.xyz[:, 16], xyz[:, BlazePose33.RIGHT_ANKLE])
    np.testing.assert_array_equal(coco.xyz[:, 0], xyz[:, BlazePose33.NOSE])
    with pytest.raises(ValueError):
        blazepose_to_coco17(coco)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="max_persons"):
        BlazePoseConfig(max_persons=0)
    with pytest.raises(ConfigError, match="match_iou"):
        BlazePoseConfig(match_iou=1.5)
    with pytest.raises(ConfigError, match="redetect_interval"):
        BlazePoseConfig(redetect_interval=0)
    with pytest.raises(ConfigError, match="heatmap_refine"):
        BlazePoseConfig(heatmap_refine="dark")


# --- tracking with a scripted scene -----------------------------------------------------------

FRAME = np.zeros((480, 640, 3), np.uint8)


class Scene:
    """People as (hip, head) points in source pixels; a fake detector and landmark model."""

    def __init__(self) -> None:
        self.people: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.detect_calls = 0
        self.nan_landmarks = False

    def set(self, name: str, hip: tuple[float, float], height: float = 100.0) -> None:
        h = np.array(hip, np.float32)
        self.people[name] = (h, h - np.array([0.0, height], np.float32))

    def detect(self, image: np.ndarray, region: Box | None) -> Detections:
        self.detect_calls += 1
        if not self.people:
            return Detections.empty()
        kps = np.stack([[hip, head, (hip + head) / 2, head] for hip, head in self.people.values()])
        hips = kps[:, 0]
        boxes = np.concatenate([hips - 60, hips + 60], axis=1)
        return Detections(boxes.astype(np.float32), kps.astype(np.float32),
                          np.full(len(kps), 0.9, np.float32))  # fmt: skip

    def landmark(self, image: np.ndarray, roi: RotatedRect) -> PoseLandmarks:
        found = [
            (hip, head)
            for hip, head in self.people.values()
            if np.hypot(hip[0] - roi.cx, hip[1] - roi.cy) < roi.size * 0.3
        ]
        xyz = np.zeros((39, 3), np.float32)
        xyz[:, :2] = [roi.cx, roi.cy]
        flag = 0.05
        if found:
            hip, head = found[0]
            xyz[33, :2], xyz[34, :2] = hip, head
            flag = 0.95
        if self.nan_landmarks:
            xyz[:] = np.nan
        ones = np.ones(39, np.float32)
        return PoseLandmarks(xyz, ones, ones, np.zeros((33, 3), np.float32), flag, roi)

    def tracker(self, **kwargs: object) -> PoseTracker:
        return PoseTracker(BlazePoseConfig(**kwargs), self.detect, self.landmark)  # type: ignore[arg-type]


def _ids(results: list[tuple[int, PoseLandmarks]]) -> list[int]:
    return [tid for tid, _ in results]


def test_single_person_is_detected_once_then_tracked() -> None:
    scene = Scene()
    tracker = scene.tracker()
    for i in range(50):
        scene.set("a", (200 + 3 * i, 300 + math.sin(i / 5) * 10))
        results = tracker.step(FRAME)
        assert _ids(results) == [0]
        np.testing.assert_allclose(results[0][1].xyz[33, :2], scene.people["a"][0])
    assert tracker.stats.detector_runs == 1 and tracker.stats.frames == 50


def test_person_leaving_and_reentering_is_redetected() -> None:
    scene = Scene()
    tracker = scene.tracker(id_memory_frames=5)
    seen = []
    for i in range(40):
        if 10 <= i < 20:
            scene.people.clear()  # blank frames
        else:
            scene.set("a", (300, 300))
        seen.append(_ids(tracker.step(FRAME)))
    assert seen[:10] == [[0]] * 10
    assert seen[10:20] == [[]] * 10
    assert seen[20:] == [[1]] * 20  # re-detected; the old id expired after 5 frames
    # Detector: frame 0; blank frames 11..19 (on frame 10 the track is lost by its low pose
    # flag, without the detector); frame 20 finds the person again.
    assert tracker.stats.detector_runs == 1 + 9 + 1


def test_short_loss_at_the_same_place_keeps_the_id() -> None:
    scene = Scene()
    tracker = scene.tracker(id_memory_frames=30)
    out = []
    for i in range(12):
        if i in (4, 5):
            scene.people.clear()
        else:
            scene.set("a", (300, 300))
        out.append(_ids(tracker.step(FRAME)))
    assert out == [[0]] * 4 + [[], []] + [[0]] * 6


def test_person_walking_out_of_the_frame_ends_the_track() -> None:
    scene = Scene()
    tracker = scene.tracker()
    counts = []
    for i in range(30):
        scene.set("a", (400 + 20 * i, 300))  # leaves the 640-px frame to the right
        counts.append(len(tracker.step(FRAME)))
    # While the ROI is mostly inside, one person; afterwards the detector runs every frame.
    roi_side = 2 * 100 * 1.25
    last_inside = max(i for i in range(30) if 400 + 20 * i < 640 + roi_side * 0.25)
    assert counts[0] == 1 and counts[-1] == 0
    assert tracker.stats.detector_runs >= 30 - last_inside - 1


def test_two_people_keep_their_ids_while_moving() -> None:
    scene = Scene()
    tracker = scene.tracker(max_persons=2)
    for i in range(30):
        scene.set("left", (150 + i, 300))
        scene.set("right", (450 - i, 300))
        results = tracker.step(FRAME)
        assert _ids(results) == [0, 1]
        xs = {tid: lm.xyz[33, 0] for tid, lm in results}
        assert xs[0] == pytest.approx(150 + i) and xs[1] == pytest.approx(450 - i)
    assert tracker.stats.detector_runs == 1


def test_fewer_people_than_allowed_redetects_periodically() -> None:
    scene = Scene()
    tracker = scene.tracker(max_persons=2, redetect_interval=10)
    for i in range(30):
        scene.set("a", (300, 300))
        if i == 15:
            scene.set("b", (520, 300))
        ids = _ids(tracker.step(FRAME))
        assert ids == ([0, 1] if i >= 20 else [0])  # b is found at the next periodic detection
    # Frames 0, 10, 20; afterwards both slots are full.
    assert tracker.stats.detector_runs == 3


def test_duplicate_detections_of_one_person_make_one_track() -> None:
    scene = Scene()
    scene.set("a", (300, 300))
    scene.set("a2", (304, 302))  # the detector reports the same person twice
    tracker = scene.tracker(max_persons=3)
    assert len(tracker.step(FRAME)) == 1


def test_static_mode_detects_every_frame_and_keeps_ids() -> None:
    scene = Scene()
    tracker = scene.tracker(tracking=False, max_persons=2)
    for i in range(5):
        scene.set("a", (150 + 2 * i, 300))
        scene.set("b", (450, 300))
        assert _ids(tracker.step(FRAME)) == [0, 1]
    assert tracker.stats.detector_runs == 5


def test_nan_landmarks_mean_no_person_and_a_new_detection() -> None:
    scene = Scene()
    scene.set("a", (300, 300))
    tracker = scene.tracker()
    assert len(tracker.step(FRAME)) == 1
    scene.nan_landmarks = True
    assert tracker.step(FRAME) == []
    scene.nan_landmarks = False
    assert len(tracker.step(FRAME)) == 1
    assert tracker.stats.detector_runs == 2


def test_reset_forgets_tracks() -> None:
    scene = Scene()
    scene.set("a", (300, 300))
    tracker = scene.tracker()
    tracker.step(FRAME)
    tracker.step(FRAME)
    tracker.reset()
    assert tracker.stats.frames == 0
    assert _ids(tracker.step(FRAME)) == [0]
    assert tracker.stats.detector_runs == 1
