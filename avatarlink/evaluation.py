"""Accuracy against COCO-style ground truth: loading, PCK@alpha and OKS-based AP (numpy only).

Ground truth is a COCO keypoints JSON (``images``, ``annotations`` with ``bbox`` (x, y, w, h),
``keypoints`` 17 x (x, y, v), ``area``). Points with v = 0 are unlabelled and never scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from avatarlink.errors import InputError
from avatarlink.preprocess import Box

FloatArray = npt.NDArray[np.float64]

# Per-keypoint OKS sigmas of the COCO-17 keypoints (from the COCO keypoint evaluation).
COCO_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
     0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089]
)  # fmt: skip

OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)


@dataclass(frozen=True)
class PersonAnnotation:
    """One annotated person.

    Attributes:
        image: path of the photo.
        bbox: the person box in source pixels.
        keypoints: float64 (17, 3) x, y, v (v = 0 unlabelled, 1 hidden, 2 visible).
        area: segmentation area in px^2 (OKS scale).
        ann_id: the annotation id.
    """

    image: Path
    bbox: Box
    keypoints: FloatArray
    area: float
    ann_id: int

    @property
    def labelled(self) -> npt.NDArray[np.bool_]:
        """(17,) which points have a label."""
        return np.asarray(self.keypoints[:, 2] > 0)


def load_coco_people(annotation_file: Path, min_keypoints: int = 1) -> list[PersonAnnotation]:
    """People with at least ``min_keypoints`` labelled points, images resolved next to the JSON."""
    try:
        data = json.loads(Path(annotation_file).read_text())
        images = {img["id"]: img["file_name"] for img in data["images"]}
        people = []
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0) or ann["num_keypoints"] < min_keypoints:
                continue
            people.append(
                PersonAnnotation(
                    image=Path(annotation_file).parent / images[ann["image_id"]],
                    bbox=Box(*map(float, ann["bbox"])),
                    keypoints=np.asarray(ann["keypoints"], np.float64).reshape(17, 3),
                    area=float(ann["area"]),
                    ann_id=int(ann["id"]),
                )
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read COCO annotations {annotation_file}: {exc}") from exc
    return people


def pck(
    pred_xy: npt.ArrayLike,
    gt: npt.ArrayLike,
    norm: npt.ArrayLike,
    alpha: float = 0.2,
) -> float:
    """Percentage of correct keypoints over all labelled points.

    Args:
        pred_xy: (N, 17, 2) predicted source pixels; NaN counts as wrong.
        gt: (N, 17, 3) ground truth x, y, v.
        norm: (N,) per-person normaliser in px (e.g. ``max(bbox w, h)``).
        alpha: threshold as a fraction of ``norm``.

    Returns:
        Fraction in [0, 1] of labelled points within ``alpha * norm`` of the truth.
    """
    pred = np.asarray(pred_xy, np.float64)
    truth = np.asarray(gt, np.float64)
    dist = np.linalg.norm(pred - truth[..., :2], axis=-1)
    labelled = truth[..., 2] > 0
    ok = np.nan_to_num(dist, nan=np.inf) <= alpha * np.asarray(norm, np.float64)[:, None]
    return float(ok[labelled].mean()) if labelled.any() else float("nan")


def bbox_norm(people: list[PersonAnnotation]) -> FloatArray:
    """(N,) the PCK normaliser used here: the longer side of each person's GT box, px."""
    return np.array([max(p.bbox.w, p.bbox.h) for p in people], np.float64)


def mean_error_px(pred_xy: npt.ArrayLike, gt: npt.ArrayLike) -> float:
    """Mean Euclidean error in px over labelled points that were predicted (not NaN)."""
    pred = np.asarray(pred_xy, np.float64)
    truth = np.asarray(gt, np.float64)
    dist = np.linalg.norm(pred - truth[..., :2], axis=-1)
    use = (truth[..., 2] > 0) & np.isfinite(dist)
    return float(dist[use].mean()) if use.any() else float("nan")


def oks(pred_xy: npt.ArrayLike, gt: npt.ArrayLike, area: npt.ArrayLike) -> FloatArray:
    """Object keypoint similarity per person, (N,), COCO definition (NaN predictions score 0)."""
    pred = np.asarray(pred_xy, np.float64)
    truth = np.asarray(gt, np.float64)
    d2 = np.sum((pred - truth[..., :2]) ** 2, axis=-1)
    k2 = (2.0 * COCO_SIGMAS) ** 2
    s2 = np.asarray(area, np.float64)[:, None] + np.spacing(1)
    sim = np.nan_to_num(np.exp(-d2 / (2.0 * s2 * k2)), nan=0.0)
    labelled = truth[..., 2] > 0
    count = labelled.sum(axis=1)
    return np.where(count > 0, (sim * labelled).sum(axis=1) / np.maximum(count, 1), 0.0)


def average_precision(oks_values: npt.ArrayLike, scores: npt.ArrayLike, num_gt: int) -> float:
    """COCO-style AP averaged over OKS thresholds 0.50:0.05:0.95 (101-point interpolation).

    Args:
        oks_values: (M,) OKS of each prediction with the ground truth it was matched to (0 when
            unmatched).
        scores: (M,) prediction confidences, used to rank predictions.
        num_gt: number of ground-truth people.
    """
    sims = np.asarray(oks_values, np.float64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    sims = sims[order]
    recall_points = np.linspace(0.0, 1.0, 101)
    aps = []
    for threshold in OKS_THRESHOLDS:  # 10 thresholds, not a per-keypoint loop
        tp = np.cumsum(sims >= threshold)
        fp = np.cumsum(sims < threshold)
        recall = tp / max(num_gt, 1)
        precision = tp / np.maximum(tp + fp, 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
        idx = np.searchsorted(recall, recall_points, side="left")
        valid = idx < len(precision)
        interp = np.where(valid, precision[np.minimum(idx, len(precision) - 1)], 0.0)
        aps.append(interp.mean())
    return float(np.mean(aps))
