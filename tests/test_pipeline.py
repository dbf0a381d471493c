"""The capture loop: stage order and timings, failures that do not stop it, loss, real UDP out."""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from avatarlink import quat
from avatarlink.capture import Capture, CaptureOptions, ReadResult, ReadStatus
from avatarlink.outputs import open_sink
from avatarlink.outputs.osc_decode import decode_packet
from avatarlink.outputs.unity_space import quaternions_to_unity
from avatarlink.pipeline import STAGES, LiftStage, Pipeline, PipelineOptions, Stages
from avatarlink.rig import forward_kinematics, load_rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import BoneRotations, Frame, FrameResult, Keypoints, Space

LAYOUT = KeypointLayout.COCO17


class Reader:
    """Media-timed frames; ``script`` items: ok, corrupt, fail, end."""

    def __init__(self, script: Sequence[str], live: bool = False, fps: float = 30.0) -> None:
        self.name, self.live, self.skipped = "test", live, 0
        self.fps: float | None = fps
        self.script = collections.deque(script)
        self.n = 0

    def read(self) -> ReadResult:
        step = self.script.popleft() if self.script else "end"
        if step == "corrupt":
            return ReadResult(ReadStatus.CORRUPT)
        if step in ("fail", "end"):
            return ReadResult(ReadStatus.FAILED if step == "fail" else ReadStatus.END)
        self.n += 1
        t = time.monotonic() if self.live else (self.n - 1) / (self.fps or 30.0)
        return ReadResult(ReadStatus.OK, np.zeros((48, 64, 3), np.uint8), t)

    def close(self) -> None:
        pass


class Result:
    def __init__(self, image: Keypoints) -> None:
        self.image, self.world = image, None
        self.timings_ms = {"preprocess": 0.1, "inference": 1.0, "decode": 0.1}


class FakeEstimator:
    name = "fake"
    layout = LAYOUT
    provider = "FakeProvider"

    def __init__(self, log: list[str], person: bool = True) -> None:
        self.log, self.person = log, person

    def estimate(self, image: Any, region: Any = None) -> Result:
        self.log.append("estimate")
        if not self.person:
            return Result(Keypoints.empty(LAYOUT))
        xyz = np.zeros((1, 17, 3), np.float32)
        return Result(Keypoints(xyz, np.ones((1, 17), np.float32), LAYOUT))


class FakeSink:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.frames: list[tuple[int, float]] = []
        self.closed = False

    @property
    def packets_sent(self) -> int:
        return len(self.frames)

    @property
    def errors(self) -> int:
        return 0

    def send(self, rotations: Sequence[BoneRotations], t: float) -> None:
        self.log.append("send")
        self.frames.append((len(rotations), t))

    def close(self) -> None:
        self.closed = True


def _stages(log: list[str], fail_solver_on: set[int] | None = None) -> tuple[Stages, FakeSink]:
    sink = FakeSink(log)
    calls = {"solve": 0}

    def smoother(k: Keypoints, t: float) -> Keypoints:
        log.append("smooth")
        return k

    def lifter(k: Keypoints, frame: Frame) -> Keypoints:
        log.append("lift")
        return Keypoints(k.xyz, k.score, k.layout, Space.WORLD)

    def solver(w: Keypoints, t: float) -> list[BoneRotations]:
        log.append("solve")
        calls["solve"] += 1
        if fail_solver_on and calls["solve"] in fail_solver_on:
            raise FloatingPointError("degenerate pose")
        rot = np.tile(np.array([0, 0, 0, 1], np.float32), (2, 1))
        return [BoneRotations(("Hips", "Spine"), rot, np.zeros(3, np.float32), np.ones(2, bool), t)]

    stages = Stages(
        FakeEstimator(log),
        smoother=smoother,
        lifter=lifter,
        solver=solver,
        sinks=[sink],
        sink_names=["fake://sink"],
    )
    return stages, sink


