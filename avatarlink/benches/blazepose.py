"""BlazePose per-stage timing (tracking vs detection every frame) and COCO accuracy.

Timing: a synthetic video built from one photo (the person sways, walks out of the frame, is
gone for a while, walks back in) runs through the estimator twice: with ROI tracking (the
detector runs only when the track is lost) and with the detector on every frame. Per stage
(``preprocess``, ``detector``, ``landmark``, ``postprocess``) it reports the median and 90th
percentile in ms over the frames of each kind, the non-model work (preprocess + postprocess), the
frame rate and the detector run count. MediaPipe's own Python Pose, measured on the reference
machine, is the bar: 60 fps (full) and 1.8-4.2 ms of non-model work per frame; the target is at
least 1.5 x that frame rate and at most 1 ms of non-model work.

Accuracy (``--data``, default ``../shared/data/coco``): on the annotated COCO people, with the
detector over the whole photo (up to ``--max-persons`` people) and with the ground-truth box as
the person region: detector recall, PCK@0.2 of the 17 COCO-mappable points (normalised by the
longer side of the ground-truth box) and OKS AP. MediaPipe Pose full scored AP 0.550 and PCK@0.2
0.840 with ground-truth-box crops.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink.commands.common import add_session_arguments, session_options
from avatarlink.errors import InputError
from avatarlink.evaluation import (
    PersonAnnotation,
    average_precision,
    bbox_norm,
    load_coco_people,
    mean_error_px,
    oks,
    pck,
)
from avatarlink.models.blazepose import BlazePoseConfig, BlazePoseEstimator
from avatarlink.models.registry import get_spec
from avatarlink.roi import box_iou
from avatarlink.skeletons import blazepose_to_coco_indices
from avatarlink.sources import SAMPLE_IMAGE, read_image
from avatarlink.types import ImageArray

log = logging.getLogger(__name__)

STAGES = ("preprocess", "detector", "landmark", "postprocess")
MEDIAPIPE_FULL_FPS = 60.0
"""MediaPipe Python Pose (full), one core, on the reference machine (frames per second)."""
MEDIAPIPE_NON_MODEL_MS = (1.8, 4.2)
"""MediaPipe Python Pose: per-frame work outside the models on the reference machine, ms."""
TARGET_SPEEDUP = 1.5
TARGET_NON_MODEL_MS = 1.0
MEDIAPIPE_GT_BOX = {"ap": 0.550, "pck": 0.840}
"""MediaPipe Pose full on the same people with ground-truth-box crops (reference measurement)."""
MEDIAPIPE_SAME_PROTOCOL = {"ap": 0.503, "pck": 0.873}
"""MediaPipe 0.10.14 Pose full (static images) on crops of the same boxes enlarged 1.25x (this
module's ``region_margin``), scored by this module's code: the same protocol as ``gt_box``."""
PCK_ALPHA = 0.2
RECALL_IOU = 0.5
"""A ground-truth person counts as found when a predicted person's keypoint box overlaps its
ground-truth box by at least this IoU (one-to-one, best first)."""
ANNOTATIONS = "test_coco.json"


@dataclass(frozen=True)
class SequenceSpec:
    """The synthetic video: frame counts of each phase and the sway amplitude.

    Attributes:
        sway: frames of side-to-side motion at the start and at the end (each).
        exit: frames the person takes to walk out of the frame to the right.
        gone: blank frames while nobody is there.
        enter: frames the person takes to walk back in from the left.
        amplitude: sway amplitude as a fraction of the frame width.
    """

    sway: int = 60
    exit: int = 10
    gone: int = 10
    enter: int = 10
    amplitude: float = 0.08

    @property
    def frames(self) -> int:
        """Total number of frames."""
        return 2 * self.sway + self.exit + self.gone + self.enter


def synthetic_sequence(image: ImageArray, spec: SequenceSpec | None = None) -> list[ImageArray]:
    """Frames of ``image`` shifted horizontally (black where the photo is not).

    Phases: sway (sine shift), exit to the right (the shift grows to the frame width), blank
    frames, entry from the left (the shift goes from minus the width to 0), sway again.
    """
    s = spec or SequenceSpec()
    h, w = image.shape[:2]
    sway = s.amplitude * w * np.sin(np.linspace(0.0, 4.0 * np.pi, s.sway, endpoint=False))
    shifts = np.concatenate(
        [
            sway,
            np.linspace(0.0, 1.05 * w, s.exit),
            np.full(s.gone, np.nan),
            np.linspace(-1.05 * w, 0.0, s.enter),
            sway,
        ]
    )
    frames = []
    for dx in shifts:  # one warp per frame
        if np.isnan(dx):
            frames.append(np.zeros_like(image))
            continue
        m = np.array([[1.0, 0.0, dx], [0.0, 1.0, 0.0]], np.float64)
        frames.append(cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR))
    return frames


def project_root() -> Path:
    """The checkout root (parent of the package)."""
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``../shared/data/coco`` next to the checkout."""
    return project_root().parent / "shared" / "data" / "coco"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avatarlink bench blazepose``."""
    parser.add_argument("--model", default="blazepose-full", help="registry name (blazepose-*)")
    add_session_arguments(parser)
    parser.add_argument(
        "--image", type=Path, default=None, help="photo the sequence is built from (default: "
        "the first COCO test photo, else the built-in sample)"
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="passes over the sequence")
    parser.add_argument("--data", type=Path, default=None, help="COCO folder with test_coco.json")
    parser.add_argument("--no-accuracy", action="store_true", help="timing only")
    parser.add_argument("--max-persons", type=int, default=10, help="people per photo (accuracy)")
    parser.add_argument(
        "--landmark-file", type=Path, default=None,
        help="alternative landmark model file (e.g. another conversion, to compare timings)",
    )  # fmt: skip
    parser.add_argument("--json", dest="json_out", help="write the results as JSON here")


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "p90": float("nan")}
    arr = np.asarray(values, np.float64)
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90))}


def time_sequence(
    estimator: BlazePoseEstimator, frames: Sequence[ImageArray], repeat: int = 1
) -> dict[str, Any]:
    """Run ``frames`` ``repeat`` times (resetting in between); per-stage stats by frame kind.

    Returns:
        ``frames``, ``detector_runs`` (per pass), ``persons`` (frames with a person, per pass) and
        for ``tracking`` (frames without a detector run) and ``detection`` (frames with one):
        ``count`` and per stage, ``non_model`` and ``total``: ``{"median", "p90"}`` in ms.
    """
    kinds: dict[str, dict[str, list[float]]] = {
        k: {s: [] for s in (*STAGES, "non_model", "total")} for k in ("tracking", "detection")
    }
    runs, persons = 0, 0
    for _ in range(repeat):
        estimator.reset()
        runs_before = 0
        persons = 0
        for stored in frames:
            # A capture or decoder has just written its frame: copy it so it is in the cache as
            # it would be, not cold in the middle of a long pre-built sequence.
            frame = stored.copy()
            t0 = time.perf_counter()
            result = estimator.estimate(frame)
            total = (time.perf_counter() - t0) * 1e3
            persons += int(result.image.num_persons > 0)
            ran = estimator.stats.detector_runs > runs_before
            runs_before = estimator.stats.detector_runs
            bucket = kinds["detection" if ran else "tracking"]
            for stage in STAGES:
                bucket[stage].append(result.timings_ms.get(stage, 0.0))
            bucket["non_model"].append(
                result.timings_ms["preprocess"] + result.timings_ms["postprocess"]
            )
            bucket["total"].append(total)
        runs = estimator.stats.detector_runs
    out: dict[str, Any] = {"frames": len(frames), "detector_runs": runs, "persons": persons}
    for kind, stages in kinds.items():
        out[kind] = {"count": len(stages["total"]) // max(repeat, 1)}
        out[kind].update({stage: _percentiles(v) for stage, v in stages.items()})
    return out


# --- accuracy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accuracy:
    """Accuracy on annotated people.

    Attributes:
        people: annotated people (with at least one labelled point).
        found: of those, how many have a predicted person (recall numerator).
        pck: PCK@0.2 over labelled points (missed people count as wrong).
        ap: OKS AP (COCO thresholds 0.50:0.05:0.95).
        predictions: predicted persons in total.
        error_px: mean distance in source pixels over the labelled points of matched people.
    """

    people: int
    found: int
    pck: float
    ap: float
    predictions: int
    error_px: float

    @property
    def recall(self) -> float:
        """found / people."""
        return self.found / self.people if self.people else float("nan")


def _coco_xy(xyz: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """(P, 33, 3) BlazePose -> (P, 17, 2) COCO-17 x, y."""
    return np.asarray(xyz[:, blazepose_to_coco_indices(), :2], np.float64)


def _keypoint_boxes(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.concatenate([np.nanmin(xy, axis=1), np.nanmax(xy, axis=1)], axis=1)


def accuracy_gt_boxes(estimator: BlazePoseEstimator, people: list[PersonAnnotation]) -> Accuracy:
    """One prediction per person from its ground-truth box (``estimate(image, region=box)``)."""
    preds = np.full((len(people), 17, 2), np.nan)
    scores = np.zeros(len(people))
    found = 0
    for i, person in enumerate(people):  # one estimate per annotated person
        result = estimator.estimate(read_image(person.image), person.bbox)
        if result.image.num_persons:
            preds[i] = _coco_xy(result.image.xyz)[0]
            scores[i] = float(result.image.person_score[0])
            found += 1
    gt = np.stack([p.keypoints for p in people])
    sims = oks(preds, gt, np.array([p.area for p in people]))
    return Accuracy(
        people=len(people),
        found=found,
        pck=pck(preds, gt, bbox_norm(people), PCK_ALPHA),
        ap=average_precision(sims[scores > 0], scores[scores > 0], len(people)),
        predictions=found,
        error_px=mean_error_px(preds, gt),
    )


def accuracy_detector(
    estimator: BlazePoseEstimator,
    people: list[PersonAnnotation],
    ignore_boxes: dict[Path, npt.NDArray[np.float64]],
) -> Accuracy:
    """Predictions from the detector over whole photos, matched to people greedily by OKS.

    Predictions whose keypoint box mostly covers an annotated-without-keypoints (ignored) person
    and match nobody else are left out, as COCO's evaluation ignores them.
    """
    estimator.reset()
    gt_all = np.stack([p.keypoints for p in people])
    area_all = np.array([p.area for p in people])
    boxes_all = np.array([[p.bbox.x, p.bbox.y, p.bbox.x + p.bbox.w, p.bbox.y + p.bbox.h]
                          for p in people])  # fmt: skip
    matched_xy = np.full((len(people), 17, 2), np.nan)
    found = 0
    all_oks: list[float] = []
    all_scores: list[float] = []
    predictions = 0
    for image_path in sorted({p.image for p in people}):  # one photo at a time
        idx = np.flatnonzero([p.image == image_path for p in people])
        estimator.reset()
        result = estimator.estimate(read_image(image_path))
        xy = _coco_xy(result.image.xyz)
        scores = result.image.person_score.astype(np.float64)
        order = np.argsort(-scores, kind="stable")
        gt = gt_all[idx]
        taken = np.zeros(len(idx), bool)
        box_taken = np.zeros(len(idx), bool)
        pred_boxes = _keypoint_boxes(xy) if len(xy) else np.zeros((0, 4))
        box_iou_gt = box_iou(pred_boxes, boxes_all[idx]) if len(xy) else np.zeros((0, len(idx)))
        for p in order:  # persons, best first
            sims = oks(np.repeat(xy[p : p + 1], len(idx), axis=0), gt, area_all[idx])
            sims[taken] = -1.0
            best = int(np.argmax(sims)) if len(idx) else -1
            free_iou = np.where(box_taken, -1.0, box_iou_gt[p])
            if len(idx) and free_iou.max() >= RECALL_IOU:
                box_taken[int(np.argmax(free_iou))] = True
            if best >= 0 and sims[best] > 0.0:
                taken[best] = True
                matched_xy[idx[best]] = xy[p]
                all_oks.append(float(sims[best]))
            else:
                ign = ignore_boxes.get(image_path, np.zeros((0, 4)))
                if len(ign) and float(box_iou(pred_boxes[p : p + 1], ign).max()) >= RECALL_IOU:
                    continue  # an unannotated (ignored) person
                all_oks.append(0.0)
            all_scores.append(float(scores[p]))
            predictions += 1
        found += int(box_taken.sum())
    return Accuracy(
        people=len(people),
        found=found,
        pck=pck(matched_xy, gt_all, bbox_norm(people), PCK_ALPHA),
        ap=average_precision(np.array(all_oks), np.array(all_scores), len(people)),
        predictions=predictions,
        error_px=mean_error_px(matched_xy, gt_all),
    )


def load_people(data: Path) -> tuple[list[PersonAnnotation], dict[Path, npt.NDArray[np.float64]]]:
    """Annotated people and, per photo, the boxes of people annotated without keypoints."""
    annotations = data / ANNOTATIONS
    if not annotations.is_file():
        raise InputError(f"COCO test data not found: {annotations}; pass --data DIR")
    people = load_coco_people(annotations)
    everyone = load_coco_people(annotations, min_keypoints=0)
    labelled = {p.ann_id for p in people}
    ignore: dict[Path, list[list[float]]] = {}
    for p in everyone:
        if p.ann_id not in labelled:
            b = p.bbox
            ignore.setdefault(p.image, []).append([b.x, b.y, b.x + b.w, b.y + b.h])
    return people, {k: np.asarray(v, np.float64) for k, v in ignore.items()}


def evaluate_coco(
    make: Callable[[BlazePoseConfig], BlazePoseEstimator], data: Path, max_persons: int = 10
) -> dict[str, Accuracy]:
    """Accuracy of estimators built by ``make(config)``: ``detector`` (whole photos, tiled
    detection) and ``gt_box`` (ground-truth box as the region), each also with heatmap
    refinement (``+hm``)."""
    people, ignore = load_people(data)
    static = BlazePoseConfig(tracking=False, max_persons=max_persons)
    boxed = BlazePoseConfig(tracking=False)
    return {
        "detector": accuracy_detector(make(static), people, ignore),
        "detector+hm": accuracy_detector(
            make(replace(static, heatmap_refine="quadratic")), people, ignore
        ),
        "gt_box": accuracy_gt_boxes(make(boxed), people),
        "gt_box+hm": accuracy_gt_boxes(make(replace(boxed, heatmap_refine="quadratic")), people),
    }


# --- command -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print a report."""
    spec = get_spec(args.model)
    if args.landmark_file is not None:
        spec = replace(spec, file=str(Path(args.landmark_file).resolve()))
    options = session_options(args)

    def make(config: BlazePoseConfig) -> BlazePoseEstimator:
        cfg = config
        if args.landmark_file is not None:
            cfg = replace(config, detector_file=str(get_spec(args.model).path.parent
                                                    / config.detector_file))  # fmt: skip
        return BlazePoseEstimator(spec, options, cfg)

    data = args.data or default_data_dir()
    image_path = args.image
    if image_path is None:
        photos = sorted(data.glob("*.jpg")) if data.is_dir() else []
        image_path = photos[0] if photos else SAMPLE_IMAGE
    frames = synthetic_sequence(read_image(image_path))
    tracking_est = make(BlazePoseConfig())
    print(
        f"BlazePose bench: {args.model} on {tracking_est.provider}, threads={args.threads}, "
        f"sequence of {len(frames)} frames from {Path(image_path).name} x {args.repeat}"
    )
    report: dict[str, Any] = {"model": args.model, "provider": tracking_est.provider}
    time_sequence(tracking_est, frames[:5])  # warm-up
    report["tracking"] = time_sequence(tracking_est, frames, args.repeat)
    report["detect_every_frame"] = time_sequence(
        make(BlazePoseConfig(tracking=False)), frames, args.repeat
    )
    _print_timing("with ROI tracking", report["tracking"])
    _print_timing("detector on every frame", report["detect_every_frame"])
    if not args.no_accuracy and (data / ANNOTATIONS).is_file():
        acc = evaluate_coco(make, data, args.max_persons)
        report["accuracy"] = {k: {**vars(a), "recall": a.recall} for k, a in acc.items()}
        _print_accuracy(acc)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json_out}")
    return 0


