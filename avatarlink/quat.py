"""Batched rotation maths: unit quaternions (``xyzw``, scipy's order) and 3x3 rotation matrices.

Every function works on arrays with any number of leading (batch) dimensions: a quaternion array
is ``(..., 4)``, a vector array ``(..., 3)``, a matrix array ``(..., 3, 3)``. Angles are radians
unless a name says ``_deg``. Rotations are active (they move vectors) and compose like matrices:
``multiply(a, b)`` applies ``b`` first, then ``a``. Computation is float64; callers cast at their
boundaries (``BoneRotations.rot`` is float32).

The frame does not matter here: the same numbers describe a rotation in avatarlink's world frame
(:mod:`avatarlink.types`) or in any other right-handed frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

# Below this norm a vector has no usable direction (it is a degenerate observation).
_EPS = 1e-12

# The Levi-Civita tensor: one einsum makes a batch of cross products (np.cross is slow on small
# batches).
_LEVI_CIVITA = np.zeros((3, 3, 3))
_LEVI_CIVITA[0, 1, 2] = _LEVI_CIVITA[1, 2, 0] = _LEVI_CIVITA[2, 0, 1] = 1.0
_LEVI_CIVITA[0, 2, 1] = _LEVI_CIVITA[2, 1, 0] = _LEVI_CIVITA[1, 0, 2] = -1.0
# Up to this many elements the einsum wins (fewer calls); beyond, elementwise products do.
_SMALL = 600


def _f64(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


def cross(a: ArrayLike, b: ArrayLike) -> Array:
    """Cross product of (..., 3) vectors (broadcasting) (faster than np.cross for small arrays)."""
    a, b = _f64(a), _f64(b)
    if a.size + b.size <= _SMALL:
        out: Array = np.einsum("ijk,...j,...k->...i", _LEVI_CIVITA, a, b)
        return out
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    out = np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=-1)
    return out


def dot(a: ArrayLike, b: ArrayLike) -> Array:
    """Dot product over the last axis, shape (...)."""
    out: Array = np.einsum("...i,...i->...", _f64(a), _f64(b))
    return out


def norm(v: ArrayLike) -> Array:
    """Euclidean norm over the last axis, shape (...)."""
    out: Array = np.sqrt(dot(v, v))
    return out


def unit(v: ArrayLike) -> Array:
    """Vectors scaled to unit length; zero vectors stay zero (no NaN)."""
    v = _f64(v)
    n = norm(v)[..., None]
    out: Array = np.where(n > _EPS, v / np.maximum(n, _EPS), 0.0)
    return out


def any_perpendicular(v: ArrayLike) -> Array:
    """A unit vector perpendicular to each (..., 3) vector ``v`` (deterministic choice)."""
    v = _f64(v)
    # Cross with the coordinate axis least aligned with v: never degenerate for a non-zero v.
    axis = np.zeros_like(v)
    idx = np.argmin(np.abs(v), axis=-1)
    np.put_along_axis(axis, idx[..., None], 1.0, axis=-1)
    return unit(cross(v, axis))


# --------------------------------------------------------------------------------------------
# Quaternions
# --------------------------------------------------------------------------------------------


def identity(shape: int | tuple[int, ...] = ()) -> Array:
    """Identity quaternions of batch ``shape``, (*shape, 4)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    q = np.zeros((*shape, 4), np.float64)
    q[..., 3] = 1.0
    return q


def normalize(q: ArrayLike) -> Array:
    """Unit quaternions; a zero quaternion becomes the identity."""
    q = _f64(q)
    n = norm(q)[..., None]
    out: Array = np.where(n > _EPS, q / np.maximum(n, _EPS), identity(q.shape[:-1]))
    return out


def canonical(q: ArrayLike) -> Array:
    """The same rotations with ``w >= 0`` (q and -q are the same rotation)."""
    q = _f64(q)
    out: Array = np.where(q[..., 3:4] < 0.0, -q, q)
    return out


def conjugate(q: ArrayLike) -> Array:
    """Conjugate ``(-x, -y, -z, w)``: the inverse rotation of a unit quaternion."""
    q = _f64(q)
    out: Array = q * np.array([-1.0, -1.0, -1.0, 1.0])
    return out


