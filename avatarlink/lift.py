"""2D -> 3D lifting: image keypoints (pixels) -> world keypoints (metres) with bone-length priors.

Scale: pixels per metre at the hips' depth come from the torso (a projected segment is never
longer than its true length): the larger ratio of projected to known length of the spine (hip
centre to shoulder centre) and the shoulder line (the hip line when neither is visible), each
ratio smoothed over ``scale_smoothing_s`` before the larger is taken.

Depth of a segment: with the camera unknown (weak perspective) a segment of length ``L``
projected ``l`` long has a depth offset ``dz = +-sqrt(L^2 - l^2)``. With a focal length
(``focal_px``, or ``fov_deg`` and the frame size) the projection is measured at the depth of the
segment's parent (from the last frame) and the far end lies on its own camera ray: ``|segment| =
L`` is a quadratic in ``dz`` whose two roots are the candidates. They are not symmetric: a thigh
hanging below the camera's axis has roots 0 and +13 cm (a small ``depth_weight`` prefers the one
nearer the image plane). ``L^2`` loses a noise allowance (``depth_margin``), so a segment seen
about as long as ``L`` lies in the image plane instead of tilting by keypoint noise, and every
limb segment's ``L`` relaxes towards the longest it is seen (``length_adapt_s``): the
performer's and the pose model's proportions are not the rig's.

The sign of each ``dz`` is the hard part. The torso has three sign bits (lean, hip-line turn,
shoulder-line turn: 8 patterns) and every limb two (upper and lower bone: 4 patterns). For every
torso pattern the torso frames (the rig's Hips and upper chest, built from the spine and the hip
and shoulder lines as the bone solver builds them) are formed at once, and every limb pattern is
scored in closed form against the rig's joint limits in that frame: the degrees by which the
upper bone's swing leaves its cone, by which the twist its bend plane implies leaves the twist
range (an elbow or knee bending backwards needs a half turn of twist), by which the bend exceeds
the hinge range, a small preference for swings near the centre of the cone (``comfort_weight``),
the depth prior, and the change of each segment's depth offset from the last one whose sign was
readable (``temporal_weight``: near the image plane both signs give almost the same depth, so
that term holds the side a limb was on instead of flipping). The torso's own cost: continuity,
the spine's twist (beyond the rig's ranges, and a little per degree) and the face's turn from
the chest (``head_weight``; the face's rotation is unique from one view). The torso pattern that
minimises its cost plus the best cost of every limb wins; each limb keeps its best pattern for
that torso. Everything is one fixed sequence of numpy operations over patterns x limbs; nothing
loops over bones per frame. BlazePose feet (ankle -> toe, ankle -> heel) are decided after the
legs, by the toe's swing from the shin and the rigid foot's shape. Limbs bent less than
``straight_deg`` come out straight (their bend plane is keypoint noise). A leg whose thigh and
shin are in line in the image gets a larger noise allowance (``in_line_margin``, fading out by
``in_line_full_deg`` of tilt): a model reading a straight leg's thigh a little short must not bend
the knee towards the camera.

Rigid groups with four or more non-coplanar points (the face; a BlazePose hand) are lifted by a
weak-perspective affine fit: the normal of the fitted image plane gives each point's depth. World
keypoints pass through unchanged (BlazePose world landmarks).

Keypoint conventions: COCO-17 models (MoveNet, PoseNet) learn COCO's annotations, which mark the
hips well above the hip joints' centres that the rig's skeleton uses (and the other joints a
little off theirs). :data:`COCO_OFFSETS` describes these offsets along the segments; the lifter's
bone lengths and scale use the annotated points, and the lifted keypoints are moved back onto the
joint centres, so the solver sees the rig's skeleton. ``LiftConfig.coco_offsets`` switches them
off for keypoints that are already joint centres (the synthetic performer's ground truth).

Output axes are avatarlink's world frame (:mod:`avatarlink.types`): metres, +X the camera's right,
+Y up, +Z towards the camera, origin at the hip centre.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ConfigError, InputError
from avatarlink.rig import LIMIT_CONE, LIMIT_HINGE, Rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.solver import dataclass_from_mapping
from avatarlink.types import Keypoints, Space

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]

PELVIS, THORAX = "pelvis", "thorax"
# A twist reference within 3 degrees of its bone is unusable (as in the solver's default): a
# straight limb tells nothing about its twist.
_MIN_REF_SIN = math.sin(math.radians(3.0))
# The twist a bend plane implies counts from the first bend (sine) on, in full from the second: a
# nearly straight limb's bend plane is at the mercy of a few centimetres of keypoint error.
_TWIST_FROM_SIN = math.sin(math.radians(10.0))
_TWIST_FULL_SIN = math.sin(math.radians(40.0))
# Torso segments whose depth offsets are all below this (metres) leave every torso pattern alike.
_TORSO_FLAT_M = 0.01
# Rigid fits whose model points are this close to coplanar (condition number of their scatter)
# cannot give a rotation.
_RIGID_MAX_COND = 1e4
# Below this, a vector has no direction.
_EPS = 1e-12
# Image y points down, the lifter's plane y up.
_FLIP_Y = np.array([1.0, -1.0])
# Cross products on the last axis: a x b = (a[.., I] * b[.., J])[..., :3] - (...)[..., 3:].
_CROSS_I = np.array([1, 2, 0, 2, 0, 1])
_CROSS_J = np.array([2, 0, 1, 1, 2, 0])


def _cross(a: F64, b: F64) -> F64:
    """Cross product over the last axis (cheaper than ``np.cross`` on small batches)."""
    p = np.take(a, _CROSS_I, axis=-1) * np.take(b, _CROSS_J, axis=-1)
    out: F64 = p[..., :3] - p[..., 3:]
    return out


def _einsum_dot(a: F64, b: F64) -> F64:
    out: F64 = np.einsum("...i,...i->...", a, b)
    return out


# Dot products over the last axis (``np.vecdot`` where numpy has it: the cheapest on small arrays).
_dot: Callable[[F64, F64], F64] = getattr(np, "vecdot", _einsum_dot)


@dataclass(frozen=True)
class KeypointOffsets:
    """Where a layout's annotated keypoints sit relative to the rig's joint centres, in metres
    for the rig's size (scaled with the performer's), each along a lifting segment.

    Attributes:
        hip_up_m: hips above the hip joints, along the spine (towards the shoulders).
        shoulder_up_m: shoulders above the shoulder joints, along the spine.
        knee_up_m: knees from the knee joints towards the hips, along the thigh.
        elbow_in_m: elbows from the elbow joints towards the shoulders, along the upper arm.
        wrist_in_m: wrists from the wrist joints towards the elbows, along the forearm.
    """

    hip_up_m: float = 0.0
    shoulder_up_m: float = 0.0
    knee_up_m: float = 0.0
    elbow_in_m: float = 0.0
    wrist_in_m: float = 0.0


#: COCO-17 annotations relative to the rig's joint centres: COCO marks the hip near the top of
#: the thigh, well above the hip joint's centre. Measured with MoveNet Lightning on the synthetic
#: performer (median offset along each segment over the 45 s script, 1350 frames, at 174 px/m):
#: hips 12 px (7 cm) up, shoulders 4 px, knees 7.5 px, elbows 9 px, wrists 6 px.
COCO_OFFSETS = KeypointOffsets(
    hip_up_m=0.07, shoulder_up_m=0.022, knee_up_m=0.043, elbow_in_m=0.052, wrist_in_m=0.035
)


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
        focal_px: the camera's focal length in pixels, when known: depths then follow the
            perspective (near points look bigger; every point on its own camera ray). None: from
            ``fov_deg`` and the frame width when the frame size is known, else weak perspective.
        fov_deg: the camera's horizontal field of view in degrees, used when ``focal_px`` is
            None and the frame size is known (``focal = width / 2 / tan(fov / 2)``). Webcams see
            about 55-80 degrees; 60 errs towards too little perspective correction, the safer
            side. None: weak perspective unless ``focal_px`` is given.
        principal_point: (x, y) pixels of the optical axis (None: the frame centre when the
            frame size is known, else the hip centre).
        coco_offsets: COCO-17 keypoints follow COCO's annotations (:data:`COCO_OFFSETS`); false
            when they are the rig's joint centres (the synthetic performer's ground truth).
        head_weight: cost per degree the face (its rotation is read from the face keypoints)
            turns away from the chest: people mostly face where their chest faces, which tells
            which way the shoulders turn.
        depth_weight: cost per metre of a segment's depth offset. Under perspective the two
            depths a segment may have are not symmetric (a thigh hanging below the camera's
            axis: 0 or 13 cm towards the camera); this prefers the one nearer the image plane.
        depth_margin: keypoint noise allowance, as a fraction ``m`` of each segment's length:
            depth offsets are ``sqrt(L^2 (1 - m^2) - l^2)`` (weak perspective), so a segment
            seen within about ``m^2 / 2`` (4.5 % for 0.3) of its full length lies in the image
            plane instead of tilting by keypoint noise (a projection 4.5 % short is 17 degrees
            of tilt); larger tilts lose less (45 degrees reads 40). 0 for exact keypoints.
        length_adapt_s: time constant (s) over which each limb segment's assumed length relaxes
            towards ``length_floor`` times the rig's unless it is seen longer: the performer's
            (and the pose model's) proportions differ from the rig's, and a segment seen at its
            full length is in the image plane. 0 keeps the rig's (or the calibrated) lengths.
        length_floor: the shortest a segment's assumed length may become, as a fraction of the
            rig's (or the calibrated) length.
        in_line_deg: a leg whose thigh and shin projections are within this angle (degrees) of
            one line counts as in line (for ``in_line_margin``).
        in_line_margin: the noise allowance ``m`` (as ``depth_margin``) of the thigh and shin
            of a leg in line in the image, which is most often straight: a pose model reading a
            straight thigh 10-15 % short (MoveNet's hips when its crop changes) would otherwise
            bend the knee towards the camera for as long as ``length_adapt_s`` takes to follow.
            0 (or no more than ``depth_margin``) turns it off; 0 for exact keypoints. Arms keep
            ``depth_margin`` (there it costs more than it gains).
        in_line_full_deg: the tilt (degrees, at the segment's full length) from which an in-line
            segment loses nothing to ``in_line_margin``: in between its depth ramps up, so a thigh
            really raised towards the camera (a squat, a step) keeps most of its depth.
        straight_deg: a limb bent less than this (degrees) comes out straight: the bend plane
            of a nearly straight limb is keypoint noise, and the bone solver would twist the
            upper bone by it.
        person_timeout_s: forget a tracked person's previous depths after this long unseen.
    """

    min_score: float = 0.3
    limit_weight: float = 1.0
    comfort_weight: float = 0.02
    temporal_weight: float = 10.0
    sign_memory_min_m: float = 0.02
    scale_smoothing_s: float = 0.5
    focal_px: float | None = None
    fov_deg: float | None = 60.0
    principal_point: tuple[float, float] | None = None
    coco_offsets: bool = True
    head_weight: float = 0.05
    depth_weight: float = 20.0
    depth_margin: float = 0.3
    length_adapt_s: float = 2.0
    length_floor: float = 0.85
    in_line_deg: float = 5.0
    in_line_margin: float = 0.5
    in_line_full_deg: float = 40.0
    straight_deg: float = 15.0
    person_timeout_s: float = 2.0