def _print_timing(title: str, t: dict[str, Any]) -> None:
    print(f"\n{title}: detector ran on {t['detector_runs']} of {t['frames']} frames; "
          f"a person in {t['persons']} frames")  # fmt: skip
    header = f"  {'frames':<22}" + "".join(f"{s:>13}" for s in (*STAGES, "non_model", "total"))
    print(header + "   fps (median)")
    for kind in ("tracking", "detection"):
        row = t[kind]
        if not row["count"]:
            continue
        cells = "".join(
            f"{row[s]['median']:>7.2f}/{row[s]['p90']:<5.2f}"
            for s in (*STAGES, "non_model", "total")
        )
        fps = 1000.0 / row["total"]["median"]
        label = f"{kind} ({row['count']})"
        print(f"  {label:<22}{cells}   {fps:6.1f}")
    print("  (ms, median/p90)")
    if t["tracking"]["count"]:
        fps = 1000.0 / t["tracking"]["total"]["median"]
        non_model = t["tracking"]["non_model"]["median"]
        print(f"  tracking frames: {fps / MEDIAPIPE_FULL_FPS:.2f} x MediaPipe full's "
              f"{MEDIAPIPE_FULL_FPS:.0f} fps (target {TARGET_SPEEDUP} x); non-model "
              f"{non_model:.2f} ms (target <= {TARGET_NON_MODEL_MS} ms; MediaPipe "
              f"{MEDIAPIPE_NON_MODEL_MS[0]}-{MEDIAPIPE_NON_MODEL_MS[1]} ms)")  # fmt: skip


def _print_accuracy(acc: dict[str, Accuracy]) -> None:
    print("\nCOCO test people (17 COCO-mappable points):")
    for name, a in acc.items():
        print(f"  {name:<12} recall {a.found}/{a.people} = {a.recall:.3f}  PCK@{PCK_ALPHA} "
              f"{a.pck:.3f}  AP {a.ap:.3f}  error {a.error_px:.1f} px  "
              f"({a.predictions} predictions)")  # fmt: skip
    for label, ref in (
        ("ground-truth-box crops (reference)", MEDIAPIPE_GT_BOX),
        ("1.25x box crops, this scoring", MEDIAPIPE_SAME_PROTOCOL),
    ):
        print(
            f"  MediaPipe Pose full, {label}: AP {ref['ap']:.3f}, PCK@{PCK_ALPHA} {ref['pck']:.3f}"
        )
