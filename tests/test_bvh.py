"""BVH export: slerp/resampling against analytic motion, and the written file re-read by an
independent parser whose forward kinematics must reproduce the recorded joints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from synthetic_results import make_result, root_at, rotations_at, skeleton

from avatarlink.bvh import (
    Motion,
    bvh_text,
    euler_channels,
    forward_kinematics,
    hips_position,
    motion_from_track,
    resample,
    slerp,
    write_bvh,
)
from avatarlink.cli import main
from avatarlink.errors import InputError
from avatarlink.recording import Recorder, RecordingHeader, load_recording
from avatarlink.skeletons import KeypointLayout


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between direction vectors (..., 3), degrees."""
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def test_slerp_follows_the_shorter_arc_at_constant_speed() -> None:
    q0 = Rotation.identity().as_quat()
    q1 = Rotation.from_rotvec([0.0, 0.0, 1.2]).as_quat()
    w = np.linspace(0.0, 1.0, 7)
    out = slerp(np.broadcast_to(q0, (7, 4)), np.broadcast_to(-q1, (7, 4)), w)  # -q1 == q1
    angles = Rotation.from_quat(out).as_rotvec()
    np.testing.assert_allclose(angles[:, 2], 1.2 * w, atol=1e-9)
    np.testing.assert_allclose(angles[:, :2], 0.0, atol=1e-12)
    same = slerp(q1[None], q1[None], np.array([0.3]))
    np.testing.assert_allclose(np.abs(np.sum(same * q1, -1)), 1.0, atol=1e-12)


def test_resample_irregular_samples_to_fixed_rate_matches_analytic_motion() -> None:
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.02, 0.06, 60))  # ~25 fps with jitter
    axis = np.array([0.3, 0.8, -0.52]) / np.linalg.norm([0.3, 0.8, -0.52])
    speed = 2.0  # rad/s, so consecutive samples are < 0.12 rad apart: slerp is exact

    def rot(tt: np.ndarray) -> np.ndarray:
        return Rotation.from_rotvec(np.outer(speed * tt, axis)).as_quat()

    q = np.stack([rot(t), Rotation.identity(len(t)).as_quat()], axis=1)
    root = np.stack([t, 2 * t, np.zeros_like(t)], axis=1)
    times, q_out, root_out = resample(t, q, root, fps=30.0)
    np.testing.assert_allclose(np.diff(times), 1 / 30, atol=1e-12)
    assert times[0] == t[0] and times[-1] <= t[-1] < times[-1] + 1 / 30
    expected = Rotation.from_quat(rot(times))
    err = (Rotation.from_quat(q_out[:, 0]) * expected.inv()).magnitude()
    assert np.degrees(err).max() < 1e-6
    np.testing.assert_allclose(q_out[:, 1], np.broadcast_to([0, 0, 0, 1], (len(times), 4)))
    np.testing.assert_allclose(root_out[:, 0], times, atol=1e-9)
    np.testing.assert_allclose(root_out[:, 1], 2 * times, atol=1e-9)


def test_resample_bridges_missing_samples_and_rejects_bad_input() -> None:
    t = np.array([0.0, 0.1, 0.2, 0.3])
    q = np.tile(Rotation.from_rotvec([0, 0.5, 0]).as_quat(), (4, 1, 1))
    q[1:3] = np.nan  # bone unseen in two frames: hold the last pose
    _, out, root = resample(t, q, np.full((4, 3), np.nan), 10.0)
    np.testing.assert_allclose(out[:, 0], np.tile(q[0, 0], (4, 1)), atol=1e-12)
    np.testing.assert_array_equal(root, 0.0)
    with pytest.raises(InputError, match="increase"):
        resample(np.array([0.0, 0.0]), q[:2], np.zeros((2, 3)), 30)
    with pytest.raises(InputError, match="fps"):
        resample(t, q, np.zeros((4, 3)), 0)


def test_euler_channels_are_unwrapped_over_time() -> None:
    turns = np.linspace(0, 4 * np.pi, 200)  # two full turns about Y
    q = Rotation.from_rotvec(np.outer(turns, [0, 1, 0])).as_quat()[:, None]
    angles = euler_channels(q)
    assert np.abs(np.diff(angles, axis=0)).max() < 5.0
    assert angles[-1, 0, 2] - angles[0, 0, 2] == pytest.approx(720.0, abs=1e-6)


