"""Keypoint smoothing: jitter reduction and added lag per filter and preset, on synthetic tracks.

A synthetic BlazePose-33 person (torso ``--torso-px`` pixels) performs five scenarios with known
clean motion: ``hold`` (still), ``drift`` (slow body drift and arm swing), ``wave`` (fast arm
sinusoids), ``steps`` (sudden pose changes) and ``occlusion`` (moderate motion with an arm hidden
for a while and the whole person lost for longer than ``lost_after_s``). Gaussian noise (in torso
lengths), per-keypoint dropouts (NaN, score 0), low-score junk detections and dropped frames are
added; timestamps are real seconds with capture jitter.

Every filter runs through :class:`avatarlink.smoothing.KeypointSmoother` (gating, scale, tracks).
Measures (:mod:`avatarlink.metrics`), on the frames where the input keypoint was usable:

- ``jitter_ratio``: jitter (RMS second difference / torso) of the output over that of the noisy
  input, on the still and slow scenarios (``hold``, ``drift``), where jitter is what one sees.
- ``lag_ms``: delay maximising the cross-correlation of output and clean velocities, on the
  smoothly moving scenarios (``drift``, ``wave``, ``occlusion``). ``steps`` is left out of it:
  the velocity of a step is one impulse, and the output of any causal low-pass answers it with
  its largest increment in the very first frame, so the cross-correlation puts its "delay" near
  zero whatever the filter's time constant. Steps count in the error instead.
- ``err_ratio``: RMS distance to the clean track over that of the noisy input, all scenarios.

The ``mediapipe`` preset runs MediaPipe Pose's smoothing parameters with this code, and the
default preset is checked against it: it must have lower jitter at equal or lower lag, or lower
lag at equal or lower jitter. Ablation rows rerun the default preset with each of its departures
from the reference One-Euro undone (per-keypoint speed, speed dead band). Timings (per frame,
medians and interquartile spreads) compare the raw filters on ``(1, 33, 3)`` and the quaternion
filter on 55 bones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from avatarlink import metrics
from avatarlink.errors import ConfigError
from avatarlink.skeletons import BlazePose33, KeypointLayout
from avatarlink.smoothing import (
    KalmanFilter,
    KeypointSmoother,
    NoOpFilter,
    OneEuroFilter,
    QuaternionOneEuroFilter,
    SmoothingFilter,
    VelocityFilter,
)
from avatarlink.smoothing_config import DEFAULT_PRESET, PRESETS, SmoothingConfig, with_overrides
from avatarlink.types import Keypoints, Space

F64 = npt.NDArray[np.float64]

LAYOUT = KeypointLayout.BLAZEPOSE33
SCENARIOS: tuple[str, ...] = ("hold", "drift", "wave", "steps", "occlusion")
JITTER_SCENARIOS: tuple[str, ...] = ("hold", "drift")
LAG_SCENARIOS: tuple[str, ...] = ("drift", "wave", "occlusion")
# (filter, preset) pairs measured; the sweeps draw the trade-off curves.
PRESET_RUNS: tuple[tuple[str, str], ...] = (
    ("none", "none"),
    ("one_euro", "responsive"),
    ("one_euro", "balanced"),
    ("one_euro", "smooth"),
    ("kalman", "responsive"),
    ("kalman", "balanced"),
    ("kalman", "smooth"),
    ("one_euro", "mediapipe"),
    ("velocity", "mediapipe"),
)
# The default preset with one of its departures from the reference One-Euro undone, to show
# what each contributes: (label, overrides).
ABLATIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("axis_speed", {"one_euro.speed": "axis"}),
    ("no_deadband", {"one_euro.deadband": 0.0}),
    ("reference", {"one_euro.speed": "axis", "one_euro.deadband": 0.0}),
)
# One-Euro: beta (s per person size), the main jitter/lag knob; Kalman: process noise.
ONE_EURO_SWEEP: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 25.0, 35.0, 50.0, 80.0)
KALMAN_SWEEP: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)

# Template pose in torso lengths: image axes (x right, y down), hip centre at the origin, facing
# the camera (the person's left on image right).
_TEMPLATE: dict[BlazePose33, tuple[float, float]] = {
    BlazePose33.NOSE: (0.0, -1.45),
    BlazePose33.LEFT_EYE_INNER: (0.04, -1.52),
    BlazePose33.LEFT_EYE: (0.07, -1.52),
    BlazePose33.LEFT_EYE_OUTER: (0.10, -1.52),
    BlazePose33.RIGHT_EYE_INNER: (-0.04, -1.52),
    BlazePose33.RIGHT_EYE: (-0.07, -1.52),
    BlazePose33.RIGHT_EYE_OUTER: (-0.10, -1.52),
    BlazePose33.LEFT_EAR: (0.15, -1.48),
    BlazePose33.RIGHT_EAR: (-0.15, -1.48),
    BlazePose33.MOUTH_LEFT: (0.05, -1.38),
    BlazePose33.MOUTH_RIGHT: (-0.05, -1.38),
    BlazePose33.LEFT_SHOULDER: (0.40, -1.0),
    BlazePose33.RIGHT_SHOULDER: (-0.40, -1.0),
    BlazePose33.LEFT_ELBOW: (0.50, -0.50),
    BlazePose33.RIGHT_ELBOW: (-0.50, -0.50),
    BlazePose33.LEFT_WRIST: (0.55, -0.05),
    BlazePose33.RIGHT_WRIST: (-0.55, -0.05),
    BlazePose33.LEFT_PINKY: (0.60, 0.05),
    BlazePose33.RIGHT_PINKY: (-0.60, 0.05),
    BlazePose33.LEFT_INDEX: (0.57, 0.08),
    BlazePose33.RIGHT_INDEX: (-0.57, 0.08),
    BlazePose33.LEFT_THUMB: (0.50, 0.03),
    BlazePose33.RIGHT_THUMB: (-0.50, 0.03),
    BlazePose33.LEFT_HIP: (0.22, 0.0),
    BlazePose33.RIGHT_HIP: (-0.22, 0.0),
    BlazePose33.LEFT_KNEE: (0.24, 0.90),
    BlazePose33.RIGHT_KNEE: (-0.24, 0.90),
    BlazePose33.LEFT_ANKLE: (0.25, 1.80),
    BlazePose33.RIGHT_ANKLE: (-0.25, 1.80),
    BlazePose33.LEFT_HEEL: (0.25, 1.87),
    BlazePose33.RIGHT_HEEL: (-0.25, 1.87),
    BlazePose33.LEFT_FOOT_INDEX: (0.30, 1.92),
    BlazePose33.RIGHT_FOOT_INDEX: (-0.30, 1.92),
}
_LEFT_ARM = (13, 15, 17, 19, 21)  # elbow, wrist, hand points (elbow moves at half amplitude)
_RIGHT_ARM = (14, 16, 18, 20, 22)
_EXTREMITIES = (15, 16, 17, 18, 19, 20, 21, 22, 27, 28, 29, 30, 31, 32)


@dataclass(frozen=True)
class Scenario:
    """One synthetic sequence.

    Attributes:
        name: scenario name.
        t: float64 (N,) capture times in seconds (uniform grid plus capture jitter).
        clean: float64 (N, K, 3) true keypoints, pixels.
        noisy: float64 (N, K, 3) what the estimator reports (NaN where dropped out).
        score: float32 (N, K) scores (0 where dropped out, low for junk detections).
        delivered: bool (N,) frames that reach the smoother (others are dropped frames).
        torso_px: torso length in pixels.
    """

    name: str
    t: F64
    clean: F64
    noisy: F64
    score: npt.NDArray[np.float32]
    delivered: npt.NDArray[np.bool_]
    torso_px: float


def _arm_weights() -> tuple[F64, F64]:
    """(K,) weights of the left and right arm motion (1 for hands, 0.5 for elbows)."""
    left, right = np.zeros(33), np.zeros(33)
    left[list(_LEFT_ARM)] = 1.0
    right[list(_RIGHT_ARM)] = 1.0
    left[13] = right[14] = 0.5
    return left, right


def _clean_motion(name: str, t: F64) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Clean displacement (N, K, 3) in torso lengths, and (N, K) occlusion mask (True: hidden)."""
    n = t.size
    disp = np.zeros((n, 33, 3))
    hidden = np.zeros((n, 33), bool)
    left, right = _arm_weights()
    tt = t[:, None]
    if name == "drift":
        disp[..., 0] += 0.5 * np.sin(2 * np.pi * 0.05 * tt)
        disp[..., 1] += 0.1 * np.sin(2 * np.pi * 0.08 * tt)
        disp[..., 0] += 0.25 * np.sin(2 * np.pi * 0.15 * tt) * (left - right)
    elif name == "wave":
        disp[..., 0] += 0.35 * np.sin(2 * np.pi * 2.0 * tt) * left
        disp[..., 1] += 0.15 * np.sin(2 * np.pi * 4.0 * tt) * left
        disp[..., 0] -= 0.30 * np.sin(2 * np.pi * 1.2 * tt + 1.0) * right
        disp[..., 2] += 0.10 * np.sin(2 * np.pi * 2.0 * tt) * left
    elif name == "steps":
        arm = np.floor(t / 0.8) % 2
        body = np.floor(t / 2.0) % 2
        disp[..., 1] -= 0.5 * arm[:, None] * (left + right)
        disp[..., 0] += 0.3 * body[:, None]
    elif name == "occlusion":
        disp[..., 0] += 0.3 * np.sin(2 * np.pi * 0.8 * tt) * (left - right)
        disp[..., 1] += 0.1 * np.sin(2 * np.pi * 0.5 * tt)
        span = t[-1] - t[0]
        right_arm = np.asarray(_RIGHT_ARM)
        for a, b in ((0.2, 0.25), (0.45, 0.53)):  # hidden right arm, shorter than lost_after
            sel = (t >= t[0] + a * span) & (t < t[0] + b * span)
            hidden[np.ix_(sel, right_arm)] = True
        sel = (t >= t[0] + 0.7 * span) & (t < t[0] + 0.7 * span + 1.0)  # person gone for 1 s
        hidden[sel] = True
    elif name != "hold":
        raise ValueError(f"unknown scenario {name!r}")
    return disp, hidden


