"""2D -> 3D lifting on synthetic ground truth: posed rig -> camera -> lifter -> solver."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from avatarlink import quat
from avatarlink.benches.retarget import VirtualCamera, synthetic_poses
from avatarlink.config import load_config
from avatarlink.errors import ConfigError
from avatarlink.lift import (
    COCO_OFFSETS,
    LiftConfig,
    Lifter,
    focal_from_fov,
    lift_config_from_mapping,
    segment_lengths,
)
from avatarlink.pipeline import LiftStage, lift_config
from avatarlink.rig import Rig, forward_kinematics, keypoints_from_pose, load_rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.solver import BoneSolver, build_plan
from avatarlink.types import Frame, Keypoints, Space

LAYOUTS = (KeypointLayout.COCO17, KeypointLayout.BLAZEPOSE33)
# The synthetic keypoints below sit exactly on the rig's joints: not where COCO annotators mark
# them, and without a pose model's noise to allow for.
JOINTS = LiftConfig(coco_offsets=False, depth_margin=0.0, in_line_margin=0.0)


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
    lifted, solved = _lift_and_solve(rig, layout, uv, JOINTS)
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
    config = dataclasses.replace(JOINTS, focal_px=focal)
    _, solved = _lift_and_solve(rig, layout, camera.project(world), config)
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
    lifted = Lifter(rig, dataclasses.replace(JOINTS, focal_px=600.0)).lift(_image(uv, layout))
    lifted = lifted.xyz[0]
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
        config = dataclasses.replace(JOINTS, temporal_weight=weight, focal_px=600.0)
        lifter = Lifter(rig, config)
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
    out = Lifter(rig, JOINTS).lift(_image(uv, layout, score))
    xyz, kept = out.xyz[0], out.score[0]
    assert np.isnan(xyz[layout.index("left_knee")]).all() and kept[layout.index("left_knee")] == 0
    shoulders = (xyz[layout.index("left_shoulder")] + xyz[layout.index("right_shoulder")]) / 2
    torso = segment_lengths(rig, layout, JOINTS)["torso"]
    assert shoulders[1] == pytest.approx(torso, abs=0.02)  # origin where the hips would be
    assert np.isfinite(xyz[layout.index("left_wrist")]).all()


def test_segment_lengths_and_overrides(rig: Rig) -> None:
    layout = KeypointLayout.BLAZEPOSE33
    lengths = segment_lengths(rig, layout)
    assert lengths["left_upper_arm"] == pytest.approx(0.27, abs=1e-6)
    assert lengths["left_thigh"] == pytest.approx(lengths["right_thigh"])
    assert {"torso", "hips", "shoulders", "neck", "left_toe", "right_heel"} <= set(lengths)
    assert segment_lengths(rig, layout, LiftConfig()) == lengths  # BlazePose marks the joints
    # COCO-17 as its annotators mark it (the lifter's default): the hips well above the joints
    joints = segment_lengths(rig, KeypointLayout.COCO17)
    annotated = segment_lengths(rig, KeypointLayout.COCO17, LiftConfig())
    off = COCO_OFFSETS
    assert annotated["torso"] == pytest.approx(
        joints["torso"] - off.hip_up_m + off.shoulder_up_m, abs=1e-9
    )
    assert annotated["left_thigh"] == pytest.approx(
        joints["left_thigh"] + off.hip_up_m - off.knee_up_m, abs=1e-9
    )
    assert annotated["hips"] == pytest.approx(joints["hips"], abs=1e-9)
    # a performer 20 % bigger than the rig (lengths from a calibration profile): the lifted
    # skeleton comes out 20 % bigger, with the same pose
    coco = KeypointLayout.COCO17
    _, world = synthetic_poses(rig, coco, 1, np.random.default_rng(25), root="rest")
    uv = np.stack([320 + 200 * world[..., 0], 240 - 200 * world[..., 1]], axis=-1)[0]
    bigger = {k: 1.2 * v for k, v in segment_lengths(rig, coco, JOINTS).items()}
    plain = Lifter(rig, JOINTS).lift(_image(uv, coco)).xyz[0]
    out = Lifter(rig, JOINTS, lengths=bigger).lift(_image(uv, coco)).xyz[0]
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
    with pytest.raises(ConfigError, match=r"lift\.fov_deg must be 1\.\.170 degrees.*line 2"):
        lift_config_from_mapping({"fov_deg": 200}, "run.yaml", {"lift.fov_deg": 2})
    with pytest.raises(ConfigError, match=r"lift\.depth_margin must be < 1"):
        lift_config_from_mapping({"depth_margin": 1.5}, "run.yaml", {})
    with pytest.raises(ConfigError, match=r"lift\.length_floor must be in \(0, 1\]"):
        lift_config_from_mapping({"length_floor": 0}, "run.yaml", {})
    assert lift_config_from_mapping({"fov_deg": None}, "run.yaml", {}).fov_deg is None


def _pose(rig: Rig, layout: KeypointLayout, bones: dict[str, tuple[str, float]]) -> np.ndarray:
    """World keypoints (K, 3) of the rest pose with ``bones`` turned about a world axis
    (``{"LeftUpperArm": ("z", -75.0)}``: degrees), Hips at the origin."""
    local = quat.identity((1, rig.num_bones))
    for bone, (axis, deg) in bones.items():
        local[0, rig.index(bone)] = quat.from_axis_angle(
            np.eye(3)["xyz".index(axis)], np.radians(deg)
        )
    pos, rot = forward_kinematics(rig, local, np.zeros(3))
    out: np.ndarray = keypoints_from_pose(rig, layout, pos, rot)[0]
    return out


ARMS_DOWN = {"LeftUpperArm": ("z", -75.0), "RightUpperArm": ("z", 75.0)}


def test_coco_annotated_keypoints_are_moved_onto_the_joints(rig: Rig) -> None:
    """COCO-17 models mark the hips (and other joints) off the joint centres the rig uses; the
    lifter measures bones between the annotated points and returns the joints."""
    layout = KeypointLayout.COCO17
    index = layout.index
    truth, world = synthetic_poses(rig, layout, 150, np.random.default_rng(26), root="facing")

    def unit(v: np.ndarray) -> np.ndarray:
        out: np.ndarray = v / np.linalg.norm(v, axis=-1, keepdims=True)
        return out

    def centre(a: str, b: str) -> np.ndarray:
        out: np.ndarray = 0.5 * (world[:, index(a)] + world[:, index(b)])
        return out

    annotated = world.copy()
    off = COCO_OFFSETS
    spine = unit(centre("left_shoulder", "right_shoulder") - centre("left_hip", "right_hip"))
    for side in ("left", "right"):
        hip, knee, sh, elbow, wrist = (
            index(f"{side}_{j}") for j in ("hip", "knee", "shoulder", "elbow", "wrist")
        )
        annotated[:, hip] += off.hip_up_m * spine
        annotated[:, sh] += off.shoulder_up_m * spine
        annotated[:, knee] += off.knee_up_m * unit(world[:, hip] - world[:, knee])
        annotated[:, elbow] += off.elbow_in_m * unit(world[:, sh] - world[:, elbow])
        annotated[:, wrist] += off.wrist_in_m * unit(world[:, elbow] - world[:, wrist])
    uv = VirtualCamera().project(annotated)
    errors, hips = [], []
    for offsets in (True, False):
        config = LiftConfig(focal_px=600.0, depth_margin=0.0, coco_offsets=offsets)
        lifted, solved = _lift_and_solve(rig, layout, uv, config)
        errors.append(_median_error(rig, layout, truth, solved))
        hips.append(float(np.median(np.degrees(quat.angle_between(truth[:, 0], solved[:, 0])))))
        if offsets:  # the hips come out on the joints (the origin is their centre)
            joint = world[:, index("left_hip")] - centre("left_hip", "right_hip")
            assert np.median(np.linalg.norm(lifted[:, index("left_hip")] - joint, axis=-1)) < 0.01
    assert errors[0] <= 10.0
    assert errors[0] < errors[1] - 2.0
    assert hips[0] < 0.6 * hips[1]  # read as joints, the short spine is a lean


def test_hanging_legs_below_the_camera_axis_stay_vertical(rig: Rig) -> None:
    """Seen from above the hips (a camera at chest height), a vertical leg's two depth roots are
    not symmetric: 0 and ~20 cm towards the camera. The depth prior picks the first."""
    layout = KeypointLayout.COCO17
    world = _pose(rig, layout, ARMS_DOWN)
    uv = VirtualCamera().project(world - np.array([0.0, 0.6, 0.0]))  # camera 0.6 m above the hips
    for weight, vertical in ((LiftConfig().depth_weight, True), (0.0, False)):
        config = dataclasses.replace(JOINTS, focal_px=600.0, principal_point=(320.0, 240.0))
        lifter = Lifter(rig, dataclasses.replace(config, depth_weight=weight))
        out = lifter.lift(_image(uv, layout)).xyz[0]
        depth = max(abs(float(out[layout.index(f"{s}_{j}"), 2])) for s in ("left", "right")
                    for j in ("knee", "ankle"))  # fmt: skip
        assert (depth < 0.02) is vertical, (weight, depth)


def test_the_face_tells_which_way_the_shoulders_turn(rig: Rig) -> None:
    """A body turned 30 degrees either way (the head with it), one frame: the shoulder line's
    depth only has a sign from the face's rotation (people face where their chest faces)."""
    layout = KeypointLayout.COCO17
    for weight, right in ((LiftConfig().head_weight, 2), (0.0, 0)):
        correct = 0
        for yaw in (-30.0, 30.0):
            world = _pose(rig, layout, {"Hips": ("y", yaw), **ARMS_DOWN})
            uv = VirtualCamera().project(world)
            config = dataclasses.replace(JOINTS, focal_px=600.0, head_weight=weight)
            out = Lifter(rig, config).lift(_image(uv, layout)).xyz[0]
            left, rgt = layout.index("left_shoulder"), layout.index("right_shoulder")
            true_dz = world[left, 2] - world[rgt, 2]
            correct += int(np.sign(out[left, 2] - out[rgt, 2]) == np.sign(true_dz))
        assert correct == right, weight


