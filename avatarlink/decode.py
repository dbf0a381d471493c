"""Heatmap decoding in pure numpy: argmax with a fixed tie rule, offsets, sub-pixel refinement.

Layout and coordinates
----------------------
Heatmaps are **channel-last** ``(H, W, K)`` (K keypoints), the layout PoseNet and BlazePose output
(NHWC with the batch axis removed). Offsets follow PoseNet: ``(H, W, 2K)``, the K y offsets first,
then the K x offsets, in model-input pixels.

*Cell coordinates* are continuous heatmap indices with the cell **centres** on integers: cell
(row i, column j) is centred at (y, x) = (i, j). Refined peaks are fractional cell coordinates.

*Model-input pixels* use the corner convention of :mod:`avatarlink.preprocess` (pixel i spans
[i, i + 1), centre i + 0.5). A grid with output stride ``s`` maps cell coordinate c to
``s * c + origin`` pixels:

- PoseNet (input 16 n + 1, stride 16, "aligned corners"): cell i is centred on input pixel *index*
  16 i, i.e. at corner coordinate 16 i + 0.5, so ``origin = 0.5``
  (:data:`POSENET_GRID_ORIGIN`). TF.js PoseNet's ``cell * stride + offset`` is the same formula in
  pixel-index units; the + 0.5 converts it to the corner convention. So a keypoint is at
  ``stride * cell + offset + 0.5`` input pixels.
- BlazePose's 64 x 64 heatmap of its 256 x 256 input (stride 4) agrees with the model's own
  regressed landmarks (corner convention) at ``origin = 0``: cell i is at 4 i pixels
  (:data:`BLAZEPOSE_GRID_ORIGIN`). That is how it was trained, not the geometric centre of the
  cell (4 i + 2); measured on the COCO test photos, the median landmark-minus-heatmap residual is
  below 0.15 px at origin 0 and mediapipe's heatmap refinement uses the same ``col / 64`` mapping.

Tie rule
--------
When several cells share the maximum, the **first in row-major order** wins (smallest row, then
smallest column), the rule of ``numpy.argmax`` on the flattened heatmap. The fused ONNX decoder
(:mod:`avatarlink.fuse`) implements the same rule explicitly. The argmax is taken on the values as
given (logits for PoseNet): a sigmoid cannot change which cell is largest but, in float32, it can
turn distinct large logits into equal 1.0 values, which would create ties the logits do not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink.errors import InputError

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

Activation = Literal["logit", "prob"]
"""Heatmap values: ``logit`` (a sigmoid gives the score) or ``prob`` (already in [0, 1])."""

REFINE_METHODS: tuple[str, ...] = (
    "none",
    "quadratic",
    "dark",
    "bilinear-x2",
    "bilinear-x4",
    "bicubic-x2",
    "bicubic-x4",
)
"""Peak localisation methods for heatmaps:

- ``none``: the argmax cell.
- ``quadratic``: one Newton step on the log-heatmap around the argmax (Taylor expansion with a
  3 x 3 finite-difference gradient and Hessian); exact for a Gaussian peak.
- ``dark``: ``quadratic`` after a Gaussian blur that keeps the peak height (DARK's distribution
  modulation), which makes the log-heatmap smoother under noise.
- ``bilinear-xF`` / ``bicubic-xF``: upsample the heatmap F times (half-pixel sampling, as
  ``cv2.resize``), take the argmax there and map it back to cell coordinates.
"""

POSENET_STRIDE = 16
"""PoseNet's output stride: model-input pixels per heatmap cell."""

POSENET_GRID_ORIGIN = 0.5
"""Corner-convention pixel coordinate of PoseNet's cell 0 centre (cell i is on pixel index 16 i)."""

BLAZEPOSE_HEATMAP_STRIDE = 4
"""BlazePose landmark model: input pixels (256) per heatmap cell (64)."""

BLAZEPOSE_GRID_ORIGIN = 0.0
"""Corner-convention pixel coordinate of BlazePose's heatmap cell 0 (see the module docstring)."""


