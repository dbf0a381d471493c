"""Smoothing and timing report of a recording: the numbers and one PNG figure to tune by.

What it shows, per person slot (default 0):

- trajectories of chosen keypoints over time, x and y in source pixels, raw vs smoothed;
- jitter per keypoint (RMS second difference per frame, in torso lengths, see
  :func:`avatarlink.metrics.jitter`) raw vs smoothed, and the lag of the smoothed track behind the
  raw one (:func:`avatarlink.metrics.lag_ms`): less jitter for more lag is the smoothing trade-off;
- a histogram of each pipeline stage's time and the capture-to-send latency.

The metrics assume frames evenly spaced at the recording's median frame interval (true for steady
capture; dropped frames make that frame's jitter look larger). Plots are drawn with OpenCV, so the
report needs nothing beyond avatarlink's own dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink import metrics
from avatarlink.errors import InputError, OutputError
from avatarlink.recording import PersonTrack, Recording
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import ImageArray

F64 = npt.NDArray[np.float64]

DEFAULT_KEYPOINTS = ("left_wrist", "right_wrist")
#: Most keypoints plotted as trajectories (one panel each).
MAX_TRAJECTORIES = 4
#: Stages left out of the timing histogram (sums or overlapping stages).
_AGGREGATE_STAGES = ("total", "observers")

# Figure geometry (pixels) and colours (BGR).
_WIDTH = 1600
_ROW_HEIGHT = 380
_MARGIN = 20
_BACKGROUND = (255, 255, 255)
_INK = (40, 40, 40)
_GRID = (225, 225, 225)
_RAW = (200, 160, 90)  # light blue
_SMOOTH = (150, 60, 10)  # dark blue
_RAW_Y = (90, 170, 240)  # light orange
_SMOOTH_Y = (10, 100, 220)  # dark orange
_STAGE_COLOURS = (
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
)  # fmt: skip
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class SmoothingReport:
    """Jitter and lag of one person's keypoints.

    Attributes:
        names: keypoint names (K).
        frame_s: median frame interval in seconds.
        jitter_raw: float64 (K,) raw jitter, torso lengths per frame² (NaN where unmeasurable).
        jitter_smoothed: float64 (K,) the same after smoothing.
        lag_ms: float64 (K,) delay of the smoothed track behind the raw one, ms.
        jitter_raw_all, jitter_smoothed_all: one jitter number over every keypoint.
        lag_ms_all: one lag over every keypoint (pooled cross-correlation).
    """

    names: tuple[str, ...]
    frame_s: float
    jitter_raw: F64
    jitter_smoothed: F64
    lag_ms: F64
    jitter_raw_all: float
    jitter_smoothed_all: float
    lag_ms_all: float

    @property
    def jitter_ratio(self) -> float:
        """Smoothed / raw overall jitter (below 1 means smoothing removes jitter)."""
        if not self.jitter_raw_all > 0:
            return math.nan
        return self.jitter_smoothed_all / self.jitter_raw_all


@dataclass(frozen=True)
class TimingReport:
    """Per-stage timings over the recording.

    Attributes:
        stages: stage name -> float64 (N,) milliseconds of the frames that recorded it.
        latency_ms: float64 (N,) capture-to-send latency of the frames that recorded it.
    """

    stages: dict[str, F64]
    latency_ms: F64

    def median(self, stage: str) -> float:
        """Median ms of ``stage`` (NaN when absent)."""
        values = self.stages.get(stage, np.zeros(0))
        return float(np.median(values)) if values.size else math.nan


def frame_interval(t: F64) -> float:
    """Median interval between consecutive frame times ``t`` (T,), seconds."""
    dt = np.diff(t)
    dt = dt[np.isfinite(dt) & (dt > 0)]
    if dt.size == 0:
        raise InputError("the recording needs at least two frames with increasing times")
    return float(np.median(dt))


def smoothing_report(track: PersonTrack, layout: KeypointLayout) -> SmoothingReport:
    """Jitter and lag of ``track``'s keypoints (see the module docstring)."""
    frame_s = frame_interval(track.t)
    raw = track.raw[..., :2].astype(np.float64)
    smoothed = track.smoothed[..., :2].astype(np.float64)
    torso = metrics.torso_length(smoothed, layout)
    scale = np.where(torso > 0, torso, np.nan)[:, None]
    jr = metrics.jitter(raw, scale)
    js = metrics.jitter(smoothed, scale)
    lags = np.array(
        [metrics.lag_ms(smoothed[:, k], raw[:, k], frame_s) for k in range(raw.shape[1])]
    )
    return SmoothingReport(
        names=layout.names,
        frame_s=frame_s,
        jitter_raw=jr,
        jitter_smoothed=js,
        lag_ms=lags,
        jitter_raw_all=metrics.jitter_rms(raw, scale),
        jitter_smoothed_all=metrics.jitter_rms(smoothed, scale),
        lag_ms_all=metrics.lag_ms(smoothed, raw, frame_s),
    )