def test_nearly_straight_limbs_come_out_straight(rig: Rig) -> None:
    """An elbow bent 5 degrees with the elbow keypoint 2 px off: its bend plane is noise (the
    solver would twist the upper arm by it), so the arm comes out straight."""
    layout = KeypointLayout.COCO17
    world = _pose(rig, layout, {**ARMS_DOWN, "LeftLowerArm": ("y", 5.0)})
    uv = VirtualCamera().project(world)
    uv[layout.index("left_elbow"), 0] += 2.0
    sh, el, wr = (layout.index(f"left_{j}") for j in ("shoulder", "elbow", "wrist"))
    for straight, expected in ((LiftConfig().straight_deg, True), (0.0, False)):
        out = Lifter(rig, dataclasses.replace(JOINTS, straight_deg=straight)).lift(
            _image(uv, layout)
        )
        s, e, w = out.xyz[0, sh], out.xyz[0, el], out.xyz[0, wr]
        off_line = np.linalg.norm(np.cross(e - s, w - s)) / np.linalg.norm(w - s)
        assert bool(off_line < 1e-4) is expected, off_line


def test_segment_lengths_adapt_to_the_performer(rig: Rig) -> None:
    """Shins 12 % shorter than the rig's, standing still: read with the rig's length they tilt
    by 30 degrees; the assumed length relaxes to the seen one within seconds."""
    layout = KeypointLayout.COCO17
    world = _pose(rig, layout, ARMS_DOWN)
    for side in ("left", "right"):
        knee, ankle = layout.index(f"{side}_knee"), layout.index(f"{side}_ankle")
        world[ankle] += 0.12 * (world[knee] - world[ankle])
    kp = _image(VirtualCamera().project(world), layout)
    knee, ankle = layout.index("left_knee"), layout.index("left_ankle")
    for adapt, flat in ((LiftConfig().length_adapt_s, True), (0.0, False)):
        # (without the in-line allowance, which alone would keep these straight legs straight)
        config = LiftConfig(coco_offsets=False, length_adapt_s=adapt, in_line_margin=0.0)
        lifter = Lifter(rig, config)
        for i in range(150):  # 5 s at 30 fps
            out = lifter.lift(kp, t=i / 30.0).xyz[0]
        assert bool(abs(out[ankle, 2] - out[knee, 2]) < 0.01) is flat, adapt


