"""Pure numpy/OpenCV preprocessing: letterbox a frame (or a person crop) into a model input.

Coordinates are continuous pixel coordinates with the *corner* convention: (0, 0) is the top-left
corner of the top-left pixel, whose centre is (0.5, 0.5). Model outputs normalised to [0, 1] of the
input map to model pixels by a plain multiply (x_norm * width), so both sides share this convention.

A letterbox (optionally of a crop) is the axis-aligned similarity
``model = source * scale + offset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink.errors import InputError
from avatarlink.types import ImageArray

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Box:
    """An axis-aligned region in source pixels: top-left (x, y), width w and height h."""

    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.w, self.h)
        if not all(np.isfinite(values)) or self.w <= 0 or self.h <= 0:
            raise InputError(f"invalid box x={self.x}, y={self.y}, w={self.w}, h={self.h}")

    @classmethod
    def parse(cls, text: str) -> Box:
        """Parse ``"x,y,w,h"`` (source pixels)."""
        parts = text.split(",")
        try:
            x, y, w, h = (float(p) for p in parts)
        except ValueError:
            raise InputError(f"--bbox must be x,y,w,h in pixels, got {text!r}") from None
        return cls(x, y, w, h)


@dataclass(frozen=True)
class Letterbox:
    """The similarity ``model_xy = source_xy * scale + (offset_x, offset_y)``.

    Attributes:
        scale: model pixels per source pixel.
        offset_x, offset_y: model-pixel position of the source origin.
        width, height: model input size in pixels.
    """

    scale: float
    offset_x: float
    offset_y: float
    width: int
    height: int

    def to_source(self, xy: FloatArray) -> FloatArray:
        """Map model-input pixels (..., 2) to source pixels (..., 2); NaN stays NaN."""
        offset = np.array([self.offset_x, self.offset_y], np.float32)
        out: FloatArray = ((xy - offset) / np.float32(self.scale)).astype(np.float32)
        return out

    def to_model(self, xy: FloatArray) -> FloatArray:
        """Map source pixels (..., 2) to model-input pixels (..., 2)."""
        offset = np.array([self.offset_x, self.offset_y], np.float32)
        out: FloatArray = (xy * np.float32(self.scale) + offset).astype(np.float32)
        return out

    def matrix(self) -> npt.NDArray[np.float64]:
        """The 2x3 affine for ``cv2.warpAffine`` (OpenCV samples at pixel centres).

        With centres at integer coordinates: model_c + 0.5 = scale * (source_c + 0.5) + offset.
        """
        s = self.scale
        tx = self.offset_x + 0.5 * s - 0.5
        ty = self.offset_y + 0.5 * s - 0.5
        return np.array([[s, 0.0, tx], [0.0, s, ty]], np.float64)


def fit_letterbox(region: Box, width: int, height: int) -> Letterbox:
    """The letterbox that fits ``region`` (source pixels) centred into a width x height input."""
    scale = min(width / region.w, height / region.h)
    offset_x = (width - region.w * scale) / 2.0 - region.x * scale
    offset_y = (height - region.h * scale) / 2.0 - region.y * scale
    return Letterbox(scale, offset_x, offset_y, width, height)


def check_image(image: object, name: str = "image") -> ImageArray:
    """Validate a BGR frame: uint8 ndarray (H, W, 3) with H, W >= 1; raises InputError otherwise."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{name} must be uint8 (0..255 BGR), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name} must be (H, W, 3) BGR, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name} is empty: shape {image.shape}")
    return image


def letterbox_image(
    image: ImageArray, width: int, height: int, region: Box | None = None
) -> tuple[ImageArray, Letterbox]:
    """Letterbox ``image`` (or ``region`` of it) into an RGB (height, width, 3) uint8 model input.

    Areas outside the source frame are black. With a ``region`` whose aspect differs from the
    input's, the region is centred and the input is filled with the surrounding frame (context)
    rather than black bars. Bilinear sampling without anti-aliasing, as MoveNet's own
    resize-with-pad does.

    Returns:
        The RGB input image and the :class:`Letterbox` that maps its pixels back to the source.
    """
    image = check_image(image)
    h, w = image.shape[:2]
    box = region or Box(0.0, 0.0, float(w), float(h))
    lb = fit_letterbox(box, width, height)
    # Warp from the integer-aligned window the input sees, so that a crop's sampling depends only
    # on the crop and not on where it sits in the frame (OpenCV quantises sampling positions to
    # 1/32 px relative to the source origin).
    corners = lb.to_source(np.array([[0, 0], [width, height]], np.float32)).tolist()
    x0 = min(max(math.floor(corners[0][0]) - 1, 0), w)
    y0 = min(max(math.floor(corners[0][1]) - 1, 0), h)
    x1 = min(max(math.ceil(corners[1][0]) + 1, x0), w)
    y1 = min(max(math.ceil(corners[1][1]) + 1, y0), h)
    window = image[y0:y1, x0:x1] if (x1 > x0 and y1 > y0) else image[:1, :1] * 0
    shifted = Letterbox(
        lb.scale, lb.offset_x + x0 * lb.scale, lb.offset_y + y0 * lb.scale, width, height
    )
    # OpenCV's bilinear remap has a vectorised path for 4 channels but not for 3: warping BGRA
    # and dropping alpha gives the same pixels in about half the time.
    out = cv2.warpAffine(
        cv2.cvtColor(window, cv2.COLOR_BGR2BGRA),
        shifted.matrix(),
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    rgb: ImageArray = cv2.cvtColor(out, cv2.COLOR_BGRA2RGB)
    return rgb, lb