def timing_report(track: PersonTrack) -> TimingReport:
    """The recorded timings and latencies (frames without them left out)."""
    stages = {
        name: values[np.isfinite(values)]
        for name, values in track.timings_ms.items()
        if np.isfinite(values).any()
    }
    latency = track.latency_ms[np.isfinite(track.latency_ms)]
    return TimingReport(stages, latency)


# --- plotting (a few OpenCV primitives; enough for line, bar and histogram panels) --------------


def nice_ticks(lo: float, hi: float, count: int = 5) -> F64:
    """About ``count`` round tick values (1, 2, 5 x 10^n steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.array([lo]) if math.isfinite(lo) else np.zeros(0)
    raw_step = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw_step))
    span = hi - lo
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda st: abs(span / st - count))
    first = math.ceil(lo / step - 1e-9) * step
    return np.arange(first, hi + step * 1e-9, step)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _text(
    img: ImageArray,
    text: str,
    org: tuple[int, int],
    scale: float = 0.5,
    colour: tuple[int, int, int] = _INK,
    thickness: int = 1,
    align: str = "left",
) -> None:
    (w, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = org
    if align == "center":
        x -= w // 2
    elif align == "right":
        x -= w
    cv2.putText(img, text, (int(x), int(y)), _FONT, scale, colour, thickness, cv2.LINE_AA)


class _Axes:
    """A plot area inside ``img``: data-to-pixel mapping, frame, grid, ticks, title, legend."""

    def __init__(
        self,
        img: ImageArray,
        box: tuple[int, int, int, int],
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        title: str,
        xlabel: str = "",
        ylabel: str = "",
        invert_y: bool = False,
        legend_rows: int = 1,
    ) -> None:
        x, y, w, h = box
        self.img = img
        # Title, then ``legend_rows`` rows of legend entries above the plot (never over the data).
        self.left, self.top = x + 70, y + 38 + 20 * legend_rows
        self.right, self.bottom = x + w - 12, y + h - 46
        lo, hi = xlim
        self.xlim = (lo, hi if hi > lo else lo + 1.0)
        lo, hi = ylim
        self.ylim = (lo, hi if hi > lo else lo + 1.0)
        self.invert_y = invert_y
        _text(img, title, (x + w // 2, y + 20), 0.6, thickness=1, align="center")
        cv2.rectangle(img, (self.left, self.top), (self.right, self.bottom), _INK, 1)
        for v in nice_ticks(*self.xlim, count=6):
            px = int(self.px(np.array([v]), np.array([self.ylim[0]]))[0][0])
            cv2.line(img, (px, self.top + 1), (px, self.bottom - 1), _GRID, 1)
            _text(img, _fmt(float(v)), (px, self.bottom + 18), 0.42, align="center")
        for v in nice_ticks(*self.ylim, count=5):
            py = int(self.px(np.array([self.xlim[0]]), np.array([v]))[1][0])
            cv2.line(img, (self.left + 1, py), (self.right - 1, py), _GRID, 1)
            _text(img, _fmt(float(v)), (self.left - 6, py + 5), 0.42, align="right")
        if xlabel:
            _text(
                img, xlabel, ((self.left + self.right) // 2, self.bottom + 38), 0.45, align="center"
            )
        if ylabel:
            _text(img, ylabel, (x + 4, self.top - 10), 0.42)
        self._legend_start = x + 150
        self._legend_x = self._legend_start
        self._legend_y = y + 44

    def px(self, xs: npt.ArrayLike, ys: npt.ArrayLike) -> tuple[F64, F64]:
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        u = self.left + (np.asarray(xs, np.float64) - x0) / (x1 - x0) * (self.right - self.left)
        frac = (np.asarray(ys, np.float64) - y0) / (y1 - y0)
        if self.invert_y:
            frac = 1.0 - frac
        v = self.bottom - frac * (self.bottom - self.top)
        return u, v

    def line(
        self, xs: npt.ArrayLike, ys: npt.ArrayLike, colour: tuple[int, int, int], thickness: int = 1
    ) -> None:
        """A polyline broken at NaN samples, clipped to the plot area."""
        u, v = self.px(xs, ys)
        ok = np.isfinite(u) & np.isfinite(v)
        breaks = np.flatnonzero(np.diff(ok.astype(np.int8)) != 0) + 1
        for seg_u, seg_v, seg_ok in zip(
            np.split(u, breaks), np.split(v, breaks), np.split(ok, breaks), strict=True
        ):
            if seg_ok.size and seg_ok[0] and seg_u.size > 1:
                pts = np.stack([seg_u, seg_v], axis=1)
                pts[:, 0] = np.clip(pts[:, 0], self.left, self.right)
                pts[:, 1] = np.clip(pts[:, 1], self.top, self.bottom)
                cv2.polylines(
                    self.img,
                    [np.round(pts).astype(np.int32)],
                    False,
                    colour,
                    thickness,
                    cv2.LINE_AA,
                )

    def bars(self, centres: F64, heights: F64, width: float, colour: tuple[int, int, int]) -> None:
        """Vertical bars from y = 0 (NaN heights are skipped)."""
        for c, h in zip(centres, heights, strict=True):
            if not math.isfinite(float(h)):
                continue
            (u0, u1), (v0, v1) = self.px(
                np.array([c - width / 2, c + width / 2]), np.array([0.0, h])
            )
            top, bottom = sorted((round(v0), round(v1)))
            top, bottom = max(top, self.top), min(bottom, self.bottom)
            cv2.rectangle(self.img, (round(u0), top), (round(u1), bottom), colour, -1)

    def legend(self, label: str, colour: tuple[int, int, int], thickness: int = 2) -> None:
        """One legend entry, left to right in the strip above the plot (wrapping to a new row)."""
        (w, _), _ = cv2.getTextSize(label, _FONT, 0.42, 1)
        width = 32 + w + 22
        if self._legend_x + width > self.right and self._legend_x > self._legend_start:
            self._legend_x = self._legend_start
            self._legend_y += 20
        x, y = self._legend_x, self._legend_y
        cv2.line(self.img, (x, y - 4), (x + 26, y - 4), colour, max(thickness, 2), cv2.LINE_AA)
        _text(self.img, label, (x + 32, y), 0.42)
        self._legend_x += width


def _limits(*arrays: npt.ArrayLike, pad: float = 0.05) -> tuple[float, float]:
    values = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo or max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


def _trajectory_panel(
    img: ImageArray, box: tuple[int, int, int, int], track: PersonTrack, index: int, name: str
) -> None:
    t = track.t - track.t[0]
    raw, smooth = track.raw[:, index, :2], track.smoothed[:, index, :2]
    xy_lim = _limits(raw, smooth)
    ax = _Axes(img, box, (0.0, float(t[-1])), xy_lim, f"{name}: raw vs smoothed", "time (s)", "px")
    # Smoothed bold underneath, raw thin on top: both stay visible where they coincide.
    ax.line(t, smooth[:, 0], _SMOOTH, 3)
    ax.line(t, smooth[:, 1], _SMOOTH_Y, 3)
    ax.line(t, raw[:, 0], _RAW, 1)
    ax.line(t, raw[:, 1], _RAW_Y, 1)
    ax.legend("x raw", _RAW, 1)
    ax.legend("x smoothed", _SMOOTH)
    ax.legend("y raw", _RAW_Y, 1)
    ax.legend("y smoothed", _SMOOTH_Y)


def _jitter_panel(img: ImageArray, box: tuple[int, int, int, int], sm: SmoothingReport) -> None:
    k = len(sm.names)
    ylim = (0.0, _limits(sm.jitter_raw, sm.jitter_smoothed, pad=0.1)[1])
    ax = _Axes(img, box, (-0.7, k - 0.3), ylim, "jitter per keypoint", "", "torso/frame^2")
    idx = np.arange(k, dtype=np.float64)
    ax.bars(idx - 0.2, sm.jitter_raw, 0.38, _RAW)
    ax.bars(idx + 0.2, sm.jitter_smoothed, 0.38, _SMOOTH)
    _keypoint_labels(img, ax, sm.names)
    ax.legend(f"raw ({_fmt(sm.jitter_raw_all)})", _RAW)
    ax.legend(f"smoothed ({_fmt(sm.jitter_smoothed_all)})", _SMOOTH)


def _lag_panel(img: ImageArray, box: tuple[int, int, int, int], sm: SmoothingReport) -> None:
    k = len(sm.names)
    lo, hi = _limits(sm.lag_ms, np.zeros(1), pad=0.1)
    ax = _Axes(
        img,
        box,
        (-0.7, k - 0.3),
        (min(lo, 0.0), max(hi, 1.0)),
        "lag of smoothed behind raw",
        "",
        "ms",
    )
    ax.bars(np.arange(k, dtype=np.float64), sm.lag_ms, 0.6, _SMOOTH)
    _keypoint_labels(img, ax, sm.names)
    ax.legend(f"all keypoints: {_fmt(sm.lag_ms_all)} ms", _SMOOTH)


def _keypoint_labels(img: ImageArray, ax: _Axes, names: Sequence[str]) -> None:
    """Short keypoint names under the bars (overwriting the numeric x ticks' row)."""
    cv2.rectangle(
        img, (ax.left - 20, ax.bottom + 2), (ax.right + 10, ax.bottom + 44), _BACKGROUND, -1
    )
    for i, name in enumerate(names):
        u, _ = ax.px(np.array([float(i)]), np.array([0.0]))
        short = "".join(part[0] for part in name.split("_")[:-1]) + name.split("_")[-1][:4]
        _text(img, short, (int(u[0]), ax.bottom + 16 + 14 * (i % 2)), 0.36, align="center")


def _timing_panel(img: ImageArray, box: tuple[int, int, int, int], tm: TimingReport) -> None:
    stages = {k: v for k, v in tm.stages.items() if k not in _AGGREGATE_STAGES and v.size}
    series = dict(stages)
    if tm.latency_ms.size:
        series["latency"] = tm.latency_ms
    if not series:
        _Axes(img, box, (0.0, 1.0), (0.0, 1.0), "no timings recorded")
        return
    everything = np.concatenate(list(series.values()))
    hi = float(np.percentile(everything, 99.5)) * 1.05 or 1.0
    edges = np.linspace(0.0, hi, 61)
    counts = {k: np.histogram(np.clip(v, 0, hi), edges)[0] / v.size for k, v in series.items()}
    ymax = max(float(c.max()) for c in counts.values()) * 1.1
    title = "time per stage and latency"
    rows = 1 + len(series) // 7  # about seven entries fit a row across the figure
    ax = _Axes(img, box, (0.0, hi), (0.0, ymax), title, "ms", "share of frames", legend_rows=rows)
    steps_x = np.repeat(edges, 2)[1:-1]  # histogram outlines as steps
    for i, (name, share) in enumerate(counts.items()):
        colour = _INK if name == "latency" else _STAGE_COLOURS[i % len(_STAGE_COLOURS)]
        ax.line(steps_x, np.repeat(share, 2), colour, 2)
        ax.legend(f"{name} (median {float(np.median(series[name])):.1f})", colour)


def render_report(
    recording: Recording,
    person: int = 0,
    keypoints: Sequence[str] = DEFAULT_KEYPOINTS,
) -> tuple[ImageArray, SmoothingReport, TimingReport]:
    """The report figure (uint8 BGR image) and its numbers for one person slot."""
    layout = recording.header.layout
    if not keypoints:
        raise InputError("give at least one keypoint to plot")
    if len(keypoints) > MAX_TRAJECTORIES:
        raise InputError(
            f"at most {MAX_TRAJECTORIES} keypoints can be plotted, got {len(keypoints)}"
        )
    try:
        indices = [layout.index(name) for name in keypoints]
    except KeyError as exc:
        raise InputError(f"{exc.args[0]}; names: {', '.join(layout.names)}") from None
    track = recording.track(person)
    if not track.present.any():
        raise InputError(f"{recording.path}: person {person} never appears in the recording")
    sm = smoothing_report(track, layout)
    tm = timing_report(track)
    rows = 1 + (len(indices) + 1) // 2 + 1
    img = np.full((rows * _ROW_HEIGHT + 70, _WIDTH, 3), _BACKGROUND, np.uint8)
    title = (
        f"{recording.path.name}: {len(recording.frames)} frames, {recording.duration_s:.1f} s, "
        f"model {recording.header.model}, person {person}; jitter x{sm.jitter_ratio:.2f}, "
        f"lag {sm.lag_ms_all:.0f} ms"
    )
    _text(img, title, (_MARGIN, 40), 0.75, thickness=2)
    half = (_WIDTH - 3 * _MARGIN) // 2
    y = 60
    for i, (index, name) in enumerate(zip(indices, keypoints, strict=True)):
        x = _MARGIN + (i % 2) * (half + _MARGIN)
        _trajectory_panel(img, (x, y, half, _ROW_HEIGHT - 10), track, index, name)
        if i % 2 == 1 or i == len(indices) - 1:
            y += _ROW_HEIGHT
    _jitter_panel(img, (_MARGIN, y, half, _ROW_HEIGHT - 10), sm)
    _lag_panel(img, (2 * _MARGIN + half, y, half, _ROW_HEIGHT - 10), sm)
    y += _ROW_HEIGHT
    _timing_panel(img, (_MARGIN, y, _WIDTH - 2 * _MARGIN, _ROW_HEIGHT - 10), tm)
    return img, sm, tm


def write_report(path: str | Path, image: ImageArray) -> Path:
    """Write the report image (PNG or any suffix OpenCV knows)."""
    out = Path(path)
    try:
        ok = cv2.imwrite(str(out), image)
    except cv2.error as exc:
        raise OutputError(f"cannot write report {out}: {exc}") from exc
    if not ok:
        raise OutputError(f"cannot write report {out} (unknown image suffix or unwritable folder)")
    return out
