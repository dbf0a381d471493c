"""2D -> 3D lifting: image keypoints (pixels) -> world keypoints (metres) with bone-length priors.

Weak-perspective model: the body is far from the camera compared with its depth, so every point
projects with one scale ``s`` (pixels per metre). ``s`` comes from the torso (a projected segment
is never longer than ``s`` times its true length): the larger ratio of projected to known length
of the spine (hip centre to shoulder centre) and the shoulder line, so either leaning towards the
camera or turning sideways alone does not shrink the body (the hip line stands in when neither is
visible), smoothed over time (``scale_smoothing_s``) because the performer's distance changes
slowly while keypoint noise does not. Each segment of known length ``L`` whose projection is
``l = |d| / s`` long then has a depth offset ``dz = +-sqrt(L^2 - l^2)``.

The sign of each ``dz`` is the hard part. All sign patterns of the torso (lean, hip-line and
shoulder-line turns) and of each limb (upper and lower bone, and the foot) are built as candidate
skeletons and solved at once by the rig's bone solver; each candidate costs the degrees by which
its joints leave the rig's limits (an elbow bending backwards), plus a small preference for
joints near the centre of their swing cones, plus the depth change from the previous frame
(``temporal_weight``; near the image plane both signs give almost the same depth, so that term
holds the side a limb was on instead of flipping). Limbs are independent given the torso, so the
torso pattern minimising torso cost plus the best cost of every limb wins.

Rigid groups with four or more non-coplanar points (the face; a BlazePose hand) are lifted by a
weak-perspective rigid fit (their rotation is unique from one view). World keypoints pass through
unchanged (BlazePose world landmarks). Output axes are avatarlink's world frame
(:mod:`avatarlink.types`): metres, +X the camera's right, +Y up, +Z towards the camera, origin at
the hip centre.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink import quat
from avatarlink.errors import ConfigError, InputError
from avatarlink.rig import LIMIT_CONE, Rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.solver import (
    build_plan,
    dataclass_from_mapping,
    limit_violation_deg,
    plan_core,
)
from avatarlink.types import Keypoints, Space

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
B8 = npt.NDArray[np.bool_]

PELVIS, THORAX = "pelvis", "thorax"
# A twist reference within 3 degrees of its bone is unusable (as in the solver's default).
_MIN_REF_SIN = math.sin(math.radians(3.0))


@dataclass(frozen=True)
class LiftConfig:
    """Tuning of :class:`Lifter` (the ``lift`` section of the run configuration).

    Attributes:
        min_score: image keypoints scoring below this count as missing.
        limit_weight: cost per degree a candidate's joint lies outside the rig's limits.
        comfort_weight: cost per degree a bone lies from the centre of its swing cone.
        temporal_weight: cost per metre a segment's depth offset moves from the last one whose
            sign was readable (continuity).
        sign_memory_min_m: a depth offset at least this large is remembered for continuity;
            smaller ones (a segment near the image plane) keep the previous memory.
        scale_smoothing_s: time constant (s) of the exponential smoothing of the scale.
        focal_px: the camera's focal length in pixels, when known: depths then also correct the
            perspective (near points look bigger) in a second pass. None: weak perspective only.
        principal_point: (x, y) pixels of the optical axis for that correction (None: the hip
            centre, i.e. the performer roughly centred in the frame).
        person_timeout_s: forget a tracked person's previous depths after this long unseen.
    """

    min_score: float = 0.3
    limit_weight: float = 1.0
    comfort_weight: float = 0.02
    temporal_weight: float = 20.0
    sign_memory_min_m: float = 0.02
    scale_smoothing_s: float = 0.5
    focal_px: float | None = None
    principal_point: tuple[float, float] | None = None
    person_timeout_s: float = 2.0


def lift_config_from_mapping(
    data: Mapping[str, Any] | None, source: str, lines: Mapping[str, int], prefix: str = "lift"
) -> LiftConfig:
    """Validate the ``lift`` config section; errors name the dotted key, file and line."""
    cfg: LiftConfig = dataclass_from_mapping(LiftConfig, data, source, lines, prefix)
    if cfg.focal_px is not None and cfg.focal_px <= 0:
        line = lines.get(f"{prefix}.focal_px")
        where = f" ({source or 'config'} line {line})" if line else ""
        raise ConfigError(f"{prefix}.focal_px must be > 0 px, got {cfg.focal_px:g}{where}")
    return cfg


# ---------------------------------------------------------------------------------------------
# The lifting skeleton: segments of known length, each with a depth-sign bit
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A segment of the lifting tree: ``child = parent + v`` (a pair: ``child[0] = parent + v/2``,
    ``child[1] = parent - v/2``), ``|v|`` known; ``group`` is the sign group it belongs to."""

    name: str
    parent: str
    child: tuple[str, ...]
    group: str
    scale_ref: bool  # estimates the pixels-per-metre scale (torso, shoulder and hip lines)