def lift_config_from_mapping(
    data: Mapping[str, Any] | None, source: str, lines: Mapping[str, int], prefix: str = "lift"
) -> LiftConfig:
    """Validate the ``lift`` config section; errors name the dotted key, file and line."""
    cfg: LiftConfig = dataclass_from_mapping(LiftConfig, data, source, lines, prefix)

    def where(key: str) -> str:
        line = lines.get(f"{prefix}.{key}")
        return f" ({source or 'config'} line {line})" if line else ""

    if cfg.focal_px is not None and cfg.focal_px <= 0:
        raise ConfigError(
            f"{prefix}.focal_px must be > 0 px, got {cfg.focal_px:g}{where('focal_px')}"
        )
    if cfg.fov_deg is not None and not 1.0 <= cfg.fov_deg <= 170.0:
        raise ConfigError(
            f"{prefix}.fov_deg must be 1..170 degrees, got {cfg.fov_deg:g}{where('fov_deg')}"
        )
    if cfg.depth_margin >= 1.0:
        raise ConfigError(
            f"{prefix}.depth_margin must be < 1 (a fraction of the segment length), got "
            f"{cfg.depth_margin:g}{where('depth_margin')}"
        )
    if cfg.in_line_margin > 0.0 and cfg.in_line_margin >= math.sin(
        math.radians(cfg.in_line_full_deg)
    ):
        raise ConfigError(
            f"{prefix}.in_line_margin must be < sin(in_line_full_deg) "
            f"({math.sin(math.radians(cfg.in_line_full_deg)):.3g}), got "
            f"{cfg.in_line_margin:g}{where('in_line_margin')}"
        )
    if not 0.0 < cfg.length_floor <= 1.0:
        raise ConfigError(
            f"{prefix}.length_floor must be in (0, 1] (a fraction of the segment length), got "
            f"{cfg.length_floor:g}{where('length_floor')}"
        )
    if cfg.scale_smoothing_s <= 0:
        raise ConfigError(
            f"{prefix}.scale_smoothing_s must be > 0 s, got {cfg.scale_smoothing_s:g}"
            f"{where('scale_smoothing_s')}"
        )
    return cfg


def focal_from_fov(width_px: float, fov_deg: float) -> float:
    """Focal length in pixels of a camera ``width_px`` wide with horizontal FOV ``fov_deg``."""
    return 0.5 * width_px / math.tan(math.radians(fov_deg) / 2.0)


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
    """Torso (3), then per limb upper and lower bone (arms, then legs), then feet."""
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
        ]
    for side in ("left", "right"):
        segs += [
            Segment(f"{side}_thigh", f"{side}_hip", (f"{side}_knee",), f"{side}_leg", False),
            Segment(f"{side}_shin", f"{side}_knee", (f"{side}_ankle",), f"{side}_leg", False),
        ]
    for side in ("left", "right"):
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


def keypoint_offsets(layout: KeypointLayout, config: LiftConfig) -> KeypointOffsets:
    """The annotation offsets a lifter with ``config`` assumes for ``layout`` (zero unless
    COCO-17 with ``config.coco_offsets``)."""
    if layout is KeypointLayout.COCO17 and config.coco_offsets:
        return COCO_OFFSETS
    return KeypointOffsets()


def segment_lengths(
    rig: Rig, layout: KeypointLayout, config: LiftConfig | None = None
) -> dict[str, float]:
    """Rest lengths (metres) of the lifting segments and the neck (thorax to the face's centre)
    from the rig's proportions: ``{"torso": 0.51, "left_upper_arm": 0.27, ...}``.

    Without ``config``: between the rig's joints. With a lifter's ``config``: between the points
    its layout marks (:func:`keypoint_offsets`; for COCO-17 the torso is then 0.46 m), with the
    limbs hanging (the offsets along the spine then lie along the thighs and upper arms).
    """
    off = keypoint_offsets(layout, config) if config is not None else KeypointOffsets()

    def node(name: str) -> F64:
        if name == PELVIS:
            return rig.rest_point("mid(left_hip, right_hip)")
        if name == THORAX:
            return rig.rest_point("mid(left_shoulder, right_shoulder)")
        return rig.rest_point(name)

    # length change of each segment: its parent end moving away, its child end moving closer
    change = {
        "torso": off.shoulder_up_m - off.hip_up_m,
        "upper_arm": off.shoulder_up_m - off.elbow_in_m,
        "forearm": off.elbow_in_m - off.wrist_in_m,
        "thigh": off.hip_up_m - off.knee_up_m,
        "shin": off.knee_up_m,
    }
    out: dict[str, float] = {}
    for seg in _segments(layout):
        if len(seg.child) == 2:
            v = node(seg.child[0]) - node(seg.child[1])
        else:
            v = node(seg.child[0]) - node(seg.parent)
        kind = seg.name.removeprefix("left_").removeprefix("right_")
        out[seg.name] = float(np.linalg.norm(v)) + change.get(kind, 0.0)
    head = [n for n in _rigid_groups(layout)[0][2] if n in rig.sites]
    if head:
        centre = np.mean([rig.rest_point(n) for n in head], axis=0)
        out["neck"] = float(np.linalg.norm(centre - node(THORAX))) - off.shoulder_up_m
    return out


# ---------------------------------------------------------------------------------------------
# The lifter
# ---------------------------------------------------------------------------------------------


