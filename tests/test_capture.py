"""Capture thread: hand-off policies, timestamps, pacing, looping, loss and recovery, bad frames."""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatarlink.capture import (
    Capture,
    CapturedFrame,
    CaptureOptions,
    CaptureState,
    FileReader,
    ReadResult,
    ReadStatus,
    open_capture,
    parse_source,
    reader_factory,
)
from avatarlink.errors import ConfigError, InputError

IMAGE = np.zeros((8, 8, 3), np.uint8)


class FakeReader:
    """A scripted reader: ``script`` items are 'ok', 'corrupt', 'raise', 'fail', 'end', 'hang'."""

    def __init__(
        self,
        script: list[str],
        live: bool,
        fps: float = 100.0,
        delay: float = 0.0,
        release: threading.Event | None = None,
        first_delay: float = 0.0,
    ) -> None:
        self.name = "fake"
        self.live = live
        self.fps: float | None = fps
        self.skipped = 0
        self.script = collections.deque(script)
        self.delay = delay
        self.n = 0
        self.closed = False
        self.release = release or threading.Event()
        self.first_delay = first_delay

    def read(self) -> ReadResult:
        if self.first_delay:
            time.sleep(self.first_delay)
            self.first_delay = 0.0
        if self.delay:
            time.sleep(self.delay)
        step = self.script.popleft() if self.script else "end"
        if step == "hang":
            self.release.wait(5.0)
            return ReadResult(ReadStatus.FAILED)
        if step == "raise":
            raise RuntimeError("driver hiccup")
        if step in ("fail", "end", "corrupt"):
            return ReadResult(
                {"fail": ReadStatus.FAILED, "end": ReadStatus.END, "corrupt": ReadStatus.CORRUPT}[
                    step
                ]
            )
        t = time.monotonic() if self.live else self.n / (self.fps or 30.0)
        self.n += 1
        return ReadResult(ReadStatus.OK, np.full((8, 8, 3), self.n % 256, np.uint8), t)

    def close(self) -> None:
        self.closed = True


def _drain(capture: Capture, timeout: float = 2.0) -> list[CapturedFrame]:
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = capture.get(timeout=0.1)
        if item is None:
            if capture.state is CaptureState.ENDED:
                break
            continue
        out.append(item)
    return out


def test_every_handoff_delivers_all_frames_in_order_with_media_time() -> None:
    reader = FakeReader(["ok"] * 20, live=False, fps=50.0)
    with Capture(lambda: reader, CaptureOptions()) as capture:
        frames = _drain(capture)
        assert capture.handoff == "every"
        assert capture.state is CaptureState.ENDED
        counters = capture.counters
    assert [f.frame.index for f in frames] == list(range(20))
    np.testing.assert_allclose([f.frame.t for f in frames], np.arange(20) / 50.0)
    assert counters.dropped == 0 and counters.delivered == 20
    assert reader.closed


def test_latest_handoff_drops_unconsumed_frames() -> None:
    reader = FakeReader(["ok"] * 200, live=True, delay=0.001)
    with Capture(lambda: reader, CaptureOptions(stall_timeout_s=2.0)) as capture:
        assert capture.handoff == "latest"
        got = []
        for _ in range(5):
            time.sleep(0.03)  # a slow consumer
            item = capture.get(timeout=1.0)
            assert item is not None
            got.append(item)
        counters = capture.counters
    indices = [g.frame.index for g in got]
    assert indices == sorted(indices) and len(set(indices)) == 5
    assert counters.dropped > 0
    assert counters.read >= counters.delivered + counters.dropped - 1
    # The consumer always gets a fresh frame: its age is far less than the consumer's period.
    assert all(g.frame.t <= time.monotonic() for g in got)


def test_corrupt_and_raising_frames_are_skipped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = ["ok", "corrupt", "ok", "raise", "corrupt", "ok"]
    with (
        caplog.at_level(logging.WARNING),
        Capture(lambda: FakeReader(script, live=False)) as capture,
    ):
        frames = _drain(capture)
        counters = capture.counters
    assert len(frames) == 3
    assert counters.skipped == 3
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1


def test_lost_camera_is_detected_logged_once_and_reconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    opens: list[str] = []

    def factory() -> FakeReader:
        opens.append("open")
        if len(opens) == 1:
            return FakeReader(["ok"] * 5 + ["fail"], live=True, delay=0.005)
        if len(opens) == 2:
            raise InputError("cannot open camera 0 (not connected)")  # still unplugged
        return FakeReader(["ok"] * 1000, live=True, delay=0.005)

    options = CaptureOptions(reconnect_initial_s=0.05, reconnect_max_s=0.1)
    with caplog.at_level(logging.WARNING), Capture(factory, options) as capture:
        states = set()
        frames = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not (frames > 10 and capture.counters.reconnects):
            states.add(capture.state)
            if capture.get(timeout=0.05) is not None:
                frames += 1
        counters = capture.counters
        assert capture.state is CaptureState.OK
    assert counters.losses == 1 and counters.reconnects == 1
    assert CaptureState.LOST in states
    assert len(opens) >= 3
    lost_lines = [r for r in caplog.records if "stopped delivering" in r.getMessage()]
    assert len(lost_lines) == 1