def make_scenario(
    name: str,
    fps: float,
    seconds: float,
    noise: float,
    rng: np.random.Generator,
    torso_px: float = 150.0,
    dropout: float = 0.02,
    junk: float = 0.01,
    frame_drop: float = 0.02,
) -> Scenario:
    """Build one scenario (see the module docstring); ``noise`` is a std in torso lengths."""
    n = round(seconds * fps)
    t = np.arange(n) / fps + rng.uniform(-0.5e-3, 0.5e-3, n)
    template = np.zeros((33, 3))
    for point, (x, y) in _TEMPLATE.items():
        template[point] = (x, y, 0.0)
    disp, hidden = _clean_motion(name, t - t[0])
    origin = np.array([640.0, 420.0, 0.0])
    clean = origin + torso_px * (template + disp)
    sigma = np.ones(33)
    sigma[list(_EXTREMITIES)] = 1.5
    sig = noise * torso_px * sigma[None, :, None] * np.array([1.0, 1.0, 2.0])
    noisy = clean + rng.normal(size=clean.shape) * sig
    score = rng.uniform(0.6, 1.0, (n, 33)).astype(np.float32)
    is_junk = rng.random((n, 33)) < junk
    noisy[is_junk] += rng.normal(size=(int(is_junk.sum()), 3)) * 8.0 * sig[0, 0, 0]
    score[is_junk] = 0.1
    gone = (rng.random((n, 33)) < dropout) | hidden
    noisy[gone] = np.nan
    score[gone] = 0.0
    delivered = rng.random(n) >= frame_drop
    delivered[:2] = True
    return Scenario(name, t, clean, noisy, score, delivered, torso_px)


