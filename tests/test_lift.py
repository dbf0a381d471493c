"""2D -> 3D lifting on synthetic ground truth: posed rig -> camera -> lifter -> solver."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink import quat
from avatarlink.benches.retarget import VirtualCamera, synthetic_poses
from avatarlink.errors import ConfigError
from avatarlink.lift import LiftConfig, Lifter, lift_config_from_mapping, segment_lengths
from avatarlink.rig import Rig, forward_kinematics, keypoints_from_pose, load_rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.solver import BoneSolver, build_plan
from avatarlink.types import Keypoints, Space

LAYOUTS = (KeypointLayout.COCO17, KeypointLayout.BLAZEPOSE33)


@pytest.fixture(scope="module")
def rig() -> Rig:
    return load_rig("unity_humanoid")


def _image(uv: np.ndarray, layout: KeypointLayout, score: np.ndarray | None = None) -> Keypoints:
    uv = np.asarray(uv, np.float64).reshape(-1, layout.num_keypoints, 2)
    xyz = np.concatenate([uv, np.zeros((*uv.shape[:2], 1))], axis=-1).astype(np.float32)
    if score is None:
        score = np.ones(xyz.shape[:2], np.float32)
    return Keypoints(xyz, np.asarray(score, np.float32).reshape(xyz.shape[:2]), layout, Space.IMAGE)


def _lift_and_solve(
    rig: Rig, layout: KeypointLayout, uv: np.ndarray, config: LiftConfig
) -> tuple[np.ndarray, np.ndarray]:
    lifter = Lifter(rig, config)
    world = np.stack([lifter.lift(_image(p, layout)).xyz[0] for p in uv])
    kp = Keypoints(world, np.isfinite(world).all(-1).astype(np.float32), layout, Space.WORLD)
    solved, _ = BoneSolver(rig).solve_batch(kp)
    return world, solved


def _median_error(rig: Rig, layout: KeypointLayout, truth: np.ndarray, solved: np.ndarray) -> float:
    mask = build_plan(rig, layout).evaluated
    return float(np.median(np.degrees(quat.angle_between(truth, solved))[:, mask]))


def test_world_keypoints_pass_through(rig: Rig) -> None:
    kp = Keypoints(np.zeros((1, 17, 3), np.float32), np.ones((1, 17), np.float32),
                   KeypointLayout.COCO17, Space.WORLD)  # fmt: skip
    assert Lifter(rig).lift(kp, 0.0) is kp


def test_orthographic_view_is_lifted_almost_exactly(rig: Rig) -> None:
    layout = KeypointLayout.COCO17
    truth, world = synthetic_poses(rig, layout, 150, np.random.default_rng(21), root="facing")
    uv = np.stack([320 + 200 * world[..., 0], 240 - 200 * world[..., 1]], axis=-1)
    lifted, solved = _lift_and_solve(rig, layout, uv, LiftConfig())
    hips = (world[:, layout.index("left_hip")] + world[:, layout.index("right_hip")]) / 2
    depth_err = np.abs(lifted[..., 2] - (world[..., 2] - hips[:, None, 2]))
    assert np.median(depth_err) < 0.05  # metres
    assert _median_error(rig, layout, truth, solved) <= 4.0


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.value)
@pytest.mark.parametrize("focal", [None, 600.0], ids=["weak-perspective", "known-focal"])
def test_perspective_view_with_known_bone_lengths(
    rig: Rig, layout: KeypointLayout, focal: float | None
) -> None:
    """The issue's bar: 2D-only lifting with known bone lengths, median <= 10 degrees."""
    camera = VirtualCamera(distance_m=3.5, focal_px=600.0)
    truth, world = synthetic_poses(rig, layout, 120, np.random.default_rng(22), root="facing")
    _, solved = _lift_and_solve(rig, layout, camera.project(world), LiftConfig(focal_px=focal))
    assert _median_error(rig, layout, truth, solved) <= 10.0


def test_joint_limits_pick_the_knee_bending_backwards(rig: Rig) -> None:
    """Knees bent 90 degrees with the thighs hanging, seen from the front: the shins point at or
    away from the camera and project alike; only away keeps the knees bending the anatomical
    way (pointing at the camera would need the thigh twisted 180 degrees)."""
    layout = KeypointLayout.COCO17
    local = quat.identity((1, rig.num_bones))
    for side in ("Left", "Right"):
        local[0, rig.index(f"{side}UpperLeg")] = quat.from_axis_angle(
            np.array([1.0, 0.0, 0.0]), np.radians(-10)
        )
        local[0, rig.index(f"{side}LowerLeg")] = quat.from_axis_angle(
            np.array([1.0, 0.0, 0.0]), np.radians(90)
        )
    pos, rot = forward_kinematics(rig, local, np.zeros(3))
    world = keypoints_from_pose(rig, layout, pos, rot)
    uv = VirtualCamera().project(world)
    lifted = Lifter(rig, LiftConfig(focal_px=600.0)).lift(_image(uv, layout)).xyz[0]
    for side in ("left", "right"):
        knee, ankle, hip = (lifted[layout.index(f"{side}_{j}")] for j in ("knee", "ankle", "hip"))
        assert abs(knee[2] - hip[2]) < 0.1  # thigh about vertical
        assert ankle[2] < knee[2] - 0.3  # shin back


