"""The Blender add-on: its protocol part here, and the whole add-on inside real Blender (bpy).

bpy 4.2 (Blender as a Python module, wheels for CPython 3.11 only) pins its own numpy and is large,
so it lives in its own virtual environment, ``.tools/bpy-venv`` (made by tools/test-setup.sh), and
the Blender part runs there as a subprocess (tests/blender_scenario.py) while our sender runs here.
``AVATARLINK_BPY_PYTHON`` may name another interpreter that has ``bpy``. Without one, the Blender
tests skip and say how to get it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatarlink.commands import blender_addon as command
from avatarlink.commands.blender_addon import addon_source, rig_mapping
from avatarlink.errors import InputError
from avatarlink.outputs import VmcSink
from avatarlink.outputs.osc_encode import bundle, message
from avatarlink.rig import Rig, load_rig
from avatarlink.types import BoneRotations

PROJECT = Path(__file__).resolve().parents[1]
ADDON = PROJECT / "avatarlink" / "integrations" / "blender_addon.py"
SCENARIO = Path(__file__).with_name("blender_scenario.py")
MAX_ERROR_DEG = 2.0


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def addon() -> ModuleType:
    """The add-on module imported outside Blender (its protocol part works without bpy)."""
    return _load(ADDON, "avatarlink_vmc_addon_plain")


def _command(*argv: str) -> int:
    """Run ``avatarlink blender-addon ARGV`` through the command's own parser."""
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["blender-addon", *argv])
    return int(args.handler(args))


def _pose(rig: Rig, local: dict[str, Rotation], t: float = 0.0) -> BoneRotations:
    rot = np.tile(np.array([0, 0, 0, 1], np.float32), (rig.num_bones, 1))
    for name, r in local.items():
        rot[rig.index(name)] = r.as_quat()
    return BoneRotations(rig.bones, rot, np.zeros(3, np.float32), np.ones(rig.num_bones, bool), t)


# --- protocol part, no Blender ----------------------------------------------------------------


def test_addon_decodes_what_our_sender_sends_over_udp(addon: ModuleType) -> None:
    rig = load_rig("unity_humanoid")
    receiver = addon.VmcReceiver("127.0.0.1", 0)
    try:
        sink = VmcSink.from_rig(rig, "127.0.0.1", receiver.port)
        arm = Rotation.from_euler("z", 90, degrees=True)
        sink.send([_pose(rig, {"LeftUpperArm": arm})], 0.0)
        deadline = time.monotonic() + 2.0
        while receiver.packets < sink.packets_sent and time.monotonic() < deadline:
            receiver.poll()
            time.sleep(0.001)
        sink.close()
    finally:
        receiver.close()
    assert receiver.malformed == 0 and receiver.last_error == ""
    assert set(receiver.bones) == set(rig.bones)
    assert receiver.frames == 1 and receiver.updates == sink.packets_sent
    pos, quat = receiver.bones["LeftUpperArm"]
    # Unity: +X is the avatar's right, so the left arm's offset from the shoulder points to -X.
    rest = rig.rest_local_positions[rig.index("LeftUpperArm")]
    assert rest[0] > 0.05
    np.testing.assert_allclose(pos, [-rest[0], rest[1], rest[2]], atol=1e-7)
    s = np.sin(np.pi / 4)
    np.testing.assert_allclose(quat, [0, 0, -s, s], atol=1e-6)


def test_addon_counts_malformed_datagrams_and_goes_on(addon: ModuleType) -> None:
    good = bundle([message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 1.0])])
    receiver = addon.VmcReceiver("127.0.0.1", 0)
    try:
        for cut in range(1, len(good)):
            receiver.handle(good[:cut])
        receiver.handle(b"\xff" * 64)
        receiver.handle(message("/VMC/Ext/Bone/Pos", ["Head", 1.0]))
        receiver.handle(
            message("/VMC/Ext/Bone/Pos", ["NotABone", 0, 0, 0, 0, 0, 0, 1.0], "sfffffff")
        )
        assert receiver.bones == {}
        receiver.handle(good)
    finally:
        receiver.close()
    assert receiver.malformed >= len(good) // 2
    assert set(receiver.bones) == {"Head"}


def test_unity_to_blender_matches_the_rig_axes(addon: ModuleType) -> None:
    """Unity -> Blender must equal (our world -> Blender) after (Unity -> our world)."""
    unity_to_world = load_rig("unity_humanoid").to_target.T  # its own inverse: diag(-1, 1, 1)
    world_to_blender = load_rig("rigify").to_target
    m = world_to_blender @ unity_to_world
    rng = np.random.default_rng(3)
    for _ in range(20):
        v = rng.normal(size=3)
        np.testing.assert_allclose(addon.unity_to_blender_position(tuple(v)), m @ v, atol=1e-12)
        r = Rotation.random(random_state=rng)
        w, x, y, z = addon.unity_to_blender_quaternion(tuple(r.as_quat()))
        got = Rotation.from_quat([x, y, z, w]).as_matrix()
        np.testing.assert_allclose(got, m @ r.as_matrix() @ m.T, atol=1e-9)


