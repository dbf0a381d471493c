"""BVH (Biovision hierarchy) export of recorded bone rotations, and the resampling it needs.

The BVH skeleton is the rig's hierarchy with its rest (T-)pose offsets, in avatarlink's world axes
(right-handed, +Y up, the subject faces +Z; see :mod:`avatarlink.types`), which is the usual BVH
convention, so Blender's importer (``axis_up='Y'``, ``axis_forward='-Z'``) places the character
upright and facing the viewer. Every joint's rest orientation is the identity, so a bone's BVH
rotation is exactly its local rotation relative to the rest pose (the :class:`BoneRotations`
convention): ``global[b] = global[parent[b]] * local[b]`` and
``position[b] = position[parent[b]] + global[parent[b]] * offset[b]``.

Rotation channels are ``Zrotation Xrotation Yrotation`` (the matrix is ``Rz @ Rx @ Ry``), in
degrees, unwrapped over time so no channel jumps by 360. The root also carries ``Xposition
Yposition Zposition``: the hips' absolute position, i.e. the rest hips offset plus the recorded
root's displacement since the first frame (:func:`hips_position`).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from avatarlink.errors import InputError, OutputError
from avatarlink.recording import PersonTrack, RigSkeleton

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: Length units a BVH can be written in, as metres-to-unit factors.
UNITS: dict[str, float] = {"m": 1.0, "cm": 100.0}
#: Rotation channel order written for every joint.
EULER_ORDER = "ZXY"
#: A leaf bone's End Site continues the bone's own direction by this fraction of its length.
END_SITE_FRACTION = 0.5
#: Quaternion pairs closer than this (1 - |dot|) are interpolated linearly, not by slerp.
_SLERP_LINEAR_EPS = 1e-6


@dataclass(frozen=True)
class Motion:
    """Uniformly sampled rig motion, ready for BVH.

    Attributes:
        skeleton: the hierarchy (bones parent first) and rest offsets in metres.
        rot: float64 (F, B, 4) local rotations xyzw per frame, relative to the rest pose.
        root_position: float64 (F, 3) absolute hips position, metres, world axes.
        fps: frames per second.
        t0: time of frame 0 in the source recording, seconds.
    """

    skeleton: RigSkeleton
    rot: F64
    root_position: F64
    fps: float
    t0: float = 0.0

    @property
    def num_frames(self) -> int:
        """F, the number of frames."""
        return int(self.rot.shape[0])


def normalise_quaternions(q: npt.ArrayLike) -> F64:
    """``q`` (..., 4) xyzw normalised; NaN or zero-length rows become the identity."""
    arr = np.array(q, dtype=np.float64)
    norm = np.linalg.norm(arr, axis=-1, keepdims=True)
    bad = ~np.isfinite(norm) | (norm < 1e-12)
    arr = np.where(bad, np.array([0.0, 0.0, 0.0, 1.0]), arr / np.where(bad, 1.0, norm))
    return np.asarray(arr, dtype=np.float64)


def slerp(q0: npt.ArrayLike, q1: npt.ArrayLike, w: npt.ArrayLike) -> F64:
    """Spherical interpolation of unit quaternions (xyzw) along the shorter arc.

    Args:
        q0, q1: (..., 4) unit quaternions.
        w: weights broadcasting to ``q0.shape[:-1]``; 0 gives q0, 1 gives q1.

    Returns:
        float64 (..., 4) unit quaternions.
    """
    a = np.asarray(q0, np.float64)
    b = np.asarray(q1, np.float64)
    weight = np.asarray(w, np.float64)[..., None]
    dot = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(dot < 0.0, -b, b)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    near = (1.0 - dot) < _SLERP_LINEAR_EPS
    safe = np.where(near, 1.0, sin)
    wa = np.where(near, 1.0 - weight, np.sin((1.0 - weight) * theta) / safe)
    wb = np.where(near, weight, np.sin(weight * theta) / safe)
    out = wa * a + wb * b
    return normalise_quaternions(out)


def _finite_rows(values: F64) -> npt.NDArray[np.bool_]:
    """bool (...,) whether every entry along the last axis is finite."""
    return np.asarray(np.isfinite(values).all(axis=-1), dtype=bool)


def _fill_missing(values: F64, missing: npt.NDArray[np.bool_], default: F64) -> F64:
    """Replace missing rows along axis 0 by the previous present row (else the next, else default).

    ``values`` (T, N, D), ``missing`` (T, N).
    """
    t = values.shape[0]
    idx = np.where(missing, -1, np.arange(t)[:, None])
    prev = np.maximum.accumulate(idx, axis=0)
    rev = np.where(missing, t, np.arange(t)[:, None])[::-1]
    nxt = np.minimum.accumulate(rev, axis=0)[::-1]
    src = np.where(prev >= 0, prev, nxt)
    cols = np.arange(values.shape[1])[None, :]
    filled = values[np.clip(src, 0, t - 1), cols]
    return np.where((src >= t)[..., None], default, filled)


def resample(
    t: npt.ArrayLike,
    rot: npt.ArrayLike,
    root: npt.ArrayLike,
    fps: float,
) -> tuple[F64, F64, F64]:
    """Resample irregularly timed rotations and root positions to ``fps``.

    Rotations are slerped and positions linearly interpolated between the neighbouring samples.
    NaN rotations (a bone absent in a frame) take the nearest earlier sample of that bone (else the
    next, else the identity); NaN root positions likewise (else zero).

    Args:
        t: float (T,) increasing sample times in seconds.
        rot: (T, B, 4) xyzw local rotations.
        root: (T, 3) root positions.
        fps: output frame rate, frames per second (> 0).

    Returns:
        ``(times (F,), rot (F, B, 4), root (F, 3))`` with ``times = t[0] + arange(F) / fps``,
        the last frame at or before ``t[-1]``.
    """
    if not fps > 0:
        raise InputError(f"--fps must be > 0, got {fps}")
    times = np.asarray(t, np.float64)
    q = np.asarray(rot, np.float64)
    pos = np.asarray(root, np.float64)
    if times.ndim != 1 or times.size == 0:
        raise InputError("nothing to resample: the recording has no frames with this person")
    if np.any(np.diff(times) <= 0):
        raise InputError("recording times must increase from frame to frame")
    q_missing = ~_finite_rows(q)
    q = _fill_missing(normalise_quaternions(q), q_missing, np.array([0.0, 0.0, 0.0, 1.0]))
    p_missing = ~_finite_rows(pos)
    pos = _fill_missing(pos[:, None, :], p_missing[:, None], np.zeros(3))[:, 0, :]
    count = math.floor((times[-1] - times[0]) * fps + 1e-6) + 1
    out_t = times[0] + np.arange(count) / fps
    hi = np.clip(np.searchsorted(times, out_t, side="right"), 1, max(1, times.size - 1))
    lo = hi - 1
    if times.size == 1:
        return out_t, q[[0]], pos[[0]]
    span = times[hi] - times[lo]
    w = np.clip((out_t - times[lo]) / span, 0.0, 1.0)
    q_out = slerp(q[lo], q[hi], np.broadcast_to(w[:, None], q[lo].shape[:-1]))
    p_out = pos[lo] + (pos[hi] - pos[lo]) * w[:, None]
    return out_t, q_out, p_out


def hips_position(skeleton: RigSkeleton, root: npt.ArrayLike) -> F64:
    """Absolute hips positions (F, 3), metres: the rest hips offset plus the recorded root's
    displacement since the first frame (as the streaming outputs move an avatar), so the motion
    starts at the rig's rest height whatever origin the solver's root positions use.

    Args:
        root: (F, 3) recorded root positions, metres, world axes (NaN rows count as no motion).
    """
    pos = np.asarray(root, np.float64).reshape(-1, 3)
    finite = _finite_rows(pos)
    origin = pos[np.argmax(finite)] if finite.any() else np.zeros(3)
    moved = np.where(finite[:, None], pos - origin, 0.0)
    return np.asarray(moved + skeleton.offsets[0].astype(np.float64), np.float64)


def motion_from_track(track: PersonTrack, skeleton: RigSkeleton, fps: float = 30.0) -> Motion:
    """Resample a recorded person to ``fps`` and map its bones onto ``skeleton``.

    Bones of the skeleton that the recording lacks stay at the rest pose; recorded bones the
    skeleton lacks are ignored. Frames where the person is absent are bridged by interpolation.
    """
    present = track.present & np.isfinite(track.t)
    if not np.any(present):
        raise InputError("the recording has no frame with this person; nothing to export")
    # Frames whose time does not move forward (a source restarted its clock) are left out.
    earlier = np.maximum.accumulate(np.where(present, track.t, -np.inf))
    backwards = present & (track.t <= np.concatenate([[-np.inf], earlier[:-1]]))
    if backwards.any():
        log.warning(
            "left out %d frame(s) whose time did not increase (first at frame %d)",
            int(backwards.sum()),
            int(track.frame[np.argmax(backwards)]),
        )
        present &= ~backwards
    column = {name: i for i, name in enumerate(track.bones)}
    b = len(skeleton.bones)
    t = track.t[present]
    rot = np.full((t.size, b, 4), np.nan)
    for j, name in enumerate(skeleton.bones):
        if name in column:
            rot[:, j] = track.rot[present, column[name]]
    # Bones never recorded stay at rest (identity) rather than NaN-filled from nothing.
    never = ~np.isfinite(rot).all(axis=-1).any(axis=0) if t.size else np.ones(b, bool)
    rot[:, never] = (0.0, 0.0, 0.0, 1.0)
    times, q, root = resample(t, rot, track.root[present], fps)
    return Motion(skeleton, q, hips_position(skeleton, root), float(fps), float(times[0]))


def forward_kinematics(
    skeleton: RigSkeleton, rot: npt.ArrayLike, root_position: npt.ArrayLike
) -> F64:
    """Global joint positions (..., B, 3) in metres from local rotations (..., B, 4) xyzw and the
    absolute root position (..., 3), by the convention in the module docstring."""
    q = normalise_quaternions(rot)
    b = len(skeleton.bones)
    lead = q.shape[:-2]
    local = Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(-1, b, 3, 3)
    n = local.shape[0]
    glob = np.empty_like(local)
    pos = np.empty((n, b, 3))
    offsets = skeleton.offsets.astype(np.float64)
    pos[:, 0] = np.asarray(root_position, np.float64).reshape(n, 3)
    glob[:, 0] = local[:, 0]
    for j in range(1, b):
        parent = int(skeleton.parents[j])
        glob[:, j] = glob[:, parent] @ local[:, j]
        pos[:, j] = pos[:, parent] + glob[:, parent] @ offsets[j]
    return pos.reshape(*lead, b, 3)


def euler_channels(rot: npt.ArrayLike) -> F64:
    """``Zrotation Xrotation Yrotation`` degrees (F, B, 3) from local rotations (F, B, 4) xyzw,
    unwrapped along the frame axis."""
    q = normalise_quaternions(rot)
    f, b = q.shape[:2]
    angles = Rotation.from_quat(q.reshape(-1, 4)).as_euler(EULER_ORDER, degrees=True)
    angles = angles.reshape(f, b, 3)
    return np.asarray(np.unwrap(angles, period=360.0, axis=0), np.float64)


def _end_site(offset: F64) -> F64:
    length = float(np.linalg.norm(offset))
    if length < 1e-9:
        return np.array([0.0, 0.1, 0.0])
    return np.asarray(offset * END_SITE_FRACTION, np.float64)


def bvh_hierarchy(skeleton: RigSkeleton, units: str = "cm") -> tuple[str, list[int]]:
    """The ``HIERARCHY`` section (lengths in ``units``) and the bone order of the motion columns."""
    if units not in UNITS:
        raise OutputError(f"unknown BVH units {units!r}; valid: {sorted(UNITS)}")
    sk = skeleton
    children: list[list[int]] = [[] for _ in sk.bones]
    for j, p in enumerate(sk.parents.tolist()):
        if p >= 0:
            children[p].append(j)
    offsets = sk.offsets.astype(np.float64) * UNITS[units]
    lines = ["HIERARCHY"]
    order: list[int] = []

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        order.append(j)
        lines.append(f"{pad}{'ROOT' if depth == 0 else 'JOINT'} {sk.bones[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {_vec(offsets[j])}")
        channels = "Zrotation Xrotation Yrotation"
        if depth == 0:
            lines.append(f"{pad}\tCHANNELS 6 Xposition Yposition Zposition {channels}")
        else:
            lines.append(f"{pad}\tCHANNELS 3 {channels}")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            lines.append(f"{pad}\tEnd Site")
            lines.append(f"{pad}\t{{")
            lines.append(f"{pad}\t\tOFFSET {_vec(_end_site(offsets[j]))}")
            lines.append(f"{pad}\t}}")
        lines.append(f"{pad}}}")

    roots = [j for j, p in enumerate(sk.parents.tolist()) if p < 0]
    if len(roots) != 1:
        raise OutputError(f"rig {sk.name!r} must have exactly one root bone, found {len(roots)}")
    emit(roots[0], 0)
    return "\n".join(lines) + "\n", order


def _motion_rows(motion: Motion, units: str, order: list[int]) -> F64:
    euler = euler_channels(motion.rot)[:, order]
    position = motion.root_position * UNITS[units]
    return np.concatenate([position, euler.reshape(motion.num_frames, -1)], axis=1)


def _format_rows(rows: F64) -> str:
    buf = io.StringIO()
    np.savetxt(buf, rows, fmt="%.5f", delimiter=" ")
    return buf.getvalue()


def bvh_text(motion: Motion, units: str = "cm") -> str:
    """The whole BVH file for ``motion``, lengths in ``units`` (``m`` or ``cm``)."""
    hierarchy, order = bvh_hierarchy(motion.skeleton, units)
    header = f"MOTION\nFrames: {motion.num_frames}\nFrame Time: {1.0 / motion.fps:.7f}\n"
    return hierarchy + header + _format_rows(_motion_rows(motion, units, order))


def _vec(v: Sequence[float] | F64) -> str:
    return " ".join(f"{float(x):.5f}" for x in v)


#: Frames formatted per chunk when writing (progress is reported per chunk).
_WRITE_CHUNK = 1000


def write_bvh(
    path: str | Path,
    motion: Motion,
    units: str = "cm",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``motion`` as a BVH file at ``path``; returns the path.

    Args:
        progress: called with the number of frames written so far, once per chunk.
    """
    out = Path(path)
    hierarchy, order = bvh_hierarchy(motion.skeleton, units)
    rows = _motion_rows(motion, units, order)
    try:
        with out.open("w", encoding="ascii", newline="\n") as f:
            f.write(hierarchy)
            f.write(f"MOTION\nFrames: {motion.num_frames}\nFrame Time: {1.0 / motion.fps:.7f}\n")
            for start in range(0, motion.num_frames, _WRITE_CHUNK):
                f.write(_format_rows(rows[start : start + _WRITE_CHUNK]))
                if progress is not None:
                    progress(min(start + _WRITE_CHUNK, motion.num_frames))
    except OSError as exc:
        raise OutputError(f"cannot write BVH {out}: {exc.strerror}") from exc
    return out
