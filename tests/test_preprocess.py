"""Letterbox/crop transforms: exact round trips and pixel-accurate sampling."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink.errors import InputError
from avatarlink.preprocess import Box, check_image, fit_letterbox, letterbox_image

FRAME_SIZES = [(640, 480), (1280, 720), (720, 1280), (1920, 1080), (333, 777)]  # (w, h)


@pytest.mark.parametrize(("w", "h"), FRAME_SIZES)
@pytest.mark.parametrize(("in_w", "in_h"), [(192, 192), (256, 256), (385, 385)])
def test_round_trip_is_exact(w: int, h: int, in_w: int, in_h: int) -> None:
    rng = np.random.default_rng(w * h)
    lb = fit_letterbox(Box(0, 0, w, h), in_w, in_h)
    src = rng.uniform([0, 0], [w, h], size=(1000, 2)).astype(np.float32)
    back = lb.to_source(lb.to_model(src))
    assert np.abs(back - src).max() < 1e-3
    # the frame fills the input on its long side and is centred on the short side
    corners = lb.to_model(np.array([[0, 0], [w, h]], np.float32))
    assert np.allclose(corners[0] + corners[1], [in_w, in_h], atol=1e-3)
    assert min(corners[0]) == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(("w", "h"), FRAME_SIZES)
def test_sampled_pixels_land_where_the_transform_says(w: int, h: int) -> None:
    """A bright dot drawn in the source appears at lb.to_model(dot) in the letterboxed input."""
    image = np.zeros((h, w, 3), np.uint8)
    cx, cy = int(w * 0.3), int(h * 0.7)
    r = max(w, h) // 40
    image[cy - r : cy + r, cx - r : cx + r] = 255
    rgb, lb = letterbox_image(image, 192, 192)
    ys, xs = np.nonzero(rgb[..., 0] > 127)
    found = np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel centres, corner convention
    expected = lb.to_model(np.array([cx, cy], np.float32))  # the square's centre (corner conv.)
    assert np.abs(found - expected).max() < 0.75


def test_letterbox_pads_black_and_keeps_aspect() -> None:
    image = np.full((480, 640, 3), 200, np.uint8)
    rgb, lb = letterbox_image(image, 192, 192)
    assert rgb.shape == (192, 192, 3)
    assert lb.scale == pytest.approx(192 / 640)
    assert rgb[:20].max() == 0 and rgb[-20:].max() == 0  # bars top and bottom
    assert rgb[96, 96].tolist() == [200, 200, 200]


@pytest.mark.parametrize(
    "box", [Box(-50, -40, 200, 300), Box(500, 300, 300, 300), Box(100, 100, 50, 120)]
)
def test_crop_round_trip_at_frame_edges(box: Box) -> None:
    lb = fit_letterbox(box, 256, 256)
    centre = np.array([[box.x + box.w / 2, box.y + box.h / 2]], np.float32)
    assert np.allclose(lb.to_model(centre), [[128, 128]], atol=1e-3)
    pts = np.array([[box.x, box.y], [box.x + box.w, box.y + box.h]], np.float32)
    assert np.abs(lb.to_source(lb.to_model(pts)) - pts).max() < 1e-3
    image = np.full((480, 640, 3), 90, np.uint8)
    rgb, _ = letterbox_image(image, 256, 256, box)
    assert rgb.shape == (256, 256, 3)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10), np.uint8), "(H, W, 3)"),
        (np.zeros((10, 10, 4), np.uint8), "(H, W, 3)"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_are_rejected_with_the_problem_named(image: object, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_image(image)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "0,0,-5,10", "0,0,nan,10"])
def test_bad_boxes(text: str) -> None:
    with pytest.raises(InputError):
        Box.parse(text)
