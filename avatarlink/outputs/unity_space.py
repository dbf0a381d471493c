"""The one conversion from avatarlink's world frame to Unity's, and Unity's Euler angles.

avatarlink world (see :mod:`avatarlink.types`): metres, right-handed, +Y up, +Z towards the camera,
and a subject or rig at rest faces +Z with its **left** side at +X.

Unity: metres, left-handed, +Y up, and a humanoid at rest faces +Z with its **right** side at +X
(``transform.right`` is +X, ``transform.forward`` +Z).

The avatar must keep facing +Z and keep its left on its left, so the map is the reflection
through the body's sagittal plane, ``x -> -x``::

    position    (x, y, z)      -> (-x, y, z)
    quaternion  (x, y, z, w)   -> (x, -y, -z, w)

The quaternion rule follows from R_unity = M R M with M = diag(-1, 1, 1): a rotation about the X
axis commutes with M and keeps its angle, rotations about Y and Z change sign. Example: raising the
left arm sideways is +90 degrees about +Z in our frame (it maps the arm direction +X to +Y); in
Unity it becomes -90 degrees about +Z, which maps the left arm direction -X to +Y: the arm goes up.

Unity and our code use the same quaternion algebra and the same quaternion-to-matrix formula
(handedness changes only how a positive angle looks on screen), so no other sign changes are needed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

#: Per-axis signs of the position map, (x, y, z).
POSITION_SIGNS = np.array([-1.0, 1.0, 1.0], np.float32)
#: Per-component signs of the quaternion map, (x, y, z, w).
QUATERNION_SIGNS = np.array([1.0, -1.0, -1.0, 1.0], np.float32)


def positions_to_unity(positions: npt.ArrayLike) -> FloatArray:
    """World-frame positions (..., 3) metres -> Unity positions (..., 3) metres, float32."""
    # "+ 0" turns the -0.0 of a negated zero into +0.0, so zeros go on the wire as 0x00000000.
    out: FloatArray = np.asarray(positions, np.float32) * POSITION_SIGNS + np.float32(0)
    return out


def quaternions_to_unity(quaternions: npt.ArrayLike) -> FloatArray:
    """World-frame rotations (..., 4) xyzw -> the same rotations in Unity's frame (..., 4) xyzw."""
    out: FloatArray = np.asarray(quaternions, np.float32) * QUATERNION_SIGNS + np.float32(0)
    return out


def unity_euler_degrees(quaternions: npt.ArrayLike) -> FloatArray:
    """Unity quaternions (..., 4) xyzw -> Unity Euler angles (..., 3) degrees in [0, 360).

    Unity's convention (``Quaternion.eulerAngles``): the rotation applies Z first, then X, then Y,
    so R = Ry(y) @ Rx(x) @ Rz(z) with the usual right-hand-rule matrices of each angle. With
    r_ij the elements of R: x = asin(-r12), y = atan2(r02, r22), z = atan2(r10, r11); at
    x = +-90 degrees (gimbal lock) z is set to 0 and y = atan2(-r20, r00).
    """
    q = np.asarray(quaternions, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    r00 = 1 - 2 * (y * y + z * z)
    r02 = 2 * (x * z + w * y)
    r10 = 2 * (x * y + w * z)
    r11 = 1 - 2 * (x * x + z * z)
    r12 = 2 * (y * z - w * x)
    r20 = 2 * (x * z - w * y)
    r22 = 1 - 2 * (x * x + y * y)
    sin_x = np.clip(-r12, -1.0, 1.0)
    ex = np.arcsin(sin_x)
    locked = np.abs(sin_x) > 1.0 - 1e-6
    ey = np.where(locked, np.arctan2(-r20, r00), np.arctan2(r02, r22))
    ez = np.where(locked, 0.0, np.arctan2(r10, r11))
    degrees = np.degrees(np.stack([ex, ey, ez], axis=-1)) % 360.0
    return np.asarray(np.where(degrees >= 360.0 - 1e-9, 0.0, degrees), np.float32)