def test_stages_run_in_order_with_timings_and_observers_after_send() -> None:
    log: list[str] = []
    stages, sink = _stages(log)
    capture = Capture(lambda: Reader(["ok"] * 5)).start()
    seen: list[FrameResult] = []

    def observer(result: FrameResult) -> None:
        assert log[-1] == "send"  # called after the frame was sent
        seen.append(result)

    sequential = PipelineOptions(overlap=False)
    with Pipeline(capture, stages, sequential) as pipeline:
        pipeline.add_observer(observer)
        summary = pipeline.run(seconds=5.0)
    assert summary.reason == "ended" and summary.frames == 5
    assert log == ["estimate", "smooth", "lift", "solve", "send"] * 5
    assert len(seen) == 5 and [r.frame.index for r in seen] == list(range(5))
    result = seen[-1]
    assert set(STAGES) <= set(result.timings_ms)
    assert {"observers", "total"} <= set(result.timings_ms)
    assert result.timings_ms["inference"] == pytest.approx(1.0)
    assert result.latency_ms >= 0 and result.provider == "FakeProvider"
    assert len(result.rotations) == 1 and result.world is not None
    assert result.stats["packets_sent[fake://sink]"] == 5
    assert sink.closed  # closing the pipeline closes the outputs


def test_overlapped_stages_keep_order_and_overlap_inference() -> None:
    log: list[str] = []
    stages, sink = _stages(log)
    work_s = 0.03

    class SlowEstimator(FakeEstimator):
        def estimate(self, image: Any, region: Any = None) -> Result:
            time.sleep(work_s)  # like ONNX Runtime, sleeping releases the GIL
            return super().estimate(image, region)

    stages.estimator = SlowEstimator(log)
    solver = stages.solver
    assert solver is not None

    def slow_solver(w: Keypoints, t: float) -> Sequence[BoneRotations]:
        time.sleep(work_s)
        return solver(w, t)

    stages.solver = slow_solver
    durations = {}
    for overlap in (False, True):
        capture = Capture(lambda: Reader(["ok"] * 10)).start()
        results: list[FrameResult] = []

        def tick(result: FrameResult | None, into: list[FrameResult] = results) -> None:
            if result is not None:
                into.append(result)

        with Pipeline(capture, stages, PipelineOptions(overlap=overlap)) as pipeline:
            start = time.monotonic()
            summary = pipeline.run(on_tick=tick)
            durations[overlap] = time.monotonic() - start
        assert summary.frames == 10
        assert [r.frame.index for r in results] == list(range(10))
        assert all(len(r.rotations) == 1 for r in results)
        assert all(r.timings_ms["total"] >= 2 * work_s * 1e3 for r in results)
    # Sequential: about 20 x 30 ms; overlapped: about 11 x 30 ms.
    assert durations[True] < 0.8 * durations[False]
    assert [n for n, _ in sink.frames] == [1] * 20


def test_a_failing_stage_is_counted_logged_once_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    stages, sink = _stages(log, fail_solver_on={2, 3, 5})
    capture = Capture(lambda: Reader(["ok"] * 6)).start()
    with caplog.at_level(logging.WARNING), Pipeline(capture, stages) as pipeline:
        results: list[FrameResult] = []
        pipeline.add_observer(results.append)
        pipeline.run()
        errors = dict(pipeline.errors)
    assert [len(r.rotations) for r in results] == [1, 0, 0, 1, 0, 1]
    assert errors == {"solve: FloatingPointError": 3}
    assert results[-1].stats["errors"] == 3
    warnings = [r for r in caplog.records if "solve failed" in r.getMessage()]
    assert len(warnings) == 1
    # Every frame was still sent (an empty list when nothing was solved).
    assert [n for n, _ in sink.frames] == [1, 0, 0, 1, 0, 1]


def test_observer_errors_and_threaded_observers() -> None:
    log: list[str] = []
    stages, _ = _stages(log)
    capture = Capture(lambda: Reader(["ok"] * 4)).start()
    got: list[int] = []
    done = threading.Event()

    def slow(result: FrameResult) -> None:
        time.sleep(0.05)
        got.append(result.frame.index)
        if result.frame.index == 3:
            done.set()

    def broken(result: FrameResult) -> None:
        raise RuntimeError("viewer bug")

    with Pipeline(capture, stages) as pipeline:
        pipeline.add_observer(broken)
        pipeline.add_observer(slow, threaded=True)
        start = time.monotonic()
        summary = pipeline.run()
        loop_s = time.monotonic() - start
        assert done.wait(2.0)
    assert summary.frames == 4
    assert loop_s < 0.15  # the slow observer never held the loop up
    assert got[-1] == 3 and got == sorted(got)
    assert pipeline.errors["observer: RuntimeError"] == 4