def test_blender_addon_command_embeds_rig_mappings(tmp_path: Path) -> None:
    out = tmp_path / "avatarlink_vmc.py"
    mapping_json = tmp_path / "rigify.json"
    assert _command("--out", str(out), "--rig", "rigify", "--mapping-json", str(mapping_json)) == 0
    written = _load(out, "avatarlink_vmc_written")
    rigify = written.MAPPINGS["rigify"]
    assert rigify["bones"]["LeftUpperArm"] == "upper_arm.L"
    assert rigify["parents"]["LeftUpperArm"] == "LeftShoulder"
    assert json.loads(mapping_json.read_text()) == rigify
    assert written.bl_info["category"] == "Animation"
    # Every bundled rig by default; the source stays valid Python either way.
    full = addon_source({r: rig_mapping(load_rig(r)) for r in ("mixamo", "vrm1")})
    compile(full, "addon", "exec")
    assert "mixamorig:LeftArm" in full


def test_blender_addon_command_refuses_a_non_py_target(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"from a \.py file"):
        _command("--out", str(tmp_path / "addon.txt"), "--rig", "rigify")


# --- inside Blender ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _find_bpy_python() -> str | None:
    candidates = [
        os.environ.get("AVATARLINK_BPY_PYTHON", ""),
        str(PROJECT / ".tools" / "bpy-venv" / "bin" / "python"),
        sys.executable,
    ]
    for path in candidates:
        if not path or not Path(path).exists():
            continue
        probe = subprocess.run([path, "-c", "import bpy"], capture_output=True, timeout=120)
        if probe.returncode == 0:
            return path
    return None


def _bpy_python() -> str:
    found = _find_bpy_python()
    if found is not None:
        return found
    pytest.skip(
        "no Python with bpy: run tools/test-setup.sh (installs bpy 4.2 into .tools/bpy-venv; "
        "needs CPython 3.11) or set AVATARLINK_BPY_PYTHON"
    )


def _scene(rig: Rig, object_rotation_deg: list[float]) -> dict[str, Any]:
    """An armature from the rig's rest pose in Blender axes, with random bone rolls, an unmapped
    root bone above the hips and an unmapped bone between Neck and Head (as Rigify's metarig)."""
    to_blender = rig.to_target
    rng = np.random.default_rng(11)
    bones: list[dict[str, Any]] = [
        {"name": "root", "parent": "", "head": [0, 0, 0], "tail": [0, 0.3, 0], "roll": 0.0}
    ]
    extra_parent: dict[str, str] = {}
    head_joint = rig.rest_positions[rig.index("Head")]
    neck_joint = rig.rest_positions[rig.index("Neck")]
    for i, name in enumerate(rig.bones):
        head = to_blender @ rig.rest_positions[i]
        tail = head + to_blender @ rig.rest_directions[i] * 0.06
        parent = rig.target_names[rig.parents[i]] if rig.parents[i] >= 0 else "root"
        parent = extra_parent.get(name, parent)
        roll = float(rng.uniform(-np.pi, np.pi))
        bones.append(
            {
                "name": rig.target_names[i],
                "parent": parent,
                "head": head.tolist(),
                "tail": tail.tolist(),
                "roll": roll,
            }
        )
        if name == "Neck":
            middle = to_blender @ ((neck_joint + head_joint) / 2)
            bones.append(
                {
                    "name": "spine.005",
                    "parent": rig.target_names[i],
                    "head": middle.tolist(),
                    "tail": (middle + np.array([0, 0, 0.04])).tolist(),
                    "roll": 0.7,
                }
            )
            extra_parent["Head"] = "spine.005"
    return {"mapping": "rigify", "object_rotation_deg": object_rotation_deg, "bones": bones}


