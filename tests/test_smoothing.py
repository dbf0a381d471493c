"""Tests of avatarlink.smoothing and avatarlink.smoothing_config (synthetic ground truth)."""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from scipy.spatial.transform import Rotation, Slerp

from avatarlink import smoothing_config as sc
from avatarlink.errors import ConfigError, InputError
from avatarlink.skeletons import BlazePose33, KeypointLayout
from avatarlink.smoothing import (
    KalmanFilter,
    KeypointSmoother,
    NoOpFilter,
    OneEuroFilter,
    QuaternionOneEuroFilter,
    RotationSmoother,
    SmoothingFilter,
    VelocityFilter,
    make_filter,
)
from avatarlink.types import BoneRotations, Keypoints, Space

LAYOUT = KeypointLayout.BLAZEPOSE33


def _golden() -> np.ndarray:
    path = shared_data("one_euro", "groundTruth.csv")
    data = np.genfromtxt(path, delimiter=",", names=True)
    return np.asarray(data)


# --------------------------------------------------------------------------------------------------
# One-Euro conformance
# --------------------------------------------------------------------------------------------------


def test_one_euro_reproduces_the_reference_csv() -> None:
    data = _golden()
    f = OneEuroFilter(min_cutoff=1.0, beta=0.1, d_cutoff=1.0)
    out = np.array(
        [f(np.array([x]), t)[0] for x, t in zip(data["noisy"], data["timestamp"], strict=True)]
    )
    assert data["timestamp"][0] == 0.0  # t = 0.0 is a valid first timestamp
    np.testing.assert_allclose(out, data["filtered"], atol=1e-4, rtol=0)


def test_one_euro_reference_broadcast_over_a_batch() -> None:
    data = _golden()
    f = OneEuroFilter(min_cutoff=1.0, beta=0.1, d_cutoff=1.0)
    outs = [
        f(np.full((2, 33, 3), x), t) for x, t in zip(data["noisy"], data["timestamp"], strict=True)
    ]
    out = np.stack(outs)
    assert out.shape == (len(data), 2, 33, 3)
    np.testing.assert_allclose(
        out, np.broadcast_to(data["filtered"][:, None, None, None], out.shape), atol=1e-4
    )