def make_scenarios(fps: float, seconds: float, noise: float, seed: int) -> list[Scenario]:
    """All scenarios at one frame rate (seeded: the same data for every filter)."""
    rng = np.random.default_rng(seed + round(fps * 1000))
    return [make_scenario(name, fps, seconds, noise, rng) for name in SCENARIOS]


def run_smoother(config: SmoothingConfig, scenario: Scenario) -> tuple[F64, float]:
    """Smoothed track (N, K, 3) (NaN on dropped frames) and the median per-frame time in ms."""
    smoother = KeypointSmoother(config)
    out = np.full(scenario.clean.shape, np.nan)
    times = []
    for i in np.flatnonzero(scenario.delivered):
        kp = Keypoints(
            scenario.noisy[i][None].astype(np.float32),
            scenario.score[i][None],
            LAYOUT,
            Space.IMAGE,
        )
        start = time.perf_counter()
        res = smoother(kp, float(scenario.t[i]))
        times.append(time.perf_counter() - start)
        if res.num_persons:
            out[i] = res.xyz[0]
    return out, float(np.median(times) * 1000.0)


def _stack(tracks: Sequence[F64]) -> F64:
    """Concatenate tracks in time with two NaN frames between them (no differences across)."""
    gap = np.full((2, *tracks[0].shape[1:]), np.nan)
    parts: list[F64] = []
    for track in tracks:
        parts.extend((track, gap))
    return np.concatenate(parts[:-1])


