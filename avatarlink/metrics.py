"""Measures of temporal smoothing quality: jitter, lag and error to a reference track.

Plain numpy, reusable by tests and benchmarks. Conventions shared by every function here:

- Tracks are arrays ``(T, ..., D)``: time on axis 0 (uniformly sampled frames), coordinates on the
  last axis (D = 2 or 3), anything in between (persons, keypoints) is kept apart or pooled as each
  function says.
- Missing samples are NaN; they are left out of every sum (a NaN never poisons a result).
- ``scale`` normalises lengths (typically the torso length of the person, in the track's units) so
  numbers are comparable between people near and far from the camera; it broadcasts against
  ``x.shape[:-1]`` (a scalar, ``(T, 1)``, ``(T, P, 1)``...).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from avatarlink.skeletons import KeypointLayout

F64 = npt.NDArray[np.float64]

__all__ = [
    "bbox_diagonal",
    "bbox_mean_side",
    "error",
    "error_rms",
    "jitter",
    "jitter_rms",
    "lag_ms",
    "second_difference",
    "torso_length",
]


def _as_track(x: npt.ArrayLike) -> F64:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"a track must be (T, ..., D), got shape {arr.shape}")
    return arr


def _norm_scale(scale: npt.ArrayLike | None, shape: tuple[int, ...]) -> F64:
    """``scale`` broadcast to ``shape`` (the track shape without D); 1 when None."""
    if scale is None:
        return np.ones(shape, np.float64)
    return np.broadcast_to(np.asarray(scale, dtype=np.float64), shape)


def second_difference(x: npt.ArrayLike) -> F64:
    """``x[t+1] - 2 x[t] + x[t-1]`` along axis 0: shape ``(T-2, ...)``; NaN where an input is."""
    arr = _as_track(x)
    return np.asarray(arr[2:] - 2.0 * arr[1:-1] + arr[:-2], dtype=np.float64)


def jitter(x: npt.ArrayLike, scale: npt.ArrayLike | None = None) -> F64:
    """Jitter per track element: RMS over time of the norm of the second difference, / ``scale``.

    Args:
        x: ``(T, ..., D)`` positions, uniformly sampled.
        scale: lengths broadcasting to ``(T, ...)`` (e.g. torso length per frame); the value at the
            middle frame of each second difference is used.

    Returns:
        ``(...)`` jitter in ``scale`` units per frame² (NaN where fewer than one valid triple).
        Depends on the frame rate: compare filters at equal frame rates (ratios).
    """
    arr = _as_track(x)
    s = _norm_scale(scale, arr.shape[:-1])[1:-1]
    d2 = np.linalg.norm(second_difference(arr), axis=-1) / s
    return _nan_rms(d2, axis=0)


def jitter_rms(x: npt.ArrayLike, scale: npt.ArrayLike | None = None) -> float:
    """One jitter number for a whole track: RMS over every valid frame and element (see jitter)."""
    arr = _as_track(x)
    s = _norm_scale(scale, arr.shape[:-1])[1:-1]
    d2 = np.linalg.norm(second_difference(arr), axis=-1) / s
    return float(_nan_rms(d2.reshape(-1), axis=0))


def error(x: npt.ArrayLike, reference: npt.ArrayLike, scale: npt.ArrayLike | None = None) -> F64:
    """RMS over time of the Euclidean distance to ``reference``, / ``scale``: shape ``(...)``."""
    arr, ref = _as_track(x), _as_track(reference)
    if arr.shape != ref.shape:
        raise ValueError(f"track shapes differ: {arr.shape} vs reference {ref.shape}")
    d = np.linalg.norm(arr - ref, axis=-1) / _norm_scale(scale, arr.shape[:-1])
    return _nan_rms(d, axis=0)


def error_rms(
    x: npt.ArrayLike, reference: npt.ArrayLike, scale: npt.ArrayLike | None = None
) -> float:
    """One error number for a whole track: RMS distance over every valid frame and element."""
    arr, ref = _as_track(x), _as_track(reference)
    if arr.shape != ref.shape:
        raise ValueError(f"track shapes differ: {arr.shape} vs reference {ref.shape}")
    d = np.linalg.norm(arr - ref, axis=-1) / _norm_scale(scale, arr.shape[:-1])
    return float(_nan_rms(d.reshape(-1), axis=0))


def lag_ms(
    x: npt.ArrayLike,
    reference: npt.ArrayLike,
    frame_s: float,
    max_lag_s: float = 0.5,
) -> float:
    """Delay of ``x`` behind ``reference`` in milliseconds, with sub-frame resolution.

    The delay is the shift that maximises the cross-correlation between the two *velocities*
    (first differences), pooled over every element and coordinate; the peak is refined by a
    parabola through the best shift and its two neighbours. Velocities are used rather than
    positions so that still parts and offsets do not dominate.

    Each shift's correlation is the mean product over the sample pairs valid at that shift
    (NaN gaps are skipped, and neither a zero shift nor short overlaps are favoured). A periodic
    motion correlates again one period away; of the peaks within ``PEAK_TOLERANCE`` of the
    highest, the one nearest to zero is taken.

    Args:
        x: ``(T, ..., D)`` filtered track.
        reference: same shape: the clean track (or the unfiltered input).
        frame_s: sampling period in seconds (uniform).
        max_lag_s: the largest delay searched, either way.

    Returns:
        Lag in ms; positive when ``x`` trails ``reference``. NaN when there is no motion to
        correlate (e.g. a still hold).
    """
    arr, ref = _as_track(x), _as_track(reference)
    if arr.shape != ref.shape:
        raise ValueError(f"track shapes differ: {arr.shape} vs reference {ref.shape}")
    if frame_s <= 0:
        raise ValueError(f"frame_s must be > 0 s, got {frame_s}")
    vx = np.diff(arr, axis=0).reshape(arr.shape[0] - 1, -1)
    vr = np.diff(ref, axis=0).reshape(ref.shape[0] - 1, -1)
    mx, mr = np.isfinite(vx), np.isfinite(vr)
    vx = np.where(mx, vx, 0.0)
    vr = np.where(mr, vr, 0.0)
    fx, fr = mx.astype(np.float64), mr.astype(np.float64)
    n = vx.shape[0]
    max_lag = min(round(max_lag_s / frame_s), n - 2)
    if max_lag < 1 or not np.any(vr) or not np.any(vx):
        return float("nan")
    shifts = np.arange(-max_lag, max_lag + 1)
    corr = np.full(shifts.size, -np.inf)
    for i, s in enumerate(shifts):
        # x[t + s] against reference[t]: a positive s means x trails the reference.
        a, b = (slice(s, n), slice(0, n - s)) if s >= 0 else (slice(0, n + s), slice(-s, n))
        pairs = np.vdot(fx[a], fr[b])
        if pairs > 0:
            corr[i] = np.vdot(vx[a], vr[b]) / pairs
    if not np.isfinite(corr).any():
        return float("nan")
    best = _nearest_peak(corr, shifts)
    frac = 0.0
    if 0 < best < corr.size - 1:
        c_m, c_0, c_p = corr[best - 1], corr[best], corr[best + 1]
        denom = c_m - 2.0 * c_0 + c_p
        if denom < 0 and np.isfinite(denom):
            frac = float(0.5 * (c_m - c_p) / denom)
    return float((shifts[best] + frac) * frame_s * 1000.0)


# Peaks of the cross-correlation this close (relative) to the highest count as equally good.
PEAK_TOLERANCE = 0.1


def _nearest_peak(corr: F64, shifts: npt.NDArray[np.int64]) -> int:
    """Index of the local maximum nearest to shift 0 among those within PEAK_TOLERANCE of the
    highest (the global maximum when no interior local maximum exists)."""
    top = int(np.argmax(corr))
    inner = corr[1:-1]
    is_peak = (inner >= corr[:-2]) & (inner >= corr[2:])
    peaks = np.flatnonzero(is_peak) + 1
    good = peaks[corr[peaks] >= corr[top] - PEAK_TOLERANCE * abs(corr[top])]
    if good.size == 0:
        return top
    return int(good[np.argmin(np.abs(shifts[good]))])


def torso_length(xyz: npt.ArrayLike, layout: KeypointLayout, dims: int = 2) -> F64:
    """Distance from the shoulder mid-point to the hip mid-point.

    Args:
        xyz: ``(..., K, D)`` keypoints of ``layout``; NaN where missing.
        layout: the keypoint set (gives the shoulder and hip indices).
        dims: how many leading coordinates to use (2 for image space, where z is a model-relative
            depth; 3 for world space).

    Returns:
        ``(...)`` lengths in the units of ``xyz``; NaN where a shoulder or a hip is missing.
    """
    arr = np.asarray(xyz, dtype=np.float64)[..., :dims]
    ls, rs = layout.index("left_shoulder"), layout.index("right_shoulder")
    lh, rh = layout.index("left_hip"), layout.index("right_hip")
    shoulders = 0.5 * (arr[..., ls, :] + arr[..., rs, :])
    hips = 0.5 * (arr[..., lh, :] + arr[..., rh, :])
    return np.asarray(np.linalg.norm(shoulders - hips, axis=-1), dtype=np.float64)


def _bbox_sides(xyz: npt.ArrayLike) -> tuple[F64, F64]:
    """Width and height ``(...)`` of the x-y box of the finite points of ``(..., K, D)``."""
    arr = np.asarray(xyz, dtype=np.float64)[..., :2]
    finite = np.isfinite(arr).all(axis=-1, keepdims=True)
    lo = np.where(finite, arr, np.inf).min(axis=-2)
    hi = np.where(finite, arr, -np.inf).max(axis=-2)
    side = hi - lo
    side = np.where(np.isfinite(side), side, np.nan)
    return side[..., 0], side[..., 1]


def bbox_diagonal(xyz: npt.ArrayLike) -> F64:
    """Diagonal ``(...)`` of the x-y box of the finite keypoints ``(..., K, D)``; NaN when none."""
    w, h = _bbox_sides(xyz)
    return np.asarray(np.hypot(w, h), dtype=np.float64)


def bbox_mean_side(xyz: npt.ArrayLike) -> F64:
    """``(width + height) / 2`` of the x-y box of the finite keypoints (MediaPipe's scale)."""
    w, h = _bbox_sides(xyz)
    return np.asarray(0.5 * (w + h), dtype=np.float64)


def _nan_rms(values: F64, axis: int) -> F64:
    """RMS along ``axis`` ignoring NaN (NaN where nothing is valid), without warnings."""
    ok = np.isfinite(values)
    count = ok.sum(axis=axis)
    total = np.where(ok, values * values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.sqrt(total / count), dtype=np.float64)
