"""Calibration from synthetic T-/A-pose frames of a performer with known proportions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from avatarlink import quat
from avatarlink.calibration import (
    CalibrationConfig,
    CalibrationError,
    Calibrator,
    calibrate,
    calibration_config_from_mapping,
    load_profile,
    save_profile,
)
from avatarlink.errors import ConfigError
from avatarlink.lift import LiftConfig, Lifter, segment_lengths
from avatarlink.rig import Rig, forward_kinematics, keypoints_from_pose, load_rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import Frame, Keypoints, Space

LAYOUT = KeypointLayout.COCO17
# the synthetic keypoints are the rig's joint centres, not COCO's annotated points
JOINTS = LiftConfig(coco_offsets=False)


@pytest.fixture(scope="module")
def rig() -> Rig:
    return load_rig("unity_humanoid")


def _performer(rig: Rig, arm_scale: float = 1.0, size: float = 1.0, arms_down_deg: float = 0.0,
               ) -> np.ndarray:  # fmt: skip
    """World keypoints (K, 3) of a performer: the rig scaled by ``size`` with arms
    ``arm_scale`` times as long, arms lowered by ``arms_down_deg``."""
    local = quat.identity(rig.num_bones)
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        local[rig.index(f"{side}UpperArm")] = quat.from_axis_angle(
            np.array([0.0, 0.0, 1.0]), -sign * np.radians(arms_down_deg)
        )
    pos, rot = forward_kinematics(rig, local, np.zeros(3))
    kp = keypoints_from_pose(rig, LAYOUT, pos, rot)
    for side in ("left", "right"):
        s = kp[LAYOUT.index(f"{side}_shoulder")]
        for j in ("elbow", "wrist"):
            i = LAYOUT.index(f"{side}_{j}")
            kp[i] = s + (kp[i] - s) * arm_scale
    return kp * size


def _frames(world: np.ndarray, n: int = 30, noise_px: float = 0.5, image: bool = True,
            score: np.ndarray | None = None, seed: int = 0) -> list[Keypoints]:  # fmt: skip
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if image:
            uv = np.stack([320 + 250 * world[:, 0], 400 - 250 * world[:, 1]], axis=-1)
            uv = uv + rng.normal(0, noise_px, uv.shape)
            xyz = np.concatenate([uv, np.zeros((len(uv), 1))], axis=1)
            space = Space.IMAGE
        else:
            xyz, space = world + rng.normal(0, 0.002, world.shape), Space.WORLD
        sc = np.ones(LAYOUT.num_keypoints) if score is None else score
        out.append(Keypoints(xyz[None].astype(np.float32), sc[None].astype(np.float32), LAYOUT,
                             space))  # fmt: skip
    return out


def test_t_pose_measures_the_performers_proportions(rig: Rig) -> None:
    profile = calibrate(_frames(_performer(rig, arm_scale=1.1)), rig, lift=JOINTS)
    base = segment_lengths(rig, LAYOUT)
    assert profile.pose == "t" and profile.frames_used == 30 and profile.scale == "rig"
    expected = 1.1 * base["left_upper_arm"] / base["torso"]
    assert profile.ratios["upper_arm"] == pytest.approx(expected, rel=0.01)
    lengths = profile.segment_lengths_m
    assert lengths["torso"] == pytest.approx(base["torso"], rel=1e-6)  # rig scale
    assert lengths["left_forearm"] == pytest.approx(1.1 * base["left_forearm"], rel=0.01)
    assert lengths["left_thigh"] == pytest.approx(base["left_thigh"], rel=0.01)
    assert profile.facing_yaw_deg == 0.0 and abs(profile.camera_roll_deg) < 1.0


def test_lengths_follow_the_lifters_keypoint_convention(rig: Rig) -> None:
    """With COCO's annotation offsets (the lifter's default) the profile's lengths are between
    the annotated points, as the lifter measures them: at the rig's scale the torso is the
    lifter's annotated torso, not the joints' (COCO marks the hips well above the joints)."""
    frames = _frames(_performer(rig))
    annotated = segment_lengths(rig, LAYOUT, LiftConfig())
    joints = segment_lengths(rig, LAYOUT)
    assert annotated["torso"] < 0.95 * joints["torso"]
    for lift, expected in ((LiftConfig(), annotated), (JOINTS, joints)):
        profile = calibrate(frames, rig, lift=lift)
        assert profile.segment_lengths_m["torso"] == pytest.approx(expected["torso"], rel=1e-3)
        assert profile.segment_lengths_m["neck"] == pytest.approx(expected["neck"], rel=1e-3)


def test_height_gives_metres(rig: Rig) -> None:
    cfg = CalibrationConfig(height_m=1.74 * 1.1)
    profile = calibrate(_frames(_performer(rig, size=1.1)), rig, cfg, lift=JOINTS)
    base = segment_lengths(rig, LAYOUT)
    assert profile.scale == "height"
    for key in ("torso", "left_upper_arm", "left_shin", "shoulders"):
        assert profile.segment_lengths_m[key] == pytest.approx(1.1 * base[key], rel=0.03)


def test_world_keypoints_give_metres_and_facing(rig: Rig) -> None:
    world = _performer(rig, size=0.95)
    turn = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), np.radians(20))
    profile = calibrate(_frames(quat.rotate(turn, world), image=False), rig)
    assert profile.scale == "world"
    assert profile.facing_yaw_deg == pytest.approx(20.0, abs=1.0)
    base = segment_lengths(rig, LAYOUT)
    assert profile.segment_lengths_m["left_thigh"] == pytest.approx(
        0.95 * base["left_thigh"], rel=0.02
    )
    solver_cfg, lengths = profile.apply()
    assert solver_cfg.facing_yaw_deg == profile.facing_yaw_deg
    assert Lifter(rig, lengths=lengths) is not None


def test_a_pose_is_accepted_when_asked(rig: Rig) -> None:
    frames = _frames(_performer(rig, arms_down_deg=45))
    assert calibrate(frames, rig).pose == "a"
    with pytest.raises(CalibrationError, match=r"pose was not held.*want level \(T-pose\)"):
        calibrate(frames, rig, CalibrationConfig(pose="t"))


def test_pose_not_held_says_why(rig: Rig) -> None:
    frames = _frames(_performer(rig, arms_down_deg=85))
    with pytest.raises(CalibrationError) as info:
        calibrate(frames, rig)
    msg = str(info.value)
    assert "pose was not held: 0 of 30 frames" in msg
    assert "left arm 85 deg below horizontal" in msg
    assert "arms straight out to the sides" in msg


def test_body_not_fully_visible_names_the_missing_points(rig: Rig) -> None:
    score = np.ones(LAYOUT.num_keypoints)
    score[LAYOUT.index("left_ankle")] = score[LAYOUT.index("right_ankle")] = 0.1
    with pytest.raises(CalibrationError) as info:
        calibrate(_frames(_performer(rig), score=score), rig)
    msg = str(info.value)
    assert "body not fully visible" in msg and "left_ankle" in msg and "feet" in msg


def test_mostly_good_frames_are_enough_and_bad_ones_are_counted(rig: Rig) -> None:
    good = _frames(_performer(rig), n=24)
    bad = _frames(_performer(rig, arms_down_deg=85), n=6)
    cal = Calibrator(rig)
    for kp in good + bad:
        cal.add(kp)
    profile = cal.result()
    assert profile.frames_used == 24 and profile.frames_total == 30
    assert sum(cal.rejected.values()) == 6
    assert cal.add(Keypoints.empty(LAYOUT)).reason == "nobody in view"


def test_profile_round_trip_and_errors(rig: Rig, tmp_path: Path) -> None:
    profile = calibrate(_frames(_performer(rig, arm_scale=1.05)), rig, source="camera 0")
    path = save_profile(profile, tmp_path / "me.yaml")
    assert load_profile(path) == profile
    text = path.read_text()
    bad = text.replace("torso: ", "torso: -", 1)
    (tmp_path / "bad.yaml").write_text(bad)
    line = next(i + 1 for i, s in enumerate(bad.splitlines()) if "torso: -" in s)
    with pytest.raises(
        ConfigError, match=rf"bad\.yaml:{line}: segment_lengths_m\.torso: expected a positive"
    ):
        load_profile(tmp_path / "bad.yaml")
    (tmp_path / "other.yaml").write_text("hello: 1\n")
    with pytest.raises(ConfigError, match="not an avatarlink calibration profile"):
        load_profile(tmp_path / "other.yaml")


def test_config_validation() -> None:
    cfg = calibration_config_from_mapping({"pose": "a", "a_pose_range_deg": [20, 50]}, "r.yaml", {})
    assert cfg.pose == "a" and cfg.a_pose_range_deg == (20.0, 50.0)
    with pytest.raises(ConfigError, match=r"calibration\.seconds must be a number.*r\.yaml line 3"):
        calibration_config_from_mapping({"seconds": "x"}, "r.yaml", {"calibration.seconds": 3})
    with pytest.raises(ConfigError, match=r"calibration\.pose"):
        CalibrationConfig(pose="x")
    with pytest.raises(ConfigError, match=r"calibration\.height_m"):
        CalibrationConfig(height_m=7.0)


def test_calibrate_command(rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The CLI with a stand-in camera and model: records, measures, writes the profile."""
    from avatarlink import capture
    from avatarlink.cli import main
    from avatarlink.models import registry

    keypoints = _frames(_performer(rig, arm_scale=1.1), n=40)

    class FakeCapture:
        def __init__(self) -> None:
            self.i = 0

        def __enter__(self) -> FakeCapture:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def get(self, timeout: float | None = None) -> Any:
            if self.i >= len(keypoints):
                return None
            frame = Frame(np.zeros((4, 4, 3), np.uint8), self.i / 10.0, self.i)
            self.i += 1
            return SimpleNamespace(frame=frame)

    class FakeEstimator:
        def __init__(self) -> None:
            self.i = 0

        def estimate(self, image: Any, region: Any = None) -> Any:
            self.i += 1
            return SimpleNamespace(image=keypoints[self.i - 1], world=None)

    monkeypatch.setattr(capture, "open_capture", lambda spec, options=None: FakeCapture())
    monkeypatch.setattr(registry, "create_estimator", lambda *a, **k: FakeEstimator())
    out = tmp_path / "profile.yaml"
    assert main(["calibrate", "--source", "0", "--seconds", "3", "--out", str(out)]) == 0
    profile = load_profile(out)
    assert profile.frames_total == 31  # 3 s at 10 fps, both ends included
    base = segment_lengths(rig, LAYOUT)
    assert profile.ratios["upper_arm"] == pytest.approx(
        1.1 * base["left_upper_arm"] / base["torso"], rel=0.02
    )
    assert "wrote" in capsys.readouterr().out
