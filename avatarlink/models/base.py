"""The estimator interface every model adapter implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from avatarlink.preprocess import Box
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import FloatArray, ImageArray, Keypoints, Space


@dataclass(frozen=True)
class EstimateResult:
    """What an estimator returns for one frame.

    Attributes:
        image: keypoints in source pixels, (P, K, 3) x, y, z (z NaN for 2D models), with scores.
        world: keypoints in metres (world frame of :mod:`avatarlink.types`) when the model gives
            3D, else None.
        timings_ms: wall time per step, e.g. ``preprocess``, ``inference``, ``decode``.
    """

    image: Keypoints
    world: Keypoints | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


class PoseEstimator(Protocol):
    """A pose model: BGR frame in, keypoints in source pixels out."""

    name: str
    layout: KeypointLayout

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider that runs the model."""
        ...

    def estimate(self, image: ImageArray, region: Box | None = None) -> EstimateResult:
        """Estimate the pose(s) in ``image`` (uint8 (H, W, 3) BGR), optionally inside ``region``."""
        ...

    def reset(self) -> None:
        """Forget any tracking state (a new sequence starts)."""
        ...


def keypoints_2d(
    xy: FloatArray,
    score: FloatArray,
    layout: KeypointLayout,
    keypoint_threshold: float,
    person_score: FloatArray | None = None,
    ids: npt.NDArray[np.int64] | None = None,
) -> Keypoints:
    """Image-space :class:`Keypoints` of a 2D model: z is NaN, points below the threshold NaN.

    Args:
        xy: float32 (P, K, 2) source pixels.
        score: float32 (P, K) in [0, 1].
        layout: the keypoint set.
        keypoint_threshold: scores below it mark a point missing (its score is kept).
        person_score: optional (P,) person confidences (default: mean keypoint score).
        ids: optional (P,) track ids.
    """
    xyz = np.concatenate([xy, np.full((*xy.shape[:-1], 1), np.nan, np.float32)], axis=-1)
    xyz[score < keypoint_threshold] = np.nan
    empty_f = np.zeros(0, np.float32)
    empty_i = np.zeros(0, np.int64)
    return Keypoints(
        xyz.astype(np.float32, copy=False),
        np.asarray(score, np.float32),
        layout,
        Space.IMAGE,
        person_score if person_score is not None else empty_f,
        ids if ids is not None else empty_i,
    )


def stage_timings(t0: float, t1: float, t2: float, t3: float) -> dict[str, float]:
    """Milliseconds of preprocess (t0..t1), inference (t1..t2) and decode (t2..t3)."""
    return {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3}