def _usable(scenario: Scenario, threshold: float) -> F64:
    """``noisy`` with unusable samples (dropped frames, low score, NaN) set to NaN."""
    keep = scenario.delivered[:, None] & (scenario.score >= threshold)
    return np.where(keep[..., None], scenario.noisy, np.nan)


def evaluate(
    scenarios: Sequence[Scenario], outputs: Sequence[F64], fps: float, threshold: float
) -> dict[str, float]:
    """Jitter, lag and error of ``outputs`` against the noisy input and the clean tracks."""
    by_name = {s.name: i for i, s in enumerate(scenarios)}
    noisy = [_usable(s, threshold) for s in scenarios]
    keep = [np.isfinite(n) for n in noisy]
    filt = [np.where(k, o, np.nan) for k, o in zip(keep, outputs, strict=True)]
    clean = [s.clean for s in scenarios]
    torso = scenarios[0].torso_px

    def pick(tracks: Sequence[F64], names: Sequence[str]) -> F64:
        return _stack([tracks[by_name[n]] for n in names])

    jit_f = metrics.jitter_rms(pick(filt, JITTER_SCENARIOS), torso)
    jit_n = metrics.jitter_rms(pick(noisy, JITTER_SCENARIOS), torso)
    lag = metrics.lag_ms(pick(filt, LAG_SCENARIOS), pick(clean, LAG_SCENARIOS), 1.0 / fps)
    err_f = metrics.error_rms(_stack(filt), _stack(clean), torso)
    err_n = metrics.error_rms(_stack(noisy), _stack(clean), torso)
    return {
        "jitter_ratio": jit_f / jit_n,
        "lag_ms": lag,
        "err_ratio": err_f / err_n,
        "jitter": jit_f,
        "jitter_noisy": jit_n,
        "err": err_f,
        "err_noisy": err_n,
    }


def _config_for(
    filter_kind: str, preset: str, overrides: dict[str, Any] | None = None
) -> SmoothingConfig:
    config = with_overrides(PRESETS[preset], {"filter": filter_kind, **(overrides or {})})
    return config


def _params(config: SmoothingConfig) -> dict[str, Any]:
    section = {"one_euro": config.one_euro, "kalman": config.kalman, "velocity": config.velocity}
    params: Any = section.get(config.filter)
    out: dict[str, Any] = dataclasses.asdict(params) if params is not None else {}
    out["scale"] = config.scale
    return out