def _random_track(
    rng: np.random.Generator, n: int, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    t = np.cumsum(rng.uniform(1 / 70, 1 / 25, n))  # irregular real timestamps
    x = np.cumsum(rng.normal(size=(n, *shape)), axis=0) + rng.normal(size=(n, *shape)) * 0.5
    x[rng.random(x.shape) < 0.1] = np.nan  # missing samples
    return t, x


@pytest.mark.parametrize(
    "factory",
    [
        lambda: OneEuroFilter(0.8, 0.3, 1.5),
        lambda: KalmanFilter(5.0, 0.3, "constant_velocity"),
        lambda: KalmanFilter(5.0, 0.3, "constant_acceleration"),
        lambda: VelocityFilter(5, 2.0),
    ],
    ids=["one_euro", "kalman_cv", "kalman_ca", "velocity"],
)
def test_batch_equals_a_loop_of_scalar_filters(factory: Callable[[], SmoothingFilter]) -> None:
    rng = np.random.default_rng(0)
    t, x = _random_track(rng, 150, (2, 4, 3))
    batch = factory()
    got = np.stack([batch(xi, ti) for xi, ti in zip(x, t, strict=True)])
    expected = np.empty_like(x)
    for idx in np.ndindex(*x.shape[1:]):
        single = factory()
        expected[(slice(None), idx[0], idx[1], idx[2])] = [
            single(np.array([xi[idx]]), ti)[0] for xi, ti in zip(x, t, strict=True)
        ]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert np.isfinite(got[-1]).all()


def test_one_euro_with_never_measured_elements_equals_a_loop_of_scalar_filters() -> None:
    # Image keypoints often lack a depth: a coordinate that is never measured must neither stop
    # the others from being filtered nor change them (the batched filter updates in place
    # whatever is measured), and elements masked out now and then hold.
    rng = np.random.default_rng(3)
    t, x = _random_track(rng, 100, (1, 6, 3))
    x[:, :, :, 2] = np.nan  # never measured
    mask = rng.random((100, 1, 6, 1)) > 0.2
    scale = np.array([[[2.0]]])
    batch = OneEuroFilter(0.7, 0.4, 1.5, speed_dims=2, deadband=0.1)
    got = np.stack([batch(xi, ti, mi, scale) for xi, ti, mi in zip(x, t, mask, strict=True)])
    assert np.isnan(got[..., 2]).all() and np.isfinite(got[-1, ..., :2]).all()
    for k in range(6):
        single = OneEuroFilter(0.7, 0.4, 1.5, speed_dims=2, deadband=0.1)
        ref = np.stack(
            [single(xi[0, k], ti, mi[0, k], 2.0) for xi, ti, mi in zip(x, t, mask, strict=True)]
        )
        np.testing.assert_allclose(got[:, 0, k], ref, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_one_euro_keypoint_speed_equals_a_loop_over_points() -> None:
    rng = np.random.default_rng(1)
    t, x = _random_track(rng, 120, (3, 5, 3))
    batch = OneEuroFilter(0.5, 0.4, 2.0, speed_dims=2, deadband=0.3)
    got = np.stack([batch(xi, ti) for xi, ti in zip(x, t, strict=True)])
    for p, k in np.ndindex(3, 5):
        single = OneEuroFilter(0.5, 0.4, 2.0, speed_dims=2, deadband=0.3)
        ref = np.stack([single(xi[p, k], ti) for xi, ti in zip(x, t, strict=True)])
        np.testing.assert_allclose(got[:, p, k], ref, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_one_euro_keypoint_speed_ignores_motion_direction() -> None:
    # The same motion along x or along a diagonal gets the same smoothing (rotation invariance).
    t = np.arange(200) / 30.0
    rng = np.random.default_rng(2)
    path = np.sin(2 * np.pi * 1.5 * t) * 20 + rng.normal(size=t.size)
    outs = []
    for angle in (0.0, 0.7):
        direction = np.array([math.cos(angle), math.sin(angle), 0.0])
        f = OneEuroFilter(0.5, 0.05, 2.0, speed_dims=2)
        outs.append(
            np.stack([f(p * direction, ti) @ direction for p, ti in zip(path, t, strict=True)])
        )
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-9)


def _kalman_oracle(
    z: np.ndarray, t: np.ndarray, valid: np.ndarray, q: float, r: float, n: int
) -> np.ndarray:
    """A plain-matrix Kalman filter of one scalar (the textbook equations)."""
    x: np.ndarray | None = None
    p = np.zeros((n, n))
    out, t_last = [], None
    for zi, ti, vi in zip(z, t, valid, strict=True):
        if t_last is not None and x is not None:
            d = ti - t_last
            if n == 2:
                f = np.array([[1, d], [0, 1]])
                qm = q * np.array([[d**3 / 3, d**2 / 2], [d**2 / 2, d]])
            else:
                f = np.array([[1, d, d * d / 2], [0, 1, d], [0, 0, 1]])
                qm = q * np.array(
                    [
                        [d**5 / 20, d**4 / 8, d**3 / 6],
                        [d**4 / 8, d**3 / 3, d**2 / 2],
                        [d**3 / 6, d**2 / 2, d],
                    ]
                )
            x, p = f @ x, f @ p @ f.T + qm
        t_last = ti
        if vi:
            if x is None:
                x = np.zeros(n)
                x[0] = zi
                p = np.diag([r * r, 4.0, 400.0][:n])
            else:
                gain = p[:, 0] / (p[0, 0] + r * r)
                x = x + gain * (zi - x[0])
                p = p - np.outer(gain, p[0, :])
        out.append(np.nan if x is None else x[0])
    return np.array(out)


@pytest.mark.parametrize("model,n", [("constant_velocity", 2), ("constant_acceleration", 3)])
def test_kalman_matches_the_matrix_equations(model: str, n: int) -> None:
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.01, 0.05, 200))
    z = np.sin(3 * t) + rng.normal(size=t.size) * 0.05
    valid = rng.random(t.size) > 0.2
    valid[0] = True
    f = KalmanFilter(5.0, 0.05, model, initial_velocity_std=2.0, initial_acceleration_std=20.0)
    out = np.array(
        [
            f(np.full((2, 3), zi if vi else np.nan), ti)[1, 2]
            for zi, ti, vi in zip(z, t, valid, strict=True)
        ]
    )
    np.testing.assert_allclose(out, _kalman_oracle(z, t, valid, 5.0, 0.05, n), atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Missing data, timestamps, reset
# --------------------------------------------------------------------------------------------------


def test_nan_and_masked_samples_hold_one_euro_without_poisoning() -> None:
    f = OneEuroFilter(1.0, 0.5, 1.0)
    out = None
    for i in range(20):
        out = f(np.array([1.0, 2.0]) + 0.01 * i, i / 30)
    assert out is not None
    held = f(np.array([np.nan, 100.0]), 20 / 30, mask=np.array([True, False]))
    np.testing.assert_allclose(held, out)  # NaN and masked-out elements hold
    after = f(np.array([1.2, 2.2]), 21 / 30)
    assert np.isfinite(after).all()
    assert held[0] < after[0] < 1.2  # moved from the held estimate towards the new value


def test_kalman_predicts_through_gaps_with_growing_uncertainty() -> None:
    f = KalmanFilter(10.0, 0.01)
    for i in range(30):  # constant velocity 1 unit/s
        f(np.array([i / 30]), i / 30)
    predicted = [f(np.array([np.nan]), i / 30)[0] for i in range(30, 36)]
    np.testing.assert_allclose(predicted, np.arange(30, 36) / 30, atol=1e-3)  # keeps moving
    gap_gain = _kalman_gain_after(gap=True)
    steady_gain = _kalman_gain_after(gap=False)
    assert gap_gain > steady_gain  # the first measurement after a gap weighs more


def _kalman_gain_after(gap: bool) -> float:
    f = KalmanFilter(10.0, 0.05)
    for i in range(30):
        f(np.array([0.0]), i / 30)
    for i in range(30, 40):  # with or without measurements
        f(np.array([np.nan if gap else 0.0]), i / 30)
    step = f(np.array([1.0]), 40 / 30)[0]  # jump of 1: the output moves by the gain
    return float(step)


def test_non_increasing_timestamps_are_skipped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for f in (OneEuroFilter(1.0, 0.1), KalmanFilter(), VelocityFilter(), NoOpFilter()):
        first = f(np.array([0.0, 1.0]), 0.0)
        second = f(np.array([1.0, 2.0]), 0.1)
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            same = f(np.array([50.0, 50.0]), 0.1)  # equal
            back = f(np.array([60.0, 60.0]), 0.05)  # earlier
        np.testing.assert_array_equal(same, second)
        np.testing.assert_array_equal(back, second)
        assert f.skipped_timestamps == 2
        assert len([r for r in caplog.records if "does not increase" in r.message]) == 1
        assert np.isfinite(first).all()
    with pytest.raises(InputError, match="finite"):
        OneEuroFilter()(np.zeros(2), float("nan"))


def test_reset_and_reset_where() -> None:
    f = OneEuroFilter(0.1, 0.0)
    f(np.zeros(3), 0.0)
    f(np.zeros(3), 0.1)
    f.reset_where(np.array([False, True, False]))
    out = f(np.array([5.0, 5.0, 5.0]), 0.2)
    assert out[1] == 5.0  # restarted: passes its first measurement through
    assert out[0] < 5.0 and out[2] < 5.0  # still smoothing
    f.reset()
    assert f(np.array([7.0, 7.0, 7.0]), 0.0).tolist() == [7.0, 7.0, 7.0]  # time may restart


def test_filter_parameters_are_validated() -> None:
    with pytest.raises(ConfigError, match="min_cutoff must be > 0 Hz"):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(ConfigError, match="process_noise"):
        KalmanFilter(process_noise=-1.0)
    with pytest.raises(ConfigError, match="model"):
        KalmanFilter(model="jerk")
    with pytest.raises(InputError, match="scale"):
        OneEuroFilter()(np.zeros(3), 0.0, scale=np.array([1.0, 0.0, 1.0]))


# --------------------------------------------------------------------------------------------------
# Quaternions
# --------------------------------------------------------------------------------------------------


def _random_rotations(rng: np.random.Generator, n: int, bones: int) -> np.ndarray:
    """A smooth random walk of rotations (n, bones, 4) xyzw."""
    rot = Rotation.random(bones, random_state=1)
    out = []
    for _ in range(n):
        rot = Rotation.from_rotvec(rng.normal(scale=0.05, size=(bones, 3))) * rot
        out.append(rot.as_quat())
    return np.stack(out)


def test_quaternion_filter_is_blind_to_the_hemisphere() -> None:
    rng = np.random.default_rng(4)
    q = _random_rotations(rng, 60, 55)
    flips = np.where(rng.random(q.shape[:2]) < 0.5, -1.0, 1.0)[..., None]
    a, b = QuaternionOneEuroFilter(1.0, 0.5), QuaternionOneEuroFilter(1.0, 0.5)
    prev = None
    for i in range(q.shape[0]):
        qa = a(q[i], i / 30)
        qb = b(q[i] * flips[i], i / 30)
        np.testing.assert_allclose(
            np.abs(np.sum(qa * qb, axis=-1)), 1.0, atol=1e-12
        )  # same rotation
        if prev is not None:
            assert np.all(np.sum(qb * prev, axis=-1) > 0.9)  # sign-continuous output
        prev = qb
        np.testing.assert_allclose(np.linalg.norm(qb, axis=-1), 1.0, atol=1e-12)


def test_quaternion_filter_is_a_slerp_low_pass() -> None:
    # beta = 0: every step is slerp(previous, new, alpha) with alpha from min_cutoff and dt.
    rng = np.random.default_rng(5)
    q = _random_rotations(rng, 10, 4)
    f = QuaternionOneEuroFilter(min_cutoff=2.0, beta=0.0)
    dt = 1 / 30
    r = 2 * np.pi * 2.0 * dt
    alpha = r / (r + 1)
    expected = q[0]
    f(q[0], 0.0)
    for i in range(1, q.shape[0]):
        got = f(q[i], i * dt)
        for b in range(4):
            slerp = Slerp([0.0, 1.0], Rotation.from_quat([expected[b], q[i, b]]))
            ref = slerp([alpha]).as_quat()[0]
            assert abs(np.dot(ref, got[b])) == pytest.approx(1.0, abs=1e-10)
        expected = got


def test_quaternion_filter_batch_equals_one_filter_per_bone() -> None:
    # As in a rig: some bones are never observed, others drop out now and then.
    rng = np.random.default_rng(8)
    q = _random_rotations(rng, 80, 6) * np.where(rng.random((80, 6, 1)) < 0.3, -1.0, 1.0)
    mask = rng.random((80, 6)) > 0.15
    mask[:, 4:] = False  # never valid
    mask[:5, 2] = False  # first seen later
    t = np.cumsum(rng.uniform(1 / 60, 1 / 20, 80))
    batch = QuaternionOneEuroFilter(1.2, 0.4, 1.0)
    got = np.stack([batch(qi, ti, mi) for qi, ti, mi in zip(q, t, mask, strict=True)])
    for b in range(6):
        single = QuaternionOneEuroFilter(1.2, 0.4, 1.0)
        ref = np.stack(
            [
                single(qi[b : b + 1], ti, mi[b : b + 1])
                for qi, ti, mi in zip(q, t, mask, strict=True)
            ]
        )
        np.testing.assert_allclose(got[:, b : b + 1], ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[:, 4:], q[:, 4:])  # never valid: passed through


def test_quaternion_filter_holds_invalid_bones_and_adapts_to_speed() -> None:
    f = QuaternionOneEuroFilter(1.0, 0.0)
    ident = np.tile([0.0, 0.0, 0.0, 1.0], (3, 1))
    f(ident, 0.0)
    turned = Rotation.from_rotvec(np.tile([0.0, np.radians(30), 0.0], (3, 1))).as_quat()
    turned[1] = np.nan
    out = f(turned, 0.1, mask=np.array([True, True, False]))
    np.testing.assert_allclose(out[1:], ident[1:])  # NaN and masked bones hold
    assert 0 < Rotation.from_quat(out[0]).magnitude() < np.radians(30)
    # With beta > 0 a fast turn is followed more closely than with beta = 0.
    slow, fast = QuaternionOneEuroFilter(1.0, 0.0), QuaternionOneEuroFilter(1.0, 2.0)
    angles = []
    for filt in (slow, fast):
        for i in range(10):
            res = filt(Rotation.from_rotvec([0.0, 0.0, np.radians(20 * i)]).as_quat()[None], i / 30)
        angles.append(np.degrees(Rotation.from_quat(res[0]).magnitude()))
    assert abs(angles[1] - 180) < abs(angles[0] - 180)


def test_rotation_smoother_on_bone_rotations() -> None:
    cfg = sc.PRESETS["balanced"]
    smoother = RotationSmoother(cfg)
    bones = ("Hips", "Spine", "Head")
    rng = np.random.default_rng(6)
    q = _random_rotations(rng, 20, 3).astype(np.float32)
    out = None
    for i in range(20):
        valid = np.array([True, True, i < 10])
        rot = BoneRotations(bones, q[i], np.array([0.0, 1.0, 0.1 * i], np.float32), valid, i / 30)
        out = smoother(rot)
        assert out.rot.dtype == np.float32 and out.root_pos.dtype == np.float32
    assert out is not None
    np.testing.assert_array_equal(out.valid, [True, True, False])
    assert 0 < out.root_pos[2] < 1.9  # smoothed root position trails the ramp
    held = smoother(
        BoneRotations(bones, q[19], out.root_pos, np.array([True, True, False]), 20 / 30)
    )
    assert abs(np.dot(held.rot[2], out.rot[2])) == pytest.approx(
        1.0, abs=1e-6
    )  # invalid bone holds
    assert smoother(held).t == held.t and smoother.skipped_timestamps == 1


# --------------------------------------------------------------------------------------------------
# KeypointSmoother
# --------------------------------------------------------------------------------------------------


def _pose(center: tuple[float, float] = (300.0, 300.0), size: float = 100.0) -> np.ndarray:
    """A standing BlazePose-33 person (33, 3), torso ``size`` pixels, hip centre at ``center``."""
    rng = np.random.default_rng(7)
    xyz = np.zeros((33, 3))
    xyz[:, 0] = rng.uniform(-0.6, 0.6, 33)
    xyz[:, 1] = rng.uniform(-1.5, 1.9, 33)
    xyz[BlazePose33.LEFT_SHOULDER] = (0.4, -1.0, 0)
    xyz[BlazePose33.RIGHT_SHOULDER] = (-0.4, -1.0, 0)
    xyz[BlazePose33.LEFT_HIP] = (0.2, 0.0, 0)
    xyz[BlazePose33.RIGHT_HIP] = (-0.2, 0.0, 0)
    out: np.ndarray = xyz * size + np.array([center[0], center[1], 0.0])
    return out


def _kp(
    *poses: np.ndarray, score: np.ndarray | None = None, ids: list[int] | None = None
) -> Keypoints:
    xyz = np.stack(poses).astype(np.float32)
    s = np.ones(xyz.shape[:2], np.float32) if score is None else score.astype(np.float32)
    if ids is None:
        return Keypoints(xyz, s, LAYOUT, Space.IMAGE)
    return Keypoints(xyz, s, LAYOUT, Space.IMAGE, ids=np.array(ids, np.int64))


@pytest.mark.parametrize("kind", ["one_euro", "kalman", "velocity"])
def test_scale_invariance(kind: str) -> None:
    # A person twice the size (and elsewhere) gets exactly the same relative smoothing.
    cfg = sc.with_overrides(sc.PRESETS["balanced"], {"filter": kind})
    rng = np.random.default_rng(8)
    base = _pose((0.0, 0.0), 1.0)
    small, big = KeypointSmoother(cfg), KeypointSmoother(cfg)
    for i in range(60):
        motion = np.zeros((33, 3))
        motion[15:23, 0] = 0.4 * np.sin(2 * np.pi * 1.5 * i / 30)
        noisy = base + motion + rng.normal(scale=0.01, size=(33, 3))
        a = small(_kp(noisy * 100 + [300, 300, 0]), i / 30).xyz[0]
        b = big(_kp(noisy * 200 + [900, 100, 0]), i / 30).xyz[0]
        np.testing.assert_allclose((b - [900, 100, 0]) / 2, a - [300, 300, 0], rtol=0, atol=2e-3)


def test_low_score_and_nan_keypoints_do_not_update() -> None:
    smoother = KeypointSmoother()
    pose = _pose()
    for i in range(10):
        out = smoother(_kp(pose), i / 30)
    junk = pose.copy()
    junk[15] += 80.0  # a low-confidence guess far away
    junk[16] = np.nan
    score = np.ones((1, 33))
    score[0, 15] = 0.05
    score[0, 16] = 0.0
    out = smoother(_kp(junk, score=score), 10 / 30)
    np.testing.assert_allclose(out.xyz[0, 15], pose[15], atol=1e-3)  # held, not dragged
    assert np.isnan(out.xyz[0, 16]).all()  # missing stays missing
    np.testing.assert_array_equal(out.score, score.astype(np.float32))
    out = smoother(_kp(pose), 11 / 30)
    assert np.isfinite(out.xyz).all()
    np.testing.assert_allclose(out.xyz[0], pose, atol=1e-3)


def test_fill_missing_outputs_the_held_position() -> None:
    cfg = sc.with_overrides(sc.PRESETS["balanced"], {"fill_missing": True})
    smoother = KeypointSmoother(cfg)
    pose = _pose()
    for i in range(5):
        smoother(_kp(pose), i / 30)
    gone = pose.copy()
    gone[16] = np.nan
    out = smoother(_kp(gone), 5 / 30)
    np.testing.assert_allclose(out.xyz[0, 16], pose[16], atol=1e-3)


def test_person_lost_then_reacquired_has_no_jump_from_stale_state() -> None:
    smoother = KeypointSmoother()  # lost_after_s = 0.5
    for i in range(30):
        smoother(_kp(_pose((300, 300))), i / 30)
    assert smoother.num_tracks == 1
    empty = Keypoints.empty(LAYOUT)
    assert smoother(empty, 1.2).num_persons == 0  # "no person" is a normal result
    assert smoother.num_tracks == 1
    smoother(empty, 1.8)  # more than lost_after_s since the person was last seen
    assert smoother.num_tracks == 0
    elsewhere = _pose((700, 250))
    out = smoother(_kp(elsewhere), 1.9)
    np.testing.assert_allclose(out.xyz[0], elsewhere, atol=1e-3)  # starts at the measurement


def test_short_gap_keeps_smoothing_and_stale_keypoint_restarts() -> None:
    smoother = KeypointSmoother()
    pose = _pose()
    for i in range(30):
        smoother(_kp(pose), i / 30)
    moved = pose + np.array([4.0, 0.0, 0.0])
    out = smoother(_kp(moved), 1.1)  # person back after 0.13 s: still the same track
    assert np.all(out.xyz[0, :, 0] < moved[:, 0] - 1e-3)  # smoothed, not snapped
    # One keypoint missing for longer than lost_after_s restarts from its measurement.
    hidden = moved.copy()
    hidden[20] = np.nan
    for i in range(20):
        smoother(_kp(hidden), 1.2 + i / 30)
    back = moved.copy()
    back[20] += [50.0, 0.0, 0.0]
    out = smoother(_kp(back), 1.9)
    np.testing.assert_allclose(out.xyz[0, 20], back[20], atol=1e-3)


def test_tracked_persons_keep_their_filters_when_reordered() -> None:
    a, b = _pose((200, 300)), _pose((600, 300))
    together = KeypointSmoother()
    alone = KeypointSmoother()
    rng = np.random.default_rng(9)
    for i in range(20):
        na = a + rng.normal(scale=1.0, size=a.shape)
        nb = b + rng.normal(scale=1.0, size=b.shape)
        order = (na, nb) if i % 2 else (nb, na)
        ids = [1, 2] if i % 2 else [2, 1]
        out = together(_kp(*order, ids=ids), i / 30)
        ref = alone(_kp(na, ids=[1]), i / 30)
        got = out.xyz[0] if i % 2 else out.xyz[1]
        np.testing.assert_allclose(got, ref.xyz[0], atol=1e-3)
        np.testing.assert_array_equal(out.ids, ids)


def test_untracked_persons_are_matched_by_position() -> None:
    a, b = _pose((200, 300)), _pose((600, 300))
    together, alone = KeypointSmoother(), KeypointSmoother()
    rng = np.random.default_rng(10)
    for i in range(20):
        na = a + rng.normal(scale=1.0, size=a.shape)
        nb = b + rng.normal(scale=1.0, size=b.shape)
        out = together(_kp(*((na, nb) if i % 2 else (nb, na))), i / 30)
        ref = alone(_kp(na), i / 30)
        got = out.xyz[0] if i % 2 else out.xyz[1]
        np.testing.assert_allclose(got, ref.xyz[0], atol=1e-3)
    assert together.num_tracks == 2


def test_smoother_timestamps(caplog: pytest.LogCaptureFixture) -> None:
    smoother = KeypointSmoother()
    first = smoother(_kp(_pose()), 0.0)
    with caplog.at_level(logging.WARNING):
        again = smoother(_kp(_pose((310, 300))), 0.0)
    assert again is first and smoother.skipped_timestamps == 1
    assert any("does not increase" in r.message for r in caplog.records)
    smoother(_kp(_pose()), 5.0)
    restarted = smoother(_kp(_pose((900, 100))), 1.0)  # far back in time: a new stream
    np.testing.assert_allclose(restarted.xyz[0], _pose((900, 100)), atol=1e-3)


def test_world_space_is_not_scaled() -> None:
    cfg = sc.PRESETS["balanced"]
    smoother = KeypointSmoother(cfg)
    xyz = np.zeros((1, 33, 3), np.float32)
    kp = Keypoints(xyz, np.ones((1, 33), np.float32), LAYOUT, Space.WORLD)
    smoother(kp, 0.0)
    moved = Keypoints(xyz + 0.01, kp.score, LAYOUT, Space.WORLD)
    out = smoother(moved, 1 / 30)
    ref = make_filter(cfg, Space.WORLD)
    ref(xyz[0].astype(np.float64), 0.0)
    np.testing.assert_allclose(out.xyz[0], ref(xyz[0] + 0.01, 1 / 30), atol=1e-7)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def test_presets_and_overrides() -> None:
    assert sc.from_mapping(None) == sc.PRESETS[sc.DEFAULT_PRESET]
    cfg = sc.from_mapping({"preset": "smooth", "one_euro": {"beta": 3}, "filter": "kalman"})
    assert cfg.preset == "smooth" and cfg.filter == "kalman"
    assert (
        cfg.one_euro.beta == 3.0
        and cfg.one_euro.min_cutoff == sc.PRESETS["smooth"].one_euro.min_cutoff
    )
    over = sc.with_overrides(cfg, ["smoothing.kalman.process_noise=42", "fill_missing=true"])
    assert over.kalman.process_noise == 42.0 and over.fill_missing and over.filter == "kalman"
    assert sc.with_overrides(over, {"preset": "responsive"}) == sc.PRESETS["responsive"]
    assert sc.from_mapping(sc.to_mapping(over)) == over
    for name, preset in sc.PRESETS.items():
        assert preset.preset == name
        make_filter(preset)


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"one_euro": {"min_cutoff": -1}},
            "smoothing.one_euro.min_cutoff must be > 0 Hz, got -1.0 (config.yaml)",
        ),
        ({"one_euro": {"beta": "fast"}}, "smoothing.one_euro.beta must be a number"),
        ({"filter": "median"}, "smoothing.filter must be one of"),
        ({"preset": "silky"}, "smoothing.preset must be one of"),
        ({"kalman": {"noise": 1}}, "smoothing.kalman.noise is not a known key"),
        ({"velocity": {"window": 2.5}}, "smoothing.velocity.window must be an integer"),
        ({"score_threshold": 2}, "smoothing.score_threshold must be in [0, 1]"),
        ({"fill_missing": "yes"}, "smoothing.fill_missing must be true or false"),
        ({"rotation": 3}, "smoothing.rotation must be a mapping"),
    ],
)
def test_validation_names_the_dotted_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        sc.from_mapping(data, source="config.yaml")
    assert message in str(info.value)
    assert "(config.yaml" in str(info.value)


