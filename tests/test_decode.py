"""Heatmap decoding (avatarlink.decode): exactness, tie rule, sub-pixel refinement, upsampling."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink.decode import (
    POSENET_GRID_ORIGIN,
    POSENET_STRIDE,
    REFINE_METHODS,
    RefineSettings,
    argmax_cells,
    decode_heatmaps,
    decode_near,
    decode_offsets,
    decode_posenet,
    refine_peaks,
    sigmoid,
    upsample_heatmaps,
)
from avatarlink.errors import InputError

SIGMA = 1.5  # cells: the width of the synthetic Gaussian peaks


def reference_decode(heatmap: np.ndarray, offsets: np.ndarray, stride: float) -> np.ndarray:
    """Slow, obvious PoseNet decode: loops over keypoints and cells, first maximum wins."""
    h, w, k = heatmap.shape
    out = np.zeros((k, 3), np.float32)
    for kp in range(k):
        best, best_r, best_c = -np.inf, 0, 0
        for r in range(h):
            for c in range(w):
                if heatmap[r, c, kp] > best:  # strict: an equal later cell does not win
                    best, best_r, best_c = heatmap[r, c, kp], r, c
        dy = offsets[best_r, best_c, kp]
        dx = offsets[best_r, best_c, k + kp]
        out[kp, 0] = np.float32(best_r * stride) + dy + np.float32(POSENET_GRID_ORIGIN)
        out[kp, 1] = np.float32(best_c * stride) + dx + np.float32(POSENET_GRID_ORIGIN)
        out[kp, 2] = 1.0 / (1.0 + np.exp(-np.float64(best)))
    return out


def gaussian_maps(size: int, centres: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """(size, size, K) Gaussians with peak 1 at ``centres`` (K, 2) (y, x) in cell coordinates."""
    grid = np.arange(size, dtype=np.float64)
    gy = np.exp(-((grid[:, None] - centres[None, :, 0]) ** 2) / (2 * sigma**2))  # (size, K)
    gx = np.exp(-((grid[:, None] - centres[None, :, 1]) ** 2) / (2 * sigma**2))
    maps: np.ndarray = (gy[:, None, :] * gx[None, :, :]).astype(np.float32)
    return maps


def mean_error(method: str, size: int, noise: float, rng: np.random.Generator) -> float:
    k = 300
    centres = rng.uniform(2.0, size - 3.0, size=(k, 2))
    maps = gaussian_maps(size, centres)
    if noise:
        maps = np.clip(maps + rng.normal(0.0, noise, maps.shape), 0.0, None).astype(np.float32)
    settings = RefineSettings(dark_sigma=SIGMA)
    peaks = decode_heatmaps(maps, method, "prob", settings)
    return float(np.linalg.norm(peaks.yx - centres, axis=1).mean())


@pytest.mark.parametrize("shape", [(25, 25), (17, 33), (46, 46), (1, 1), (2, 9)])
def test_offsets_decode_matches_slow_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    heatmap = np.round(rng.normal(size=(h, w, 17)), 1).astype(np.float32)  # rounding makes ties
    heatmap[..., 4] = 0.5  # a channel that is all one tie
    offsets = rng.normal(0.0, 8.0, size=(h, w, 34)).astype(np.float32)
    fast = decode_offsets(heatmap, offsets)
    slow = reference_decode(heatmap, offsets, POSENET_STRIDE)
    np.testing.assert_array_equal(fast[:, :2], slow[:, :2])
    np.testing.assert_allclose(fast[:, 2], slow[:, 2], rtol=1e-6)


def test_batch_axis_and_decode_posenet_dispatch() -> None:
    rng = np.random.default_rng(3)
    heatmap = rng.normal(size=(1, 9, 9, 17)).astype(np.float32)
    offsets = rng.normal(size=(1, 9, 9, 34)).astype(np.float32)
    np.testing.assert_array_equal(
        decode_posenet(heatmap, offsets, "offsets"), decode_offsets(heatmap[0], offsets[0])
    )
    no_offsets = decode_posenet(heatmap, None, "none")
    cell, _ = argmax_cells(heatmap[0])
    np.testing.assert_array_equal(no_offsets[:, :2], cell * 16 + 0.5)
    with pytest.raises(InputError, match="needs the offsets"):
        decode_posenet(heatmap, None, "offsets")


def test_tie_rule_is_first_in_row_major_order() -> None:
    heatmap = np.zeros((5, 6, 3), np.float32)
    heatmap[3, 1, 0] = heatmap[1, 4, 0] = heatmap[1, 5, 0] = 2.0  # row 1 beats row 3
    heatmap[2, 2, 1] = heatmap[2, 0, 1] = 2.0  # same row: column 0 wins
    heatmap[..., 2] = -1.0  # all tied: cell (0, 0)
    cell, value = argmax_cells(heatmap)
    np.testing.assert_array_equal(cell, [[1, 4], [2, 0], [0, 0]])
    np.testing.assert_array_equal(value, [2.0, 2.0, -1.0])


def test_argmax_on_logits_not_saturated_scores() -> None:
    # sigmoid(20) and sigmoid(30) are both 1.0 in float32; the larger logit must still win.
    heatmap = np.zeros((3, 3, 1), np.float32)
    heatmap[0, 0, 0], heatmap[2, 2, 0] = 20.0, 30.0
    assert sigmoid(np.float32(20.0)) == sigmoid(np.float32(30.0))
    out = decode_offsets(heatmap, np.zeros((3, 3, 2), np.float32))
    np.testing.assert_array_equal(out[0, :2], [32.5, 32.5])


def test_sigmoid_is_stable_for_extreme_logits() -> None:
    values = sigmoid(np.array([-1e4, -50.0, 0.0, 50.0, 1e4], np.float32))
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, [0.0, 1.9287e-22, 0.5, 1.0, 1.0], rtol=1e-4)


@pytest.mark.parametrize("size", [16, 25, 32, 64])
def test_refinement_at_least_halves_argmax_error_noise_free(size: int) -> None:
    rng = np.random.default_rng(size)
    plain = mean_error("none", size, 0.0, np.random.default_rng(size))
    assert 0.25 < plain < 0.5  # uniform sub-cell offsets: E|d| of the 2D rounding error ~0.38
    for method in ("quadratic", "dark", "bicubic-x4"):
        err = mean_error(method, size, 0.0, np.random.default_rng(size))
        assert err <= 0.5 * plain, (method, err, plain)
    # log-Gaussian Taylor refinement is exact on a noise-free Gaussian
    assert mean_error("quadratic", size, 0.0, rng) < 1e-3


@pytest.mark.parametrize("method", ["quadratic", "dark", "bicubic-x2", "bicubic-x4", "bilinear-x4"])
def test_refinement_beats_argmax_with_noise(method: str) -> None:
    plain = mean_error("none", 32, 0.05, np.random.default_rng(7))
    err = mean_error(method, 32, 0.05, np.random.default_rng(7))
    assert err < plain, (method, err, plain)


def test_quadratic_on_logits_is_exact_for_gaussian_probabilities() -> None:
    rng = np.random.default_rng(11)
    centres = rng.uniform(3.0, 20.0, size=(17, 2))
    prob = 0.9 * gaussian_maps(24, centres).astype(np.float64)
    logits = np.log(np.maximum(prob, 1e-30) / (1.0 - prob)).astype(np.float32)
    peaks = decode_heatmaps(logits, "quadratic", "logit")
    np.testing.assert_allclose(peaks.yx, centres, atol=2e-3)
    expected = 0.9 * gaussian_maps(24, centres).max(axis=(0, 1))
    np.testing.assert_allclose(peaks.score, expected, rtol=1e-6)


def test_upsampled_peak_maps_back_to_cell_coordinates() -> None:
    # A peak of a heatmap that is itself the x4 bicubic image of a smooth map: the argmax index u
    # of the upsampled map must map back to (u + 0.5) / 4 - 0.5 cells.
    maps = gaussian_maps(16, np.array([[7.0, 9.0]]), sigma=2.0)
    up = upsample_heatmaps(maps, 4, 2)  # cv2.INTER_CUBIC == 2
    assert up.shape == (64, 64, 1)
    peaks = decode_heatmaps(maps, "bicubic-x4", "prob")
    # cell 7 is sampled at upsampled 29.5: the two neighbours 29 and 30 tie, the first wins
    np.testing.assert_allclose(peaks.yx, [[7.0 - 0.125, 9.0 - 0.125]], atol=1e-6)


def test_border_peak_gets_no_step_along_that_axis() -> None:
    maps = gaussian_maps(12, np.array([[-0.3, 5.4], [6.2, 11.4]]))
    yx = refine_peaks(maps, argmax_cells(maps)[0], "quadratic", "prob")
    assert np.all(np.isfinite(yx))
    assert yx[0, 0] == 0.0 and yx[1, 1] == 11.0
    np.testing.assert_allclose([yx[0, 1], yx[1, 0]], [5.4, 6.2], atol=1e-3)


def test_flat_heatmap_refines_to_the_argmax_cell() -> None:
    maps = np.full((8, 8, 2), 0.3, np.float32)
    for method in REFINE_METHODS:
        peaks = decode_heatmaps(maps, method, "prob")
        assert np.all(np.isfinite(peaks.yx)), method
        assert np.all(np.abs(peaks.yx - peaks.cell) <= 0.5), method


def test_refinement_steps_are_clipped() -> None:
    rng = np.random.default_rng(5)
    noisy = rng.uniform(0.0, 1.0, size=(10, 10, 50)).astype(np.float32)
    settings = RefineSettings(max_shift=0.3)
    for method in ("quadratic", "dark"):
        peaks = decode_heatmaps(noisy, method, "prob", settings)
        assert np.all(np.abs(peaks.yx - peaks.cell) <= 0.3 + 1e-6)


def test_decode_near_stays_in_its_window() -> None:
    # channel 0: a strong peak at (3.2, 4.4) and a weaker one at (15.3, 12.6)
    maps = gaussian_maps(20, np.array([[3.2, 4.4], [15.3, 12.6]]))
    two = (maps[:, :, :1] + 0.6 * maps[:, :, 1:]).astype(np.float32)
    assert np.allclose(decode_heatmaps(two, "quadratic", "prob").yx, [[3.2, 4.4]], atol=1e-2)
    near = decode_near(
        two, np.array([[14.0, 13.0]]), window=5, method="quadratic", activation="prob"
    )
    np.testing.assert_allclose(near.yx, [[15.3, 12.6]], atol=1e-2)
    np.testing.assert_array_equal(near.cell, [[15, 13]])
    assert 0.55 < near.score[0] < 0.65


def test_decode_near_keeps_unknown_points_missing() -> None:
    maps = gaussian_maps(10, np.array([[4.0, 4.0], [6.0, 2.0]]))
    near = decode_near(maps, np.array([[np.nan, np.nan], [6.4, 2.2]]), 3, "none", "prob")
    assert np.all(np.isnan(near.yx[0])) and near.score[0] == 0.0
    np.testing.assert_array_equal(near.yx[1], [6.0, 2.0])
    with pytest.raises(InputError, match="odd number"):
        decode_near(maps, np.zeros((2, 2)), window=4)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(InputError, match=r"\(H, W, K\)"):
        decode_heatmaps(np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="unknown heatmap method 'cubic'"):
        decode_heatmaps(np.zeros((4, 4, 1), np.float32), "cubic")
    with pytest.raises(InputError, match="offsets must be"):
        decode_offsets(np.zeros((4, 4, 17), np.float32), np.zeros((4, 4, 17), np.float32))
    with pytest.raises(InputError, match="activation"):
        decode_heatmaps(np.zeros((4, 4, 1), np.float32), "none", "softmax")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="max_shift"):
        RefineSettings(max_shift=0.0)