@dataclass
class _Track:
    """What the lifter remembers of one person between frames."""

    # last confidently signed depth offset (m) of every segment, and whether there is one; kept
    # while a segment is near the image plane, where its sign cannot be read
    dz: F64 | None = None
    has: B8 | None = None
    z: F64 | None = None  # (K,) last depths (m) from the hip centre, for the perspective
    scale: float = 0.0  # pixels per metre
    ratios: tuple[float, ...] | None = None  # smoothed projected/true length of the torso lines
    fit: F64 | None = None  # (S,) squared length of every segment as a fraction of the rig's
    t: float = -math.inf
    layout: KeypointLayout | None = None


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
            lengths = segment_lengths(self.rig, layout, self.config)
            for k, v in self._lengths_override.items():
                if k in lengths and v > 0:
                    lengths[k] = float(v)
            lay = _LayoutLift(self.rig, layout, lengths, self.config)
            self._layouts[layout] = lay
        return lay

    def camera(self, image_size: tuple[int, int] | None) -> tuple[float | None, F64 | None]:
        """The focal length (px) and principal point (x right, y up, px) the perspective uses
        for frames of ``image_size`` (width, height) px (None: unknown)."""
        cfg = self.config
        focal = cfg.focal_px
        if focal is None and cfg.fov_deg is not None and image_size is not None:
            focal = focal_from_fov(float(image_size[0]), cfg.fov_deg)
        pp: F64 | None = None
        if cfg.principal_point is not None:
            pp = np.array([cfg.principal_point[0], -cfg.principal_point[1]])
        elif image_size is not None:
            pp = np.array([0.5 * image_size[0], -0.5 * image_size[1]])
        return focal, pp

    def lift(
        self,
        keypoints: Keypoints,
        t: float | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> Keypoints:
        """World keypoints (metres, hip-centred) for every person; world input passes through.

        Args:
            keypoints: image keypoints (pixels) or world keypoints.
            t: capture time in seconds (enables temporal continuity and the running scale).
            image_size: (width, height) of the frame in pixels: gives the focal length from
                ``fov_deg`` and the principal point when the config does not.
        """
        if keypoints.space is Space.WORLD:
            return keypoints
        lay = self._layout(keypoints.layout)
        cfg = self.config
        focal, pp = self.camera(image_size)
        p_count = keypoints.num_persons
        out = np.empty((p_count, lay.k, 3), np.float32)
        score = keypoints.score.copy()
        xy = keypoints.xyz
        ok_all = (keypoints.score >= cfg.min_score) & np.isfinite(xy[..., 0] + xy[..., 1])
        for p in range(p_count):
            pid = int(keypoints.ids[p]) if keypoints.ids[p] >= 0 else -1 - p
            track = self._tracks.get(pid)
            if track is None or track.layout is not keypoints.layout:
                track = self._tracks[pid] = _Track(layout=keypoints.layout)
            if t is None or t - track.t > cfg.person_timeout_s:
                track.dz = track.has = track.z = track.ratios = track.fit = None
                track.scale = 0.0
            dt = 0.0 if t is None or not math.isfinite(track.t) else max(t - track.t, 0.0)
            defined = lay.lift_one(keypoints.xyz[p, :, :2], ok_all[p], track, dt, focal, pp, out[p])
            track.t = t if t is not None else -math.inf
            score[p, ~defined] = 0.0
        if t is not None and len(self._tracks) > p_count:
            for k in [k for k, tr in self._tracks.items() if t - tr.t > cfg.person_timeout_s]:
                del self._tracks[k]
        return Keypoints(out, score, keypoints.layout, Space.WORLD, keypoints.person_score,
                         keypoints.ids)  # fmt: skip


# One frame's fit of a rigid group: which members are present and all members' observed
# positions (M, 2 metres), the fitted affine map ``a`` (2, 4) (its first three columns' rows span
# the image plane in model axes, the last is the observed centroid), the plane's normal (model
# axes), each member's depth about the centroid (the anchor for an anchored group), which side of
# the thorax the group lies on (sign), and where the anchor is among the members.
_RigidFit = tuple[B8, F64, F64, tuple[float, float, float], F64, float, int]


@dataclass(frozen=True, eq=False)
class _Rigid:
    """A rigid group: member keypoint indices, the model (rest positions times the performer's
    size), its anchor keypoint (-1: floats from the thorax by the neck length)."""

    members: I64
    model: F64
    anchor: int
    anchor_pos: int  # position of the anchor among the members (-1: none)
    thorax_rest: F64  # rest thorax position (size applied), for the floating group's side
    cache: dict[bytes, tuple[F64, F64, tuple[float, float, float], int] | None]


class _LayoutLift:
    """Everything about lifting one layout for one rig that does not change per frame, and the
    per-frame lifting (a fixed sequence of numpy operations on small arrays).

    Index conventions: K keypoints; S segments (:func:`_segments`: torso, hips, shoulders, then
    upper/lower bone of left arm, right arm, left leg, right leg, then feet); limbs in the order
    left arm, right arm, left leg, right leg; every segment has two candidates (0: the far end
    nearer the camera, 1: farther); 8 torso patterns (bit j set: segment j takes candidate 1);
    4 limb patterns (bit 0: upper bone, bit 1: lower bone); F torso frames (the rig bones the
    limbs hang from: the Hips and the upper chest).
    """

    def __init__(
        self, rig: Rig, layout: KeypointLayout, lengths: dict[str, float], config: LiftConfig
    ) -> None:
        self.rig, self.layout, self.config = rig, layout, config
        names = layout.names
        k_count = len(names)
        self.k = k_count
        segs = _segments(layout)
        self.segments = segs
        s_count = len(segs)
        index = {n: i for i, n in enumerate(names)}

        def weights(node: str) -> F64:
            w = np.zeros(k_count)
            if node == PELVIS:
                w[[index["left_hip"], index["right_hip"]]] = 0.5
            elif node == THORAX:
                w[[index["left_shoulder"], index["right_shoulder"]]] = 0.5
            else:
                w[index[node]] = 1.0
            return w

        # Segment vectors from keypoints (v = seg_w @ points), the point whose camera ray the
        # segment's far end lies on (a pair: its centre), the point whose depth scales its
        # projection (the parent; a pair: its centre), and which keypoints it needs to be lifted
        # (its own and its ancestors'; the hips need the pelvis only, so the legs lift without
        # shoulders).
        seg_w = np.zeros((s_count, k_count))
        seg_u = np.zeros((s_count, k_count))
        seg_ref = np.zeros((s_count, k_count))
        need = np.zeros((s_count, k_count))
        child_seg: dict[str, int] = {}
        for i, s in enumerate(segs):
            a, b = (s.child[0], s.child[1]) if len(s.child) == 2 else (s.child[0], s.parent)
            seg_w[i] = weights(a) - weights(b)
            if len(s.child) == 2:
                seg_u[i] = seg_ref[i] = 0.5 * (weights(a) + weights(b))
            else:
                seg_u[i], seg_ref[i] = weights(a), weights(s.parent)
            own = (weights(a) != 0) | (weights(b) != 0) | (weights(s.parent) != 0)
            par = child_seg.get(s.parent) if s.parent != PELVIS else None
            need[i] = np.maximum(own, need[par] if par is not None else 0.0)
            for c in s.child:
                child_seg[c] = i
        self.seg_w, self.seg_u_w, self.seg_ref_w = seg_w, seg_u, seg_ref
        self.s = s_count
        self.thorax_w = weights(THORAX)
        self.seg_pts_w = np.concatenate([seg_w, seg_u, self.thorax_w[None]])  # (2S + 1, K)
        self.rows2 = 2 * np.arange(s_count)
        self.smoothing_s = max(config.scale_smoothing_s, 1e-6)
        self.need = need
        self.need_min = need.sum(axis=1) - 0.5  # reached: need @ ok > need_min
        self.seg_len = np.array([lengths[s.name] for s in segs])
        self.seg_len2 = self.seg_len**2
        self.inv_len2 = 1.0 / self.seg_len2
        self.margin2 = config.depth_margin**2
        self.adapt = config.length_adapt_s > 0
        self.floor2 = min(config.length_floor, 1.0) ** 2
        self.cos2_line = math.cos(math.radians(config.in_line_deg)) ** 2
        self.line_margin2 = config.in_line_margin**2
        full = math.sin(math.radians(config.in_line_full_deg)) ** 2
        self.line_slope = full / max(full - self.line_margin2, 1e-9)
        self.len3 = tuple(self.seg_len[:3].tolist())
        # Segments that are not lifted: the torso upright, the lines level, limbs zero (keeps
        # the torso frames defined when, say, the hips are out of view).
        default = np.zeros((s_count, 2, 3))
        default[0, :, 1] = -self.seg_len[0]
        default[1:3, :, 0] = self.seg_len[1:3, None]
        self.default_cand = default
        # Position of every keypoint from the thorax: pos = coef @ segment vectors (S, 3).
        coef = np.zeros((k_count, s_count))
        node_coef: dict[str, F64] = {THORAX: np.zeros(s_count)}
        node_seg = np.full(k_count, -1, np.int64)
        for i, s in enumerate(segs):
            base = node_coef[s.parent]
            for j, c in enumerate(s.child):
                cc = base.copy()
                cc[i] += (0.5 if j == 0 else -0.5) if len(s.child) == 2 else 1.0
                node_coef[c] = cc
                if c in index:
                    coef[index[c]] = cc
                    node_seg[index[c]] = i
        self.pelvis_coef = node_coef[PELVIS]
        self.node_seg = np.maximum(node_seg, 0)
        self.is_node = node_seg >= 0
        self.i_lhip, self.i_rhip = index["left_hip"], index["right_hip"]
        self.i_lsh, self.i_rsh = index["left_shoulder"], index["right_shoulder"]
        # Sign patterns: candidate index per (pattern, segment).
        self.torso_idx = np.tile(np.arange(3), (8, 1))
        self.torso_bit = (np.arange(8)[:, None] >> np.arange(3)[None, :]) & 1  # (8, 3)
        limb_bits = (np.arange(4)[:, None] >> np.arange(2)[None, :]) & 1  # (4, 2)
        limb_upper = np.array([3, 5, 7, 9])
        self.limb_upper = limb_upper
        self.leg_upper = limb_upper[2:]  # the thighs
        self.lu_idx = np.repeat(limb_upper[:, None], 4, axis=1)  # (4 limbs, 4 patterns)
        self.ll_idx = self.lu_idx + 1
        self.lu_bit = np.tile(limb_bits[:, 0], (4, 1))
        self.ll_bit = np.tile(limb_bits[:, 1], (4, 1))
        # pick (S,) = pick_torso[torso pattern] + pick_limb[limb, its pattern].sum(0)
        self.pick_torso = np.zeros((8, s_count), np.int64)
        self.pick_torso[:, :3] = self.torso_bit
        self.pow4 = 4 ** np.arange(4)
        codes = np.arange(256)[:, None] // self.pow4 % 4  # (256, 4): each limb's pattern
        self.pick_limb = np.zeros((256, s_count), np.int64)
        for li, ui in enumerate(limb_upper):
            self.pick_limb[:, ui] = limb_bits[codes[:, li], 0]
            self.pick_limb[:, ui + 1] = limb_bits[codes[:, li], 1]
        self.limb_rows = np.arange(4)
        self.uw_idx = np.stack([self.lu_idx, self.ll_idx])
        self.uw_bit = np.stack([self.lu_bit, self.ll_bit])
        # tcost (S, 2) flattened @ t_gather: the continuity of every limb pattern (16, limb-major)
        # and every torso pattern (8)
        gather = np.zeros((s_count, 2, 32))
        for li in range(4):
            for pat in range(4):
                gather[self.lu_idx[li, pat], self.lu_bit[li, pat], 4 * li + pat] += 1.0
                gather[self.ll_idx[li, pat], self.ll_bit[li, pat], 4 * li + pat] += 1.0
        for t in range(8):
            for j in range(3):
                gather[j, self.torso_bit[t, j], 16 + t] += 1.0
        if s_count > 11:  # feet: (toe, heel) pairs, pair p = toe bit (p & 1), heel bit (p >> 1)
            for j, (toe, heel) in enumerate(((11, 12), (13, 14))):
                for p in range(4):
                    gather[toe, p & 1, 24 + 4 * j + p] += 1.0
                    gather[heel, p >> 1, 24 + 4 * j + p] += 1.0
        self.t_gather = gather.reshape(2 * s_count, 32)
        self._rig_model(rig, segs)
        self.feet = s_count > 11
        if self.feet:
            self._foot_model(rig)
        # The performer's size relative to the rig (rigid models and annotation offsets).
        rig_lengths = segment_lengths(rig, layout, config)
        size = float(np.mean([lengths[k] / rig_lengths[k] for k in ("torso", "shoulders")]))
        self.size = size
        # Rigid groups (face, hands).
        self.rigid: list[_Rigid] = []
        thorax_rest = (
            size * 0.5 * (rig.rest_point("left_shoulder") + rig.rest_point("right_shoulder"))
        )
        for _name, anchor, members in _rigid_groups(layout):
            usable = tuple(m for m in members if m in rig.sites)
            if len(usable) < 4:
                continue
            model = size * np.array([rig.rest_point(m) for m in usable])
            self.rigid.append(
                _Rigid(
                    members=np.array([index[m] for m in usable], np.int64),
                    model=model,
                    anchor=index[anchor] if anchor is not None else -1,
                    anchor_pos=usable.index(anchor) if anchor is not None else -1,
                    thorax_rest=thorax_rest,
                    cache={},
                )
            )
            if anchor is not None:  # before the fit, members take the anchor's position
                for m in usable:
                    if m != anchor:
                        coef[index[m]] = coef[index[anchor]]
        self.coef = coef
        self.coef_hips = coef - self.pelvis_coef[None, :]
        self.neck = lengths.get("neck", 0.0)
        self.face_group = next((i for i, g in enumerate(self.rigid) if g.anchor < 0), -1)
        # Annotated keypoints back onto the joints: pos += joint_coef @ unit segment vectors
        # (hips and shoulders along the spine, knees along the thigh, elbows along the upper arm,
        # wrists along the forearm; the origin moves with the hips to the joint hip centre).
        off = keypoint_offsets(layout, config)
        joint = np.zeros((k_count, s_count))
        joint[:, 0] = -off.hip_up_m  # spine = -unit[torso]
        for side in ("left", "right"):
            joint[index[f"{side}_hip"], 0] += off.hip_up_m
            joint[index[f"{side}_shoulder"], 0] += off.shoulder_up_m
            thigh = next(i for i, sg in enumerate(segs) if sg.name == f"{side}_thigh")
            upper = next(i for i, sg in enumerate(segs) if sg.name == f"{side}_upper_arm")
            fore = next(i for i, sg in enumerate(segs) if sg.name == f"{side}_forearm")
            joint[index[f"{side}_knee"], thigh] += off.knee_up_m
            joint[index[f"{side}_elbow"], upper] += off.elbow_in_m
            joint[index[f"{side}_wrist"], fore] += off.wrist_in_m
        self.joint_coef = size * joint
        self.has_offsets = bool(np.any(joint != 0.0))
        # The face turns relative to the chest (the arms' torso frame) through the neck and head:
        # their swings add up.
        arm = [li for li in (0, 1) if self.limb_valid[li]]
        self.head_frame = int(self.limb_frame[arm[0]]) if arm else -1
        head = [b for b, f in enumerate(rig.fits) if f is not None and "nose" in f]
        chain = (rig.distribute[head[0]] or ((head[0], 1.0),)) if head else ()
        self.head_max = math.radians(
            min(sum(float(rig.limits.swing_deg[j]) for j, _ in chain), 180.0) if chain else 180.0
        )
        self.w_head = config.head_weight * 180.0 / math.pi
        self.cos_straight = math.cos(math.radians(config.straight_deg))
        up = self.seg_len[limb_upper]
        self.limb_share = up / (up + self.seg_len[limb_upper + 1])  # upper bone's share
        self.w_head_limit = self.w_head + self.w_limit
        self.w_head_max = self.w_limit * self.head_max
        self.w_temporal = config.temporal_weight
        self.w_depth = config.depth_weight

    # -- joint-limit model of the rig -----------------------------------------------------------

    def _rig_model(self, rig: Rig, segs: tuple[Segment, ...]) -> None:
        """Per limb: the upper bone's rest direction ``r``, its hinged child's axis ``h``, swing
        cone and twist range, the hinge range, and the torso frame (Hips or upper chest) it
        hangs from, all from the rig; per torso frame its drive and twist reference as
        combinations of the torso segments."""
        lim = rig.limits
        bones_by_drive = {d: b for b, d in enumerate(rig.drives) if d is not None}
        frames: list[int] = []
        frame_drive: list[F64] = []
        frame_up: list[F64] = []
        frame_rest: list[F64] = []
        limb_frame = np.zeros(4, np.int64)
        # Per limb, per output o, the vector each of (u, n, e) is dotted with (rest axes):
        # o0 = n.g - e.h and o1 = n.h + e.g (the twist), o2 = u.r, o3 = u.(cone centre).
        consts = np.zeros((4, 3, 3, 4))
        valid = np.zeros(4, bool)
        swing_max = np.full(4, np.pi)
        twist_mid = np.zeros(4)
        twist_half = np.full(4, np.pi)
        hinge_lo = np.full(4, -np.pi)
        hinge_hi = np.full(4, np.pi)
        hinge_rest = np.zeros(4)
        self.lower_bone = np.full(4, -1, np.int64)
        torso_w = self.seg_w[:3]
        for li, ui in enumerate(self.limb_upper):
            up_seg, low_seg = segs[ui], segs[ui + 1]
            b = bones_by_drive.get((up_seg.parent, up_seg.child[0]))
            if b is None or lim.kind[b] != LIMIT_CONE:
                continue
            ref = rig.ups[b]
            if ref is None or ref.hinge is None:
                continue
            c = rig.index(ref.hinge)
            if lim.kind[c] != LIMIT_HINGE or rig.drives[c] != (low_seg.parent, low_seg.child[0]):
                continue
            p = int(rig.parents[b])
            while p >= 0 and rig.drives[p] is None:
                p = int(rig.parents[p])
            if p < 0:
                continue
            if p not in frames:
                fit = self._torso_frame(rig, p, torso_w)
                if fit is None:
                    continue
                frames.append(p)
                frame_drive.append(fit[0])
                frame_up.append(fit[1])
                frame_rest.append(fit[2])
            f = frames.index(p)
            r = rig.rest_directions[b].astype(np.float64)
            h = lim.hinge_axis[c] - np.dot(lim.hinge_axis[c], r) * r
            h /= np.linalg.norm(h)
            g = np.cross(r, h)
            rest_t = frame_rest[f]  # world = E @ rest_t: x . (E rest_t v) = (E^T x) . (rest_t v)
            consts[li, 1, :, 0], consts[li, 2, :, 0] = rest_t @ g, -(rest_t @ h)
            consts[li, 1, :, 1], consts[li, 2, :, 1] = rest_t @ h, rest_t @ g
            consts[li, 0, :, 2] = rest_t @ r
            consts[li, 0, :, 3] = (rest_t @ lim.swing_centre[b]) * _SHRINK
            limb_frame[li] = f
            valid[li] = True
            self.lower_bone[li] = c
            swing_max[li] = math.radians(float(lim.swing_deg[b]))
            lo, hi = (math.radians(float(x)) for x in lim.twist_deg[b])
            twist_mid[li], twist_half[li] = 0.5 * (lo + hi), 0.5 * (hi - lo)
            hinge_lo[li] = math.radians(float(lim.hinge_range_deg[c, 0]))
            hinge_hi[li] = math.radians(float(lim.hinge_range_deg[c, 1]))
            rl = rig.rest_directions[c].astype(np.float64)
            hinge_rest[li] = math.atan2(float(np.dot(np.cross(r, rl), h)), float(np.dot(r, rl)))
        if not frames:  # no usable limb: one frame keeps the arrays well formed
            frames.append(0)
            frame_drive.append(np.array([-1.0, 0.0, 0.0]))
            frame_up.append(np.array([0.0, 1.0, 0.0]))
            frame_rest.append(np.eye(3))
        self.limb_valid = valid
        self.limb_frame = limb_frame
        self.frame_count = len(frames)
        self.frame_coef = np.concatenate([np.stack(frame_drive), np.stack(frame_up)])  # (2F, 3)
        self.frame_rest = np.stack(frame_rest)  # (F, 3, 3) transposed rest frames
        # Frames built from single torso segments (every preset): take their unit vectors.
        nz = np.abs(self.frame_coef) > 1e-12
        self.frame_unit = bool(
            np.all(nz.sum(axis=1) == 1) and np.allclose(np.abs(self.frame_coef[nz]), 1.0)
        )
        if self.frame_unit:
            seg = np.argmax(nz, axis=1)  # (2F,)
            self.frame_seg = np.broadcast_to(seg, (8, len(seg))).copy()
            self.frame_bit = self.torso_bit[:, seg]
            self.frame_sign = np.sign(self.frame_coef[np.arange(len(seg)), seg])[:, None]
        self.limb_k = consts.reshape(4, 3, 12)  # (limb, i of u/n/e, b x output)
        deg = 180.0 / math.pi
        self.w_limit = self.config.limit_weight * deg
        self.w_comfort = self.config.comfort_weight * deg
        self.w_lc = self.w_limit + self.w_comfort
        # limb cost = max(wc swing, (wl + wc) swing - wl swing_max) + ...: (4, 1, 1) over
        # (limb, torso pattern, pattern)
        self.wc_limb = (self.w_comfort * valid)[:, None, None]
        self.wlc_limb = (self.w_lc * valid)[:, None, None]
        self.wl_smax = (self.w_limit * valid * swing_max)[:, None, None]
        self.wl_twist = (2.0 * self.w_limit * valid)[:, None, None]  # per radian of half twist
        # the twist's weight ramps from 0 to wl_twist as sin(bend) goes _TWIST_FROM_SIN -> FULL
        self.ramp_k = self.wl_twist / (_TWIST_FULL_SIN - _TWIST_FROM_SIN)
        self.ramp_c = self.ramp_k * _TWIST_FROM_SIN
        self.twist_mid = 0.5 * twist_mid[:, None, None]
        self.twist_half = 0.5 * twist_half[:, None, None]
        self.twist_asym = bool(np.any(twist_mid != 0.0))
        self.hinge_lo, self.hinge_hi = hinge_lo[:, None], hinge_hi[:, None]
        self.hinge_rest = hinge_rest[:, None]
        self.hinge_rest_any = bool(np.any(hinge_rest != 0.0))
        # the bend (0..180 degrees) minus the rest angle can only fall below the range when:
        self.hinge_lo_any = bool(np.any(hinge_lo + hinge_rest > 0.0))
        self.wl_hinge = (self.w_limit * valid)[:, None]
        # Spine twist: the upper chest relative to the Hips turns about the spine; the rig shares
        # the turn out over a chain of bones, each with its own twist range. Both frames must
        # share the drive for the closed form (the twist between their second axes).
        self.spine: tuple[int, int, float, float] | None = None
        for fu, upper in enumerate(frames):
            chain = rig.distribute[upper]
            parent = int(rig.parents[chain[0][0]]) if chain else -1
            if chain is None or parent not in frames:
                continue
            fl = frames.index(parent)
            if not np.allclose(self.frame_coef[fl], self.frame_coef[fu]):
                continue
            rl, ru = frame_rest[fl].T, frame_rest[fu].T  # rest frames (columns e1 e2 e3)
            rest = math.atan2(float(ru[:, 1] @ rl[:, 2]), float(ru[:, 1] @ rl[:, 1]))
            # the turn at which the first bone of the chain leaves its range
            limit = min(
                math.radians(min(-float(lim.twist_deg[j, 0]), float(lim.twist_deg[j, 1]))) / w
                for j, w in chain
                if w > 0
            )
            self.spine = (fl, fu, rest, limit)

    def _torso_frame(self, rig: Rig, bone: int, torso_w: F64) -> tuple[F64, F64, F64] | None:
        """(drive, up) of a torso frame bone as coefficients of the torso segment vectors, and
        its transposed rest frame; None when the rig builds it from other keypoints."""
        drive, up = rig.drives[bone], rig.ups[bone]
        if drive is None or up is None or up.source is None or up.target is None:
            return None
        coefs = []
        for a, b in (drive, (up.source, up.target)):
            wa, wb = rig.point_weights(a, self.layout), rig.point_weights(b, self.layout)
            if wa is None or wb is None:
                return None
            target = wb - wa
            coef, *_ = np.linalg.lstsq(torso_w.T, target, rcond=None)
            if np.abs(torso_w.T @ coef - target).max() > 1e-9:
                return None
            coefs.append(coef)
        r = rig.rest_directions[bone].astype(np.float64)
        ref = rig.rest_point(up.target) - rig.rest_point(up.source)
        e2 = ref - np.dot(ref, r) * r
        e2 /= np.linalg.norm(e2)
        rest = np.stack([r, e2, np.cross(r, e2)], axis=1)
        return coefs[0], coefs[1], rest.T

    def _foot_model(self, rig: Rig) -> None:
        """Feet: the foot's rest direction in the lower leg's rest frame and its swing cone, and
        the rest angle between the toe and heel vectors (the rigid foot)."""
        self.toe_seg = np.array([11, 13])
        self.heel_seg = np.array([12, 14])
        foot_dir = np.zeros((2, 3))
        self.foot_swing = np.full(2, np.pi)
        cos_rest = np.zeros(2)
        for j, side in enumerate(("left", "right")):
            ankle = rig.rest_point(f"{side}_ankle")
            toe = rig.rest_point(f"{side}_foot_index") - ankle
            heel = rig.rest_point(f"{side}_heel") - ankle
            cos_rest[j] = np.dot(toe, heel) / (np.linalg.norm(toe) * np.linalg.norm(heel))
            toe /= np.linalg.norm(toe)
            b = self.lower_bone[2 + j]
            if b < 0:
                foot_dir[j] = toe
                continue
            foot = [c for c in rig.children(int(b)) if rig.drives[c] is not None]
            if foot and rig.limits.kind[foot[0]] == LIMIT_CONE:
                self.foot_swing[j] = math.radians(float(rig.limits.swing_deg[foot[0]]))
            # the lower leg's rest frame: its rest direction, hinge axis, their cross product
            r = rig.rest_directions[b].astype(np.float64)
            h = rig.limits.hinge_axis[b] - np.dot(rig.limits.hinge_axis[b], r) * r
            h /= np.linalg.norm(h)
            foot_dir[j] = [np.dot(toe, r), np.dot(toe, h), np.dot(toe, np.cross(r, h))]
        self.foot_dir = (foot_dir * _SHRINK)[:, None, :]  # (2, 1, 3)
        self.foot_angle_rest = np.arccos(cos_rest)[:, None]
        self.wl_fswing = (self.w_limit * self.foot_swing)[:, None]
        # (toe, heel) pairs: pair p = toe bit (p & 1), heel bit (p >> 1)
        pairs = np.array([[p & 1, p >> 1] for p in range(4)])
        self.foot_idx = np.stack([self.toe_seg, self.heel_seg], axis=1)[:, None, :].repeat(4, 1)
        self.foot_bit = np.broadcast_to(pairs, (2, 4, 2)).copy()
        self.pick_feet = np.zeros((16, len(self.segments)), np.int64)
        for code in range(16):
            for j in range(2):
                p = (code >> (2 * j)) & 3
                self.pick_feet[code, self.toe_seg[j]] = p & 1
                self.pick_feet[code, self.heel_seg[j]] = p >> 1
        # the knees' rest hinge axes in the legs' torso frame's rest axes (for straight legs)
        self.leg_hinge = np.zeros((2, 3))
        for j, li in enumerate((2, 3)):
            b = self.lower_bone[li]
            if b >= 0:
                self.leg_hinge[j] = self.frame_rest[self.limb_frame[2]] @ rig.limits.hinge_axis[b]

    # -- one person -----------------------------------------------------------------------------

    def lift_one(
        self,
        uv: npt.NDArray[np.float32],
        ok: B8,
        track: _Track,
        dt: float,
        focal: float | None,
        pp: F64 | None,
        out: npt.NDArray[np.float32],
    ) -> B8:
        """Lift one person: ``uv`` (K, 2) pixels, ``ok`` (K,) usable -> writes world (K, 3)
        metres into ``out`` (NaN where not lifted); returns which keypoints were lifted (K,)."""
        pix = np.where(ok[:, None], uv * _FLIP_Y, 0.0)  # x right, y up, pixels
        reach = self.need @ ok > self.need_min  # (S,) segments whose points and ancestors are seen
        reach_l = reach.tolist()
        r_torso, r_hips, r_sh = reach_l[:3]
        if not (r_torso or r_hips or r_sh):
            out[:] = np.nan
            return np.zeros(self.k, bool)
        if track.dz is None or track.has is None:
            track.dz = np.zeros(len(self.segments))
            track.has = np.zeros(len(self.segments), bool)
        if focal and track.z is None:
            # No earlier depths for the perspective: lift once (all at the hips' depth) to get
            # this frame's.
            track.z = np.zeros(self.k)
            self.lift_one(uv, ok, track, 0.0, focal, pp, out)
        # segment vectors (S), the points their far ends lie on (S), the thorax (1): pixels
        pts = self.seg_pts_w @ pix
        vec = pts[: self.s]
        ray: F64 | None = None
        rpix = pix
        thorax = pts[-1]
        if focal and track.z is not None:
            # Perspective: a segment's projection is in metres at its reference point's depth
            # (D - z with D = focal / scale the hips' distance, z from the last frame), and its
            # far end lies on its own camera ray (``ray``: offset from the principal point /
            # focal). The projections are first brought to the hips' depth (pixels as the hips
            # would see them): the scale comes from those.
            centre = pp if pp is not None else self._centre_px(pix, ok)
            ray = (pts[self.s : 2 * self.s] - centre) * (1.0 / focal)
            if track.scale > 0:
                near = np.maximum(1.0 - track.z * (track.scale / focal), 0.25)  # (D - z) / D
                vec = vec * (self.seg_ref_w @ near)[:, None]
                if self.rigid:
                    rpix = centre + (pix - centre) * near[:, None]  # the perspective taken out
                    thorax = self.thorax_w @ rpix
        scale = self._scale(vec, r_torso, r_hips, r_sh, track, dt)
        inv = 1.0 / scale
        vec = vec * inv
        # The face's rotation (floating rigid groups are fitted before the choice).
        face = None
        if self.face_group >= 0:
            face = self._fit_rigid(self.rigid[self.face_group], rpix, ok, inv)
        cand = self._candidates(vec, ray, None if all(reach_l) else ~reach, reach, track, dt)
        unit = cand * (1.0 / np.sqrt(np.maximum(_dot(cand, cand), _EPS)))[:, :, None]  # (S, 2, 3)
        pick, straight = self._choose(cand, unit, track, face)
        flat = self.rows2 + pick
        seg3 = cand.reshape(-1, 3)[flat]
        sdz = seg3[:, 2]
        keep = reach & (np.abs(sdz) >= self.config.sign_memory_min_m)
        np.copyto(track.dz, sdz, where=keep)
        np.logical_or(track.has, keep, out=track.has)
        if straight.any():
            # Nearly straight limbs are straightened: their bend plane is keypoint noise, and
            # the solver would twist the upper bone by it.
            up, low = self.limb_upper[straight], self.limb_upper[straight] + 1
            total = seg3[up] + seg3[low]
            seg3[up] = total * self.limb_share[straight, None]
            seg3[low] = total - seg3[up]
        return self._output(rpix, ok, reach, seg3, unit.reshape(-1, 3)[flat], inv, thorax * inv,
                            track, face, out)  # fmt: skip

    def _centre_px(self, pix: F64, ok: B8) -> F64:
        """The hip centre (else the shoulder centre) in pixels: the principal point when none is
        known (the performer roughly centred in the frame)."""
        if ok[self.i_lhip] and ok[self.i_rhip]:
            out: F64 = 0.5 * (pix[self.i_lhip] + pix[self.i_rhip])
        else:
            out = 0.5 * (pix[self.i_lsh] + pix[self.i_rsh])
        return out

    def _scale(
        self, vec: F64, r_torso: bool, r_hips: bool, r_sh: bool, track: _Track, dt: float
    ) -> float:
        """Pixels per metre: the larger projected/true length ratio of the spine and the
        shoulder line (the hip line when neither is seen). Each ratio is smoothed over
        ``scale_smoothing_s`` before the larger is taken (the larger of two noisy ratios would
        overestimate the scale, and every segment would then look foreshortened)."""
        (tx, ty), (hx, hy), (sx, sy) = vec[:3].tolist()
        lt, lh, ls = self.len3
        now: tuple[float, ...] = (
            math.sqrt(tx * tx + ty * ty) / lt if r_torso else 0.0,
            math.sqrt(hx * hx + hy * hy) / lh if r_hips else 0.0,
            math.sqrt(sx * sx + sy * sy) / ls if r_sh else 0.0,
        )
        prev = track.ratios
        if prev is None or dt <= 0:
            ratios = now
        else:
            keep = math.exp(-dt / self.smoothing_s)
            ratios = tuple(
                (math.exp(keep * math.log(p) + (1.0 - keep) * math.log(c)) if p > 0 else c)
                if c > 0 else p
                for p, c in zip(prev, now, strict=True)
            )  # fmt: skip
        track.ratios = ratios
        # ratios of segments not seen this frame are kept for later, not used now
        frame = max(ratios[0] if r_torso else 0.0, ratios[2] if r_sh else 0.0)
        if frame <= 0.0:
            frame = ratios[1] if r_hips else 0.0
        if frame <= 0.0:
            frame = track.scale
        frame = frame if frame > 0 else 1.0
        track.scale = frame
        return frame

    def _candidates(
        self, vec: F64, ray: F64 | None, missing: B8 | None, reach: B8, track: _Track, dt: float
    ) -> F64:
        """Both candidates of every segment: 3D vectors (S, 2, 3) in metres, index 0 with the far
        end nearer the camera.

        ``vec`` (S, 2) is the projected segment in metres at its reference point's depth. Weak
        perspective: ``dz = +-sqrt(L^2 - |vec|^2)``. With the far end on its camera ray ``r``
        (S, 2) the segment is ``(vec - dz r, dz)`` and ``|.| = L`` is a quadratic in ``dz`` whose
        two roots are the candidates (not symmetric: a shin hanging below the camera's axis has
        roots 0 and +14 cm, not +-0). ``L^2`` less the noise margin (``depth_margin``): a segment
        seen about as long as ``L`` or longer has its farther root in the image plane. ``L``
        adapts to the performer (see ``LiftConfig.length_adapt_s``).
        """
        ll = _dot(vec, vec)
        # Each limb segment's length as a fraction of the rig's (squared): relaxes towards the
        # floor unless the segment is seen longer (a performer's and a model's proportions
        # differ from the rig's; a segment seen at its full length is in the image plane).
        fit = track.fit
        if fit is None:
            fit = np.ones(len(ll))
        if self.adapt and dt > 0:
            relax = math.exp(-dt / self.config.length_adapt_s)
            fit = np.maximum(ll * self.inv_len2 * reach, self.floor2 + (fit - self.floor2) * relax)
            np.minimum(fit, 1.0, out=fit)
            fit[:3] = 1.0  # the torso's lines keep theirs (they set the scale; turns last)
        track.fit = fit
        deficit = np.maximum(self.seg_len2 * (fit - self.margin2) - ll, 0.0)
        if self.line_margin2 > self.margin2:
            # Legs in line in the image: the deficit (a fraction x of L^2 beyond the seen
            # length) is 0 up to the in-line margin, then ramps up to meet the plain one at
            # in_line_full_deg of tilt.
            legs = self.leg_upper
            up, lo = vec[legs], vec[legs + 1]
            dot = _dot(up, lo)
            in_line = (dot * dot > self.cos2_line * _dot(up, up) * _dot(lo, lo)) & (dot > 0.0)
            seg = np.concatenate([legs[in_line], legs[in_line] + 1])
            x = fit[seg] - ll[seg] * self.inv_len2[seg]
            ramp = np.maximum((x - self.line_margin2) * self.line_slope, 0.0) * self.seg_len2[seg]
            deficit[seg] = np.minimum(deficit[seg], ramp)
        cand = np.empty((len(ll), 2, 3))
        if ray is None:
            half = np.sqrt(deficit)
            cand[:, :, :2] = vec[:, None, :]
            cand[:, 0, 2] = half
            cand[:, 1, 2] = -half
        else:
            inv_rr = 1.0 / (1.0 + _dot(ray, ray))
            mid = _dot(vec, ray) * inv_rr
            # the margin applies to the length deficit: within it, the farther root is in the
            # image plane (dz = 0), the nearer one its perspective twin
            half = np.sqrt(mid * mid + deficit * inv_rr)
            cand[:, 0, 2] = mid + half
            cand[:, 1, 2] = mid - half
            cand[:, :, :2] = vec[:, None, :] - cand[:, :, 2:] * ray[:, None, :]
        if missing is not None:  # segments not lifted
            cand[missing] = self.default_cand[missing]
        return cand

    def _choose(
        self, cand: F64, unit: F64, track: _Track, face: _RigidFit | None
    ) -> tuple[I64, B8]:
        """The candidate (S,) of every segment for the best sign pattern (see the module
        docstring), and which limbs (4,) it leaves bent less than ``straight_deg``."""
        # Continuity cost of each segment's two candidates, summed per limb pattern (16) and per
        # torso pattern (8) with one product.
        dz = cand[:, :, 2]
        wt = self.w_temporal * track.has  # type: ignore[operator]
        tcost = np.abs(dz - track.dz[:, None]) * wt[:, None] + self.w_depth * np.abs(dz)  # type: ignore[index]
        tsum = tcost.reshape(-1) @ self.t_gather  # (24,)
        # Torso frames for the 8 torso patterns: basis (8, F, 3, 3), rows e1 e2 e3 (the world
        # rotation of the frame bone is basis^T rest_t).
        f_count = self.frame_count
        if self.frame_unit:
            du = unit[self.frame_seg, self.frame_bit] * self.frame_sign  # (8, 2F, 3) unit
            e1 = du[:, :f_count]
        else:
            du = self.frame_coef @ cand[self.torso_idx, self.torso_bit]  # (8, 2F, 3)
            e1 = du[:, :f_count]
            e1 = e1 * (1.0 / np.sqrt(_dot(e1, e1)))[..., None]
        up = du[:, f_count:]
        up = up - _dot(up, e1)[..., None] * e1
        e2 = up * (1.0 / np.sqrt(np.maximum(_dot(up, up), _EPS)))[..., None]
        basis = np.concatenate([e1, e2, _cross(e1, e2)], axis=-1).reshape(8, f_count, 3, 3)
        # Limbs: unit upper u and lower w, bend normal n = u x w and e = u (u.w) - w (both of
        # length sin(bend)), for the 4 patterns of every limb.
        uw = unit[self.uw_idx, self.uw_bit]  # (2, 4 limbs, 4 patterns, 3)
        u, w = uw[0], uw[1]
        n = _cross(u, w)
        sin_b = np.sqrt(_dot(n, n))  # (4, 4)
        cos_b = _dot(u, w)
        une = np.empty((4, 4, 3, 3))
        une[..., 0] = u
        une[..., 1] = n
        une[..., 2] = u * cos_b[..., None] - w
        # Their dot products, in every torso frame, with the limb's rest constants:
        # z[l, t, c, o] = sum_ab basis[t, f(l), b, a] * sum_i une[l, c, a, i] * k[l, i, b, o].
        y = une.reshape(4, 12, 3) @ self.limb_k
        y = y.reshape(4, 4, 3, 3, 4).transpose(0, 3, 2, 1, 4).reshape(4, 9, 16)
        z = (basis.reshape(8, f_count, 9)[:, self.limb_frame].transpose(1, 0, 2) @ y).reshape(
            4, 8, 4, 4
        )
        # Half the upper bone's twist, from its bend plane: atan2(n.g - e.h, s (1 + u.r) + n.h
        # + e.g) in rest axes (n and e carry s = sin(bend)); the swing from the cone centre.
        sin_t = sin_b[:, None, :]
        half_twist = np.arctan2(z[..., 0], sin_t * (1.0 + z[..., 2]) + z[..., 1])
        swing = np.arccos(z[..., 3])  # (the constants carry _SHRINK)
        # A bend plane counts from 10 degrees of bend on, in full from 40 (a nearly straight
        # limb's plane is at the mercy of a few centimetres of keypoint error).
        ramp = np.minimum(np.maximum(sin_t * self.ramp_k - self.ramp_c, 0.0), self.wl_twist)
        bend = np.arctan2(sin_b, cos_b)
        if self.hinge_rest_any:
            bend = bend - self.hinge_rest
        fixed = self.wl_hinge * np.maximum(bend - self.hinge_hi, 0.0) + tsum[:16].reshape(4, 4)
        if self.hinge_lo_any:
            fixed += self.wl_hinge * np.maximum(self.hinge_lo - bend, 0.0)
        limb_cost = (
            np.maximum(self.wc_limb * swing, self.wlc_limb * swing - self.wl_smax)
            + ramp
            * np.maximum(
                np.abs(half_twist - self.twist_mid if self.twist_asym else half_twist)
                - self.twist_half,
                0.0,
            )
            + fixed[:, None, :]
        )  # (4 limbs, 8 torso patterns, 4 patterns)
        # Torso: continuity, the spine's twist (beyond the rig's ranges, and a little per
        # degree), the face's turn from the chest.
        torso_cost = tsum[16:24]
        # (the torso's turns and lean only matter when its segments leave the image plane)
        turned = float(np.abs(cand[:3, :, 2]).max()) > _TORSO_FLAT_M
        if turned and self.spine is not None:
            fl, fu, rest, limit = self.spine
            e2u = basis[:, fu, 1]
            tw = np.abs(np.arctan2(_dot(e2u, basis[:, fl, 2]), _dot(e2u, basis[:, fl, 1])) - rest)
            torso_cost = torso_cost + np.maximum(
                self.w_comfort * tw, self.w_lc * tw - self.w_limit * limit
            )
        if turned and face is not None and self.head_frame >= 0:
            torso_cost = torso_cost + self._head_cost(face, basis[:, self.head_frame])
        total = torso_cost + np.add.reduce(np.minimum.reduce(limb_cost, axis=2), axis=0)
        t_best = int(total.argmin())
        best = limb_cost[:, t_best].argmin(axis=1)  # (4,) pattern per limb
        pick: I64 = self.pick_torso[t_best] + self.pick_limb[int(best @ self.pow4)]
        straight: B8 = cos_b[self.limb_rows, best] > self.cos_straight
        if self.feet:
            legs = self.limb_rows[2:]
            pick = pick + self.pick_feet[
                self._choose_feet(unit, w[legs, best[2:]], n[legs, best[2:]],
                                  basis[t_best, self.limb_frame[2]], tsum[24:].reshape(2, 4))
            ]  # fmt: skip
        return pick, straight

    def _head_cost(self, face: _RigidFit, chest: F64) -> F64:
        """Cost (8,) of the face's rotation relative to each torso pattern's chest frame: the
        degrees beyond the neck and head's combined swing, plus ``head_weight`` per degree."""
        (ax, ay, az, _), (bx, by, bz, _) = face[2].tolist()
        na = math.sqrt(ax * ax + ay * ay + az * az) or 1.0
        ax, ay, az = ax / na, ay / na, az / na
        d = bx * ax + by * ay + bz * az
        bx, by, bz = bx - d * ax, by - d * ay, bz - d * az
        nb = math.sqrt(bx * bx + by * by + bz * bz) or 1.0
        head = np.array([[ax, ay, az], [bx / nb, by / nb, bz / nb], face[3]])
        # angle of R^T head with R = basis^T rest_t: trace(rest_t^T basis head) is the sum of the
        # elements of basis * (head rest_t^T)^T
        g = (head @ self.frame_rest[self.head_frame].T).T
        cos = (chest.reshape(8, 9) @ g.reshape(9) - 1.0) * (0.5 * _SHRINK)
        angle = np.arccos(cos)
        out: F64 = np.maximum(self.w_head * angle, self.w_head_limit * angle - self.w_head_max)
        return out

    def _choose_feet(self, unit: F64, w: F64, n: F64, hips: F64, tfeet: F64) -> int:
        """The toe and heel candidates of both feet given the chosen legs, as a code into
        ``pick_feet``: each foot's (toe, heel) pair by the toe's swing from its rest direction
        carried by the lower leg, the rigid foot's toe-heel angle and continuity (``tfeet``
        (2, 4)). ``w``, ``n``: the shins and their bend normals (2, 3); ``hips``: the legs' torso
        frame (rows)."""
        # The knee axis: the bend normal, or (a straight leg) its rest axis in the Hips frame.
        axis = n + _MIN_REF_SIN * (self.leg_hinge @ hips)
        axis = axis - _dot(axis, w)[:, None] * w
        axis *= (1.0 / np.sqrt(np.maximum(_dot(axis, axis), _EPS)))[:, None]
        lower = np.concatenate([w, axis, _cross(w, axis)], axis=1).reshape(2, 3, 3)  # rows
        rest = self.foot_dir @ lower  # (2, 1, 3): the foot's rest direction, world axes
        th = unit[self.foot_idx, self.foot_bit]  # (2 feet, 4 pairs, 2 toe/heel, 3)
        toe = th[:, :, 0]
        swing = np.arccos(_dot(toe, rest))  # (2, 4) (foot_dir carries _SHRINK)
        angle = np.arccos(_dot(toe, th[:, :, 1]) * _SHRINK)
        cost = (
            np.maximum(self.w_comfort * swing, self.w_lc * swing - self.wl_fswing)
            + self.w_limit * np.abs(angle - self.foot_angle_rest)
            + tfeet
        )
        return int(cost.argmin(axis=1) @ self.pow4[:2])

    def _output(
        self,
        pix: F64,
        ok: B8,
        reach: B8,
        seg3: F64,
        unit3: F64,
        inv: float,
        thorax: F64,
        track: _Track,
        face: _RigidFit | None,
        out: npt.NDArray[np.float32],
    ) -> B8:
        """World keypoints (K, 3) into ``out``, origin at the hip centre (or where the rig puts
        it below the thorax); returns which keypoints are defined. Keeps the depths for the
        next frame's perspective."""
        defined = ok & self.is_node & reach[self.node_seg]
        if reach[1]:
            xyz = self.coef_hips @ seg3  # (K, 3) from the hip centre
            origin = self.pelvis_coef @ seg3  # the hip centre from the thorax
        else:
            xyz = self.coef @ seg3
            xyz[:, 1] += self.seg_len[0]
            origin = np.array([0.0, -self.seg_len[0], 0.0])
        for g in self.rigid:
            fit = face if g.anchor < 0 else self._fit_rigid(g, pix, ok, inv)
            if fit is not None:
                self._place_rigid(g, fit, ok, thorax, origin, xyz, defined)
        if self.has_offsets:
            xyz += self.joint_coef @ unit3
        track.z = xyz[:, 2].copy()
        xyz[~defined] = np.nan
        out[:] = xyz
        return defined

    def _fit_rigid(self, g: _Rigid, pix: F64, ok: B8, inv: float) -> _RigidFit | None:
        """A rigid group's weak-perspective affine fit to the observed points (None when it has
        too few or (nearly) coplanar points)."""
        have = ok[g.members]
        key = have.tobytes()
        fit = g.cache.get(key)
        if fit is None:
            if key in g.cache:
                return None
            fit = g.cache[key] = _rigid_fit(g, have)
            if fit is None:
                return None
        proj, centred, (fx, fy, fz), a_pos = fit
        obs = pix[g.members] * inv  # (M, 2) metres (absent members: ignored by proj)
        a = obs.T @ proj  # (2, 4): observed ~ a[:, :3] @ centred model, centroid a[:, 3]
        (ax, ay, az, _), (bx, by, bz, _) = a.tolist()
        nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        length = math.sqrt(nx * nx + ny * ny + nz * nz)
        if length < _EPS:
            return None
        nx, ny, nz = nx / length, ny / length, nz / length
        rel = centred @ np.array([nx, ny, nz])  # depth of each member about the centroid
        return have, obs, a, (nx, ny, nz), rel, nx * fx + ny * fy + nz * fz, a_pos

    def _place_rigid(
        self,
        g: _Rigid,
        fit: _RigidFit,
        ok: B8,
        thorax: F64,
        origin: F64,
        xyz: F64,
        defined: B8,
    ) -> None:
        """Positions of a fitted rigid group: from its anchor (the wrist), or floated from the
        thorax (``thorax`` in metres in the image plane, ``origin``: the hip centre from the
        thorax) by the neck length on the side the fitted rotation predicts (writes ``xyz`` and
        ``defined``)."""
        have, obs, a, _, rel, side, a_pos = fit
        idx = g.members
        if g.anchor < 0:
            if not (ok[self.i_lsh] and ok[self.i_rsh]) or self.neck <= 0:
                return
            tx, ty = thorax.tolist()
            ox, oy, oz = origin.tolist()
            cx, cy = a[:, 3].tolist()  # the centroid
            cx, cy = cx - tx, cy - ty  # from the thorax
            dz = math.sqrt(max(self.neck * self.neck - cx * cx - cy * cy, 0.0))
            xyz[idx, :2] = obs - np.array([tx + ox, ty + oy])
            xyz[idx, 2] = rel + (math.copysign(dz, side) - oz)
        elif defined[g.anchor]:
            xyz[idx, :2] = xyz[g.anchor, :2] + (obs - obs[a_pos])
            xyz[idx, 2] = xyz[g.anchor, 2] + rel
        else:
            return
        defined[idx] = have


# Cosines of unit vectors may round past +-1; arccos(c * _SHRINK) stays defined.
_SHRINK = 1.0 - 1e-12


def _rigid_fit(g: _Rigid, have: B8) -> tuple[F64, F64, tuple[float, float, float], int] | None:
    """For a group's members, the present ones marked by ``have``: the projection ``P`` (M, 4)
    with ``obs^T P`` the least-squares affine map of the centred model onto the observations
    (first three columns) and their centroid (last column), the model centred on its present
    points (M, 3; about the anchor's position for an anchored group), the present model
    centroid's offset from the thorax, and the anchor's position among the members; absent
    members have zero rows. None when too few points or (nearly) coplanar."""
    if int(have.sum()) < 4 or (g.anchor_pos >= 0 and not have[g.anchor_pos]):
        return None
    model = g.model[have]
    centre = model.mean(axis=0)
    centred = model - centre
    scatter = centred.T @ centred
    if np.linalg.cond(scatter) > _RIGID_MAX_COND:
        return None
    proj = np.zeros((len(have), 4))
    proj[have, :3] = centred @ np.linalg.inv(scatter)
    proj[have, 3] = 1.0 / len(model)
    full = np.zeros((len(have), 3))
    full[have] = centred
    if g.anchor_pos >= 0:  # depths about the anchor: it keeps its own
        full[have] -= full[g.anchor_pos]
    offset = centre - g.thorax_rest
    return proj, full, (float(offset[0]), float(offset[1]), float(offset[2])), max(g.anchor_pos, 0)


# Cosines of unit vectors may round past +-1; arccos(c * _SHRINK) stays defined.
_SHRINK = 1.0 - 1e-12