def test_load_yaml_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "camera: 0\nsmoothing:\n  preset: smooth\n  one_euro:\n    min_cutoff: 0\n", "utf-8"
    )
    with pytest.raises(
        ConfigError,
        match=r"smoothing\.one_euro\.min_cutoff must be > 0 Hz, got 0\.0 \(.*config\.yaml line 5\)",
    ):
        sc.load(path)
    path.write_text("smoothing:\n  preset: responsive\n  rotation: {beta: 0.1}\n", "utf-8")
    cfg = sc.load(path)
    assert cfg.preset == "responsive" and cfg.rotation.beta == 0.1
    path.write_text("other: 1\n", "utf-8")
    assert sc.load(path) == sc.PRESETS[sc.DEFAULT_PRESET]
    with pytest.raises(ConfigError, match="cannot read"):
        sc.load(tmp_path / "missing.yaml")


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    sc.add_arguments(parser)
    args = parser.parse_args(
        ["--smoothing", "smooth", "--smooth", "one_euro.beta=7", "--smooth", "filter=none"]
    )
    cfg = sc.from_args(args)
    assert cfg.preset == "smooth" and cfg.one_euro.beta == 7.0 and cfg.filter == "none"
    assert sc.from_args(parser.parse_args([])) == sc.PRESETS[sc.DEFAULT_PRESET]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        sc.from_args(parser.parse_args(["--smooth", "beta"]))
    with pytest.raises(ConfigError, match=r"smoothing\.one_euro\.d_cutoff must be > 0 Hz"):
        sc.from_args(parser.parse_args(["--smooth", "one_euro.d_cutoff=-2"]))


