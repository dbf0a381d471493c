"""Temporal smoothing of keypoints and bone rotations: batched no-op, One-Euro, Kalman and velocity
filters, a :class:`KeypointSmoother` for :class:`~avatarlink.types.Keypoints` and a
:class:`RotationSmoother` for :class:`~avatarlink.types.BoneRotations`.

Every filter keeps its state as numpy arrays with the shape of its input (typically ``(P, K, D)``:
persons, keypoints, axes), so one call filters everything at once. Each element is an independent
scalar filter.

Time
    Real timestamps in seconds drive everything; the sampling period is derived from them (no
    assumed frame rate). A timestamp that does not increase skips the update, returns the previous
    output and is counted (:attr:`SmoothingFilter.skipped_timestamps`; a warning is logged once).
    ``t = 0.0`` is a valid timestamp.
Missing data
    An element whose value is NaN, or whose ``mask`` is False, does not update: One-Euro and the
    velocity filter hold their last estimate, the Kalman filter predicts with growing
    uncertainty. NaN never enters the state. An element that has never been measured passes its
    input through.
Scale
    ``scale`` (broadcasting to the input) divides the *speed* the One-Euro and velocity filters
    adapt to, so their parameters are in units of the person's size and hold near and far from
    the camera. The low-pass itself is linear, so the output of a person twice the size is exactly
    twice the output. The Kalman estimate is scale-equivariant without it.
"""

from __future__ import annotations

import abc
import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ConfigError, InputError
from avatarlink.metrics import bbox_diagonal, bbox_mean_side, torso_length
from avatarlink.skeletons import KeypointLayout
from avatarlink.smoothing_config import (
    DEFAULT_PRESET,
    KALMAN_MODELS,
    PRESETS,
    OneEuroParams,
    SmoothingConfig,
)
from avatarlink.types import BoneRotations, Keypoints, Space

__all__ = [
    "KalmanFilter",
    "KeypointSmoother",
    "NoOpFilter",
    "OneEuroFilter",
    "QuaternionOneEuroFilter",
    "RotationSmoother",
    "SmoothingFilter",
    "VelocityFilter",
    "make_filter",
    "person_scale",
]

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]

_TWO_PI = 2.0 * math.pi
# Smallest half-angle (rad) used in the slerp weights; below it slerp and lerp agree to ~1e-12.
_SLERP_MIN_HALF_ANGLE = 1e-6


def _check_param(owner: str, name: str, value: float, rule: str, unit: str) -> float:
    value = float(value)
    bad = not math.isfinite(value) or (value <= 0 if rule == ">" else value < 0)
    if bad:
        raise ConfigError(f"{owner} {name} must be {rule} 0 {unit}, got {value}".rstrip())
    return value


def _alpha(te: Any, cutoff: Any) -> Any:
    """Weight of the new sample of a first-order low-pass: r / (r + 1), r = 2 pi cutoff te."""
    r = cutoff * (_TWO_PI * te)
    return r / (r + 1.0)


# --------------------------------------------------------------------------------------------------
# Filter interface
# --------------------------------------------------------------------------------------------------


