"""Crop tracking and identity tracking."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink.models import create_estimator
from avatarlink.session import SessionOptions
from avatarlink.skeletons import Coco17
from avatarlink.sources import SAMPLE_IMAGE, read_image
from avatarlink.tracking import (
    CropTracker,
    CropTrackingConfig,
    IdentityTracker,
)


def _standing_person(cx: float, cy: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """A rough COCO-17 stick person centred at the hips, all points confident."""
    u = height / 8.0
    pts = {
        Coco17.NOSE: (0, -7), Coco17.LEFT_EYE: (0.3, -7.2), Coco17.RIGHT_EYE: (-0.3, -7.2),
        Coco17.LEFT_EAR: (0.6, -7), Coco17.RIGHT_EAR: (-0.6, -7),
        Coco17.LEFT_SHOULDER: (1.2, -5.5), Coco17.RIGHT_SHOULDER: (-1.2, -5.5),
        Coco17.LEFT_ELBOW: (1.5, -3.5), Coco17.RIGHT_ELBOW: (-1.5, -3.5),
        Coco17.LEFT_WRIST: (1.6, -1.8), Coco17.RIGHT_WRIST: (-1.6, -1.8),
        Coco17.LEFT_HIP: (0.7, 0), Coco17.RIGHT_HIP: (-0.7, 0),
        Coco17.LEFT_KNEE: (0.7, 2), Coco17.RIGHT_KNEE: (-0.7, 2),
        Coco17.LEFT_ANKLE: (0.7, 4), Coco17.RIGHT_ANKLE: (-0.7, 4),
    }  # fmt: skip
    xyz = np.full((17, 3), np.nan, np.float32)
    for k, (x, y) in pts.items():
        xyz[k, :2] = (cx + x * u, cy + y * u)
    return xyz, np.full(17, 0.9, np.float32)


def test_crop_is_a_square_around_the_hips_holding_the_whole_body() -> None:
    tracker = CropTracker()
    xyz, score = _standing_person(400, 300, 200)
    box = tracker.update(xyz, score, 1280, 720)
    assert box is not None and box.w == pytest.approx(box.h)
    assert box.x + box.w / 2 == pytest.approx(400) and box.y + box.h / 2 == pytest.approx(300)
    xy = xyz[:, :2]
    assert (xy[:, 0] > box.x).all() and (xy[:, 0] < box.x + box.w).all()
    assert (xy[:, 1] > box.y).all() and (xy[:, 1] < box.y + box.h).all()
    assert box.w < 720  # much tighter than the frame


def test_crop_scales_with_the_person() -> None:
    near = CropTracker().update(*_standing_person(400, 300, 200), 1280, 720)
    far = CropTracker().update(*_standing_person(400, 300, 100), 1280, 720)
    assert near is not None and far is not None
    assert near.w == pytest.approx(2 * far.w, rel=1e-3)


def test_too_few_confident_points_or_nobody_means_whole_frame() -> None:
    tracker = CropTracker(CropTrackingConfig(min_keypoints=6))
    xyz, score = _standing_person(400, 300, 200)
    assert tracker.update(xyz, score, 1280, 720) is not None
    score[:12] = 0.05
    assert tracker.update(xyz, score, 1280, 720) is None
    assert tracker.resets == 1
    assert tracker.update(np.zeros((0, 3), np.float32), np.zeros(0, np.float32), 640, 480) is None


def test_nan_keypoints_never_produce_a_crop() -> None:
    tracker = CropTracker()
    xyz = np.full((17, 3), np.nan, np.float32)
    assert tracker.update(xyz, np.ones(17, np.float32), 640, 480) is None
    xyz, score = _standing_person(400, 300, 0.0)  # a degenerate, zero-size pose
    box = tracker.update(xyz, score, 640, 480)
    assert box is not None and box.w >= tracker.config.min_size_px


def test_crop_may_leave_the_frame_and_is_clamped_in_size() -> None:
    box = CropTracker().update(*_standing_person(10, 20, 300), 640, 480)
    assert box is not None and box.x < 0 and box.y < 0
    assert box.w <= 640


def test_movenet_tracking_follows_a_moving_person() -> None:
    photo = read_image(SAMPLE_IMAGE)
    tracked = create_estimator(
        "movenet-lightning", SessionOptions("cpu", 1), tracking=CropTrackingConfig()
    )
    plain = create_estimator("movenet-lightning", SessionOptions("cpu", 1))
    frame = np.zeros((720, 1280, 3), np.uint8)
    errors = []
    for step in range(6):
        frame[:] = 0
        ox, oy = 100 + 80 * step, 100
        frame[oy : oy + 512, ox : ox + 512] = photo
        res = tracked.estimate(frame).image
        assert res.num_persons == 1
        direct = plain.estimate(photo).image  # the photo on its own: the reference
        ok = (res.score[0] > 0.3) & (direct.score[0] > 0.3)
        diff = res.xyz[0, ok, :2] - (direct.xyz[0, ok, :2] + [ox, oy])
        errors.append(float(np.median(np.linalg.norm(diff, axis=1))))
    assert tracked.tracker is not None and tracked.tracker.region is not None
    assert max(errors[1:]) < 20  # after the first (whole-frame) frame the crop follows


def test_movenet_tracking_recovers_after_the_person_leaves() -> None:
    photo = read_image(SAMPLE_IMAGE)
    est = create_estimator(
        "movenet-lightning", SessionOptions("cpu", 1), tracking=CropTrackingConfig()
    )
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[100:612, 100:612] = photo
    assert est.estimate(frame).image.num_persons == 1
    assert est.estimate(np.zeros_like(frame)).image.num_persons == 0
    assert est.tracker is not None and est.tracker.region is None
    frame2 = np.zeros_like(frame)
    frame2[150:662, 700:1212] = photo
    assert est.estimate(frame2).image.num_persons == 1


def test_identities_survive_two_people_crossing() -> None:
    tracker = IdentityTracker()
    first_ids = None
    for step in range(40):
        xa = 50 + 10 * step  # walks right
        xb = 450 - 10 * step  # walks left; they overlap around step 20
        boxes = np.array([[xa, 100, xa + 60, 300], [xb, 110, xb + 60, 310]], np.float32)
        order = [1, 0] if step % 2 else [0, 1]  # detector order shuffles every frame
        ids = tracker.assign(boxes[order])
        by_person = dict(zip(order, ids.tolist(), strict=True))
        if first_ids is None:
            first_ids = by_person
        assert by_person == first_ids, f"swap at step {step}"


def test_lost_tracks_expire_and_new_people_get_new_ids() -> None:
    tracker = IdentityTracker()
    box = np.array([[0, 0, 50, 100]], np.float32)
    (first,) = tracker.assign(box)
    for _ in range(tracker.config.max_missed + 1):
        tracker.assign(np.zeros((0, 4), np.float32))
    (again,) = tracker.assign(box)
    assert again != first


def test_crop_holds_still_through_small_wobbles_and_follows_real_moves() -> None:
    tracker = CropTracker()
    first = tracker.update(*_standing_person(400, 300, 200), 1280, 720)
    rng = np.random.default_rng(0)
    for _ in range(10):
        xyz, score = _standing_person(400, 300, 200)
        xyz[:, :2] += rng.normal(0, 2.0, (17, 2))
        assert tracker.update(xyz, score, 1280, 720) == first
    moved = tracker.update(*_standing_person(520, 300, 200), 1280, 720)
    assert moved is not None and first is not None
    assert moved.x + moved.w / 2 == pytest.approx(520)
    grown = tracker.update(*_standing_person(520, 300, 240), 1280, 720)
    assert grown is not None and grown.w > moved.w  # never keeps a crop too small for the body


def test_tracking_config_is_validated_with_the_key_named() -> None:
    from avatarlink.config import load_config
    from avatarlink.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tracking\.hold must be in 0\.\.1"):
        load_config(overrides={"tracking.hold": 1.5})
    assert load_config(overrides={"tracking.crop": False}).tracking.crop is False


def test_registry_wraps_single_pose_models_only() -> None:
    from avatarlink.tracking import CropTrackedEstimator

    opts = SessionOptions("cpu", 1)
    assert isinstance(
        create_estimator("movenet-thunder", opts, tracking=CropTrackingConfig()),
        CropTrackedEstimator,
    )
    plain = create_estimator("movenet-thunder", opts, tracking=CropTrackingConfig(crop=False))
    assert not isinstance(plain, CropTrackedEstimator)
    multi = create_estimator("movenet-multipose", opts, tracking=CropTrackingConfig())
    assert not isinstance(multi, CropTrackedEstimator)
