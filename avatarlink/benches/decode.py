"""PoseNet decoding study: accuracy and cost per input size and decode method (docs/decoding.md).

For each input size it runs PoseNet on the COCO test photos (person crops from the ground-truth
boxes) and reports, per decode method: PCK@0.2 (box-normalised), mean error in source pixels, model
time, decode time in numpy and inside the graph (fused), and the bytes the runtime hands back. A
synthetic part measures the peak-localisation error of each refinement method on Gaussian heatmaps
with known sub-cell centres.

Timings are medians over crops x repeats of one session (the same session and machine for all
alternatives, so compare ratios); the frame time is the sum of the medians of its steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink.commands.common import add_session_arguments, session_options
from avatarlink.decode import (
    BLAZEPOSE_GRID_ORIGIN,
    BLAZEPOSE_HEATMAP_STRIDE,
    REFINE_METHODS,
    RefineSettings,
    cells_to_pixels,
    decode_heatmaps,
    decode_near,
    decode_posenet,
)
from avatarlink.errors import ConfigError, InputError
from avatarlink.evaluation import PersonAnnotation, bbox_norm, load_coco_people, mean_error_px, pck
from avatarlink.fuse import FUSED_OUTPUT, fused_path
from avatarlink.models.posenet import (
    COMMON_SIZES,
    METHODS,
    STRIDE,
    check_input_size,
    run_bound,
    to_model_input,
)
from avatarlink.models.registry import get_spec, models_dir
from avatarlink.preprocess import Box, Letterbox, letterbox_image
from avatarlink.session import InferenceSession, SessionOptions

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DEFAULT_METHODS = (
    "offsets",
    "none",
    "quadratic",
    "dark",
    "bilinear-x2",
    "bicubic-x2",
    "bicubic-x4",
)
CROP_MARGIN = 1.25
"""Person crop = ground-truth box scaled by this factor about its centre (context for the model)."""
PCK_ALPHA = 0.2
"""PCK threshold as a fraction of the longer side of the ground-truth box."""
ANNOTATIONS = "test_coco.json"

SYNTHETIC_SIZES = (16, 32, 64)
"""Heatmap sizes of the synthetic study (64 = BlazePose's heatmap)."""
SYNTHETIC_NOISE = (0.0, 0.05)
"""Additive Gaussian noise (std, peak height 1) of the synthetic study."""
SYNTHETIC_SIGMA = 1.5
"""Width in cells of the synthetic Gaussian peaks (the DARK blur uses the same)."""

RAW_OUTPUTS = ("heatmap", "offsets")
ALL_OUTPUT_CHANNELS = 17 + 34 + 32 + 32  # heatmap, offsets, displacement fwd and bwd


def project_root() -> Path:
    """The checkout holding the ``avatarlink`` package."""
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``../shared/data/coco`` relative to the project root."""
    return project_root().parent / "shared" / "data" / "coco"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avatarlink bench decode``."""
    parser.add_argument("--model", default="posenet", help="model to study (only: posenet)")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, COMMON_SIZES)),
        help="comma-separated input sizes, each 16*n+1 (default: %(default)s)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated decode methods, of: {', '.join(METHODS)} (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per crop and step")
    parser.add_argument(
        "--crop-margin",
        type=float,
        default=CROP_MARGIN,
        help="person crop = ground-truth box scaled by this about its centre "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--person-scale",
        type=int,
        default=None,
        metavar="SIZE",
        help="letterbox each crop at the scale of a SIZE input, centred on black padding up to "
        "the input size: the person keeps its pixel size while the input grows",
    )
    parser.add_argument(
        "--no-blazepose",
        dest="blazepose",
        action="store_false",
        help="skip the BlazePose 64x64 heatmap part (run when models/blazepose_full.onnx exists)",
    )
    parser.add_argument("--data", type=Path, default=None, help="COCO folder with test_coco.json")
    parser.add_argument("--json", dest="json_out", type=Path, help="write the records here")
    parser.add_argument("--plot", type=Path, help="write a PNG chart here")
    parser.add_argument(
        "--synthetic-trials", type=int, default=400, help="peaks per synthetic configuration"
    )
    add_session_arguments(parser)


