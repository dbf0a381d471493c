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
vectorised over bones and over a leading batch axis of frames or candidate poses, which the
benchmark uses. Per frame the cost is a fixed number of small numpy calls whatever the bone count:
everything that depends only on the rig and the keypoint layout (index arrays, rest frames, hinge
and limit constants) is built once per layout, every drive vector comes out of one matrix product
of the keypoints, bones are composed level by level of the parent tree, and a single person reuses
a cached schedule per pattern of observed bones (``avatarlink bench retarget`` times it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import partial
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
_SKEW_MAP = quat._SKEW_MAP  # v @ _SKEW_MAP = [v]x flattened
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
            5 rather than less: lifted 2D keypoints leave a nearly straight arm's bend plane
            a few degrees of noise (``bench`` on the synthetic performer: arms p90 57 -> 48 deg),
            while exact and noisy 3D (``bench retarget``) are unchanged; 15 or more costs
            exact 3D up to 9 deg p95.
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
    min_ref_angle_deg: float = 5.0
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


class CoreResult:
    """Output of :func:`solve_core` for N poses.

    Attributes:
        local: (N, B, 4) local rotations (xyzw, relative to rest, world axes), not yet clamped.
        local_matrix: (N, B, 3, 3) the same as matrices (assembled on first use).
        valid: (N, B) bool, observed this time (not held, not undriven).
        world: (N, B, 3, 3) world rotations of the bones the solve needed (undriven bones are
            identity here: they take their effective parent's).
    """

    __slots__ = ("_evaluated", "_local_matrix", "local", "valid", "world")

    def __init__(
        self, local: F64, valid: B8, world: F64, evaluated: I64, evaluated_matrix: F64
    ) -> None:
        self.local = local
        self.valid = valid
        self.world = world
        self._evaluated = (evaluated, evaluated_matrix)
        self._local_matrix: F64 | None = None

    @property
    def local_matrix(self) -> F64:
        """(N, B, 3, 3) local rotation matrices (identity for bones the layout does not drive)."""
        if self._local_matrix is None:
            idx, mat = self._evaluated
            out = np.broadcast_to(_EYE3, (*self.local.shape[:-1], 3, 3)).copy()
            out[:, idx] = mat
            self._local_matrix = out
        return self._local_matrix


@dataclass(frozen=True, eq=False)
class _Step:
    """Bones solved together at one level, with every index and per-bone constant the step
    needs gathered once when the schedule is built.

    Index arrays address flattened arrays (so one ``take``/``put`` serves any number N of
    poses): ``par``, ``drv``: rows of the world rotations (N * (B + 1), 3, 3) holding each
    bone's parent and chain driver; ``obs``: rows of the drive vectors ``y`` (N * R, 3);
    ``held``: rows of the held local rotations (N * B, 3, 3); ``put``: the world's elements
    (9 per bone) that receive the result.

    ``rest_skew`` (M, 3, 3) is ``[r]x`` of the rest direction r. ``hinge_pr`` (M, 3, 2) holds
    the columns ``a x r`` and ``r`` (hinge axis a): ``o^T G hinge_pr`` gives the sine and
    cosine parts of the hinge angle. ``hinge_kk`` (M, 2, 9) holds ``[a]x`` and ``[a]x^2``
    flattened, ``hinge_ik2`` (M, 3, 3) is ``I + [a]x^2``.
    """

    code: int
    par: I64
    drv: I64
    obs: I64
    held: I64
    put: I64
    rest_dir: F64
    rest_skew: F64
    hinge_pr: F64
    hinge_kk: F64
    hinge_ik2: F64
    lo: F64
    hi: F64
    weight: F64


@dataclass(frozen=True, eq=False)
class _Schedule:
    """The order in which bones get their world rotation for one pattern of per-bone modes.

    ``obs_take`` (rows of the TRIAD/fit rotations (N * F, 3, 3)) and ``obs_put`` (elements of
    the world) place the observed bones; ``valid`` (N, B) says which bones are observed.
    """

    obs_take: I64
    obs_put: I64
    levels: tuple[tuple[_Step, ...], ...]
    valid: B8
    holds: bool  # some bone keeps its held rotation


@dataclass(frozen=True, eq=False)
class _Frames:
    """Per batch size N: identity templates and the flat indices of the evaluated bones.

    Attributes:
        world: (N, B + 1, 3, 3) identity world rotations (index B: the frame above the root).
        local: (N, B, 4) identity local rotations.
        par_take, eval_take: rows of the flat world of each evaluated bone's parent and itself.
        local_put: elements of the flat local rotations of the evaluated bones.
    """

    world: F64
    local: F64
    par_take: I64
    eval_take: I64
    local_put: I64


def _elements(rows: npt.ArrayLike, size: int) -> I64:
    """Flat element indices of ``rows`` of an array whose rows hold ``size`` elements."""
    out: I64 = (np.asarray(rows, np.int64)[:, None] * size + np.arange(size)).reshape(-1)
    return out


# sin(theta + shift) gives (sin theta, -cos theta), or (sin theta, cos theta), in one call.
_SIN_NEG_COS = np.array([0.0, -0.5 * np.pi])
_SIN_COS = np.array([0.0, 0.5 * np.pi])
# (M, 9) flattened matrices @ this = (M, 4): sin(angle) * axis from the antisymmetric part, and
# half the trace (cos(angle) = half the trace - 1/2).
_AXIS_TRACE = np.zeros((9, 4))
for _i, (_a, _b) in enumerate(((7, 5), (2, 6), (3, 1))):
    _AXIS_TRACE[_a, _i], _AXIS_TRACE[_b, _i] = 0.5, -0.5
_AXIS_TRACE[[0, 4, 8], 3] = 0.5


class _Core:
    """Precomputed arrays for one plan, and the solve itself (see :func:`solve_core`).

    Every per-frame vector comes out of one product ``rows @ x`` of the keypoints (K, 3):

    - rows ``[0, F)``: the drive direction of each fully observed bone (``full_idx``: bones with
      a hinged child as twist reference first, then those with a vector reference);
    - rows ``[F, 2F)``: their twist reference (the hinged child's drive, or the ``up`` vector);
    - rows ``[2F, 2F + B)``: the drive direction of every bone (zero when undriven);
    - then, with every keypoint present, three rows per fitted bone giving the cross-covariance
      of its centred rest points with the observed ones (the weights are then constant).

    Everything per (rig, layout) is gathered here once: index arrays, rest frames, hinge and
    limit constants; single poses reuse a cached schedule per pattern of observed bones.
    """

    def __init__(self, plan: SolvePlan) -> None:
        self.plan = plan
        kind = plan.kind
        b_count = kind.shape[0]
        self.b_count = b_count
        w = plan.point_weights
        m = plan.point_mask
        k_count = w.shape[1]
        self.driven = (kind != K_NONE) & (kind != K_MEMBER)
        self.driven_idx = np.nonzero(self.driven)[0]
        self.eval_idx = np.nonzero(kind != K_NONE)[0]
        self.eval_par = plan.effpar[self.eval_idx]
        # Fully observed bones, hinge-referenced first (their second frame axis is the plane
        # normal itself; the others' is the reference made perpendicular).
        href = np.nonzero(kind == K_HREF)[0]
        self.full_idx = np.concatenate([href, np.nonzero(kind == K_FULL)[0]])
        fi = self.full_idx
        n_f = fi.size
        self.n_href = href.size
        self.href_child = plan.child[href]
        self.full_pos = np.zeros(b_count, np.int64)
        self.full_pos[fi] = np.arange(n_f)
        # The transposed rest frames; TRIAD below builds the second axis of a vector-referenced
        # bone reversed (one operation less), so its rest row is reversed too.
        self.full_rest_t = plan.rest_frame_t[fi].copy()
        self.full_rest_t[self.n_href :, 1] *= -1.0
        self.driven_rows = 5 * n_f + self.driven_idx  # their drive lengths in solve()'s z_len
        self.full_put = _elements(self.full_idx, 9)  # the observed bones in a world (1, B + 1)
        self.fit_put = _elements(self.full_pos[plan.fit_bones], 9)  # fitted ones in (1, F, 3, 3)
        drive_w = w[plan.dst] - w[plan.src]
        ref_w = w[plan.udst] - w[plan.usrc]
        second = np.concatenate([drive_w[self.href_child], ref_w[fi[self.n_href :]]])
        drive_m = m[plan.dst] | m[plan.src]
        ref_m = m[plan.udst] | m[plan.usrc]
        # (K, B + F): which keypoints each drive (B) and each twist reference (F) needs.
        self.need_t = np.concatenate([drive_m, ref_m[fi]]).T.astype(np.float64)
        self.fit_bones = plan.fit_bones
        self.fit_full = self.full_pos[plan.fit_bones]
        self.point_mask_t = m.T.astype(np.float64)
        fit_rows = np.zeros((0, k_count))
        if plan.fit_bones.size:
            slot = plan.fit_slot.astype(np.float64)
            mean = np.einsum("fm,fmi->fi", slot, plan.fit_rest) / slot.sum(axis=1)[:, None]
            centred = slot[..., None] * (plan.fit_rest - mean[:, None])
            fit_rows = np.einsum("fmi,fmk->fik", centred, w[plan.fit_points]).reshape(-1, k_count)
        self.o_start = 2 * n_f
        self.fit_start = 2 * n_f + b_count
        self.rows = np.concatenate([drive_w[fi], second, drive_w, fit_rows])
        used = m.any(axis=0)
        self.all_used = bool(used.all())
        self.used_idx = np.nonzero(used)[0]
        self.rows_used = np.ascontiguousarray(self.rows[:, self.used_idx])
        self.is_driver = np.zeros(b_count, bool)
        self.is_driver[plan.chain_driver[plan.chain_driver >= 0]] = True
        self.member = kind == K_MEMBER
        self.member_driver = np.where(self.member, plan.chain_driver, 0)
        hinge_p = quat.cross(plan.rig.limits.hinge_axis, plan.rest_dir)  # a x r
        self.hinge_pr = np.stack([hinge_p, plan.rest_dir], axis=-1)
        self.hinge_kk = np.stack([plan.hinge_k, plan.hinge_k2], axis=1).reshape(-1, 2, 9)
        self.hinge_ik2 = _EYE3 + plan.hinge_k2
        self.rest_skew = quat.skew(plan.rest_dir)
        # Joint limits of the cone bones this layout evaluates, for the cheap check in clamp().
        table = _limit_table(plan.rig)
        lim = plan.rig.limits
        self.cone_idx = np.nonzero((lim.kind == LIMIT_CONE) & (kind != K_NONE))[0]
        self.cones = table.subset(table.cone_pos[self.cone_idx])
        # The check allows round-off: within this tolerance a rotation counts as inside.
        tol = np.radians(_LIMIT_TOLERANCE_DEG)
        swing = np.radians(lim.swing_deg[self.cone_idx])
        self.cone_cos_max = np.cos(np.minimum(swing + tol, np.pi))
        self.cone_twist_tol = 0.5 * tol  # on half angles
        self.cones_form_r4 = self.cones.form_r4
        self._cache: dict[bytes, _Schedule] = {}
        self._by_validity: dict[bytes, _Schedule] = {}
        self._frames: dict[int, _Frames] = {}
        self.n_rows = self.rows.shape[0]
        # Every driven bone observed: the common case, scheduled once.
        self.all_ok = self.schedule(self._mode_all_ok())

    def _mode_all_ok(self) -> npt.NDArray[np.int64]:
        kind = self.plan.kind
        mode = np.full(self.b_count, M_NONE, np.int64)
        mode[(kind == K_FULL) | (kind == K_HREF)] = M_OBS
        mode[kind == K_SWING] = M_SWING
        mode[kind == K_HINGE] = M_HINGE
        mode[kind == K_MEMBER] = M_CHAIN
        return mode[None]

    def frames(self, n: int) -> _Frames:
        """Templates and indices for N poses (kept for small N)."""
        out = self._frames.get(n)
        if out is None:
            b_count = self.b_count
            rows = np.arange(n)[:, None] * (b_count + 1)
            out = _Frames(
                world=np.broadcast_to(_EYE3, (n, b_count + 1, 3, 3)).copy(),
                local=quat.identity((n, b_count)),
                par_take=(rows + self.eval_par).reshape(-1),
                eval_take=(rows + self.eval_idx).reshape(-1),
                local_put=_elements((np.arange(n)[:, None] * b_count + self.eval_idx).ravel(), 4),
            )
            if n <= 4:
                self._frames[n] = out
        return out

    def schedule(self, mode: npt.NDArray[np.int64]) -> _Schedule:
        """Levels of bones whose parent world rotation is known; cached for single poses."""
        key = mode.tobytes() if mode.shape[0] == 1 else b""
        if key:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        plan = self.plan
        n, b_count = mode.shape
        w_rows = b_count + 1  # world rows per pose
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
                    b, nb = bi[sel], ni[sel]
                    steps.append(
                        _Step(
                            code,
                            par=nb * w_rows + dep[nb, b],
                            drv=nb * w_rows + np.maximum(plan.chain_driver[b], 0),
                            obs=nb * self.n_rows + self.o_start + b,
                            held=nb * b_count + b,
                            put=_elements(nb * w_rows + b, 9),
                            rest_dir=plan.rest_dir[b],
                            rest_skew=self.rest_skew[b],
                            hinge_pr=self.hinge_pr[b],
                            hinge_kk=self.hinge_kk[b],
                            hinge_ik2=self.hinge_ik2[b],
                            lo=plan.hinge_lo[b],
                            hi=plan.hinge_hi[b],
                            weight=plan.chain_weight[b],
                        )
                    )
            levels.append(tuple(steps))
            known[ni, bi] = True
        valid = (mode == M_OBS) | (mode == M_SWING) | (mode == M_HINGE) | (mode == M_CHAIN)
        out = _Schedule(
            obs_take=obs_n * self.full_idx.size + self.full_pos[obs_b],
            obs_put=_elements(obs_n * w_rows + obs_b, 9),
            levels=tuple(levels),
            valid=valid,
            holds=bool((mode == M_HOLD).any()),
        )
        if key and len(self._cache) < 256:
            self._cache[key] = out
        return out

    def solve(
        self,
        x: F64,
        present: B8,
        held: F64 | Callable[[], F64] | None,
        min_ref_sin: float,
        clip_hinges: bool = True,
    ) -> CoreResult:
        """See :func:`solve_core`; ``held`` may also be a function giving the (N, B, 3, 3) held
        matrices, called only when some bone holds."""
        n, b_count, n_f, n_h = x.shape[0], self.b_count, self.full_idx.size, self.n_href
        if self.all_used:
            all_present = np.count_nonzero(present) == present.size
        else:
            all_present = np.count_nonzero(present.take(self.used_idx, axis=1)) == (
                n * self.used_idx.size
            )
        bad: B8 | None = None
        if all_present:
            # Every keypoint a point needs is present: no masks, and the fits' weights are fixed.
            y = self.rows @ x if self.all_used else self.rows_used @ x.take(self.used_idx, axis=1)
        else:
            x = np.where(present[..., None], x, 0.0)
            y = self.rows @ x
            bad = (~present).astype(np.float64) @ self.need_t > 0.5  # (N, B + F)
        o = y[:, self.o_start : self.o_start + b_count]
        # World rotations of fully observed bones (TRIAD): the frame (e1, e2, e3) of the drive
        # o and its twist reference v, times the transposed rest frame. With S = [o]x,
        # c1 = S v is the plane normal and x = S c1 = o x (o x v); a hinged child gives
        # (e2, e3) = (c1, x), an up vector (-x, c1) (v made perpendicular to o; the sign is in
        # the rest frame). Lengths of everything come from one product.
        of, v = y[:, :n_f], y[:, n_f : 2 * n_f]
        skew_o = (of @ _SKEW_MAP).reshape(n, n_f, 3, 3)
        c1 = skew_o @ v[..., None]
        xx = (skew_o @ c1)[..., 0]
        c1 = c1[..., 0]
        z = np.concatenate(
            [of, c1[:, :n_h], xx[:, n_h:], xx[:, :n_h], c1[:, n_h:], v, c1, o], axis=1
        )
        z_len = np.sqrt((z[..., None, :] @ z[..., None])[..., 0, 0])
        axes = z[:, : 3 * n_f] / np.maximum(z_len[:, : 3 * n_f], _EPS)[..., None]
        g_full = axes.reshape(n, 3, n_f, 3).transpose(0, 2, 3, 1) @ self.full_rest_t
        # How well the twist reference is defined: the sine of its angle to the bone (for a
        # hinged child, the sine of the joint angle: a straight elbow gives no twist).
        sin_ref = z_len[:, 4 * n_f : 5 * n_f] / np.maximum(
            z_len[:, :n_f] * z_len[:, 3 * n_f : 4 * n_f], _EPS
        )
        o_len = z_len[:, 5 * n_f :]
        sch: _Schedule | None = None
        if (
            bad is None
            and n == 1
            and np.count_nonzero(sin_ref > min_ref_sin) == n_f
            and np.count_nonzero(z_len[0].take(self.driven_rows) > _EPS) == self.driven_rows.size
        ):
            # Every drive and twist reference usable: the common case, scheduled once.
            sch = self.all_ok
        else:
            valid = self.driven & (o_len > _EPS)
            if bad is not None:
                valid &= ~bad[:, :b_count]
            full_ok = (sin_ref > min_ref_sin) & valid.take(self.full_idx, axis=1)
            if n_h:
                full_ok[:, :n_h] &= valid.take(self.href_child, axis=1)
            if bad is not None:
                full_ok[:, n_h:] &= ~bad[:, b_count + n_h :]
        if self.fit_bones.size:
            if bad is None:
                g_fit, fit_ok = _kabsch(
                    y[:, self.fit_start :].reshape(n, self.fit_bones.size, 3, 3)
                )
            else:
                g_fit, fit_ok = self._fit(x, present)
            ff = self.fit_full
            if np.count_nonzero(fit_ok) == fit_ok.size:
                if n == 1:
                    g_full.put(self.fit_put, g_fit)
                else:
                    g_full[:, ff] = g_fit
                if sch is None:
                    full_ok[:, ff] = True
                    valid[:, self.fit_bones] = True
            else:
                g_full[:, ff] = np.where(fit_ok[..., None, None], g_fit, g_full[:, ff])
                if sch is None:
                    full_ok[:, ff] |= fit_ok
                    valid[:, self.fit_bones] |= fit_ok
        frames = self.frames(n)
        world = frames.world.copy()
        if sch is None:
            sch = self._schedule_for(valid, full_ok)
        if sch is self.all_ok:
            world.put(self.full_put, g_full)
        else:
            world.put(sch.obs_put, g_full.reshape(-1, 3, 3).take(sch.obs_take, axis=0))
        if sch.holds and callable(held):
            held = held()
        flat_world = world.reshape(-1, 3, 3)
        flat_y = y.reshape(-1, 3)
        for level in sch.levels:
            for step in level:
                world.put(step.put, self._step(step, flat_world, flat_y, held, clip_hinges))
        n_eval = self.eval_idx.size
        # Local rotations of the evaluated bones: inverse(parent world) x world.
        parent = flat_world.take(frames.par_take, axis=0).reshape(n, n_eval, 3, 3)
        lm = parent.mT @ flat_world.take(frames.eval_take, axis=0).reshape(n, n_eval, 3, 3)
        local = frames.local.copy()
        local.put(frames.local_put, quat.from_matrix(lm))
        return CoreResult(local, sch.valid, world[:, :b_count], self.eval_idx, lm)

    @staticmethod
    def _step(
        step: _Step,
        world: F64,
        y: F64,
        held: F64 | Callable[[], F64] | None,
        clip: bool,
    ) -> F64:
        """World rotations (M, 3, 3) of one step's bones from their parents' (already known);
        ``world`` and ``y`` are flattened (rows of 3x3 matrices and of 3-vectors)."""
        gp = world.take(step.par, axis=0)
        code = step.code
        if code == M_HINGE:
            # Signed angle about the hinge axis a from r to the drive d = G^T o:
            # atan2(d.(a x r), d.r), both from one product o^T G [a x r, r].
            sc = (y.take(step.obs, axis=0)[:, None, :] @ gp @ step.hinge_pr)[:, 0]
            theta = np.arctan2(sc[:, 0], sc[:, 1])
            if clip:
                theta = np.minimum(np.maximum(theta, step.lo), step.hi)
            # Rodrigues about a fixed axis: I + [a]x^2 + sin [a]x - cos [a]x^2.
            trig = np.sin(theta[:, None] + _SIN_NEG_COS)
            loc = step.hinge_ik2 + (trig[:, None, :] @ step.hinge_kk).reshape(-1, 3, 3)
        elif code == M_CHAIN:
            loc = _matrix_power(gp.mT @ world.take(step.drv, axis=0), step.weight)
        elif code == M_SWING:
            d = (y.take(step.obs, axis=0)[:, None, :] @ gp)[:, 0]
            loc = _swing_matrix(step.rest_dir, step.rest_skew, d)
        elif isinstance(held, np.ndarray):  # M_HOLD
            loc = held.reshape(-1, 3, 3).take(step.held, axis=0)
        else:
            return gp
        out: F64 = gp @ loc
        return out

    def _fit(self, x: F64, present: B8) -> tuple[F64, B8]:
        """World rotations (N, F, 3, 3) of fitted bones when some keypoints are missing: the
        least-squares rotation of their present rest points onto the observed ones (Kabsch),
        and whether each fit is usable (N, F). ``x`` has zeros where missing."""
        plan = self.plan
        pts = plan.point_weights @ x
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
        rot, ok = _kabsch(cov)
        return rot, ok & (w_sum >= 3.0)

    def clamp(self, local: F64) -> F64:
        """Clamp (N, B, 4) local rotations (unit, ``w >= 0``) to the joint limits.

        Checks cheaply whether any cone bone is outside its limits (swing from a quadratic form
        of the quaternion, twist from one arctangent) and clamps only the bones that are. Hinge
        bones are built on their axis within range already.
        """
        if not self.cone_idx.size:
            return local
        cones = self.cones
        qc = local.take(self.cone_idx, axis=1)
        # q^T [form | r4]: the swing's quadratic form half done, and the twist part q . r.
        part = (qc[..., None, :] @ self.cones_form_r4)[..., 0, :]
        cos_a = (part[..., None, :4] @ qc[..., None])[..., 0, 0]
        half_twist = np.arctan2(part[..., 4], qc[..., 3])
        # Half the twist correction that clipping to the exact range makes.
        correction = np.minimum(np.maximum(half_twist, cones.lo_half), cones.hi_half)
        correction -= half_twist
        over = np.abs(correction) > self.cone_twist_tol
        over |= cos_a < self.cone_cos_max
        if not np.count_nonzero(over):
            return local
        out: F64 = local.copy()
        out[:, self.cone_idx] = _clamp_cones(qc, cones, correction, cos_a, over.any(axis=0))
        return out

    def _schedule_for(self, valid: B8, full_ok: B8) -> _Schedule:
        """The schedule for the modes that (valid, full_ok) give (cached for single poses)."""
        if valid.shape[0] != 1:
            return self.schedule(self._mode(valid, full_ok))
        key = valid.tobytes() + full_ok.tobytes()
        sch = self._by_validity.get(key)
        if sch is None:
            sch = self.schedule(self._mode(valid, full_ok))
            if len(self._by_validity) < 256:
                self._by_validity[key] = sch
        return sch

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


def _kabsch(cov: F64) -> tuple[F64, B8]:
    """Rotations (..., 3, 3) best turning rest points onto observed ones from their centred
    cross-covariance ``cov = sum (r - mean r) p^T`` (..., 3, 3), and whether the points are
    spread enough to define one (not (nearly) collinear)."""
    u, sv, vt = np.linalg.svd(cov)
    rot = np.swapaxes(u @ vt, -1, -2)  # V U^T
    # Never a reflection: when det(V U^T) < 0 flip the least significant axis, i.e. subtract
    # twice its outer product v3 u3^T.
    det = np.linalg.det(rot)
    if np.count_nonzero(det < 0.0):
        fix = 2.0 * vt[..., 2, :, None] * u[..., :, 2][..., None, :]
        rot = np.where((det < 0.0)[..., None, None], rot - fix, rot)
    ok: B8 = sv[..., 1] > _FIT_MIN_SPREAD * sv[..., 0]
    return rot, ok


def _matrix_power(m: F64, t: F64) -> F64:
    """Rotation matrices (M, 3, 3) raised to powers (M,): same axis, ``t`` times the angle.

    Uses the axis from the antisymmetric part, exact away from half turns (chains that share a
    rotation, such as the spine's twist or the neck's share of the head, stay well below).
    """
    # The antisymmetric part gives sin(angle) * axis, the trace 1 + 2 cos(angle).
    vc = m.reshape(-1, 9) @ _AXIS_TRACE
    s = np.sqrt((vc[:, None, :3] @ vc[:, :3, None])[:, 0, 0])
    # The quaternion of t times the angle about the same axis: (axis sin(t a / 2), cos(t a / 2)).
    trig = np.sin((np.arctan2(s, vc[:, 3] - 0.5) * (0.5 * t))[:, None] + _SIN_COS)
    q = vc * (trig[:, 0] / np.maximum(s, 1e-15))[:, None]
    q[:, 3] = trig[:, 1]
    return quat.to_matrix(q)


def _swing_matrix(r: F64, r_skew: F64, d: F64) -> F64:
    """Shortest-arc rotation matrices (M, 3, 3) from unit directions ``r`` (M, 3) (with their
    cross-product matrices ``r_skew``) to directions ``d`` (M, 3) of any non-zero length.

    With L = |d|, k = [r x d]x: R = I + k / L + k^2 / (L (L + r.d)) (Rodrigues with the
    half-angle identity); nearly opposite directions go the careful way.
    """
    length = np.sqrt((d[:, None, :] @ d[:, :, None])[:, 0, 0])
    rise = length + (r[:, None, :] @ d[:, :, None])[:, 0, 0]
    if np.count_nonzero(rise > 1e-9 * length) != length.size:
        return quat.matrix_from_two_vectors(r, d)
    k = ((r_skew @ d[..., None])[..., 0] @ _SKEW_MAP).reshape(-1, 3, 3)
    out: F64 = _EYE3 + k / length[:, None, None] + (k @ k) / (length * rise)[:, None, None]
    return out


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


@dataclass(frozen=True, eq=False)
class _LimitTable:
    """Cone limits as arrays, one row per cone bone (built once per rig by :func:`_limit_table`).

    Attributes:
        cone_pos: (B,) each rig bone's row here (-1 when not a cone bone).
        r: (C, 3) unit rest directions; r4: (C, 4) the same with a zero w, so that ``q . r4``
            is the twist part of ``q``.
        centre: (C, 3) unit cone axes; cos_max, sin_max: (C,) of the swing half-angle.
        form: (C, 4, 4) symmetric quadratic forms with ``q^T form q = centre . (R(q) r)`` for
            unit ``q``: the cosine of the bone direction's angle from the cone axis.
        lo_half, hi_half: (C,) half the twist range, radians.
        twist_map: (C, 4, 4) ``T`` with ``q * (s r, c) = c q + s T q``: a twist about r applied
            to q as a matrix.
        alt: (C, 3) the direction used when the bone points exactly away from the cone axis.
    """

    cone_pos: I64
    r: F64
    r4: F64
    centre: F64
    cos_max: F64
    sin_max: F64
    form: F64
    lo_half: F64
    hi_half: F64
    twist_map: F64
    alt: F64

    @property
    def form_r4(self) -> F64:
        """(C, 4, 5): ``form`` and ``r4`` side by side (one product gives both parts)."""
        out: F64 = np.concatenate([self.form, self.r4[:, :, None]], axis=2)
        return out

    def subset(self, rows: I64) -> _LimitTable:
        """The table of some rows (``cone_pos`` is kept as it is)."""
        return _LimitTable(
            self.cone_pos,
            *(getattr(self, f.name)[rows] for f in fields(self) if f.name != "cone_pos"),
        )


def _limit_table(rig: Rig) -> _LimitTable:
    """The (cached) limit arrays of a rig."""
    table: _LimitTable | None = rig.__dict__.get("_limit_table")
    if table is not None:
        return table
    lim = rig.limits
    cone = np.nonzero(lim.kind == LIMIT_CONE)[0]
    cone_pos = np.full(rig.num_bones, -1, np.int64)
    cone_pos[cone] = np.arange(cone.size)
    r = rig.rest_directions[cone].astype(np.float64)
    c = lim.swing_centre[cone].astype(np.float64)
    # c . R(q) r = (w^2 - v.v)(c.r) + 2 (c.v)(v.r) + 2 w v.(r x c) for q = (v, w).
    cr = quat.dot(c, r)
    form = np.zeros((cone.size, 4, 4))
    form[:, :3, :3] = (
        c[:, :, None] * r[:, None, :] + r[:, :, None] * c[:, None, :] - cr[:, None, None] * _EYE3
    )
    form[:, :3, 3] = form[:, 3, :3] = quat.cross(r, c)
    form[:, 3, 3] = cr
    # q * (s r, c) = c q + s (w r + v x r, -v.r).
    twist_map = np.zeros((cone.size, 4, 4))
    twist_map[:, :3, :3] = -quat.skew(r)
    twist_map[:, :3, 3] = r
    twist_map[:, 3, :3] = -r
    swing = np.radians(lim.swing_deg[cone])
    table = _LimitTable(
        cone_pos=cone_pos,
        r=r,
        r4=np.concatenate([r, np.zeros((cone.size, 1))], axis=1),
        centre=c,
        cos_max=np.cos(swing),
        sin_max=np.sin(swing),
        form=form,
        lo_half=0.5 * np.radians(lim.twist_deg[cone, 0]),
        hi_half=0.5 * np.radians(lim.twist_deg[cone, 1]),
        twist_map=twist_map,
        alt=quat.cross(quat.any_perpendicular(c), c),
    )
    object.__setattr__(rig, "_limit_table", table)
    return table


def _clamp_cones(
    q: F64,
    table: _LimitTable,
    correction: F64 | None = None,
    cos_a: F64 | None = None,
    only: B8 | None = None,
) -> F64:
    """Clamp unit rotations (..., C, 4) with ``w >= 0`` of the C cone bones of ``table``.

    The twist about the rest direction is clipped to its range (by a correcting twist, so a
    rotation within its limits comes back unchanged); a bone direction outside its cone moves
    onto the cone's rim towards where it points, with the clipped twist. ``correction`` (half
    the twist clipping makes) and ``cos_a`` (the cosine of the swing from the cone's centre),
    (..., C), are passed when the caller has them; ``only`` (C,) restricts the clamp to some
    bones.
    """
    if correction is None:
        half_twist = np.arctan2(np.einsum("...ci,ci->...c", q, table.r4), q[..., 3])
        correction = np.minimum(np.maximum(half_twist, table.lo_half), table.hi_half)
        correction -= half_twist
    if only is not None:
        correction = correction * only
    trig = np.sin(correction[..., None] + _SIN_COS)  # sin, cos of half the correction
    out = q * trig[..., 1:] + (table.twist_map @ q[..., None])[..., 0] * trig[..., :1]
    if cos_a is None:
        cos_a = (q[..., None, :] @ table.form @ q[..., None])[..., 0, 0]
    over = cos_a < table.cos_max
    if only is not None:
        over &= only
    if np.count_nonzero(over):
        # The twist after clipping, to apply after the swing is moved onto the rim.
        twist = 2.0 * (np.arctan2(np.einsum("...ci,ci->...c", q, table.r4), q[..., 3]) + correction)
        r, centre = table.r, table.centre
        d = quat.rotate(q, r)
        perp = d - quat.dot(d, centre)[..., None] * centre
        perp_len = quat.norm(perp)[..., None]
        toward = np.where(perp_len > 1e-9, perp / np.maximum(perp_len, 1e-300), table.alt)
        rim = table.cos_max[:, None] * centre + table.sin_max[:, None] * toward
        swing = quat.from_two_vectors(r, rim)
        clamped = quat.multiply(swing, quat.from_axis_angle(r, twist))
        out = np.where(over[..., None], clamped, out)
    if out.size and out[..., 3].min() < 0.0:
        out = quat.canonical(out)
    result: F64 = out
    return result


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
    out = q.copy()
    cone = kind == LIMIT_CONE
    if cone.any():
        table = _limit_table(rig)
        out[..., cone, :] = _clamp_cones(q[..., cone, :], table.subset(table.cone_pos[idx[cone]]))
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
    held_m: F64 | None  # (B, 3, 3) the same as matrices (made when first needed)
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
        local = core.clamp(res.local) if self.config.clamp else res.local
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
        ids = keypoints.ids.tolist()
        t = float(t)
        for p in range(keypoints.num_persons):
            pid = ids[p] if ids[p] >= 0 else -1 - p
            state = self._state.get(pid)
            if state is None:
                state = _PersonState(
                    held=quat.identity(b_count),
                    held_m=None,
                    last_valid_t=np.full(b_count, -np.inf),
                    last_seen_t=t,
                    rested=np.ones(b_count, bool),
                )
                self._state[pid] = state
            res = core.solve(
                xyz[p : p + 1], present[p : p + 1], partial(self._held, state, t), self._min_ref_sin
            )
            local = core.clamp(res.local) if self.config.clamp else res.local
            rot = local[0]
            if res.valid is core.all_ok.valid:
                # Every bone the layout evaluates is valid: the new rotations are the held ones
                # (the others stay at rest).
                state.held = rot
                valid = core.all_ok.valid[0].copy()
                state.last_valid_t.put(core.eval_idx, t)
                state.rested.put(core.eval_idx, False)
            else:
                valid = res.valid[0].copy()
                np.copyto(state.held, rot, where=valid[:, None])
                np.copyto(state.last_valid_t, t, where=valid)
                state.rested &= ~valid
            state.held_m = None
            state.last_seen_t = t
            out.append(
                BoneRotations(
                    bones=self.rig.bones,
                    rot=rot.astype(np.float32),
                    root_pos=self._root_position(plan, xyz[p], present[p]),
                    valid=valid,
                    t=t,
                    person_id=max(ids[p], -1),
                )
            )
        if self._state and keypoints.num_persons < len(self._state):
            timeout = self.config.person_timeout_s
            for k in [k for k, s in self._state.items() if t - s.last_seen_t > timeout]:
                del self._state[k]
        return out

    def _held(self, state: _PersonState, t: float) -> F64:
        """Held rotation matrices (1, B, 3, 3), eased towards rest after ``hold_s``."""
        cfg = self.config
        if state.held_m is None:
            state.held_m = quat.to_matrix(state.held)
        easing = ~state.rested & ((t - state.last_valid_t) > cfg.hold_s)
        if not easing.any():
            return state.held_m[None]
        elapsed = t - state.last_valid_t[easing] - cfg.hold_s
        frac = np.clip(elapsed / max(cfg.ease_s, 1e-6), 0.0, 1.0)
        out: F64 = state.held_m.copy()
        out[easing] = quat.to_matrix(quat.power(state.held[easing], 1.0 - frac))
        done = np.nonzero(easing)[0][frac >= 1.0]
        if done.size:
            state.held[done] = (0.0, 0.0, 0.0, 1.0)
            state.held_m[done] = np.eye(3)
            state.rested[done] = True
        return out[None]

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