@dataclass(frozen=True)
class RefineSettings:
    """Tuning of the refinement methods.

    Attributes:
        max_shift: largest refinement step in cells along each axis. For a smooth single peak the
            true maximum lies within half a cell of the argmax cell, so 0.5 loses nothing there and
            bounds the damage a noisy Hessian can do.
        dark_sigma: standard deviation in cells of the ``dark`` method's Gaussian blur; use the
            width of the peaks the model was trained on.
        log_floor: smallest probability taken before the log, so empty cells stay finite.
    """

    max_shift: float = 0.5
    dark_sigma: float = 1.0
    log_floor: float = 1e-10

    def __post_init__(self) -> None:
        if not self.max_shift > 0:
            raise InputError(f"RefineSettings.max_shift must be > 0 cells, got {self.max_shift}")
        if not self.dark_sigma > 0:
            raise InputError(f"RefineSettings.dark_sigma must be > 0 cells, got {self.dark_sigma}")
        if not self.log_floor > 0:
            raise InputError(f"RefineSettings.log_floor must be > 0, got {self.log_floor}")


@dataclass(frozen=True)
class Peaks:
    """One peak per keypoint channel.

    Attributes:
        yx: float32 (K, 2) peak position (y, x) in cell coordinates (refined where asked).
        cell: int64 (K, 2) the argmax cell (row, column) of the heatmap as given.
        score: float32 (K,) heatmap value at the argmax cell, as a probability in [0, 1]
            (sigmoid of the logit for ``activation="logit"``).
    """

    yx: FloatArray
    cell: IntArray
    score: FloatArray


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """Logistic function in float32, overflow-free for large negative logits."""
    v = np.asarray(x, np.float32)
    out: FloatArray = np.exp(-np.logaddexp(np.float32(0.0), -v)).astype(np.float32)
    return out


def check_heatmaps(heatmaps: object, name: str = "heatmaps") -> FloatArray:
    """Validate (H, W, K) heatmaps with H, W >= 1 and return them as float32."""
    arr = np.asarray(heatmaps)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise InputError(f"{name} must be (H, W, K) channel-last, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name} must be floating point, got dtype {arr.dtype}")
    out: FloatArray = arr.astype(np.float32, copy=False)
    return out


