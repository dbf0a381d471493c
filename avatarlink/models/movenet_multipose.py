"""MoveNet MultiPose Lightning adapter: up to 6 people, with stable identities across frames.

Model contract (models/MODELS.md): input int32 (1, H, W, 3) RGB 0..255 with H and W multiples of
32; output (1, 6, 56): per person 17 x (y, x, score) normalised to the input, then
(ymin, xmin, ymax, xmax) normalised, then the person score.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from avatarlink.errors import ConfigError
from avatarlink.models.base import EstimateResult, keypoints_2d, stage_timings
from avatarlink.models.registry import ModelSpec
from avatarlink.preprocess import Box, letterbox_image
from avatarlink.session import InferenceSession, SessionOptions
from avatarlink.skeletons import KeypointLayout
from avatarlink.tracking import IdentityConfig, IdentityTracker
from avatarlink.types import FloatArray, ImageArray

_STRIDE = 32


@dataclass(frozen=True)
class MultiPoseConfig:
    """Input size and thresholds.

    Attributes:
        long_side: model input size along the frame's longer side, px (a multiple of 32).
        person_threshold: minimum person score (0..1) to report a person.
        keypoint_threshold: below this score (0..1) a point is reported missing (NaN).
        max_persons: report at most this many people (highest scores first).
    """

    long_side: int = 256
    person_threshold: float = 0.25
    keypoint_threshold: float = 0.1
    max_persons: int = 6

    def __post_init__(self) -> None:
        if self.long_side < _STRIDE or self.long_side % _STRIDE:
            raise ConfigError(
                f"multipose long_side must be a positive multiple of 32, got {self.long_side}"
            )


def input_size_for(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Model input (width, height): ``long_side`` on the frame's long side, the other side the
    smallest multiple of 32 that holds the frame's aspect."""
    if width >= height:
        return long_side, max(_STRIDE, math.ceil(long_side * height / width / _STRIDE) * _STRIDE)
    return max(_STRIDE, math.ceil(long_side * width / height / _STRIDE) * _STRIDE), long_side


def decode_multipose(
    raw: FloatArray, width: int, height: int, config: MultiPoseConfig
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Decode the (1, 6, 56) output into model-input pixels.

    Returns:
        xy float32 (P, 17, 2) model pixels, score (P, 17), boxes (P, 4) x0, y0, x1, y1 in model
        pixels, person_score (P,), people sorted by score and thresholded.
    """
    rows = np.asarray(raw, np.float32).reshape(-1, 56)
    person_score = rows[:, 55]
    keep = np.flatnonzero(person_score >= config.person_threshold)
    keep = keep[np.argsort(-person_score[keep], kind="stable")][: config.max_persons]
    rows = rows[keep]
    size = np.array([width, height], np.float32)
    yxs = rows[:, :51].reshape(-1, 17, 3)
    xy = yxs[..., 1::-1] * size
    boxes = rows[:, [52, 51, 54, 53]] * np.tile(size, 2)  # (ymin, xmin, ymax, xmax) -> x0 y0 x1 y1
    return xy, np.ascontiguousarray(yxs[..., 2]), boxes, rows[:, 55].copy()


class MoveNetMultiPoseEstimator:
    """Several people per frame, each with a stable ``ids`` entry (IoU identity tracking)."""

    layout = KeypointLayout.COCO17

    def __init__(
        self,
        spec: ModelSpec,
        options: SessionOptions,
        config: MultiPoseConfig | None = None,
        identity: IdentityConfig | None = None,
        max_persons: int | None = None,
    ) -> None:
        self.name = spec.name
        self.config = config or MultiPoseConfig()
        if max_persons is not None:
            self.config = dataclasses.replace(self.config, max_persons=max_persons)
        self.session = InferenceSession(spec.path, options)
        self.input_name = self.session.inputs[0].name
        self.input_dtype = self.session.inputs[0].dtype
        self.identities = IdentityTracker(identity)

    @property
    def provider(self) -> str:
        """The execution provider in use."""
        return self.session.provider

    def reset(self) -> None:
        """Forget identities."""
        self.identities.reset()

    def estimate(self, image: ImageArray, region: Box | None = None) -> EstimateResult:
        """Keypoints of up to ``max_persons`` people in source pixels, with track ids."""
        t0 = time.perf_counter()
        h, w = image.shape[:2] if region is None else (region.h, region.w)
        in_w, in_h = input_size_for(int(w), int(h), self.config.long_side)
        rgb, lb = letterbox_image(image, in_w, in_h, region)
        batch = rgb[None].astype(self.input_dtype)
        t1 = time.perf_counter()
        raw = next(iter(self.session.run({self.input_name: batch}).values()))
        t2 = time.perf_counter()
        xy_model, score, boxes, person_score = decode_multipose(raw, in_w, in_h, self.config)
        xy = lb.to_source(xy_model)
        src_boxes = lb.to_source(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        ids = self.identities.assign(src_boxes)
        keypoints = keypoints_2d(
            xy, score, self.layout, self.config.keypoint_threshold, person_score, ids
        )
        t3 = time.perf_counter()
        return EstimateResult(keypoints, None, stage_timings(t0, t1, t2, t3))
