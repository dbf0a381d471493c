"""Rotated square regions of interest (ROIs): alignment-point ROIs, rotated crops and their inverse.

Coordinates follow :mod:`avatarlink.preprocess`: continuous source pixels with the *corner*
convention ((0, 0) is the top-left corner of the top-left pixel), +x right, +y down.

A :class:`RotatedRect` is a square of side ``size`` centred at ``(cx, cy)`` whose own axes are
turned by ``rotation`` radians: its +u axis points along ``(cos r, sin r)`` and its +v axis along
``(-sin r, cos r)`` in source pixels. Because +y points down, a positive rotation turns the crop
clockwise on screen. A crop of ``out_size`` pixels maps crop point ``(u, v)`` to

    source = centre + R(r) @ ((u, v) - out_size / 2) * size / out_size

so the crop shows the region upright, with the crop's "up" (-v) along ``R(r) @ (0, -1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float64]


def normalize_radians(angle: float) -> float:
    """``angle`` wrapped into [-pi, pi); NaN and infinities give NaN."""
    if not math.isfinite(angle):
        return math.nan
    return float(angle - 2.0 * math.pi * math.floor((angle + math.pi) / (2.0 * math.pi)))


@dataclass(frozen=True)
class RotatedRect:
    """A rotated square region of a source frame (see the module docstring for the axes).

    Attributes:
        cx, cy: centre in source pixels.
        size: side length in source pixels.
        rotation: radians; positive turns the region clockwise on screen (image +y is down).
    """

    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    @property
    def valid(self) -> bool:
        """Finite centre, rotation and size, and a size above zero."""
        values = (self.cx, self.cy, self.size, self.rotation)
        return bool(all(math.isfinite(v) for v in values) and self.size > 0.0)

    def crop_to_source(self, out_size: int) -> Matrix:
        """The 2x3 affine mapping crop pixels (corner convention) to source pixels."""
        scale = self.size / out_size
        c = math.cos(self.rotation) * scale
        s = math.sin(self.rotation) * scale
        half = out_size / 2.0
        return np.array(
            [
                [c, -s, self.cx - c * half + s * half],
                [s, c, self.cy - s * half - c * half],
            ],
            np.float64,
        )

    def source_to_crop(self, out_size: int) -> Matrix:
        """The 2x3 affine mapping source pixels to crop pixels (corner convention)."""
        scale = out_size / self.size
        c = math.cos(self.rotation) * scale
        s = math.sin(self.rotation) * scale
        half = out_size / 2.0
        # Inverse of crop_to_source: R(-r) (p - centre) * out_size / size + half.
        return np.array(
            [
                [c, s, half - c * self.cx - s * self.cy],
                [-s, c, half + s * self.cx - c * self.cy],
            ],
            np.float64,
        )

    def to_source(self, uv: npt.ArrayLike, out_size: int) -> FloatArray:
        """Map crop pixels (..., 2) to source pixels (..., 2); NaN stays NaN."""
        return _apply(self.crop_to_source(out_size), uv)

    def to_crop(self, xy: npt.ArrayLike, out_size: int) -> FloatArray:
        """Map source pixels (..., 2) to crop pixels (..., 2)."""
        return _apply(self.source_to_crop(out_size), xy)

    def corners(self) -> FloatArray:
        """float32 (4, 2) corners in source pixels: top-left, top-right, bottom-right, bottom-left
        of the upright crop."""
        unit = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], np.float64)
        return self.to_source(unit, 1)

    def aabb(self) -> FloatArray:
        """float32 (4,) axis-aligned bounds x0, y0, x1, y1 in source pixels."""
        pts = self.corners()
        return np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float32)

    def frame_overlap(self, width: int, height: int) -> float:
        """How much of the region and a width x height frame overlap, in [0, 1].

        The intersection area over the smaller of the two areas: 1 when the region lies inside
        the frame *or* covers all of it (a close-up person whose ROI is larger than the frame),
        0 when they do not touch.
        """
        if not self.valid or width <= 0 or height <= 0:
            return 0.0
        corners = self.corners()
        if (corners.min(axis=0) >= 0).all() and (corners.max(axis=0) <= (width, height)).all():
            return 1.0  # the common case: the region lies inside the frame
        frame = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        area, _ = cv2.intersectConvexConvex(corners, frame)
        smaller = min(self.size * self.size, float(width) * float(height))
        return float(np.clip(area / smaller, 0.0, 1.0))


def _apply(matrix: Matrix, pts: npt.ArrayLike) -> FloatArray:
    p = np.asarray(pts, np.float64)
    out: FloatArray = (p @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
    return out


def roi_from_alignment_points(
    center: npt.ArrayLike,
    scale_point: npt.ArrayLike,
    scale: float = 1.25,
    target_angle: float = math.pi / 2.0,
) -> RotatedRect:
    """The ROI around two alignment points (MediaPipe's alignment-points rect, then scaled).

    The square is centred on ``center``, its side is ``2 * |scale_point - center| * scale`` and it
    is rotated so that the vector ``center -> scale_point`` points up in the crop.

    Args:
        center: (2,) source pixels, e.g. the mid-hip point.
        scale_point: (2,) source pixels, e.g. the full-body size/rotation point above the head.
        scale: enlargement of the side, dimensionless.
        target_angle: the angle (radians, counter-clockwise on screen from +x) that the vector
            should have in the crop; pi/2 = straight up.

    Returns:
        The ROI; not :attr:`RotatedRect.valid` when the points are NaN or coincide.
    """
    c = np.asarray(center, np.float64)
    p = np.asarray(scale_point, np.float64)
    dx, dy = float(p[0] - c[0]), float(p[1] - c[1])
    size = 2.0 * math.hypot(dx, dy) * scale
    # -dy because image +y points down while the angle is measured counter-clockwise on screen.
    rotation = normalize_radians(target_angle - math.atan2(-dy, dx))
    return RotatedRect(float(c[0]), float(c[1]), size, rotation)


def crop_rotated(
    image: npt.NDArray[np.generic],
    rect: RotatedRect,
    out_size: int,
    border: int = cv2.BORDER_REPLICATE,
) -> npt.NDArray[np.generic]:
    """Sample ``rect`` of ``image`` (H, W, C) into an upright (out_size, out_size, C) crop.

    Bilinear sampling (no anti-aliasing); the dtype and channel order are kept. Outside the frame
    the border mode decides (replicated edge pixels by default, as MediaPipe's landmark crop).
    """
    m = rect.source_to_crop(out_size)
    # OpenCV addresses pixel centres at integer coordinates: shift the corner-convention matrix.
    m_centres = m.copy()
    m_centres[:, 2] += m[:, :2].sum(axis=1) * 0.5 - 0.5
    out: npt.NDArray[np.generic] = cv2.warpAffine(
        image, m_centres, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=border
    )
    return out


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Pairwise intersection over union of axis-aligned boxes.

    Args:
        a: (N, 4) x0, y0, x1, y1.
        b: (M, 4) x0, y0, x1, y1.

    Returns:
        float32 (N, M) IoU in [0, 1]; 0 for empty or non-finite boxes.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0.0, None) * np.clip(y1 - y0, 0.0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0.0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0).astype(np.float32)
