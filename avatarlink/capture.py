"""Live capture: a background thread that keeps the latest frame, stamps it, and survives loss.

Sources (:func:`open_capture`): a camera index (``"0"``), a video file, an image folder or file, a
URL OpenCV opens (``rtsp://``, ``http(s)://``), or ``synthetic`` (the built-in performer of
:mod:`avatarlink.synthetic`).

Threads and hand-off
--------------------
A :class:`Capture` runs a supervisor thread that opens the source (reconnecting with exponential
backoff when it fails) and a reader thread that pulls frames into a one-frame slot:

* ``latest`` hand-off (live sources, and files played in real time): a new frame replaces an
  unconsumed one, which is counted in ``dropped``; the consumer always gets the newest frame, so
  latency never piles up.
* ``every`` hand-off (files and the synthetic performer played as fast as possible): the reader
  waits until the consumer has taken the previous frame, so every frame is processed while decoding
  still overlaps with processing.

Timestamps: live sources stamp ``Frame.t`` with ``time.monotonic()`` right after the grab; files
and the synthetic performer use media time (``index / fps`` or the container timestamp, continued
across loops), so filters behave the same whether a file plays in real time or as fast as
possible. Every frame also carries ``wall_t``, the monotonic time it became available, which is
what capture-to-send latency is measured from.

Loss: a live source that returns no frame for ``stall_timeout_s`` (or reports a failed read) is
declared lost with one log line; the supervisor reconnects with backoff while the consumer keeps
getting ``None`` and :attr:`Capture.state` says ``lost``. Unreadable frames are skipped and
counted.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from avatarlink.errors import ConfigError, InputError
from avatarlink.types import Frame, ImageArray

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
_WATCHDOG_POLL_S = 0.05  # how often the supervisor checks a live source for a stall


class ReadStatus(enum.Enum):
    """Outcome of one :meth:`Reader.read`."""

    OK = "ok"
    CORRUPT = "corrupt"  # this frame is unreadable; the next one may be fine
    END = "end"  # a file or script has no more frames
    FAILED = "failed"  # a live device or stream stopped delivering


@dataclass(frozen=True)
class ReadResult:
    """One read: ``image`` uint8 (H, W, 3) BGR when ``status`` is OK; ``t`` in seconds."""

    status: ReadStatus
    image: ImageArray | None = None
    t: float = 0.0


class Reader(Protocol):
    """A blocking, single-threaded frame reader that :class:`Capture` drives.

    Attributes:
        name: human-readable source name (``camera 0``, a path, a URL).
        live: True when ``t`` is the monotonic capture time (camera, stream) and the source can
            stall or fail; False for media-timed sources (files, synthetic).
        fps: nominal frame rate, or None when unknown.
        skipped: unreadable frames skipped inside the reader (in addition to CORRUPT reads).
    """

    @property
    def name(self) -> str: ...

    @property
    def live(self) -> bool: ...

    @property
    def fps(self) -> float | None: ...

    @property
    def skipped(self) -> int: ...

    def read(self) -> ReadResult:
        """Block for the next frame."""
        ...

    def close(self) -> None:
        """Release the device or file."""
        ...


ReaderFactory = Callable[[], Reader]


class CaptureState(str, enum.Enum):
    """What the capture is doing now."""

    STARTING = "starting"
    OK = "ok"
    LOST = "lost"  # a live source failed or stalled; reconnecting
    ENDED = "ended"  # a file ended (without looping) or the capture was stopped


@dataclass(frozen=True)
class CaptureOptions:
    """How a source is read.

    Attributes:
        realtime: pace files and the synthetic performer to their media time (live sources are
            always real time).
        loop: restart files and scripts at their end (timestamps keep increasing).
        handoff: ``latest`` (drop unconsumed frames), ``every`` (the reader waits for the
            consumer), or ``auto``: ``latest`` for live or real-time sources, else ``every``.
        stall_timeout_s: seconds without a frame after which a live source is declared lost
            (with the watchdog's 50 ms polling, a loss is noticed within 1 s by default).
        first_frame_timeout_s: seconds a freshly opened live source may take to deliver its
            first frame (cameras and streams can be slow to start) before it counts as lost.
        reconnect_initial_s: first reconnect delay in seconds; doubles on each failure.
        reconnect_max_s: longest reconnect delay in seconds.
        width: requested camera width in pixels (None: the device default).
        height: requested camera height in pixels.
        fps: requested camera rate, or the nominal rate of an image folder, in frames/s.
    """

    realtime: bool = False
    loop: bool = False
    handoff: str = "auto"
    stall_timeout_s: float = 0.9
    first_frame_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 4.0
    width: int | None = None
    height: int | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.handoff not in ("auto", "latest", "every"):
            raise ConfigError(
                f"capture.handoff must be auto, latest or every, got {self.handoff!r}"
            )
        for key in (
            "stall_timeout_s",
            "first_frame_timeout_s",
            "reconnect_initial_s",
            "reconnect_max_s",
        ):
            if not float(getattr(self, key)) > 0:
                raise ConfigError(f"capture.{key} must be > 0 s, got {getattr(self, key)!r}")
        for key in ("width", "height", "fps"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"capture.{key} must be > 0 or null, got {value!r}")


@dataclass(frozen=True)
class CapturedFrame:
    """A frame handed to the consumer.

    Attributes:
        frame: the frame (``t``: monotonic capture time for live sources, media time for files).
        wall_t: capture clock time the frame's latency counts from, seconds: the grab time of a
            live frame, the time a file frame was decoded (or rendered).
        read_ms: time spent grabbing/decoding (or rendering) it, milliseconds.
    """

    frame: Frame
    wall_t: float
    read_ms: float


@dataclass(frozen=True)
class CaptureCounters:
    """Running counts of a :class:`Capture`.

    Attributes:
        read: frames read from the source.
        delivered: frames handed to the consumer.
        dropped: frames replaced before the consumer took them (``latest`` hand-off).
        skipped: unreadable frames skipped.
        reconnects: successful re-openings after a loss.
        losses: times the source was declared lost.
    """

    read: int
    delivered: int
    dropped: int
    skipped: int
    reconnects: int
    losses: int


# ---------------------------------------------------------------------------------------------
# Readers


class OpenCVReader:
    """A camera index or a URL read with ``cv2.VideoCapture``; ``t`` is the monotonic grab time.

    Args:
        target: camera index or URL.
        options: requested width/height/fps for cameras.
    """

    live = True

    def __init__(self, target: int | str, options: CaptureOptions | None = None) -> None:
        self.name = f"camera {target}" if isinstance(target, int) else str(target)
        self.skipped = 0
        options = options or CaptureOptions()
        with _quiet_opencv():  # a missing camera makes OpenCV print errors of its own
            self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            hint = ""
            if isinstance(target, int):
                hint = "; without a camera try --source synthetic (or avatarlink demo) or a video"
            raise InputError(f"cannot open {self.name} (not connected, busy, or unreachable){hint}")
        if isinstance(target, int):
            if options.width:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(options.width))
            if options.height:
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(options.height))
            if options.fps:
                self._cap.set(cv2.CAP_PROP_FPS, float(options.fps))
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps: float | None = fps if np.isfinite(fps) and fps > 0 else None

    def read(self) -> ReadResult:
        """Grab (stamped right after) then decode; a failed grab means the device is gone."""
        if not self._cap.grab():
            return ReadResult(ReadStatus.FAILED)
        t = time.monotonic()
        ok, image = self._cap.retrieve()
        if not ok or image is None or image.ndim != 3 or image.shape[2] != 3:
            return ReadResult(ReadStatus.CORRUPT, t=t)
        return ReadResult(ReadStatus.OK, np.ascontiguousarray(image), t)

    def close(self) -> None:
        """Release the device."""
        self._cap.release()


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own logging for the duration (our error says what went wrong)."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None:
        yield
        return
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_api.setLogLevel(previous)


class FileReader:
    """A video file, image folder or image through :mod:`avatarlink.sources` (media time)."""

    live = False

    def __init__(self, path: Path, options: CaptureOptions | None = None) -> None:
        from avatarlink.sources import FrameSource, ImageFolderSource, open_file_source

        path = Path(path)
        self._source: FrameSource
        if path.is_dir() and options is not None and options.fps:
            self._source = ImageFolderSource(path, fps=options.fps)
        else:
            self._source = open_file_source(path)
        self.name = self._source.name
        fps = getattr(self._source, "fps", None)
        self.fps: float | None = float(fps) if fps else None
        self._frames: Iterator[Frame] = iter(self._source)

    @property
    def skipped(self) -> int:
        """Unreadable frames the file source skipped."""
        return int(self._source.skipped)

    def read(self) -> ReadResult:
        """The next decoded frame, or END."""
        frame = next(self._frames, None)
        if frame is None:
            return ReadResult(ReadStatus.END)
        return ReadResult(ReadStatus.OK, frame.image, frame.t)

    def close(self) -> None:
        """Release the decoder."""
        self._source.close()


def parse_source(spec: str | int) -> tuple[str, int | str]:
    """Classify a ``--source`` value: ``("camera", index)``, ``("url", url)``, ``("synthetic",
    spec)`` or ``("file", path)``."""
    if isinstance(spec, int):
        return "camera", spec
    text = str(spec).strip()
    if not text:
        raise ConfigError(
            "source must not be empty (a camera index, file, folder, URL or synthetic)"
        )
    if text == SYNTHETIC:
        return "synthetic", text
    if text.isdigit():
        return "camera", int(text)
    if "://" in text:
        return "url", text
    return "file", text


def reader_factory(
    spec: str | int,
    options: CaptureOptions | None = None,
    synthetic_factory: Callable[[], Reader] | None = None,
) -> ReaderFactory:
    """A function that opens the reader for ``spec`` (called again on every reconnect or loop).

    Args:
        spec: ``--source`` value (see :func:`parse_source`).
        options: capture options (camera size/rate, folder rate).
        synthetic_factory: builds the synthetic performer's reader; required for ``synthetic``.
    """
    options = options or CaptureOptions()
    kind, target = parse_source(spec)
    if kind == "synthetic":
        if synthetic_factory is None:
            raise ConfigError("source 'synthetic' needs the synthetic performer's settings")
        return synthetic_factory
    if kind in ("camera", "url"):
        return lambda: OpenCVReader(target, options)
    path = Path(str(target))
    if not path.exists():
        raise InputError(
            f"no such file or folder: {path} (a source is a camera index, a video, an image "
            f"folder, an rtsp:// or http:// URL, or 'synthetic')"
        )
    return lambda: FileReader(path, options)


# ---------------------------------------------------------------------------------------------
# The capture thread


class Capture:
    """Reads a source in the background and hands the consumer the latest (or every) frame.

    Args:
        factory: opens a :class:`Reader`; called again to reconnect a live source or loop a file.
        options: pacing, looping, hand-off and reconnect settings.
        clock: monotonic clock in seconds (tests may slow it down; defaults to ``time.monotonic``).

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The first open happens in
    :meth:`start`, so an unopenable file or camera raises :class:`InputError` there.
    """

    def __init__(
        self,
        factory: ReaderFactory,
        options: CaptureOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self.options = options or CaptureOptions()
        self._clock = clock
        self._cond = threading.Condition()
        self._slot: CapturedFrame | None = None
        self._stop = threading.Event()
        self._state = CaptureState.STARTING
        self._supervisor: threading.Thread | None = None
        self._first: Reader | None = None
        self.name = ""
        self.live = False
        self.fps: float | None = None
        self._handoff = "latest"
        self._read = self._delivered = self._dropped = 0
        self._skipped_reads = 0
        self._skipped_closed = 0  # reader-internal skips of readers already closed
        self._reconnects = self._losses = 0
        self._reader_skipped: Callable[[], int] = lambda: 0
        self._generation = 0
        self._last_frame_wall = 0.0
        self._index = 0
        self._t_offset = 0.0
        self._last_t = -np.inf

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> Capture:
        """Open the source (raising :class:`InputError` when it cannot) and start the threads;
        a second call does nothing."""
        if self._supervisor is not None:
            return self
        reader = self._factory()
        self._first = reader
        self.name, self.live, self.fps = reader.name, reader.live, reader.fps
        paced = self.live or self.options.realtime
        handoff = self.options.handoff
        self._handoff = handoff if handoff != "auto" else ("latest" if paced else "every")
        self._supervisor = threading.Thread(
            target=self._supervise, name="avatarlink-capture", daemon=True
        )
        self._supervisor.start()
        return self

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """The newest unconsumed frame, waiting up to ``timeout`` seconds; None when none came
        (source lost, ended, or stopped: check :attr:`state`)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            if self._stop.is_set():
                return None
            while self._slot is None:
                if self._state is CaptureState.ENDED or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is None else min(remaining, 0.1))
            item, self._slot = self._slot, None
            self._delivered += 1
            self._cond.notify_all()
            return item

    def stop(self, timeout: float = 1.0) -> None:
        """Stop reading and release the source (waits at most ``timeout`` seconds)."""
        self._stop.set()
        with self._cond:
            self._state = CaptureState.ENDED
            self._slot = None
            self._cond.notify_all()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout)

    @property
    def state(self) -> CaptureState:
        """``starting``, ``ok``, ``lost`` (reconnecting) or ``ended``."""
        return self._state

    @property
    def handoff(self) -> str:
        """The hand-off in use: ``latest`` or ``every``."""
        return self._handoff

    @property
    def counters(self) -> CaptureCounters:
        """A snapshot of the running counts."""
        with self._cond:
            skipped = self._skipped_reads + self._skipped_closed + self._reader_skipped()
            return CaptureCounters(
                self._read, self._delivered, self._dropped, skipped, self._reconnects, self._losses
            )

    # -- threads ------------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Open, read, and on loss reconnect with backoff until stopped or ended."""
        reader: Reader | None = self._first
        delay = self.options.reconnect_initial_s
        while not self._stop.is_set():
            if reader is None:
                reader = self._try_open()
                if reader is None:
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.options.reconnect_max_s)
                    continue
                if self._state is CaptureState.LOST:
                    self._reconnects += 1
                    log.warning("%s: reconnected", self.name)
            delay = self.options.reconnect_initial_s
            read_before = self._read
            outcome = self._pump(reader)
            if outcome is ReadStatus.END:
                if self._read == read_before and self.options.loop:
                    log.warning("%s: no readable frame in a whole pass; not looping", self.name)
                    break
                if self.options.loop and not self._stop.is_set():
                    self._t_offset = self._last_t + 1.0 / (self.fps or 30.0)
                    reader = None
                    continue
                break
            if outcome is ReadStatus.FAILED and not self._stop.is_set():
                self._losses += 1
                with self._cond:
                    self._state = CaptureState.LOST
                    self._cond.notify_all()
                reader = None
        with self._cond:
            self._state = CaptureState.ENDED
            self._cond.notify_all()

    def _try_open(self) -> Reader | None:
        try:
            reader = self._factory()
        except Exception as exc:  # an unplugged camera raises InputError; keep trying
            log.debug("%s: reopen failed: %s", self.name, exc)
            return None
        return reader

    def _pump(self, reader: Reader) -> ReadStatus:
        """Run one reader in a worker thread, watching for stalls; returns why it stopped."""
        self._generation += 1
        generation = self._generation
        outcome: list[ReadStatus] = []
        self._reader_skipped = lambda: int(reader.skipped)
        self._last_frame_wall = self._clock()
        worker = threading.Thread(
            target=self._read_loop,
            args=(reader, generation, outcome),
            name="avatarlink-reader",
            daemon=True,
        )
        worker.start()
        stall = self.options.stall_timeout_s
        read_before = self._read
        while worker.is_alive() and not self._stop.is_set():
            worker.join(min(_WATCHDOG_POLL_S, stall / 4))
            waiting_for_consumer = self._handoff == "every" and self._slot is not None
            limit = stall if self._read > read_before else self.options.first_frame_timeout_s
            if (
                self.live
                and worker.is_alive()
                and not waiting_for_consumer
                and self._clock() - self._last_frame_wall > limit
            ):
                log.warning(
                    "%s: no frame for %.1f s; reconnecting (outputs hold the last pose)",
                    self.name,
                    limit,
                )
                self._generation += 1  # the stuck worker discards its frame and closes itself
                self._retire(reader)
                return ReadStatus.FAILED
        worker.join(0.2)
        self._retire(reader)
        if outcome and outcome[0] is ReadStatus.FAILED:
            log.warning("%s: source stopped delivering frames; reconnecting", self.name)
        return outcome[0] if outcome else ReadStatus.END

    def _retire(self, reader: Reader) -> None:
        with self._cond:
            self._skipped_closed += int(reader.skipped)
            self._reader_skipped = lambda: 0

    def _read_loop(self, reader: Reader, generation: int, outcome: list[ReadStatus]) -> None:
        """Worker: read frames into the slot until END/FAILED, the generation changes, or stop."""
        first_t: float | None = None
        start_wall = 0.0
        try:
            while not self._stop.is_set() and generation == self._generation:
                t0 = time.perf_counter()
                try:
                    result = reader.read()
                except Exception as exc:  # a reader bug or driver error counts as a bad frame
                    log.debug("%s: read raised %s", self.name, exc)
                    result = ReadResult(ReadStatus.CORRUPT)
                read_ms = (time.perf_counter() - t0) * 1e3
                if generation != self._generation:
                    break
                if result.status is ReadStatus.CORRUPT:
                    self._count_corrupt()
                    continue
                if result.status is not ReadStatus.OK or result.image is None:
                    outcome.append(result.status)
                    return
                t = result.t if self.live else result.t + self._t_offset
                if not self.live and self.options.realtime:
                    if first_t is None:
                        first_t, start_wall = t, self._clock()
                    wait = start_wall + (t - first_t) - self._clock()
                    if wait > 0 and self._stop.wait(wait):
                        break
                self._publish(result.image, t, read_ms)
        finally:
            if generation != self._generation or self._stop.is_set():
                outcome.append(ReadStatus.END if self._stop.is_set() else ReadStatus.FAILED)
            try:
                reader.close()
            except Exception as exc:  # closing a vanished device may fail; nothing to do
                log.debug("%s: close failed: %s", self.name, exc)

    def _count_corrupt(self) -> None:
        with self._cond:
            if self._skipped_reads == 0:
                log.warning("%s: skipping unreadable frame(s); further ones are counted", self.name)
            self._skipped_reads += 1

    def _publish(self, image: ImageArray, t: float, read_ms: float) -> None:
        wall = self._clock()
        if self.live and self._clock is time.monotonic and t <= wall:
            wall = t  # a live frame's latency counts from its grab, before decoding
        with self._cond:
            if self._stop.is_set():
                return
            if self._handoff == "every":
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
            elif self._slot is not None:
                self._dropped += 1
            frame = Frame(image, float(t), self._index, self.name)
            self._slot = CapturedFrame(frame, wall, read_ms)
            self._index += 1
            self._read += 1
            self._last_t = max(self._last_t, float(t))
            self._last_frame_wall = wall
            if self._state is not CaptureState.OK:
                self._state = CaptureState.OK
            self._cond.notify_all()


def open_capture(
    spec: str | int,
    options: CaptureOptions | None = None,
    synthetic_factory: Callable[[], Reader] | None = None,
) -> Capture:
    """A started :class:`Capture` for a ``--source`` value (see :func:`parse_source`)."""
    options = options or CaptureOptions()
    return Capture(reader_factory(spec, options, synthetic_factory), options).start()
