"""Bone solver on synthetic ground truth: random poses inside the rig's limits -> forward
kinematics -> keypoints -> solver -> compared with the truth in degrees per bone."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink import quat
from avatarlink.errors import ConfigError, InputError
from avatarlink.rig import LIMIT_HINGE, Rig, forward_kinematics, keypoints_from_pose, load_rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.solver import (
    BoneSolver,
    SolverConfig,
    build_plan,
    clamp_to_limits,
    limit_violation_deg,
    sample_pose,
    solver_config_from_mapping,
)
from avatarlink.types import BoneRotations, Keypoints, Space

PRESETS = ("unity_humanoid", "vrm1", "mixamo", "rigify")
LAYOUTS = (KeypointLayout.COCO17, KeypointLayout.BLAZEPOSE33)


@pytest.fixture(scope="module")
def unity() -> Rig:
    return load_rig("unity_humanoid")


def _world(rig: Rig, layout: KeypointLayout, local: np.ndarray) -> np.ndarray:
    pos, rot = forward_kinematics(rig, local, np.zeros(3))
    return keypoints_from_pose(rig, layout, pos, rot)


def _keypoints(
    xyz: np.ndarray, layout: KeypointLayout, score: np.ndarray | None = None
) -> Keypoints:
    xyz = np.asarray(xyz, np.float32).reshape(-1, layout.num_keypoints, 3)
    if score is None:
        score = np.ones(xyz.shape[:2], np.float32)
    return Keypoints(xyz, np.asarray(score, np.float32), layout, Space.WORLD)


def _errors(rig: Rig, layout: KeypointLayout, truth: np.ndarray, solved: np.ndarray) -> np.ndarray:
    mask = build_plan(rig, layout).evaluated
    return np.degrees(quat.angle_between(truth, solved))[:, mask]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.value)
def test_rest_pose_gives_identity_for_every_bone(name: str, layout: KeypointLayout) -> None:
    rig = load_rig(name)
    world = _world(rig, layout, quat.identity((1, rig.num_bones)))
    (out,) = BoneSolver(rig).solve(_keypoints(world, layout), 0.0)
    assert (
        out.bones == rig.bones
        and out.rot.dtype == np.float32
        and out.rot.shape == (rig.num_bones, 4)
    )
    assert np.degrees(quat.angle(out.rot)).max() < 1e-3
    driven = set(rig.driven_bones(layout))
    assert {b for b, v in zip(rig.bones, out.valid, strict=True) if v} >= driven


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.value)
def test_exact_3d_recovers_random_poses(name: str, layout: KeypointLayout) -> None:
    rig = load_rig(name)
    rng = np.random.default_rng(11)
    truth = sample_pose(rig, layout, 400, rng)
    solved, valid = BoneSolver(rig).solve_batch(_keypoints(_world(rig, layout, truth), layout))
    err = _errors(rig, layout, truth, solved)
    assert np.median(err) <= 1.0
    assert np.percentile(err, 95) <= 3.0
    assert valid[:, build_plan(rig, layout).evaluated].mean() > 0.95


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.value)
def test_noisy_3d_stays_within_three_degrees_median(unity: Rig, layout: KeypointLayout) -> None:
    """1 cm RMS 3D noise per keypoint (sigma 1/sqrt(3) cm per axis)."""
    rng = np.random.default_rng(12)
    truth = sample_pose(unity, layout, 400, rng)
    world = _world(unity, layout, truth)
    world = world + rng.normal(0.0, 0.01 / np.sqrt(3.0), world.shape)
    solved, _ = BoneSolver(unity).solve_batch(_keypoints(world, layout))
    err = _errors(unity, layout, truth, solved)
    assert np.median(err) <= 3.0, np.median(err)


def test_hinges_never_leave_their_axis(unity: Rig) -> None:
    layout = KeypointLayout.BLAZEPOSE33
    rng = np.random.default_rng(13)
    truth = sample_pose(unity, layout, 300, rng)
    world = _world(unity, layout, truth) + rng.normal(0.0, 0.03, (300, layout.num_keypoints, 3))
    solved, _ = BoneSolver(unity).solve_batch(_keypoints(world, layout))
    lim = unity.limits
    for b in np.nonzero(lim.kind == LIMIT_HINGE)[0]:
        q = solved[:, b]
        off_axis = quat.norm(quat.cross(q[:, :3], lim.hinge_axis[b]))
        assert off_axis.max() < 1e-6, unity.bones[b]
        theta = np.degrees(quat.twist_angle(q, lim.hinge_axis[b]))
        lo, hi = lim.hinge_range_deg[b]
        assert theta.min() >= lo - 1e-4 and theta.max() <= hi + 1e-4


def test_clamp_to_limits(unity: Rig) -> None:
    rng = np.random.default_rng(14)
    wild = quat.random((200, unity.num_bones), rng)
    clamped = clamp_to_limits(unity, wild)
    assert limit_violation_deg(unity, clamped).max() < 1e-3
    inside = sample_pose(unity, KeypointLayout.BLAZEPOSE33, 200, rng)
    assert limit_violation_deg(unity, inside).max() < 1e-3
    np.testing.assert_allclose(
        quat.angle_between(clamp_to_limits(unity, inside), inside), 0.0, atol=1e-6
    )


def test_mirroring_swaps_sides_exactly(unity: Rig) -> None:
    layout = KeypointLayout.BLAZEPOSE33
    rng = np.random.default_rng(15)
    truth = sample_pose(unity, layout, 50, rng)
    kp = _keypoints(_world(unity, layout, truth), layout)
    plain, _ = BoneSolver(unity, SolverConfig(mirror=False)).solve_batch(kp)
    mirrored, _ = BoneSolver(unity, SolverConfig(mirror=True)).solve_batch(kp)
    swap = [
        unity.index(_swap(b)) if _swap(b) in unity.bones else i for i, b in enumerate(unity.bones)
    ]
    expected = quat.mirror_x(plain[:, swap])
    assert np.degrees(quat.angle_between(mirrored, expected)).max() < 1e-3
    # and it is not the identity map: the left arm differs from the right
    assert np.degrees(quat.angle_between(mirrored, plain)).max() > 10


def _swap(name: str) -> str:
    if name.startswith("Left"):
        return "Right" + name[4:]
    if name.startswith("Right"):
        return "Left" + name[5:]
    return name


def test_rig_mirror_option_is_the_default(unity: Rig) -> None:
    from dataclasses import replace

    mirrored_rig = replace(unity, mirror=True)
    assert BoneSolver(mirrored_rig).mirror and not BoneSolver(unity).mirror
    assert not BoneSolver(mirrored_rig, SolverConfig(mirror=False)).mirror


def test_mixamo_and_unity_give_the_same_world_bone_directions() -> None:
    layout = KeypointLayout.BLAZEPOSE33
    unity, mixamo = load_rig("unity_humanoid"), load_rig("mixamo")
    rng = np.random.default_rng(16)
    truth_u = sample_pose(unity, layout, 100, rng)
    truth_m = quat.identity((100, mixamo.num_bones))
    for j, b in enumerate(mixamo.bones):
        truth_m[:, j] = truth_u[:, unity.index(b)]
    dirs = []
    for rig, truth in ((unity, truth_u), (mixamo, truth_m)):
        solved, _ = BoneSolver(rig).solve_batch(_keypoints(_world(rig, layout, truth), layout))
        pos, _ = forward_kinematics(rig, solved, np.zeros(3))
        bones = [b for b in mixamo.bones if b != "Hips"]
        idx = [rig.index(b) for b in bones]
        par = rig.parents[idx]
        dirs.append(quat.unit(pos[:, idx] - pos[:, par]))
    angle = np.degrees(np.arccos(np.clip(quat.dot(dirs[0], dirs[1]), -1.0, 1.0)))
    assert np.median(angle) < 0.1
    assert np.percentile(angle, 95) < 1.0


def test_missing_keypoints_hold_then_ease_to_rest(unity: Rig) -> None:
    layout = KeypointLayout.COCO17
    cfg = SolverConfig(hold_s=0.5, ease_s=1.0)
    solver = BoneSolver(unity, cfg)
    local = quat.identity((1, unity.num_bones))
    arm = unity.index("LeftUpperArm")
    local[0, arm] = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), np.radians(-60))  # arm down
    world = _world(unity, layout, local)
    (first,) = solver.solve(_keypoints(world, layout), 0.0)
    assert quat.angle_between(first.rot[arm], local[0, arm]) < 1e-4
    score = np.ones((1, layout.num_keypoints))
    score[0, layout.index("left_elbow")] = 0.0  # the elbow drops out
    hidden = world.copy()
    hidden[0, layout.index("left_elbow")] = np.nan

    def at(t: float) -> BoneRotations:
        return solver.solve(_keypoints(hidden, layout, score), t)[0]

    held = at(0.3)
    assert not held.valid[arm] and held.valid[unity.index("RightUpperArm")]
    assert np.degrees(quat.angle_between(held.rot[arm], first.rot[arm])) < 1e-3
    halfway = at(1.0)  # 0.5 s of hold, then half of the 1 s ease
    assert np.degrees(quat.angle(halfway.rot[arm])) == pytest.approx(30.0, abs=0.5)
    assert np.degrees(quat.angle(at(2.0).rot[arm])) < 1e-3
    # it comes back at once when the elbow is seen again
    (back,) = solver.solve(_keypoints(world, layout), 2.1)
    assert back.valid[arm] and quat.angle_between(back.rot[arm], local[0, arm]) < 1e-4


def test_straight_elbow_keeps_minimal_twist(unity: Rig) -> None:
    layout = KeypointLayout.COCO17
    local = quat.identity((1, unity.num_bones))
    arm = unity.index("LeftUpperArm")
    local[0, arm] = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), np.radians(40))
    (out,) = BoneSolver(unity).solve(_keypoints(_world(unity, layout, local), layout), 0.0)
    assert out.valid[arm]
    assert np.degrees(quat.angle_between(out.rot[arm], local[0, arm])) < 1e-3


def test_no_person_image_space_and_unsupported_layout(unity: Rig) -> None:
    from dataclasses import replace

    solver = BoneSolver(unity)
    assert solver.solve(Keypoints.empty(KeypointLayout.COCO17, Space.WORLD), 0.0) == []
    with pytest.raises(InputError, match="world keypoints"):
        solver.solve(Keypoints.empty(KeypointLayout.COCO17, Space.IMAGE), 0.0)
    coco_only = replace(unity, layouts=(KeypointLayout.COCO17,))
    with pytest.raises(InputError, match="does not support keypoint layout 'blazepose33'"):
        BoneSolver(coco_only).solve(Keypoints.empty(KeypointLayout.BLAZEPOSE33, Space.WORLD), 0)


def test_root_position_is_never_zero_and_drops_when_crouching(unity: Rig) -> None:
    layout = KeypointLayout.COCO17
    local = quat.identity((1, unity.num_bones))
    world = _world(unity, layout, local)
    (still,) = BoneSolver(unity).solve(_keypoints(world, layout), 0.0)
    np.testing.assert_allclose(still.root_pos, unity.rest_positions[0], atol=1e-6)
    assert np.abs(still.root_pos).max() > 0.5
    # crouch: thighs forward 70 deg, knees bent 110 deg
    for side in ("Left", "Right"):
        local[0, unity.index(f"{side}UpperLeg")] = quat.from_axis_angle(
            np.array([1.0, 0.0, 0.0]), np.radians(-70)
        )
        local[0, unity.index(f"{side}LowerLeg")] = quat.from_axis_angle(
            np.array([1.0, 0.0, 0.0]), np.radians(110)
        )
    crouch = _world(unity, layout, local)
    solver = BoneSolver(unity, SolverConfig(root_translation=True))
    (low,) = solver.solve(_keypoints(crouch, layout), 0.0)
    assert 0.2 < low.root_pos[1] < unity.rest_positions[0, 1] - 0.2
    (up,) = solver.solve(_keypoints(world, layout), 0.1)
    assert up.root_pos[1] == pytest.approx(unity.rest_positions[0, 1], abs=1e-3)


def test_facing_correction_undoes_a_turned_camera(unity: Rig) -> None:
    layout = KeypointLayout.BLAZEPOSE33
    rng = np.random.default_rng(17)
    truth = sample_pose(unity, layout, 20, rng, root="facing")
    world = _world(unity, layout, truth)
    turn = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), np.radians(30))
    turned = quat.rotate(turn, world)
    plain, _ = BoneSolver(unity).solve_batch(_keypoints(world, layout))
    fixed, _ = BoneSolver(unity, SolverConfig(facing_yaw_deg=30)).solve_batch(
        _keypoints(turned, layout)
    )
    assert np.degrees(quat.angle_between(plain, fixed)).max() < 1e-3


def test_persons_keep_separate_state(unity: Rig) -> None:
    layout = KeypointLayout.COCO17
    rng = np.random.default_rng(18)
    truth = sample_pose(unity, layout, 2, rng)
    world = _world(unity, layout, truth).astype(np.float32)
    solver = BoneSolver(unity)
    kp = Keypoints(world, np.ones((2, 17), np.float32), layout, Space.WORLD, ids=np.array([5, 9]))
    a, b = solver.solve(kp, 0.0)
    assert (a.person_id, b.person_id) == (5, 9)  # outputs can follow one track id
    batch, _ = BoneSolver(unity).solve_batch(kp)
    np.testing.assert_allclose(np.stack([a.rot, b.rot]), batch, atol=1e-6)
    # person 9 alone, its left elbow hidden: it holds its own arm, not person 5's
    score = np.ones((1, 17), np.float32)
    score[0, layout.index("left_elbow")] = 0.0
    only = Keypoints(world[1:], score, layout, Space.WORLD, ids=np.array([9]))
    (held,) = solver.solve(only, 0.1)
    arm = unity.index("LeftUpperArm")
    assert not held.valid[arm]
    assert np.degrees(quat.angle_between(held.rot[arm], b.rot[arm])) < 1e-3


@pytest.mark.parametrize("name", ("unity_humanoid", "rigify"))
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.value)
def test_streaming_one_pose_equals_the_batch(name: str, layout: KeypointLayout) -> None:
    """One person per call (cached schedules) gives what a batch of poses gives, whatever is
    degenerate or missing: noise that pushes bones past their limits, straight elbows and
    knees (no twist reference), missing keypoints (a new person each frame: nothing held)."""
    rig = load_rig(name)
    rng = np.random.default_rng(21)
    n = 120
    truth = sample_pose(rig, layout, n, rng)
    for b in np.nonzero(rig.limits.kind == LIMIT_HINGE)[0]:
        truth[: n // 3, b] = (0.0, 0.0, 0.0, 1.0)  # straight limbs in the first third
    noise = np.where(np.arange(n) < n // 3, 0.001, 0.03)[:, None, None]
    world = _world(rig, layout, truth) + noise * rng.normal(size=(n, layout.num_keypoints, 3))
    score = np.ones((n, layout.num_keypoints), np.float32)
    score[n // 2 :][rng.random((n - n // 2, layout.num_keypoints)) < 0.1] = 0.0
    batch, valid = BoneSolver(rig).solve_batch(_keypoints(world, layout, score))
    solver = BoneSolver(rig)
    for i in range(n):
        kp = Keypoints(
            world[i : i + 1].astype(np.float32), score[i : i + 1], layout, Space.WORLD,
            ids=np.array([i]),
        )  # fmt: skip
        (out,) = solver.solve(kp, i * 0.01)
        np.testing.assert_array_equal(out.valid, valid[i])
        assert np.degrees(quat.angle_between(out.rot, batch[i])).max() < 1e-3
    assert not valid[n // 2 :, build_plan(rig, layout).evaluated].all()  # some bones missing


def test_solver_clamp_equals_clamp_to_limits(unity: Rig) -> None:
    layout = KeypointLayout.BLAZEPOSE33
    rng = np.random.default_rng(22)
    truth = sample_pose(unity, layout, 200, rng)
    world = _world(unity, layout, truth) + rng.normal(0.0, 0.05, (200, layout.num_keypoints, 3))
    kp = _keypoints(world, layout)
    free, _ = BoneSolver(unity, SolverConfig(clamp=False)).solve_batch(kp)
    clamped, _ = BoneSolver(unity).solve_batch(kp)
    assert np.degrees(quat.angle_between(free, clamped)).max() > 5.0  # the noise breaks limits
    expected = clamp_to_limits(unity, free)
    # Within the 1e-4 degree tolerance the solver allows before clamping.
    assert np.degrees(quat.angle_between(clamped, expected)).max() < 1e-3


def test_sampled_poses_stay_inside_the_limits(unity: Rig) -> None:
    rng = np.random.default_rng(19)
    for layout in LAYOUTS:
        for root in ("any", "facing", "rest"):
            poses = sample_pose(unity, layout, 200, rng, root=root)
            viol = limit_violation_deg(unity, poses)
            assert viol.max() < 1e-3


def test_solver_config_section_errors_name_key_and_line() -> None:
    cfg = solver_config_from_mapping({"hold_s": 1.5, "mirror": True}, "run.yaml", {}, "solver")
    assert cfg.hold_s == 1.5 and cfg.mirror is True
    with pytest.raises(ConfigError, match=r"solver\.hold_s must be >= 0.*run\.yaml line 7"):
        solver_config_from_mapping({"hold_s": -1}, "run.yaml", {"solver.hold_s": 7}, "solver")
    with pytest.raises(ConfigError, match=r"solver\.hold is not a known key"):
        solver_config_from_mapping({"hold": 1}, "run.yaml", {}, "solver")
    with pytest.raises(ConfigError, match=r"solver\.clamp must be true or false"):
        solver_config_from_mapping({"clamp": "yes"}, "run.yaml", {}, "solver")
    with pytest.raises(ConfigError, match=r"solver\.mirror must be true or false"):
        solver_config_from_mapping({"mirror": "yes"}, "run.yaml", {}, "solver")
    assert solver_config_from_mapping({"mirror": None}, "", {}).mirror is None
    assert solver_config_from_mapping({"facing_yaw_deg": -20}, "", {}).facing_yaw_deg == -20.0
