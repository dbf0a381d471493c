"""Keypoint sets: point names and indices, skeleton edges for drawing, and mappings between sets.

"left" and "right" are always the person's own sides.
"""

from __future__ import annotations

import enum
import functools

import numpy as np
import numpy.typing as npt


class Coco17(enum.IntEnum):
    """COCO-17 keypoints, in the order MoveNet and PoseNet output them."""

    NOSE = 0
    LEFT_EYE = 1
    RIGHT_EYE = 2
    LEFT_EAR = 3
    RIGHT_EAR = 4
    LEFT_SHOULDER = 5
    RIGHT_SHOULDER = 6
    LEFT_ELBOW = 7
    RIGHT_ELBOW = 8
    LEFT_WRIST = 9
    RIGHT_WRIST = 10
    LEFT_HIP = 11
    RIGHT_HIP = 12
    LEFT_KNEE = 13
    RIGHT_KNEE = 14
    LEFT_ANKLE = 15
    RIGHT_ANKLE = 16


class BlazePose33(enum.IntEnum):
    """BlazePose-33 keypoints (MediaPipe Pose topology)."""

    NOSE = 0
    LEFT_EYE_INNER = 1
    LEFT_EYE = 2
    LEFT_EYE_OUTER = 3
    RIGHT_EYE_INNER = 4
    RIGHT_EYE = 5
    RIGHT_EYE_OUTER = 6
    LEFT_EAR = 7
    RIGHT_EAR = 8
    MOUTH_LEFT = 9
    MOUTH_RIGHT = 10
    LEFT_SHOULDER = 11
    RIGHT_SHOULDER = 12
    LEFT_ELBOW = 13
    RIGHT_ELBOW = 14
    LEFT_WRIST = 15
    RIGHT_WRIST = 16
    LEFT_PINKY = 17
    RIGHT_PINKY = 18
    LEFT_INDEX = 19
    RIGHT_INDEX = 20
    LEFT_THUMB = 21
    RIGHT_THUMB = 22
    LEFT_HIP = 23
    RIGHT_HIP = 24
    LEFT_KNEE = 25
    RIGHT_KNEE = 26
    LEFT_ANKLE = 27
    RIGHT_ANKLE = 28
    LEFT_HEEL = 29
    RIGHT_HEEL = 30
    LEFT_FOOT_INDEX = 31
    RIGHT_FOOT_INDEX = 32


_COCO17_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)  # fmt: skip

_BLAZEPOSE33_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10),
    (11, 12), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19),
    (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)  # fmt: skip


class KeypointLayout(enum.Enum):
    """A keypoint set. ``value`` is the name used in JSON output and config files."""

    COCO17 = "coco17"
    BLAZEPOSE33 = "blazepose33"

    @property
    def names(self) -> tuple[str, ...]:
        """Lower-case point names in index order."""
        return _names(self.value)

    @property
    def num_keypoints(self) -> int:
        """K, the number of points."""
        return len(_names(self.value))

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Pairs of point indices joined when drawing the skeleton."""
        return _COCO17_EDGES if self is KeypointLayout.COCO17 else _BLAZEPOSE33_EDGES

    def index(self, name: str) -> int:
        """Index of a point by case-insensitive name; ``KeyError`` names the layout if absent."""
        try:
            return self.names.index(name.lower())
        except ValueError:
            raise KeyError(f"no keypoint {name!r} in layout {self.value}") from None

    @classmethod
    def from_name(cls, name: str) -> KeypointLayout:
        """Parse ``coco17`` / ``blazepose33``; ``ValueError`` lists the valid names."""
        for member in cls:
            if member.value == name.lower():
                return member
        raise ValueError(f"unknown keypoint layout {name!r}; valid: {[m.value for m in cls]}")


@functools.cache
def _names(layout: str) -> tuple[str, ...]:
    enum_cls = Coco17 if layout == KeypointLayout.COCO17.value else BlazePose33
    return tuple(member.name.lower() for member in enum_cls)


def blazepose_to_coco_indices() -> npt.NDArray[np.int64]:
    """Indices into BlazePose-33 that give the COCO-17 points, int64 (17,)."""
    return np.array([BlazePose33[name.upper()] for name in KeypointLayout.COCO17.names], np.int64)