def argmax_cells(heatmaps: FloatArray) -> tuple[IntArray, FloatArray]:
    """Per-channel argmax with the module's tie rule (first cell in row-major order).

    Args:
        heatmaps: float (H, W, K).

    Returns:
        ``cell`` int64 (K, 2) (row, column) and ``value`` float32 (K,) the heatmap value there.
    """
    hm = check_heatmaps(heatmaps)
    h, w, k = hm.shape
    flat = hm.reshape(h * w, k)
    index = np.argmax(flat, axis=0)
    value = flat[index, np.arange(k)]
    cell = np.stack([index // w, index % w], axis=1).astype(np.int64)
    return cell, value.astype(np.float32)


def _scores(value: FloatArray, activation: Activation) -> FloatArray:
    if activation == "logit":
        return sigmoid(value)
    if activation == "prob":
        return value.astype(np.float32)
    raise InputError(f"activation must be 'logit' or 'prob', got {activation!r}")


def _log_probability(values: FloatArray, activation: Activation, floor: float) -> FloatArray:
    """log p of heatmap values: log-sigmoid for logits, log(max(v, floor)) for probabilities."""
    if activation == "logit":
        out: FloatArray = (-np.logaddexp(np.float32(0.0), -values)).astype(np.float32)
        return out
    logp: FloatArray = np.log(np.maximum(values, np.float32(floor))).astype(np.float32)
    return logp


def _neighbourhoods(field: FloatArray, cell: IntArray) -> FloatArray:
    """The 3 x 3 values around each channel's cell, (3, 3, K); edges replicated."""
    h, w, k = field.shape
    rows = np.clip(cell[:, 0][None, :] + np.arange(-1, 2)[:, None], 0, h - 1)  # (3, K)
    cols = np.clip(cell[:, 1][None, :] + np.arange(-1, 2)[:, None], 0, w - 1)  # (3, K)
    channel = np.arange(k)
    out: FloatArray = field[rows[:, None, :], cols[None, :, :], channel[None, None, :]]
    return out


def quadratic_offsets(log_heatmaps: FloatArray, cell: IntArray, max_shift: float) -> FloatArray:
    """Sub-cell step (dy, dx) from one Newton step on ``log_heatmaps`` at ``cell``.

    The log of a Gaussian is a quadratic, so ``-Hessian^-1 @ gradient`` (central differences on the
    3 x 3 neighbourhood) lands exactly on a Gaussian's centre. Where the 2 x 2 Hessian is not
    negative definite, each axis takes its own 1D step when its curvature is negative, else none.
    Axes where the cell touches the heatmap border get no step (one-sided data).

    Args:
        log_heatmaps: float32 (H, W, K) log-probabilities (or any log of a peaked map).
        cell: int64 (K, 2) argmax cells (row, column).
        max_shift: clip of the step in cells, per axis.

    Returns:
        float32 (K, 2) steps (dy, dx) in cells, within [-max_shift, max_shift].
    """
    h, w, _ = log_heatmaps.shape
    return _newton_step(_neighbourhoods(log_heatmaps, cell), cell, (h, w), max_shift)


def _newton_step(
    logn: FloatArray, cell: IntArray, shape: tuple[int, int], max_shift: float
) -> FloatArray:
    """:func:`quadratic_offsets` on (3, 3, K) log-neighbourhoods of ``cell`` in an (H, W) map."""
    h, w = shape
    n = logn.astype(np.float64)  # (3, 3, K): [row, col, k]
    gy = (n[2, 1] - n[0, 1]) / 2.0
    gx = (n[1, 2] - n[1, 0]) / 2.0
    hyy = n[2, 1] - 2.0 * n[1, 1] + n[0, 1]
    hxx = n[1, 2] - 2.0 * n[1, 1] + n[1, 0]
    hxy = (n[2, 2] - n[2, 0] - n[0, 2] + n[0, 0]) / 4.0
    det = hyy * hxx - hxy * hxy
    full = (hyy < 0) & (det > 0)
    safe_det = np.where(full, det, 1.0)
    # -H^-1 g with H = [[hyy, hxy], [hxy, hxx]]
    dy_full = -(hxx * gy - hxy * gx) / safe_det
    dx_full = -(-hxy * gy + hyy * gx) / safe_det
    dy_axis = np.where(hyy < 0, -gy / np.where(hyy < 0, hyy, -1.0), 0.0)
    dx_axis = np.where(hxx < 0, -gx / np.where(hxx < 0, hxx, -1.0), 0.0)
    dy = np.where(full, dy_full, dy_axis)
    dx = np.where(full, dx_full, dx_axis)
    inner_y = (cell[:, 0] > 0) & (cell[:, 0] < h - 1)
    inner_x = (cell[:, 1] > 0) & (cell[:, 1] < w - 1)
    step = np.stack([np.where(inner_y, dy, 0.0), np.where(inner_x, dx, 0.0)], axis=1)
    step = np.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
    out: FloatArray = np.clip(step, -max_shift, max_shift).astype(np.float32)
    return out


_CV_MAX_CHANNELS = 128
"""Most channels one OpenCV call takes (CV_CN_MAX is 128 in OpenCV 5, 512 in 4.x)."""


def _per_channel_block(func: Callable[[FloatArray], FloatArray], maps: FloatArray) -> FloatArray:
    """Apply an OpenCV image function to (H, W, K) maps in blocks of at most 128 channels."""
    blocks = []
    for start in range(0, maps.shape[2], _CV_MAX_CHANNELS):
        part = np.ascontiguousarray(maps[:, :, start : start + _CV_MAX_CHANNELS])
        out = func(part)
        blocks.append(out.reshape(out.shape[0], out.shape[1], part.shape[2]))
    result: FloatArray = np.concatenate(blocks, axis=2).astype(np.float32, copy=False)
    return result


def _modulate(prob: FloatArray, sigma: float) -> FloatArray:
    """DARK's distribution modulation: Gaussian blur, rescaled to keep each channel's maximum."""
    blurred = _per_channel_block(
        lambda m: cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, sigmaY=sigma), prob
    )
    peak = prob.reshape(-1, prob.shape[2]).max(axis=0)
    bpeak = blurred.reshape(-1, prob.shape[2]).max(axis=0)
    scale = np.where(bpeak > 0, peak / np.where(bpeak > 0, bpeak, 1.0), 1.0)
    out: FloatArray = (blurred * scale).astype(np.float32)
    return out


def refine_peaks(
    heatmaps: FloatArray,
    cell: IntArray,
    method: str = "quadratic",
    activation: Activation = "logit",
    settings: RefineSettings | None = None,
) -> FloatArray:
    """Sub-cell peak positions around given argmax cells (the ``quadratic``/``dark`` methods).

    Args:
        heatmaps: float (H, W, K) logits or probabilities (see ``activation``).
        cell: int64 (K, 2) argmax cells (row, column), e.g. from :func:`argmax_cells`.
        method: ``none``, ``quadratic`` or ``dark`` (the upsampling methods need the whole map:
            use :func:`decode_heatmaps`).
        activation: ``logit`` or ``prob``.
        settings: step clip, DARK blur width and log floor.

    Returns:
        float32 (K, 2) peak (y, x) in cell coordinates.
    """
    hm = check_heatmaps(heatmaps)
    cfg = settings or RefineSettings()
    base = cell.astype(np.float32)
    if method == "none":
        return base
    if method == "quadratic":  # only the 3 x 3 values around each peak need their log
        logn = _log_probability(_neighbourhoods(hm, cell), activation, cfg.log_floor)
    elif method == "dark":
        modulated = _modulate(_scores(hm, activation), cfg.dark_sigma)
        logn = _log_probability(_neighbourhoods(modulated, cell), "prob", cfg.log_floor)
    else:
        raise InputError(f"refine_peaks method must be none, quadratic or dark, got {method!r}")
    out: FloatArray = base + _newton_step(logn, cell, hm.shape[:2], cfg.max_shift)
    return out


def decode_near(
    heatmaps: FloatArray,
    yx: npt.ArrayLike,
    window: int = 7,
    method: str = "quadratic",
    activation: Activation = "logit",
    settings: RefineSettings | None = None,
) -> Peaks:
    """Peaks searched only in a window around given positions, then refined.

    For models that regress a point and also output a heatmap (BlazePose): the heatmap then
    corrects the point locally and cannot jump to another limb's peak, the failure of a global
    argmax. Within the window the tie rule of :func:`argmax_cells` applies.

    Args:
        heatmaps: float (H, W, K).
        yx: float (K, 2) initial positions (y, x) in cell coordinates; NaN rows are returned as
            NaN with score 0.
        window: side of the square search window in cells (odd).
        method: ``none``, ``quadratic`` or ``dark`` (see :func:`refine_peaks`).
        activation: ``logit`` or ``prob``.
        settings: refinement tuning.
    """
    hm = check_heatmaps(heatmaps)
    if window < 1 or window % 2 == 0:
        raise InputError(f"decode_near window must be an odd number of cells >= 1, got {window}")
    h, w, k = hm.shape
    init = np.asarray(yx, np.float64).reshape(k, 2)
    known = np.all(np.isfinite(init), axis=1)
    centre = np.clip(np.round(np.nan_to_num(init)), 0, [h - 1, w - 1]).astype(np.int64)
    half = window // 2
    inside = (np.abs(np.arange(h)[:, None] - centre[None, :, 0]) <= half)[:, None, :] & (
        np.abs(np.arange(w)[:, None] - centre[None, :, 1]) <= half
    )[None, :, :]  # (H, W, K)
    masked = np.where(inside, hm, -np.inf).astype(np.float32)
    cell, value = argmax_cells(masked)
    yx_out = refine_peaks(hm, cell, method, activation, settings)
    score = np.where(known, _scores(value, activation), 0.0).astype(np.float32)
    yx_out = np.where(known[:, None], yx_out, np.nan).astype(np.float32)
    return Peaks(yx_out, cell, score)


def parse_upsampling(method: str) -> tuple[int, int] | None:
    """``(cv2 interpolation flag, factor)`` of ``bilinear-xF``/``bicubic-xF``, else None."""
    kind, sep, factor = method.partition("-x")
    flags = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
    if not sep or kind not in flags or not factor.isdigit() or int(factor) < 1:
        return None
    return flags[kind], int(factor)


def upsample_heatmaps(heatmaps: FloatArray, factor: int, interpolation: int) -> FloatArray:
    """Resize (H, W, K) heatmaps to (factor H, factor W, K) with half-pixel sampling.

    Output index u samples cell coordinate ``(u + 0.5) / factor - 0.5`` (``cv2.resize``'s grid);
    :func:`decode_heatmaps` maps peaks back with that formula.
    """
    hm = check_heatmaps(heatmaps)
    h, w, _ = hm.shape
    return _per_channel_block(
        lambda m: cv2.resize(m, (w * factor, h * factor), interpolation=interpolation), hm
    )


def decode_heatmaps(
    heatmaps: FloatArray,
    method: str = "none",
    activation: Activation = "logit",
    settings: RefineSettings | None = None,
) -> Peaks:
    """Locate one peak per channel with any method of :data:`REFINE_METHODS`.

    Args:
        heatmaps: float (H, W, K) logits or probabilities (see ``activation``).
        method: one of :data:`REFINE_METHODS`.
        activation: ``logit`` or ``prob``.
        settings: refinement tuning.

    Returns:
        :class:`Peaks` in cell coordinates; ``score`` always comes from the heatmap as given.
    """
    hm = check_heatmaps(heatmaps)
    cell, value = argmax_cells(hm)
    score = _scores(value, activation)
    if method in ("none", "quadratic", "dark"):
        yx = refine_peaks(hm, cell, method, activation, settings)
        return Peaks(yx, cell, score)
    upsampling = parse_upsampling(method)
    if upsampling is None:
        raise InputError(f"unknown heatmap method {method!r}; valid: {', '.join(REFINE_METHODS)}")
    interpolation, factor = upsampling
    up_cell, _ = argmax_cells(upsample_heatmaps(hm, factor, interpolation))
    yx = ((up_cell.astype(np.float32) + np.float32(0.5)) / np.float32(factor)) - np.float32(0.5)
    return Peaks(yx.astype(np.float32), cell, score)


def cells_to_pixels(yx: FloatArray, stride: float, origin: float) -> FloatArray:
    """Cell coordinates (..., 2) to model-input pixels (corner convention): stride * c + origin."""
    out: FloatArray = (yx * np.float32(stride) + np.float32(origin)).astype(np.float32)
    return out


def check_posenet_outputs(heatmap: object, offsets: object) -> tuple[FloatArray, FloatArray]:
    """Validate PoseNet heatmap (H, W, K) and offsets (H, W, 2K); batch axis of 1 allowed."""
    hm = np.asarray(heatmap)
    off = np.asarray(offsets)
    if hm.ndim == 4 and hm.shape[0] == 1:
        hm = hm[0]
    if off.ndim == 4 and off.shape[0] == 1:
        off = off[0]
    hm = check_heatmaps(hm, "heatmap")
    expected = (*hm.shape[:2], 2 * hm.shape[2])
    if off.shape != expected:
        raise InputError(
            f"offsets must be (H, W, 2K) = {expected} for heatmap {hm.shape}, got {off.shape}"
        )
    return hm, off.astype(np.float32, copy=False)


def decode_offsets(
    heatmap: FloatArray,
    offsets: FloatArray,
    stride: float = POSENET_STRIDE,
    origin: float = POSENET_GRID_ORIGIN,
) -> FloatArray:
    """PoseNet single-pose decode: argmax cell plus the offset vector stored at that cell.

    Computes, in float32 and in this order (the fused ONNX decoder uses the same order so the two
    agree to rounding): ``y = (row * stride + dy) + origin``, ``x = (col * stride + dx) + origin``.

    Args:
        heatmap: float (H, W, K) logits (or (1, H, W, K)).
        offsets: float (H, W, 2K) dy for the K points, then dx, in model-input pixels.
        stride: model-input pixels per cell.
        origin: corner-convention pixel coordinate of cell 0's centre.

    Returns:
        float32 (K, 3): y, x in model-input pixels (corner convention) and the sigmoid score.
    """
    hm, off = check_posenet_outputs(heatmap, offsets)
    h, w, k = hm.shape
    cell, value = argmax_cells(hm)
    index = cell[:, 0] * w + cell[:, 1]
    flat = off.reshape(h * w, 2 * k)
    channel = np.arange(k)
    dy = flat[index, channel]
    dx = flat[index, k + channel]
    s = np.float32(stride)
    y = (cell[:, 0].astype(np.float32) * s + dy) + np.float32(origin)
    x = (cell[:, 1].astype(np.float32) * s + dx) + np.float32(origin)
    return np.stack([y, x, sigmoid(value)], axis=1).astype(np.float32)


def decode_posenet(
    heatmap: FloatArray,
    offsets: FloatArray | None,
    method: str = "offsets",
    stride: float = POSENET_STRIDE,
    settings: RefineSettings | None = None,
) -> FloatArray:
    """PoseNet single-pose keypoints with or without offsets.

    Args:
        heatmap: float (H, W, K) logits (or (1, H, W, K)).
        offsets: float (H, W, 2K) or None; needed only for ``method="offsets"``.
        method: ``offsets`` (argmax + offset vector, PoseNet's own decode) or any of
            :data:`REFINE_METHODS` (heatmap only).
        stride: model-input pixels per cell.
        settings: refinement tuning.

    Returns:
        float32 (K, 3): y, x in model-input pixels (corner convention), score in [0, 1].
    """
    if method == "offsets":
        if offsets is None:
            raise InputError("decode method 'offsets' needs the offsets output")
        return decode_offsets(heatmap, offsets, stride)
    hm = np.asarray(heatmap)
    if hm.ndim == 4 and hm.shape[0] == 1:
        hm = hm[0]
    peaks = decode_heatmaps(hm, method, "logit", settings)
    yx = cells_to_pixels(peaks.yx, stride, POSENET_GRID_ORIGIN)
    return np.concatenate([yx, peaks.score[:, None]], axis=1).astype(np.float32)
