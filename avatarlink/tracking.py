"""Person tracking for top-down models: the next crop from this frame's keypoints, and identities.

Crop tracking follows MoveNet's published "intelligent cropping": a square centred on the hips
(when the torso is confident), sized to hold the torso and the farthest confident keypoint with a
margin, clamped to the frame (padding when it leaves it), and the whole frame again when too few
keypoints are confident. Single-pose models see at most 192 or 256 pixels; spending them on the
person instead of the room is the cheapest accuracy and stability gain there is.

Identity tracking matches detections to tracks by box IoU with a constant-velocity prediction
(Hungarian assignment), so crossing people keep their ids.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ConfigError
from avatarlink.preprocess import Box
from avatarlink.roi import box_iou
from avatarlink.skeletons import Coco17
from avatarlink.types import ImageArray

if TYPE_CHECKING:
    from avatarlink.models.base import EstimateResult, PoseEstimator

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

_TORSO = np.array([Coco17.LEFT_SHOULDER, Coco17.RIGHT_SHOULDER, Coco17.LEFT_HIP, Coco17.RIGHT_HIP])
_HIPS = np.array([Coco17.LEFT_HIP, Coco17.RIGHT_HIP])
_TORSO_MASK = np.zeros(17, bool)
_TORSO_MASK[_TORSO] = True


@dataclass(frozen=True)
class CropTrackingConfig:
    """Tuning of the crop tracker (dimensionless ratios unless stated).

    Attributes:
        crop: track the person with a crop (single-pose models); false = whole frame always.
        min_score: keypoint score needed to count as confident.
        min_keypoints: confident COCO-17 keypoints needed to keep tracking (else whole frame).
        torso_expansion: crop half-size >= this x the largest torso-joint distance from the centre.
        body_expansion: crop half-size >= this x the farthest confident keypoint from the centre.
        min_size_px: smallest crop side in source pixels (guards degenerate poses).
        hold: the previous crop is kept while the new one's centre moved less than this fraction
            of its side and its side changed by less than that (shrank by less than twice that),
            and it still holds every confident keypoint. A crop that follows every wobble of the
            keypoints feeds that wobble back into the model input; holding it removes most of
            the added jitter.
    """

    crop: bool = True
    min_score: float = 0.2
    min_keypoints: int = 6
    torso_expansion: float = 1.9
    body_expansion: float = 1.2
    min_size_px: float = 32.0
    hold: float = 0.1

    def __post_init__(self) -> None:
        checks = (
            ("min_score", 0.0 <= self.min_score <= 1.0, "must be in 0..1"),
            ("min_keypoints", 1 <= self.min_keypoints <= 17, "must be 1..17 keypoints"),
            ("torso_expansion", self.torso_expansion > 0, "must be > 0"),
            ("body_expansion", self.body_expansion > 0, "must be > 0"),
            ("min_size_px", self.min_size_px > 0, "must be > 0 px"),
            ("hold", 0.0 <= self.hold < 1.0, "must be in 0..1 (a fraction of the crop side)"),
        )
        for key, ok, rule in checks:
            if not ok:
                raise ConfigError(f"tracking.{key} {rule}, got {getattr(self, key)}")


class CropTracker:
    """Derives the next frame's crop from this frame's keypoints (COCO-17, source pixels)."""

    def __init__(self, config: CropTrackingConfig | None = None) -> None:
        self.config = config or CropTrackingConfig()
        self.region: Box | None = None
        self.resets = 0
        self._warned = False

    def reset(self) -> None:
        """Back to whole-frame search."""
        self.region = None

    def update(self, xyz: FloatArray, score: FloatArray, width: int, height: int) -> Box | None:
        """Compute and remember the crop for the next frame.

        Args:
            xyz: float32 (17, 3) one person's keypoints in source pixels (NaN = missing), or an
                empty array when nobody was found.
            score: float32 (17,) keypoint scores.
            width, height: source frame size in pixels.

        Returns:
            The next region (square, may extend past the frame), or None for the whole frame.
        """
        self.region = self._next_region(xyz, score, width, height)
        return self.region

    def _next_region(
        self, xyz: FloatArray, score: FloatArray, width: int, height: int
    ) -> Box | None:
        cfg = self.config
        if xyz.shape[0] == 0 or width < 1 or height < 1:
            self._lose(None)
            return None
        xy = xyz[:, :2].astype(np.float64)
        confident = (score >= cfg.min_score) & np.isfinite(xy).all(axis=1)
        if int(confident.sum()) < cfg.min_keypoints:
            self._lose(None)
            return None
        if confident[_HIPS].all():
            centre = xy[_HIPS].mean(axis=0)
        else:
            centre = xy[confident].mean(axis=0)
        dist = np.abs(xy - centre).max(axis=1)  # Chebyshev distance: the square must hold them
        torso = confident & _TORSO_MASK
        torso_range = float(dist[torso].max()) if torso.any() else 0.0
        body_range = float(dist[confident].max())
        half = max(torso_range * cfg.torso_expansion, body_range * cfg.body_expansion)
        half = max(half, cfg.min_size_px / 2.0)
        half = min(half, max(width, height) / 2.0)  # never larger than the frame's long side
        cx, cy = float(centre[0]), float(centre[1])
        if not (math.isfinite(half) and math.isfinite(cx) and math.isfinite(cy)):
            self._lose("crop became NaN")
            return None
        side = 2.0 * half
        prev = self.region
        if prev is not None and cfg.hold > 0:
            shift = max(abs(cx - (prev.x + prev.w / 2)), abs(cy - (prev.y + prev.h / 2)))
            grow = side / prev.w - 1.0
            pts = xy[confident]
            lo = pts.min(axis=0)
            hi = pts.max(axis=0)
            inside = bool(
                lo[0] > prev.x
                and hi[0] < prev.x + prev.w
                and lo[1] > prev.y
                and hi[1] < prev.y + prev.h
            )
            if inside and shift < cfg.hold * prev.w and -2 * cfg.hold < grow < cfg.hold:
                return prev
        return Box(cx - half, cy - half, side, side)

    def _lose(self, reason: str | None) -> None:
        if self.region is not None:
            self.resets += 1
        if reason and not self._warned:
            log.warning("crop tracking reset: %s (further resets are counted only)", reason)
            self._warned = True
        return None


class CropTrackedEstimator:
    """Wraps a single-pose COCO-17 estimator: each frame is cropped around the person found in
    the previous one; a crop that loses the person falls back to the whole frame in the same call.

    Args:
        inner: an estimator whose ``estimate(image, region)`` accepts a region.
        config: crop tracking settings.
    """

    def __init__(self, inner: PoseEstimator, config: CropTrackingConfig | None = None) -> None:
        self.inner = inner
        self.tracker = CropTracker(config)
        self.name = inner.name
        self.layout = inner.layout

    @property
    def provider(self) -> str:
        """The execution provider of the wrapped model."""
        return self.inner.provider

    def reset(self) -> None:
        """Forget the crop and the wrapped model's state."""
        self.tracker.reset()
        self.inner.reset()

    def estimate(self, image: ImageArray, region: Box | None = None) -> EstimateResult:
        """Keypoints in source pixels; an explicit ``region`` overrides the tracked crop."""
        if region is not None:
            return self.inner.estimate(image, region)
        tracker = self.tracker
        result = self.inner.estimate(image, tracker.region)
        if result.image.num_persons == 0 and tracker.region is not None:
            from avatarlink.models.base import EstimateResult

            retry = self.inner.estimate(image, None)  # lost in the crop: search the whole frame
            timings = {k: v + retry.timings_ms.get(k, 0.0) for k, v in result.timings_ms.items()}
            result = EstimateResult(retry.image, retry.world, timings)
        kp = result.image
        height, width = image.shape[:2]
        if kp.num_persons:
            tracker.update(kp.xyz[0], kp.score[0], width, height)
        else:
            tracker.update(kp.xyz.reshape(0, 3), kp.score.reshape(0), width, height)
        return result