inverse = conjugate


def multiply(a: ArrayLike, b: ArrayLike) -> Array:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``), broadcasting over batches."""
    a, b = _f64(a), _f64(b)
    av, aw = a[..., :3], a[..., 3:]
    bv, bw = b[..., :3], b[..., 3:]
    v = aw * bv + bw * av + cross(av, bv)
    w = aw * bw - dot(av, bv)[..., None]
    out: Array = np.concatenate([v, w], axis=-1)
    return out


def rotate(q: ArrayLike, v: ArrayLike) -> Array:
    """Rotate (..., 3) vectors by unit quaternions (broadcasting)."""
    q, v = _f64(q), _f64(v)
    qv, qw = q[..., :3], q[..., 3:]
    t = 2.0 * cross(qv, v)
    out: Array = v + qw * t + cross(qv, t)
    return out


def from_axis_angle(axis: ArrayLike, angle: ArrayLike) -> Array:
    """Rotation of ``angle`` radians (...) about unit ``axis`` (..., 3), right-hand rule."""
    axis, half = _f64(axis), 0.5 * _f64(angle)
    shape = np.broadcast_shapes(axis.shape[:-1], half.shape)
    axis, half = np.broadcast_to(axis, (*shape, 3)), np.broadcast_to(half, shape)
    out: Array = np.concatenate([axis * np.sin(half)[..., None], np.cos(half)[..., None]], axis=-1)
    return out


def from_rotvec(rotvec: ArrayLike) -> Array:
    """Rotation from a rotation vector (axis times angle in radians), (..., 3) -> (..., 4)."""
    rotvec = _f64(rotvec)
    angle = norm(rotvec)
    return from_axis_angle(unit(rotvec), angle)


def to_axis_angle(q: ArrayLike) -> tuple[Array, Array]:
    """Unit axis (..., 3) and angle in [0, pi] (...) of unit quaternions (identity: axis +X)."""
    q = canonical(q)
    s = norm(q[..., :3])
    angle = 2.0 * np.arctan2(s, q[..., 3])
    default = np.broadcast_to(np.array([1.0, 0.0, 0.0]), q[..., :3].shape)
    axis = np.where(s[..., None] > _EPS, q[..., :3] / np.maximum(s, _EPS)[..., None], default)
    return axis, angle


def to_rotvec(q: ArrayLike) -> Array:
    """Rotation vectors (axis times angle, angle in [0, pi]), (..., 4) -> (..., 3)."""
    axis, angle = to_axis_angle(q)
    out: Array = axis * angle[..., None]
    return out


def angle(q: ArrayLike) -> Array:
    """Rotation angle in [0, pi] radians of unit quaternions, (...)."""
    q = _f64(q)
    out: Array = 2.0 * np.arctan2(norm(q[..., :3]), np.abs(q[..., 3]))
    return out


def angle_between(a: ArrayLike, b: ArrayLike) -> Array:
    """Geodesic angle in [0, pi] radians between two rotations (the angle of ``a^-1 b``)."""
    return angle(multiply(conjugate(a), b))


def from_two_vectors(u: ArrayLike, v: ArrayLike) -> Array:
    """The minimal (shortest-arc) rotation turning direction ``u`` onto direction ``v``.

    ``u`` and ``v`` are (..., 3) and need not be unit. Opposite vectors give a half turn about a
    deterministic perpendicular axis; a zero vector gives the identity.
    """
    u, v = unit(u), unit(v)
    c = dot(u, v)
    axis = cross(u, v)
    # q = (u x v, 1 + u.v) normalised is the half-angle form; it degenerates when u = -v.
    q = np.concatenate([axis, (1.0 + c)[..., None]], axis=-1)
    opposite = (1.0 + c) < 1e-9
    if np.any(opposite):
        half_turn = np.concatenate([any_perpendicular(u), np.zeros((*c.shape, 1))], axis=-1)
        q = np.where(opposite[..., None], half_turn, q)
    return normalize(q)


def to_matrix(q: ArrayLike) -> Array:
    """Rotation matrices (..., 3, 3) of unit quaternions (..., 4)."""
    q = _f64(q)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    m = np.stack(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        axis=-1,
    )  # fmt: skip
    out: Array = m.reshape(*q.shape[:-1], 3, 3)
    return out


def _product_map() -> Array:
    """Linear map (16, 10) from ``[m00 .. m22, 1]`` to the 4x4 matrix ``4 q_i q_j`` (xyzw)."""
    a = np.zeros((4, 4, 10))
    one = 9

    def m(r: int, c: int) -> int:
        return 3 * r + c

    # Diagonal: 4 q_i^2 = 1 +- m00 +- m11 +- m22.
    for i, signs in enumerate(((1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, 1))):
        a[i, i, one] = 1.0
        for k, sg in enumerate(signs):
            a[i, i, m(k, k)] = sg
    # Off-diagonal products from the symmetric and antisymmetric parts.
    pairs = {
        (0, 1): ((0, 1, 1), (1, 0, 1)), (0, 2): ((0, 2, 1), (2, 0, 1)),
        (1, 2): ((1, 2, 1), (2, 1, 1)), (3, 0): ((2, 1, 1), (1, 2, -1)),
        (3, 1): ((0, 2, 1), (2, 0, -1)), (3, 2): ((1, 0, 1), (0, 1, -1)),
    }  # fmt: skip
    for (i, j), terms in pairs.items():
        for r, c, sg in terms:
            a[i, j, m(r, c)] = a[j, i, m(r, c)] = sg
    return a.reshape(16, 10)


_PRODUCTS = _product_map().T.copy()  # (10, 16)
_DIAG16 = np.array([0, 5, 10, 15])
_TIE_BREAK = np.array([3e-12, 2e-12, 1e-12, 0.0])


def from_matrix(m: ArrayLike) -> Array:
    """Unit quaternions (..., 4) with ``w >= 0`` of rotation matrices (..., 3, 3).

    The matrix gives every product ``4 q_i q_j`` linearly; the row of the largest ``q_i``
    (Shepperd's choice, never smaller than 1/2) divided by its square root is the quaternion,
    accurate for every rotation including half turns.
    """
    m = _f64(m)
    lead = m.shape[:-2]
    aug = np.concatenate([m.reshape(*lead, 9), np.ones((*lead, 1))], axis=-1)
    prod = (aug @ _PRODUCTS).reshape(*lead, 4, 4)
    # One-hot of the largest diagonal entry (the tiny ramp breaks exact ties).
    diag = prod.reshape(*lead, 16)[..., _DIAG16] + _TIE_BREAK
    row = np.einsum("...ij,...i->...j", prod, diag >= diag.max(axis=-1, keepdims=True))
    scale = np.where(row[..., 3] < 0.0, -1.0, 1.0) / np.sqrt(np.einsum("...i,...i->...", row, row))
    out: Array = row * scale[..., None]
    return out


def swing_twist(q: ArrayLike, axis: ArrayLike) -> tuple[Array, Array]:
    """Split rotations into ``q = swing * twist`` with ``twist`` about unit ``axis``.

    ``twist`` turns about ``axis`` only; ``swing`` turns about an axis perpendicular to it (it is
    the shortest arc taking ``axis`` to ``q`` applied to ``axis``). Shapes (..., 4) and (..., 3).
    """
    q, axis = canonical(q), _f64(axis)
    proj = dot(q[..., :3], axis)[..., None] * axis
    twist = np.concatenate([proj, q[..., 3:]], axis=-1)
    tn = norm(twist)[..., None]
    # A half-turn swing leaves no twist information: take the identity twist there.
    twist = np.where(tn > 1e-9, twist / np.maximum(tn, 1e-12), identity(q.shape[:-1]))
    swing = multiply(q, conjugate(twist))
    return swing, twist


def twist_angle(q: ArrayLike, axis: ArrayLike) -> Array:
    """Signed twist angle in (-pi, pi] radians of ``q`` about unit ``axis`` (right-hand rule)."""
    q, axis = canonical(q), _f64(axis)
    a = 2.0 * np.arctan2(dot(q[..., :3], axis), q[..., 3])
    out: Array = np.where(a > np.pi, a - 2.0 * np.pi, a)
    return out


def power(q: ArrayLike, t: ArrayLike) -> Array:
    """``q`` raised to real power ``t`` (...): the same axis, ``t`` times the (shortest) angle."""
    axis, ang = to_axis_angle(q)
    return from_axis_angle(axis, ang * _f64(t))


def slerp(a: ArrayLike, b: ArrayLike, t: ArrayLike) -> Array:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) along the shortest arc."""
    a = _f64(a)
    return multiply(a, power(multiply(conjugate(a), b), t))


def mirror_x(q: ArrayLike) -> Array:
    """Rotations reflected through the YZ plane (x -> -x): ``(x, -y, -z, w)``.

    This is how a pose's rotations change when the body is mirrored left-right in avatarlink's
    world frame (+X is the subject's left).
    """
    q = _f64(q)
    out: Array = q * np.array([1.0, -1.0, -1.0, 1.0])
    return out


def random(shape: int | tuple[int, ...], rng: np.random.Generator) -> Array:
    """Uniformly distributed random rotations, (*shape, 4)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return normalize(rng.standard_normal((*shape, 4)))


# --------------------------------------------------------------------------------------------
# Rotation matrices (the solver's inner loop: one matmul composes or applies a whole batch)
# --------------------------------------------------------------------------------------------


def matrix_apply(m: ArrayLike, v: ArrayLike) -> Array:
    """``m @ v`` for (..., 3, 3) matrices and (..., 3) vectors."""
    out: Array = (_f64(m) @ _f64(v)[..., None])[..., 0]
    return out


def matrix_from_axis_angle(axis: ArrayLike, angle: ArrayLike) -> Array:
    """Rotation matrices (..., 3, 3) about unit ``axis`` (..., 3) by ``angle`` radians (...)."""
    axis, angle = _f64(axis), _f64(angle)
    s = np.sin(angle)[..., None, None]
    c = np.cos(angle)[..., None, None]
    # Rodrigues: R = c I + s [a]x + (1 - c) a a^T
    outer = axis[..., :, None] * axis[..., None, :]
    out: Array = c * np.eye(3) + s * skew(axis) + (1.0 - c) * outer
    return out


def skew(v: ArrayLike) -> Array:
    """Cross-product matrices ``[v]x`` (..., 3, 3) with ``[v]x @ w == v x w``."""
    out: Array = np.einsum("ijk,...j->...ik", _LEVI_CIVITA, _f64(v))
    return out


def matrix_from_two_vectors(u: ArrayLike, v: ArrayLike) -> Array:
    """Matrix form of :func:`from_two_vectors` (shortest arc from direction ``u`` to ``v``)."""
    u, v = unit(u), unit(v)
    c = dot(u, v)
    if np.all(c > -1.0 + 1e-9):
        # Rodrigues with the half-angle identity: R = I + [w]x + [w]x^2 / (1 + c), w = u x v.
        k = skew(cross(u, v))
        out: Array = np.eye(3) + k + (k @ k) / (1.0 + c)[..., None, None]
        return out
    return to_matrix(from_two_vectors(u, v))


def frame_matrix(primary: ArrayLike, secondary: ArrayLike) -> tuple[Array, Array]:
    """Orthonormal frames (..., 3, 3) whose columns are ``primary``, ``secondary`` made
    perpendicular to it, and their cross product; plus how perpendicular ``secondary`` was.

    Returns ``(frame, sin_angle)``: ``sin_angle`` (...) is the sine of the angle between the
    two inputs (0 when ``secondary`` is parallel to ``primary`` and the frame is not defined).
    """
    e1 = unit(primary)
    s = _f64(secondary)
    s_perp = s - dot(s, e1)[..., None] * e1
    sn = norm(s_perp)
    e2 = s_perp / np.maximum(sn, _EPS)[..., None]
    e3 = cross(e1, e2)
    frame: Array = np.stack([e1, e2, e3], axis=-1)
    sin_angle: Array = sn / np.maximum(norm(s), _EPS)
    return frame, sin_angle
