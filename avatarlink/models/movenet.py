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
from avatarlink.tracking import CropTracker, CropTrackingConfig
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

    With ``tracking`` set, each frame is cropped around the person found in the previous one
    (see :mod:`avatarlink.tracking`); a crop that loses the person falls back to the whole frame
    within the same call.
    """

    layout = KeypointLayout.COCO17

    def __init__(
        self,
        spec: ModelSpec,
        options: SessionOptions,
        thresholds: DetectionThresholds | None = None,
        tracking: CropTrackingConfig | None = None,
    ) -> None:
        self.name = spec.name
        self.thresholds = thresholds or DetectionThresholds()
        self.tracker = CropTracker(tracking) if tracking is not None else None
        self.session = InferenceSession(spec.path, options)
        inp = self.session.inputs[0]
        if len(inp.shape) != 4 or inp.shape[3] != 3:
            raise ModelError(f"{spec.path}: expected an NHWC RGB input, got {inp.shape}")
        height, width = inp.shape[1], inp.shape[2]
        self.input_name = inp.name
        self.input_dtype = inp.dtype
        self.width = width if width is not None else spec.input_size[0]
        self.height = height if height is not None else spec.input_size[1]

    @property
    def provider(self) -> str:
        """The execution provider in use."""
        return self.session.provider

    def reset(self) -> None:
        """Forget the tracked crop (the next frame is searched whole)."""
        if self.tracker is not None:
            self.tracker.reset()

    def estimate(self, image: ImageArray, region: Box | None = None) -> EstimateResult:
        """Keypoints (1 or 0 persons, 17 points) in source pixels of ``image``.

        ``region`` (source pixels) overrides the tracked crop for this frame.
        """
        tracker = self.tracker
        if tracker is None or region is not None:
            return self._estimate_once(image, region)
        result = self._estimate_once(image, tracker.region)
        if result.image.num_persons == 0 and tracker.region is not None:
            retry = self._estimate_once(image, None)  # lost in the crop: search the whole frame
            timings = {k: v + retry.timings_ms.get(k, 0.0) for k, v in result.timings_ms.items()}
            result = EstimateResult(retry.image, None, timings)
        kp = result.image
        height, width = image.shape[:2]
        if kp.num_persons:
            tracker.update(kp.xyz[0], kp.score[0], width, height)
        else:
            tracker.update(kp.xyz.reshape(0, 3), kp.score.reshape(0), width, height)
        return result

    def _estimate_once(self, image: ImageArray, region: Box | None) -> EstimateResult:
        t0 = time.perf_counter()
        rgb, lb = letterbox_image(image, self.width, self.height, region)
        batch = rgb[None].astype(self.input_dtype)
        t1 = time.perf_counter()
        raw = next(iter(self.session.run({self.input_name: batch}).values()))
        t2 = time.perf_counter()
        yxs = np.asarray(raw, np.float32).reshape(-1, 17, 3)[:1]
        size = np.array([self.width, self.height], np.float32)
        xy_model = yxs[..., 1::-1] * size  # (y, x) normalised -> (x, y) model pixels
        xy = lb.to_source(xy_model)
        score = np.ascontiguousarray(yxs[..., 2])
        if float(score.mean()) < self.thresholds.person:
            keypoints = Keypoints.empty(self.layout, Space.IMAGE)
        else:
            keypoints = keypoints_2d(xy, score, self.layout, self.thresholds.keypoint)
        t3 = time.perf_counter()
        return EstimateResult(keypoints, None, stage_timings(t0, t1, t2, t3))
