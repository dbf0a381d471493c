"""The estimator interface every model adapter implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from avatarlink.preprocess import Box
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import ImageArray, Keypoints


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
