"""Rig YAML: presets, coordinate conventions, forward kinematics, and every validation error
(each names the file, the line and the dotted key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatarlink import quat
from avatarlink.cli import main
from avatarlink.errors import RigError
from avatarlink.rig import (
    HUMAN_BONES,
    LIMIT_HINGE,
    axis_matrix,
    forward_kinematics,
    keypoints_from_pose,
    list_rigs,
    load_rig,
)
from avatarlink.skeletons import KeypointLayout

PRESETS = ("unity_humanoid", "vrm1", "mixamo", "rigify")

TINY = """\
name: tiny
convention: gltf
layouts: [coco17]
virtual:
  hips_centre: mid(left_hip, right_hip)
  neck: mid(left_shoulder, right_shoulder)
keypoints:
  left_hip: LeftUpperLeg
  right_hip: RightUpperLeg
  left_shoulder: LeftUpperArm
  right_shoulder: RightUpperArm
  left_elbow: LeftLowerArm
  left_wrist: {bone: LeftLowerArm, offset: [0.25, 0, 0]}
bones:
  Hips:
    parent: null
    position: [0, 0.95, 0]
    drive: {from: hips_centre, to: neck}
    up: {from: right_hip, to: left_hip}
  Spine:
    parent: Hips
    position: [0, 0.45, 0]
    limits: {swing: 30, twist: [-20, 20]}
  LeftUpperArm:
    parent: Spine
    position: [0.15, 0.01, 0]
    direction: [1, 0, 0]
    drive: {from: left_shoulder, to: left_elbow}
    up: {hinge: LeftLowerArm}
    limits: {swing: 90, twist: [-90, 90]}
  LeftLowerArm:
    parent: LeftUpperArm
    position: [0.27, 0, 0]
    drive: {from: left_elbow, to: left_wrist}
    limits: {hinge: {axis: [0, -1, 0], range: [0, 150]}}
  RightUpperArm:
    parent: Spine
    position: [-0.15, 0.01, 0]
  LeftUpperLeg:
    parent: Hips
    position: [0.09, -0.05, 0]
  RightUpperLeg:
    parent: Hips
    position: [-0.09, -0.05, 0]
