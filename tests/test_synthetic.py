"""The synthetic performer: a scripted motion with exact ground truth, rendered convincingly."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink import quat
from avatarlink.capture import Capture, CaptureOptions, ReadStatus
from avatarlink.errors import ConfigError
from avatarlink.rig import forward_kinematics, load_rig
from avatarlink.skeletons import Coco17, KeypointLayout
from avatarlink.synthetic import (
    MOTIONS,
    SyntheticOptions,
    SyntheticPerformer,
    ground_truth_keypoints,
    torso_size_px,
)
from avatarlink.types import Space


@pytest.fixture(scope="module")
def performer() -> SyntheticPerformer:
    return SyntheticPerformer(load_rig("unity_humanoid"), SyntheticOptions(width=320, height=240))


def _clip_time(performer: SyntheticPerformer, name: str, u: float) -> float:
    start = 0.0
    for m in performer.motions:
        if m.name == name:
            return start + u
        start += m.duration_s
    raise AssertionError(name)


def test_rest_fk_and_ground_truth_agree(performer: SyntheticPerformer) -> None:
    pose = performer.pose_at(0.3)
    rig = load_rig("unity_humanoid")
    pos, _ = forward_kinematics(rig, pose.rotations.rot, pose.rotations.root_pos)
    np.testing.assert_allclose(pos, pose.joints, atol=1e-5)
    assert pose.rotations.bones == performer.rig.bones
    assert pose.rotations.valid.all()


def test_photograph_convention_left_is_image_right(performer: SyntheticPerformer) -> None:
    image, world = ground_truth_keypoints(performer, 0.5, KeypointLayout.COCO17)
    xy = image.xyz[0]
    assert xy[Coco17.LEFT_SHOULDER, 0] > 160 > xy[Coco17.RIGHT_SHOULDER, 0]
    assert world.xyz[0, Coco17.LEFT_SHOULDER, 0] > 0 > world.xyz[0, Coco17.RIGHT_SHOULDER, 0]
    # World keypoints are centred on the hip centre.
    hips = world.xyz[0, [Coco17.LEFT_HIP, Coco17.RIGHT_HIP]].mean(axis=0)
    np.testing.assert_allclose(hips, 0.0, atol=1e-6)
    # Head above the hips above the ankles, in pixels (+y down) and metres (+Y up).
    assert xy[Coco17.NOSE, 1] < xy[Coco17.LEFT_HIP, 1] < xy[Coco17.LEFT_ANKLE, 1]
    assert world.xyz[0, Coco17.NOSE, 1] > 0 > world.xyz[0, Coco17.LEFT_ANKLE, 1]


def test_motions_do_what_they_say(performer: SyntheticPerformer) -> None:
    def kp(name: str, u: float) -> np.ndarray:
        t = _clip_time(performer, name, u)
        pose = performer.pose_at(t)
        xy: np.ndarray = performer.keypoints(pose, KeypointLayout.COCO17, Space.IMAGE).xyz[0]
        return xy

    raised = kp("raise_left", 1.25)  # the first lift's peak
    assert raised[Coco17.LEFT_WRIST, 1] < raised[Coco17.NOSE, 1]
    assert raised[Coco17.RIGHT_WRIST, 1] > raised[Coco17.RIGHT_SHOULDER, 1]
    raised_r = kp("raise_right", 1.25)
    assert raised_r[Coco17.RIGHT_WRIST, 1] < raised_r[Coco17.NOSE, 1]
    wave = kp("wave", 2.5)
    assert wave[Coco17.RIGHT_WRIST, 1] < wave[Coco17.RIGHT_SHOULDER, 1]
    squat, stand = kp("squat", 1.25), kp("idle", 1.0)
    assert squat[Coco17.LEFT_HIP, 1] - stand[Coco17.LEFT_HIP, 1] > 15  # hips drop (pixels)
    turn = performer.pose_at(_clip_time(performer, "turn", 1.5))
    lm = turn.landmarks
    assert lm["left_shoulder"][2] < lm["right_shoulder"][2] - 0.15  # turned: left side away
    lean = performer.pose_at(_clip_time(performer, "lean", 1.25)).landmarks
    assert lean["nose"][0] > 0.1  # leaning to the performer's left (+X)


def test_feet_stay_on_the_floor_and_motion_is_continuous(performer: SyntheticPerformer) -> None:
    dt = 1.0 / 30.0
    prev = performer.local_rotations(0.0)
    lows = []
    worst = 0.0
    for t in np.arange(dt, performer.duration, dt):
        q = performer.local_rotations(float(t))
        worst = max(worst, float(np.degrees(quat.angle_between(prev, q)).max()))
        prev = q
        if round(t / dt) % 10 == 0:
            lm = performer.pose_at(float(t)).landmarks
            lows.append(min(lm[f"{s}_{p}"][1] for s in ("left", "right") for p in ("heel", "ball")))
    assert worst < 13.0  # no jumps between frames, clip changes included
    # The lowest foot point stays within a few millimetres of the rest height.
    assert np.ptp(lows) < 0.01


def test_rendering_is_deterministic_and_draws_the_figure(performer: SyntheticPerformer) -> None:
    image, pose = performer.frame(2.0)
    again, _ = performer.frame(2.0)
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, again)
    background = performer.background
    kp = performer.keypoints(pose, KeypointLayout.COCO17, Space.IMAGE).xyz[0]
    body = [Coco17.LEFT_SHOULDER, Coco17.RIGHT_HIP, Coco17.LEFT_KNEE, Coco17.RIGHT_ELBOW]
    for k in body:
        x, y = np.round(kp[k, :2]).astype(int)
        assert np.abs(image[y, x].astype(int) - background[y, x].astype(int)).sum() > 30
    corner = (slice(0, 20), slice(0, 20))
    np.testing.assert_array_equal(image[corner], background[corner])


def test_reader_plays_the_script_once_without_loop() -> None:
    options = SyntheticOptions(width=96, height=72, fps=10.0, motions=("idle",), loop=False)
    performer = SyntheticPerformer(load_rig("unity_humanoid"), options)
    reader = performer.reader()
    frames = []
    while (r := reader.read()).status is ReadStatus.OK:
        frames.append(r.t)
    assert r.status is ReadStatus.END
    assert len(frames) == 40
    np.testing.assert_allclose(frames, np.arange(40) / 10.0)
    with Capture(performer.reader, CaptureOptions()) as capture:
        first = capture.get(timeout=2.0)
        assert first is not None and first.frame.t == 0.0 and first.frame.source == "synthetic"


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown motion 'moonwalk'"):
        SyntheticOptions(motions=("moonwalk",))
    with pytest.raises(ConfigError, match=r"synthetic\.fps must be > 0"):
        SyntheticOptions(fps=0)
    rig = load_rig("unity_humanoid")
    subset = SyntheticPerformer(rig, SyntheticOptions(motions=("wave", "squat"), speed=2.0))
    assert subset.duration == pytest.approx((MOTIONS["wave"].duration_s + 5.0) / 2.0)


def test_torso_size(performer: SyntheticPerformer) -> None:
    image, _ = ground_truth_keypoints(performer, 0.0, KeypointLayout.BLAZEPOSE33)
    size = float(torso_size_px(image)[0])
    assert 30 < size < 120  # a 320x240 frame with the whole body in view


def test_movenet_finds_the_performer() -> None:
    from avatarlink.models.registry import create_estimator, get_spec

    if not get_spec("movenet-lightning").path.is_file():
        pytest.skip("movenet-lightning model file not present")
    performer = SyntheticPerformer(load_rig("unity_humanoid"))
    estimator = create_estimator("movenet-lightning")
    errors = []
    for t in np.linspace(0.5, performer.duration - 0.5, 12):
        image, pose = performer.frame(float(t))
        truth = performer.keypoints(pose, KeypointLayout.COCO17, Space.IMAGE).xyz[0, :, :2]
        found = estimator.estimate(image).image
        assert found.num_persons == 1
        errors.append(np.linalg.norm(found.xyz[0, :, :2] - truth, axis=1))
    # 640x480, a person about 300 px tall: the model lands within a few pixels of the truth.
    assert float(np.nanmedian(errors)) < 12.0