# --------------------------------------------------------------------------------------------------
# Benchmark (a quick run: shape of the output, not speed)
# --------------------------------------------------------------------------------------------------


def test_bench_smoothing_quick_run(tmp_path: Path) -> None:
    import io

    from avatarlink.benches import BENCHES
    from avatarlink.benches import smoothing as bench

    assert BENCHES["smoothing"] == "avatarlink.benches.smoothing"
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out_json = tmp_path / "smoothing.json"
    args = parser.parse_args(
        ["--seconds", "3", "--fps", "30", "--no-sweep", "--no-timing", "--json", str(out_json)]
    )
    text = io.StringIO()
    assert bench.run(args, out=text) == 0
    records = json.loads(out_json.read_text("utf-8"))
    for rec in records:
        assert {"filter", "preset", "fps", "jitter_ratio", "lag_ms", "err_ratio"} <= rec.keys()
    assert {r["filter"] for r in records if r["preset"] == "mediapipe"} == {"one_euro", "velocity"}
    assert sum(r["default"] for r in records) == 1
    none = next(r for r in records if r["filter"] == "none")
    assert none["jitter_ratio"] == pytest.approx(1.0) and none["err_ratio"] == pytest.approx(1.0)
    smooth = next(r for r in records if r["filter"] == "one_euro" and r["preset"] == "smooth")
    assert smooth["jitter_ratio"] < 0.5  # it filters
    assert "mediapipe" in text.getvalue()


def test_rotation_smoother_keeps_the_person_id() -> None:
    from avatarlink.smoothing import RotationSmoother
    from avatarlink.types import BoneRotations

    rot = np.tile(np.array([0, 0, 0, 1], np.float32), (3, 1))
    bones = BoneRotations(
        ("Hips", "Spine", "Chest"), rot, np.zeros(3, np.float32), np.ones(3, bool), 0.0, 7
    )
    assert RotationSmoother()(bones).person_id == 7