def test_no_flip_near_the_image_plane_with_temporal_continuity(rig: Rig) -> None:
    """The pelvis turns a little either side of facing the camera, with pixel noise: the sign of
    its turn is ambiguous in every frame; continuity keeps one consistent reading."""
    layout = KeypointLayout.COCO17
    frames = 60
    local = quat.identity((frames, rig.num_bones))
    yaw = np.radians(12.0 * np.sin(np.linspace(0, np.pi, frames)))  # 0 -> 12 -> 0 deg
    local[:, 0] = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), yaw)
    pos, rot = forward_kinematics(rig, local, np.zeros(3))
    world = keypoints_from_pose(rig, layout, pos, rot)
    rng = np.random.default_rng(23)
    uv = VirtualCamera().project(world) + rng.normal(0.0, 1.5, (frames, layout.num_keypoints, 2))

    def flips(weight: float) -> int:
        lifter = Lifter(rig, LiftConfig(temporal_weight=weight, focal_px=600.0))
        dz = []
        for i in range(frames):
            out = lifter.lift(_image(uv[i], layout), t=i / 30.0).xyz[0]
            dz.append(out[layout.index("left_hip"), 2] - out[layout.index("right_hip"), 2])
        dz_arr = np.array(dz)
        signs = np.sign(dz_arr[np.abs(dz_arr) > 0.005])  # frames whose sign can be read
        return int(np.sum(signs[1:] != signs[:-1]))

    with_continuity = flips(LiftConfig().temporal_weight)
    assert with_continuity <= 1
    assert flips(0.0) > with_continuity  # without it the reading flips with the noise


def test_missing_hips_still_lifts_the_upper_body(rig: Rig) -> None:
    layout = KeypointLayout.COCO17
    _, world = synthetic_poses(rig, layout, 1, np.random.default_rng(24), root="rest")
    uv = VirtualCamera().project(world)[0]
    score = np.ones(layout.num_keypoints)
    for name in ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"):
        score[layout.index(name)] = 0.0
    out = Lifter(rig).lift(_image(uv, layout, score))
    xyz, kept = out.xyz[0], out.score[0]
    assert np.isnan(xyz[layout.index("left_knee")]).all() and kept[layout.index("left_knee")] == 0
    shoulders = (xyz[layout.index("left_shoulder")] + xyz[layout.index("right_shoulder")]) / 2
    torso = segment_lengths(rig, layout)["torso"]
    assert shoulders[1] == pytest.approx(torso, abs=0.02)  # origin where the hips would be
    assert np.isfinite(xyz[layout.index("left_wrist")]).all()


def test_segment_lengths_and_overrides(rig: Rig) -> None:
    layout = KeypointLayout.BLAZEPOSE33
    lengths = segment_lengths(rig, layout)
    assert lengths["left_upper_arm"] == pytest.approx(0.27, abs=1e-6)
    assert lengths["left_thigh"] == pytest.approx(lengths["right_thigh"])
    assert {"torso", "hips", "shoulders", "neck", "left_toe", "right_heel"} <= set(lengths)
    # a performer 20 % bigger than the rig (lengths from a calibration profile): the lifted
    # skeleton comes out 20 % bigger, with the same pose
    coco = KeypointLayout.COCO17
    _, world = synthetic_poses(rig, coco, 1, np.random.default_rng(25), root="rest")
    uv = np.stack([320 + 200 * world[..., 0], 240 - 200 * world[..., 1]], axis=-1)[0]
    bigger = {k: 1.2 * v for k, v in segment_lengths(rig, coco).items()}
    plain = Lifter(rig).lift(_image(uv, coco)).xyz[0]
    out = Lifter(rig, lengths=bigger).lift(_image(uv, coco)).xyz[0]
    np.testing.assert_allclose(out, 1.2 * plain, atol=1e-4)
    shoulders = (out[coco.index("left_shoulder")] + out[coco.index("right_shoulder")]) / 2
    assert shoulders[1] == pytest.approx(bigger["torso"], rel=0.01)


def test_lift_config_section() -> None:
    cfg = lift_config_from_mapping(
        {"focal_px": 800, "temporal_weight": 5, "principal_point": [320, 240]}, "run.yaml", {}
    )
    assert cfg.focal_px == 800.0 and cfg.temporal_weight == 5.0
    assert cfg.principal_point == (320.0, 240.0)
    with pytest.raises(ConfigError, match=r"lift\.focal_px must be >= 0.*run\.yaml line 4"):
        lift_config_from_mapping({"focal_px": -3}, "run.yaml", {"lift.focal_px": 4})
    with pytest.raises(ConfigError, match=r"lift\.principal_point must be a list of 2 numbers"):
        lift_config_from_mapping({"principal_point": 3}, "run.yaml", {})
