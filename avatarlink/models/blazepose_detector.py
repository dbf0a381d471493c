"""The BlazePose person detector (MediaPipe ``pose_detection``): anchors, decoding, weighted NMS.

Model contract (models/MODELS.md): input ``input`` float32 (1, 224, 224, 3) RGB in [-1, 1], the
frame letterboxed (aspect kept, black border); outputs ``regressors`` (1, 2254, 12) and ``scores``
(1, 2254, 1). Regressors are in input pixels relative to each anchor centre: box centre x, y, box
width, height, then four keypoints (x, y): 0 mid-hip, 1 a point above the head giving the full-body
size and rotation, 2 mid-shoulder, 3 the upper-body size/rotation point. Scores are logits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ModelError
from avatarlink.preprocess import Box, letterbox_image
from avatarlink.roi import RotatedRect, box_iou, roi_from_alignment_points
from avatarlink.session import InferenceSession, SessionOptions
from avatarlink.types import ImageArray

FloatArray = npt.NDArray[np.float32]

NUM_DETECTOR_KEYPOINTS = 4
HIP_CENTER, FULL_BODY_POINT = 0, 1


@dataclass(frozen=True)
class DetectorConfig:
    """Anchor layout and decoding thresholds of the SSD person detector.

    Attributes:
        input_size: square model input side in pixels.
        strides: feature-map stride of each SSD layer, pixels; consecutive equal strides share
            one grid (their anchors are interleaved per cell, as MediaPipe's SsdAnchorsCalculator).
        anchors_per_layer: anchors per grid cell contributed by each layer.
        anchor_offset: anchor centre inside its cell, in cells (0.5 = the cell centre).
        score_clip: logits are clipped to +-score_clip before the sigmoid.
        min_score: detections below this probability are dropped, in [0, 1].
        nms_iou: weighted NMS merges boxes overlapping the best one by more than this IoU.
        max_detections: at most this many detections are returned (best first).
        roi_scale: ROI side = 2 x |full-body point - hip| x roi_scale.
    """

    input_size: int = 224
    strides: tuple[int, ...] = (8, 16, 32, 32, 32)
    anchors_per_layer: int = 2
    anchor_offset: float = 0.5
    score_clip: float = 100.0
    min_score: float = 0.5
    nms_iou: float = 0.3
    max_detections: int = 10
    roi_scale: float = 1.25


@dataclass(frozen=True)
class Detections:
    """N person detections, best first, in source pixels.

    Attributes:
        boxes: float32 (N, 4) x0, y0, x1, y1.
        keypoints: float32 (N, 4, 2) x, y of the four alignment points.
        scores: float32 (N,) probabilities in [0, 1].
    """

    boxes: FloatArray
    keypoints: FloatArray
    scores: FloatArray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """No detection."""
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0, NUM_DETECTOR_KEYPOINTS, 2), np.float32),
            np.zeros(0, np.float32),
        )

    def rois(self, scale: float = 1.25) -> list[RotatedRect]:
        """The landmark-model ROI of each detection: centred on the mid-hip, upright along the
        hip -> full-body-point vector, side 2 x that distance x ``scale``."""
        kp = self.keypoints
        return [
            roi_from_alignment_points(kp[i, HIP_CENTER], kp[i, FULL_BODY_POINT], scale)
            for i in range(len(self))
        ]


def ssd_anchors(config: DetectorConfig | None = None) -> FloatArray:
    """Anchor centres in model-input pixels, float32 (A, 2) x, y (A = 2254 for the defaults).

    Order: grid by grid (finest first), then row, column, and anchor within a cell.
    """
    cfg = config or DetectorConfig()
    grids: list[FloatArray] = []
    layer = 0
    while layer < len(cfg.strides):
        stride = cfg.strides[layer]
        same = 1
        while layer + same < len(cfg.strides) and cfg.strides[layer + same] == stride:
            same += 1
        cells = math.ceil(cfg.input_size / stride)
        centres = (np.arange(cells, dtype=np.float64) + cfg.anchor_offset) / cells * cfg.input_size
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        grids.append(np.repeat(grid, same * cfg.anchors_per_layer, axis=0).astype(np.float32))
        layer += same
    return np.concatenate(grids, axis=0)


def decode_detections(
    regressors: npt.ArrayLike,
    score_logits: npt.ArrayLike,
    anchors: FloatArray,
    min_score: float = 0.5,
    score_clip: float = 100.0,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Decode raw detector outputs above ``min_score``, in model-input pixels.

    Args:
        regressors: (A, 12) per anchor: box centre dx, dy, w, h, then 4 keypoints dx, dy.
        score_logits: (A,) or (A, 1) logits.
        anchors: (A, 2) anchor centres, model pixels.
        min_score: probability threshold.
        score_clip: logit clipping before the sigmoid.

    Returns:
        boxes (N, 4) x0, y0, x1, y1; keypoints (N, 4, 2); scores (N,); all float32, model pixels,
        unsorted.
    """
    reg = np.asarray(regressors, np.float32).reshape(anchors.shape[0], -1)
    logits = np.clip(np.asarray(score_logits, np.float32).reshape(-1), -score_clip, score_clip)
    with np.errstate(over="ignore"):
        scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    reg, anchor, kept = reg[keep], anchors[keep], scores[keep].astype(np.float32)
    centre = reg[:, 0:2] + anchor
    half = reg[:, 2:4] * 0.5
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = reg[:, 4 : 4 + 2 * NUM_DETECTOR_KEYPOINTS].reshape(-1, NUM_DETECTOR_KEYPOINTS, 2)
    keypoints = kps + anchor[:, None, :]
    return boxes.astype(np.float32), keypoints.astype(np.float32), kept


def weighted_nms(
    boxes: FloatArray,
    keypoints: FloatArray,
    scores: FloatArray,
    iou_threshold: float = 0.3,
    max_detections: int | None = None,
) -> Detections:
    """Weighted non-maximum suppression (MediaPipe's WEIGHTED algorithm).

    Repeatedly takes the best remaining detection and every remaining one overlapping it by more
    than ``iou_threshold`` (itself included); the cluster becomes one detection whose box and
    keypoints are the score-weighted means and whose score is the best one's.

    Args:
        boxes: (N, 4) x0, y0, x1, y1. keypoints: (N, K, 2). scores: (N,).

    Returns:
        Merged detections, best first (at most ``max_detections``).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    iou = box_iou(boxes, boxes)
    remaining = np.ones(len(scores), bool)
    out_boxes: list[npt.NDArray[np.float64]] = []
    out_kps: list[npt.NDArray[np.float64]] = []
    out_scores: list[float] = []
    limit = len(scores) if max_detections is None else max_detections
    for i in range(len(scores)):  # one iteration per output cluster, not per anchor
        if len(out_scores) >= limit:
            break
        if not remaining[i]:
            continue
        cluster = remaining & (iou[i] > iou_threshold)
        cluster[i] = True
        remaining &= ~cluster
        w = scores[cluster].astype(np.float64)
        w = w / w.sum()
        out_boxes.append(w @ boxes[cluster].astype(np.float64))
        out_kps.append(np.tensordot(w, keypoints[cluster].astype(np.float64), axes=1))
        out_scores.append(float(scores[i]))
    if not out_scores:
        return Detections.empty()
    return Detections(
        np.asarray(out_boxes, np.float32),
        np.asarray(out_kps, np.float32),
        np.asarray(out_scores, np.float32),
    )


@dataclass(frozen=True)
class DetectorTimings:
    """Wall time of one detector call, ms: ``preprocess``, ``model`` and ``postprocess``."""

    preprocess: float
    model: float
    postprocess: float


class PoseDetector:
    """The person detector: letterbox -> model -> decode -> weighted NMS, in source pixels."""

    def __init__(
        self, path: Path, options: SessionOptions, config: DetectorConfig | None = None
    ) -> None:
        self.config = config or DetectorConfig()
        self.session = InferenceSession(path, options)
        names = set(self.session.output_names)
        if not {"regressors", "scores"} <= names:
            raise ModelError(
                f"{self.session.path}: expected outputs 'regressors' and 'scores', "
                f"got {sorted(names)}; rebuild it with python models/build.py"
            )
        inp = self.session.inputs[0]
        size = self.config.input_size
        if tuple(inp.shape[1:]) not in ((size, size, 3), (None, None, 3)):
            raise ModelError(
                f"{self.session.path}: expected input (1, {size}, {size}, 3), got {inp.shape}"
            )
        self.input_name = inp.name
        self.anchors = ssd_anchors(self.config)
        reg = self.session.outputs[self.session.output_names.index("regressors")]
        if reg.shape[1] is not None and reg.shape[1] != self.anchors.shape[0]:
            raise ModelError(
                f"{self.session.path}: {reg.shape[1]} anchors in the model, "
                f"{self.anchors.shape[0]} from the anchor config"
            )

    def detect(
        self, image: ImageArray, region: Box | None = None
    ) -> tuple[Detections, DetectorTimings]:
        """Person detections in source pixels of ``image`` (BGR), optionally only inside
        ``region`` (letterboxed with its surroundings as context)."""
        cfg = self.config
        t0 = time.perf_counter()
        rgb, lb = letterbox_image(image, cfg.input_size, cfg.input_size, region)
        tensor = rgb.astype(np.float32)[None]
        tensor *= 1.0 / 127.5
        tensor -= 1.0
        t1 = time.perf_counter()
        out = self.session.run({self.input_name: tensor}, ("regressors", "scores"))
        t2 = time.perf_counter()
        boxes, kps, scores = decode_detections(
            out["regressors"][0], out["scores"][0], self.anchors, cfg.min_score, cfg.score_clip
        )
        dets = weighted_nms(boxes, kps, scores, cfg.nms_iou, cfg.max_detections)
        if len(dets):
            corners = lb.to_source(dets.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
            dets = Detections(corners, lb.to_source(dets.keypoints), dets.scores)
        t3 = time.perf_counter()
        return dets, DetectorTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def detect_tiled(self, image: ImageArray, tiles: int) -> tuple[Detections, DetectorTimings]:
        """Detections over the whole frame plus a ``tiles`` x ``tiles`` grid of windows.

        The detector favours the most prominent person of its input; windows of ``2 / (tiles +
        1)`` of the frame side, overlapping by half, let it find the others too (one model run
        per window). All detections are merged by weighted NMS in source pixels.
        """
        height, width = image.shape[:2]
        regions: list[Box | None] = [None]
        side_w, side_h = 2.0 * width / (tiles + 1), 2.0 * height / (tiles + 1)
        for row in range(tiles):  # windows, not pixels
            for col in range(tiles):
                regions.append(Box(col * side_w / 2, row * side_h / 2, side_w, side_h))
        found = [self.detect(image, r) for r in regions]
        t0 = time.perf_counter()
        boxes = np.concatenate([d.boxes for d, _ in found])
        kps = np.concatenate([d.keypoints for d, _ in found])
        scores = np.concatenate([d.scores for d, _ in found])
        merged = weighted_nms(boxes, kps, scores, self.config.nms_iou, self.config.max_detections)
        post = (time.perf_counter() - t0) * 1e3
        return merged, DetectorTimings(
            sum(t.preprocess for _, t in found),
            sum(t.model for _, t in found),
            sum(t.postprocess for _, t in found) + post,
        )
