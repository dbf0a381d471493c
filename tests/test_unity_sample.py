"""The Unity sample's plain C# (OSC/VMC parsing, bone mapping, pose maths, UDP thread), compiled
with Mono and run on datagrams from our Python sender. The MonoBehaviour is type-checked against a
stub of the UnityEngine members it uses. Skips when Mono (mcs, mono) is absent: tools/test-setup.sh
installs it (Debian packages mono-mcs, mono-runtime).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatarlink.outputs import VmcSink
from avatarlink.outputs.humanoid import HUMAN_BODY_BONES
from avatarlink.outputs.osc_encode import bundle, message
from avatarlink.outputs.unity_space import positions_to_unity, quaternions_to_unity
from avatarlink.rig import Rig, load_rig
from avatarlink.types import BoneRotations

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT / "unity_sample"
RUNTIME = SAMPLE / "Assets" / "AvatarLink" / "Runtime"
PLAIN = ["OscReader.cs", "HumanoidPose.cs", "VmcDecoder.cs", "VmcUdpListener.cs"]


def _mono() -> tuple[str, str]:
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        pytest.skip(
            "Mono not installed (tools/test-setup.sh: apt-get install mono-mcs mono-runtime)"
        )
    return mcs, mono


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Compile the plain runtime classes with the harness; returns the command to run it."""
    mcs, mono = _mono()
    out = tmp_path_factory.mktemp("mono") / "harness.exe"
    sources = [str(RUNTIME / f) for f in PLAIN] + [str(SAMPLE / "Tests" / "VmcHarness.cs")]
    result = subprocess.run(
        [mcs, "-nologo", "-warnaserror+", f"-out:{out}", *sources],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [mono, str(out)]


class Decoded:
    """The harness's printed state."""

    def __init__(self, text: str) -> None:
        self.bones: dict[str, tuple[int, np.ndarray]] = {}
        self.deltas: dict[str, np.ndarray] = {}
        self.root: np.ndarray | None = None
        self.ok: list[int] = []
        self.time = 0.0
        self.error = ""
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            parts = rest.split()
            if kind == "bone":
                self.bones[parts[0]] = (int(parts[1]), np.array(parts[2:], np.float32))
            elif kind == "delta":
                self.deltas[parts[0]] = np.array(parts[1:], np.float64)
            elif kind == "root":
                self.root = np.array(parts, np.float32)
            elif kind == "ok":
                self.ok = [int(v) for v in parts[1 : 1 + int(parts[0])]]
            elif kind == "time":
                self.time = float(parts[0])
            elif kind == "stats":
                (
                    self.packets,
                    self.messages,
                    self.bone_messages,
                    self.frames,
                    self.malformed,
                    self.invalid,
                    self.other,
                ) = (int(v) for v in parts)
            elif kind == "error":
                self.error = rest


def _decode(harness: list[str], tmp_path: Path, datagrams: list[bytes]) -> Decoded:
    files = []
    for i, data in enumerate(datagrams):
        path = tmp_path / f"d{i:04d}.bin"
        path.write_bytes(data)
        files.append(str(path))
    result = subprocess.run(
        [*harness, "decode", *files], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return Decoded(result.stdout)


def _pose(rig: Rig, local: dict[str, Rotation], t: float = 0.0) -> BoneRotations:
    rot = np.tile(np.array([0, 0, 0, 1], np.float32), (rig.num_bones, 1))
    for name, r in local.items():
        rot[rig.index(name)] = r.as_quat()
    root = np.array([0.1, 0.9, -0.2], np.float32)
    return BoneRotations(rig.bones, rot, root, np.ones(rig.num_bones, bool), t)


def _sink(rig: Rig, port: int = 9, **options: object) -> VmcSink:
    return VmcSink.from_rig(rig, "127.0.0.1", port, **options)


def test_decodes_every_bone_name_index_and_value(harness: list[str], tmp_path: Path) -> None:
    rig = load_rig("unity_humanoid")
    rng = np.random.default_rng(1)
    local = {name: Rotation.from_rotvec(rng.normal(size=3) * 0.6) for name in rig.bones}
    with _sink(rig, root_translation=True) as sink:
        sink.encode([_pose(rig, {})], 5.0)  # the root moves relative to the first frame
        frame = _pose(rig, local, 5.25)
        frame.root_pos[:] = [0.3, 1.0, -0.1]
        datagrams = sink.encode([frame], 5.25)
    assert len(datagrams) > 1  # a 55-bone frame spans several bundles
    got = _decode(harness, tmp_path, datagrams)
    assert (got.malformed, got.invalid, got.other) == (0, 0, 0), got.error
    assert got.packets == len(datagrams) and got.frames == 1
    assert set(got.bones) == set(rig.bones)
    for i, name in enumerate(rig.bones):
        index, values = got.bones[name]
        assert index == HUMAN_BODY_BONES.index(name)  # == (int)HumanBodyBones.<name>
        np.testing.assert_array_equal(values[:3], positions_to_unity(rig.rest_local_positions[i]))
        np.testing.assert_allclose(
            values[3:], quaternions_to_unity(local[name].as_quat()), atol=2e-7
        )
    assert got.root is not None
    np.testing.assert_allclose(got.root, [-0.2, 0.1, 0.1, 0, 0, 0, 1], atol=1e-6)
    assert got.ok == [1, 3, 0, 1]
    assert got.time == pytest.approx(0.25)


def test_world_deltas_raise_the_left_arm_in_unity(harness: list[str], tmp_path: Path) -> None:
    """Our +90 deg about +Z on the left upper arm must point Unity's left arm (-X) up (+Y)."""
    rig = load_rig("unity_humanoid")
    local = {"LeftUpperArm": Rotation.from_euler("z", 90, degrees=True)}
    with _sink(rig) as sink:
        got = _decode(harness, tmp_path, sink.encode([_pose(rig, local)], 0.0))
    arm = Rotation.from_quat(got.deltas["LeftUpperArm"])
    np.testing.assert_allclose(arm.apply([-1, 0, 0]), [0, 1, 0], atol=1e-6)
    hand = Rotation.from_quat(got.deltas["LeftHand"])  # children follow
    np.testing.assert_allclose(hand.apply([-1, 0, 0]), [0, 1, 0], atol=1e-6)
    right = Rotation.from_quat(got.deltas["RightUpperArm"])
    np.testing.assert_allclose(right.apply([1, 0, 0]), [1, 0, 0], atol=1e-6)


def test_world_deltas_match_forward_kinematics(harness: list[str], tmp_path: Path) -> None:
    rig = load_rig("unity_humanoid")
    rng = np.random.default_rng(2)
    local = {name: Rotation.from_rotvec(rng.normal(size=3) * 0.5) for name in rig.bones}
    with _sink(rig) as sink:
        got = _decode(harness, tmp_path, sink.encode([_pose(rig, local)], 0.0))
    m = rig.to_target  # world -> Unity axes, diag(-1, 1, 1)
    world: list[Rotation] = []
    for i, name in enumerate(rig.bones):
        r = local[name]
        world.append(world[rig.parents[i]] * r if rig.parents[i] >= 0 else r)
        expected = m @ world[i].as_matrix() @ m.T
        actual = Rotation.from_quat(got.deltas[name]).as_matrix()
        np.testing.assert_allclose(actual, expected, atol=1e-5, err_msg=name)


def test_malformed_and_invalid_datagrams_are_counted_not_fatal(
    harness: list[str], tmp_path: Path
) -> None:
    good = bundle([message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 1.0])])
    # Every cut is malformed except at 16 bytes: a bundle header alone is a valid empty bundle.
    truncated = [good[:cut] for cut in range(1, len(good), 3) if cut != 16]
    garbage = [b"\xff" * 16, b"#bundle\0" + b"\0" * 8 + b"\x7f\xff\xff\xfc", b"/a\0\0,q\0\0"]
    invalid = [
        message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]),  # 6 floats
        message("/VMC/Ext/Bone/Pos", ["Head", 0, 0, 0, 0, 0, 0, 1]),  # ints, not floats
        message("/VMC/Ext/Bone/Pos", ["Kopf", 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 1.0]),
        message("/VMC/Ext/Bone/Pos", ["Head", 0.0, float("nan"), 0.0, 0.0, 0.0, 0.0, 1.0]),
        message("/VMC/Ext/T", [1]),
    ]
    other = [message("/VMC/Ext/Blend/Val", ["A", 1.0])]
    got = _decode(harness, tmp_path, [*truncated, *garbage, *invalid, *other, good])
    assert got.malformed == len(truncated) + len(garbage)
    assert got.invalid == len(invalid)
    assert got.other == len(other)
    assert set(got.bones) == {"Head"}  # the good datagram after all that still decodes