def _segments(layout: KeypointLayout) -> tuple[Segment, ...]:
    names = set(layout.names)
    segs = [
        Segment("torso", THORAX, (PELVIS,), "torso", True),
        Segment("hips", PELVIS, ("left_hip", "right_hip"), "torso", True),
        Segment("shoulders", THORAX, ("left_shoulder", "right_shoulder"), "torso", True),
    ]
    for side in ("left", "right"):
        segs += [
            Segment(
                f"{side}_upper_arm", f"{side}_shoulder", (f"{side}_elbow",), f"{side}_arm", False
            ),
            Segment(f"{side}_forearm", f"{side}_elbow", (f"{side}_wrist",), f"{side}_arm", False),
            Segment(f"{side}_thigh", f"{side}_hip", (f"{side}_knee",), f"{side}_leg", False),
            Segment(f"{side}_shin", f"{side}_knee", (f"{side}_ankle",), f"{side}_leg", False),
        ]
        if f"{side}_foot_index" in names:
            segs += [
                Segment(f"{side}_toe", f"{side}_ankle", (f"{side}_foot_index",), f"{side}_leg",
                        False),
                Segment(f"{side}_heel", f"{side}_ankle", (f"{side}_heel",), f"{side}_leg", False),
            ]  # fmt: skip
    return tuple(segs)


def _rigid_groups(layout: KeypointLayout) -> tuple[tuple[str, str | None, tuple[str, ...]], ...]:
    """(name, anchor keypoint or None, members): rigid point sets lifted by a rigid fit."""
    names = layout.names
    face = tuple(
        n for n in names
        if n == "nose" or n.startswith(("left_eye", "right_eye", "left_ear", "right_ear", "mouth"))
    )  # fmt: skip
    groups: list[tuple[str, str | None, tuple[str, ...]]] = [("head", None, face)]
    for side in ("left", "right"):
        hand = tuple(f"{side}_{p}" for p in ("wrist", "pinky", "index", "thumb"))
        if all(h in names for h in hand):
            groups.append((f"{side}_hand", f"{side}_wrist", hand))
    return tuple(groups)


def _bone_group(bone: str) -> str:
    """The lifting sign group whose choice moves a humanoid bone."""
    for side, prefix in (("left", "Left"), ("right", "Right")):
        if bone.startswith(prefix):
            rest = bone[len(prefix) :]
            if rest.startswith(("UpperArm", "LowerArm", "Hand", "Thumb", "Index", "Middle",
                                "Ring", "Little")):  # fmt: skip
                return f"{side}_arm"
            if rest.startswith(("UpperLeg", "LowerLeg", "Foot", "Toes")):
                return f"{side}_leg"
    return "torso"