def _world_rotations(rig: Rig, local: dict[str, Rotation]) -> list[Rotation]:
    """World-frame rotation of every bone: parent's world times the local rotation."""
    out: list[Rotation] = []
    for i, name in enumerate(rig.bones):
        r = local.get(name, Rotation.identity())
        out.append(out[rig.parents[i]] * r if rig.parents[i] >= 0 else r)
    return out


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two rotation matrices, or between two directions when given vectors."""
    if a.ndim == 1:
        cos = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
        return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return float(np.degrees(Rotation.from_matrix(a.T @ b).magnitude()))


class _Blender:
    """tests/blender_scenario.py running under bpy, fed by our sender."""

    def __init__(self, tmp_path: Path, scene: dict[str, Any]) -> None:
        addon_path = tmp_path / "avatarlink_vmc.py"
        assert _command("--out", str(addon_path), "--rig", "rigify") == 0
        scene_path = tmp_path / "scene.json"
        scene_path.write_text(json.dumps(scene))
        self.proc = subprocess.Popen(
            [_bpy_python(), str(SCENARIO), str(addon_path), str(scene_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._line()
        if not line.startswith("READY"):
            raise AssertionError(f"blender scenario did not start: {line!r} {self._stderr()}")
        _, port, mapped = line.split()
        self.port, self.mapped = int(port), int(mapped)

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _stderr(self) -> str:
        self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def query(self, updates: int, bones: list[str], record: bool = False) -> dict[str, Any]:
        assert self.proc.stdin is not None
        request = {"updates": updates, "bones": bones, "record": record}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self._line()
        if not line.startswith("{"):
            raise AssertionError(f"blender scenario failed: {line!r} {self._stderr()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("object_rotation_deg", [[0, 0, 0], [10, -20, 90]])
def test_blender_armature_follows_vmc_frames(
    tmp_path: Path, object_rotation_deg: list[float]
) -> None:
    _bpy_python()
    rig = load_rig("rigify")
    blender = _Blender(tmp_path, _scene(rig, object_rotation_deg))
    sink = VmcSink.from_rig(rig, "127.0.0.1", blender.port)
    obj = Rotation.from_euler("xyz", object_rotation_deg, degrees=True).as_matrix()
    to_blender = rig.to_target
    try:
        assert blender.mapped == rig.num_bones  # every humanoid bone found in the armature

        # Frame 1: left arm raised sideways 90 deg, right knee bent 90 deg, head turned 45 deg left.
        local = {
            "LeftUpperArm": Rotation.from_euler("z", 90, degrees=True),
            "RightLowerLeg": Rotation.from_euler("x", 90, degrees=True),
            "Head": Rotation.from_euler("y", 45, degrees=True),
        }
        sink.send([_pose(rig, local)], 0.0)
        names = ["upper_arm.L", "shin.R", "spine.006", "upper_arm.R"]
        got = blender.query(sink.packets_sent, names)
        assert got["malformed"] == 0 and got["error"] == ""
        bones = got["bones"]
        up, backward = obj @ [0, 0, 1], obj @ [0, 1, 0]
        assert _angle_deg(np.array(bones["upper_arm.L"]["direction"]), up) < MAX_ERROR_DEG
        assert _angle_deg(np.array(bones["shin.R"]["direction"]), backward) < MAX_ERROR_DEG
        head = bones["spine.006"]
        face = np.array(head["posed"]) @ np.array(head["rest"]).T @ (obj @ [0, -1, 0])
        left45 = obj @ [np.sin(np.pi / 4), -np.cos(np.pi / 4), 0]  # its left is +X in Blender
        assert _angle_deg(face, left45) < MAX_ERROR_DEG
        right_arm = obj @ [-1, 0, 0]  # untouched: still along -X
        assert _angle_deg(np.array(bones["upper_arm.R"]["direction"]), right_arm) < MAX_ERROR_DEG

        # Frame 2: every bone at a random rotation; full orientations through the hierarchy.
        rng = np.random.default_rng(5)
        local = {name: Rotation.from_rotvec(rng.normal(size=3) * 0.5) for name in rig.bones}
        sink.send([_pose(rig, local, 1 / 30)], 1 / 30)
        got = blender.query(sink.packets_sent, list(rig.target_names), record=True)
        world = _world_rotations(rig, local)
        errors = []
        for i, target in enumerate(rig.target_names):
            g = to_blender @ world[i].as_matrix() @ to_blender.T  # delta in Blender axes
            entry = got["bones"][target]
            expected = obj @ g @ obj.T @ np.array(entry["rest"])
            errors.append(_angle_deg(expected, np.array(entry["posed"])))
        assert max(errors) < MAX_ERROR_DEG, dict(
            zip(rig.target_names, np.round(errors, 2), strict=True)
        )
        # Recording keyed every driven bone's rotation (and nothing was keyed before).
        assert bones and "keyed" in got
        expected_keys = {f'pose.bones["{t}"].rotation_quaternion' for t in rig.target_names}
        assert set(got["keyed"]) == expected_keys
    finally:
        sink.close()
        blender.close()


def test_receiver_port_is_free_again_after_close(addon: ModuleType) -> None:
    receiver = addon.VmcReceiver("127.0.0.1", 0)
    port = receiver.port
    receiver.close()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", port))
    probe.close()