def test_forward_kinematics_of_rest_pose_sums_offsets() -> None:
    sk = skeleton()
    rest = np.tile([0.0, 0.0, 0.0, 1.0], (len(sk.bones), 1))
    pos = forward_kinematics(sk, rest, sk.offsets[0])
    hand = sk.bones.index("LeftHand")
    chain = ["Hips", "Spine", "Chest", "LeftUpperArm", "LeftLowerArm", "LeftHand"]
    expected = sum(sk.offsets[sk.bones.index(n)].astype(np.float64) for n in chain)
    np.testing.assert_allclose(pos[hand], expected, atol=1e-6)
    # A 90 degree turn of the chest about Y swings the left arm from +X to -Z.
    rot = rest.copy()
    rot[sk.bones.index("Chest")] = Rotation.from_rotvec([0, np.pi / 2, 0]).as_quat()
    turned = forward_kinematics(sk, rot, sk.offsets[0])
    arm = turned[hand] - turned[sk.bones.index("LeftUpperArm")]
    np.testing.assert_allclose(arm / np.linalg.norm(arm), [0, 0, -1], atol=1e-6)


# --- an independent BVH reader: text -> hierarchy, Euler matrices by hand, forward kinematics ---


def _axis_matrix(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.zeros((*a.shape, 3, 3))
    i = "XYZ".index(axis)
    j, k = [n for n in range(3) if n != i]
    m[..., i, i] = 1.0
    m[..., j, j] = c
    m[..., k, k] = c
    m[..., j, k] = -s if i != 1 else s
    m[..., k, j] = s if i != 1 else -s
    return m


def parse_bvh(
    text: str,
) -> tuple[list[str], list[int], np.ndarray, list[list[str]], np.ndarray, float]:
    """(names, parents, offsets (J, 3), channels per joint, motion (F, C), frame time)."""
    tokens = text.split()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    stack: list[int] = []
    i = 0
    in_end = False
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            i += 2
        elif tok == "End":
            in_end = True
            i += 2
        elif tok == "{":
            stack.append(-2 if in_end else len(names) - 1)
            i += 1
        elif tok == "}":
            if stack.pop() == -2:
                in_end = False
            i += 1
        elif tok == "OFFSET":
            if not in_end:
                offsets.append([float(v) for v in tokens[i + 1 : i + 4]])
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            channels.append(tokens[i + 2 : i + 2 + n])
            i += 2 + n
        else:
            i += 1
    frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    data = np.array(tokens[i + 6 :], float).reshape(frames, -1)
    return names, parents, np.array(offsets), channels, data, frame_time


def bvh_joint_positions(text: str) -> tuple[list[str], np.ndarray, float]:
    """Joint positions (F, J, 3) in file units from the BVH text alone."""
    names, parents, offsets, channels, data, frame_time = parse_bvh(text)
    f = data.shape[0]
    pos = np.zeros((f, len(names), 3))
    glob = np.zeros((f, len(names), 3, 3))
    col = 0
    for j, chans in enumerate(channels):
        local = np.broadcast_to(np.eye(3), (f, 3, 3)).copy()
        translation = np.zeros((f, 3))
        for c in chans:
            if c.endswith("position"):
                translation[:, "XYZ".index(c[0])] = data[:, col]
            else:
                local = local @ _axis_matrix(c[0], data[:, col])
            col += 1
        p = parents[j]
        if p < 0:
            pos[:, j] = translation
            glob[:, j] = local
        else:
            glob[:, j] = glob[:, p] @ local
            pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
    return names, pos, frame_time


def synthetic_recording(path: Path, frames: int = 40, fps: float = 24.0) -> None:
    rng = np.random.default_rng(1)
    times = 5.0 + np.cumsum(rng.uniform(0.7, 1.3, frames) / fps)
    header = RecordingHeader("synthetic", KeypointLayout.COCO17, skeleton())
    with Recorder(path, header) as recorder:
        for i, t in enumerate(times):
            recorder.write(make_result(i, float(t)))


def test_bvh_file_reproduces_the_recorded_skeleton_motion(tmp_path: Path) -> None:
    rec = tmp_path / "walk.jsonl"
    synthetic_recording(rec)
    loaded = load_recording(rec)
    sk = skeleton()
    motion = motion_from_track(loaded.track(0), sk, fps=30.0)
    text = bvh_text(motion, units="cm")
    names, pos_cm, frame_time = bvh_joint_positions(text)
    assert frame_time == pytest.approx(1 / 30, abs=1e-7)
    assert sorted(names) == sorted(sk.bones)
    # Ground truth: the synthetic performer's rotations and root at each output time.
    track = loaded.track(0)
    times = motion.t0 + np.arange(motion.num_frames) / 30.0
    assert times[-1] <= track.t[-1]
    truth_rot = np.stack([rotations_at(t) for t in times])
    truth_root = np.stack([root_at(t) for t in times])
    truth = forward_kinematics(sk, truth_rot, hips_position(sk, truth_root))
    order = [sk.bones.index(n) for n in names]
    got = pos_cm / 100.0
    # Positions agree to ~1 cm (slerp between 24 fps samples of a smooth motion, file rounding).
    np.testing.assert_allclose(got, truth[:, order], atol=0.01)
    # Bone directions within 2 degrees at every frame.
    parents = [sk.parents[i] for i in order]
    child = [k for k, p in enumerate(parents) if p >= 0]
    par = [names.index(sk.bones[parents[k]]) for k in child]
    d_got = got[:, child] - got[:, par]
    d_true = truth[:, order][:, child] - truth[:, order][:, par]
    assert angle_deg(d_got, d_true).max() < 2.0
    # Hips start at the rig's rest height and move with the recorded root.
    np.testing.assert_allclose(got[0, names.index("Hips")], sk.offsets[0], atol=1e-4)


def test_bone_missing_from_recording_stays_at_rest(tmp_path: Path) -> None:
    sk = skeleton()
    rec = tmp_path / "r.jsonl"
    synthetic_recording(rec, frames=5)
    track = load_recording(rec).track(0, bones=[b for b in sk.bones if b != "Head"])
    motion = motion_from_track(track, sk, fps=30.0)
    head = sk.bones.index("Head")
    np.testing.assert_allclose(motion.rot[:, head], np.tile([0, 0, 0, 1.0], (motion.num_frames, 1)))


def test_export_command_writes_bvh_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "take.jsonl"
    synthetic_recording(rec, frames=30, fps=30.0)
    out = tmp_path / "take.bvh"
    assert main(["export", str(rec), "--bvh", str(out), "--fps", "60", "--units", "m"]) == 0
    _, pos, frame_time = bvh_joint_positions(out.read_text())
    assert frame_time == pytest.approx(1 / 60, abs=1e-7)
    duration = load_recording(rec).duration_s
    assert pos.shape[0] == int(np.floor(duration * 60 + 1e-6)) + 1
    captured = capsys.readouterr()
    assert str(out) in captured.out and "frames" in captured.out


def test_export_without_rig_in_header_needs_rig_option(tmp_path: Path) -> None:
    rec = tmp_path / "norig.jsonl"
    with Recorder(rec, RecordingHeader("m", KeypointLayout.COCO17, None)) as recorder:
        recorder.write(make_result(0, 0.0))
    assert main(["export", str(rec), "--bvh", str(tmp_path / "x.bvh")]) == 2


def test_write_bvh_rejects_unknown_units(tmp_path: Path) -> None:
    sk = skeleton()
    motion = Motion(sk, np.tile([0, 0, 0, 1.0], (2, len(sk.bones), 1)), np.zeros((2, 3)), 30.0)
    from avatarlink.errors import OutputError

    with pytest.raises(OutputError, match="inch"):
        write_bvh(tmp_path / "x.bvh", motion, units="inch")


# --- the exported file in real Blender (bpy, Blender as a Python module) -----------------------

BLENDER_SCRIPT = r"""
import json, sys
import bpy
path, frames = sys.argv[1], json.loads(sys.argv[2])
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(
    filepath=path, global_scale=0.01, axis_forward="-Z", axis_up="Y", rotate_mode="NATIVE",
    update_scene_fps=True, update_scene_duration=True,
)
arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
scene = bpy.context.scene
first, last = arm.animation_data.action.frame_range
out = {"fps": scene.render.fps / scene.render.fps_base, "frame_start": scene.frame_start,
       "first": first, "last": last, "heads": {}}
for f in frames:
    scene.frame_set(scene.frame_start + f)
    out["heads"][str(f)] = {pb.name: list(arm.matrix_world @ pb.head) for pb in arm.pose.bones}
print("RESULT" + json.dumps(out))
"""


def bpy_python() -> str:
    """A Python that can ``import bpy`` (tools/test-setup.sh installs bpy into .tools/bpy-venv;
    ``AVATARLINK_BPY_PYTHON`` overrides); skips when there is none."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    candidates = [
        os.environ.get("AVATARLINK_BPY_PYTHON", ""),
        str(root / ".tools" / "bpy-venv" / "bin" / "python"),
        sys.executable,
    ]
    for python in candidates:
        if not python or not Path(python).exists():
            continue
        probe = subprocess.run(
            [python, "-c", "import bpy"], capture_output=True, timeout=120, check=False
        )
        if probe.returncode == 0:
            return python
    pytest.skip(
        "no Python with bpy: run tools/test-setup.sh (installs bpy into .tools/bpy-venv) "
        "or set AVATARLINK_BPY_PYTHON"
    )


def smooth_motion(t: np.ndarray, bones: int, seed: int = 7) -> np.ndarray:
    """(T, B, 4) xyzw: every bone swings about its own axis, up to 0.7 rad, at its own pace."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(bones, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    amp = rng.uniform(0.1, 0.7, bones)
    freq = rng.uniform(0.2, 0.8, bones)
    phase = rng.uniform(0, 2 * np.pi, bones)
    angle = amp * np.sin(2 * np.pi * freq * t[:, None] + phase)
    return np.asarray(
        Rotation.from_rotvec((angle[..., None] * axis).reshape(-1, 3)).as_quat()
    ).reshape(len(t), bones, 4)


@pytest.mark.slow
def test_blender_imports_the_bvh_with_bone_directions_within_2_degrees(tmp_path: Path) -> None:
    import json
    import subprocess
    from dataclasses import replace

    from avatarlink.recording import RigSkeleton
    from avatarlink.rig import forward_kinematics as rig_fk
    from avatarlink.rig import load_rig
    from avatarlink.types import BoneRotations

    python = bpy_python()
    rig = load_rig("unity_humanoid")
    sk = RigSkeleton.from_rig(rig)
    rng = np.random.default_rng(2)
    times = 3.0 + np.cumsum(rng.uniform(0.032, 0.048, 75))  # ~25 fps, irregular, 3 s
    motion = smooth_motion(times, len(rig.bones))
    root = np.stack([0.3 * np.sin(times), 0.05 * np.cos(2 * times), 0.2 * times], axis=1)
    rec = tmp_path / "take.jsonl"
    base = make_result(0, 0.0)
    with Recorder(rec, RecordingHeader("synthetic", KeypointLayout.COCO17, sk)) as recorder:
        for i, t in enumerate(times):
            pose = BoneRotations(
                rig.bones, motion[i].astype(np.float32), root[i].astype(np.float32),
                np.ones(len(rig.bones), bool), float(t),
            )  # fmt: skip
            frame = replace(base.frame, t=float(t), index=i)
            recorder.write(replace(base, frame=frame, rotations=(pose,)))
    out = tmp_path / "take.bvh"
    assert main(["export", str(rec), "--bvh", str(out), "--fps", "30"]) == 0

    check = [0, 17, 44, 60]
    proc = subprocess.run(
        [python, "-c", BLENDER_SCRIPT, str(out), json.dumps(check)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
    blender = json.loads(line[len("RESULT") :])
    assert blender["fps"] == pytest.approx(30.0, abs=1e-3)
    assert blender["last"] - blender["first"] + 1 == int((times[-1] - times[0]) * 30) + 1

    # Ground truth from the rig module's own forward kinematics at each BVH frame's time.
    parents = rig.parents
    worst = 0.0
    for f in check:
        t = times[0] + f / 30.0
        truth_rot = smooth_motion(np.array([t]), len(rig.bones))[0]
        truth_root = np.interp(t, times, root[:, 0]), np.interp(t, times, root[:, 1])
        truth_root = np.array([*truth_root, np.interp(t, times, root[:, 2])]) - root[0]
        truth, _ = rig_fk(rig, truth_rot, rig.rest_positions[0] + truth_root)
        heads = blender["heads"][str(f)]
        # Blender's importer maps BVH (x, y, z) -> (x, -z, y); undo it.
        got = np.array([[h[0], h[2], -h[1]] for h in (heads[b] for b in rig.bones)])
        np.testing.assert_allclose(got[0], truth[0], atol=0.01)  # hips translation
        child = np.flatnonzero(parents >= 0)
        d_got = got[child] - got[parents[child]]
        d_true = truth[child] - truth[parents[child]]
        worst = max(worst, float(angle_deg(d_got, d_true).max()))
    print(f"largest bone direction error {worst:.3f} degrees")
    assert worst < 2.0, f"largest bone direction error {worst:.2f} degrees"


def test_forward_kinematics_matches_the_rig_module() -> None:
    """The BVH writer and the preview's 3D view use the same convention as avatarlink.rig."""
    from avatarlink import quat
    from avatarlink.recording import RigSkeleton
    from avatarlink.rig import forward_kinematics as rig_fk
    from avatarlink.rig import load_rig

    rig = load_rig("unity_humanoid")
    rng = np.random.default_rng(4)
    rot = quat.random((6, len(rig.bones)), rng)
    root = rng.normal(size=(6, 3))
    expected, _ = rig_fk(rig, rot, root)
    got = forward_kinematics(RigSkeleton.from_rig(rig), rot, root)
    np.testing.assert_allclose(got, expected, atol=1e-9)