def segment_lengths(rig: Rig, layout: KeypointLayout) -> dict[str, float]:
    """Rest lengths (metres) of the lifting segments and rigid groups' reference distances from
    the rig's proportions: ``{"torso": 0.51, "left_upper_arm": 0.27, ...}``."""
    out: dict[str, float] = {}
    for seg in _segments(layout):
        a = _rest_node(rig, seg.parent)
        if len(seg.child) == 2:
            v = _rest_node(rig, seg.child[0]) - _rest_node(rig, seg.child[1])
        else:
            v = _rest_node(rig, seg.child[0]) - a
        out[seg.name] = float(np.linalg.norm(v))
    head = [n for n in _rigid_groups(layout)[0][2] if n in rig.sites]
    if head:
        centre = np.mean([rig.rest_point(n) for n in head], axis=0)
        out["neck"] = float(np.linalg.norm(centre - _rest_node(rig, THORAX)))
    return out


def _rest_node(rig: Rig, name: str) -> F64:
    if name == PELVIS:
        return rig.rest_point("mid(left_hip, right_hip)")
    if name == THORAX:
        return rig.rest_point("mid(left_shoulder, right_shoulder)")
    return rig.rest_point(name)


# ---------------------------------------------------------------------------------------------
# The lifter
# ---------------------------------------------------------------------------------------------


@dataclass
class _Track:
    # segment -> last confidently signed depth offset (m); kept while a segment is near the
    # image plane, where its sign cannot be read
    dz: dict[str, float] = field(default_factory=dict)
    scale: float = 0.0  # pixels per metre
    t: float = -math.inf


class Lifter:
    """Image keypoints -> world keypoints for a rig (see the module docstring).

    Args:
        rig: the rig whose proportions (or ``lengths``) and joint limits guide the lifting.
        config: :class:`LiftConfig`.
        lengths: segment lengths in metres overriding the rig's (from a calibration profile),
            keyed like :func:`segment_lengths`.
    """

    def __init__(
        self, rig: Rig, config: LiftConfig | None = None, lengths: Mapping[str, float] | None = None
    ) -> None:
        self.rig = rig
        self.config = config or LiftConfig()
        self._lengths_override = dict(lengths or {})
        self._layouts: dict[KeypointLayout, _LayoutLift] = {}
        self._tracks: dict[int, _Track] = {}

    def reset(self) -> None:
        """Forget previous depths and scales."""
        self._tracks.clear()

    def _layout(self, layout: KeypointLayout) -> _LayoutLift:
        lay = self._layouts.get(layout)
        if lay is None:
            if layout not in self.rig.layouts:
                raise InputError(
                    f"rig {self.rig.name!r} does not support keypoint layout {layout.value!r}"
                )
            lengths = segment_lengths(self.rig, layout)
            for k, v in self._lengths_override.items():
                if k in lengths and v > 0:
                    lengths[k] = float(v)
            lay = _LayoutLift(self.rig, layout, lengths, self.config)
            self._layouts[layout] = lay
        return lay

    def lift(self, keypoints: Keypoints, t: float | None = None) -> Keypoints:
        """World keypoints (metres, hip-centred) for every person; world input passes through.

        Args:
            keypoints: image keypoints (pixels) or world keypoints.
            t: capture time in seconds (enables temporal continuity and the running scale).
        """
        if keypoints.space is Space.WORLD:
            return keypoints
        lay = self._layout(keypoints.layout)
        p_count, k_count = keypoints.num_persons, keypoints.layout.num_keypoints
        out = np.full((p_count, k_count, 3), np.nan, np.float32)
        score = keypoints.score.copy()
        for p in range(p_count):
            pid = int(keypoints.ids[p]) if keypoints.ids[p] >= 0 else -1 - p
            track = self._tracks.setdefault(pid, _Track())
            if t is None or t - track.t > self.config.person_timeout_s:
                track.dz.clear()
                track.scale = 0.0
            xyz, present = lay.lift_one(
                np.asarray(keypoints.xyz[p, :, :2], np.float64),
                np.asarray(keypoints.score[p]) >= self.config.min_score,
                track,
                0.0 if t is None or not math.isfinite(track.t) else max(t - track.t, 0.0),
            )
            track.t = t if t is not None else -math.inf
            out[p] = xyz
            score[p] = np.where(present, score[p], 0.0)
        if t is not None:
            for k in [
                k for k, tr in self._tracks.items() if t - tr.t > self.config.person_timeout_s
            ]:
                del self._tracks[k]
        return Keypoints(out, score, keypoints.layout, Space.WORLD, keypoints.person_score,
                         keypoints.ids)  # fmt: skip


