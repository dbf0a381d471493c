"""Batched quaternion / rotation-matrix maths against scipy and first principles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatarlink import quat


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _random(rng: np.random.Generator, n: int) -> np.ndarray:
    return quat.random(n, rng)


def _same_rotation(a: np.ndarray, b: np.ndarray, tol_deg: float = 1e-6) -> None:
    assert np.degrees(quat.angle_between(a, b)).max() < tol_deg


def test_multiply_and_rotate_match_scipy(rng: np.random.Generator) -> None:
    a, b = _random(rng, 200), _random(rng, 200)
    v = rng.standard_normal((200, 3))
    expected = (Rotation.from_quat(a) * Rotation.from_quat(b)).as_quat()
    _same_rotation(quat.multiply(a, b), expected)
    np.testing.assert_allclose(quat.rotate(a, v), Rotation.from_quat(a).apply(v), atol=1e-12)
    np.testing.assert_allclose(quat.to_matrix(a), Rotation.from_quat(a).as_matrix(), atol=1e-12)


def test_from_matrix_is_exact_everywhere_including_half_turns(rng: np.random.Generator) -> None:
    axes = quat.unit(rng.standard_normal((500, 3)))
    near_half = quat.from_axis_angle(axes, np.pi - rng.uniform(0, 1e-6, 500))
    tiny = quat.from_rotvec(rng.standard_normal((100, 3)) * 1e-8)
    exact_half = quat.from_axis_angle(quat.unit(np.array([[1.0, -1.0, 0.0], [0, 1, -1]])), np.pi)
    q = np.concatenate([_random(rng, 2000), near_half, tiny, exact_half, quat.identity(2)])
    back = quat.from_matrix(Rotation.from_quat(q).as_matrix())
    _same_rotation(back, q, 1e-7)
    assert np.all(back[:, 3] >= 0.0)
    np.testing.assert_allclose(quat.norm(back), 1.0, atol=1e-12)


def test_from_two_vectors_is_the_shortest_arc(rng: np.random.Generator) -> None:
    u, v = rng.standard_normal((300, 3)), rng.standard_normal((300, 3))
    q = quat.from_two_vectors(u, v)
    np.testing.assert_allclose(quat.rotate(q, quat.unit(u)), quat.unit(v), atol=1e-12)
    between = np.arccos(np.clip(quat.dot(quat.unit(u), quat.unit(v)), -1, 1))
    np.testing.assert_allclose(quat.angle(q), between, atol=1e-9)
    # the axis is perpendicular to both: no twist about u
    np.testing.assert_allclose(quat.dot(q[:, :3], u), 0.0, atol=1e-9)
    m = quat.matrix_from_two_vectors(u, v)
    np.testing.assert_allclose(m, quat.to_matrix(q), atol=1e-12)


def test_from_two_vectors_opposite_gives_a_half_turn() -> None:
    u = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    q = quat.from_two_vectors(u, -u)
    np.testing.assert_allclose(quat.rotate(q, u), -u, atol=1e-12)
    np.testing.assert_allclose(quat.angle(q), np.pi, atol=1e-12)
    m = quat.matrix_from_two_vectors(u, -u)
    np.testing.assert_allclose(quat.matrix_apply(m, u), -u, atol=1e-12)


def test_swing_twist_recomposes_and_twist_is_about_the_axis(rng: np.random.Generator) -> None:
    q = _random(rng, 300)
    axis = quat.unit(rng.standard_normal((300, 3)))
    swing, twist = quat.swing_twist(q, axis)
    _same_rotation(quat.multiply(swing, twist), q)
    np.testing.assert_allclose(quat.norm(quat.cross(twist[:, :3], axis)), 0.0, atol=1e-9)
    np.testing.assert_allclose(quat.dot(swing[:, :3], axis), 0.0, atol=1e-9)
    # the signed twist angle rebuilds the twist
    _same_rotation(quat.from_axis_angle(axis, quat.twist_angle(q, axis)), twist)


def test_power_and_slerp(rng: np.random.Generator) -> None:
    a, b = _random(rng, 50), _random(rng, 50)
    _same_rotation(quat.slerp(a, b, 0.0), a)
    _same_rotation(quat.slerp(a, b, 1.0), b)
    half = quat.slerp(a, b, 0.5)
    np.testing.assert_allclose(quat.angle_between(a, half), quat.angle_between(half, b), atol=1e-9)
    _same_rotation(quat.multiply(quat.power(a, 0.3), quat.power(a, 0.7)), a)


def test_mirror_x_reflects_rotations(rng: np.random.Generator) -> None:
    q = _random(rng, 100)
    v = rng.standard_normal((100, 3))
    flip = np.array([-1.0, 1.0, 1.0])
    # reflect, rotate, reflect back == rotate by the mirrored rotation
    np.testing.assert_allclose(
        quat.rotate(quat.mirror_x(q), v * flip), quat.rotate(q, v) * flip, atol=1e-12
    )


def test_cross_matches_numpy_for_small_and_large_batches(rng: np.random.Generator) -> None:
    for n in (1, 7, 5000):
        a, b = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
        np.testing.assert_allclose(quat.cross(a, b), np.cross(a, b), atol=1e-12)
    a = rng.standard_normal((4, 5, 3))
    np.testing.assert_allclose(quat.cross(a, np.array([0, 0, 1.0])), np.cross(a, [0, 0, 1.0]))


def test_frame_matrix_is_orthonormal_and_reports_degeneracy(rng: np.random.Generator) -> None:
    p, s = rng.standard_normal((100, 3)), rng.standard_normal((100, 3))
    frame, _ = quat.frame_matrix(p, s)
    eye = np.broadcast_to(np.eye(3), (100, 3, 3))
    np.testing.assert_allclose(frame @ np.swapaxes(frame, -1, -2), eye, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(frame), 1.0, atol=1e-12)
    np.testing.assert_allclose(frame[..., 0], quat.unit(p), atol=1e-12)
    _, parallel = quat.frame_matrix(np.array([1.0, 0, 0]), np.array([2.0, 0, 0]))
    assert parallel < 1e-12


def test_matrix_axis_angle_and_rotvec_round_trip(rng: np.random.Generator) -> None:
    rv = rng.standard_normal((100, 3))
    rv *= (rng.uniform(0, np.pi - 1e-3, 100) / np.linalg.norm(rv, axis=1))[:, None]
    np.testing.assert_allclose(quat.to_rotvec(quat.from_rotvec(rv)), rv, atol=1e-9)
    axis, angle = quat.unit(rv), np.linalg.norm(rv, axis=1)
    np.testing.assert_allclose(
        quat.matrix_from_axis_angle(axis, angle), Rotation.from_rotvec(rv).as_matrix(), atol=1e-12
    )