def test_a_leg_in_line_needs_more_than_a_short_thigh_to_bend(rig: Rig) -> None:
    """A straight leg whose thigh is seen 12 % short (a model's knee keypoint a little high)
    stays straight from the first frame with the in-line allowance, and bends towards the camera
    without it; a leg really raised 50 degrees towards the camera (in line in the image too)
    keeps most of its thigh's depth."""
    layout = KeypointLayout.COCO17
    hip, knee, ankle = (layout.index(f"left_{j}") for j in ("hip", "knee", "ankle"))
    world = _pose(rig, layout, ARMS_DOWN)
    up = 0.12 * (world[hip] - world[knee])
    world[knee] += up
    world[ankle] += up
    kp = _image(VirtualCamera().project(world), layout)
    raised = _pose(rig, layout, {**ARMS_DOWN, "LeftUpperLeg": ("x", -50.0)})
    raised_kp = _image(VirtualCamera().project(raised), layout)
    true_dz = raised[knee, 2] - raised[hip, 2]
    for margin, straight in ((LiftConfig().in_line_margin, True), (0.0, False)):
        config = LiftConfig(coco_offsets=False, focal_px=600.0, in_line_margin=margin)
        out = Lifter(rig, config).lift(kp, t=0.0).xyz[0]
        assert bool(abs(out[knee, 2] - out[hip, 2]) < 0.01) is straight, margin
        out = Lifter(rig, config).lift(raised_kp, t=0.0).xyz[0]
        assert abs(out[knee, 2] - out[hip, 2]) > 0.8 * true_dz > 0.1, (margin, true_dz)