class SmoothingFilter(abc.ABC):
    """A batched filter: ``f(x, t)`` returns the filtered array, ``reset()`` forgets everything.

    ``x`` is a float array of any shape (the same shape call after call; a new shape resets),
    ``t`` the sample time in seconds. Optional ``mask`` (bool, broadcasting to ``x``) marks the
    elements allowed to update; ``scale`` (broadcasting to ``x``, > 0) the length unit of the
    adaptive parts. Returns a new float64 array shaped like ``x``.
    """

    def __init__(self) -> None:
        self._shape: tuple[int, ...] | None = None
        self._t_last: float | None = None
        self._out: F64 | None = None
        self._init: BoolArr = np.zeros(0, bool)
        self._skipped = 0

    # -- public ---------------------------------------------------------------------------------

    @property
    def skipped_timestamps(self) -> int:
        """How many calls were skipped because their timestamp did not increase."""
        return self._skipped

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of the state (that of the last input), or None before the first call."""
        return self._shape

    def reset(self) -> None:
        """Forget all state; the next call starts afresh (the skipped-timestamp count is kept)."""
        self._shape = None
        self._t_last = None
        self._out = None

    def reset_where(self, mask: npt.ArrayLike) -> None:
        """Forget the elements where ``mask`` (broadcasting to the state) is True.

        They pass their next measurement through and start filtering from it, so a track that
        reappears does not glide from a stale estimate.
        """
        if self._shape is None:
            return
        m = np.broadcast_to(np.asarray(mask, dtype=bool), self._shape)
        self._init = self._init & ~m
        self._forget(m)

    def grow(self, rows: int) -> None:
        """Extend the state along axis 0 to ``rows`` (new rows unmeasured); used for new persons."""
        if self._shape is None or rows <= self._shape[0]:
            return
        extra = rows - self._shape[0]
        self._shape = (rows, *self._shape[1:])
        self._init = _pad0(self._init, extra, False)
        if self._out is not None:
            self._out = _pad0(self._out, extra, np.nan)
        self._grow_state(extra)

    def __call__(
        self,
        x: npt.ArrayLike,
        t: float,
        mask: npt.ArrayLike | None = None,
        scale: npt.ArrayLike | None = None,
    ) -> F64:
        """Filter one sample ``x`` taken at ``t`` seconds; see the class docstring."""
        xa = np.asarray(x, dtype=np.float64)
        t = float(t)
        if not math.isfinite(t):
            raise InputError(f"timestamp must be finite seconds, got {t}")
        valid = np.isfinite(xa)
        if mask is not None:
            valid &= np.asarray(mask, dtype=bool)
        s = None if scale is None else np.asarray(scale, dtype=np.float64)
        result: F64 = self._update(xa, t, valid, s).copy()
        return result

    def _update(self, x: F64, t: float, valid: BoolArr, scale: F64 | None) -> F64:
        """:meth:`__call__` on checked inputs: float64 ``x``, finite ``t``, ``valid`` (bool, shaped
        like ``x``: finite and allowed to update). Returns the filter's own output array, which
        the caller must not modify."""
        if x.shape != self._shape:
            if self._shape is not None:
                log.debug("input shape changed %s -> %s: filter reset", self._shape, x.shape)
            self._allocate(x.shape)
        elif self._t_last is not None and t <= self._t_last and self._out is not None:
            self._skip(t)
            return self._out
        if scale is not None and np.count_nonzero(scale > 0) != scale.size:
            raise InputError("scale must be > 0 and finite everywhere")
        out = self._step(x, t, valid, scale)
        self._t_last = t
        self._out = out
        return out

    # -- for subclasses ---------------------------------------------------------------------------

    def _skip(self, t: float) -> None:
        self._skipped += 1
        if self._skipped == 1:
            log.warning(
                "%s: timestamp %.6f s does not increase (last %.6f s); update skipped "
                "(further skips counted silently)",
                type(self).__name__,
                t,
                self._t_last,
            )

    def _allocate(self, shape: tuple[int, ...]) -> None:
        self._shape = shape
        self._t_last = None
        self._out = None
        self._init = np.zeros(shape, bool)
        self._allocate_state(shape)

    @abc.abstractmethod
    def _allocate_state(self, shape: tuple[int, ...]) -> None:
        """Create zeroed state arrays for inputs of ``shape``."""

    @abc.abstractmethod
    def _grow_state(self, extra: int) -> None:
        """Append ``extra`` unmeasured rows along axis 0 to every state array."""

    def _forget(self, mask: BoolArr) -> None:  # noqa: B027 - optional hook
        """Extra per-element clean-up on :meth:`reset_where` (``_init`` is already cleared)."""

    @abc.abstractmethod
    def _step(self, x: F64, t: float, valid: BoolArr, scale: F64 | None) -> F64:
        """Advance to ``t`` with measurements ``x`` where ``valid``; return the estimate."""


def _pad0(arr: Any, extra: int, fill: Any) -> Any:
    """``arr`` with ``extra`` rows of ``fill`` appended along axis 0."""
    pad = np.full((extra, *arr.shape[1:]), fill, dtype=arr.dtype)
    return np.concatenate([arr, pad], axis=0)


class NoOpFilter(SmoothingFilter):
    """Passes its input through (the ``none`` filter); still counts non-increasing timestamps."""

    def _allocate_state(self, shape: tuple[int, ...]) -> None:
        pass

    def _grow_state(self, extra: int) -> None:
        pass

    def _step(self, x: F64, t: float, valid: BoolArr, scale: F64 | None) -> F64:
        out: F64 = x.copy()
        return out


# --------------------------------------------------------------------------------------------------
# One-Euro
# --------------------------------------------------------------------------------------------------


class OneEuroFilter(SmoothingFilter):
    """One-Euro filter (Casiez, Roussel, Vogel, CHI 2012), the 2023 reference variant.

    Per element and sample, with ``te`` the time since that element's last update::

        dx     = (x - x_hat_prev) / te          # speed from the last *filtered* value (2023)
        dx_hat = lowpass(dx, alpha(te, d_cutoff))
        cutoff = min_cutoff + beta * max(|dx_hat| / scale - deadband, 0)
        x_hat  = lowpass(x, alpha(te, cutoff)),   alpha = r / (r + 1), r = 2 pi cutoff te

    The first sample of an element is passed through with a zero speed. With the defaults
    (``speed_dims=None``, ``deadband=0``) this is exactly the reference filter.

    Args:
        min_cutoff: Hz, cutoff at rest.
        beta: s per unit of ``x / scale``; speed coefficient of the cutoff.
        d_cutoff: Hz, cutoff of the speed estimate.
        speed_dims: None (the reference): each element adapts to its own speed. An integer n:
            the last axis holds the coordinates of a point, and every coordinate of the point
            adapts to the Euclidean norm of the speed of its first n coordinates (``|dx_hat|``
            becomes ``||dx_hat[..., :n]||``), so the smoothing does not depend on the direction
            of motion. The keypoint smoother uses n = 2 in image space (x, y: the model's
            relative depth is too noisy to steer the cutoff) and n = 3 in world space.
        deadband: speed (units of ``x / scale`` per second) below which the cutoff stays at
            ``min_cutoff``: the speed that sensor noise alone gives the filtered signal, so that
            noise does not open the filter of a still point.
    """

    def __init__(
        self,
        min_cutoff: float = 1.0,
        beta: float = 0.0,
        d_cutoff: float = 1.0,
        speed_dims: int | None = None,
        deadband: float = 0.0,
    ) -> None:
        super().__init__()
        self.min_cutoff = _check_param("OneEuroFilter", "min_cutoff", min_cutoff, ">", "Hz")
        self.beta = _check_param("OneEuroFilter", "beta", beta, ">=", "")
        self.d_cutoff = _check_param("OneEuroFilter", "d_cutoff", d_cutoff, ">", "Hz")
        if speed_dims is not None and (int(speed_dims) != speed_dims or speed_dims < 1):
            raise ConfigError(f"OneEuroFilter speed_dims must be None or >= 1, got {speed_dims}")
        self.speed_dims = None if speed_dims is None else int(speed_dims)
        self.deadband = _check_param("OneEuroFilter", "deadband", deadband, ">=", "")
        self._x: F64 = np.zeros(0)
        self._dx: F64 = np.zeros(0)
        self._tp: F64 = np.zeros(0)
        # When every element was updated at the same time, that time (else None): the fast path.
        self._t_all: float | None = None
        self._all_init = False

    def _allocate_state(self, shape: tuple[int, ...]) -> None:
        if self.speed_dims is not None and (len(shape) == 0 or shape[-1] < self.speed_dims):
            raise InputError(
                f"OneEuroFilter with speed_dims={self.speed_dims} needs (..., >= "
                f"{self.speed_dims}) inputs, got shape {shape}"
            )
        self._x = np.zeros(shape)
        self._dx = np.zeros(shape)
        self._tp = np.full(shape, np.nan)
        self._t_all = None
        self._all_init = False

    def _grow_state(self, extra: int) -> None:
        self._materialise_times()
        self._x = _pad0(self._x, extra, 0.0)
        self._dx = _pad0(self._dx, extra, 0.0)
        self._tp = _pad0(self._tp, extra, np.nan)
        self._all_init = False

    def _forget(self, mask: BoolArr) -> None:
        self._materialise_times()
        self._all_init = False

    def _materialise_times(self) -> None:
        if self._t_all is not None:
            self._tp = np.full(self._x.shape, self._t_all)
            self._t_all = None

    def _speed(self, dx: F64, scale: F64 | None) -> F64:
        """|dx| per element, or the norm over the point's first ``speed_dims`` coordinates."""
        if self.speed_dims is None:
            speed = np.abs(dx)
        else:
            v = dx[..., : self.speed_dims]
            speed = np.sqrt(v[..., None, :] @ v[..., :, None])[..., 0]
        if scale is not None:
            speed = speed / scale
        if self.deadband > 0.0:
            speed = np.maximum(speed - self.deadband, 0.0)
        return speed

    def _step(self, x: F64, t: float, valid: BoolArr, scale: F64 | None) -> F64:
        all_valid = np.count_nonzero(valid) == valid.size
        if self._all_init and self._t_all is not None and all_valid:
            # Fast path: every element measured now and at the same previous time.
            te = t - self._t_all
            raw = x - self._x
            dx = raw * (1.0 / te)
            dx -= self._dx
            dx *= _alpha(te, self.d_cutoff)
            self._dx += dx
            cutoff = self._speed(self._dx, scale)
            cutoff *= self.beta
            cutoff += self.min_cutoff
            raw *= _alpha(te, cutoff)
            self._x += raw
            self._t_all = t
            return self._x

        if self._all_init or not np.count_nonzero(valid > self._init):
            # No element is measured for the first time: the update below, restricted to the
            # measured elements in place (each with its own time since its last update).
            te_el: Any = t - (self._tp if self._t_all is None else self._t_all)
            raw = x - self._x
            dx_hat = raw / te_el
            dx_hat -= self._dx
            dx_hat *= _alpha(te_el, self.d_cutoff)
            dx_hat += self._dx
            np.copyto(self._dx, dx_hat, where=valid)
            cutoff = self._speed(self._dx, scale)
            cutoff *= self.beta
            cutoff += self.min_cutoff
            raw *= _alpha(te_el, cutoff)
            raw += self._x
            np.copyto(self._x, raw, where=valid)
            self._materialise_times()
            np.copyto(self._tp, t, where=valid)
            if self._all_init:
                return self._x
            return np.where(self._init, self._x, x)

        self._materialise_times()
        te_el = t - self._tp  # NaN for never-measured elements: their results are discarded
        raw = x - self._x
        update = valid & self._init
        first = valid & ~self._init
        dx_hat = self._dx + _alpha(te_el, self.d_cutoff) * (raw / te_el - self._dx)
        # The speed comes from the new derivative *state* (finite everywhere), so an unmeasured
        # coordinate never makes a measured one of the same point NaN.
        self._dx = np.where(update, dx_hat, np.where(first, 0.0, self._dx))
        cutoff = self.min_cutoff + self.beta * self._speed(self._dx, scale)
        x_hat = self._x + _alpha(te_el, cutoff) * raw
        self._x = np.where(update, x_hat, np.where(first, x, self._x))
        self._tp = np.where(valid, t, self._tp)
        self._init = self._init | valid
        self._all_init = np.count_nonzero(self._init) == self._init.size
        if self._all_init and all_valid:
            self._t_all = t
        return np.where(self._init, self._x, x)


