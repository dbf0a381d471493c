"""Rotated ROIs: alignment-point ROIs, the rotated crop and its exact inverse."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from avatarlink.roi import (
    RotatedRect,
    box_iou,
    crop_rotated,
    normalize_radians,
    roi_from_alignment_points,
)

RECTS = [
    RotatedRect(100.0, 80.0, 120.0, 0.0),
    RotatedRect(150.5, 60.25, 90.0, math.pi / 2),
    RotatedRect(90.0, 140.0, 64.0, -0.7),
    RotatedRect(120.0, 100.0, 150.0, 2.9),
    RotatedRect(30.0, 20.0, 400.0, 1.1),  # mostly outside a small frame
]


@pytest.mark.parametrize("rect", RECTS)
@pytest.mark.parametrize("out_size", [224, 256])
def test_matrices_are_exact_inverses(rect: RotatedRect, out_size: int) -> None:
    fwd = np.vstack([rect.crop_to_source(out_size), [0.0, 0.0, 1.0]])
    inv = np.vstack([rect.source_to_crop(out_size), [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(fwd @ inv, np.eye(3), atol=1e-12)
    rng = np.random.default_rng(0)
    uv = rng.uniform(-50, out_size + 50, (100, 2))
    np.testing.assert_allclose(rect.to_crop(rect.to_source(uv, out_size), out_size), uv, atol=2e-4)


@pytest.mark.parametrize("rect", RECTS[:4])
def test_crop_geometry(rect: RotatedRect) -> None:
    s = 256
    # Centre of the crop is the ROI centre; crop corners are the ROI corners; side = size.
    np.testing.assert_allclose(rect.to_source([s / 2, s / 2], s), [rect.cx, rect.cy], atol=1e-4)
    corners = rect.corners()
    np.testing.assert_allclose(rect.to_source([[0, 0], [s, 0], [s, s], [0, s]], s), corners, 1e-5)
    sides = np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1)
    np.testing.assert_allclose(sides, rect.size, rtol=1e-5)
    # The crop's +u axis is (cos r, sin r) in the source.
    step = rect.to_source([s / 2 + 1, s / 2], s) - rect.to_source([s / 2, s / 2], s)
    expected = np.array([math.cos(rect.rotation), math.sin(rect.rotation)]) * rect.size / s
    np.testing.assert_allclose(step, expected, atol=1e-4)


@pytest.mark.parametrize("shape", [(300, 200), (200, 300)])  # portrait and landscape frames
@pytest.mark.parametrize("rect", RECTS[:4])
def test_crop_samples_where_the_matrix_says(shape: tuple[int, int], rect: RotatedRect) -> None:
    """On a linear ramp image, bilinear sampling is exact: each crop pixel holds the source
    coordinate of its centre (corner convention: pixel column c holds value c + 0.5)."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.dstack([xs + 0.5, ys + 0.5, np.zeros_like(xs)])
    out_size = 64
    crop = crop_rotated(ramp, rect, out_size, cv2.BORDER_CONSTANT)
    jj, ii = np.meshgrid(np.arange(out_size) + 0.5, np.arange(out_size) + 0.5)
    expected = rect.to_source(np.stack([jj, ii], axis=-1), out_size)
    # Compare only where the bilinear neighbourhood is fully inside the frame.
    inside = (
        (expected[..., 0] > 1) & (expected[..., 0] < w - 1)
        & (expected[..., 1] > 1) & (expected[..., 1] < h - 1)
    )  # fmt: skip
    assert inside.sum() > 100
    # OpenCV quantises sample positions to 1/32 px.
    np.testing.assert_allclose(
        np.asarray(crop, np.float64)[..., :2][inside], expected[inside], atol=0.05
    )


