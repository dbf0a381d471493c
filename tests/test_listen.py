"""``avatarlink listen``: the strict stream monitor, and a real UDP round trip from our senders."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import numpy as np
import pytest

from avatarlink.commands import listen
from avatarlink.errors import InputError
from avatarlink.outputs import VmcSink, VrchatSink
from avatarlink.outputs.monitor import StreamMonitor
from avatarlink.outputs.osc_encode import bundle, message
from avatarlink.rig import Rig, load_rig
from avatarlink.types import BoneRotations


@pytest.fixture(scope="module")
def rig() -> Rig:
    return load_rig("unity_humanoid")


def _pose(rig: Rig, t: float = 0.0) -> BoneRotations:
    rot = np.tile(np.array([0, 0, 0, 1], np.float32), (rig.num_bones, 1))
    return BoneRotations(rig.bones, rot, np.zeros(3, np.float32), np.ones(rig.num_bones, bool), t)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_monitor_summarises_a_clean_vmc_stream(rig: Rig) -> None:
    clock = FakeClock()
    monitor = StreamMonitor(window_s=1.0, clock=clock)
    with VmcSink.from_rig(rig, port=9) as sink:
        for i in range(30):  # 30 frames over 0.5 s at 60 fps
            clock.now += 1 / 60
            for d in sink.encode([_pose(rig, i / 60)], i / 60):
                monitor.feed(d, "127.0.0.1:5000")
        per_frame = len(sink.layout.datagram_sizes)
    snap = monitor.snapshot()
    assert snap.malformed_datagrams == snap.invalid_messages == snap.unknown_messages == 0
    assert snap.datagrams == 30 * per_frame and snap.bundles == snap.datagrams
    assert snap.bones_seen == sorted(rig.bones, key=lambda b: list(listen_bones()).index(b))
    assert snap.bone_messages == 30 * rig.num_bones
    assert snap.frame_rate_hz == pytest.approx(60.0, rel=0.05)
    assert snap.ok == [1, 3, 0, 1] and snap.root == [0, 0, 0, 0, 0, 0, 1]
    assert snap.vmc_time == pytest.approx(29 / 60, abs=1e-5)
    assert snap.senders == ["127.0.0.1:5000"]
    line = snap.summary_line()
    assert "bones 55" in line and "malformed 0" in line and "60.0 frames/s" in line
    json.dumps(snap.to_dict())  # JSON-ready


def listen_bones() -> tuple[str, ...]:
    from avatarlink.outputs.humanoid import HUMAN_BODY_BONES

    return HUMAN_BODY_BONES


def test_monitor_counts_what_a_strict_receiver_would_reject() -> None:
    monitor = StreamMonitor()
    good = bundle([message("/VMC/Ext/Bone/Pos", ["Head", *([0.25] * 6), 1.0])])
    for cut in range(1, len(good), 4):
        if cut != 16:
            monitor.feed(good[:cut])  # truncated: malformed
    monitor.feed(b"")
    monitor.feed(b"\xff" * 37)
    problems = [
        message("/VMC/Ext/Bone/Pos", ["Head", *([0.25] * 6)]),  # 6 floats
        message("/VMC/Ext/Bone/Pos", ["Head", 0, 0, 0, 0, 0, 0, 1]),  # ints
        message("/VMC/Ext/Bone/Pos", ["Kopf", *([0.25] * 7)]),  # unknown bone
        message("/VMC/Ext/Bone/Pos", ["Head", float("nan"), *([0.25] * 6)]),  # NaN
        message("/VMC/Ext/Root/Pos", ["root", *([0.0] * 6)]),
        message("/VMC/Ext/OK", [1.0]),
        message("/tracking/trackers/9/position", [0.0, 1.0, 0.0]),  # no slot 9: unknown
        message("/tracking/trackers/1/position", [0.0, 1.0]),
    ]
    for p in problems:
        monitor.feed(p)
    monitor.feed(message("/VMC/Ext/Blend/Val", ["Joy", 1.0]))  # known, valid
    monitor.feed(message("/some/other/app", [1]))
    monitor.feed(good)
    snap = monitor.snapshot()
    truncations = len([c for c in range(1, len(good), 4) if c != 16])
    assert snap.malformed_datagrams == truncations + 2
    assert snap.invalid_messages == 7
    assert snap.unknown_messages == 2
    assert snap.unknown_addresses == {"/tracking/trackers/9/position": 1, "/some/other/app": 1}
    assert snap.bones_seen == ["Head"]
    assert any("unknown bone name 'Kopf'" in reason for reason in monitor.problems)
    assert any("non-finite" in reason for reason in monitor.problems)
    assert "expected ,sfffffff" in "".join(monitor.problems)


def test_monitor_survives_random_garbage() -> None:
    monitor = StreamMonitor()
    rng = np.random.default_rng(5)
    base = bundle(
        [message("/VMC/Ext/Bone/Pos", ["Head", *([0.5] * 7)]), message("/VMC/Ext/T", [1.0])]
    )
    for _ in range(2000):
        data = bytearray(base)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 6))):
            data[pos] = int(rng.integers(0, 256))
        monitor.feed(bytes(data[: int(rng.integers(0, len(data) + 1))]))
    snap = monitor.snapshot()
    assert snap.datagrams == 2000
    assert len(snap.problems) <= 5


def test_monitor_sees_vrchat_trackers(rig: Rig) -> None:
    monitor = StreamMonitor()
    with VrchatSink.from_rig(rig, port=9, trackers=(1, 2, 3, 6)) as sink:
        for d in sink.encode([_pose(rig)], 0.0):
            monitor.feed(d)
    snap = monitor.snapshot()
    assert snap.vrchat_trackers == ["1", "2", "3", "6", "head"] and snap.vrchat_updates == 1
    assert snap.invalid_messages == snap.unknown_messages == 0
    assert "vrchat trackers 1,2,3,6,head" in snap.summary_line()


def _run_listen(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    listen.register(parser.add_subparsers())
    args = parser.parse_args(["listen", *argv])
    return int(args.handler(args))


def test_listen_round_trip_over_udp(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            _run_listen(["--port", "0", "--json", "--duration", "1.0", "--interval", "0.25"])
        )
    )
    thread.start()
    out = ""
    deadline = time.monotonic() + 5
    while '"listening"' not in out and time.monotonic() < deadline:
        time.sleep(0.01)
        out += capsys.readouterr().out
    first = json.loads(out.splitlines()[0])
    assert first["event"] == "listening" and first["host"] == "127.0.0.1"
    with VmcSink.from_rig(rig, "127.0.0.1", first["port"]) as vmc:
        for i in range(10):
            vmc.send([_pose(rig, i / 30)], i / 30)
        sent = vmc.packets_sent
    with VrchatSink.from_rig(rig, "127.0.0.1", first["port"]) as vrchat:
        vrchat.send([_pose(rig)], 0.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(b"#bundle\0garbage!\0\0", ("127.0.0.1", first["port"]))  # 18 bytes
    sock.close()
    thread.join(timeout=5)
    out += capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines()]
    assert result == [0]
    assert {line["event"] for line in lines} == {"listening", "summary", "final"}
    final = lines[-1]
    assert final["event"] == "final"
    assert final["datagrams"] == sent + 2
    assert len(final["bones_seen"]) == rig.num_bones
    assert final["malformed_datagrams"] == 1 and final["invalid_messages"] == 0
    assert final["vrchat_trackers"] == ["1", "2", "3", "head"]
    assert final["ok"] == [1, 3, 0, 1]


def test_listen_text_mode_explains_silence(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_listen(["--port", "0", "--duration", "0.2", "--interval", "0.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("listening on udp://127.0.0.1:")
    assert "nothing received yet" in out and "is the sender pointed here" in out


def test_listen_reports_a_busy_port() -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(InputError, match=r"cannot listen on udp://127\.0\.0\.1"):
            _run_listen(["--port", str(busy.getsockname()[1]), "--duration", "0.1"])
    finally:
        busy.close()