def test_rigid_fits_are_prepared_once_per_visibility(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-frame work is a fixed set of vectorised operations: the face and hand fits'
    least-squares projections depend only on which of their points are seen, so no linear
    algebra routine runs per frame."""
    layout = KeypointLayout.BLAZEPOSE33
    _, world = synthetic_poses(rig, layout, 20, np.random.default_rng(27), root="facing")
    uv = VirtualCamera().project(world)
    lifter = Lifter(rig, LiftConfig(focal_px=600.0))
    lifter.lift(_image(uv[0], layout), t=0.0)
    calls = []
    for name in ("inv", "solve", "svd", "cond", "lstsq", "norm", "eigh", "pinv"):
        original = getattr(np.linalg, name)

        def counted(*args: object, _f: object = original, **kw: object) -> object:
            calls.append(1)
            return _f(*args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(np.linalg, name, counted)
    for i in range(1, 20):
        out = lifter.lift(_image(uv[i], layout), t=i / 30.0)
        assert np.isfinite(out.xyz[0, layout.index("left_pinky")]).all()
    assert not calls


def test_focal_length_from_the_field_of_view_and_frame_size(rig: Rig) -> None:
    lifter = Lifter(rig)
    focal, pp = lifter.camera((640, 480))
    assert focal == pytest.approx(320.0 / math.tan(math.radians(30.0)))  # the 60 degree default
    assert focal == pytest.approx(focal_from_fov(640, 60.0))
    assert pp is not None and pp.tolist() == [320.0, -240.0]  # x right, y up
    assert lifter.camera(None) == (None, None)
    assert Lifter(rig, LiftConfig(focal_px=900.0)).camera((640, 480))[0] == 900.0
    assert Lifter(rig, LiftConfig(fov_deg=None)).camera((640, 480))[0] is None
    # the synthetic performer's true camera when it is the source
    cfg = lift_config(load_config(None, {"source": "synthetic"}))
    assert cfg.focal_px == pytest.approx(240.0 / math.tan(math.radians(21.0)))  # 42 deg vertical
    assert cfg.principal_point == (320.0, 240.0)
    assert lift_config(load_config(None, {"source": "0"})).focal_px is None
    # the pipeline's stage hands the frame's size to the lifter
    seen = []

    class Spy:
        def lift(self, keypoints: Keypoints, t: float, size: tuple[int, int]) -> Keypoints:
            seen.append((t, size))
            return keypoints

    kp = Keypoints.empty(KeypointLayout.COCO17)
    LiftStage(Spy())(kp, Frame(np.zeros((48, 64, 3), np.uint8), 1.5, 0))
    assert seen == [(1.5, (64, 48))]
