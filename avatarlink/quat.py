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

# The Levi-Civita tensor (cross products as index maps and the cross-product matrix).
_LEVI_CIVITA = np.zeros((3, 3, 3))
_LEVI_CIVITA[0, 1, 2] = _LEVI_CIVITA[1, 2, 0] = _LEVI_CIVITA[2, 0, 1] = 1.0
_LEVI_CIVITA[0, 2, 1] = _LEVI_CIVITA[2, 1, 0] = _LEVI_CIVITA[1, 0, 2] = -1.0
# ``a x b = (a[I] * b[J])[:3] - (a[I] * b[J])[3:]``: one gather per operand, one product and one
# difference (np.cross and an einsum with the tensor cost several times more on small batches).
_CROSS_A = np.array([1, 2, 0, 2, 0, 1])
_CROSS_B = np.array([2, 0, 1, 1, 2, 0])
# ``v @ _SKEW_MAP`` is the flattened cross-product matrix ``[v]x`` (row-major 3x3).
_SKEW_MAP = np.ascontiguousarray(np.transpose(_LEVI_CIVITA, (1, 0, 2)).reshape(3, 9))
# Up to this many elements the gathers win (fewer calls); beyond, per-component products do.
_SMALL = 3000


def _f64(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


def cross(a: ArrayLike, b: ArrayLike) -> Array:
    """Cross product of (..., 3) vectors (broadcasting) (faster than np.cross for small arrays)."""
    a, b = _f64(a), _f64(b)
    if a.size + b.size <= _SMALL:
        p = a[..., _CROSS_A] * b[..., _CROSS_B]
        out: Array = p[..., :3] - p[..., 3:]
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


def _left_product_map() -> Array:
    """Linear map (4, 16): ``a @ map`` is the flattened 4x4 matrix ``L(a)`` with
    ``a * b == L(a) @ b`` (Hamilton product, xyzw)."""
    x, y, z, w = np.eye(4)
    rows = (
        (w, -z, y, x),  # x of a * b: aw bx - az by + ay bz + ax bw
        (z, w, -x, y),
        (-y, x, w, z),
        (-x, -y, -z, w),
    )
    out: Array = np.stack([np.stack(r, axis=-1) for r in rows], axis=-2).reshape(4, 16)
    return out


_LEFT_PRODUCT = _left_product_map()


def multiply(a: ArrayLike, b: ArrayLike) -> Array:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``), broadcasting over batches."""
    a, b = _f64(a), _f64(b)
    # One matrix product: a * b = L(a) b, with L(a) linear in a.
    left = (a @ _LEFT_PRODUCT).reshape(*a.shape[:-1], 4, 4)
    out: Array = (left @ b[..., None])[..., 0]
    return out


def rotate(q: ArrayLike, v: ArrayLike) -> Array:
    """Rotate (..., 3) vectors by unit quaternions (broadcasting)."""
    v = _f64(v)
    out: Array = (to_matrix(q) @ v[..., None])[..., 0]
    return out


def from_axis_angle(axis: ArrayLike, angle: ArrayLike) -> Array:
    """Rotation of ``angle`` radians (...) about unit ``axis`` (..., 3), right-hand rule."""
    axis, half = _f64(axis), 0.5 * _f64(angle)
    v = axis * np.sin(half)[..., None]
    out: Array = np.empty((*v.shape[:-1], 4))
    out[..., :3] = v
    out[..., 3] = np.cos(half)
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


def _matrix_map() -> tuple[Array, Array]:
    """Linear map (16, 9) from the products ``q_i q_j`` (flattened 4x4, xyzw) to a rotation
    matrix's entries, and its constant part (9,)."""
    x, y, z, w = 0, 1, 2, 3
    terms = (  # entry: (coefficient, i, j) ... for 1 + sum c q_i q_j
        ((-2, y, y), (-2, z, z)), ((2, x, y), (-2, w, z)), ((2, x, z), (2, w, y)),
        ((2, x, y), (2, w, z)), ((-2, x, x), (-2, z, z)), ((2, y, z), (-2, w, x)),
        ((2, x, z), (-2, w, y)), ((2, y, z), (2, w, x)), ((-2, x, x), (-2, y, y)),
    )  # fmt: skip
    a = np.zeros((16, 9))
    for e, entry in enumerate(terms):
        for c, i, j in entry:
            a[4 * i + j, e] += c
    return a, np.eye(3).reshape(9)


_MATRIX_MAP, _MATRIX_ONE = _matrix_map()


def to_matrix(q: ArrayLike) -> Array:
    """Rotation matrices (..., 3, 3) of unit quaternions (..., 4)."""
    q = _f64(q)
    lead = q.shape[:-1]
    products = (q[..., :, None] * q[..., None, :]).reshape(*lead, 16)
    out: Array = products @ _MATRIX_MAP
    out += _MATRIX_ONE
    return out.reshape(*lead, 3, 3)


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
_PRODUCTS_M = _PRODUCTS[:9].copy()  # the part linear in the matrix entries
_PRODUCTS_1 = _PRODUCTS[9].copy()  # the constant part
# The row of products with w (``4 w q``), the usual choice: linear part (9, 4) and constant (4,).
_W_ROW_M = _PRODUCTS_M[:, 12:].copy()
_W_ROW_1 = _PRODUCTS_1[12:].copy()
# Where 4 w^2 is at least this, the w row alone is accurate (w >= 1/4; errors below 1e-15).
_W_ROW_MIN = 0.25
_TIE_BREAK = np.array([3e-12, 2e-12, 1e-12, 0.0])
_EYE3 = np.eye(3)


def from_matrix(m: ArrayLike) -> Array:
    """Unit quaternions (..., 4) with ``w >= 0`` of rotation matrices (..., 3, 3).

    The matrix gives every product ``4 q_i q_j`` linearly; the row of the largest ``q_i``
    (Shepperd's choice, never smaller than 1/2) divided by its square root is the quaternion,
    accurate for every rotation including half turns. When every rotation turns by less than
    about 150 degrees the row of ``w`` alone serves (``|w| >= 1/4``), in a few operations.
    """
    m = _f64(m)
    lead = m.shape[:-2]
    m9 = m.reshape(*lead, 9)
    row = m9 @ _W_ROW_M
    row += _W_ROW_1
    if row.size and row[..., 3].min() >= _W_ROW_MIN:
        fast: Array = row / np.sqrt(np.einsum("...i,...i->...", row, row))[..., None]
        return fast
    prod = m9 @ _PRODUCTS_M
    prod += _PRODUCTS_1
    # One-hot of the largest diagonal entry (the tiny ramp breaks exact ties).
    diag = prod[..., ::5] + _TIE_BREAK
    row = np.einsum(
        "...ij,...i->...j", prod.reshape(*lead, 4, 4), diag >= diag.max(axis=-1, keepdims=True)
    )
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
    c = np.cos(angle)[..., None, None]
    s = np.sin(angle)[..., None, None]
    # Rodrigues: R = c I + s [a]x + (1 - c) a a^T
    out: Array = (axis[..., :, None] * axis[..., None, :]) * (1.0 - c)
    out += s * skew(axis)
    out += c * _EYE3
    return out


def skew(v: ArrayLike) -> Array:
    """Cross-product matrices ``[v]x`` (..., 3, 3) with ``[v]x @ w == v x w``."""
    v = _f64(v)
    out: Array = (v @ _SKEW_MAP).reshape(*v.shape[:-1], 3, 3)
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
