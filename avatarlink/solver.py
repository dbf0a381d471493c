"""Bone-rotation solver: world keypoints -> local bone rotations of a humanoid rig.

For every driven bone (see :mod:`avatarlink.rig`) the solver finds the world rotation that turns
the bone's rest direction onto the observed drive direction. The twist about that direction comes
from the bone's ``up`` reference (a second observed direction, or the plane the bone makes with its
hinged child); without one the bone takes the minimal twist relative to its parent. Hinge bones
(elbows, knees) turn only about their hinge axis. Local rotations are then
``inverse(parent world) x world`` in the rig's parent order, clamped to the joint limits (children
are solved against the observed, unclamped parent so one clamped joint does not bend the rest of
the limb). A bone whose keypoints are missing keeps its last valid rotation for ``hold_s`` seconds,
then eases back to rest over ``ease_s``.

Everything is in avatarlink's world frame (:mod:`avatarlink.types`): metres, right-handed, +Y up,
the performer facing +Z. Rotations are ``xyzw`` quaternions relative to the rig's rest pose,
expressed in world axes. Mirroring (selfie view) is explicit: ``SolverConfig.mirror`` or the rig's
``mirror`` reflects the input left-right before solving.

Internally rotations are 3x3 matrices (one ``matmul`` composes a whole batch); the core is
vectorised over bones and over a leading batch axis of frames or candidate poses, which the lifter
and the benchmark use.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink import quat
from avatarlink.errors import ConfigError, InputError
from avatarlink.rig import LIMIT_CONE, LIMIT_HINGE, Rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import BoneRotations, Keypoints, Space

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]

# Bone kinds of a solve plan (per layout).
K_NONE, K_FULL, K_HREF, K_SWING, K_HINGE, K_MEMBER = 0, 1, 2, 3, 4, 5
# Per-frame modes.
M_NONE, M_OBS, M_SWING, M_HINGE, M_HOLD, M_CHAIN = 0, 1, 2, 3, 4, 5

_EPS = 1e-9
_EYE3 = np.eye(3)
_LEVI_CIVITA = quat._LEVI_CIVITA
# A fit whose points are (nearly) collinear cannot give a rotation: the second singular value of
# the point covariance must be at least this fraction of the first.
_FIT_MIN_SPREAD = 1e-3
# Rotations this close to a joint limit count as inside it (float round-off, not a violation).
_LIMIT_TOLERANCE_DEG = 1e-4


@dataclass(frozen=True)
class SolverConfig:
    """Tuning of :class:`BoneSolver` (the ``solver`` section of the run configuration).

    Attributes:
        min_score: keypoints scoring below this count as missing.
        mirror: mirror the input left-right (selfie view); None uses the rig's ``mirror``.
        hold_s: seconds a bone keeps its last valid rotation when its keypoints go missing.
        ease_s: seconds it then takes to ease back to the rest pose.
        min_ref_angle_deg: a twist reference closer than this to the bone direction is unusable
            (a straight elbow cannot tell the upper arm's twist); the bone then takes minimal twist.
        clamp: clamp local rotations to the rig's joint limits.
        root_translation: move the Hips down when the performer crouches (scaled to the rig's
            hip height); without it the root stays at the rig's rest Hips position.
        facing_yaw_deg: the performer's facing relative to the camera (from calibration): the
            input is turned by minus this about +Y so that facing direction counts as "forward".
        person_timeout_s: forget a tracked person's held rotations after this long unseen.
    """

    min_score: float = 0.3
    mirror: bool | None = None
    hold_s: float = 0.5
    ease_s: float = 1.0
    min_ref_angle_deg: float = 3.0
    clamp: bool = True
    root_translation: bool = False
    facing_yaw_deg: float = 0.0
    person_timeout_s: float = 5.0


def solver_config_from_mapping(
    data: Mapping[str, Any] | None, source: str, lines: Mapping[str, int], prefix: str = "solver"
) -> SolverConfig:
    """Validate the ``solver`` config section; errors name the dotted key, file and line."""
    cfg: SolverConfig = dataclass_from_mapping(SolverConfig, data, source, lines, prefix)
    return cfg


def dataclass_from_mapping(
    cls: Any,
    data: Mapping[str, Any] | None,
    source: str,
    lines: Mapping[str, int],
    prefix: str,
    signed: tuple[str, ...] = ("facing_yaw_deg",),
) -> Any:
    """Build a flat frozen config dataclass from a mapping with typed, located errors.

    Field types come from the annotations: ``bool``, ``float`` (>= 0 unless in ``signed``),
    ``tuple[float, ...]`` (a list of numbers), each optionally ``| None``.
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{prefix} must be a mapping of keys, got {data!r}")
    known = {f.name: str(f.type) for f in fields(cls)}
    values: dict[str, Any] = {}

    def where(key: str) -> str:
        line = lines.get(f"{prefix}.{key}", lines.get(prefix))
        src = source or "config"
        return f" ({src} line {line})" if line is not None else f" ({src})"

    def number(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{prefix}.{key} must be a number, got {value!r}{where(key)}")
        return float(value)

    for key, value in (data or {}).items():
        if key not in known:
            raise ConfigError(
                f"{prefix}.{key} is not a known key; valid: {', '.join(known)}{where(key)}"
            )
        kind = known[key]
        if value is None and "None" in kind:
            values[key] = None
        elif kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ConfigError(
                    f"{prefix}.{key} must be true or false, got {value!r}{where(key)}"
                )
            values[key] = value
        elif kind.startswith("tuple"):
            size = kind.count("float")
            if not isinstance(value, (list, tuple)) or len(value) != size:
                raise ConfigError(
                    f"{prefix}.{key} must be a list of {size} numbers, got {value!r}{where(key)}"
                )
            values[key] = tuple(number(key, v) for v in value)
        elif kind.startswith("float"):
            values[key] = number(key, value)
            if key not in signed and values[key] < 0:
                raise ConfigError(f"{prefix}.{key} must be >= 0, got {values[key]:g}{where(key)}")
        else:  # pragma: no cover - every field above is one of these kinds
            values[key] = value
    return cls(**values)


# ---------------------------------------------------------------------------------------------
# The solve plan: everything about a (rig, layout) pair that does not change per frame
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SolvePlan:
    """Per-layout arrays the solver needs (built once by :func:`build_plan`).

    Attributes:
        rig, layout: what the plan is for.
        point_weights: (S, K) weights making the S named points from the layout's keypoints.
        point_mask: (S, K) bool, which keypoints each point needs.
        kind: (B,) ``K_*`` bone kind in this layout.
        src, dst: (B,) point index of the drive's from/to (0 when undriven).
        usrc, udst: (B,) point index of a vector twist reference (0 when none).
        child: (B,) the hinged child giving a twist reference (the bone itself when none).
        effpar: (B,) nearest ancestor that is not undriven (its world rotation is the parent's;
            ``B`` stands for the world frame above the root).
        chain_parent: (B,) for chain members, the parent of the chain's first bone (else effpar).
        chain_driver: (B,) for chain members, the bone whose rotation they share (else -1).
        chain_weight: (B,) for chain members, the cumulative share up to and including them.
        rest_dir: (B, 3) unit rest directions; rest_frame_t: (B, 3, 3) transposed rest frames
            of (rest direction, rest twist reference).
        hinge_k, hinge_k2: (B, 3, 3) cross-product matrix of the hinge axis and its square.
        mirror_perm: (K,) keypoint permutation that swaps left and right.
        fit_bones: (F,) bones whose rotation is fitted to several keypoints (least squares).
        fit_points: (F, M) point indices of each fit (padded); fit_slot: (F, M) which are real;
            fit_rest: (F, M, 3) their rest positions in metres.
    """

    rig: Rig
    layout: KeypointLayout
    point_weights: F64
    point_mask: B8
    kind: I64
    src: I64
    dst: I64
    usrc: I64
    udst: I64
    child: I64
    effpar: I64
    chain_parent: I64
    chain_driver: I64
    chain_weight: F64
    rest_dir: F64
    rest_frame_t: F64
    hinge_k: F64
    hinge_k2: F64
    hinge_lo: F64
    hinge_hi: F64
    mirror_perm: I64
    fit_bones: I64
    fit_points: I64
    fit_slot: B8
    fit_rest: F64

    @property
    def evaluated(self) -> B8:
        """(B,) bones whose rotation this layout observes (driven bones and chain members)."""
        out: B8 = self.kind != K_NONE
        return out


def mirror_name(name: str) -> str:
    """Swap ``left``/``right`` in a keypoint or bone name (``left_hip`` <-> ``right_hip``)."""
    for a, b in (("left", "right"), ("Left", "Right")):
        if a in name:
            return name.replace(a, b)
        if b in name:
            return name.replace(b, a)
    return name


def build_plan(rig: Rig, layout: KeypointLayout) -> SolvePlan:
    """Compile a rig's drives for one keypoint layout (bones it cannot drive stay at rest)."""
    b_count = rig.num_bones
    points: list[str] = []
    index: dict[str, int] = {}

    def point(expr: str) -> int:
        if expr not in index:
            index[expr] = len(points)
            points.append(expr)
        return index[expr]

    kind = np.zeros(b_count, np.int64)
    src = np.zeros(b_count, np.int64)
    dst = np.zeros(b_count, np.int64)
    usrc = np.zeros(b_count, np.int64)
    udst = np.zeros(b_count, np.int64)
    child = np.arange(b_count, dtype=np.int64)
    ref_rest = np.zeros((b_count, 3))

    def available(expr: str) -> bool:
        return rig.point_weights(expr, layout) is not None

    for b, drive in enumerate(rig.drives):
        if drive is None or not all(available(e) for e in drive):
            continue
        src[b], dst[b] = point(drive[0]), point(drive[1])
        up = rig.ups[b]
        if rig.limits.kind[b] == LIMIT_HINGE:
            kind[b] = K_HINGE
        elif (
            up is not None
            and up.hinge is None
            and available(up.source or "")
            and available(up.target or "")
        ):
            kind[b] = K_FULL
            usrc[b], udst[b] = point(up.source or ""), point(up.target or "")
            ref_rest[b] = rig.rest_point(up.target or "") - rig.rest_point(up.source or "")
        else:
            kind[b] = K_SWING
    fit_lists: dict[int, list[str]] = {}
    for b, fit in enumerate(rig.fits):
        usable = [e for e in fit or () if available(e)]
        if kind[b] != K_NONE and kind[b] != K_HINGE and len(usable) >= 3:
            fit_lists[b] = usable
            if kind[b] == K_SWING and not (rig.ups[b] and rig.ups[b].hinge):  # type: ignore[union-attr]
                kind[b] = K_FULL  # the fit gives the twist
    for b, up in enumerate(rig.ups):
        if up is not None and up.hinge is not None and kind[b] == K_SWING:
            c = rig.index(up.hinge)
            if kind[c] == K_HINGE:
                kind[b], child[b] = K_HREF, c
                ref_rest[b] = rig.limits.hinge_axis[c]
    # Distribution chains: only when the driver is fully observed in this layout.
    chain_driver = np.full(b_count, -1, np.int64)
    chain_weight = np.ones(b_count)
    chain_parent = np.zeros(b_count, np.int64)
    for b, chain in enumerate(rig.distribute):
        if chain is None or kind[b] != K_FULL:
            continue
        cum = 0.0
        for j, w in chain[:-1]:
            cum += w
            kind[j], chain_driver[j], chain_weight[j] = K_MEMBER, b, cum
        first = chain[0][0]
        for j, _ in chain[:-1]:
            chain_parent[j] = rig.parents[first]
    effpar = np.full(b_count, b_count, np.int64)
    for b in range(b_count):
        p = int(rig.parents[b])
        while p >= 0 and kind[p] == K_NONE:
            p = int(rig.parents[p])
        effpar[b] = p if p >= 0 else b_count
    for b in range(b_count):
        if chain_driver[b] < 0:
            chain_parent[b] = effpar[b]
        elif chain_parent[b] < 0:
            chain_parent[b] = b_count
    fit_bones = np.array(sorted(fit_lists), np.int64)
    width = max((len(v) for v in fit_lists.values()), default=1)
    fit_points = np.zeros((fit_bones.size, width), np.int64)
    fit_slot = np.zeros((fit_bones.size, width), bool)
    fit_rest = np.zeros((fit_bones.size, width, 3))
    for i, b in enumerate(fit_bones):
        for j, expr in enumerate(fit_lists[int(b)]):
            fit_points[i, j], fit_slot[i, j] = point(expr), True
            fit_rest[i, j] = rig.rest_point(expr)
    # Point weights over the layout's keypoints.
    k = layout.num_keypoints
    weights = np.zeros((max(len(points), 1), k))
    for i, expr in enumerate(points):
        row = rig.point_weights(expr, layout)
        assert row is not None
        weights[i] = row
    rest_dir = rig.rest_directions.astype(np.float64)
    frames, _ = quat.frame_matrix(
        rest_dir,
        np.where(np.any(ref_rest != 0, -1)[:, None], ref_rest, quat.any_perpendicular(rest_dir)),
    )
    axis = rig.limits.hinge_axis
    hk = quat.skew(axis)
    names = layout.names
    perm = np.array([names.index(mirror_name(n)) for n in names], np.int64)
    return SolvePlan(
        rig=rig,
        layout=layout,
        point_weights=weights,
        point_mask=weights > 0,
        kind=kind,
        src=src,
        dst=dst,
        usrc=usrc,
        udst=udst,
        child=child,
        effpar=effpar,
        chain_parent=chain_parent,
        chain_driver=chain_driver,
        chain_weight=chain_weight,
        rest_dir=rest_dir,
        rest_frame_t=np.swapaxes(frames, -1, -2).copy(),
        hinge_k=hk,
        hinge_k2=hk @ hk,
        hinge_lo=np.radians(rig.limits.hinge_range_deg[:, 0]),
        hinge_hi=np.radians(rig.limits.hinge_range_deg[:, 1]),
        mirror_perm=perm,
        fit_bones=fit_bones,
        fit_points=fit_points,
        fit_slot=fit_slot,
        fit_rest=fit_rest,
    )


# ---------------------------------------------------------------------------------------------
# The vectorised core
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CoreResult:
    """Output of :func:`solve_core` for N poses.

    Attributes:
        local: (N, B, 4) local rotations (xyzw, relative to rest, world axes), not yet clamped.
        local_matrix: (N, B, 3, 3) the same as matrices.
        valid: (N, B) bool, observed this time (not held, not undriven).
        world: (N, B, 3, 3) world rotations of the bones the solve needed (undriven bones are
            identity here: they take their effective parent's).
    """

    local: F64
    local_matrix: F64
    valid: B8
    world: F64


@dataclass(frozen=True, eq=False)
class _Step:
    """Bones solved together at one level: rows ``ni``, bones ``bi``, parent world ``di``, and
    the per-bone constants the step needs, gathered once when the schedule is built."""

    code: int
    ni: I64
    bi: I64
    di: I64
    rest_dir: F64
    hinge_p: F64
    hinge_k: F64
    hinge_k2: F64
    lo: F64
    hi: F64
    driver: I64
    weight: F64


@dataclass(frozen=True, eq=False)
class _Schedule:
    """The order in which bones get their world rotation for one pattern of per-bone modes."""

    obs_n: I64
    obs_b: I64
    obs_f: I64
    levels: tuple[tuple[_Step, ...], ...]
    valid: B8


class _Core:
    """Precomputed arrays for one plan, and the solve itself (see :func:`solve_core`)."""

    def __init__(self, plan: SolvePlan) -> None:
        self.plan = plan
        kind = plan.kind
        b_count = kind.shape[0]
        self.b_count = b_count
        w = plan.point_weights
        m = plan.point_mask
        self.dir_weights = np.concatenate([w[plan.dst] - w[plan.src], w[plan.udst] - w[plan.usrc]])
        mask = np.concatenate([m[plan.dst] | m[plan.src], m[plan.udst] | m[plan.usrc]])
        self.dir_mask_t = mask.T.astype(np.float64)
        self.driven = (kind != K_NONE) & (kind != K_MEMBER)
        self.full_idx = np.nonzero((kind == K_FULL) | (kind == K_HREF))[0]
        self.full_pos = np.zeros(b_count, np.int64)
        self.full_pos[self.full_idx] = np.arange(self.full_idx.size)
        self.full_child = plan.child[self.full_idx]
        self.full_href = (kind == K_HREF)[self.full_idx]
        self.full_rest_t = plan.rest_frame_t[self.full_idx]
        self.is_driver = np.zeros(b_count, bool)
        self.is_driver[plan.chain_driver[plan.chain_driver >= 0]] = True
        self.hinge_p = quat.cross(plan.rig.limits.hinge_axis, plan.rest_dir)  # a x r
        self.none = kind == K_NONE
        self.member = kind == K_MEMBER
        self.member_driver = np.where(self.member, plan.chain_driver, 0)
        lim = plan.rig.limits
        self.cone_idx = np.nonzero((lim.kind == LIMIT_CONE) & (kind != K_NONE))[0]
        ci = self.cone_idx
        tol = np.radians(_LIMIT_TOLERANCE_DEG)
        self.cone_r = plan.rest_dir[ci]
        self.cone_centre = lim.swing_centre[ci]
        self.cone_cos_max = np.cos(np.minimum(np.radians(lim.swing_deg[ci]) + tol, np.pi))
        self.cone_lo = np.radians(lim.twist_deg[ci, 0]) - tol
        self.cone_hi = np.radians(lim.twist_deg[ci, 1]) + tol
        self.fit_bones = plan.fit_bones
        self.fit_full = self.full_pos[plan.fit_bones]
        self.point_mask_t = plan.point_mask.T.astype(np.float64)
        self._cache: dict[bytes, _Schedule] = {}
        self._templates: dict[int, F64] = {}
        # Every driven bone observed: the common case, scheduled once.
        self.all_ok_mode = self._mode_all_ok()

    def _mode_all_ok(self) -> npt.NDArray[np.int64]:
        kind = self.plan.kind
        mode = np.full(self.b_count, M_NONE, np.int64)
        mode[(kind == K_FULL) | (kind == K_HREF)] = M_OBS
        mode[kind == K_SWING] = M_SWING
        mode[kind == K_HINGE] = M_HINGE
        mode[kind == K_MEMBER] = M_CHAIN
        return mode[None]

    def schedule(self, mode: npt.NDArray[np.int64]) -> _Schedule:
        """Levels of bones whose parent world rotation is known; cached for single poses."""
        key = mode.tobytes() if mode.shape[0] == 1 else b""
        if key:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        plan = self.plan
        n, b_count = mode.shape
        obs_n, obs_b = np.nonzero(mode == M_OBS)
        known = np.ones((n, b_count + 1), bool)
        known[:, :b_count] = (mode == M_OBS) | (mode == M_NONE)
        dep = np.where(mode == M_CHAIN, plan.chain_parent[None, :], plan.effpar[None, :])
        rows = np.arange(n)[:, None]
        levels: list[tuple[_Step, ...]] = []
        for _ in range(b_count + 1):
            pending = ~known[:, :b_count]
            if not pending.any():
                break
            ni, bi = np.nonzero(pending & known[rows, dep])
            steps = []
            for code in (M_SWING, M_HINGE, M_HOLD, M_CHAIN):
                sel = mode[ni, bi] == code
                if sel.any():
                    b = bi[sel]
                    steps.append(
                        _Step(
                            code, ni[sel], b, dep[ni[sel], b], plan.rest_dir[b], self.hinge_p[b],
                            plan.hinge_k[b], plan.hinge_k2[b], plan.hinge_lo[b], plan.hinge_hi[b],
                            plan.chain_driver[b], plan.chain_weight[b],
                        )
                    )  # fmt: skip
            levels.append(tuple(steps))
            known[ni, bi] = True
        valid = (mode == M_OBS) | (mode == M_SWING) | (mode == M_HINGE) | (mode == M_CHAIN)
        out = _Schedule(obs_n, obs_b, self.full_pos[obs_b], tuple(levels), valid)
        if key and len(self._cache) < 256:
            self._cache[key] = out
        return out

    def solve(
        self,
        x: F64,
        present: B8,
        held: F64 | None,
        min_ref_sin: float,
        clip_hinges: bool = True,
    ) -> CoreResult:
        plan = self.plan
        n, b_count = x.shape[0], self.b_count
        x = np.where(present[..., None], x, 0.0)
        # Drive directions o and vector twist references u of every bone: one matmul.
        pts = plan.point_weights @ x if self.fit_bones.size else x
        vec = self.dir_weights @ x
        bad = (~present).astype(np.float64) @ self.dir_mask_t > 0.5
        o, u_vec = vec[:, :b_count], vec[:, b_count:]
        o_len = np.sqrt(np.einsum("nbi,nbi->nb", o, o))
        valid = ~bad[:, :b_count] & self.driven & (o_len > _EPS)
        # World rotations of fully observed bones: the frame of (drive, twist reference) times
        # the transposed rest frame (TRIAD).
        fi = self.full_idx
        of, of_len = o[:, fi], o_len[:, fi]
        child_len = o_len[:, self.full_child]
        u = np.where(self.full_href[:, None], quat.cross(of, o[:, self.full_child]), u_vec[:, fi])
        normal = quat.cross(of, u)
        normal_len = np.sqrt(np.einsum("nbi,nbi->nb", normal, normal))
        u_len = np.sqrt(np.einsum("nbi,nbi->nb", u, u))
        e1 = of / np.maximum(of_len, _EPS)[..., None]
        e3 = normal / np.maximum(normal_len, _EPS)[..., None]
        g_full = np.stack([e1, quat.cross(e3, e1), e3], axis=-1) @ self.full_rest_t
        # How well the twist reference is defined: the sine of its angle to the bone (for a
        # hinged child, the sine of the joint angle: a straight elbow gives no twist).
        sin_ref = np.where(self.full_href, u_len / np.maximum(of_len * child_len, _EPS),
                           normal_len / np.maximum(of_len * u_len, _EPS))  # fmt: skip
        ref_ok = (sin_ref > min_ref_sin) & np.where(
            self.full_href, valid[:, self.full_child], ~bad[:, b_count:][:, fi]
        )
        full_ok = valid[:, fi] & ref_ok
        if self.fit_bones.size:
            g_fit, fit_ok = self._fit(pts, present)
            g_full[:, self.fit_full] = np.where(
                fit_ok[..., None, None], g_fit, g_full[:, self.fit_full]
            )
            full_ok[:, self.fit_full] |= fit_ok
            valid[:, self.fit_bones] |= fit_ok
        if n == 1 and valid[0, self.driven].all() and full_ok.all():
            sch = self.schedule(self.all_ok_mode)
        else:
            sch = self.schedule(self._mode(valid, full_ok))
        template = self._templates.get(n)
        if template is None:
            template = np.broadcast_to(np.eye(3), (n, b_count + 1, 3, 3)).copy()
            if n <= 4:
                self._templates[n] = template
        world = template.copy()
        world[sch.obs_n, sch.obs_b] = g_full[sch.obs_n, sch.obs_f]
        for level in sch.levels:
            for step in level:
                gp = world[step.ni, step.di]
                if step.code == M_HOLD:
                    loc = held[step.ni, step.bi] if held is not None else np.eye(3)
                elif step.code == M_CHAIN:
                    total = np.swapaxes(gp, -1, -2) @ world[step.ni, step.driver]
                    loc = _matrix_power(total, step.weight)
                else:
                    d = np.einsum("mji,mj->mi", gp, o[step.ni, step.bi])
                    if step.code == M_SWING:
                        loc = quat.matrix_from_two_vectors(step.rest_dir, d)
                    else:
                        # Signed angle about the hinge axis a from r to d: atan2(d.(a x r), d.r).
                        s = np.einsum("mi,mi->m", d, step.hinge_p)
                        c = np.einsum("mi,mi->m", d, step.rest_dir)
                        theta = np.arctan2(s, c)
                        if clip_hinges:
                            theta = np.clip(theta, step.lo, step.hi)
                        loc = (
                            _EYE3
                            + np.sin(theta)[:, None, None] * step.hinge_k
                            + (1.0 - np.cos(theta))[:, None, None] * step.hinge_k2
                        )
                world[step.ni, step.bi] = gp @ loc
        local_m = np.swapaxes(world[:, plan.effpar], -1, -2) @ world[:, :b_count]
        world = world[:, :b_count]
        local_m[:, self.none] = np.eye(3)
        return CoreResult(quat.from_matrix(local_m), local_m, sch.valid, world)

    def _fit(self, pts: F64, present: B8) -> tuple[F64, B8]:
        """World rotations (N, F, 3, 3) of fitted bones: the least-squares rotation of their rest
        points onto the observed ones (Kabsch), and whether each fit is usable (N, F)."""
        plan = self.plan
        pts_bad = (~present).astype(np.float64) @ self.point_mask_t > 0.5
        w = (~pts_bad[:, plan.fit_points] & plan.fit_slot).astype(np.float64)  # (N, F, M)
        w_sum = w.sum(axis=-1)
        obs = pts[:, plan.fit_points]  # (N, F, M, 3)
        # Cross-covariance of the centred point sets: sum w r p^T - (sum w r)(sum w p)^T / W.
        w_rest = plan.fit_rest * w[..., None]
        cov = (
            np.swapaxes(w_rest, -1, -2) @ obs
            - np.einsum("nfi,nfj->nfij", w_rest.sum(axis=-2), np.einsum("nfm,nfmi->nfi", w, obs))
            / np.maximum(w_sum, 1.0)[..., None, None]
        )
        u, sv, vt = np.linalg.svd(cov)
        rot = np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)
        # Never a reflection: when det(V U^T) < 0 flip the least significant axis, i.e.
        # subtract twice its outer product v3 u3^T.
        det = np.einsum("...i,...i->...", quat.cross(rot[..., 0], rot[..., 1]), rot[..., 2])
        if np.any(det < 0.0):
            fix = 2.0 * vt[..., 2, :, None] * u[..., :, 2][..., None, :]
            rot = np.where((det < 0.0)[..., None, None], rot - fix, rot)
        ok = (w_sum >= 3.0) & (sv[..., 1] > _FIT_MIN_SPREAD * sv[..., 0])
        return rot, ok

    def clamp(self, local: F64, local_m: F64) -> tuple[F64, F64]:
        """Clamp (N, B) local rotations to the joint limits; returns (quaternions, matrices).

        Checks cheaply whether any cone bone is outside its limits and only then runs
        :func:`clamp_to_limits`. Hinge bones are built on their axis within range already.
        """
        ci = self.cone_idx
        qc = local[:, ci]
        twist = 2.0 * np.arctan2(np.einsum("nbi,bi->nb", qc[..., :3], self.cone_r), qc[..., 3])
        d = np.einsum("nbij,bj->nbi", local_m[:, ci], self.cone_r)
        cos_a = np.einsum("nbi,bi->nb", d, self.cone_centre)
        over = (cos_a < self.cone_cos_max) | (twist < self.cone_lo) | (twist > self.cone_hi)
        if not over.any():
            return local, local_m
        cols = ci[over.any(axis=0)]
        local, local_m = local.copy(), local_m.copy()
        local[:, cols] = clamp_to_limits(self.plan.rig, local[:, cols], cols)
        local_m[:, cols] = quat.to_matrix(local[:, cols])
        return local, local_m

    def _mode(self, valid: B8, full_ok: B8) -> npt.NDArray[np.int64]:
        """Per-pose, per-bone ``M_*`` modes when something is missing or degenerate."""
        kind = self.plan.kind
        n = valid.shape[0]
        mode = np.zeros((n, self.b_count), np.int64)
        fi = self.full_idx
        full_valid = valid[:, fi]
        obs = np.zeros_like(valid)
        obs[:, fi] = full_ok
        mode[obs] = M_OBS
        swing = (kind == K_SWING) & valid
        swing[:, fi] |= full_valid & ~full_ok & ~self.is_driver[fi]
        mode[swing] = M_SWING
        mode[(kind == K_HINGE) & valid] = M_HINGE
        mode[self.driven & (mode == M_NONE)] = M_HOLD
        if self.member.any():
            chain = self.member & (mode[:, self.member_driver] == M_OBS)
            mode[chain] = M_CHAIN
            mode[self.member & ~chain] = M_HOLD
        return mode


def _matrix_power(m: F64, t: F64) -> F64:
    """Rotation matrices (M, 3, 3) raised to powers (M,): same axis, ``t`` times the angle.

    Uses the axis from the antisymmetric part, exact away from half turns (chains that share a
    rotation, such as the spine's twist or the neck's share of the head, stay well below).
    """
    # The antisymmetric part gives sin(angle) * axis, the trace 1 + 2 cos(angle).
    v = -0.5 * np.einsum("ijk,mjk->mi", _LEVI_CIVITA, m)
    s = np.sqrt(np.einsum("mi,mi->m", v, v))
    c = 0.5 * (np.trace(m, axis1=-2, axis2=-1) - 1.0)
    angle = np.arctan2(s, c)
    axis = v / np.maximum(s, 1e-15)[:, None]
    return quat.matrix_from_axis_angle(axis, angle * t)


def solve_core(
    plan: SolvePlan,
    xyz: npt.ArrayLike,
    present: npt.ArrayLike,
    held: npt.ArrayLike | None = None,
    min_ref_sin: float = float(np.sin(np.radians(3.0))),
) -> CoreResult:
    """Solve N poses at once (stateless).

    Args:
        plan: from :func:`build_plan`.
        xyz: (N, K, 3) world keypoints in metres (NaN allowed where missing).
        present: (N, K) bool, keypoints usable this time.
        held: (N, B, 3, 3) local rotation matrices for bones whose keypoints are missing
            (identity when None).
        min_ref_sin: sine of the smallest usable angle between a bone and its twist reference.

    Returns:
        :class:`CoreResult` (rotations not yet clamped to limits).
    """
    core = plan_core(plan)
    held_m = None if held is None else np.asarray(held, np.float64)
    return core.solve(
        np.asarray(xyz, np.float64), np.asarray(present, bool), held_m, float(min_ref_sin)
    )


def plan_core(plan: SolvePlan) -> _Core:
    """The solver core of a plan (built on first use, then kept with the plan)."""
    core: _Core | None = plan.__dict__.get("_core")
    if core is None:
        core = _Core(plan)
        object.__setattr__(plan, "_core", core)
    return core


# ---------------------------------------------------------------------------------------------
# Joint limits
# ---------------------------------------------------------------------------------------------


def clamp_to_limits(rig: Rig, local: npt.ArrayLike, bones: npt.ArrayLike | None = None) -> F64:
    """Clamp local rotations (..., B, 4) to the rig's joint limits.

    Cone bones: the swing (how far the bone's direction turns) is limited to the cone about
    ``swing_centre`` and the twist about the rest direction to ``twist_deg``. Hinge bones keep only
    their turn about the hinge axis, limited to ``hinge_range_deg``. Free bones are unchanged.
    ``bones`` (int indices) says which bones the last axis holds when it is a subset.
    """
    q = quat.canonical(local)
    idx = np.arange(rig.num_bones) if bones is None else np.asarray(bones, np.int64)
    lim = rig.limits
    kind = lim.kind[idx]
    r = rig.rest_directions[idx]
    out = q.copy()
    cone = kind == LIMIT_CONE
    if cone.any():
        sub = idx[cone]
        qc, rc = q[..., cone, :], r[cone]
        tw = quat.twist_angle(qc, rc)
        lo, hi = np.radians(lim.twist_deg[sub, 0]), np.radians(lim.twist_deg[sub, 1])
        tw_c = np.clip(tw, lo, hi)
        swing, _ = quat.swing_twist(qc, rc)
        d = quat.rotate(swing, rc)
        centre = lim.swing_centre[sub]
        max_swing = np.radians(lim.swing_deg[sub])
        cos_a = np.clip(quat.dot(d, centre), -1.0, 1.0)
        over = np.arccos(cos_a) > max_swing
        if np.any(over):
            axis = quat.cross(centre, d)
            axis = np.where(
                quat.norm(axis)[..., None] > 1e-9, quat.unit(axis), quat.any_perpendicular(centre)
            )
            d_lim = quat.rotate(quat.from_axis_angle(axis, max_swing), centre)
            d = np.where(over[..., None], d_lim, d)
            swing = quat.from_two_vectors(rc, d)
        out[..., cone, :] = quat.multiply(swing, quat.from_axis_angle(rc, tw_c))
    hinge = kind == LIMIT_HINGE
    if hinge.any():
        sub = idx[hinge]
        axis = lim.hinge_axis[sub]
        theta = quat.twist_angle(q[..., hinge, :], axis)
        theta = np.clip(
            theta, np.radians(lim.hinge_range_deg[sub, 0]), np.radians(lim.hinge_range_deg[sub, 1])
        )
        out[..., hinge, :] = quat.from_axis_angle(axis, theta)
    return quat.canonical(out)


def limit_violation_deg(rig: Rig, local: npt.ArrayLike) -> F64:
    """How far (degrees, >= 0) each local rotation (..., B, 4) lies outside its joint limits."""
    q = quat.canonical(local)
    return np.degrees(quat.angle_between(q, clamp_to_limits(rig, q)))


# ---------------------------------------------------------------------------------------------
# The streaming solver
# ---------------------------------------------------------------------------------------------


@dataclass
class _PersonState:
    held: F64  # (B, 4) last valid (clamped) local rotations
    held_m: F64  # (B, 3, 3) the same as matrices
    last_valid_t: F64  # (B,) capture time of each bone's last valid rotation
    last_seen_t: float
    rested: B8  # (B,) held rotation has eased back to rest (nothing left to ease)


class BoneSolver:
    """Keypoints in world space -> :class:`BoneRotations` per person, with hold/ease state.

    Example::

        solver = BoneSolver(load_rig("unity_humanoid"), SolverConfig())
        for person in solver.solve(world_keypoints, t):
            send(person.bones, person.rot)
    """

    def __init__(self, rig: Rig, config: SolverConfig | None = None) -> None:
        self.rig = rig
        self.config = config or SolverConfig()
        self._plans: dict[KeypointLayout, SolvePlan] = {}
        self._state: dict[int, _PersonState] = {}
        self.mirror = rig.mirror if self.config.mirror is None else self.config.mirror
        self._min_ref_sin = float(np.sin(np.radians(self.config.min_ref_angle_deg)))
        yaw = np.radians(self.config.facing_yaw_deg)
        self._facing_t = quat.matrix_from_axis_angle(np.array([0.0, 1.0, 0.0]), -yaw).T.copy()
        self._rest_root = rig.rest_positions[0].astype(np.float32)
        self._mirror_sign = np.array([-1.0, 1.0, 1.0])

    def plan(self, layout: KeypointLayout) -> SolvePlan:
        """The (cached) solve plan for a keypoint layout; InputError if the rig lacks it."""
        plan = self._plans.get(layout)
        if plan is None:
            if layout not in self.rig.layouts:
                raise InputError(
                    f"rig {self.rig.name!r} ({self.rig.path}) does not support keypoint layout "
                    f"{layout.value!r}; it supports {[lay.value for lay in self.rig.layouts]}"
                )
            plan = build_plan(self.rig, layout)
            self._plans[layout] = plan
        return plan

    def reset(self) -> None:
        """Forget every person's held rotations (e.g. after a scene cut)."""
        self._state.clear()

    def prepare(self, keypoints: Keypoints) -> tuple[SolvePlan, F64, B8]:
        """Validate world keypoints and return (plan, xyz (P, K, 3), present (P, K)) after
        mirroring and the facing correction."""
        if keypoints.space is not Space.WORLD:
            raise InputError(
                "the bone solver needs world keypoints (metres); lift image keypoints first "
                f"(got space {keypoints.space.value!r})"
            )
        plan = self.plan(keypoints.layout)
        xyz = np.asarray(keypoints.xyz, np.float64)
        score = keypoints.score
        if self.mirror:
            xyz = xyz[:, plan.mirror_perm] * self._mirror_sign
            score = score[:, plan.mirror_perm]
        if self.config.facing_yaw_deg != 0.0:
            xyz = xyz @ self._facing_t
        present = (score >= self.config.min_score) & np.isfinite(xyz).all(-1)
        return plan, xyz, present

    def solve_batch(self, keypoints: Keypoints) -> tuple[F64, B8]:
        """Stateless solve of every "person" of ``keypoints`` as independent poses.

        Returns (local rotations (P, B, 4) clamped per the config, valid (P, B)); missing bones
        are at rest. Used by benchmarks and tests on many poses at once.
        """
        plan, xyz, present = self.prepare(keypoints)
        core = plan_core(plan)
        res = core.solve(xyz, present, None, self._min_ref_sin)
        local = core.clamp(res.local, res.local_matrix)[0] if self.config.clamp else res.local
        return local, res.valid

    def solve(self, keypoints: Keypoints, t: float) -> list[BoneRotations]:
        """Solve each person of world ``keypoints`` captured at time ``t`` (seconds).

        Persons are matched to their held state by ``keypoints.ids`` (by position when untracked).
        No person gives an empty list.
        """
        plan, xyz, present = self.prepare(keypoints)
        core = plan_core(plan)
        out: list[BoneRotations] = []
        b_count = self.rig.num_bones
        for p in range(keypoints.num_persons):
            pid = int(keypoints.ids[p]) if keypoints.ids[p] >= 0 else -1 - p
            state = self._state.get(pid)
            if state is None:
                state = _PersonState(
                    quat.identity(b_count),
                    np.broadcast_to(np.eye(3), (b_count, 3, 3)).copy(),
                    np.full(b_count, -np.inf),
                    t,
                    np.ones(b_count, bool),
                )
                self._state[pid] = state
            res = core.solve(xyz[p : p + 1], present[p : p + 1], self._held(state, t)[None],
                             self._min_ref_sin)  # fmt: skip
            local, local_m = res.local, res.local_matrix
            if self.config.clamp:
                local, local_m = core.clamp(local, local_m)
            valid = res.valid[0]
            state.held[valid] = local[0, valid]
            state.held_m[valid] = local_m[0, valid]
            state.last_valid_t[valid] = t
            state.rested[valid] = False
            state.last_seen_t = t
            out.append(
                BoneRotations(
                    bones=self.rig.bones,
                    rot=local[0].astype(np.float32),
                    root_pos=self._root_position(plan, xyz[p], present[p]),
                    valid=valid,
                    t=float(t),
                )
            )
        if self._state and keypoints.num_persons < len(self._state):
            timeout = self.config.person_timeout_s
            for k in [k for k, s in self._state.items() if t - s.last_seen_t > timeout]:
                del self._state[k]
        return out

    def _held(self, state: _PersonState, t: float) -> F64:
        """Held rotation matrices (B, 3, 3), eased towards rest after ``hold_s``."""
        cfg = self.config
        easing = ~state.rested & ((t - state.last_valid_t) > cfg.hold_s)
        if not easing.any():
            return state.held_m
        elapsed = t - state.last_valid_t[easing] - cfg.hold_s
        frac = np.clip(elapsed / max(cfg.ease_s, 1e-6), 0.0, 1.0)
        out: F64 = state.held_m.copy()
        out[easing] = quat.to_matrix(quat.power(state.held[easing], 1.0 - frac))
        done = np.nonzero(easing)[0][frac >= 1.0]
        if done.size:
            state.held[done] = (0.0, 0.0, 0.0, 1.0)
            state.held_m[done] = np.eye(3)
            state.rested[done] = True
        return out

    def _root_position(self, plan: SolvePlan, xyz: F64, present: B8) -> npt.NDArray[np.float32]:
        """The Hips position: the rig's rest position, lowered when the performer crouches.

        The performer's standing hip height is taken as thigh + shin (straight legs); the drop
        below it is scaled by the rig's leg length over the performer's.
        """
        root: npt.NDArray[np.float32] = self._rest_root.copy()
        if not self.config.root_translation:
            return root
        names = plan.layout.names
        idx = {n: names.index(n) for n in ("left_hip", "right_hip", "left_knee", "right_knee",
                                            "left_ankle", "right_ankle")}  # fmt: skip
        if not all(present[i] for i in idx.values()):
            return root
        hip = (xyz[idx["left_hip"]] + xyz[idx["right_hip"]]) / 2
        legs = [
            np.linalg.norm(xyz[idx[f"{s}_hip"]] - xyz[idx[f"{s}_knee"]])
            + np.linalg.norm(xyz[idx[f"{s}_knee"]] - xyz[idx[f"{s}_ankle"]])
            for s in ("left", "right")
        ]
        leg = float(np.mean(legs))
        height = hip[1] - min(xyz[idx["left_ankle"], 1], xyz[idx["right_ankle"], 1])
        rig = self.rig
        rig_leg = sum(
            float(np.linalg.norm(rig.rest_point(f"left_{a}") - rig.rest_point(f"left_{b}")))
            for a, b in (("hip", "knee"), ("knee", "ankle"))
        )
        drop = min(0.0, float(height) - leg) * rig_leg / max(leg, 1e-6)
        root[1] = max(0.0, root[1] + drop)
        return root


# ---------------------------------------------------------------------------------------------
# Synthetic poses with known answers
# ---------------------------------------------------------------------------------------------


def sample_pose(
    rig: Rig,
    layout: KeypointLayout,
    n: int,
    rng: np.random.Generator,
    root: str = "any",
    root_yaw_deg: float = 45.0,
    root_tilt_deg: float = 15.0,
) -> F64:
    """Random local rotations (n, B, 4) inside the rig's limits, for the degrees of freedom the
    layout's keypoints determine (the synthetic ground truth of tests and ``bench retarget``).

    Driven bones get a swing uniform over their cone and a twist uniform in their range (no twist
    for bones without a twist reference), hinges an angle uniform in their range; chain members
    share their driver's rotation (samples that break a member's limits are redrawn); undriven
    bones stay at rest. ``root``: ``"any"`` (uniform random Hips rotation), ``"facing"`` (the
    performer roughly facing the camera: yaw within +-``root_yaw_deg``, lean within
    ``root_tilt_deg``) or ``"rest"``.
    """
    plan = build_plan(rig, layout)
    lim = rig.limits
    b_count = rig.num_bones
    out = quat.identity((n, b_count))
    for b in range(b_count):
        k = plan.kind[b]
        if k in (K_NONE, K_MEMBER) or b == 0:
            continue
        if k == K_HINGE:
            lo, hi = np.radians(lim.hinge_range_deg[b])
            theta = rng.uniform(float(lo), float(hi), size=n)
            out[:, b] = quat.from_axis_angle(lim.hinge_axis[b], theta)
            continue
        twist = k != K_SWING
        if rig.distribute[b] is not None and k == K_FULL:
            out[:, b] = 0  # filled by the chain sampler below
            continue
        out[:, b] = _sample_cone(rig, b, n, rng, twist, 1.0)
    for b, chain in enumerate(rig.distribute):
        if chain is None or plan.kind[b] != K_FULL or b == 0:
            continue
        out[:, [j for j, _ in chain]] = _sample_chain(rig, b, chain, n, rng)
    if plan.kind[0] != K_NONE:
        if root == "any":
            out[:, 0] = quat.random(n, rng)
        elif root == "facing":
            yaw = quat.from_axis_angle(
                np.array([0.0, 1.0, 0.0]), np.radians(rng.uniform(-root_yaw_deg, root_yaw_deg, n))
            )
            tilt = _sample_cap(np.array([0.0, 1.0, 0.0]), np.radians(root_tilt_deg), n, rng)
            out[:, 0] = quat.multiply(quat.from_two_vectors(np.array([0.0, 1.0, 0.0]), tilt), yaw)
        elif root != "rest":
            raise ValueError(f"root must be 'any', 'facing' or 'rest', got {root!r}")
    return out


def _sample_cap(centre: F64, half_angle: float, n: int, rng: np.random.Generator) -> F64:
    """Directions (n, 3) uniform over the spherical cap of ``half_angle`` rad about ``centre``."""
    cos_t = rng.uniform(np.cos(half_angle), 1.0, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    e1 = quat.any_perpendicular(centre)
    e2 = np.cross(centre, e1)
    sin_t = np.sqrt(1.0 - cos_t**2)
    out: F64 = (
        cos_t[:, None] * centre
        + (sin_t * np.cos(phi))[:, None] * e1
        + (sin_t * np.sin(phi))[:, None] * e2
    )
    return out


def _sample_cone(
    rig: Rig, b: int, n: int, rng: np.random.Generator, twist: bool, scale: float
) -> F64:
    lim = rig.limits
    r = rig.rest_directions[b]
    if lim.kind[b] == LIMIT_CONE:
        half = min(np.radians(lim.swing_deg[b]) * scale, np.pi)
        centre = lim.swing_centre[b]
        lo, hi = np.radians(lim.twist_deg[b]) * scale
    else:
        half, centre, lo, hi = np.pi, r, -np.pi, np.pi
    d = _sample_cap(centre, half, n, rng) if half > 0 else np.broadcast_to(r, (n, 3))
    swing = quat.from_two_vectors(r, d)
    angle = rng.uniform(max(lo, -np.pi), min(hi, np.pi), n) if twist else np.zeros(n)
    return quat.multiply(swing, quat.from_axis_angle(r, angle))


def _sample_chain(
    rig: Rig, driver: int, chain: tuple[tuple[int, float], ...], n: int, rng: np.random.Generator
) -> F64:
    """Shares (n, len(chain), 4) of a total rotation drawn from the driver's limits scaled by
    one over its weight, redrawn until every share is within its bone's limits."""
    idx = [j for j, _ in chain]
    cum = np.cumsum([w for _, w in chain])
    w_drv = chain[-1][1]
    out = np.zeros((n, len(chain), 4))
    filled = 0
    for _ in range(200):
        m = max(4 * (n - filled), 16)
        total = _sample_cone(rig, driver, m, rng, True, 1.0 / w_drv)
        # Each bone's local share: total^w (all powers of one rotation commute).
        prev = quat.identity(m)
        shares = np.zeros((m, len(chain), 4))
        for c, _ in enumerate(chain):
            acc = quat.power(total, cum[c])
            shares[:, c] = quat.multiply(quat.conjugate(prev), acc)
            prev = acc
        lim_view = np.zeros((m, rig.num_bones, 4))
        lim_view[...] = (0, 0, 0, 1)
        lim_view[:, idx] = shares
        viol = limit_violation_deg(rig, lim_view)[:, idx].max(axis=1)
        good = shares[viol < 1e-6]
        take = min(len(good), n - filled)
        out[filled : filled + take] = good[:take]
        filled += take
        if filled >= n:
            return out
    raise RuntimeError(f"could not sample the {rig.bones[driver]} chain within its limits")
