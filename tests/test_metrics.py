"""Tests of avatarlink.metrics on synthetic tracks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink import metrics
from avatarlink.skeletons import BlazePose33, Coco17, KeypointLayout


def test_second_difference_of_a_parabola_is_constant() -> None:
    t = np.arange(20.0)
    x = np.stack([0.5 * t**2, 3.0 * t], axis=1)[:, None, :]  # (T, 1, 2)
    d2 = metrics.second_difference(x)
    assert d2.shape == (18, 1, 2)
    np.testing.assert_allclose(d2[..., 0], 1.0)
    np.testing.assert_allclose(d2[..., 1], 0.0, atol=1e-12)


def test_jitter_of_white_noise_matches_theory() -> None:
    # Var(x[t+1] - 2 x[t] + x[t-1]) = 6 sigma^2 per axis, so the RMS norm over D axes is
    # sigma * sqrt(6 D).
    rng = np.random.default_rng(0)
    sigma, d = 0.3, 3
    x = rng.normal(scale=sigma, size=(20000, 4, d))
    jit = metrics.jitter(x)
    assert jit.shape == (4,)
    np.testing.assert_allclose(jit, sigma * np.sqrt(6 * d), rtol=0.03)


def test_jitter_of_uniform_motion_is_zero_and_scale_normalises() -> None:
    t = np.arange(50.0)[:, None, None]
    line = np.concatenate([2.0 * t, -t], axis=2)  # (T, 1, 2)
    assert metrics.jitter_rms(line) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5, 2))
    assert metrics.jitter_rms(2.0 * x, scale=2.0) == pytest.approx(metrics.jitter_rms(x))
    per_frame = np.full((500, 1), 4.0)
    np.testing.assert_allclose(metrics.jitter(4.0 * x, per_frame), metrics.jitter(x))


def test_jitter_ignores_nan() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 2, 2))
    holes = x.copy()
    holes[::10] = np.nan
    assert np.all(np.isfinite(metrics.jitter(holes)))
    np.testing.assert_allclose(metrics.jitter(holes), metrics.jitter(x), rtol=0.05)
    assert np.isnan(metrics.jitter(np.full((5, 1, 2), np.nan))[0])


def test_error_to_reference() -> None:
    ref = np.zeros((10, 3, 2))
    x = ref + np.array([3.0, 4.0])
    np.testing.assert_allclose(metrics.error(x, ref), 5.0)
    assert metrics.error_rms(x, ref, scale=10.0) == pytest.approx(0.5)
    x[0, 0] = np.nan
    assert metrics.error_rms(x, ref) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.error(x, ref[:5])


def _delayed_sine(delay_frames: float, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Clean (n, 2, 2) multi-frequency motion and a copy delayed by ``delay_frames``."""
    t = np.arange(n, dtype=float)

    def motion(tt: np.ndarray) -> np.ndarray:
        a = np.sin(2 * np.pi * tt / 47.0) + 0.5 * np.sin(2 * np.pi * tt / 13.0)
        b = np.cos(2 * np.pi * tt / 31.0)
        return np.stack([np.stack([a, b], -1), np.stack([b, -a], -1)], axis=1)

    return motion(t - delay_frames), motion(t)


@pytest.mark.parametrize("delay", [0.0, 2.0, 3.4, -1.5])
def test_lag_recovers_a_known_delay(delay: float) -> None:
    delayed, clean = _delayed_sine(delay)
    frame_s = 1.0 / 30.0
    lag = metrics.lag_ms(delayed, clean, frame_s)
    assert lag == pytest.approx(delay * frame_s * 1000.0, abs=0.1 * frame_s * 1000.0)


def test_lag_is_not_pulled_to_zero_by_missing_samples() -> None:
    # Gaps in the filtered track must not favour a zero shift, even for slow motion whose
    # cross-correlation is flat near its peak.
    t = np.arange(900, dtype=float)

    def slow(tt: np.ndarray) -> np.ndarray:
        a, b = np.sin(2 * np.pi * tt / 240.0), np.cos(2 * np.pi * tt / 400.0)
        return np.stack([np.stack([a, b], -1), np.stack([b, -a], -1)], axis=1)

    delayed, clean = slow(t - 3.0), slow(t)
    rng = np.random.default_rng(3)
    delayed[rng.random(delayed.shape[:2]) < 0.05] = np.nan
    assert metrics.lag_ms(delayed, clean, 1 / 30) == pytest.approx(100.0, abs=20.0)


def test_lag_of_periodic_motion_takes_the_nearest_peak() -> None:
    # A 2 Hz sine correlates again every 500 ms; the delay is the peak nearest to zero.
    t = np.arange(600) / 30.0
    clean = np.sin(2 * np.pi * 2.0 * t)[:, None, None]
    delayed = np.sin(2 * np.pi * 2.0 * (t - 0.1))[:, None, None]
    assert metrics.lag_ms(delayed, clean, 1 / 30, max_lag_s=1.0) == pytest.approx(100.0, abs=5.0)


def test_lag_without_motion_is_nan() -> None:
    still = np.ones((100, 2, 2))
    assert np.isnan(metrics.lag_ms(still, still, 1 / 30))
    with pytest.raises(ValueError, match="frame_s"):
        metrics.lag_ms(still, still, 0.0)


def test_torso_length_and_boxes() -> None:
    layout = KeypointLayout.COCO17
    xyz = np.full((17, 3), np.nan)
    xyz[Coco17.LEFT_SHOULDER] = (10, 0, 0)
    xyz[Coco17.RIGHT_SHOULDER] = (-10, 0, 5)
    xyz[Coco17.LEFT_HIP] = (6, 40, 0)
    xyz[Coco17.RIGHT_HIP] = (-6, 40, 0)
    assert metrics.torso_length(xyz, layout) == pytest.approx(40.0)
    assert metrics.torso_length(xyz, layout, dims=3) == pytest.approx(np.hypot(40.0, 2.5))
    assert metrics.bbox_diagonal(xyz) == pytest.approx(np.hypot(20.0, 40.0))
    assert metrics.bbox_mean_side(xyz) == pytest.approx(30.0)
    xyz[Coco17.LEFT_HIP] = np.nan
    assert np.isnan(metrics.torso_length(xyz, layout))
    batch = np.zeros((2, 33, 3))
    batch[:, BlazePose33.LEFT_HIP, 1] = 1.0
    batch[:, BlazePose33.RIGHT_HIP, 1] = 1.0
    np.testing.assert_allclose(metrics.torso_length(batch, KeypointLayout.BLAZEPOSE33), [1, 1])
    assert np.isnan(metrics.bbox_diagonal(np.full((4, 3), np.nan)))