@dataclass(frozen=True)
class Crop:
    """One person of the test set: the photo, the region fed to the model, the annotation."""

    image: npt.NDArray[np.uint8]
    region: Box
    person: PersonAnnotation


def person_crops(data: Path, margin: float = CROP_MARGIN) -> list[Crop]:
    """Crops around each annotated person (ground-truth box scaled by ``margin``)."""
    annotations = data / ANNOTATIONS
    if not annotations.is_file():
        raise InputError(
            f"COCO test data not found: {annotations} (expected ../shared/data/coco next to the "
            "project, with test_coco.json and its photos); pass --data DIR"
        )
    crops = []
    for person in load_coco_people(annotations):
        image = cv2.imread(str(person.image))
        if image is None:
            raise InputError(f"cannot read {person.image} (listed in {annotations})")
        b = person.bbox
        w, h = b.w * margin, b.h * margin
        crops.append(Crop(image, Box(b.x + (b.w - w) / 2, b.y + (b.h - h) / 2, w, h), person))
    return crops


def _median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``fn`` in ms over ``repeats`` calls, and its last result."""
    times = []
    result = None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), result


def _run_fused(session: InferenceSession, feed: dict[str, Any]) -> FloatArray:
    return np.asarray(session.run(feed)[FUSED_OUTPUT], np.float32)


def _to_source(yxs: FloatArray, lb: Letterbox) -> FloatArray:
    return lb.to_source(yxs[:, 1::-1])


@dataclass
class _Sessions:
    raw: InferenceSession
    fused: InferenceSession | None
    decode_only: InferenceSession | None


def _open_sessions(raw_path: Path, options: SessionOptions, work: Path) -> _Sessions:
    """Raw model, fused model (shipped, or built here when onnx is installed), decode-only graph."""
    raw = InferenceSession(raw_path, options)
    fused_file = fused_path(raw_path)
    try:
        from avatarlink.fuse import build_fused_model, make_decode_model

        if not fused_file.is_file():
            fused_file = build_fused_model(raw_path, work / fused_file.name).path
            log.warning("%s not shipped: built it for this run", fused_path(raw_path).name)
        decode_file = work / "posenet_decode_only.onnx"
        decode_file.write_bytes(make_decode_model().SerializeToString())
    except ImportError:
        log.warning("the onnx package is not installed: fused decode timings are left out")
        fused = InferenceSession(fused_file, options) if fused_file.is_file() else None
        return _Sessions(raw, fused, None)
    decode_only = InferenceSession(decode_file, options)
    return _Sessions(raw, InferenceSession(fused_file, options), decode_only)


def study_size(
    size: int,
    crops: Sequence[Crop],
    methods: Sequence[str],
    sessions: _Sessions,
    repeats: int,
    refine: RefineSettings,
    person_scale: int | None = None,
) -> list[dict[str, Any]]:
    """One record per method at input ``size`` (see the module docstring).

    With ``person_scale`` the crop is letterboxed into a centred person_scale x person_scale
    square and padded with black to ``size`` (the person's pixel size does not change with size).
    """
    width, height = check_input_size(size)
    preprocess_ms, raw_ms, fused_ms, bound_ms, decode_fused_ms = [], [], [], [], []
    decode_ms: dict[str, list[float]] = {m: [] for m in methods}
    preds: dict[str, list[FloatArray]] = {m: [] for m in methods}
    fused_preds: list[FloatArray] = []
    diffs: list[float] = []
    bytes_raw = bytes_all = 0
    for i, crop in enumerate(crops):

        def prepare(crop: Crop = crop) -> tuple[Any, Letterbox]:
            if person_scale is None or person_scale >= min(width, height):
                rgb, lb = letterbox_image(crop.image, width, height, crop.region)
                return to_model_input(rgb), lb
            inner, lb = letterbox_image(crop.image, person_scale, person_scale, crop.region)
            top, left = (height - person_scale) // 2, (width - person_scale) // 2
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[top : top + person_scale, left : left + person_scale] = inner
            padded = Letterbox(lb.scale, lb.offset_x + left, lb.offset_y + top, width, height)
            return to_model_input(rgb), padded

        t, (batch, lb) = _median_ms(prepare, repeats)
        preprocess_ms.append(t)
        feed = {"image": batch}
        if i == 0:  # first run at a new shape plans memory: keep it out of the timings
            sessions.raw.run(feed, RAW_OUTPUTS)
            if sessions.fused is not None:
                sessions.fused.run(feed)
        t, maps = _median_ms(partial(sessions.raw.run, feed, RAW_OUTPUTS), repeats)
        raw_ms.append(t)
        heatmap, offsets = maps["heatmap"], maps["offsets"]
        bytes_raw = int(heatmap.nbytes + offsets.nbytes)
        bytes_all = int(heatmap.nbytes // 17 * ALL_OUTPUT_CHANNELS)
        for method in methods:
            decode = partial(decode_posenet, heatmap, offsets, method, STRIDE, refine)
            t, yxs = _median_ms(decode, repeats)
            decode_ms[method].append(t)
            preds[method].append(_to_source(yxs, lb))
        if sessions.fused is not None:
            fused = sessions.fused
            t, yxs = _median_ms(partial(_run_fused, fused, feed), repeats)
            fused_ms.append(t)
            fused_preds.append(_to_source(yxs, lb))
            reference = decode_posenet(heatmap, offsets, "offsets")
            diffs.append(float(np.abs(yxs[:, :2] - reference[:, :2]).max()))
            t, _ = _median_ms(partial(run_bound, fused, "image", batch), repeats)
            bound_ms.append(t)
        if sessions.decode_only is not None:
            maps_feed = {"heatmap": heatmap, "offsets": offsets}
            t, _ = _median_ms(partial(sessions.decode_only.run, maps_feed), repeats)
            decode_fused_ms.append(t)

    gt = np.array([c.person.keypoints for c in crops])
    norm = bbox_norm([c.person for c in crops])
    grid = ((height - 1) // STRIDE + 1, (width - 1) // STRIDE + 1)
    prep = statistics.median(preprocess_ms)
    model = statistics.median(raw_ms)
    records = []
    for method in methods:
        pred = np.array(preds[method])
        decode_numpy = statistics.median(decode_ms[method])
        fused_ok = method == "offsets" and sessions.fused is not None
        record: dict[str, Any] = {
            "dataset": "coco",
            "model": "posenet",
            "size": size,
            "grid": list(grid),
            "method": method,
            "persons": len(crops),
            "points": int((gt[..., 2] > 0).sum()),
            "pck": round(pck(pred, gt, norm, PCK_ALPHA), 4),
            "err_px": round(mean_error_px(pred, gt), 2),
            "preprocess_ms": round(prep, 3),
            "model_ms": round(model, 3),
            "decode_numpy_ms": round(decode_numpy, 4),
            "decode_fused_ms": (
                round(statistics.median(decode_fused_ms), 4)
                if fused_ok and decode_fused_ms
                else None
            ),
            "fused_model_ms": round(statistics.median(fused_ms), 3) if fused_ok else None,
            "fused_iobinding_ms": round(statistics.median(bound_ms), 3) if fused_ok else None,
            "frame_ms_numpy": round(prep + model + decode_numpy, 3),
            "frame_ms_fused": (round(prep + statistics.median(fused_ms), 3) if fused_ok else None),
            "bytes_raw": bytes_raw,
            "bytes_raw_all_outputs": bytes_all,
            "bytes_fused": 17 * 3 * 4 if fused_ok else None,
            "max_abs_diff_px": round(max(diffs), 7) if fused_ok else None,
            "pck_fused": (
                round(pck(np.array(fused_preds), gt, norm, PCK_ALPHA), 4) if fused_ok else None
            ),
            "provider": sessions.raw.provider,
        }
        records.append(record)
    return records


BLAZEPOSE_FILE = "blazepose_full.onnx"
BLAZEPOSE_INPUT = 256
NEAR_WINDOW = 5
"""Cells: search window of the regression + heatmap ("near") BlazePose decode."""
NEAR_METHOD = f"near-dark-w{NEAR_WINDOW}"
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
"""BlazePose-33 index of each COCO-17 point, in COCO order."""


def study_blazepose(
    crops: Sequence[Crop], options: SessionOptions, repeats: int, margin: float
) -> list[dict[str, Any]]:
    """BlazePose full's 64 x 64 heatmap, decoded by each refinement method, vs its regression.

    Each person is cropped to a square around the ground-truth box centre (side = ``margin`` x the
    longer box side), so no detector or ROI tracking is involved. Empty when the model is absent.
    """
    path = models_dir() / BLAZEPOSE_FILE
    if not path.is_file():
        log.warning("%s not found: BlazePose heatmap study skipped", path)
        return []
    session = InferenceSession(path, options)
    if not {"landmarks", "heatmap"} <= set(session.output_names):
        log.warning("%s lacks landmarks/heatmap outputs: BlazePose study skipped", path)
        return []
    methods = ("regression", *REFINE_METHODS, NEAR_METHOD)
    preds: dict[str, list[FloatArray]] = {m: [] for m in methods}
    decode_ms: dict[str, list[float]] = {m: [] for m in methods}
    model_ms = []
    index = np.array(BLAZEPOSE_TO_COCO)

    def to_source(yx_cells: FloatArray, lb: Letterbox) -> FloatArray:
        yx = cells_to_pixels(yx_cells[index], BLAZEPOSE_HEATMAP_STRIDE, BLAZEPOSE_GRID_ORIGIN)
        return lb.to_source(np.ascontiguousarray(yx[:, ::-1]))

    for crop in crops:
        b = crop.person.bbox
        side = max(b.w, b.h) * margin
        square = Box(b.x + b.w / 2 - side / 2, b.y + b.h / 2 - side / 2, side, side)
        rgb, lb = letterbox_image(crop.image, BLAZEPOSE_INPUT, BLAZEPOSE_INPUT, square)
        feed = {session.inputs[0].name: rgb[None].astype(np.float32) / np.float32(255.0)}
        t, out = _median_ms(partial(session.run, feed, ("landmarks", "heatmap")), repeats)
        model_ms.append(t)
        landmarks = np.asarray(out["landmarks"], np.float32).reshape(-1, 5)
        preds["regression"].append(lb.to_source(landmarks[index, :2]))
        heatmap = np.asarray(out["heatmap"][0, :, :, :33], np.float32)  # logits
        for method in REFINE_METHODS:
            t, peaks = _median_ms(partial(decode_heatmaps, heatmap, method, "logit"), repeats)
            decode_ms[method].append(t)
            preds[method].append(to_source(peaks.yx, lb))
        # the regressed point (corner px / stride = cells, origin 0) refined in a window
        start = landmarks[:33, 1::-1] / np.float32(BLAZEPOSE_HEATMAP_STRIDE)
        near = partial(decode_near, heatmap, start, NEAR_WINDOW, "dark", "logit")
        t, peaks = _median_ms(near, repeats)
        decode_ms[NEAR_METHOD].append(t)
        preds[NEAR_METHOD].append(to_source(peaks.yx, lb))
    gt = np.array([c.person.keypoints for c in crops])
    norm = bbox_norm([c.person for c in crops])
    return [
        {
            "dataset": "coco",
            "model": "blazepose_full",
            "size": BLAZEPOSE_INPUT,
            "grid": [64, 64],
            "method": method,
            "persons": len(crops),
            "points": int((gt[..., 2] > 0).sum()),
            "pck": round(pck(np.array(preds[method]), gt, norm, PCK_ALPHA), 4),
            "err_px": round(mean_error_px(np.array(preds[method]), gt), 2),
            "model_ms": round(statistics.median(model_ms), 3),
            "decode_numpy_ms": (
                round(statistics.median(decode_ms[method]), 4) if decode_ms[method] else None
            ),
            "crop_margin": margin,
            "provider": session.provider,
        }
        for method in methods
    ]


def synthetic_study(
    trials: int, rng: np.random.Generator, methods: Sequence[str] = REFINE_METHODS
) -> list[dict[str, Any]]:
    """Mean peak error (cells) of each refinement method on Gaussian heatmaps with known centres."""
    records = []
    settings = RefineSettings(dark_sigma=SYNTHETIC_SIGMA)
    for size in SYNTHETIC_SIZES:
        for noise in SYNTHETIC_NOISE:
            centres = rng.uniform(2.0, size - 3.0, size=(trials, 2))
            grid = np.arange(size, dtype=np.float64)
            gy = np.exp(-((grid[:, None] - centres[None, :, 0]) ** 2) / (2 * SYNTHETIC_SIGMA**2))
            gx = np.exp(-((grid[:, None] - centres[None, :, 1]) ** 2) / (2 * SYNTHETIC_SIGMA**2))
            maps = gy[:, None, :] * gx[None, :, :]
            if noise:
                maps = np.clip(maps + rng.normal(0.0, noise, maps.shape), 0.0, None)
            maps32 = maps.astype(np.float32)
            for method in methods:
                t0 = time.perf_counter()
                peaks = decode_heatmaps(maps32, method, "prob", settings)
                ms = (time.perf_counter() - t0) * 1e3
                err = np.linalg.norm(peaks.yx - centres, axis=1)
                records.append(
                    {
                        "dataset": "synthetic",
                        "size": size,
                        "method": method,
                        "noise": noise,
                        "sigma_cells": SYNTHETIC_SIGMA,
                        "trials": trials,
                        "err_cells": round(float(err.mean()), 4),
                        "err_cells_p90": round(float(np.percentile(err, 90)), 4),
                        "decode_ms_per_17": round(ms * 17 / trials, 4),
                    }
                )
    return records


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    return items


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_tables(records: Sequence[dict[str, Any]]) -> None:
    """The study as two plain-text tables on stdout."""
    coco = [r for r in records if r["dataset"] == "coco" and r["model"] == "posenet"]
    if coco:
        print(
            f"PoseNet on COCO person crops ({coco[0]['persons']} persons, {coco[0]['points']} "
            f"labelled points, provider {coco[0]['provider']}); times: median ms"
        )
        head = (
            f"{'size':>5} {'grid':>6} {'method':<12} {'PCK@.2':>7} {'err px':>7} {'model':>7} "
            f"{'dec np':>7} {'dec fus':>7} {'frame np':>8} {'frame fu':>8} {'bytes':>7} "
            f"{'fused':>6} {'diff px':>8}"
        )
        print(head)
        for r in coco:
            print(
                f"{r['size']:>5} {r['grid'][0]:>2}x{r['grid'][1]:<3} {r['method']:<12} "
                f"{_fmt(r['pck'], 3):>7} {_fmt(r['err_px'], 1):>7} {_fmt(r['model_ms']):>7} "
                f"{_fmt(r['decode_numpy_ms'], 3):>7} {_fmt(r['decode_fused_ms'], 3):>7} "
                f"{_fmt(r['frame_ms_numpy']):>8} {_fmt(r['frame_ms_fused']):>8} "
                f"{r['bytes_raw']:>7} {_fmt(r['bytes_fused']):>6} "
                f"{_fmt(r['max_abs_diff_px'], 6):>8}"
            )
    blaze = [r for r in records if r["dataset"] == "coco" and r["model"] == "blazepose_full"]
    if blaze:
        print(
            f"\nBlazePose full, 256 input, 64x64 heatmap (square crops, {blaze[0]['persons']} "
            "persons): regressed landmarks vs heatmap decodes"
        )
        print(f"{'method':<12} {'PCK@.2':>7} {'err px':>7} {'dec np ms':>9}")
        for r in blaze:
            print(
                f"{r['method']:<12} {_fmt(r['pck'], 3):>7} {_fmt(r['err_px'], 1):>7} "
                f"{_fmt(r['decode_numpy_ms'], 3):>9}"
            )
    synthetic = [r for r in records if r["dataset"] == "synthetic"]
    if synthetic:
        methods = list(dict.fromkeys(r["method"] for r in synthetic))
        print(
            f"\nSynthetic Gaussian peaks (sigma {SYNTHETIC_SIGMA} cells, "
            f"{synthetic[0]['trials']} each): mean error in cells"
        )
        print(f"{'size':>5} {'noise':>6} " + " ".join(f"{m:>11}" for m in methods))
        keys = list(dict.fromkeys((r["size"], r["noise"]) for r in synthetic))
        by = {(r["size"], r["noise"], r["method"]): r for r in synthetic}
        for size, noise in keys:
            cells = " ".join(f"{by[(size, noise, m)]['err_cells']:>11.3f}" for m in methods)
            print(f"{size:>5} {noise:>6.2f} {cells}")


# --- chart (OpenCV, so no plotting dependency) -------------------------------------------------

_COLOURS = [
    (180, 119, 31),
    (14, 127, 255),
    (44, 160, 44),
    (40, 39, 214),
    (189, 103, 148),
    (75, 86, 140),
    (194, 119, 227),
    (127, 127, 127),
    (34, 189, 188),
]


def _panel(
    canvas: npt.NDArray[np.uint8],
    origin: tuple[int, int],
    size: tuple[int, int],
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    legend: bool,
) -> None:
    """One line chart inside ``canvas`` at ``origin`` (x, y) of ``size`` (w, h) pixels."""
    x0, y0 = origin
    w, h = size
    left, right, top, bottom = 60, 15, 30, 40
    px0, py0, pw, ph = x0 + left, y0 + top, w - left - right, h - top - bottom
    values = [v for _, ys in series for v in ys if v is not None]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    lo, hi = lo - pad, hi + pad
    xlo, xhi = min(xs), max(xs)
    font = cv2.FONT_HERSHEY_SIMPLEX
    black, grey = (0, 0, 0), (200, 200, 200)

    def to_px(x: float, y: float) -> tuple[int, int]:
        fx = (x - xlo) / (xhi - xlo) if xhi > xlo else 0.5
        return int(px0 + fx * pw), int(py0 + (1 - (y - lo) / (hi - lo)) * ph)

    cv2.putText(canvas, title, (x0 + left, y0 + 20), font, 0.5, black, 1, cv2.LINE_AA)
    for j in range(5):
        y = lo + (hi - lo) * j / 4
        _, py = to_px(xlo, y)
        cv2.line(canvas, (px0, py), (px0 + pw, py), grey, 1)
        label = f"{y:.3g}"
        cv2.putText(canvas, label, (x0 + 5, py + 4), font, 0.38, black, 1, cv2.LINE_AA)
    for x in xs:
        px, _ = to_px(x, lo)
        cv2.line(canvas, (px, py0 + ph), (px, py0 + ph + 4), black, 1)
        cv2.putText(canvas, f"{x:g}", (px - 12, py0 + ph + 18), font, 0.38, black, 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (px0, py0), (px0 + pw, py0 + ph), black, 1)
    cv2.putText(canvas, "input size (px)", (px0 + pw // 2 - 50, y0 + h - 5), font, 0.4, black, 1)
    for idx, (name, ys) in enumerate(series):
        colour = _COLOURS[idx % len(_COLOURS)]
        points = [to_px(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        for a, b in itertools.pairwise(points):
            cv2.line(canvas, a, b, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(canvas, p, 3, colour, -1, cv2.LINE_AA)
        if legend:
            ly = py0 + 14 + 16 * idx
            cv2.line(canvas, (px0 + pw - 130, ly - 4), (px0 + pw - 110, ly - 4), colour, 2)
            cv2.putText(canvas, name, (px0 + pw - 105, ly), font, 0.4, black, 1, cv2.LINE_AA)


def plot(records: Sequence[dict[str, Any]], path: Path) -> None:
    """A 3-panel PNG: PCK@0.2, mean error (source px) and time per frame, against input size."""
    coco = [r for r in records if r["dataset"] == "coco" and r["model"] == "posenet"]
    if not coco:
        raise InputError("nothing to plot: no COCO records")
    sizes = sorted({r["size"] for r in coco})
    methods = list(dict.fromkeys(r["method"] for r in coco))
    by = {(r["size"], r["method"]): r for r in coco}

    def series(key: str, method: str) -> list[float | None]:
        return [by[(s, method)][key] if (s, method) in by else None for s in sizes]

    canvas = np.full((380, 1260, 3), 255, np.uint8)
    panel = (420, 380)
    _panel(canvas, (0, 0), panel, sizes, [(m, series("pck", m)) for m in methods],
           "PCK@0.2 (box-normalised)", legend=True)  # fmt: skip
    _panel(canvas, (420, 0), panel, sizes, [(m, series("err_px", m)) for m in methods],
           "mean error (source px)", legend=False)  # fmt: skip
    timing: list[tuple[str, Sequence[float | None]]] = [
        ("model", series("model_ms", "offsets")),
        ("frame numpy", series("frame_ms_numpy", "offsets")),
    ]
    if any(v is not None for v in series("frame_ms_fused", "offsets")):
        timing.append(("frame fused", series("frame_ms_fused", "offsets")))
    _panel(canvas, (840, 0), panel, sizes, timing, "ms per frame (median)", legend=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise InputError(f"cannot write the plot to {path}")


def run(args: argparse.Namespace) -> int:
    """Run the study; prints the tables, optionally writes JSON and a PNG chart."""
    spec = get_spec(args.model)
    if not spec.adapter.endswith(":PoseNetEstimator"):
        raise ConfigError(
            f"bench decode studies PoseNet only (--model posenet), got {args.model!r}"
        )
    sizes = []
    for text in _parse_list(args.sizes, "sizes"):
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"--sizes: {text!r} is not an integer") from None
        check_input_size(value)
        sizes.append(value)
    methods = _parse_list(args.methods, "methods")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ConfigError(f"--methods: unknown {', '.join(bad)}; valid: {', '.join(METHODS)}")
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    if not args.crop_margin > 0:
        raise ConfigError(f"--crop-margin must be > 0, got {args.crop_margin}")
    crops = person_crops(args.data or default_data_dir(), args.crop_margin)
    refine = RefineSettings()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="avatarlink-decode-") as tmp:
        sessions = _open_sessions(spec.path, session_options(args), Path(tmp))
        for size in sizes:
            log.info("input size %d", size)
            for record in study_size(
                size, crops, methods, sessions, args.repeats, refine, args.person_scale
            ):
                extra = {"crop_margin": args.crop_margin, "person_scale": args.person_scale}
                records.append({**record, **extra})
    if args.blazepose:
        options = session_options(args)
        records.extend(study_blazepose(crops, options, args.repeats, args.crop_margin))
    records.extend(synthetic_study(args.synthetic_trials, np.random.default_rng(0)))
    print_tables(records)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(records, indent=1) + "\n")
    if args.plot:
        plot(records, args.plot)
    return 0