def measure(
    fps_list: Sequence[float], seconds: float, noise: float, seed: int, sweep: bool
) -> list[dict[str, Any]]:
    """Records for every (filter, preset) run and, with ``sweep``, the trade-off curves."""
    default_filter = PRESETS[DEFAULT_PRESET].filter
    records: list[dict[str, Any]] = []
    for fps in fps_list:
        scenarios = make_scenarios(fps, seconds, noise, seed)
        runs: list[tuple[str, str, str, SmoothingConfig]] = [
            ("preset", f, p, _config_for(f, p)) for f, p in PRESET_RUNS
        ]
        if PRESETS[DEFAULT_PRESET].filter == "one_euro":
            for label, overrides in ABLATIONS:
                cfg = _config_for("one_euro", DEFAULT_PRESET, overrides)
                runs.append(("ablation", "one_euro", f"{DEFAULT_PRESET}/{label}", cfg))
        if sweep:
            for beta in ONE_EURO_SWEEP:
                cfg = _config_for("one_euro", DEFAULT_PRESET, {"one_euro.beta": beta})
                runs.append(("sweep", "one_euro", f"beta={beta:g}", cfg))
            for q in KALMAN_SWEEP:
                cfg = _config_for("kalman", DEFAULT_PRESET, {"kalman.process_noise": q})
                runs.append(("sweep", "kalman", f"process_noise={q:g}", cfg))
        for kind, filter_kind, preset, config in runs:
            outputs, ms = [], []
            for scenario in scenarios:
                out, frame_ms = run_smoother(config, scenario)
                outputs.append(out)
                ms.append(frame_ms)
            rec: dict[str, Any] = {
                "filter": filter_kind,
                "preset": preset,
                "fps": fps,
                **evaluate(scenarios, outputs, fps, config.score_threshold),
                "ms_per_frame": float(np.median(ms)),
                "kind": kind,
                "default": kind == "preset"
                and preset == DEFAULT_PRESET
                and filter_kind == default_filter,
                "params": _params(config),
            }
            records.append(rec)
    return records