class _LayoutLift:
    """Everything about lifting one layout for one rig that does not change per frame."""

    def __init__(
        self, rig: Rig, layout: KeypointLayout, lengths: dict[str, float], config: LiftConfig
    ) -> None:
        self.rig, self.layout, self.config = rig, layout, config
        self.lengths = lengths
        self.segments = _segments(layout)
        self.names = layout.names
        self.index = {n: i for i, n in enumerate(self.names)}
        self.groups = sorted({s.group for s in self.segments})
        self.plan = build_plan(rig, layout)
        self.core = plan_core(self.plan)
        # Candidate sign patterns: every torso pattern x every limb pattern (limbs share the
        # pattern index; each limb later keeps its own best).
        torso = [i for i, s in enumerate(self.segments) if s.group == "torso"]
        limb_bits: dict[str, list[int]] = {}
        for i, s in enumerate(self.segments):
            if s.group != "torso":
                limb_bits.setdefault(s.group, []).append(i)
        n_torso = 2 ** len(torso)
        n_limb = 2 ** max((len(v) for v in limb_bits.values()), default=0)
        signs = np.ones((n_torso, n_limb, len(self.segments)))
        for a in range(n_torso):
            for j, i in enumerate(torso):
                signs[a, :, i] = 1.0 if (a >> j) & 1 == 0 else -1.0
        for bits in limb_bits.values():
            for c in range(n_limb):
                for j, i in enumerate(bits):
                    signs[:, c, i] = 1.0 if (c >> j) & 1 == 0 else -1.0
        self.signs = signs
        self.n_torso, self.n_limb = n_torso, n_limb
        # Cost bookkeeping: which bones belong to which group; cone data for the comfort term.
        self.bone_group = np.array([self.groups.index(_bone_group(b)) if _bone_group(b) in
                                    self.groups else 0 for b in rig.bones])  # fmt: skip
        self.evaluated = self.plan.evaluated
        lim = rig.limits
        self.cone = lim.kind == LIMIT_CONE
        # Rigid models (face, hands) take the performer's size relative to the rig.
        rig_lengths = segment_lengths(rig, layout)
        size = float(np.mean([lengths[k] / rig_lengths[k] for k in ("torso", "shoulders")]))
        self.size = size
        self.rigid = []
        for name, anchor, members in _rigid_groups(layout):
            usable = tuple(m for m in members if m in rig.sites)
            if len(usable) >= 4:
                model = size * np.array([rig.rest_point(m) for m in usable])
                self.rigid.append((name, anchor, usable, model))

    # -- one person ---------------------------------------------------------------------------

    def lift_one(
        self, uv: F64, present: B8, track: _Track, dt: float
    ) -> tuple[npt.NDArray[np.float32], B8]:
        """Lift one person: uv (K, 2) pixels -> (world (K, 3) float32, present (K,))."""
        # Image -> a plane with x right, y up (still pixels).
        pix: dict[str, F64] = {}
        for n, i in self.index.items():
            if present[i] and np.all(np.isfinite(uv[i])):
                pix[n] = np.array([uv[i, 0], -uv[i, 1]])
        _add_centres(pix)
        if THORAX not in pix and PELVIS not in pix:
            return np.full((len(self.names), 3), np.nan, np.float32), np.zeros(
                len(self.names), bool
            )
        scale = self._scale(pix, track.scale, dt)
        xyz, signed, choice = self._pass(pix, scale, track)
        focal = self.config.focal_px
        if focal:
            # Perspective: a point z nearer than the hips looks D / (D - z) bigger (D = focal /
            # scale, the camera distance). Shrink each point's image offset from the principal
            # point accordingly and lift again.
            distance = focal / scale
            centre = self._principal_point(pix)
            corrected: dict[str, F64] = {}
            for n, i in self.index.items():
                if n in pix and np.isfinite(xyz[i, 2]):
                    factor = max(distance - xyz[i, 2], 0.25 * distance) / distance
                    corrected[n] = centre + (pix[n] - centre) * factor
            _add_centres(corrected)
            if THORAX in corrected or PELVIS in corrected:
                scale = self._scale(corrected, 0.0, 0.0)
                xyz, signed, _ = self._pass(corrected, scale, track, choice)
        track.scale = scale
        for name, value in signed.items():
            if abs(value) >= self.config.sign_memory_min_m:
                track.dz[name] = value
        ok = np.asarray(np.isfinite(xyz).all(axis=1), bool)
        return xyz.astype(np.float32), ok

    def _principal_point(self, pix: dict[str, F64]) -> F64:
        pp = self.config.principal_point
        if pp is not None:
            return np.array([pp[0], -pp[1]])
        return pix[PELVIS] if PELVIS in pix else pix[THORAX]

    def _pass(
        self,
        pix: dict[str, F64],
        scale: float,
        track: _Track,
        fixed: tuple[int, npt.NDArray[np.int64]] | None = None,
    ) -> tuple[F64, dict[str, float], tuple[int, npt.NDArray[np.int64]]]:
        """Build every sign candidate and pick the best (or the ``fixed`` choice); returns
        (world (K, 3) with the origin at the hip centre, chosen signed depth offset of every
        segment, choice)."""
        idx = self.index
        # Projected segment vectors in metres and their depth magnitudes.
        seg_xy = np.zeros((len(self.segments), 2))
        seg_dz = np.zeros(len(self.segments))
        seg_ok = np.zeros(len(self.segments), bool)
        for i, s in enumerate(self.segments):
            # child - parent, or for a pair first child - second child
            ends = (s.child[0], s.child[1]) if len(s.child) == 2 else (s.child[0], s.parent)
            if not all(e in pix for e in ends) or s.parent not in pix:
                continue
            v = (pix[ends[0]] - pix[ends[1]]) / scale
            seg_xy[i] = v
            length = self.lengths[s.name]
            seg_dz[i] = math.sqrt(max(length * length - float(v @ v), 0.0))
            seg_ok[i] = True
        # Depth of every node for every candidate: walk the tree from the thorax.
        root = THORAX if THORAX in pix else PELVIS
        z = {root: np.zeros(self.signs.shape[:2])}
        xy = {root: np.zeros(2)}
        for i, s in enumerate(self.segments):
            if not seg_ok[i] or s.parent not in z:
                continue
            dz = self.signs[:, :, i] * seg_dz[i]
            if len(s.child) == 2:
                z[s.child[0]] = z[s.parent] + 0.5 * dz
                z[s.child[1]] = z[s.parent] - 0.5 * dz
                xy[s.child[0]] = xy[s.parent] + 0.5 * seg_xy[i]
                xy[s.child[1]] = xy[s.parent] - 0.5 * seg_xy[i]
            else:
                z[s.child[0]] = z[s.parent] + dz
                xy[s.child[0]] = xy[s.parent] + seg_xy[i]
        cands = np.full((*self.signs.shape[:2], len(self.names), 3), np.nan)
        for n, zz in z.items():
            if n in idx:
                cands[..., idx[n], 0], cands[..., idx[n], 1] = xy[n]
                cands[..., idx[n], 2] = zz
        self._lift_rigid(pix, scale, root, cands, idx)
        t_best, node_choice = (
            fixed if fixed is not None else self._choose(cands, track, seg_dz, seg_ok, idx)
        )
        xyz = cands[t_best, node_choice, np.arange(len(self.names))]
        # Origin at the hip centre (or where the rig puts it below the thorax).
        if PELVIS in z:
            origin = np.array([*xy[PELVIS], z[PELVIS][t_best, 0]])
        else:
            origin = np.array([0.0, -self.lengths["torso"], 0.0])
        signed: dict[str, float] = {}
        for i, s in enumerate(self.segments):
            if seg_ok[i]:
                pattern = 0 if s.group == "torso" else node_choice[idx[s.child[0]]]
                signed[s.name] = float(self.signs[t_best, pattern, i] * seg_dz[i])
        return xyz - origin, signed, (t_best, node_choice)

    def _scale(self, pix: dict[str, F64], previous: float, dt: float) -> float:
        """Pixels per metre: the larger projected/true length ratio of the spine and the
        shoulder line (the hip line when neither is seen), smoothed with the previous estimate
        over ``scale_smoothing_s``."""
        ratios: dict[str, float] = {}
        for s in self.segments:
            if not s.scale_ref:
                continue
            ends = (s.child[0], s.child[1]) if len(s.child) == 2 else (s.child[0], s.parent)
            if all(e in pix for e in ends):
                length = float(np.linalg.norm(pix[ends[0]] - pix[ends[1]]))
                ratios[s.name] = length / self.lengths[s.name]
        main = [v for k, v in ratios.items() if k != "hips"]
        frame = max(main) if main else ratios.get("hips", 0.0)
        if previous > 0 and dt > 0 and frame > 0:
            keep = math.exp(-dt / max(self.config.scale_smoothing_s, 1e-6))
            frame = math.exp(keep * math.log(previous) + (1.0 - keep) * math.log(frame))
        elif frame <= 0:
            frame = previous
        return frame if frame > 0 else 1.0

    def _lift_rigid(
        self, pix: dict[str, F64], scale: float, root: str, cands: F64, idx: dict[str, int]
    ) -> None:
        """Rigid groups (face, hands): rotation from a weak-perspective fit, depths from it."""
        for _name, anchor, members, model in self.rigid:
            have = [i for i, m in enumerate(members) if m in pix]
            if len(have) < 4:
                continue
            obs = np.array([pix[members[i]] for i in have]) / scale
            mdl = model[have]
            rot = _weak_perspective_rotation(mdl, obs)
            if rot is None:
                continue
            rel = (mdl - mdl.mean(axis=0)) @ rot.T  # rotated model, centred
            if anchor is None:
                # Float the group: its centroid's depth from the thorax by the neck length,
                # on the side the fitted rotation predicts.
                if root != THORAX or "neck" not in self.lengths:
                    continue
                centre_xy = obs.mean(axis=0) - pix[THORAX] / scale
                rest_offset = mdl.mean(axis=0) - self.size * _rest_node(self.rig, THORAX)
                predicted = (rot @ rest_offset)[2]
                dz = math.sqrt(max(self.lengths["neck"] ** 2 - float(centre_xy @ centre_xy), 0.0))
                base = math.copysign(dz, predicted)
                for j, i in enumerate(have):
                    k = idx[members[i]]
                    cands[..., k, :2] = obs[j] - pix[THORAX] / scale
                    cands[..., k, 2] = base + rel[j, 2]
            else:
                if anchor not in idx or members.index(anchor) not in have:
                    continue
                a = have.index(members.index(anchor))
                za = cands[..., idx[anchor], 2]
                for j, i in enumerate(have):
                    if members[i] == anchor:
                        continue
                    k = idx[members[i]]
                    cands[..., k, :2] = cands[..., idx[anchor], :2] + (obs[j] - obs[a])
                    cands[..., k, 2] = za + rel[j, 2] - rel[a, 2]

    def _choose(
        self, cands: F64, track: _Track, seg_dz: F64, seg_ok: B8, idx: dict[str, int]
    ) -> tuple[int, npt.NDArray[np.int64]]:
        """The torso pattern of least cost, and for each keypoint the limb pattern its limb
        chose (each limb keeps its own best given that torso)."""
        n_t, n_l = self.signs.shape[:2]
        flat = cands.reshape(n_t * n_l, *cands.shape[2:])
        present = np.isfinite(flat).all(axis=-1)
        res = self.core.solve(flat, present, None, _MIN_REF_SIN, clip_hinges=False)
        local = res.local
        cost = self.config.limit_weight * limit_violation_deg(self.rig, local)
        if self.config.comfort_weight > 0 and self.cone.any():
            r = self.rig.rest_directions[self.cone]
            d = quat.rotate(local[:, self.cone], r)
            centre = self.rig.limits.swing_centre[self.cone]
            comfort = np.degrees(np.arccos(np.clip(quat.dot(d, centre), -1.0, 1.0)))
            cost[:, self.cone] += self.config.comfort_weight * comfort
        cost = np.where(res.valid & self.evaluated, cost, 0.0).reshape(n_t, n_l, -1)
        group_cost = np.zeros((n_t, n_l, len(self.groups)))
        for g in range(len(self.groups)):  # sum the bone costs of each group
            group_cost[..., g] = cost[..., self.bone_group == g].sum(axis=-1)
        if track.dz and self.config.temporal_weight > 0:
            # Continuity: how far each segment's depth offset moves from the last one whose
            # sign could be read.
            for i, s in enumerate(self.segments):
                prev = track.dz.get(s.name)
                if prev is None or not seg_ok[i]:
                    continue
                gi = self.groups.index(s.group)
                change = np.abs(self.signs[:, :, i] * seg_dz[i] - prev)
                group_cost[..., gi] += self.config.temporal_weight * change
        torso_i = self.groups.index("torso")
        limbs = [i for i in range(len(self.groups)) if i != torso_i]
        limb_best = group_cost[..., limbs].min(axis=1)  # (n_t, limbs)
        total = group_cost[:, 0, torso_i] + limb_best.sum(axis=1)
        t_best = int(np.argmin(total))
        choice = np.argmin(group_cost[t_best][:, limbs], axis=0)  # per limb
        node_choice = np.zeros(len(self.names), np.int64)
        for li, gi in enumerate(limbs):
            for n in self._group_nodes(self.groups[gi]):
                if n in idx:
                    node_choice[idx[n]] = choice[li]
        return t_best, node_choice

    def _node_group(self, node: str) -> str:
        for s in self.segments:
            if node in s.child:
                return s.group
        return "torso"

    def _group_nodes(self, group: str) -> list[str]:
        nodes = [c for s in self.segments if s.group == group for c in s.child]
        for _name, anchor, members, _ in self.rigid:
            if anchor is not None and anchor in nodes:
                nodes += [m for m in members if m != anchor]
        return nodes


def _add_centres(pix: dict[str, F64]) -> None:
    """Add the hip centre (pelvis) and shoulder centre (thorax) where both sides are present."""
    for node, (a, b) in ((PELVIS, ("left_hip", "right_hip")),
                         (THORAX, ("left_shoulder", "right_shoulder"))):  # fmt: skip
        if a in pix and b in pix:
            pix[node] = (pix[a] + pix[b]) / 2


def _weak_perspective_rotation(model: F64, obs: F64) -> F64 | None:
    """Rotation (3, 3) whose first two rows best map centred ``model`` (n, 3) onto centred
    ``obs`` (n, 2) (orthographic projection, unit scale); None when the model points are
    (nearly) coplanar and the rotation is not unique."""
    m = model - model.mean(axis=0)
    q = obs - obs.mean(axis=0)
    gram = m.T @ m
    if np.linalg.cond(gram) > 1e4:
        return None
    a = np.linalg.solve(gram, m.T @ q).T  # (2, 3): q ~ a @ m
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    rows = u @ vt  # nearest matrix with orthonormal rows
    third = np.cross(rows[0], rows[1])
    rot: F64 = np.stack([rows[0], rows[1], third])
    return rot