@dataclass(frozen=True)
class IdentityConfig:
    """Identity matching.

    Attributes:
        min_iou: a detection continues a track only above this IoU with its predicted box.
        max_missed: frames a track survives without a match.
        velocity_smoothing: weight of the newest box motion in the velocity estimate (0..1).
    """

    min_iou: float = 0.2
    max_missed: int = 15
    velocity_smoothing: float = 0.5


class IdentityTracker:
    """Keeps stable integer ids for boxes across frames."""

    def __init__(self, config: IdentityConfig | None = None) -> None:
        self.config = config or IdentityConfig()
        self._boxes = np.zeros((0, 4), np.float32)
        self._velocity = np.zeros((0, 4), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._missed = np.zeros(0, np.int64)
        self._next_id = 0

    def reset(self) -> None:
        """Forget every track (ids restart from 0)."""
        self.__init__(self.config)  # type: ignore[misc]

    def assign(self, boxes: FloatArray) -> npt.NDArray[np.int64]:
        """Ids for this frame's boxes (N, 4) x0, y0, x1, y1 -> int64 (N,)."""
        from scipy.optimize import linear_sum_assignment

        cfg = self.config
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        predicted = self._boxes + self._velocity
        ids = np.full(len(boxes), -1, np.int64)
        matched_tracks = np.zeros(len(self._ids), bool)
        if len(boxes) and len(self._ids):
            iou = box_iou(boxes, predicted)
            rows, cols = linear_sum_assignment(-iou)
            keep = iou[rows, cols] >= cfg.min_iou
            rows, cols = rows[keep], cols[keep]
            ids[rows] = self._ids[cols]
            motion = boxes[rows] - self._boxes[cols]
            w = cfg.velocity_smoothing
            self._velocity[cols] = w * motion + (1 - w) * self._velocity[cols]
            self._boxes[cols] = boxes[rows]
            self._missed[cols] = 0
            matched_tracks[cols] = True
        self._missed[~matched_tracks] += 1
        alive = self._missed <= cfg.max_missed
        self._boxes, self._velocity = self._boxes[alive], self._velocity[alive]
        self._ids, self._missed = self._ids[alive], self._missed[alive]
        new = np.flatnonzero(ids < 0)
        if len(new):
            new_ids = np.arange(self._next_id, self._next_id + len(new), dtype=np.int64)
            self._next_id += len(new)
            ids[new] = new_ids
            self._boxes = np.concatenate([self._boxes, boxes[new]])
            self._velocity = np.concatenate([self._velocity, np.zeros((len(new), 4), np.float32)])
            self._ids = np.concatenate([self._ids, new_ids])
            self._missed = np.concatenate([self._missed, np.zeros(len(new), np.int64)])
        return ids