# --------------------------------------------------------------------------------------------------
# Kalman
# --------------------------------------------------------------------------------------------------


class KalmanFilter(SmoothingFilter):
    """Linear Kalman filter per element: constant velocity or constant acceleration.

    State per element ``s = [position, velocity(, acceleration)]``, covariance ``P``; the
    measurement is the position. With ``dt`` the time since the last call (all elements are
    predicted every call)::

        predict:  s = F s,  P = F P F^T + Q          F: kinematics over dt
                  Q = q * integral of the white acceleration (CV) / jerk (CA) noise over dt
        update:   S = P00 + r^2,  K = P[:, 0] / S,  s += K (z - s0),  P -= K P[0, :]

    Unmeasured elements are only predicted (their uncertainty grows, so the next measurement
    weighs more). A new element starts at its measurement with zero velocity.

    Args:
        process_noise: ``q``, the noise spectral density (length^2/s^3 for CV, length^2/s^5 CA).
        measurement_noise: ``r``, measurement standard deviation (length).
        model: ``constant_velocity`` or ``constant_acceleration``.
        initial_velocity_std: length/s; initial velocity uncertainty.
        initial_acceleration_std: length/s^2; initial acceleration uncertainty (CA only).

    Only the ratios of these variances shape the estimate, so it is scale-equivariant: ``scale``
    is accepted for interface uniformity and not used.
    """

    def __init__(
        self,
        process_noise: float = 10.0,
        measurement_noise: float = 0.01,
        model: str = "constant_velocity",
        initial_velocity_std: float = 2.0,
        initial_acceleration_std: float = 20.0,
    ) -> None:
        super().__init__()
        if model not in KALMAN_MODELS:
            raise ConfigError(
                f"KalmanFilter model must be one of {list(KALMAN_MODELS)}, got {model!r}"
            )
        self.model = model
        self.process_noise = _check_param("KalmanFilter", "process_noise", process_noise, ">", "")
        self.measurement_noise = _check_param(
            "KalmanFilter", "measurement_noise", measurement_noise, ">", ""
        )
        v0 = _check_param("KalmanFilter", "initial_velocity_std", initial_velocity_std, ">", "")
        a0 = _check_param(
            "KalmanFilter", "initial_acceleration_std", initial_acceleration_std, ">", ""
        )
        n = 2 if model == "constant_velocity" else 3
        self.n = n
        self._r2 = self.measurement_noise**2
        self._p0 = [self._r2, v0 * v0, a0 * a0][:n]
        # Component-first storage keeps every component contiguous: s[i] is state component i,
        # p[_IX[i][j]] the covariance entry (i, j), packed upper triangle (symmetric).
        self._ix = [[_packed(min(i, j), max(i, j), n) for j in range(n)] for i in range(n)]
        self._s: F64 = np.zeros((n, 0))
        self._p: F64 = np.zeros((n * (n + 1) // 2, 0))

    def _allocate_state(self, shape: tuple[int, ...]) -> None:
        n = self.n
        self._s = np.zeros((n, *shape))
        self._p = np.zeros((n * (n + 1) // 2, *shape))

    def _grow_state(self, extra: int) -> None:
        self._s = np.concatenate([self._s, np.zeros((self.n, extra, *self._s.shape[2:]))], 1)
        self._p = np.concatenate(
            [self._p, np.zeros((self._p.shape[0], extra, *self._p.shape[2:]))], 1
        )

    def _forget(self, mask: BoolArr) -> None:
        self._s[:, mask] = 0.0
        self._p[:, mask] = 0.0

    def _predict(self, dt: float) -> None:
        """``s = F s``, ``P = F P F^T + Q`` on every element, written out for speed.

        Constant velocity, ``F = [[1, d], [0, 1]]``, ``Q = q [[d^3/3, d^2/2], [d^2/2, d]]``.
        Constant acceleration, ``F = [[1, d, h], [0, 1, d], [0, 0, 1]]`` with ``h = d^2/2``,
        ``Q = q [[d^5/20, d^4/8, d^3/6], [d^4/8, d^3/3, d^2/2], [d^3/6, d^2/2, d]]``.
        """
        s, p, q, d = self._s, self._p, self.process_noise, dt
        if self.n == 2:
            p00, p01, p11 = p[0], p[1], p[2]
            s[0] += d * s[1]
            p00 += d * (2.0 * p01 + d * p11) + q * d**3 / 3.0
            p01 += d * p11 + q * d**2 / 2.0
            p11 += q * d
            return
        h = 0.5 * d * d
        p00, p01, p02, p11, p12, p22 = p[0], p[1], p[2], p[3], p[4], p[5]
        s[0] += d * s[1] + h * s[2]
        s[1] += d * s[2]
        # A = F P, rows 0 and 1 (row 2 is P's); then P' = A F^T, updated in place from the
        # bottom-right corner so every right-hand side still reads prior values:
        # P'22 = p22, P'12 = a12, P'11 = p11 + d p12 + d a12, P'02 = a02, P'01 = a01 + d a02,
        # P'00 = a00 + d a01 + h a02 with a12 = p12 + d p22, a02 = p02 + d p12 + h p22,
        # a01 = p01 + d p11 + h p12, a00 = p00 + d p01 + h p02.
        a01 = p01 + d * p11
        a01 += h * p12
        p00 += d * p01
        p00 += h * p02  # a00
        p02 += d * p12
        p02 += h * p22  # a02
        p11 += 2.0 * d * p12
        p11 += (d * d) * p22  # p11 + d p12 + d a12
        p12 += d * p22  # a12
        p00 += d * a01
        p00 += h * p02
        p01[...] = a01
        p01 += d * p02
        p00 += q * d**5 / 20.0
        p01 += q * d**4 / 8.0
        p02 += q * d**3 / 6.0
        p11 += q * d**3 / 3.0
        p12 += q * d**2 / 2.0
        p22 += q * d

    def _step(self, x: F64, t: float, valid: BoolArr, scale: F64 | None) -> F64:
        if self._t_last is not None:
            self._predict(t - self._t_last)
        n, s, p, ix = self.n, self._s, self._p, self._ix
        inv_s = 1.0 / (p[0] + self._r2)
        fast = bool(valid.all()) and bool(self._init.all())
        if fast and n == 2:
            # The general update below, written out: K = [p00, p01] / S, 1 - K0 = r^2 / S.
            p00, p01, p11 = p[0], p[1], p[2]
            innovation = x - s[0]
            k1 = p01 * inv_s
            s[1] += k1 * innovation
            innovation *= p00
            innovation *= inv_s
            s[0] += innovation
            p11 -= k1 * p01
            inv_s *= self._r2
            p01 *= inv_s
            p00 *= inv_s
            est: F64 = s[0]
            return est
        if fast:
            # Constant acceleration, written out likewise (P_ij -= K_i P_0j, rows 2, 1, then 0
            # so that P_0j is still the prior value when it is used).
            p00, p01, p02, p11, p12, p22 = p[0], p[1], p[2], p[3], p[4], p[5]
            innovation = x - s[0]
            k1 = p01 * inv_s
            k2 = p02 * inv_s
            s[1] += k1 * innovation
            s[2] += k2 * innovation
            p22 -= k2 * p02
            p12 -= k1 * p02
            p11 -= k1 * p01
            innovation *= p00
            innovation *= inv_s
            s[0] += innovation
            inv_s *= self._r2
            p02 *= inv_s
            p01 *= inv_s
            p00 *= inv_s
            est_ca: F64 = s[0]
            return est_ca
        gain = [p[ix[i][0]] * inv_s for i in range(n)]
        update = valid & self._init
        first = valid & ~self._init
        innovation = np.where(update, x - s[0], 0.0)  # NaN-free: unmeasured elements add 0
        for i in range(n):
            s[i] += gain[i] * innovation
        for i in reversed(range(n)):
            for j in reversed(range(i, n)):
                p[ix[i][j]] -= np.where(update, gain[i] * p[ix[0][j]], 0.0)
        if first.any():
            for i in range(n):
                s[i] = np.where(first, x if i == 0 else 0.0, s[i])
                for j in range(i, n):
                    p[ix[i][j]] = np.where(first, self._p0[i] if i == j else 0.0, p[ix[i][j]])
        self._init = self._init | valid
        return np.where(self._init, s[0], x)


def _packed(i: int, j: int, n: int) -> int:
    """Index of entry (i, j), i <= j, in the row-major packed upper triangle of an n x n matrix."""
    return i * n - i * (i - 1) // 2 + (j - i)


# --------------------------------------------------------------------------------------------------
# MediaPipe's relative-velocity filter
# --------------------------------------------------------------------------------------------------


class VelocityFilter(SmoothingFilter):
    """MediaPipe's relative-velocity filter: an EMA whose new-sample weight grows with speed.

    Per element: the displacement since the last measurement, divided by ``scale``, joins a window
    of the last ``window`` displacements; the speed ``v`` is their sum over their duration (entries
    count while the window spans at most ``(1 + entries) * assumed_frame_s``), and::

        x_hat = a x + (1 - a) x_hat_prev,   a = 1 - 1 / (1 + velocity_scale * |v|)

    (MediaPipe's "translation-invariant" distance mode.) Here for comparison with its parameters.

    Args:
        window: frames of displacement history.
        velocity_scale: s per unit of ``x / scale``.
        assumed_frame_s: s; the per-entry duration bound (MediaPipe: 1/30 s).
    """

    def __init__(
        self, window: int = 5, velocity_scale: float = 10.0, assumed_frame_s: float = 1.0 / 30.0
    ) -> None:
        super().__init__()
        if int(window) != window or window < 1:
            raise ConfigError(f"VelocityFilter window must be an integer >= 1, got {window}")
        self.window = int(window)
        self.velocity_scale = _check_param(
            "VelocityFilter", "velocity_scale", velocity_scale, ">=", ""
        )
        self.assumed_frame_s = _check_param(
            "VelocityFilter", "assumed_frame_s", assumed_frame_s, ">", "s"
        )
        self._x: F64 = np.zeros(0)
        self._last: F64 = np.zeros(0)
        self._tp: F64 = np.zeros(0)
        self._wd: F64 = np.zeros(0)  # (W, ...) displacements, newest first
        self._wt: F64 = np.zeros(0)  # (W, ...) durations (inf: empty)
        self._count: F64 = np.zeros(0)

    def _allocate_state(self, shape: tuple[int, ...]) -> None:
        self._x = np.zeros(shape)
        self._last = np.zeros(shape)
        self._tp = np.full(shape, np.nan)
        self._wd = np.zeros((self.window, *shape))
        self._wt = np.full((self.window, *shape), np.inf)
        self._count = np.zeros(shape)

    def _grow_state(self, extra: int) -> None:
        self._x = _pad0(self._x, extra, 0.0)
        self._last = _pad0(self._last, extra, 0.0)
        self._tp = _pad0(self._tp, extra, np.nan)
        self._count = _pad0(self._count, extra, 0.0)
        wd = np.zeros((self.window, *self._x.shape))
        wt = np.full((self.window, *self._x.shape), np.inf)
        rows = self._wd.shape[1]
        wd[:, :rows] = self._wd
        wt[:, :rows] = self._wt
        self._wd, self._wt = wd, wt

    def _forget(self, mask: BoolArr) -> None:
        self._wd[:, mask] = 0.0
        self._wt[:, mask] = np.inf
        self._count[mask] = 0.0

    def _step(self, x: F64, t: float, valid: BoolArr, scale: F64 | None) -> F64:
        te = t - self._tp
        dist = x - self._last
        if scale is not None:
            dist = dist / scale
        cum_t = te + np.cumsum(self._wt, axis=0)
        inside = cum_t <= (1.0 + self._count) * self.assumed_frame_s
        total_d = dist + np.where(inside, self._wd, 0.0).sum(axis=0)
        total_t = te + np.where(inside, self._wt, 0.0).sum(axis=0)
        a = 1.0 - 1.0 / (1.0 + self.velocity_scale * np.abs(total_d / total_t))
        x_hat = a * x + (1.0 - a) * self._x
        update = valid & self._init
        first = valid & ~self._init
        self._x = np.where(update, x_hat, np.where(first, x, self._x))
        self._wd = np.where(update, np.concatenate([dist[None], self._wd[:-1]]), self._wd)
        self._wt = np.where(update, np.concatenate([te[None], self._wt[:-1]]), self._wt)
        self._count = np.where(update, np.minimum(self._count + 1.0, self.window), self._count)
        self._last = np.where(valid, x, self._last)
        self._tp = np.where(valid, t, self._tp)
        self._init = self._init | valid
        return np.where(self._init, self._x, x)


def make_filter(config: SmoothingConfig, space: Space = Space.IMAGE) -> SmoothingFilter:
    """The keypoint filter named by ``config.filter`` with its parameters, for ``space``."""
    kind = config.filter
    if kind == "none":
        return NoOpFilter()
    if kind == "one_euro":
        p = config.one_euro
        dims = None if p.speed == "axis" else (2 if space is Space.IMAGE else 3)
        return OneEuroFilter(p.min_cutoff, p.beta, p.d_cutoff, dims, p.deadband)
    if kind == "kalman":
        k = config.kalman
        return KalmanFilter(
            k.process_noise,
            k.measurement_noise,
            k.model,
            k.initial_velocity_std,
            k.initial_acceleration_std,
        )
    if kind == "velocity":
        v = config.velocity
        return VelocityFilter(v.window, v.velocity_scale, v.assumed_frame_s)
    raise ConfigError(
        f"smoothing.filter must be one of none, one_euro, kalman, velocity, got {kind!r}"
    )


# --------------------------------------------------------------------------------------------------
# Quaternions
# --------------------------------------------------------------------------------------------------


class QuaternionOneEuroFilter:
    """One-Euro filter on unit quaternions ``(..., 4)`` xyzw, batched over bones.

    Per bone, with ``te`` the time since its last update::

        q      = q * sign(<q, q_hat_prev>)           # hemisphere continuity: q and -q agree
        speed  = 2 acos(|<q, q_hat_prev>|) / te      # angular speed, rad/s
        s_hat  = lowpass(speed, alpha(te, d_cutoff))
        q_hat  = slerp(q_hat_prev, q, alpha(te, min_cutoff + beta * s_hat))

    The output is unit length and continuous in sign from one call to the next. Invalid bones
    (``mask`` False, NaN, or zero norm) hold their last estimate.

    Args:
        min_cutoff: Hz, cutoff at rest.
        beta: s/rad, speed coefficient of the cutoff.
        d_cutoff: Hz, cutoff of the angular-speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.5, beta: float = 0.3, d_cutoff: float = 1.0) -> None:
        name = "QuaternionOneEuroFilter"
        self.min_cutoff = _check_param(name, "min_cutoff", min_cutoff, ">", "Hz")
        self.beta = _check_param(name, "beta", beta, ">=", "s/rad")
        self.d_cutoff = _check_param(name, "d_cutoff", d_cutoff, ">", "Hz")
        self._shape: tuple[int, ...] | None = None
        self._t_last: float | None = None
        self._t_all: float | None = None
        self._q: F64 = np.zeros((0, 4))
        self._speed: F64 = np.zeros(0)
        self._tp: F64 = np.zeros(0)
        self._init: BoolArr = np.zeros(0, bool)
        self._all_init = False
        self._out: F64 | None = None
        self._skipped = 0

    @property
    def skipped_timestamps(self) -> int:
        """How many calls were skipped because their timestamp did not increase."""
        return self._skipped

    def reset(self) -> None:
        """Forget all state (the skipped-timestamp count is kept)."""
        self._shape = None
        self._t_last = None
        self._out = None

    def reset_where(self, mask: npt.ArrayLike) -> None:
        """Forget the bones where ``mask`` (shape ``q.shape[:-1]``) is True."""
        if self._shape is None:
            return
        self._materialise_times()
        self._init = self._init & ~np.broadcast_to(np.asarray(mask, dtype=bool), self._shape)
        self._all_init = False

    def _materialise_times(self) -> None:
        if self._t_all is not None:
            self._tp = np.full(self._speed.shape, self._t_all)
            self._t_all = None

    def __call__(self, q: npt.ArrayLike, t: float, mask: npt.ArrayLike | None = None) -> F64:
        """Filter rotations ``q`` (..., 4) xyzw taken at ``t`` seconds; returns float64 (..., 4)."""
        result: F64 = self._filter(q, t, mask).copy()
        return result

    def _filter(self, q: npt.ArrayLike, t: float, mask: npt.ArrayLike | None) -> F64:
        """:meth:`__call__` returning the filter's own output array (not to be modified)."""
        qa = np.asarray(q, dtype=np.float64)
        t = float(t)
        if qa.ndim < 1 or qa.shape[-1] != 4:
            raise InputError(f"quaternions must be (..., 4) xyzw, got shape {qa.shape}")
        if not math.isfinite(t):
            raise InputError(f"timestamp must be finite seconds, got {t}")
        shape = qa.shape[:-1]
        if shape != self._shape:
            self._shape = shape
            self._q = np.zeros(qa.shape)
            self._speed = np.zeros(shape)
            self._tp = np.full(shape, np.nan)
            self._init = np.zeros(shape, bool)
            self._t_all = None
            self._t_last = None
            self._all_init = False
        elif self._t_last is not None and t <= self._t_last and self._out is not None:
            self._skipped += 1
            if self._skipped == 1:
                log.warning(
                    "QuaternionOneEuroFilter: timestamp %.6f s does not increase (last %.6f s); "
                    "update skipped (further skips counted silently)",
                    t,
                    self._t_last,
                )
            return self._out
        norm = np.sqrt((qa[..., None, :] @ qa[..., :, None])[..., 0, 0])
        valid = norm > 1e-12  # False for NaN too
        if mask is not None:
            valid &= np.asarray(mask, dtype=bool)
        all_valid = np.count_nonzero(valid) == valid.size
        fast = self._all_init and self._t_all is not None and all_valid
        # No bone seen for the first time: update the valid ones in place.
        steady = fast or self._all_init or not np.count_nonzero(valid > self._init)
        if fast:
            qn = qa / norm[..., None]
            te: Any = t - self._t_all  # type: ignore[operator]
        elif steady:
            # Invalid bones' results are discarded (a NaN there stays there, silently).
            qn = qa / np.where(valid, norm, 1.0)[..., None]
            te = t - (self._tp if self._t_all is None else self._t_all)
        else:
            qn = np.where(valid[..., None], qa / np.where(valid, norm, 1.0)[..., None], 0.0)
            self._materialise_times()
            te = t - self._tp
        prev = self._q
        dot = (qn[..., None, :] @ prev[..., :, None])[..., 0, 0]
        sign = np.copysign(1.0, dot)
        qn *= sign[..., None]  # hemisphere continuity: q and -q are the same rotation
        half = np.arccos(np.minimum(dot * sign, 1.0))  # half the angle between q and prev
        two_pi_te = _TWO_PI * te  # alpha(te, c) = r / (r + 1), r = c 2 pi te
        r = self.d_cutoff * two_pi_te
        speed = self._speed + r / (r + 1.0) * (half * (2.0 / te) - self._speed)
        r = (self.min_cutoff + self.beta * speed) * two_pi_te
        a = r / (r + 1.0)
        # Slerp weights sin((1 - a) h) / sin h and sin(a h) / sin h. They tend to 1 - a and a
        # as h -> 0, which a floor on h gives without a branch.
        half = np.maximum(half, _SLERP_MIN_HALF_ANGLE)
        inv = 1.0 / np.sin(half)
        a_half = a * half
        w1 = np.sin(a_half) * inv
        w0 = np.sin(half - a_half) * inv
        blended = w0[..., None] * prev
        blended += w1[..., None] * qn
        blended /= np.maximum(
            np.sqrt(blended[..., None, :] @ blended[..., :, None])[..., 0], 1e-300
        )
        if fast:
            self._q = blended
            self._speed = speed
            self._t_all = t
        elif steady:
            np.copyto(self._q, blended, where=valid[..., None])
            np.copyto(self._speed, speed, where=valid)
            self._materialise_times()
            np.copyto(self._tp, t, where=valid)
            if self._all_init and all_valid:
                self._t_all = t
        else:
            update = valid & self._init
            first = valid & ~self._init
            self._q = np.where(update[..., None], blended, np.where(first[..., None], qn, self._q))
            self._speed = np.where(update, speed, np.where(first, 0.0, self._speed))
            self._tp = np.where(valid, t, self._tp)
            self._init = self._init | valid
            self._all_init = np.count_nonzero(self._init) == self._init.size
            if self._all_init and all_valid:
                self._t_all = t
        self._t_last = t
        out: F64 = self._q if self._all_init else np.where(self._init[..., None], self._q, qa)
        self._out = out
        return out


# --------------------------------------------------------------------------------------------------
# Keypoints
# --------------------------------------------------------------------------------------------------


def person_scale(
    xyz: npt.ArrayLike, valid: npt.ArrayLike, layout: KeypointLayout, mode: str
) -> F64:
    """On-screen size of each person, ``(P,)`` pixels (NaN where it cannot be measured).

    Args:
        xyz: ``(P, K, 3)`` image-space keypoints.
        valid: ``(P, K)`` bool, the keypoints to use.
        layout: keypoint set (for the torso points).
        mode: ``torso`` (shoulder centre to hip centre), ``bbox_diagonal``, ``bbox_mean``
            ((width + height) / 2, MediaPipe's object scale) or ``none`` (all ones).
    """
    arr = np.asarray(xyz, dtype=np.float64)
    pts = np.where(np.asarray(valid, dtype=bool)[..., None], arr, np.nan)
    if mode == "torso":
        return torso_length(pts, layout, dims=2)
    if mode == "bbox_diagonal":
        return bbox_diagonal(pts)
    if mode == "bbox_mean":
        return bbox_mean_side(pts)
    if mode == "none":
        return np.ones(arr.shape[0])
    raise ConfigError(
        f"smoothing.scale must be torso, bbox_diagonal, bbox_mean or none, got {mode!r}"
    )


# Shoulder mid-point minus hip mid-point from (left shoulder, right shoulder, left hip, right hip).
_TORSO_WEIGHTS = np.array([0.5, 0.5, -0.5, -0.5])


def _torso_indices(layout: KeypointLayout) -> npt.NDArray[np.int64]:
    """Indices of the left/right shoulders and hips in ``layout``."""
    names = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    return np.array([layout.index(n) for n in names], np.int64)


class KeypointSmoother:
    """Smooths :class:`Keypoints` over time: confidence gating, scale normalisation, track upkeep.

    ``smoother(keypoints, t)`` returns new :class:`Keypoints` (same persons, order, scores, ids)
    with filtered ``xyz``. Internally persons occupy *slots*: rows of one ``(S, K, 3)`` filter.

    - A keypoint with a score below ``score_threshold``, or NaN, does not update its filter. It is
      output at its held/predicted position when its coordinates are finite; a NaN input stays NaN
      unless ``fill_missing``.
    - Image space: the filters' adaptive parts work in units of the person's on-screen size
      (``scale``). World space is not scaled.
    - Persons with track ids (``ids >= 0``) keep their slot by id; untracked persons go to the
      nearest slot (centre distance in person sizes, up to ``match_max_distance``).
    - A slot unseen for ``lost_after_s`` is reset; a keypoint missing for longer than that restarts
      from its next measurement; nothing glides in from stale state.
    - A timestamp that does not increase returns the previous result (counted, warned once); one
      that jumps back by more than ``lost_after_s`` (a restarted stream) resets everything.
    """

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self.config = config if config is not None else PRESETS[DEFAULT_PRESET]
        self._skipped = 0
        self._clear()

    def _clear(self, space: Space = Space.IMAGE) -> None:
        self._filter = make_filter(self.config, space)
        self._layout: KeypointLayout | None = None
        self._space: Space | None = None
        self._t_last: float | None = None
        self._last_out: Keypoints | None = None
        self._ids = np.zeros(0, np.int64)
        self._active = np.zeros(0, bool)
        self._seen_t = np.zeros(0)
        self._scale = np.zeros(0)
        self._center = np.zeros((0, 3))
        self._kp_t = np.zeros((0, 0))
        self._torso_layout: KeypointLayout | None = None
        self._torso_idx = np.zeros(0, np.int64)

    @property
    def skipped_timestamps(self) -> int:
        """Frames skipped because their timestamp did not increase."""
        return self._skipped

    @property
    def num_tracks(self) -> int:
        """Persons currently tracked (seen within ``lost_after_s``)."""
        return int(self._active.sum())

    def reset(self) -> None:
        """Forget every person."""
        self._clear()

    def __call__(self, keypoints: Keypoints, t: float) -> Keypoints:
        """Smooth one frame of keypoints captured at ``t`` seconds."""
        t = float(t)
        if not math.isfinite(t):
            raise InputError(f"timestamp must be finite seconds, got {t}")
        cfg = self.config
        if self._layout is not None and (
            keypoints.layout is not self._layout or keypoints.space is not self._space
        ):
            log.info("keypoint layout or space changed: smoother reset")
            self._clear()
        if self._t_last is not None and t <= self._t_last:
            if self._t_last - t > cfg.lost_after_s:
                log.warning(
                    "timestamp went back %.3f s (from %.3f to %.3f): stream restarted, "
                    "smoother reset",
                    self._t_last - t,
                    self._t_last,
                    t,
                )
                self._clear()
            else:
                self._skipped += 1
                if self._skipped == 1:
                    log.warning(
                        "timestamp %.6f s does not increase (last %.6f s): frame skipped "
                        "(further skips counted silently)",
                        t,
                        self._t_last,
                    )
                return self._last_out if self._last_out is not None else keypoints
        if self._layout is None:
            self._clear(keypoints.space)
        self._layout, self._space = keypoints.layout, keypoints.space
        self._expire(t)
        if keypoints.num_persons == 0:
            self._t_last = t
            self._last_out = keypoints
            return keypoints

        image = keypoints.space is Space.IMAGE
        xyz = np.asarray(keypoints.xyz, dtype=np.float64)
        num_p, num_k = xyz.shape[:2]
        finite = np.isfinite(xyz)
        ok = keypoints.score >= cfg.score_threshold
        ok &= finite[..., 0]
        ok &= finite[..., 1]
        if not image or cfg.scale == "none":
            scale_p = np.ones(num_p)
        elif cfg.scale == "torso":
            scale_p = self._torso(xyz, ok, keypoints.layout)
        else:
            scale_p = person_scale(xyz, ok, keypoints.layout, cfg.scale)
        dims = 2 if image else 3
        counts = ok.sum(axis=1)
        center_p = np.where(ok[..., None], xyz[..., :dims], 0.0).sum(axis=1)
        center_p /= np.maximum(counts, 1)[:, None]
        if num_p == 1:
            size = float(scale_p[0])
            slots = self._match_one(
                int(keypoints.ids[0]), center_p[0], bool(counts[0]), size, image, num_k
            )
            all_known = math.isfinite(size) and size > 0
        else:
            slots = self._match(keypoints.ids, center_p, counts > 0, scale_p, image, num_k)
            all_known = np.count_nonzero(np.isfinite(scale_p) & (scale_p > 0)) == num_p
        # A person whose size cannot be measured now keeps its last size (else: its box).
        if not all_known:
            known = np.isfinite(scale_p) & (scale_p > 0)
            fallback = self._scale[slots]
            box = bbox_diagonal(np.where(ok[..., None], xyz, np.nan))
            fallback = np.where(np.isfinite(fallback) & (fallback > 0), fallback, box)
            fallback = np.where(np.isfinite(fallback) & (fallback > 0), fallback, 1.0)
            scale_p = np.where(known, scale_p, fallback)
        self._scale.put(slots, scale_p)

        num_s = self._active.size
        if num_s == num_p and (
            int(slots[0]) == 0 if num_p == 1 else bool(np.all(slots == np.arange(num_p)))
        ):
            identity = True
            meas, mask, valid = xyz, ok, finite & ok[..., None]
        else:
            identity = False
            meas = np.full((num_s, num_k, 3), np.nan)
            meas[slots] = xyz
            mask = np.zeros((num_s, num_k), bool)
            mask[slots] = ok
            valid = np.isfinite(meas) & mask[..., None]
        # A keypoint back after more than lost_after_s restarts from its measurement.
        stale = mask & ((t - self._kp_t) > cfg.lost_after_s)  # NaN (never seen) compares False
        if np.count_nonzero(stale):
            self._filter.reset_where(stale[..., None])
        np.copyto(self._kp_t, t, where=mask)
        scale_s: F64 | None = None
        if image and cfg.filter != "kalman":
            scale_s = self._scale[:, None, None]
        out = self._filter._update(meas, t, valid, scale_s)
        res = out if identity else out[slots]
        if not cfg.fill_missing:
            res = np.where(finite, res, np.nan)
        self._seen_t.put(slots, t)
        if num_p == 1:
            if counts[0]:
                self._center[slots[0], :dims] = center_p[0]
        else:
            seen = counts > 0
            self._center[slots[seen], :dims] = center_p[seen]
        self._t_last = t
        result = Keypoints(
            res.astype(np.float32),
            keypoints.score,
            keypoints.layout,
            keypoints.space,
            keypoints.person_score,
            keypoints.ids,
        )
        self._last_out = result
        return result

    def _torso(self, xyz: F64, ok: BoolArr, layout: KeypointLayout) -> F64:
        """``person_scale(xyz, ok, layout, "torso")``: shoulder-centre to hip-centre length
        ``(P,)`` in pixels, NaN where one of the four points is not usable."""
        if layout is not self._torso_layout:
            self._torso_layout, self._torso_idx = layout, _torso_indices(layout)
        idx = self._torso_idx
        d = _TORSO_WEIGHTS @ xyz.take(idx, axis=1)[..., :2]
        out: F64 = np.sqrt((d[:, None, :] @ d[:, :, None])[:, 0, 0])
        usable = ok.take(idx, axis=1)
        if np.count_nonzero(usable) != usable.size:
            out[~usable.all(axis=1)] = np.nan
        return out

    # -- tracks -----------------------------------------------------------------------------------

    def _expire(self, t: float) -> None:
        """Free the slots unseen for more than ``lost_after_s`` and reset their filters."""
        lost = self._active & ((t - self._seen_t) > self.config.lost_after_s)
        if np.count_nonzero(lost):
            log.debug("%d person(s) lost: their filters reset", int(lost.sum()))
            self._active &= ~lost
            self._filter.reset_where(lost[:, None, None])
            self._kp_t[lost] = np.nan

    def _match(
        self,
        ids: npt.NDArray[np.int64],
        center: F64,
        has_center: BoolArr,
        scale: F64,
        image: bool,
        num_k: int,
    ) -> npt.NDArray[np.int64]:
        """Slot index ``(P,)`` of each person; new persons get a free (reset) slot."""
        num_p = ids.size
        slots = np.full(num_p, -1, np.int64)
        taken = np.zeros(self._active.size, bool)
        if num_p and bool(np.all(ids >= 0)):
            for i in range(num_p):  # persons, not keypoints
                hit = np.flatnonzero(self._active & (self._ids == ids[i]) & ~taken)
                if hit.size:
                    slots[i] = hit[0]
                    taken[hit[0]] = True
        elif self._active.any():
            dims = 2 if image else 3
            dist = np.linalg.norm(center[:, None, :] - self._center[None, :, :dims], axis=-1)
            if image:
                # In person sizes: this frame's size, else the track's last one.
                known = (np.isfinite(scale) & (scale > 0))[:, None]
                unit = np.where(known, scale[:, None], self._scale[None, :])
                with np.errstate(invalid="ignore", divide="ignore"):
                    dist = dist / unit
            dist = np.where(np.isfinite(dist), dist, np.inf)
            dist[:, ~self._active] = np.inf
            dist[~has_center] = np.inf
            for _ in range(min(num_p, int(self._active.sum()))):
                i, j = (int(v) for v in np.unravel_index(int(np.argmin(dist)), dist.shape))
                if not dist[i, j] <= self.config.match_max_distance:
                    break
                slots[i], taken[j] = j, True
                dist[i, :] = np.inf
                dist[:, j] = np.inf
        for person in np.flatnonzero(slots < 0):
            slot = self._new_slot(int(ids[person]), taken, num_k)
            if slot == taken.size:
                taken = np.append(taken, False)
            slots[person], taken[slot] = slot, True
        return slots

    def _match_one(
        self, pid: int, center: F64, has_center: bool, scale: float, image: bool, num_k: int
    ) -> npt.NDArray[np.int64]:
        """:meth:`_match` for one person (the usual case), with plain floats: the same slot
        the general matching gives."""
        slot = -1
        active = [j for j, a in enumerate(self._active.tolist()) if a]
        if pid >= 0:
            for j in active:
                if self._ids[j] == pid:
                    slot = j
                    break
        elif active and has_center:
            dims = 2 if image else 3
            c = center.tolist()
            known = math.isfinite(scale) and scale > 0
            best, best_j = math.inf, -1
            for j in active:  # persons' slots, not keypoints
                sc = self._center[j].tolist()
                dist = math.sqrt(sum((c[i] - sc[i]) * (c[i] - sc[i]) for i in range(dims)))
                if image:
                    # In person sizes: this frame's size, else the track's last one.
                    unit = scale if known else float(self._scale[j])
                    dist = dist / unit if unit != 0.0 else math.inf
                if not math.isfinite(dist):
                    dist = math.inf
                if dist < best:
                    best, best_j = dist, j
            if best <= self.config.match_max_distance:
                slot = best_j
        if slot < 0:
            slot = self._new_slot(pid, np.zeros(self._active.size, bool), num_k)
        return np.array([slot], np.int64)

    def _new_slot(self, pid: int, taken: BoolArr, num_k: int) -> int:
        """A free (reset) slot for a new person with track id ``pid``; grows when none is free."""
        free = np.flatnonzero(~self._active & ~taken)
        slot = int(free[0]) if free.size else self._grow(num_k)
        self._filter.reset_where((np.arange(self._active.size) == slot)[:, None, None])
        self._kp_t[slot] = np.nan
        self._scale[slot] = np.nan
        self._active[slot] = True
        self._ids[slot] = pid
        return slot

    def _grow(self, num_k: int) -> int:
        """Add one slot; returns its index."""
        j = self._active.size
        self._ids = np.append(self._ids, -1)
        self._active = np.append(self._active, False)
        self._seen_t = np.append(self._seen_t, -np.inf)
        self._scale = np.append(self._scale, np.nan)
        self._center = np.concatenate([self._center, np.zeros((1, 3))])
        kp_t = np.full((j + 1, num_k), np.nan)
        if self._kp_t.shape == (j, num_k):
            kp_t[:j] = self._kp_t
        self._kp_t = kp_t
        self._filter.grow(j + 1)
        return j


# --------------------------------------------------------------------------------------------------
# Bone rotations
# --------------------------------------------------------------------------------------------------


class RotationSmoother:
    """Smooths :class:`BoneRotations`: a quaternion One-Euro on ``rot`` (invalid bones hold) and a
    One-Euro on ``root_pos`` (metres). Resets when the bone list changes, after ``lost_after_s``
    without input, and when time jumps back by more than that; other non-increasing timestamps
    return the previous result (counted).
    """

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self.config = config if config is not None else PRESETS[DEFAULT_PRESET]
        rp = self.config.rotation
        self._rot: QuaternionOneEuroFilter | None = None
        if rp.filter == "one_euro":
            self._rot = QuaternionOneEuroFilter(rp.min_cutoff, rp.beta, rp.d_cutoff)
        root: OneEuroParams = self.config.root
        dims = 3 if root.speed == "keypoint" else None
        self._root = OneEuroFilter(root.min_cutoff, root.beta, root.d_cutoff, dims, root.deadband)
        self._bones: tuple[str, ...] | None = None
        self._t_last: float | None = None
        self._last_out: BoneRotations | None = None
        self._skipped = 0

    @property
    def skipped_timestamps(self) -> int:
        """Updates skipped because their timestamp did not increase."""
        return self._skipped

    def reset(self) -> None:
        """Forget all state."""
        if self._rot is not None:
            self._rot.reset()
        self._root.reset()
        self._bones = None
        self._t_last = None
        self._last_out = None

    def __call__(self, rotations: BoneRotations) -> BoneRotations:
        """Smooth one set of bone rotations (time taken from ``rotations.t``, seconds)."""
        t = float(rotations.t)
        if not math.isfinite(t):
            raise InputError(f"timestamp must be finite seconds, got {t}")
        lost = self.config.lost_after_s
        if self._bones is not None and (
            rotations.bones != self._bones
            or (self._t_last is not None and abs(t - self._t_last) > lost)
        ):
            self.reset()
        if self._t_last is not None and t <= self._t_last and self._last_out is not None:
            self._skipped += 1
            if self._skipped == 1:
                log.warning("rotation timestamp %.6f s does not increase: update skipped", t)
            return self._last_out
        self._bones = rotations.bones
        rot = rotations.rot
        if self._rot is not None:
            rot = self._rot._filter(rotations.rot, t, rotations.valid).astype(np.float32)
        root_pos = np.asarray(rotations.root_pos, dtype=np.float64)
        root = self._root._update(root_pos, t, np.isfinite(root_pos), None).astype(np.float32)
        self._t_last = t
        out = BoneRotations(rotations.bones, rot, root, rotations.valid, t, rotations.person_id)
        self._last_out = out
        return out
