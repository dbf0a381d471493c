"""VMC sender: datagrams byte for byte, the Unity conversion, UDP round trips, limits, failures."""

from __future__ import annotations

import argparse
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatarlink.errors import ConfigError, OutputError
from avatarlink.outputs import (
    Sink,
    SinkOptions,
    VmcSink,
    add_sink_arguments,
    open_sink,
    open_sinks,
)
from avatarlink.outputs.osc_decode import OscMessage, decode_packet
from avatarlink.outputs.osc_encode import OscArg, bundle, message, pack_bundles
from avatarlink.outputs.unity_space import positions_to_unity, quaternions_to_unity
from avatarlink.rig import Rig, load_rig
from avatarlink.types import BoneRotations

IDENTITY = np.array([0, 0, 0, 1], np.float32)


@pytest.fixture(scope="module")
def rig() -> Rig:
    return load_rig("unity_humanoid")


class Receiver:
    """A UDP socket on 127.0.0.1 collecting datagrams."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.port: int = self.sock.getsockname()[1]

    def receive(self, count: int) -> list[bytes]:
        return [self.sock.recv(65536) for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _pose(rig: Rig, local: dict[str, Rotation] | None = None, t: float = 0.0) -> BoneRotations:
    rot = np.tile(IDENTITY, (rig.num_bones, 1))
    for name, r in (local or {}).items():
        rot[rig.index(name)] = r.as_quat()
    return BoneRotations(rig.bones, rot, np.zeros(3, np.float32), np.ones(rig.num_bones, bool), t)


def _messages(datagrams: list[bytes]) -> list[OscMessage]:
    return [m for d in datagrams for m in decode_packet(d).messages]


def _bones(datagrams: list[bytes]) -> dict[str, tuple[float, ...]]:
    return {
        str(m.args[0]): tuple(float(v) for v in m.args[1:])  # type: ignore[arg-type]
        for m in _messages(datagrams)
        if m.address == "/VMC/Ext/Bone/Pos"
    }


# --- Unity space ---------------------------------------------------------------------------------


def test_the_one_conversion_agrees_with_the_unity_rig_axes(rig: Rig) -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 3))
    np.testing.assert_allclose(positions_to_unity(v), v @ rig.to_target.T, atol=1e-6)
    for r in Rotation.random(20, random_state=1):
        q = quaternions_to_unity(r.as_quat())
        m = rig.to_target
        np.testing.assert_allclose(
            Rotation.from_quat(q).as_matrix(), m @ r.as_matrix() @ m.T, atol=1e-6
        )


@pytest.mark.parametrize(
    ("bone", "rotation", "rest_unity", "posed_unity"),
    [
        # Left arm raised sideways: +90 deg about our +Z takes its +X (the subject's left) to +Y.
        # In Unity the left arm lies along -X and must go up.
        ("LeftUpperArm", Rotation.from_euler("z", 90, degrees=True), [-1, 0, 0], [0, 1, 0]),
        # Knee bent: +90 deg about +X takes the shin (-Y) backwards (our -Z). Unity's avatar faces
        # +Z, so backwards is -Z there too.
        ("LeftLowerLeg", Rotation.from_euler("x", 90, degrees=True), [0, -1, 0], [0, 0, -1]),
        # Head turned to its left: +45 deg about +Y takes the face (+Z) towards +X, the subject's
        # left; in Unity the avatar's left is -X.
        ("Head", Rotation.from_euler("y", 45, degrees=True), [0, 0, 1], [-0.7071068, 0, 0.7071068]),
        # Right arm forward: +90 deg about +Y takes the right arm (our -X) to +Z (forward); in
        # Unity the right arm lies along +X and must point forward, +Z.
        ("RightUpperArm", Rotation.from_euler("y", 90, degrees=True), [1, 0, 0], [0, 0, 1]),
    ],
)
def test_concrete_motions_look_right_in_unity(
    rig: Rig, bone: str, rotation: Rotation, rest_unity: list[float], posed_unity: list[float]
) -> None:
    with VmcSink.from_rig(rig, port=9) as sink:
        datagrams = sink.encode([_pose(rig, {bone: rotation})], 0.0)
    q = np.array(_bones(datagrams)[bone][3:])
    np.testing.assert_allclose(Rotation.from_quat(q).apply(rest_unity), posed_unity, atol=1e-6)
    # And the rest direction itself is where the rig puts that bone's child in Unity.
    child = next(
        (i for i, p in enumerate(rig.parents) if p == rig.index(bone) and rig.bones[i] != "Jaw"),
        None,
    )
    if child is not None and bone != "Head":
        offset = positions_to_unity(rig.rest_local_positions[child])
        cos = np.dot(offset, rest_unity) / np.linalg.norm(offset)
        assert cos > 0.95


# --- datagrams -----------------------------------------------------------------------------------


def test_frame_datagrams_match_independently_built_bundles(rig: Rig) -> None:
    rng = np.random.default_rng(4)
    local = {n: Rotation.from_rotvec(rng.normal(size=3) * 0.4) for n in rig.bones}
    with VmcSink.from_rig(rig, port=9, root_translation=True) as sink:
        sink.encode([_pose(rig, t=10.0)], 10.0)
        frame = _pose(rig, local, 10.5)
        frame.root_pos[:] = [0.25, -0.1, 0.5]
        got = sink.encode([frame], 10.5)
    # Expected: python floats, the documented signs, the generic encoder, the same bundle split.
    # (0.0 - v negates without making -0.0: zeros go on the wire as +0.0.)
    msgs = [message("/VMC/Ext/Root/Pos", ["root", -0.25, -0.1, 0.5, 0.0, 0.0, 0.0, 1.0])]
    for i, name in enumerate(rig.bones):
        x, y, z = (float(v) for v in rig.rest_local_positions[i])
        qx, qy, qz, qw = (float(v) for v in local[name].as_quat().astype(np.float32))
        args: list[OscArg] = [name, 0.0 - x, y, z, qx, 0.0 - qy, 0.0 - qz, qw]
        msgs.append(message("/VMC/Ext/Bone/Pos", args, "sfffffff"))
    msgs.append(message("/VMC/Ext/OK", [1, 3, 0, 1]))
    msgs.append(message("/VMC/Ext/T", [0.5]))
    assert got == pack_bundles(msgs, 1472)


def test_each_message_type_is_byte_exact(rig: Rig) -> None:
    bones = ["Hips", "LeftUpperArm"]
    rest = [[0.0, 0.95, 0.0], [0.11, 0.0, 0.0]]
    sink = VmcSink("127.0.0.1", 9, bones, rest)
    arm = np.array([0.0, 0.0, 0.5, 0.8660254], np.float32)
    frame = BoneRotations(
        tuple(bones), np.stack([IDENTITY, arm]), np.zeros(3, np.float32), np.ones(2, bool), 3.0
    )
    sink.encode([frame], 3.0)
    (datagram,) = sink.encode([frame], 3.25)
    sink.close()
    expected = bundle(
        [
            b"/VMC/Ext/Root/Pos\0\0\0,sfffffff\0\0\0root\0\0\0\0" + b"\0" * 24 + b"\x3f\x80\0\0",
            message("/VMC/Ext/Bone/Pos", ["Hips", 0.0, 0.95, 0.0, 0.0, 0.0, 0.0, 1.0]),
            message(
                "/VMC/Ext/Bone/Pos", ["LeftUpperArm", -0.11, 0.0, 0.0, 0.0, 0.0, -0.5, 0.8660254]
            ),
            b"/VMC/Ext/OK\0,iiii\0\0\0" + b"\0\0\0\x01\0\0\0\x03\0\0\0\0\0\0\0\x01",
            b"/VMC/Ext/T\0\0,f\0\0" + b"\x3e\x80\0\0",  # 0.25 s since the first frame
        ]
    )
    assert datagram == expected
    assert datagram[:16] == b"#bundle\0\0\0\0\0\0\0\0\x01"


def test_nobody_seen_sends_ok_with_tracking_off_and_time() -> None:
    sink = VmcSink("127.0.0.1", 9, ["Hips"], [[0.0, 1.0, 0.0]])
    (datagram,) = sink.encode([], 2.0)
    sink.close()
    msgs = decode_packet(datagram).messages
    assert [(m.address, m.args) for m in msgs] == [
        ("/VMC/Ext/OK", (1, 3, 0, 0)),
        ("/VMC/Ext/T", (0.0,)),
    ]


@pytest.mark.parametrize("limit", [128, 200, 512, 1472, 9000])
def test_datagram_size_limit_is_honoured(rig: Rig, limit: int) -> None:
    with VmcSink.from_rig(rig, port=9, max_datagram=limit) as sink:
        datagrams = sink.encode([_pose(rig)], 0.0)
    assert all(len(d) <= limit for d in datagrams)
    msgs = _messages(datagrams)
    assert [m.address for m in msgs] == (
        ["/VMC/Ext/Root/Pos"]
        + ["/VMC/Ext/Bone/Pos"] * rig.num_bones
        + ["/VMC/Ext/OK", "/VMC/Ext/T"]
    )
    assert [m.args[0] for m in msgs[1:-2]] == list(rig.bones)
    assert all(decode_packet(d).bundles == 1 for d in datagrams)
    if limit == 9000:
        assert len(datagrams) == 1


def test_too_small_a_limit_is_a_config_error(rig: Rig) -> None:
    with pytest.raises(ConfigError, match="max_datagram"):
        VmcSink.from_rig(rig, port=9, max_datagram=64)


# --- values --------------------------------------------------------------------------------------


def test_invalid_and_non_finite_bones_hold_their_last_rotation(rig: Rig) -> None:
    arm = Rotation.from_euler("z", 40, degrees=True)
    with VmcSink.from_rig(rig, port=9) as sink:
        first = _bones(sink.encode([_pose(rig, {"LeftUpperArm": arm})], 0.0))
        frame = _pose(rig, {"LeftUpperArm": Rotation.from_euler("z", 80, degrees=True)})
        frame.valid[rig.index("LeftUpperArm")] = False
        frame.rot[rig.index("Head")] = np.nan
        frame.rot[rig.index("Neck")] = 0.0
        second = _bones(sink.encode([frame], 0.1))
    assert second["LeftUpperArm"] == first["LeftUpperArm"]
    assert second["Head"][3:] == (0.0, 0.0, 0.0, 1.0)  # never observed: the rest pose
    assert second["Neck"][3:] == (0.0, 0.0, 0.0, 1.0)


def test_bones_are_matched_by_name_in_any_order_and_subset(rig: Rig) -> None:
    arm = Rotation.from_euler("x", 30, degrees=True).as_quat().astype(np.float32)
    frame = BoneRotations(
        ("LeftUpperArm", "Head"),
        np.stack([arm, IDENTITY]),
        np.zeros(3, np.float32),
        np.ones(2, bool),
        0.0,
    )
    with VmcSink.from_rig(rig, port=9) as sink:
        got = _bones(sink.encode([frame], 0.0))
    np.testing.assert_allclose(got["LeftUpperArm"][3:], arm * [1, -1, -1, 1], atol=1e-7)
    assert len(got) == rig.num_bones


def test_numpy_and_float64_inputs(rig: Rig) -> None:
    rot: Any = np.tile(np.array([0, 0, 0, 2.0]), (rig.num_bones, 1))  # float64, not unit length
    root: Any = np.zeros(3)  # float64
    frame = BoneRotations(rig.bones, rot, root, np.ones(rig.num_bones, bool), np.float32(1.5))
    with VmcSink.from_rig(rig, port=9) as sink:
        got = _bones(sink.encode([frame], np.float64(1.5)))
    assert got["Hips"][3:] == (0.0, 0.0, 0.0, 1.0)


def test_mirror_swaps_sides_and_reflects(rig: Rig) -> None:
    raise_left = Rotation.from_euler("z", 90, degrees=True)
    with VmcSink.from_rig(rig, port=9, mirror=True) as sink:
        got = _bones(sink.encode([_pose(rig, {"LeftUpperArm": raise_left})], 0.0))
    # The subject raised the left arm; mirrored, the avatar raises its right arm (+X in Unity).
    right = Rotation.from_quat(got["RightUpperArm"][3:])
    np.testing.assert_allclose(right.apply([1, 0, 0]), [0, 1, 0], atol=1e-6)
    assert got["LeftUpperArm"][3:] == (0.0, 0.0, 0.0, 1.0)


def test_root_stays_put_unless_root_translation(rig: Rig) -> None:
    moved = _pose(rig, t=1.0)
    moved.root_pos[:] = [1.0, 2.0, 3.0]
    for on, expected in ((False, [0.0, 0.0, 0.0]), (True, [-0.5, 0.0, 0.0])):
        with VmcSink.from_rig(rig, port=9, root_translation=on) as sink:
            start = _pose(rig)
            start.root_pos[:] = [0.5, 2.0, 3.0]
            sink.encode([start], 0.0)
            root = [
                m for m in _messages(sink.encode([moved], 1.0)) if m.address == "/VMC/Ext/Root/Pos"
            ]
        np.testing.assert_allclose(np.array(root[0].args[1:4], float), expected, atol=1e-6)


# --- configuration-time errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bones", "match"),
    [
        (["Hips", "Hüfte"], "not an ASCII"),
        (["Hips", "Pelvis"], "not a Unity HumanBodyBones"),
        (["Hips", "Hips"], "listed twice"),
    ],
)
def test_bad_bone_names_are_rejected_when_the_sink_opens(bones: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        VmcSink("127.0.0.1", 9, bones, np.array([[0, 1, 0], [0.1, 0, 0]]))


def test_zero_rest_offsets_are_rejected() -> None:
    with pytest.raises(ConfigError, match="LeftUpperLeg is \\(0, 0, 0\\)"):
        VmcSink("127.0.0.1", 9, ["Hips", "LeftUpperLeg"], [[0, 1, 0], [0, 0, 0]])
    with pytest.raises(ConfigError, match="must be \\(2, 3\\)"):
        VmcSink("127.0.0.1", 9, ["Hips", "LeftUpperLeg"], [[0, 1, 0]])


@pytest.mark.parametrize(
    ("url", "error", "match"),
    [
        ("osc://127.0.0.1:9000", OutputError, "unknown output scheme"),
        ("vmc://:39539", OutputError, "missing host"),
        ("vmc://127.0.0.1:99999", OutputError, "bad port"),
        ("vmc://127.0.0.1:0", OutputError, "port 0"),
        ("vmc://127.0.0.1:39539/x", OutputError, "unexpected path"),
        ("vmc://127.0.0.1:39539?colour=red", ConfigError, "unknown option 'colour'"),
        ("vmc://127.0.0.1:39539?mirror=maybe", ConfigError, "option mirror"),
        ("vmc://127.0.0.1:39539?max_rate_hz=-5", ConfigError, "max_rate_hz"),
        ("vmc://no-such-host.invalid:39539", OutputError, "cannot resolve"),
    ],
)
def test_bad_urls_fail_when_opened(rig: Rig, url: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        open_sink(url, rig)


def test_url_options_override_keyword_options(rig: Rig) -> None:
    sink = open_sink("vmc://localhost?max_rate_hz=30&mirror=1&max_datagram=512", rig, mirror=False)
    assert isinstance(sink, VmcSink) and isinstance(sink, Sink)
    assert sink.options == SinkOptions(max_rate_hz=30.0, max_datagram=512, mirror=True)
    assert sink.url.endswith(":39539")  # the VMC default port
    sink.close()


# --- UDP -----------------------------------------------------------------------------------------


def test_udp_round_trip_carries_every_value(rig: Rig, receiver: Receiver) -> None:
    head = Rotation.from_euler("y", 30, degrees=True)
    with open_sink(f"vmc://127.0.0.1:{receiver.port}", rig) as sink:  # type: ignore[attr-defined]
        sink.send([_pose(rig, {"Head": head})], 0.0)
        count = sink.packets_sent
        assert sink.errors == 0
    got = _bones(receiver.receive(count))
    assert set(got) == set(rig.bones)
    np.testing.assert_allclose(got["Head"][3:], quaternions_to_unity(head.as_quat()), atol=1e-7)


def test_rate_cap_skips_frames_by_the_clock(rig: Rig, receiver: Receiver) -> None:
    now = [0.0]
    sink = VmcSink(
        "127.0.0.1",
        receiver.port,
        rig.bones,
        rig.rest_local_positions,
        SinkOptions(max_rate_hz=10.0),
        clock=lambda: now[0],
    )
    for step in range(10):  # 100 Hz for 0.1 s -> 1 frame ... then one more at 0.1 s
        now[0] = step * 0.01
        sink.send([_pose(rig)], now[0])
    now[0] = 0.1
    sink.send([_pose(rig)], 0.1)
    assert (sink.frames_sent, sink.frames_skipped) == (2, 9)
    sink.close()


def test_receiver_down_is_counted_logged_once_and_never_slows(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now: the kernel answers ICMP port unreachable
    caplog.set_level(logging.DEBUG, logger="avatarlink.outputs.udp")
    sink = open_sink(f"vmc://127.0.0.1:{port}", rig)
    assert isinstance(sink, VmcSink)
    per_frame = len(sink.layout.datagram_sizes)
    start = time.perf_counter()
    for i in range(200):
        sink.send([_pose(rig)], i / 60)
    elapsed = time.perf_counter() - start
    sink.close()
    assert sink.errors > 0 and sink.packets_sent + sink.errors == 200 * per_frame
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "is the receiver running" in warnings[0].getMessage()
    assert elapsed < 2.0  # non-blocking: 800 datagrams take milliseconds, not timeouts


def test_two_receivers_from_one_run(rig: Rig) -> None:
    a, b = Receiver(), Receiver()
    parser = argparse.ArgumentParser()
    add_sink_arguments(parser)
    args = parser.parse_args(
        ["--send", f"vmc://127.0.0.1:{a.port}", "--send", f"vmc://127.0.0.1:{b.port}?mirror=1"]
    )
    sinks = open_sinks(args, rig)
    try:
        for sink in sinks:
            sink.send([_pose(rig, {"LeftUpperArm": Rotation.from_euler("z", 90, degrees=True)})], 0)
        plain = _bones(a.receive(sinks[0].packets_sent))
        mirrored = _bones(b.receive(sinks[1].packets_sent))
    finally:
        for sink in sinks:
            sink.close()
        a.close()
        b.close()
    assert plain["LeftUpperArm"] != plain["RightUpperArm"]
    assert mirrored["RightUpperArm"][3:] != (0.0, 0.0, 0.0, 1.0)
    assert mirrored["LeftUpperArm"][3:] == (0.0, 0.0, 0.0, 1.0)


def test_closed_sink_refuses_to_send(rig: Rig) -> None:
    sink = VmcSink.from_rig(rig, port=9)
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(OutputError, match="closed"):
        sink.send([_pose(rig)], 0.0)


def test_person_option_follows_one_track_id() -> None:
    """With ?person=N a sink sends that person's pose, and idles while that person is unseen."""
    from avatarlink.outputs import open_sink
    from avatarlink.outputs.osc_decode import decode_packet
    from avatarlink.rig import load_rig
    from avatarlink.types import BoneRotations

    rig = load_rig("unity_humanoid")
    sink = open_sink("vmc://127.0.0.1:9?person=1", rig)
    bones = tuple(rig.bones)
    rest = np.tile(np.array([0, 0, 0, 1], np.float32), (len(bones), 1))
    raised = rest.copy()
    raised[bones.index("LeftUpperArm")] = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]
    valid = np.ones(len(bones), bool)
    zero = np.zeros(3, np.float32)
    person0 = BoneRotations(bones, rest, zero, valid, 0.0, person_id=0)
    person1 = BoneRotations(bones, raised, zero, valid, 0.0, person_id=1)

    def left_arm_z(datagrams: list[bytes]) -> float | None:
        for data in datagrams:
            for msg in decode_packet(data).messages:
                if msg.address == "/VMC/Ext/Bone/Pos" and msg.args[0] == "LeftUpperArm":
                    return float(msg.args[6])  # type: ignore[arg-type]
        return None

    assert abs(left_arm_z(sink.encode([person0, person1], 0.0)) or 0.0) > 0.5
    assert left_arm_z(sink.encode([person0], 0.1)) is None  # person 1 unseen: idle only
    sink.close()