"""


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


def test_presets_are_listed() -> None:
    assert set(PRESETS) <= set(list_rigs())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_is_well_formed(name: str) -> None:
    rig = load_rig(name)
    assert rig.bones[0] == "Hips" and rig.parents[0] == -1
    assert all(b in HUMAN_BONES for b in rig.bones)
    assert all(0 <= p < i for i, p in enumerate(rig.parents) if i > 0), "parent before child"
    assert len(set(rig.target_names)) == rig.num_bones
    # a real T-pose: no bone sits on its parent's joint, rest positions are never all zero
    assert np.all(np.linalg.norm(rig.rest_local_positions[1:], axis=1) > 0.005)
    assert rig.rest_positions[0, 1] == pytest.approx(rig.hip_height)
    assert rig.rest_local_positions.dtype == np.float32
    assert set(rig.layouts) == {KeypointLayout.COCO17, KeypointLayout.BLAZEPOSE33}
    for layout in rig.layouts:  # every keypoint has a place on the body
        assert np.isfinite(rig.rest_keypoints(layout)).all()
    expected = 52 if name == "mixamo" else 55
    assert rig.num_bones == expected


@pytest.mark.parametrize("name", PRESETS)
def test_presets_share_the_world_frame_whatever_their_convention(name: str) -> None:
    """Unity (left-handed, +Y up), glTF and Blender (+Z up, facing -Y) files all load into the
    same world frame: the left arm points +X, the elbow hinge turns the forearm forward (+Z)."""
    rig = load_rig(name)
    ua, la = rig.index("LeftUpperArm"), rig.index("LeftLowerArm")
    np.testing.assert_allclose(rig.rest_directions[ua], [1, 0, 0], atol=1e-3)
    assert rig.limits.kind[la] == LIMIT_HINGE
    bent = quat.rotate(quat.from_axis_angle(rig.limits.hinge_axis[la], np.radians(90)), [1, 0, 0])
    np.testing.assert_allclose(bent, [0, 0, 1], atol=1e-3)
    assert rig.rest_positions[rig.index("LeftHand"), 0] > 0.5  # left side at +X
    assert rig.rest_positions[rig.index("Head"), 1] > 1.3  # +Y up
    nose = rig.rest_point("nose")
    assert nose[2] > rig.rest_positions[rig.index("Head"), 2]  # faces +Z


def test_axis_matrix_conventions() -> None:
    unity = axis_matrix("unity", "+Z")
    np.testing.assert_allclose(unity @ [-1, 0, 0], [1, 0, 0])  # Unity's -X is the left side
    np.testing.assert_allclose(unity @ [0, 1, 0], [0, 1, 0])
    blender = axis_matrix("blender", "-Y")
    np.testing.assert_allclose(blender @ [0, 0, 1], [0, 1, 0])  # Blender up
    np.testing.assert_allclose(blender @ [0, -1, 0], [0, 0, 1])  # Blender front
    np.testing.assert_allclose(blender @ [1, 0, 0], [1, 0, 0])  # .L bones at +X
    np.testing.assert_allclose(axis_matrix("gltf", "+Z"), np.eye(3))
    assert np.linalg.det(unity) < 0 < np.linalg.det(blender)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(RigError, match=r"no rig preset 'unity_humanoi'.*did you mean"):
        load_rig("unity_humanoi")


# ---------------------------------------------------------------------------------------------
# Forward kinematics
# ---------------------------------------------------------------------------------------------


def test_forward_kinematics_at_rest_and_against_a_plain_loop() -> None:
    rig = load_rig("unity_humanoid")
    pos, rot = forward_kinematics(rig, quat.identity(rig.num_bones))
    np.testing.assert_allclose(pos, rig.rest_positions, atol=1e-6)
    np.testing.assert_allclose(rot, quat.identity(rig.num_bones), atol=1e-12)
    rng = np.random.default_rng(3)
    local = quat.random((4, rig.num_bones), rng)
    root = rng.standard_normal((4, 3))
    pos, rot = forward_kinematics(rig, local, root)
    for n in range(4):
        g = [None] * rig.num_bones
        p = [None] * rig.num_bones
        for b in range(rig.num_bones):
            par = rig.parents[b]
            if par < 0:
                g[b], p[b] = local[n, b], root[n]
            else:
                g[b] = quat.multiply(g[par], local[n, b])
                p[b] = p[par] + quat.rotate(g[par], rig.rest_local_positions[b])
        np.testing.assert_allclose(pos[n], np.array(p), atol=1e-9)
        np.testing.assert_allclose(quat.angle_between(rot[n], np.array(g)), 0, atol=1e-6)


def test_keypoints_follow_their_bones() -> None:
    rig = load_rig("unity_humanoid")
    layout = KeypointLayout.BLAZEPOSE33
    pos, rot = forward_kinematics(rig, quat.identity(rig.num_bones))
    np.testing.assert_allclose(
        keypoints_from_pose(rig, layout, pos, rot), rig.rest_keypoints(layout), atol=1e-6
    )
    # Turning the whole body 90 deg about +Y turns the keypoints with it.
    local = quat.identity(rig.num_bones)
    turn = quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), np.pi / 2)
    local[0] = turn
    pos, rot = forward_kinematics(rig, local, np.zeros(3))
    kp = keypoints_from_pose(rig, layout, pos, rot)
    rest = rig.rest_keypoints(layout) - rig.rest_positions[0]
    np.testing.assert_allclose(kp, quat.rotate(turn, rest), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Validation errors: file, line and dotted key
# ---------------------------------------------------------------------------------------------


def _line_of(text: str, fragment: str, occurrence: int = 0) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if fragment in line]
    assert lines, f"{fragment!r} not in the text"
    return lines[occurrence]


def _expect_error(
    tmp_path: Path, text: str, key: str, at: str, words: str, occurrence: int = 0
) -> str:
    path = tmp_path / "bad_rig.yaml"
    path.write_text(text)
    with pytest.raises(RigError) as info:
        load_rig(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{_line_of(text, at, occurrence)}: {key}: "), message
    assert words in message, message
    return message


def test_tiny_rig_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    rig = load_rig(path)
    assert rig.bones == (
        "Hips", "Spine", "LeftUpperArm", "LeftLowerArm", "RightUpperArm", "LeftUpperLeg",
        "RightUpperLeg",
    )  # fmt: skip
    np.testing.assert_allclose(rig.rest_directions[rig.index("LeftLowerArm")], [1, 0, 0])


_ARM_R = "    parent: Spine\n    position: [-0.15"
_SPINE = "    parent: Hips\n    position: [0, 0.45"
_LEG_R = "    parent: Hips\n    position: [-0.09"
_ELBOW_DRIVE = "{from: left_elbow, to: left_wrist}"

# (id, old text, new text, dotted key, (line fragment, occurrence), words in the message)
CASES = [
    ("unknown bone", "  Spine:\n", "  Spline:\n", "bones.Spline", ("  Spline:", 0),
     "unknown bone"),
    ("unknown keypoint", "to: left_elbow}", "to: left_elbo}", "bones.LeftUpperArm.drive.to",
     ("to: left_elbo}", 0), "unknown keypoint 'left_elbo' (did you mean 'left_elbow'?)"),
    ("unknown virtual keypoint", "right_shoulder)", "right_sholder)", "virtual.neck",
     ("right_sholder)", 0), "unknown keypoint 'right_sholder'"),
    ("missing parent", _ARM_R, _ARM_R.replace("Spine", "Chest"), "bones.RightUpperArm.parent",
     ("parent: Chest", 0), "missing parent"),
    ("cycle", _SPINE, _SPINE.replace("Hips", "LeftUpperArm"), "bones.Spine.parent",
     ("parent: LeftUpperArm", 0), "cycle"),
    ("zero direction", "direction: [1, 0, 0]", "direction: [0, 0, 0]",
     "bones.LeftUpperArm.direction", ("direction: [0, 0, 0]", 0), "zero-length"),
    ("zero drive", _ELBOW_DRIVE, _ELBOW_DRIVE.replace("wrist", "elbow"),
     "bones.LeftLowerArm.drive", ("to: left_elbow}", 1), "zero-length rest direction"),
    ("swing out of range", "swing: 90,", "swing: 200,", "bones.LeftUpperArm.limits.swing",
     ("swing: 200", 0), "out of range [0, 180]"),
    ("twist reversed", "twist: [-20, 20]", "twist: [20, -20]", "bones.Spine.limits.twist",
     ("twist: [20, -20]", 0), "greater than max"),
    ("twist out of range", "twist: [-20, 20]", "twist: [-200, 20]",
     "bones.Spine.limits.twist[0]", ("twist: [-200, 20]", 0), "out of range [-180, 180]"),
    ("hinge excludes rest", "range: [0, 150]", "range: [10, 150]",
     "bones.LeftLowerArm.limits.hinge.range", ("range: [10, 150]", 0), "must include 0"),
    ("hinge axis along the bone", "axis: [0, -1, 0]", "axis: [1, 0, 0]",
     "bones.LeftLowerArm.limits.hinge.axis", ("axis: [1, 0, 0]", 0), "perpendicular"),
    ("position wrong type", "position: [0.27, 0, 0]", 'position: "far"',
     "bones.LeftLowerArm.position", ('position: "far"', 0), "expected a list of 3 numbers"),
    ("swing wrong type", "swing: 90,", "swing: ninety,", "bones.LeftUpperArm.limits.swing",
     ("swing: ninety", 0), "expected a number of degrees"),
    ("bool wrong type", "layouts: [coco17]\n", "layouts: [coco17]\nmirror: maybe\n", "mirror",
     ("mirror: maybe", 0), "expected true or false"),
    ("zero position", "position: [-0.15, 0.01, 0]", "position: [0, 0, 0]",
     "bones.RightUpperArm.position", ("position: [0, 0, 0]", 0), "rest position [0, 0, 0]"),
    ("unknown top key", "layouts: [coco17]\n", "layouts: [coco17]\nmirrror: true\n", "mirrror",
     ("mirrror: true", 0), "did you mean 'mirror'"),
    ("unknown convention", "convention: gltf", "convention: maya", "convention",
     ("convention: maya", 0), "unknown convention"),
    ("unknown layout", "layouts: [coco17]", "layouts: [coco18]", "layouts[0]",
     ("layouts: [coco18]", 0), "unknown keypoint layout"),
    ("direction disagrees", "direction: [1, 0, 0]", "direction: [0, 1, 0]",
     "bones.LeftUpperArm.direction", ("direction: [0, 1, 0]", 0),
     "from the drive's rest direction"),
    ("keypoint without a site", "to: left_elbow}", "to: right_elbow}",
     "bones.LeftUpperArm.drive.to", ("to: right_elbow}", 0), "has no rest site"),
    ("second root", _LEG_R, _LEG_R.replace("Hips", "null"), "bones.RightUpperLeg.parent",
     ("parent: null", 1), "only Hips is a root"),
    ("hinge of a non-child", "up: {hinge: LeftLowerArm}", "up: {hinge: RightUpperArm}",
     "bones.LeftUpperArm.up.hinge", ("up: {hinge: RightUpperArm}", 0), "not a child"),
    ("drive wrong type", _ELBOW_DRIVE, "left_wrist", "bones.LeftLowerArm.drive",
     ("drive: left_wrist", 0), "expected a mapping"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_validation_errors_name_file_line_and_key(tmp_path: Path, case: tuple[Any, ...]) -> None:
    _, old, new, key, (fragment, occurrence), words = case
    assert old in TINY
    text = TINY.replace(old, new, 1)
    _expect_error(tmp_path, text, key, fragment, words, occurrence)


def test_duplicate_key_and_syntax_error_name_the_line(tmp_path: Path) -> None:
    text = TINY.replace("convention: gltf\n", "convention: gltf\nconvention: unity\n")
    _expect_error(tmp_path, text, "convention", "convention: unity", "duplicate key")
    path = tmp_path / "broken.yaml"
    path.write_text(TINY.replace("position: [0.27, 0, 0]", "position: [0.27, 0, 0"))
    with pytest.raises(RigError, match=rf"^{path}:\d+: invalid YAML"):
        load_rig(path)


def test_fit_points_must_sit_on_the_bone(tmp_path: Path) -> None:
    text = TINY.replace(
        "    up: {hinge: LeftLowerArm}\n",
        "    up: {hinge: LeftLowerArm}\n    fit: [left_shoulder, left_elbow, left_wrist]\n",
    )
    _expect_error(
        tmp_path, text, "bones.LeftUpperArm.fit[1]", "fit: [left_shoulder", "sits on LeftLowerArm"
    )


def test_left_handed_files_flip_twist_ranges_and_hinge_axes(tmp_path: Path) -> None:
    """The same rig written in Unity axes (x negated) loads to the same world limits."""
    unity = TINY.replace("convention: gltf", "convention: unity")
    for a, b in (
        ("[0.15, 0.01, 0]", "[-0.15, 0.01, 0]"),
        ("[0.09, -0.05, 0]", "[-0.09, -0.05, 0]"),
    ):
        unity = unity.replace(a, "SWAP").replace(b, a).replace("SWAP", b)  # mirror x
    unity = (
        unity.replace("direction: [1, 0, 0]", "direction: [-1, 0, 0]")
        .replace("offset: [0.25, 0, 0]", "offset: [-0.25, 0, 0]")
        .replace("position: [0.27, 0, 0]", "position: [-0.27, 0, 0]")
        .replace("axis: [0, -1, 0]", "axis: [0, 1, 0]")
        .replace("twist: [-20, 20]", "twist: [-5, 20]")
    )
    gl_text = TINY.replace("twist: [-20, 20]", "twist: [-20, 5]")
    (tmp_path / "a.yaml").write_text(gl_text)
    (tmp_path / "b.yaml").write_text(unity)
    a, b = load_rig(tmp_path / "a.yaml"), load_rig(tmp_path / "b.yaml")
    np.testing.assert_allclose(a.rest_positions, b.rest_positions, atol=1e-6)
    np.testing.assert_allclose(a.limits.hinge_axis, b.limits.hinge_axis, atol=1e-9)
    np.testing.assert_allclose(a.limits.twist_deg, b.limits.twist_deg)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_rig_check_prints_a_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rig", "check", "rigify"]) == 0
    out = capsys.readouterr().out
    assert "rig rigify" in out and "valid" in out
    assert "      LeftLowerArm: -> forearm.L; drive left_elbow -> left_wrist; hinge" in out
    assert "coco17:" in out and "blazepose33:" in out


def test_rig_check_reports_an_invalid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("swing: 90,", "swing: 200,"))
    assert main(["rig", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{_line_of(TINY, 'swing: 90,')}: bones.LeftUpperArm.limits.swing" in err


def test_rig_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rig", "list"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out