def test_stalled_stream_is_declared_lost_within_the_timeout() -> None:
    release = threading.Event()
    opens: list[FakeReader] = []

    def factory() -> FakeReader:
        reader = FakeReader(
            ["ok", "ok", "hang"] if not opens else ["ok"] * 1000,
            live=True,
            delay=0.002,
            release=release,
            first_delay=0.2 if opens else 0.0,  # the reconnected stream starts slowly
        )
        opens.append(reader)
        return reader

    options = CaptureOptions(stall_timeout_s=0.3, reconnect_initial_s=0.05)
    try:
        with Capture(factory, options) as capture:
            t_last = None
            lost_at = None
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                if capture.get(timeout=0.02) is not None and lost_at is None:
                    t_last = time.monotonic()
                if capture.state is CaptureState.LOST and lost_at is None:
                    lost_at = time.monotonic()
                if lost_at is not None and capture.counters.reconnects:
                    break
            assert t_last is not None and lost_at is not None
            assert lost_at - t_last < 0.3 + 0.4  # the timeout plus the watchdog's granularity
            assert capture.counters.reconnects == 1
    finally:
        release.set()


def test_a_slow_starting_camera_is_not_declared_lost() -> None:
    reader = FakeReader(["ok"] * 50, live=True, delay=0.005, first_delay=0.5)
    options = CaptureOptions(stall_timeout_s=0.2, first_frame_timeout_s=2.0)
    with Capture(lambda: reader, options) as capture:
        first = capture.get(timeout=2.0)
        assert first is not None
        assert capture.counters.losses == 0


def test_realtime_pacing_follows_media_time() -> None:
    fps = 50.0
    start = time.monotonic()
    with Capture(
        lambda: FakeReader(["ok"] * 10, live=False, fps=fps), CaptureOptions(realtime=True)
    ) as cap:
        assert cap.handoff == "latest"
        frames = _drain(cap)
    elapsed = time.monotonic() - start
    assert len(frames) >= 8
    assert elapsed >= 9 / fps * 0.9
    walls = np.array([f.wall_t for f in frames])
    media = np.array([f.frame.t for f in frames])
    # Wall-clock spacing matches the media spacing (not as fast as possible).
    np.testing.assert_allclose(walls - walls[0], media - media[0], atol=0.03)


def test_loop_restarts_with_increasing_timestamps() -> None:
    fps = 100.0
    options = CaptureOptions(loop=True)
    with Capture(lambda: FakeReader(["ok"] * 3, live=False, fps=fps), options) as capture:
        frames = [capture.get(timeout=1.0) for _ in range(8)]
    ts = [f.frame.t for f in frames if f is not None]
    assert len(ts) == 8
    assert np.all(np.diff(ts) > 0)
    np.testing.assert_allclose(np.diff(ts), 1 / fps, atol=1e-9)
    assert [f.frame.index for f in frames if f is not None] == list(range(8))


def test_stop_is_prompt_and_get_returns_none() -> None:
    capture = Capture(lambda: FakeReader(["ok"] * 100000, live=True, delay=0.001)).start()
    assert capture.get(timeout=1.0) is not None
    start = time.monotonic()
    capture.stop()
    assert time.monotonic() - start < 1.0
    assert capture.get(timeout=0.1) is None
    assert capture.state is CaptureState.ENDED


def test_video_file_frames_carry_media_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    with open_capture(str(path)) as capture:
        frames = _drain(capture)
    assert len(frames) == 10
    np.testing.assert_allclose([f.frame.t for f in frames], np.arange(10) / 25.0, atol=1e-3)
    assert isinstance(FileReader(path), FileReader)


def test_image_folder_skips_corrupt_files(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), IMAGE)
    (tmp_path / "f1b.png").write_bytes(b"broken")
    with open_capture(str(tmp_path), CaptureOptions(fps=10.0)) as capture:
        frames = _drain(capture)
        assert capture.counters.skipped == 1
    np.testing.assert_allclose([f.frame.t for f in frames], [0.0, 0.1, 0.3])


@pytest.mark.parametrize(
    ("spec", "kind", "target"),
    [
        ("0", "camera", 0),
        (2, "camera", 2),
        ("rtsp://10.0.0.2/stream", "url", "rtsp://10.0.0.2/stream"),
        ("http://127.0.0.1:8080/video.mjpg", "url", "http://127.0.0.1:8080/video.mjpg"),
        ("synthetic", "synthetic", "synthetic"),
        ("clips/dance.mp4", "file", "clips/dance.mp4"),
    ],
)
def test_parse_source(spec: str | int, kind: str, target: str | int) -> None:
    assert parse_source(spec) == (kind, target)


def test_missing_file_and_empty_source_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no such file or folder: .*nothere\.mp4"):
        reader_factory(str(tmp_path / "nothere.mp4"))
    with pytest.raises(ConfigError, match="source must not be empty"):
        parse_source(" ")


def test_unopenable_source_raises_on_start() -> None:
    def factory() -> FakeReader:
        raise InputError("cannot open camera 7 (not connected, busy, or unreachable)")

    with pytest.raises(InputError, match="camera 7"):
        Capture(factory).start()


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"capture\.stall_timeout_s must be > 0"):
        CaptureOptions(stall_timeout_s=0)
    with pytest.raises(ConfigError, match=r"capture\.handoff"):
        CaptureOptions(handoff="sometimes")


def test_looping_a_source_without_readable_frames_ends() -> None:
    options = CaptureOptions(loop=True)
    with Capture(lambda: FakeReader(["corrupt", "corrupt"], live=False), options) as capture:
        assert capture.get(timeout=2.0) is None
        assert capture.state is CaptureState.ENDED
        assert capture.counters.skipped == 2
