"""The capture loop: capture -> estimate -> smooth -> lift -> solve -> send, one frame at a time.

Every frame goes through the stages in this fixed order. Capture runs in its own thread
(:class:`~avatarlink.capture.Capture`) and hands over only the newest frame, so latency never
piles up. The stages run on the loop thread; with :attr:`PipelineOptions.overlap` the stages
after the model run in a second thread, so the next frame's inference (which releases the GIL)
overlaps the previous frame's smoothing, lifting, solving and sending; at most one frame waits
between the two halves. Each frame's wall time per stage goes into
:attr:`FrameResult.timings_ms` under these keys (milliseconds):

==============  ==============================================================================
``capture``     grab and decode (or render) in the capture thread; overlaps the loop
``preprocess``  the estimator's resize/letterbox and tensor packing
``inference``   the model run
``decode``      the estimator's keypoint decoding (heatmaps, offsets, back to source pixels)
``smoothing``   keypoint smoothing (and bone-rotation smoothing)
``lifting``     2D -> 3D lifting (or smoothing of a 3D model's world keypoints)
``solve``       the bone-rotation solver
``send``        encoding and sending to every output
``observers``   calling the observers (preview, recorder)
``total``       the work spent on the frame: every stage above but capture, plus bookkeeping
                (without time spent waiting between the two halves)
==============  ==============================================================================

A stage that raises on one frame does not stop the loop: the frame continues with a neutral
result (no person, no rotations), the failure is counted per kind (stage and exception type) and
logged once per kind. When the source is lost the outputs keep receiving an idle "tracking lost"
message at :attr:`PipelineOptions.keepalive_hz`, so receivers hold the last pose.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from avatarlink.capture import Capture, CapturedFrame, CaptureState
from avatarlink.errors import ConfigError
from avatarlink.skeletons import KeypointLayout
from avatarlink.status import StatusFields
from avatarlink.types import BoneRotations, Frame, FrameResult, Keypoints

if TYPE_CHECKING:
    from avatarlink.config import AppConfig

log = logging.getLogger(__name__)

# At most this many persons keep their own rotation filters (a crowd resets them all).
_MAX_PERSON_FILTERS = 16

STAGES: tuple[str, ...] = (
    "capture",
    "preprocess",
    "inference",
    "decode",
    "smoothing",
    "lifting",
    "solve",
    "send",
)
Observer = Callable[[FrameResult], None]

#: How an estimator's own timing keys fold into the pipeline's stages (others count as decode).
ESTIMATOR_TIMING_KEYS: dict[str, str] = {
    "preprocess": "preprocess",
    "inference": "inference",
    "detector": "inference",  # two-stage models: person detector ...
    "landmark": "inference",  # ... and landmark model
    "decode": "decode",
    "postprocess": "decode",
}


# ---------------------------------------------------------------------------------------------
# Stage interfaces (what the pipeline calls; the real modules are adapted in build functions)


class Estimator(Protocol):
    """A pose model (see :class:`avatarlink.models.base.PoseEstimator`)."""

    name: str
    layout: KeypointLayout

    @property
    def provider(self) -> str: ...

    def estimate(self, image: Any, region: Any = None) -> Any:
        """Returns an object with ``image`` (Keypoints), ``world`` (Keypoints | None) and
        ``timings_ms`` (dict with ``preprocess``, ``inference``, ``decode`` ...)."""
        ...


class Sink(Protocol):
    """An output (see :class:`avatarlink.outputs.Sink`)."""

    @property
    def packets_sent(self) -> int: ...

    @property
    def errors(self) -> int: ...

    def send(self, rotations: Sequence[BoneRotations], t: float) -> None: ...

    def close(self) -> None: ...


KeypointFilter = Callable[[Keypoints, float], Keypoints]
Lifter = Callable[[Keypoints, Frame], "Keypoints | None"]
Solver = Callable[[Keypoints, float], Sequence[BoneRotations]]
RotationFilter = Callable[[BoneRotations], BoneRotations]


@dataclass
class Stages:
    """The stage objects of a pipeline; ``None`` skips a stage.

    Attributes:
        estimator: the pose model.
        smoother: image keypoints (source px) and capture time -> smoothed keypoints.
        lifter: smoothed image keypoints and the frame -> world keypoints (metres), or None.
        world_smoother: smooths a 3D model's own world keypoints (used instead of ``lifter``).
        solver: world keypoints and capture time -> bone rotations, one entry per person.
        rotation_smoother: smooths each person's bone rotations.
        sinks: outputs; each gets every frame's rotations (an empty list when nobody is seen).
        sink_names: a name per sink for counters (its URL).
    """

    estimator: Estimator
    smoother: KeypointFilter | None = None
    lifter: Lifter | None = None
    world_smoother: KeypointFilter | None = None
    solver: Solver | None = None
    rotation_smoother: RotationFilter | None = None
    sinks: Sequence[Sink] = ()
    sink_names: Sequence[str] = ()
    extra_close: list[Callable[[], None]] = field(default_factory=list)

    def reset(self) -> None:
        """Forget all temporal state (tracks, filters, held poses) before a new sequence."""
        parts: list[Any] = [self.estimator, self.smoother, self.lifter, self.world_smoother]
        parts += [self.solver, self.rotation_smoother]
        for part in parts:
            owner = getattr(part, "__self__", part)  # a bound method's object
            owner = getattr(owner, "lifter", owner)  # LiftStage wraps the lifter
            reset = getattr(owner, "reset", None)
            if callable(reset):
                reset()


@dataclass(frozen=True)
class PipelineOptions:
    """Loop settings.

    Attributes:
        poll_s: longest wait for a frame before the loop checks its stop conditions, seconds (it
            bounds how fast Ctrl-C and ``--seconds`` take effect).
        keepalive_hz: idle messages per second to the outputs while the source is lost.
        fps_window_s: seconds of recent frames the fps figure averages over.
        switch_interval_s: the interpreter's thread switch interval while :meth:`Pipeline.run`
            runs (restored after), seconds, or None to leave it. The capture thread runs Python
            between its native calls (the synthetic renderer most); with Python's default 5 ms
            it could hold the loop up to 5 ms after a frame arrives.
        overlap: run the stages after the model (smoothing to sending and observers) in a
            second thread, overlapping the next frame's inference (which releases the GIL), so
            throughput is bounded by the slower of the two halves instead of their sum. Each
            frame still goes through every stage in order; at most one frame waits in between.
            Off by default: with few cores the two halves contend for the GIL and the CPU and
            the gain is small (``avatarlink bench`` measures both).
    """

    poll_s: float = 0.1
    keepalive_hz: float = 10.0
    fps_window_s: float = 1.0
    switch_interval_s: float | None = 0.0005
    overlap: bool = False

    def __post_init__(self) -> None:
        if self.switch_interval_s is not None and not self.switch_interval_s > 0:
            raise ConfigError(
                f"pipeline.switch_interval_s must be > 0 s or null, got {self.switch_interval_s!r}"
            )
        for key in ("poll_s", "keepalive_hz", "fps_window_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"pipeline.{key} must be > 0, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class RunSummary:
    """What a :meth:`Pipeline.run` did.

    Attributes:
        frames: frames processed.
        seconds: wall time of the run, seconds.
        reason: why it stopped: ``stopped`` (stop event / signal), ``seconds``, ``frames`` or
            ``ended`` (the source ended).
        stats: the final counters (see :attr:`FrameResult.stats`).
    """

    frames: int
    seconds: float
    reason: str
    stats: dict[str, float]


@dataclass
class _Estimated:
    """A frame after the model stage, waiting for the rest (timings are filled in as it goes)."""

    captured: CapturedFrame
    raw: Keypoints
    world: Keypoints | None
    timings: dict[str, float]
    estimate_ms: float


class _PostStage:
    """Runs :meth:`Pipeline._finish` in its own thread, one frame at a time, in order.

    The loop thread hands over each estimated frame through a one-frame slot and waits while the
    slot is full, so at most one frame waits here (no latency builds up); finished results queue
    for the loop thread, which reports them.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._cond = threading.Condition()
        self._slot: _Estimated | None = None
        self._busy = False
        self._closed = False
        self.done: collections.deque[FrameResult] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="avatarlink-post", daemon=True)
        self._thread.start()

    def put(self, item: _Estimated, stop: threading.Event) -> bool:
        """Hand over a frame, waiting while the previous one has not been taken; False when
        ``stop`` was set meanwhile (the frame is dropped)."""
        with self._cond:
            while self._slot is not None:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
            self._slot = item
            self._cond.notify_all()
        return True

    @property
    def idle(self) -> bool:
        """No frame waiting or being processed."""
        with self._cond:
            return self._slot is None and not self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._closed:
                    self._cond.wait()
                if self._slot is None:
                    return
                item, self._slot = self._slot, None
                self._busy = True
                self._cond.notify_all()
            try:
                result = self._pipeline._finish(item)
            except Exception:  # _finish guards every stage; this is a bug, not a frame error
                log.exception("frame %d could not be finished", item.captured.frame.index)
                result = None
            with self._cond:
                self._busy = False
                if result is not None:
                    self.done.append(result)
                self._cond.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        """Finish the frame in hand (if any) and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)


class _ThreadedObserver:
    """Runs an observer in its own thread on the newest result (older ones are skipped)."""

    def __init__(self, fn: Observer, name: str) -> None:
        self._fn = fn
        self._cond = threading.Condition()
        self._item: FrameResult | None = None
        self._closed = False
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name=f"observer-{name}", daemon=True)
        self._thread.start()

    def __call__(self, result: FrameResult) -> None:
        with self._cond:
            if self._item is not None:
                self.skipped += 1
            self._item = result
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._item is None and not self._closed:
                    self._cond.wait()
                if self._item is None:
                    return
                item, self._item = self._item, None
            try:
                self._fn(item)
            except Exception:
                log.exception("observer %r failed; it keeps being called", self._fn)

    def close(self, timeout: float = 1.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)


class Pipeline:
    """Wires a :class:`Capture` to the stages and the outputs.

    Args:
        capture: a started capture.
        stages: the stage objects.
        options: loop settings.
        clock: monotonic seconds (the same clock as the capture's ``wall_t``).
    """

    def __init__(
        self,
        capture: Capture | None,
        stages: Stages,
        options: PipelineOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capture = capture
        self.stages = stages
        self.options = options or PipelineOptions()
        self._clock = clock
        self._observers: list[Observer] = []
        self._threaded: list[_ThreadedObserver] = []
        self.frames = 0
        self.persons_seen = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self._frame_ends: collections.deque[float] = collections.deque()
        self._last_keepalive = -math.inf
        self._send_lock = threading.Lock()
        self._fail_lock = threading.Lock()
        self.last_result: FrameResult | None = None
        self._closed = False
        self._rotation_smoothers: dict[int, RotationFilter] = {}
        try:
            self.provider = str(stages.estimator.provider)
        except Exception:  # a provider query must never stop a run
            self.provider = "?"
        names = list(stages.sink_names)
        self._sink_names = names + [f"sink{i}" for i in range(len(names), len(stages.sinks))]

    # -- observers ----------------------------------------------------------------------------

    def add_observer(self, observer: Observer, threaded: bool = False) -> None:
        """Call ``observer(result)`` after each frame is sent.

        Observers run on the loop thread and must return quickly (hand work to their own thread,
        as the preview does); an exception is logged once per kind and never stops the loop. With
        ``threaded`` the pipeline runs the observer in its own thread on the newest result,
        skipping results it has no time for.
        """
        if threaded:
            wrapper = _ThreadedObserver(observer, getattr(observer, "__name__", "observer"))
            self._threaded.append(wrapper)
            self._observers.append(wrapper)
        else:
            self._observers.append(observer)

    # -- one frame ----------------------------------------------------------------------------

    def _rotation_smoother_for(self, rotations: BoneRotations) -> RotationFilter:
        """Each tracked person keeps its own rotation filter (a copy of the configured one)."""
        proto = self.stages.rotation_smoother
        assert proto is not None
        key = rotations.person_id
        smoother = self._rotation_smoothers.get(key)
        if smoother is None:
            if len(self._rotation_smoothers) >= _MAX_PERSON_FILTERS:
                self._rotation_smoothers.clear()
            smoother = proto if not self._rotation_smoothers else copy.deepcopy(proto)
            if smoother is not proto:
                reset = getattr(smoother, "reset", None)
                if callable(reset):
                    reset()
            self._rotation_smoothers[key] = smoother
        return smoother

    def process(self, captured: CapturedFrame) -> FrameResult:
        """Run one captured frame through every stage, send it, and notify the observers."""
        return self._finish(self._estimate(captured))

    def _estimate(self, captured: CapturedFrame) -> _Estimated:
        """The model stage (the loop thread's part when stages overlap)."""
        clock = time.perf_counter
        start = clock()
        timings: dict[str, float] = {"capture": captured.read_ms}
        raw = Keypoints.empty(self.stages.estimator.layout)
        world: Keypoints | None = None
        try:
            est = self.stages.estimator.estimate(captured.frame.image, None)
            raw, world = est.image, est.world
            for key, value in est.timings_ms.items():
                name = ESTIMATOR_TIMING_KEYS.get(key, "decode")
                timings[name] = timings.get(name, 0.0) + float(value)
        except Exception as exc:
            self._fail("estimate", exc)
        est_ms = (clock() - start) * 1e3
        accounted = sum(timings.get(k, 0.0) for k in ("preprocess", "inference", "decode"))
        if est_ms > accounted:  # estimator time not broken down by the model
            timings["decode"] = timings.get("decode", 0.0) + (est_ms - accounted)
        return _Estimated(captured, raw, world, timings, est_ms)

    def _finish(self, item: _Estimated) -> FrameResult:
        """Smoothing, lifting, solving, sending and observers, for one estimated frame."""
        st = self.stages
        frame = item.captured.frame
        t = frame.t
        timings = item.timings
        raw = item.raw
        clock = time.perf_counter
        t1 = clock()
        smoothed = raw
        if st.smoother is not None:
            try:
                smoothed = st.smoother(raw, t)
            except Exception as exc:
                self._fail("smoothing", exc)
        t2 = clock()
        timings["smoothing"] = (t2 - t1) * 1e3

        world: Keypoints | None = None
        if smoothed.num_persons > 0:
            try:
                if item.world is not None:
                    world = item.world
                    if st.world_smoother is not None:
                        world = st.world_smoother(item.world, t)
                elif st.lifter is not None:
                    world = st.lifter(smoothed, frame)
            except Exception as exc:
                self._fail("lifting", exc)
        t3 = clock()
        timings["lifting"] = (t3 - t2) * 1e3

        rotations: tuple[BoneRotations, ...] = ()
        rot_ms = 0.0
        if world is not None and world.num_persons > 0 and st.solver is not None:
            try:
                rotations = tuple(st.solver(world, t))
            except Exception as exc:
                self._fail("solve", exc)
            if rotations and st.rotation_smoother is not None:
                r0 = clock()
                try:
                    rotations = tuple(self._rotation_smoother_for(r)(r) for r in rotations)
                except Exception as exc:
                    self._fail("smoothing", exc)
                rot_ms = (clock() - r0) * 1e3
        t4 = clock()
        timings["solve"] = (t4 - t3) * 1e3 - rot_ms
        timings["smoothing"] += rot_ms

        self._send(rotations, t)
        t5 = clock()
        timings["send"] = (t5 - t4) * 1e3
        end_wall = self._clock()
        latency_ms = (end_wall - item.captured.wall_t) * 1e3

        self.frames += 1
        self.persons_seen += int(raw.num_persons > 0)
        self._frame_ends.append(end_wall)
        while self._frame_ends and end_wall - self._frame_ends[0] > self.options.fps_window_s:
            self._frame_ends.popleft()
        result = FrameResult(
            frame=frame,
            raw=raw,
            smoothed=smoothed,
            world=world,
            rotations=rotations,
            timings_ms=timings,
            latency_ms=latency_ms,
            provider=self.provider,
            stats=self.stats(),
        )
        t6 = clock()
        self._notify(result)
        t7 = clock()
        timings["observers"] = (t7 - t6) * 1e3
        # The work spent on this frame (model stage plus the rest), without waiting in between.
        timings["total"] = item.estimate_ms + (t7 - t1) * 1e3
        self.last_result = result
        return result

    def keepalive(self) -> bool:
        """While no frames arrive, send the idle message at ``keepalive_hz``; True if sent."""
        now = self._clock()
        if now - self._last_keepalive < 1.0 / self.options.keepalive_hz:
            return False
        self._last_keepalive = now
        self._send((), self.last_result.frame.t if self.last_result else 0.0)
        return True

    # -- the loop -----------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        seconds: float | None = None,
        max_frames: int | None = None,
        on_tick: Callable[[FrameResult | None], None] | None = None,
    ) -> RunSummary:
        """Process frames until ``stop`` is set, ``seconds`` pass, ``max_frames`` are done, or the
        source ends. ``on_tick`` is called after every frame (with the result) and at least every
        ``poll_s`` while waiting (with None), e.g. to refresh the status line."""
        if self.capture is None:
            raise ConfigError("Pipeline.run needs a capture")
        stop = stop or threading.Event()
        previous_interval = sys.getswitchinterval()
        if self.options.switch_interval_s is not None:
            sys.setswitchinterval(self.options.switch_interval_s)
        try:
            return self._loop(self.capture, stop, seconds, max_frames, on_tick)
        finally:
            sys.setswitchinterval(previous_interval)

    def _loop(
        self,
        capture: Capture,
        stop: threading.Event,
        seconds: float | None,
        max_frames: int | None,
        on_tick: Callable[[FrameResult | None], None] | None,
    ) -> RunSummary:
        post = _PostStage(self) if self.options.overlap else None
        start = self._clock()
        reason = "stopped"
        processed = 0
        try:
            while True:
                if stop.is_set():
                    reason = "stopped"
                    break
                now = self._clock()
                if seconds is not None and now - start >= seconds:
                    reason = "seconds"
                    break
                if max_frames is not None and processed >= max_frames:
                    reason = "frames"
                    break
                wait = self.options.poll_s
                if seconds is not None:
                    wait = max(0.0, min(wait, start + seconds - now))
                item = capture.get(timeout=wait)
                self._report(post, on_tick)
                if item is None:
                    state = capture.state
                    if state is CaptureState.ENDED:
                        reason = "ended" if not stop.is_set() else "stopped"
                        break
                    if state is CaptureState.LOST and (post is None or post.idle):
                        self.keepalive()
                    if on_tick is not None:
                        on_tick(None)
                    continue
                if post is None:
                    result = self.process(item)
                    processed += 1
                    if on_tick is not None:
                        on_tick(result)
                elif post.put(self._estimate(item), stop):
                    processed += 1
        finally:
            if post is not None:
                post.close()
                self._report(post, on_tick)
        return RunSummary(processed, self._clock() - start, reason, self.stats())

    @staticmethod
    def _report(
        post: _PostStage | None, on_tick: Callable[[FrameResult | None], None] | None
    ) -> None:
        """Hand the results the post stage finished to ``on_tick``, in order."""
        while post is not None and post.done:
            result = post.done.popleft()
            if on_tick is not None:
                on_tick(result)

    # -- counters -----------------------------------------------------------------------------

    @property
    def fps(self) -> float:
        """Frames per second over the last ``fps_window_s``."""
        ends = self._frame_ends
        if len(ends) < 2:
            return 0.0
        span = ends[-1] - ends[0]
        return (len(ends) - 1) / span if span > 0 else 0.0

    def stats(self) -> dict[str, float]:
        """Running counters: ``fps``, ``frames``, ``dropped``, ``skipped``, ``reconnects``,
        ``packets_sent``, ``send_errors``, ``errors`` (stage failures), and per output
        ``packets_sent[NAME]``."""
        out: dict[str, float] = {"fps": self.fps, "frames": float(self.frames)}
        if self.capture is not None:
            c = self.capture.counters
            out.update(
                dropped=float(c.dropped),
                skipped=float(c.skipped),
                reconnects=float(c.reconnects),
                losses=float(c.losses),
            )
        total = errors = 0
        for name, sink in zip(self._sink_names, self.stages.sinks, strict=True):
            sent = int(sink.packets_sent)
            total += sent
            errors += int(sink.errors)
            out[f"packets_sent[{name}]"] = float(sent)
        out["packets_sent"] = float(total)
        out["send_errors"] = float(errors)
        out["errors"] = float(sum(self.errors.values()))
        return out

    def status_fields(self) -> StatusFields:
        """The current figures for the live status line."""
        stats = self.stats()
        last = self.last_result
        state = self.capture.state.value if self.capture is not None else "ok"
        return StatusFields(
            fps=stats["fps"],
            latency_ms=last.latency_ms if last is not None else math.nan,
            provider=self.provider,
            person=last is not None and last.raw.num_persons > 0 and state == "ok",
            packets_sent=int(stats["packets_sent"]),
            dropped=int(stats.get("dropped", 0)),
            errors=int(stats["errors"] + stats["send_errors"]),
            state=state,
        )

    def close(self) -> None:
        """Stop the capture and observer threads and close every output (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.capture is not None:
            self.capture.stop()
        for wrapper in self._threaded:
            wrapper.close()
        for name, sink in zip(self._sink_names, self.stages.sinks, strict=True):
            try:
                sink.close()
            except Exception as exc:
                log.warning("closing output %s failed: %s", name, exc)
        for fn in self.stages.extra_close:
            try:
                fn()
            except Exception as exc:
                log.warning("closing failed: %s", exc)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _send(self, rotations: Sequence[BoneRotations], t: float) -> None:
        with self._send_lock:  # frames (post stage) and keep-alives (loop) never interleave
            for name, sink in zip(self._sink_names, self.stages.sinks, strict=True):
                try:
                    sink.send(rotations, t)
                except Exception as exc:
                    self._fail(f"send {name}", exc)

    def _notify(self, result: FrameResult) -> None:
        for observer in self._observers:
            try:
                observer(result)
            except Exception as exc:
                self._fail("observer", exc)

    def _fail(self, stage: str, exc: Exception) -> None:
        kind = f"{stage}: {type(exc).__name__}"
        with self._fail_lock:  # the model stage and the post stage may fail at once
            self.errors[kind] += 1
            first = self.errors[kind] == 1
        if first:
            log.warning(
                "%s failed on frame %d: %s (the loop goes on; further %s errors are counted)",
                stage,
                self.frames,
                exc,
                kind,
            )
            log.debug("%s failure", stage, exc_info=exc)


# ---------------------------------------------------------------------------------------------
# Building a pipeline from the configuration


def build_stages(config: AppConfig, rig: Any = None) -> Stages:
    """The stage objects a configuration asks for (loads the model, opens the outputs).

    Args:
        config: the merged run configuration.
        rig: the loaded rig (default: ``load_rig(config.rig)``).

    Raises:
        ModelError, RigError, ConfigError, OutputError: naming what is wrong.
    """
    from avatarlink.models.registry import create_estimator
    from avatarlink.outputs import open_sink
    from avatarlink.rig import load_rig
    from avatarlink.session import SessionOptions
    from avatarlink.smoothing import KeypointSmoother, RotationSmoother
    from avatarlink.solver import BoneSolver

    rig = rig if rig is not None else load_rig(config.rig)
    estimator = create_estimator(
        config.model,
        SessionOptions(config.device, config.threads),
        tracking=config.tracking,
        max_persons=config.max_persons,
    )
    smoothing = config.section("smoothing")
    stages = Stages(
        estimator=estimator,
        smoother=KeypointSmoother(smoothing),
        world_smoother=KeypointSmoother(smoothing),
        rotation_smoother=RotationSmoother(smoothing),
    )
    solver_config, lengths = _calibrated(config)
    stages.solver = BoneSolver(rig, solver_config).solve
    stages.lifter = _make_lifter(config, rig, lengths)
    sink_options = dataclasses.asdict(config.outputs)
    sinks: list[Sink] = []
    try:
        for url in config.send:
            sinks.append(open_sink(url, rig, **sink_options))
    except Exception:
        for sink in sinks:
            sink.close()
        raise
    stages.sinks = sinks
    stages.sink_names = list(config.send)
    return stages


def _calibrated(config: AppConfig) -> tuple[Any, dict[str, float] | None]:
    """The solver config, with the calibration profile's facing, and its segment lengths."""
    from avatarlink.solver import SolverConfig

    solver_config = config.section("solver")
    if not isinstance(solver_config, SolverConfig):
        solver_config = SolverConfig()
    if not config.profile:
        return solver_config, None
    from avatarlink.calibration import load_profile

    profile = load_profile(config.profile)
    if profile.rig != config.rig:
        log.warning(
            "calibration profile %s was measured for rig %s, running rig %s",
            config.profile,
            profile.rig,
            config.rig,
        )
    solver_config, lengths = profile.apply(solver_config)
    return solver_config, lengths


def lift_config(config: AppConfig) -> Any:
    """The run's :class:`avatarlink.lift.LiftConfig`; with the synthetic performer as the source
    and no ``lift.focal_px``, its camera's true focal length and principal point (otherwise the
    lifter takes them from ``lift.fov_deg`` and each frame's size)."""
    from avatarlink.capture import parse_source
    from avatarlink.lift import LiftConfig

    cfg = config.section("lift")
    if not isinstance(cfg, LiftConfig):
        cfg = LiftConfig()
    if cfg.focal_px is None and parse_source(config.source)[0] == "synthetic":
        syn = config.synthetic
        focal = 0.5 * syn.height / math.tan(math.radians(syn.vertical_fov_deg) / 2.0)
        centre = cfg.principal_point or (0.5 * syn.width, 0.5 * syn.height)
        cfg = dataclasses.replace(cfg, focal_px=focal, principal_point=centre)
    return cfg


def _make_lifter(config: AppConfig, rig: Any, lengths: dict[str, float] | None) -> Lifter:
    """The 2D -> 3D lifter, as ``(keypoints, frame) -> world keypoints``; ``lengths``: segment
    lengths in metres from a calibration profile."""
    from avatarlink.lift import Lifter as RigLifter

    return LiftStage(RigLifter(rig, lift_config(config), lengths))


class LiftStage:
    """Adapts :class:`avatarlink.lift.Lifter` to the pipeline: ``(keypoints, frame) -> world``
    (the frame's size gives the camera's focal length from ``lift.fov_deg``)."""

    def __init__(self, lifter: Any) -> None:
        self.lifter = lifter
        self._size: tuple[int, int] | None = None

    def __call__(self, keypoints: Keypoints, frame: Frame) -> Keypoints | None:
        shape = frame.image.shape
        size = self._size
        if size is None or size[0] != shape[1] or size[1] != shape[0]:
            size = self._size = (int(shape[1]), int(shape[0]))
        out: Keypoints = self.lifter.lift(keypoints, frame.t, size)
        return out
