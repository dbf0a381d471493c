"""MoveNet SinglePose (Lightning / Thunder) adapter.

Model contract (models/MODELS.md): input int32 (1, S, S, 3) RGB 0..255; output (1, 1, 17, 3) =
(y, x, score) per COCO-17 point, y and x normalised to [0, 1] of the input square.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from avatarlink.errors import ModelError
from avatarlink.models.base import EstimateResult, keypoints_2d, stage_timings
from avatarlink.models.registry import ModelSpec
from avatarlink.preprocess import Box, letterbox_image
from avatarlink.session import InferenceSession, SessionOptions
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import ImageArray, Keypoints, Space


@dataclass(frozen=True)
class DetectionThresholds:
    """Score thresholds, both in [0, 1].

    Attributes:
        keypoint: below it a point is reported missing (NaN position, its score kept).
        person: below it, the mean score over all points, the frame has "no person".
    """

    keypoint: float = 0.1
    person: float = 0.2


class MoveNetEstimator:
    """Single-person MoveNet: letterbox -> model -> (y, x, score) mapped back to source pixels.

    Crop tracking wraps it (:class:`avatarlink.tracking.CropTrackedEstimator`).
    """

    layout = KeypointLayout.COCO17

    def __init__(
        self,
        spec: ModelSpec,
        options: SessionOptions,
        thresholds: DetectionThresholds | None = None,
    ) -> None:
        self.name = spec.name
        self.thresholds = thresholds or DetectionThresholds()
        self.session = InferenceSession(spec.path, options)
        inp = self.session.inputs[0]
        if len(inp.shape) != 4 or inp.shape[3] != 3:
            raise ModelError(f"{spec.path}: expected an NHWC RGB input, got {inp.shape}")
        height, width = inp.shape[1], inp.shape[2]
        self.input_name = inp.name
        self.input_dtype = inp.dtype
        self.width = width if width is not None else spec.input_size[0]
        self.height = height if height is not None else spec.input_size[1]
        self._size = np.array([self.width, self.height], np.float32)  # model input (w, h) px

    @property
    def provider(self) -> str:
        """The execution provider in use."""
        return self.session.provider

    def reset(self) -> None:
        """MoveNet single-pose keeps no state."""

    def estimate(self, image: ImageArray, region: Box | None = None) -> EstimateResult:
        """Keypoints (1 or 0 persons, 17 points) in source pixels of ``image`` (or ``region``)."""
        t0 = time.perf_counter()
        rgb, lb = letterbox_image(image, self.width, self.height, region)
        batch = rgb[None].astype(self.input_dtype)
        t1 = time.perf_counter()
        raw = next(iter(self.session.run({self.input_name: batch}).values()))
        t2 = time.perf_counter()
        yxs = np.asarray(raw, np.float32).reshape(-1, 17, 3)[:1]
        xy_model = yxs[..., 1::-1] * self._size  # (y, x) normalised -> (x, y) model pixels
        xy = lb.to_source(xy_model)
        score = np.ascontiguousarray(yxs[..., 2])
        if float(score.mean()) < self.thresholds.person:
            keypoints = Keypoints.empty(self.layout, Space.IMAGE)
        else:
            keypoints = keypoints_2d(xy, score, self.layout, self.thresholds.keypoint)
        t3 = time.perf_counter()
        return EstimateResult(keypoints, None, stage_timings(t0, t1, t2, t3))