def beats(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Lower jitter at equal or lower lag, or lower lag at equal or lower jitter."""
    j0, l0 = ours["jitter_ratio"], ours["lag_ms"]
    j1, l1 = theirs["jitter_ratio"], theirs["lag_ms"]
    return bool((j0 < j1 and l0 <= l1) or (l0 < l1 and j0 <= j1))


def compare_default(records: Sequence[dict[str, Any]]) -> list[tuple[float, str, bool, str]]:
    """(fps, mediapipe filter, passed, one-line summary) for each mediapipe record."""
    rows = []
    for fps in sorted({r["fps"] for r in records}):
        ours = [r for r in records if r["fps"] == fps and r["default"]]
        if not ours:
            continue
        d = ours[0]
        for m in records:
            if m["fps"] != fps or m["preset"] != "mediapipe" or m["kind"] != "preset":
                continue
            ok = beats(d, m)
            text = (
                f"{fps:g} fps: {d['filter']}/{d['preset']} jitter {d['jitter_ratio']:.3f} "
                f"lag {d['lag_ms']:.1f} ms  vs  mediapipe {m['filter']} jitter "
                f"{m['jitter_ratio']:.3f} lag {m['lag_ms']:.1f} ms -> "
                f"{'better' if ok else 'NOT better'}"
            )
            rows.append((fps, str(m["filter"]), ok, text))
    return rows


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def _time_calls(call: Callable[[int], object], frames: int, repeats: int) -> tuple[float, float]:
    """Median and interquartile range of the per-call time in ms over ``repeats`` batches."""
    for i in range(50):
        call(i)
    per = []
    base = 50
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(base, base + frames):
            call(i)
        per.append((time.perf_counter() - start) / frames * 1000.0)
        base += frames
    q1, med, q3 = np.percentile(per, [25, 50, 75])
    return float(med), float(q3 - q1)


def timings(frames: int = 2000, repeats: int = 7, seed: int = 0) -> list[dict[str, Any]]:
    """Per-frame cost of each raw filter on (1, 33, 3), the quaternion filter on 55 bones and the
    default :class:`KeypointSmoother` on one BlazePose-33 person."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(frames + 50 + frames * repeats, 1, 33, 3))
    filters: list[tuple[str, SmoothingFilter]] = [
        ("none", NoOpFilter()),
        ("one_euro", OneEuroFilter(1.0, 0.5, 1.0)),
        ("kalman_cv", KalmanFilter(model="constant_velocity")),
        ("kalman_ca", KalmanFilter(model="constant_acceleration")),
        ("velocity", VelocityFilter()),
    ]
    rows: list[dict[str, Any]] = []
    for name, filt in filters:

        def call(i: int, f: SmoothingFilter = filt) -> object:
            return f(x[i], i / 60.0)

        med, iqr = _time_calls(call, frames, repeats)
        rows.append(
            {"what": f"{name} (1,33,3)", "ms_median": med, "ms_iqr": iqr, "target_ms": 0.05}
        )
    q = rng.normal(size=(frames + 50 + frames * repeats, 55, 4))
    qf = QuaternionOneEuroFilter()
    med, iqr = _time_calls(lambda i: qf(q[i], i / 60.0), frames, repeats)
    rows.append(
        {"what": "quaternion one_euro (55,4)", "ms_median": med, "ms_iqr": iqr, "target_ms": 0.05}
    )
    smoother = KeypointSmoother(PRESETS[DEFAULT_PRESET])
    kp = [
        Keypoints(
            (400 + 100 * x[i]).astype(np.float32), np.ones((1, 33), np.float32), LAYOUT, Space.IMAGE
        )
        for i in range(min(x.shape[0], frames + 50))
    ]
    med, iqr = _time_calls(
        lambda i: smoother(kp[i % len(kp)], i / 60.0), frames, max(3, repeats // 2)
    )
    rows.append(
        {
            "what": f"KeypointSmoother {DEFAULT_PRESET} (1 person)",
            "ms_median": med,
            "ms_iqr": iqr,
            "target_ms": None,
        }
    )
    return rows


# --------------------------------------------------------------------------------------------------
# Report, plot, CLI
# --------------------------------------------------------------------------------------------------


def write_report(
    records: Sequence[dict[str, Any]], timing: Sequence[dict[str, Any]], out: TextIO
) -> None:
    """The human-readable tables."""
    out.write("filter     preset                  fps  jitter_ratio  lag_ms  err_ratio  ms/frame\n")
    for kind in ("preset", "ablation", "sweep"):
        rows = [r for r in records if r["kind"] == kind]
        if not rows:
            continue
        if kind == "ablation":
            out.write(
                f"{DEFAULT_PRESET} with a departure from the reference One-Euro undone "
                "(axis_speed: per-coordinate speed; no_deadband; reference: both):\n"
            )
        if kind == "sweep":
            out.write(f"trade-off curves (sweeps around the {DEFAULT_PRESET} preset):\n")
        for r in rows:
            mark = "  <- default" if r["default"] else ""
            out.write(
                f"{r['filter']:<10} {r['preset']:<22} {r['fps']:>4g}  {r['jitter_ratio']:>12.3f}  "
                f"{r['lag_ms']:>6.1f}  {r['err_ratio']:>9.3f}  {r['ms_per_frame']:>8.3f}{mark}\n"
            )
    out.write("default preset vs MediaPipe's parameters (same code, same data):\n")
    for _, _, _, text in compare_default(records):
        out.write(f"  {text}\n")
    if timing:
        out.write("per-frame cost (median, IQR), ms:\n")
        for row in timing:
            target = row["target_ms"]
            note = f"  target <= {target:g}" if target else ""
            if target:
                note += "  ok" if row["ms_median"] <= target else "  OVER"
            out.write(f"  {row['what']:<38} {row['ms_median']:.4f}  ({row['ms_iqr']:.4f}){note}\n")


def plot(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Jitter ratio against lag, one panel per frame rate, drawn with OpenCV into a PNG."""
    import cv2

    fps_list = sorted({r["fps"] for r in records})
    pw, ph, margin = 520, 420, 60
    img = np.full((ph + 2 * margin, len(fps_list) * (pw + margin) + margin, 3), 255, np.uint8)
    pts = [r for r in records if r["kind"] != "preset" or r["filter"] != "none"]
    lags = [r["lag_ms"] for r in pts if math.isfinite(r["lag_ms"])]
    lag_max = max(10.0, max(lags, default=10.0) * 1.1)
    lag_min = min(0.0, min(lags, default=0.0))
    jit_max = 1.05
    colours = {"one_euro": (200, 90, 30), "kalman": (40, 40, 200), "velocity": (40, 150, 40)}
    font = cv2.FONT_HERSHEY_SIMPLEX
    for p, fps in enumerate(fps_list):
        x0, y0 = margin + p * (pw + margin), margin

        def to_px(lag: float, jit: float, x0: int = x0, y0: int = y0) -> tuple[int, int]:
            u = (lag - lag_min) / (lag_max - lag_min)
            v = min(jit, jit_max) / jit_max
            return int(x0 + u * pw), int(y0 + ph - v * ph)

        cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), (0, 0, 0), 1)
        cv2.putText(img, f"{fps:g} fps", (x0 + 5, y0 - 10), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(
            img, "lag (ms)", (x0 + pw - 80, y0 + ph + 40), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
        cv2.putText(img, "jitter ratio", (x0 + 5, y0 + 15), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for k in range(6):
            lag = lag_min + k * (lag_max - lag_min) / 5
            px = to_px(lag, 0.0)
            cv2.putText(img, f"{lag:.1f}", (px[0] - 10, px[1] + 18), font, 0.4, (0, 0, 0), 1)
            jit = k * jit_max / 5
            py = to_px(lag_min, jit)
            cv2.putText(img, f"{jit:.2f}", (py[0] - 45, py[1] + 4), font, 0.4, (0, 0, 0), 1)
        for name in ("one_euro", "kalman"):
            curve = [
                r
                for r in records
                if r["fps"] == fps
                and r["kind"] == "sweep"
                and r["filter"] == name
                and math.isfinite(r["lag_ms"])
            ]
            line = np.array([to_px(r["lag_ms"], r["jitter_ratio"]) for r in curve], np.int32)
            if len(line) > 1:
                cv2.polylines(img, [line], False, colours[name], 2, cv2.LINE_AA)
        for r in records:
            if r["fps"] != fps or r["kind"] == "sweep" or r["filter"] == "none":
                continue
            if not math.isfinite(r["lag_ms"]):
                continue
            c = to_px(r["lag_ms"], r["jitter_ratio"])
            colour = colours.get(r["filter"], (0, 0, 0))
            if r["preset"] == "mediapipe":
                cv2.drawMarker(img, c, (0, 0, 0), cv2.MARKER_TILTED_CROSS, 12, 2)
            elif r["kind"] == "ablation":
                colour = (120, 120, 120)
                cv2.circle(img, c, 4, colour, 1, cv2.LINE_AA)
            else:
                cv2.circle(img, c, 6 if r["default"] else 4, colour, -1, cv2.LINE_AA)
            label = f"{r['filter']}/{r['preset']}"
            cv2.putText(img, label, (c[0] + 6, c[1] - 6), font, 0.35, colour, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avatarlink bench smoothing``."""
    parser.add_argument("--json", metavar="OUT", type=Path, help="write the records as JSON")
    parser.add_argument("--plot", metavar="OUT.png", type=Path, help="write the trade-off plot")
    parser.add_argument("--fps", type=float, nargs="+", default=[30.0, 60.0], help="frame rates")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each scenario, s")
    parser.add_argument(
        "--noise", type=float, default=0.01, help="keypoint noise std, torso lengths"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-sweep", action="store_true", help="skip the trade-off curves")
    parser.add_argument("--no-timing", action="store_true", help="skip the per-frame timings")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the default preset beats MediaPipe's parameters",
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the benchmark; prints the tables (and writes JSON / PNG when asked)."""
    stream = out if out is not None else sys.stdout
    if args.seconds < 2.0:
        raise ConfigError(f"--seconds must be >= 2 s, got {args.seconds:g}")
    if not args.fps or min(args.fps) <= 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps}")
    if args.noise <= 0:
        raise ConfigError(f"--noise must be > 0 torso lengths, got {args.noise:g}")
    stream.write(
        f"smoothing benchmark: {len(SCENARIOS)} scenarios x {args.seconds:g} s, noise "
        f"{args.noise:g} torso, BlazePose-33, seed {args.seed}\n"
    )
    records = measure(args.fps, args.seconds, args.noise, args.seed, not args.no_sweep)
    timing = [] if args.no_timing else timings()
    write_report(records, timing, stream)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
        stream.write(f"wrote {args.json}\n")
    if args.plot:
        plot(records, args.plot)
        stream.write(f"wrote {args.plot}\n")
    if args.check and not all(ok for _, _, ok, _ in compare_default(records)):
        return 1
    return 0