def test_udp_thread_receives_from_our_sender(harness: list[str]) -> None:
    rig = load_rig("unity_humanoid")
    proc = subprocess.Popen([*harness, "listen", "8", "10000"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[0] == "READY", ready
        local = {"Head": Rotation.from_euler("y", 30, degrees=True)}
        with _sink(rig, int(ready[1])) as sink:
            sink.send([_pose(rig, {})], 0.0)
            sink.send([_pose(rig, local, 0.5)], 0.5)
            sent = sink.packets_sent
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    got = Decoded(out)
    assert sent == 8 and got.packets == sent and got.malformed == 0
    assert got.frames == 2 and len(got.bones) == rig.num_bones
    np.testing.assert_allclose(
        got.bones["Head"][1][3:], quaternions_to_unity(local["Head"].as_quat()), atol=2e-7
    )
    assert got.time == pytest.approx(0.5)


def test_monobehaviour_compiles_against_unity_signatures(tmp_path: Path) -> None:
    mcs, _ = _mono()
    sources = sorted(str(p) for p in RUNTIME.glob("*.cs"))
    assert any(p.endswith("AvatarLinkReceiver.cs") for p in sources)
    result = subprocess.run(
        [
            mcs,
            "-nologo",
            "-warnaserror+",
            "-target:library",
            f"-out:{tmp_path / 'r.dll'}",
            *sources,
            str(SAMPLE / "Tests" / "UnityEngineStub.cs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_the_monobehaviour_uses_unityengine() -> None:
    # (The harness fixture compiling without any UnityEngine assembly proves it too.)
    for path in RUNTIME.glob("*.cs"):
        uses = "using UnityEngine;" in path.read_text()
        assert uses == (path.name not in PLAIN), path.name