def test_corrupt_frames_and_no_person_are_normal() -> None:
    log: list[str] = []
    stages, sink = _stages(log)
    stages.estimator = FakeEstimator(log, person=False)
    capture = Capture(lambda: Reader(["ok", "corrupt", "ok", "corrupt", "ok"])).start()
    with Pipeline(capture, stages) as pipeline:
        summary = pipeline.run()
    assert summary.frames == 3
    assert summary.stats["skipped"] == 2
    assert "lift" not in log and "solve" not in log  # nobody to lift
    assert [n for n, _ in sink.frames] == [0, 0, 0]  # idle messages still go out


class _Receiver:
    """Collects UDP datagrams on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.append(self.sock.recv(65536))
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


def _ok_tracking(packets: list[bytes]) -> list[int]:
    out = []
    for data in packets:
        for msg in decode_packet(data).messages:
            if msg.address == "/VMC/Ext/OK":
                out.append(int(msg.args[3]))  # type: ignore[arg-type]
    return out


def test_source_loss_keeps_outputs_alive_and_recovers() -> None:
    rig = load_rig("unity_humanoid")
    receiver = _Receiver()
    opens: list[int] = []

    def factory() -> Reader:
        opens.append(1)
        if len(opens) == 1:
            return Reader(["ok"] * 3 + ["fail"], live=True)
        if len(opens) < 4:
            raise OSError("camera unplugged")
        return Reader(["ok"] * 100000, live=True)

    log: list[str] = []
    stages, _ = _stages(log)
    stages.sinks = [open_sink(f"vmc://127.0.0.1:{receiver.port}", rig)]
    stages.sink_names = ["vmc"]
    options = CaptureOptions(reconnect_initial_s=0.15, reconnect_max_s=0.3)
    capture = Capture(factory, options).start()
    states: list[str] = []
    try:
        with Pipeline(capture, stages, PipelineOptions(keepalive_hz=20.0)) as pipeline:
            stop = threading.Event()

            def tick(result: FrameResult | None) -> None:
                states.append(pipeline.status_fields().state)
                if "lost" in states and states[-5:] == ["ok"] * 5:
                    stop.set()  # recovered and streaming again

            pipeline.run(stop, seconds=6.0, on_tick=tick)
            stats = pipeline.stats()
    finally:
        receiver.close()
    assert "lost" in states and states[-1] == "ok"
    assert stats["losses"] == 1 and stats["reconnects"] == 1
    tracking = _ok_tracking(receiver.packets)
    # Idle "not tracking" keep-alives were sent while the camera was away (several, at 20 Hz).
    assert tracking.count(0) >= 3
    assert tracking[-1] == 0 or tracking[-1] == 1


def test_receiver_down_does_not_stop_the_loop() -> None:
    rig = load_rig("unity_humanoid")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    log: list[str] = []
    stages, _ = _stages(log)
    stages.sinks = [open_sink(f"vmc://127.0.0.1:{port}", rig)]
    stages.sink_names = ["down"]
    capture = Capture(lambda: Reader(["ok"] * 20)).start()
    with Pipeline(capture, stages) as pipeline:
        summary = pipeline.run(seconds=5.0)
    assert summary.frames == 20 and summary.reason == "ended"
    assert summary.stats["errors"] == 0  # send failures are the sink's counters, not stage errors
    assert summary.stats["send_errors"] + summary.stats["packets_sent"] >= 20


def test_stop_event_stops_within_a_second() -> None:
    log: list[str] = []
    stages, _ = _stages(log)
    capture = Capture(lambda: Reader(["ok"] * 10**6, live=True)).start()
    stop = threading.Event()
    with Pipeline(capture, stages) as pipeline:
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        start = time.monotonic()
        summary = pipeline.run(stop)
        assert time.monotonic() - start < 0.3 + 1.0
    assert summary.reason == "stopped" and summary.frames > 0


def _received_poses(packets: list[bytes], rig: Any) -> list[tuple[float, dict[str, np.ndarray]]]:
    """(VMC time, bone -> world-frame local rotation) per frame, from VMC datagrams."""
    frames: list[tuple[float, dict[str, np.ndarray]]] = []
    bones: dict[str, np.ndarray] = {}
    for data in packets:
        for msg in decode_packet(data).messages:
            if msg.address == "/VMC/Ext/Bone/Pos":
                q = np.array(msg.args[4:8], np.float32)
                bones[str(msg.args[0])] = quaternions_to_unity(q)  # the map is its own inverse
            elif msg.address == "/VMC/Ext/T":
                if bones:
                    frames.append((float(msg.args[0]), bones))  # type: ignore[arg-type]
                bones = {}
    return frames


def _arm_elevation_deg(rig: Any, bones: dict[str, np.ndarray], side: str) -> float:
    local = quat.identity(rig.num_bones)
    for name, q in bones.items():
        if name in rig.bones:
            local[rig.index(name)] = q
    pos, _ = forward_kinematics(rig, local)
    d = pos[rig.index(f"{side}LowerArm")] - pos[rig.index(f"{side}UpperArm")]
    return float(np.degrees(np.arcsin(d[1] / np.linalg.norm(d))))


def test_end_to_end_bones_follow_the_synthetic_performer() -> None:
    """Real model, smoothing, lifting, solver and VMC over UDP: the left arm goes up and down."""
    from avatarlink.config import load_config
    from avatarlink.pipeline import build_stages
    from avatarlink.synthetic import SyntheticPerformer

    receiver = _Receiver()
    config = load_config(
        None,
        {
            "source": "synthetic",
            "send": [f"vmc://127.0.0.1:{receiver.port}"],
            "synthetic.motions": ["raise_left"],
            "synthetic.fps": 10.0,
            "synthetic.loop": False,
        },
    )
    rig = load_rig(config.rig)
    performer = SyntheticPerformer(rig, config.synthetic)
    stages = build_stages(config, rig)
    capture = Capture(performer.reader, config.capture).start()
    try:
        with Pipeline(capture, stages) as pipeline:
            summary = pipeline.run(seconds=60.0)
        time.sleep(0.1)
    finally:
        receiver.close()
    assert summary.reason == "ended" and summary.frames == 50
    frames = _received_poses(receiver.packets, rig)
    assert len(frames) >= 45
    # VMC time counts from the first frame; the script's lifts peak at 1.25 s and 3.75 s, the
    # arm is down again at 2.5 s. The lifted torso may lean, so compare changes, not absolutes.
    left = {round(t, 1): _arm_elevation_deg(rig, b, "Left") for t, b in frames}
    right = {round(t, 1): _arm_elevation_deg(rig, b, "Right") for t, b in frames}

    def around(times: tuple[float, ...]) -> float:
        return float(np.median([left[t] for t in times if t in left]))

    down, up = around((0.0, 0.1, 0.2)), around((1.1, 1.2, 1.3, 1.4))
    down_again, up_again = around((2.4, 2.5, 2.6)), around((3.6, 3.7, 3.8, 3.9))
    truth = [
        _arm_elevation_deg(
            rig, dict(zip(rig.bones, performer.pose_at(t).rotations.rot, strict=True)), "Left"
        )
        for t in (0.1, 1.25)
    ]
    assert truth[1] - truth[0] > 140.0  # what the performer does: from hanging to overhead
    assert down < -20.0 and down_again < -20.0  # hanging at the start and between the lifts
    assert up - down > 60.0 and up_again - down_again > 60.0  # raised well above, twice
    assert up > 10.0 and up_again > 10.0  # above the shoulder
    assert max(right.values()) < -10.0  # the right arm stays down throughout


def test_calibration_profile_reaches_the_solver_and_lifter(tmp_path: Any) -> None:
    from avatarlink.calibration import CalibrationProfile, save_profile
    from avatarlink.config import load_config
    from avatarlink.pipeline import build_stages

    profile = CalibrationProfile(
        rig="unity_humanoid",
        layout="coco17",
        pose="t",
        segment_lengths_m={"torso": 0.61},
        ratios={"torso": 1.0},
        scale="height",
        height_m=1.9,
        facing_yaw_deg=25.0,
        camera_roll_deg=0.0,
        frames_used=30,
        frames_total=30,
    )
    path = save_profile(profile, tmp_path / "me.yaml")
    config = load_config(None, {"profile": str(path), "send": ["vmc://127.0.0.1:9"]})
    stages = build_stages(config)
    try:
        solver = stages.solver.__self__  # type: ignore[union-attr]
        assert solver.config.facing_yaw_deg == 25.0
        assert isinstance(stages.lifter, LiftStage)  # the lifter got the measured torso length
        assert stages.lifter.lifter._lengths_override == {"torso": 0.61}
    finally:
        for sink in stages.sinks:
            sink.close()
