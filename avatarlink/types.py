"""The data passed between pipeline stages, and the one place where spaces and axes are defined.

Spaces and axes
---------------
``image``
    Source-frame pixels. Origin at the top-left corner of the *source* frame (not the model input),
    +x right, +y down. ``z`` is the model's relative depth on the pixel scale where the model gives
    one, else NaN.
``world``
    Metres, **right-handed, +Y up, +X towards the camera's right, +Z towards the camera**; origin at
    the hip centre (mid-point of the two hips). A subject facing the camera faces +Z, so the
    subject's own left side is at +X (the camera sees a person as in a photograph, not a mirror).
    Rig rest poses (``rigs/*.yaml``) are expressed in this frame, facing +Z.
Unity
    Left-handed, +Y up, +Z forward, metres. Conversion to Unity happens **only** in the output stage
    (:mod:`avatarlink.outputs`), never in estimation, smoothing or solving.

Quaternions are ``xyzw`` everywhere (scipy's order). Mirroring (selfie view) is an explicit
option of the solver/outputs, never implied.

Missing keypoints are NaN in ``xyz`` together with a low ``score``; never 0 or -1.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from avatarlink.skeletons import KeypointLayout

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
ImageArray = npt.NDArray[np.uint8]


class Space(str, enum.Enum):
    """Coordinate space of a :class:`Keypoints` array (see the module docstring)."""

    IMAGE = "image"
    WORLD = "world"


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        image: uint8 (H, W, 3) BGR.
        t: capture time in seconds (monotonic clock for live sources, media time for files).
        index: frame number from the source (0-based; gaps mean dropped frames).
        source: a human-readable name of where the frame came from (path, camera index).
    """

    image: ImageArray
    t: float
    index: int
    source: str = ""


@dataclass(frozen=True)
class Keypoints:
    """Keypoints of P persons with K points each.

    Attributes:
        xyz: float32 (P, K, 3) positions in ``space`` units; NaN where missing.
        score: float32 (P, K) confidence in [0, 1]; low (typically 0) where missing.
        layout: the keypoint set (COCO-17, BlazePose-33, ...), giving K and the point names.
        space: ``Space.IMAGE`` (source pixels) or ``Space.WORLD`` (metres).
        person_score: float32 (P,) overall confidence per person.
        ids: int64 (P,) stable track ids (-1 when untracked).
    """

    xyz: FloatArray
    score: FloatArray
    layout: KeypointLayout
    space: Space = Space.IMAGE
    person_score: FloatArray = field(default_factory=lambda: np.zeros(0, np.float32))
    ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        xyz, score = self.xyz, self.score
        if xyz.ndim != 3 or xyz.shape[2] != 3:
            raise ValueError(f"Keypoints.xyz must be (P, K, 3), got {xyz.shape}")
        if score.shape != xyz.shape[:2]:
            raise ValueError(f"Keypoints.score must be {xyz.shape[:2]}, got {score.shape}")
        if xyz.shape[1] != self.layout.num_keypoints:
            raise ValueError(
                f"layout {self.layout.name} has {self.layout.num_keypoints} keypoints, "
                f"xyz has {xyz.shape[1]}"
            )
        num = xyz.shape[0]
        if self.person_score.shape != (num,):
            object.__setattr__(self, "person_score", _person_score_from(score))
        if self.ids.shape != (num,):
            object.__setattr__(self, "ids", np.full(num, -1, np.int64))

    @property
    def num_persons(self) -> int:
        """P, the number of persons (0 means "no person")."""
        return int(self.xyz.shape[0])

    @classmethod
    def empty(cls, layout: KeypointLayout, space: Space = Space.IMAGE) -> Keypoints:
        """The "no person" result: P = 0."""
        k = layout.num_keypoints
        return cls(np.zeros((0, k, 3), np.float32), np.zeros((0, k), np.float32), layout, space)


def _person_score_from(score: FloatArray) -> FloatArray:
    """Mean keypoint score per person, float32 (P,)."""
    if score.shape[0] == 0:
        return np.zeros(0, np.float32)
    return np.asarray(score.mean(axis=1), dtype=np.float32)


@dataclass(frozen=True)
class BoneRotations:
    """Local bone rotations of one person, relative to the rig's rest (T-)pose.

    Attributes:
        bones: humanoid bone names (Unity HumanBodyBones), length B.
        rot: float32 (B, 4) local rotations, quaternions xyzw, in the world frame's axes.
        root_pos: float32 (3,) hip position in metres (world frame).
        valid: bool (B,) whether each rotation comes from an observation this frame.
        t: capture time in seconds of the frame these come from.
        person_id: the person's track id (``Keypoints.ids``), -1 when untracked.
    """

    bones: tuple[str, ...]
    rot: FloatArray
    root_pos: FloatArray
    valid: BoolArray
    t: float
    person_id: int = -1


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline produced for one frame; observers (preview, recorder) receive it.

    Attributes:
        frame: the captured frame (its ``t`` is the capture time every stage carries).
        raw: estimator keypoints in source pixels, before smoothing.
        smoothed: keypoints in source pixels after smoothing.
        world: world-space keypoints (metres) fed to the solver (lifted or from a 3D model),
            or None.
        rotations: solved bone rotations, one entry per person.
        timings_ms: wall time per stage of this frame, e.g. ``{"inference": 3.1, "solve": 0.1}``.
        latency_ms: capture time to the end of sending, in ms.
        provider: the execution provider that ran the model.
        stats: running counters (``fps``, ``dropped``, ``packets_sent``, ``errors``, per-sink
            counts as ``packets_sent[vmc://127.0.0.1:39539]`` ...).
    """

    frame: Frame
    raw: Keypoints
    smoothed: Keypoints
    world: Keypoints | None
    rotations: tuple[BoneRotations, ...]
    timings_ms: dict[str, float]
    latency_ms: float
    provider: str
    stats: dict[str, float]


class RigLike(Protocol):
    """The parts of a rig that sinks and the synthetic performer need (``avatarlink.rig.Rig``).

    Attributes:
        bones: ``HumanBodyBones`` names, parent first, length B.
        parents: int (B,) parent index, -1 for the root.
        rest_local_positions: float32 (B, 3) metres, world frame: each bone's rest offset from its
            parent (the root's from the floor point below it, or from the origin).
    """

    @property
    def bones(self) -> Sequence[str]: ...

    @property
    def parents(self) -> npt.NDArray[np.integer[Any]]: ...

    @property
    def rest_local_positions(self) -> npt.NDArray[np.floating[Any]]: ...