@pytest.mark.parametrize("shape", [(480, 320), (320, 480)])
def test_dot_round_trip_through_a_real_crop(shape: tuple[int, int]) -> None:
    """A bright dot drawn in the source lands in the crop where to_crop says, and back."""
    h, w = shape
    image = np.zeros((h, w, 3), np.uint8)
    dot = np.array([w * 0.6, h * 0.4])
    # OpenCV drawing addresses pixel centres at integers: corner-convention point p is p - 0.5.
    centre = np.round((dot - 0.5) * 16).astype(int)
    cv2.circle(image, (int(centre[0]), int(centre[1])), 3 * 16, (255, 255, 255), -1,
               cv2.LINE_AA, shift=4)  # fmt: skip
    rect = RotatedRect(w * 0.5, h * 0.5, min(h, w) * 0.8, 0.9)
    crop = crop_rotated(image, rect, 256)
    weight = crop[..., 0].astype(np.float64)
    ii, jj = np.mgrid[0:256, 0:256] + 0.5
    found = np.array([(weight * jj).sum(), (weight * ii).sum()]) / weight.sum()
    np.testing.assert_allclose(found, rect.to_crop(dot, 256), atol=0.2)
    np.testing.assert_allclose(rect.to_source(found, 256), dot, atol=0.2)


@pytest.mark.parametrize("angle_deg", [90, 0, 180, -90, 37, -150])
def test_alignment_roi_puts_the_scale_point_straight_up(angle_deg: float) -> None:
    centre = np.array([200.0, 150.0])
    # The direction hip -> head in screen terms (counter-clockwise, y up on screen).
    a = math.radians(angle_deg)
    head = centre + 60.0 * np.array([math.cos(a), -math.sin(a)])
    roi = roi_from_alignment_points(centre, head, scale=1.25)
    assert roi.size == pytest.approx(2 * 60 * 1.25)
    assert (roi.cx, roi.cy) == (200.0, 150.0)
    u, v = roi.to_crop(head, 256)
    assert u == pytest.approx(128, abs=1e-3)
    assert v == pytest.approx(128 - 60 * 256 / roi.size, abs=1e-3)
    # An upright person (head above the hips) needs no rotation.
    if angle_deg == 90:
        assert roi.rotation == pytest.approx(0.0)


def test_degenerate_alignment_points_give_an_invalid_roi() -> None:
    assert not roi_from_alignment_points([10, 10], [10, 10]).valid
    assert not roi_from_alignment_points([np.nan, 10], [10, 30]).valid
    assert not RotatedRect(0, 0, np.inf).valid
    assert RotatedRect(0, 0, 1.0).valid


def test_frame_overlap() -> None:
    assert RotatedRect(50, 50, 20).frame_overlap(100, 100) == pytest.approx(1.0)
    assert RotatedRect(0, 0, 20).frame_overlap(100, 100) == pytest.approx(0.25)
    assert RotatedRect(100, 50, 20, math.pi / 4).frame_overlap(100, 100) == pytest.approx(0.5)
    # A close-up ROI larger than the frame covers all of it.
    assert RotatedRect(50, 120, 600, 0.3).frame_overlap(100, 100) == pytest.approx(1.0)
    assert RotatedRect(50, 250, 400).frame_overlap(100, 100) == pytest.approx(0.5)
    assert RotatedRect(500, 500, 20).frame_overlap(100, 100) == 0.0
    assert RotatedRect(np.nan, 0, 20).frame_overlap(100, 100) == 0.0
    assert RotatedRect(50, 50, 20).frame_overlap(0, 0) == 0.0


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0], [np.nan, 0, 1, 1]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (3, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_array_equal(iou[1:], 0.0)


def test_normalize_radians() -> None:
    angles = np.linspace(-10, 10, 41)
    wrapped = np.array([normalize_radians(a) for a in angles])
    assert ((wrapped >= -math.pi) & (wrapped < math.pi)).all()
    np.testing.assert_allclose(np.sin(wrapped), np.sin(angles), atol=1e-12)
    np.testing.assert_allclose(np.cos(wrapped), np.cos(angles), atol=1e-12)
