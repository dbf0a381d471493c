"""The built-in synthetic performer: a shaded humanoid rendered with OpenCV from a scripted motion,
with exact ground truth every frame. It is avatarlink's embedded default input (``--source
synthetic``), so the whole pipeline runs anywhere, camera or not.

How a frame is made
-------------------
1. A motion script (:data:`MOTIONS`: idle, wave, arm raises, squat, walk in place, turn, lean)
   gives each driven bone a local rotation at time ``t`` (quaternions, xyzw, relative to the rig's
   rest T-pose, in world axes: exactly :class:`~avatarlink.types.BoneRotations`).
2. Forward kinematics of the rig (:func:`avatarlink.rig.forward_kinematics`) gives every joint's
   position; the hips are lowered so the lowest foot point stays on the floor.
3. Face, hand and foot landmarks are fixed points in the head, hand and foot frames; COCO-17 and
   BlazePose-33 keypoints are read off the joints and landmarks.
4. A virtual pinhole camera (no roll or pitch, looking along -Z from ``camera_distance_m`` in front
   of the performer) projects them to pixels.
5. The body is drawn as shaded capsules and blobs (head with hair and face, clothed torso and limbs,
   hands, shoes) in depth order over a pre-rendered room with a tiled floor and a contact shadow.

Frames
------
Scene coordinates are avatarlink's world axes (metres, right-handed, +Y up, +X to the camera's
right, +Z towards the camera; the performer faces +Z) with the origin on the floor below the rest
hips. Ground-truth world keypoints are re-centred on the hip centre as :mod:`avatarlink.types`
defines the world space. Image keypoints are source pixels (origin top-left, +y down) with ``z``
the camera depth in metres.

The script is periodic: ``pose_at(t)`` uses ``t`` modulo :attr:`SyntheticPerformer.duration`, so
a consumer can recompute the ground truth of any frame from its timestamp.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink import quat
from avatarlink.capture import ReadResult, ReadStatus
from avatarlink.errors import ConfigError
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import BoneRotations, FloatArray, ImageArray, Keypoints, RigLike, Space

F64 = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class SyntheticOptions:
    """Settings of the synthetic performer (the ``synthetic`` config section).

    Attributes:
        width: image width in pixels.
        height: image height in pixels.
        fps: frame rate in frames/s; frame ``i`` shows time ``i / fps``.
        motions: motion names to play, in order (empty: every motion of :data:`MOTIONS`).
        speed: playback speed factor of the script (2 plays twice as fast).
        camera_distance_m: distance from the camera to the performer's rest position, metres.
        camera_height_m: camera height above the floor, metres (it looks horizontally).
        vertical_fov_deg: vertical field of view in degrees.
        noise: standard deviation of per-pixel sensor noise in grey levels (0: none).
        seed: seed of the noise.
        loop: play the script forever (false: the source ends after one pass).
    """

    width: int = 640
    height: int = 480
    fps: float = 30.0
    motions: tuple[str, ...] = ()
    speed: float = 1.0
    camera_distance_m: float = 3.6
    camera_height_m: float = 1.05
    vertical_fov_deg: float = 42.0
    noise: float = 0.0
    seed: int = 0
    loop: bool = True

    def __post_init__(self) -> None:
        for key in ("width", "height"):
            if not 32 <= getattr(self, key) <= 8192:
                raise ConfigError(f"synthetic.{key} must be 32..8192 px, got {getattr(self, key)}")
        for key, unit in (("fps", "frames/s"), ("speed", ""), ("camera_distance_m", "m")):
            if not getattr(self, key) > 0:
                raise ConfigError(f"synthetic.{key} must be > 0 {unit}, got {getattr(self, key)}")
        if not 10.0 <= self.vertical_fov_deg <= 120.0:
            raise ConfigError(
                f"synthetic.vertical_fov_deg must be 10..120 degrees, got {self.vertical_fov_deg}"
            )
        if self.noise < 0:
            raise ConfigError(f"synthetic.noise must be >= 0 grey levels, got {self.noise}")
        for name in self.motions:
            if name not in MOTIONS:
                raise ConfigError(
                    f"synthetic.motions: unknown motion {name!r}; valid: {', '.join(MOTIONS)}"
                )


# ---------------------------------------------------------------------------------------------
# Motion script


def _rot(axis: str, degrees: float) -> F64:
    """Quaternion of a rotation about a world axis ``x``, ``y`` or ``z`` by ``degrees``."""
    v = np.zeros(3)
    v["xyz".index(axis)] = math.radians(degrees)
    return quat.from_rotvec(v)


def _seq(*rotations: F64) -> F64:
    """Compose rotations applied in the order given (first argument first)."""
    out = quat.identity()
    for q in rotations:
        out = quat.multiply(q, out)
    return out


def _smooth(x: float) -> float:
    """Smoothstep of x clipped to [0, 1]."""
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


def _bump(u: float, duration: float) -> float:
    """0 -> 1 -> 0 over ``duration`` seconds with zero slope at both ends."""
    return 0.5 - 0.5 * math.cos(2.0 * math.pi * min(1.0, max(0.0, u / duration)))


Pose = dict[str, F64]  # bone name -> local rotation (4,) xyzw


def _sides(pose: Pose, left: Mapping[str, F64]) -> None:
    """Set ``Left*`` bones from ``left`` (keys without side) and their mirrors on the right."""
    for part, q in left.items():
        pose["Left" + part] = q
        pose["Right" + part] = quat.mirror_x(q)


# Arm hanging: the T-pose arm (+X for the left) turned down about +Z; slight elbow bend forward.
_ARM_DOWN_DEG = -72.0
_ELBOW_REST_DEG = -12.0
_ARM_UP_DEG = 80.0


def _idle(u: float) -> Pose:
    """Standing relaxed: breathing, a little sway and a slow look around."""
    breath = math.sin(2.0 * math.pi * u / 4.0)
    pose: Pose = {
        "Spine": _rot("x", 1.5 * breath),
        "Chest": _rot("x", -1.0 * breath),
        "Neck": _rot("y", 6.0 * math.sin(2.0 * math.pi * u / 7.0)),
        "Head": _rot("x", 3.0 * math.sin(2.0 * math.pi * u / 5.0)),
        "Hips": _rot("z", 1.5 * math.sin(2.0 * math.pi * u / 6.0)),
    }
    sway = 3.0 * math.sin(2.0 * math.pi * u / 4.0)
    _sides(
        pose,
        {
            "UpperArm": _seq(_rot("z", _ARM_DOWN_DEG + sway), _rot("x", -4.0)),
            "LowerArm": _rot("y", _ELBOW_REST_DEG),
            "UpperLeg": _rot("z", 1.5),
            "Foot": _rot("y", -8.0),
        },
    )
    return pose


def _wave(u: float) -> Pose:
    """The right hand raised beside the head, waving at 1.5 Hz.

    Anatomically: the upper arm is raised sideways and rotated outwards about its own axis so
    that elbow flexion (the elbow's hinge) lifts the forearm up; the wave swings the elbow.
    """
    swing = 20.0 * math.sin(2.0 * math.pi * 1.5 * u)
    return {
        "RightUpperArm": _seq(_rot("x", -75.0), _rot("z", -40.0)),
        "RightLowerArm": _rot("y", 55.0 + swing),
        "RightHand": _rot("z", -0.3 * swing),
        "Head": _rot("z", 5.0),
    }


def _raise(side: str) -> Callable[[float], Pose]:
    """One arm raised sideways from hanging to overhead and back, twice."""

    def pose(u: float) -> Pose:
        lift = _bump(u % 2.5, 2.5)
        q = _rot("z", _ARM_DOWN_DEG + (_ARM_UP_DEG - _ARM_DOWN_DEG) * lift)
        return {f"{side}UpperArm": q if side == "Left" else quat.mirror_x(q)}

    return pose


def _raise_forward(u: float) -> Pose:
    """Both arms raised forward to shoulder height, then overhead, then down."""
    up = _bump(u, 4.0)
    high = _bump(u - 1.0, 2.0)
    pose: Pose = {}
    arm = quat.slerp(_rot("z", _ARM_DOWN_DEG), _rot("y", -85.0), up)
    arm = quat.slerp(arm, _seq(_rot("y", -85.0), _rot("x", -60.0)), high)
    _sides(pose, {"UpperArm": arm, "LowerArm": _rot("y", -5.0)})
    return pose


def _squat(u: float) -> Pose:
    """Two squats: hips and knees bend, the trunk leans forward, arms reach forward."""
    d = _bump(u % 2.5, 2.5)
    pose: Pose = {"Spine": _rot("x", 22.0 * d), "Head": _rot("x", -12.0 * d)}
    _sides(
        pose,
        {
            "UpperLeg": _seq(_rot("z", 4.0 * d), _rot("x", -85.0 * d)),
            "LowerLeg": _rot("x", 115.0 * d),
            "Foot": _rot("x", -32.0 * d),
            "UpperArm": quat.slerp(_rot("z", _ARM_DOWN_DEG), _rot("y", -80.0), d),
        },
    )
    return pose


def _walk(u: float) -> Pose:
    """Walking in place: alternate knee lifts at 0.75 steps/s per leg, opposite arm swing."""
    phase = 2.0 * math.pi * 0.75 * u
    s = math.sin(phase)
    # Squared half-waves: each foot leaves and lands with zero speed.
    lifts = {"Left": max(0.0, s) ** 2, "Right": max(0.0, -s) ** 2}
    pose: Pose = {"Spine": _rot("y", 4.0 * s), "Hips": _rot("y", -3.0 * s)}
    for side, lift in lifts.items():
        mirror = side == "Right"
        leg = {
            "UpperLeg": _rot("x", -55.0 * lift),
            "LowerLeg": _rot("x", 75.0 * lift),
            "Foot": _rot("x", 15.0 * lift),
        }
        swing = -28.0 * s if side == "Left" else 28.0 * s  # opposite arm forward
        arm = {
            "UpperArm": _seq(_rot("z", _ARM_DOWN_DEG), _rot("x", swing)),
            "LowerArm": _rot("y", _ELBOW_REST_DEG - 20.0 * max(0.0, -swing / 28.0)),
        }
        for part, q in {**leg, **arm}.items():
            if mirror and part in arm:
                q = quat.mirror_x(q)
            pose[side + part] = q
    return pose


def _turn(u: float) -> Pose:
    """Turning the whole body to one side (70 degrees) and then the other, head leading."""
    yaw = 70.0 * math.sin(2.0 * math.pi * u / 6.0)
    lead = 15.0 * math.sin(2.0 * math.pi * u / 6.0 + 0.6)
    return {"Hips": _rot("y", yaw), "Neck": _rot("y", lead)}


def _lean(u: float) -> Pose:
    """Leaning the trunk to the left and to the right."""
    a = 18.0 * math.sin(2.0 * math.pi * u / 5.0)
    pose: Pose = {"Spine": _rot("z", -a), "Chest": _rot("z", -0.5 * a), "Head": _rot("z", 0.4 * a)}
    _sides(pose, {"UpperArm": _rot("z", _ARM_DOWN_DEG + 8.0)})
    return pose


@dataclass(frozen=True)
class Motion:
    """One clip of the script.

    Attributes:
        name: the clip's name (``synthetic.motions`` uses it).
        duration_s: its length in seconds at speed 1.
        pose: clip time in seconds -> local rotations of the bones it moves (others stay idle).
        description: what the performer does.
    """

    name: str
    duration_s: float
    pose: Callable[[float], Pose]
    description: str


#: The motion script, in play order.
MOTIONS: dict[str, Motion] = {
    m.name: m
    for m in (
        Motion("idle", 4.0, lambda u: {}, "standing relaxed, breathing, looking around"),
        Motion("wave", 5.0, _wave, "waving with the right hand"),
        Motion("raise_left", 5.0, _raise("Left"), "raising the left arm sideways overhead"),
        Motion("raise_right", 5.0, _raise("Right"), "raising the right arm sideways overhead"),
        Motion("raise_forward", 4.0, _raise_forward, "both arms forward, then overhead"),
        Motion("squat", 5.0, _squat, "two squats"),
        Motion("walk", 6.0, _walk, "walking in place"),
        Motion("turn", 6.0, _turn, "turning left and right"),
        Motion("lean", 5.0, _lean, "leaning left and right"),
    )
}

#: Seconds over which a clip blends in from (and out to) the idle pose.
BLEND_S = 0.6
#: Metres: a foot this much higher than the other carries e^-1 of the weight when planting feet.
_SUPPORT_HEIGHT_M = 0.015


# ---------------------------------------------------------------------------------------------
# Rig access


ForwardKinematics = Callable[..., tuple[Any, Any]]


def _default_fk() -> ForwardKinematics:
    from avatarlink.rig import forward_kinematics

    fk: ForwardKinematics = forward_kinematics
    return fk


# Landmarks in bone frames (metres, rest axes: +Y up, +Z the performer's front, +X its left).
# Head frame: origin at the Head joint (top of the neck).
_HEAD_CENTRE = (0.0, 0.095, 0.012)
_HEAD_RADIUS = 0.102
_FACE: dict[str, tuple[float, float, float]] = {
    "nose": (0.0, 0.075, 0.118),
    "left_eye": (0.033, 0.108, 0.092),
    "right_eye": (-0.033, 0.108, 0.092),
    "left_eye_inner": (0.018, 0.108, 0.098),
    "right_eye_inner": (-0.018, 0.108, 0.098),
    "left_eye_outer": (0.049, 0.108, 0.084),
    "right_eye_outer": (-0.049, 0.108, 0.084),
    "left_ear": (0.098, 0.088, 0.0),
    "right_ear": (-0.098, 0.088, 0.0),
    "mouth_left": (0.024, 0.040, 0.103),
    "mouth_right": (-0.024, 0.040, 0.103),
}
# Left hand frame (origin at the wrist; the hand points +X in the T-pose, palm down).
_HAND: dict[str, tuple[float, float, float]] = {
    "index": (0.165, -0.005, 0.025),
    "pinky": (0.145, -0.005, -0.035),
    "thumb": (0.085, -0.020, 0.060),
    "knuckles": (0.095, 0.0, -0.002),
}
# Left foot frame (origin at the ankle; toes point +Z).
_FOOT: dict[str, tuple[float, float, float]] = {
    "heel": (0.0, -0.070, -0.055),
    "foot_index": (0.0, -0.075, 0.165),
    "ball": (0.0, -0.065, 0.110),
}


def _mirror(p: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-p[0], p[1], p[2])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking along -Z from ``position`` (no roll or pitch).

    Attributes:
        width, height: image size in pixels.
        focal_px: focal length in pixels.
        position: float64 (3,) camera centre in scene metres.
    """

    width: int
    height: int
    focal_px: float
    position: F64

    def project(self, points: npt.ArrayLike) -> F64:
        """(..., 3) scene points -> (..., 3) pixel x, pixel y, depth in metres."""
        p = np.asarray(points, np.float64) - self.position
        depth = -p[..., 2]
        safe = np.maximum(depth, 1e-6)
        x = self.width / 2.0 + self.focal_px * p[..., 0] / safe
        y = self.height / 2.0 - self.focal_px * p[..., 1] / safe
        out: F64 = np.stack([x, y, depth], axis=-1)
        return out


@dataclass(frozen=True)
class PerformerPose:
    """The ground truth of one frame.

    Attributes:
        t: script time in seconds (the frame timestamp).
        motion: name of the clip playing.
        rotations: the rig's local bone rotations (all bones valid) and the hip position in
            scene metres.
        joints: float64 (B, 3) global joint positions of the rig's bones, scene metres.
        joint_rotations: float64 (B, 4) global bone rotations, xyzw.
        landmarks: name -> float64 (3,) scene position of every keypoint both layouts use.
    """

    t: float
    motion: str
    rotations: BoneRotations
    joints: F64
    joint_rotations: F64
    landmarks: Mapping[str, F64]


class SyntheticPerformer:
    """The scripted performer for a rig: poses, ground truth and rendered frames.

    Args:
        rig: the rig that defines the skeleton (bone names, parents, rest offsets).
        options: image size, frame rate, script, camera.
        fk: forward kinematics ``fk(rig, local_rot (B, 4), root_pos (3,)) -> (positions (B, 3),
            rotations (B, 4))``; defaults to :func:`avatarlink.rig.forward_kinematics`.
    """

    def __init__(
        self,
        rig: RigLike,
        options: SyntheticOptions | None = None,
        fk: ForwardKinematics | None = None,
    ) -> None:
        self.rig = rig
        self.options = options or SyntheticOptions()
        self._fk = fk or _default_fk()
        self.bones: tuple[str, ...] = tuple(rig.bones)
        self._index = {name: i for i, name in enumerate(self.bones)}
        for required in ("Hips", "Head", "LeftUpperArm", "LeftLowerArm", "LeftHand",
                         "LeftUpperLeg", "LeftLowerLeg", "LeftFoot"):  # fmt: skip
            for name in (required, required.replace("Left", "Right")):
                if name not in self._index:
                    raise ConfigError(f"the synthetic performer needs a rig with bone {name!r}")
        names = self.options.motions or tuple(MOTIONS)
        self.motions: tuple[Motion, ...] = tuple(MOTIONS[n] for n in names)
        self._starts = np.cumsum([0.0] + [m.duration_s for m in self.motions])
        self.duration: float = float(self._starts[-1]) / self.options.speed
        rest_positions = getattr(rig, "rest_positions", None)  # absolute rest joints, if given
        if rest_positions is None:
            rest_positions = rig.rest_local_positions  # the root's entry is its rest position
        self._rest_root = np.asarray(rest_positions, np.float64)[self._index["Hips"]].copy()
        opts = self.options
        focal = (opts.height / 2.0) / math.tan(math.radians(opts.vertical_fov_deg) / 2.0)
        self.camera = Camera(
            opts.width,
            opts.height,
            focal,
            np.array([0.0, opts.camera_height_m, opts.camera_distance_m]),
        )
        rest = self._solve_pose(quat.identity(len(self.bones)), apply_floor=False)
        self._rest_floor_offset, self._rest_anchor = self._foot_support(rest[0], rest[1])
        self._renderer = _Renderer(self.camera, seed=opts.seed, noise=opts.noise)

    # -- ground truth -------------------------------------------------------------------------

    def motion_at(self, t: float) -> tuple[Motion, float]:
        """The clip playing at ``t`` seconds and the clip time (seconds at speed 1)."""
        s = (t * self.options.speed) % float(self._starts[-1])
        i = int(np.searchsorted(self._starts, s, side="right") - 1)
        i = min(max(i, 0), len(self.motions) - 1)
        return self.motions[i], s - float(self._starts[i])

    def local_rotations(self, t: float) -> F64:
        """float64 (B, 4) xyzw local rotations of the rig's bones at ``t`` seconds."""
        motion, u = self.motion_at(t)
        idle = self._pose_array(_idle(t * self.options.speed))
        clip = motion.pose(u)
        if not clip:
            return idle
        blend = _smooth(u / BLEND_S) * _smooth((motion.duration_s - u) / BLEND_S)
        target = idle.copy()
        for name, q in clip.items():
            i = self._index.get(name)
            if i is not None:
                target[i] = q
        return quat.normalize(quat.slerp(idle, target, blend))

    def pose_at(self, t: float) -> PerformerPose:
        """Ground truth at ``t`` seconds: rotations, joints and landmarks."""
        local = self.local_rotations(t)
        joints, rotations, root = self._solve_pose(local, apply_floor=True)
        motion, _ = self.motion_at(t)
        bone_rot = BoneRotations(
            self.bones,
            local.astype(np.float32),
            root.astype(np.float32),
            np.ones(len(self.bones), bool),
            float(t),
        )
        return PerformerPose(
            float(t), motion.name, bone_rot, joints, rotations, self._landmarks(joints, rotations)
        )

    def keypoints(self, pose: PerformerPose, layout: KeypointLayout, space: Space) -> Keypoints:
        """Ground-truth keypoints of one person (P = 1) in ``layout``.

        ``Space.IMAGE``: pixel x, y and camera depth in metres; ``Space.WORLD``: metres in
        avatarlink's world frame, origin at the hip centre. Scores are 1.
        """
        names = layout.names
        xyz = np.stack([pose.landmarks[n] for n in names])
        if space is Space.IMAGE:
            xyz = self.camera.project(xyz)
        else:
            xyz = xyz - 0.5 * (pose.landmarks["left_hip"] + pose.landmarks["right_hip"])
        k = len(names)
        return Keypoints(xyz[None].astype(np.float32), np.ones((1, k), np.float32), layout, space)

    # -- rendering ----------------------------------------------------------------------------

    def render(self, pose: PerformerPose) -> ImageArray:
        """The frame of ``pose``: uint8 (height, width, 3) BGR."""
        return self._renderer.render(self, pose)

    def frame(self, t: float) -> tuple[ImageArray, PerformerPose]:
        """Rendered image and ground truth at ``t`` seconds."""
        pose = self.pose_at(t)
        return self.render(pose), pose

    @property
    def background(self) -> ImageArray:
        """The empty room the performer is drawn over, uint8 (height, width, 3) BGR."""
        return self._renderer.background

    def reader(self) -> SyntheticReader:
        """A :class:`~avatarlink.capture.Reader` that plays the script at ``options.fps``."""
        return SyntheticReader(self)

    # -- internals ----------------------------------------------------------------------------

    def _pose_array(self, pose: Pose) -> F64:
        out = quat.identity(len(self.bones))
        for name, q in pose.items():
            i = self._index.get(name)
            if i is not None:
                out[i] = q
        return out

    def _solve_pose(self, local: F64, apply_floor: bool) -> tuple[F64, F64, F64]:
        root = self._rest_root.copy()
        pos, rot = self._fk(self.rig, local.astype(np.float32), root.astype(np.float32))
        pos = np.asarray(pos, np.float64)
        rot = np.asarray(rot, np.float64)
        if apply_floor:
            # Plant the feet: the lowest foot point stays on the floor (squats lower the hips) and
            # the supporting foot keeps its place (squats move the hips back, not the feet).
            low, anchor = self._foot_support(pos, rot)
            shift = np.array([anchor[0], low - self._rest_floor_offset, anchor[1]])
            shift -= np.array([self._rest_anchor[0], 0.0, self._rest_anchor[1]])
            root = root - shift
            pos = pos - shift
        return pos, rot, root

    def _foot_support(self, pos: F64, rot: F64) -> tuple[float, F64]:
        """The lowest foot point's height and the (x, z) of the ankles weighted by how low each
        foot is (the supporting foot dominates), scene metres."""
        lows, ankles = [], []
        for side, sign in (("Left", 1.0), ("Right", -1.0)):
            i = self._index[f"{side}Foot"]
            local = np.array([_FOOT["heel"], _FOOT["ball"]]) * np.array([sign, 1.0, 1.0])
            pts = pos[i] + quat.rotate(rot[i], local)
            lows.append(float(pts[:, 1].min()))
            ankles.append(pos[i][[0, 2]])
        low = min(lows)
        weights = np.exp(-(np.array(lows) - low) / _SUPPORT_HEIGHT_M)
        anchor: F64 = (weights[:, None] * np.array(ankles)).sum(axis=0) / weights.sum()
        return low, anchor

    def _landmarks(self, pos: F64, rot: F64) -> dict[str, F64]:
        j = self._index
        head = j["Head"]
        out: dict[str, F64] = {}
        face = np.array(list(_FACE.values()))
        for name, p in zip(_FACE, pos[head] + quat.rotate(rot[head], face), strict=True):
            out[name] = p
        for side, sign in (("left", 1.0), ("right", -1.0)):
            cap = side.capitalize()
            out[f"{side}_shoulder"] = pos[j[f"{cap}UpperArm"]]
            out[f"{side}_elbow"] = pos[j[f"{cap}LowerArm"]]
            out[f"{side}_wrist"] = pos[j[f"{cap}Hand"]]
            out[f"{side}_hip"] = pos[j[f"{cap}UpperLeg"]]
            out[f"{side}_knee"] = pos[j[f"{cap}LowerLeg"]]
            out[f"{side}_ankle"] = pos[j[f"{cap}Foot"]]
            hand, foot = j[f"{cap}Hand"], j[f"{cap}Foot"]
            flip = np.array([sign, 1.0, 1.0])
            for name, p in _HAND.items():
                out[f"{side}_{name}"] = pos[hand] + quat.rotate(rot[hand], np.array(p) * flip)
            for name, p in _FOOT.items():
                out[f"{side}_{name}"] = pos[foot] + quat.rotate(rot[foot], np.array(p) * flip)
        return out


class SyntheticReader:
    """Plays a :class:`SyntheticPerformer` as a capture :class:`~avatarlink.capture.Reader`.

    Frame ``i`` has ``t = i / fps`` (media time); with ``options.loop`` false the reader ends
    after one pass of the script.
    """

    live = False

    def __init__(self, performer: SyntheticPerformer) -> None:
        self.performer = performer
        self.fps: float | None = performer.options.fps
        self.name = "synthetic"
        self.skipped = 0
        self._index = 0
        frames = performer.duration * performer.options.fps
        self._end = None if performer.options.loop else math.floor(frames + 1e-9)

    def read(self) -> ReadResult:
        """Render the next frame."""
        if self._end is not None and self._index >= self._end:
            return ReadResult(ReadStatus.END)
        t = self._index / self.performer.options.fps
        self._index += 1
        image, _ = self.performer.frame(t)
        return ReadResult(ReadStatus.OK, image, t)

    def close(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Palette:
    """Colours (BGR) of the performer and the room."""

    skin: tuple[int, int, int] = (122, 160, 210)
    hair: tuple[int, int, int] = (28, 38, 58)
    shirt: tuple[int, int, int] = (70, 72, 178)
    trousers: tuple[int, int, int] = (98, 66, 44)
    shoes: tuple[int, int, int] = (42, 42, 48)
    soles: tuple[int, int, int] = (210, 212, 215)
    lips: tuple[int, int, int] = (90, 95, 170)
    eyes: tuple[int, int, int] = (40, 30, 30)
    wall_top: tuple[int, int, int] = (206, 214, 218)
    wall_bottom: tuple[int, int, int] = (176, 188, 196)
    floor_a: tuple[int, int, int] = (92, 134, 170)
    floor_b: tuple[int, int, int] = (80, 118, 152)


@dataclass(frozen=True)
class BodyShape:
    """Radii (metres) of the rendered body parts (a part is the hull of spheres along it)."""

    neck: tuple[float, float] = (0.052, 0.049)
    upper_arm: tuple[float, float] = (0.052, 0.043)
    lower_arm: tuple[float, float] = (0.041, 0.031)
    upper_leg: tuple[float, float] = (0.085, 0.060)
    lower_leg: tuple[float, float] = (0.058, 0.044)
    #: shoulders, chest, waist (spine), both sides of the waist
    torso: tuple[float, ...] = (0.068, 0.068, 0.125, 0.115, 0.083, 0.083)
    hip: float = 0.092
    #: wrist, knuckles, index, pinky, thumb
    hand: tuple[float, ...] = (0.036, 0.032, 0.014, 0.014, 0.013)
    #: ankle, heel, ball, toe tip
    shoe: tuple[float, ...] = (0.040, 0.045, 0.040, 0.032)
    #: fraction of the shoulder width the torso's shoulder spheres sit inside the shoulder joints
    shoulder_inset: float = 0.075
    #: where the shirt ends, as a fraction of the way from the hip joints to the spine joint
    waist_height: float = 0.45
    #: metres a limb counts as nearer the camera than its centre when sorting parts by depth, so
    #: an arm hanging beside the torso is drawn over it
    limb_bias: float = 0.03
    leg_bias: float = 0.01
    #: metres from the performer to the back wall
    wall_z: float = -1.8
    shading_layers: int = 5
    palette: Palette = field(default_factory=Palette)


_CIRCLE_ANGLES = np.linspace(0.0, 2.0 * np.pi, 20, endpoint=False)
_CIRCLE = np.stack([np.cos(_CIRCLE_ANGLES), np.sin(_CIRCLE_ANGLES)], axis=1)
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_LIGHT_2D = np.array([-0.45, -0.89])  # image-plane direction towards the key light (up-left)
# Layered shading of a part: the innermost layer is this much smaller (fraction of the radius),
# shifted this far towards the light (fraction of the mean radius), and its colour runs from
# _SHADOW_LEVEL to _HIGHLIGHT_LEVEL times the base colour.
_HIGHLIGHT_SHRINK = 0.55
_HIGHLIGHT_SHIFT = 0.38
_SHADOW_LEVEL = 0.62
_HIGHLIGHT_LEVEL = 1.12


@dataclass(frozen=True)
class _Part:
    """A convex body part: spheres (scene metres) swept into one hull, shaded as one piece."""

    depth: float
    centres: F64  # (n, 3) pixel x, y, depth
    radii: F64  # (n,) pixels
    color: tuple[int, int, int]
    extra: Callable[[ImageArray], None] | None = None


class _Renderer:
    """Draws performer poses; the room is rendered once per camera."""

    def __init__(self, camera: Camera, seed: int, noise: float, shape: BodyShape | None = None):
        self.camera = camera
        self.shape = shape or BodyShape()
        self.noise = noise
        self._rng = np.random.default_rng(seed)
        self.background = self._room()
        self._layers = np.linspace(0.0, 1.0, self.shape.shading_layers)
        self._shade_cache: dict[tuple[int, int, int], list[tuple[float, float, float]]] = {}

    def render(self, performer: SyntheticPerformer, pose: PerformerPose) -> ImageArray:
        image: ImageArray = self.background.copy()
        self._shadow(image, pose)
        parts = self._parts(performer, pose)
        for part in sorted(parts, key=lambda p: -p.depth):
            self._blob(image, part.centres[:, :2], part.radii, part.color)
            if part.extra is not None:
                part.extra(image)
        if self.noise > 0:
            noise = self._rng.normal(0.0, self.noise, image.shape).astype(np.float32)
            noisy: ImageArray = np.clip(image + noise, 0, 255).astype(np.uint8)
            return noisy
        return image

    # -- room ---------------------------------------------------------------------------------

    def _room(self) -> ImageArray:
        """Wall with a vertical gradient, tiled wooden floor with distance fog; float ray casts."""
        cam, pal, shape = self.camera, self.shape.palette, self.shape
        h, w = cam.height, cam.width
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        # Ray direction per pixel (camera looks along -Z).
        dx = (xs + 0.5 - w / 2.0) / cam.focal_px
        dy = -(ys + 0.5 - h / 2.0) / cam.focal_px
        cy, cz = cam.position[1], cam.position[2]
        # Floor hit (y = 0) before the wall plane (z = wall_z).
        t_floor = np.where(dy < -1e-9, cy / np.maximum(-dy, 1e-9), np.inf)
        t_wall = cz - shape.wall_z
        floor = t_floor < t_wall
        t_hit = np.where(floor, t_floor, t_wall)
        fx = dx * t_hit
        fz = cz - t_hit
        board = np.floor(fx / 0.16)
        plank = board + np.floor(fz / 1.1 + 0.37 * board)
        checker = (plank % 2 == 0)[..., None]
        floor_rgb = np.where(checker, np.array(pal.floor_a), np.array(pal.floor_b)).astype(float)
        seam = (np.abs(fx / 0.16 - np.round(fx / 0.16)) < 0.04)[..., None]
        floor_rgb = np.where(seam, floor_rgb * 0.8, floor_rgb)
        grain = 3.0 * np.sin(fz * 40.0 + 2.0 * np.sin(fx * 25.0 + board))[..., None]
        fog = np.clip((t_hit - 2.0) / 6.0, 0.0, 0.5)[..., None]
        floor_rgb = floor_rgb + grain
        floor_rgb = floor_rgb * (1.0 - fog) + np.array(pal.wall_bottom) * fog
        wy = cy + dy * t_wall
        a = np.clip(wy / 2.6, 0.0, 1.0)[..., None]
        wall_rgb = np.array(pal.wall_bottom) * (1 - a) + np.array(pal.wall_top) * a
        skirting = (wy < 0.08)[..., None]
        wall_rgb = np.where(skirting, np.array([222.0, 226.0, 230.0]), wall_rgb)
        image = np.where(floor[..., None], floor_rgb, wall_rgb)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _shadow(self, image: ImageArray, pose: PerformerPose) -> None:
        """A soft elliptical contact shadow under the feet."""
        lm = pose.landmarks
        feet = np.stack([lm["left_heel"], lm["right_heel"], lm["left_foot_index"],
                         lm["right_foot_index"]])  # fmt: skip
        centre = feet.mean(axis=0) * np.array([1.0, 0.0, 1.0])
        half = max(0.25, float(np.ptp(feet[:, 0])) / 2 + 0.12)
        ring = centre + np.stack(
            [half * _CIRCLE[:, 0], np.zeros(len(_CIRCLE)), 0.22 * _CIRCLE[:, 1]], axis=1
        )
        pts = self.camera.project(ring)[:, :2]
        x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 8
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 8
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        poly = np.round((pts - [x0, y0]) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillConvexPoly(mask, poly, 255, cv2.LINE_AA, _SHIFT)
        mask = cv2.GaussianBlur(mask, (0, 0), 4.0)
        roi = image[y0:y1, x0:x1]
        k = (mask.astype(np.float32) * (0.45 / 255.0))[..., None]
        roi[:] = (roi * (1.0 - k)).astype(np.uint8)

    # -- body ---------------------------------------------------------------------------------

    def _parts(self, performer: SyntheticPerformer, pose: PerformerPose) -> list[_Part]:
        """Every body part with its projected spheres, pixel radii and depth."""
        shape, pal = self.shape, self.shape.palette
        j = performer._index
        pos, lm = pose.joints, pose.landmarks
        specs: list[tuple[list[F64], Sequence[float], tuple[int, int, int], float]] = []
        for side in ("Left", "Right"):
            sh, el, wr = (pos[j[f"{side}{b}"]] for b in ("UpperArm", "LowerArm", "Hand"))
            hp, kn, an = (pos[j[f"{side}{b}"]] for b in ("UpperLeg", "LowerLeg", "Foot"))
            s = side.lower()
            hand = [wr] + [lm[f"{s}_{n}"] for n in ("knuckles", "index", "pinky", "thumb")]
            foot = [an] + [lm[f"{s}_{n}"] for n in ("heel", "ball", "foot_index")]
            specs += [
                ([sh, el], shape.upper_arm, pal.shirt, shape.limb_bias),
                ([el, wr], shape.lower_arm, pal.skin, shape.limb_bias),
                (hand, shape.hand, pal.skin, shape.limb_bias),
                ([hp, kn], shape.upper_leg, pal.trousers, shape.leg_bias),
                ([kn, an], shape.lower_leg, pal.trousers, shape.leg_bias),
                (foot, shape.shoe, pal.shoes, shape.limb_bias),
            ]
        hips = pos[j["Hips"]]
        spine = pos[j["Spine"]] if "Spine" in j else hips
        chest = next((pos[j[b]] for b in ("UpperChest", "Chest") if b in j), spine)
        neck = pos[j["Neck"]] if "Neck" in j else pos[j["Head"]]
        l_sh, r_sh = pos[j["LeftUpperArm"]], pos[j["RightUpperArm"]]
        l_hp, r_hp = pos[j["LeftUpperLeg"]], pos[j["RightUpperLeg"]]
        inward = shape.shoulder_inset * (r_sh - l_sh)
        waist_l = l_hp + shape.waist_height * (spine - l_hp)
        waist_r = r_hp + shape.waist_height * (spine - r_hp)
        torso = [l_sh + inward, r_sh - inward, chest, spine, waist_l, waist_r]
        specs += [
            (torso, shape.torso, pal.shirt, 0.0),
            ([l_hp, r_hp, hips, waist_l, waist_r], (shape.hip,) * 5, pal.trousers, -0.01),
            ([neck, pos[j["Head"]]], shape.neck, pal.skin, -0.02),
        ]
        head_i = j["Head"]
        centre = pos[head_i] + quat.rotate(pose.joint_rotations[head_i], np.array(_HEAD_CENTRE))
        specs.append(([centre], (_HEAD_RADIUS,), pal.skin, 0.0))
        # One projection for every sphere of every part.
        counts = [len(points) for points, _, _, _ in specs]
        proj = self.camera.project(np.concatenate([np.stack(p) for p, _, _, _ in specs]))
        radii_m = np.concatenate([np.asarray(r, np.float64) for _, r, _, _ in specs])
        radii = radii_m * self.camera.focal_px / np.maximum(proj[:, 2], 1e-3)
        parts: list[_Part] = []
        start = 0
        for (_, _, color, bias), n in zip(specs, counts, strict=True):
            c, r = proj[start : start + n], radii[start : start + n]
            parts.append(_Part(float(c[:, 2].mean()) - bias, c, r, color))
            start += n
        parts[-1] = dataclasses.replace(parts[-1], extra=self._face_drawer(pose, head_i, pos))
        return parts

    def _blob(
        self, image: ImageArray, centres: F64, radii: F64, color: tuple[int, int, int]
    ) -> None:
        """Fill the convex hull of circles in layers, from a dark rim to a lit centre that is
        offset towards the light."""
        k = self._layers
        # (L, n, S, 2): every layer's circles at once; layer l shrinks and moves to the light.
        offset = _LIGHT_2D[None] * (float(radii.mean()) * _HIGHLIGHT_SHIFT * k)[:, None]
        rad = radii[None, :, None, None] * (1.0 - _HIGHLIGHT_SHRINK * k)[:, None, None, None]
        pts = centres[None, :, None, :] + offset[:, None, None, :] + rad * _CIRCLE[None, None]
        fixed = np.round(pts.reshape(len(k), -1, 2) * (1 << _SHIFT)).astype(np.int32)
        for layer, shade in zip(fixed, self._shades(color), strict=True):
            cv2.fillConvexPoly(image, cv2.convexHull(layer), shade, cv2.LINE_AA, _SHIFT)

    def _shades(self, color: tuple[int, int, int]) -> list[tuple[float, float, float]]:
        """The layer colours of a base colour, from shadow to highlight (cached)."""
        shades = self._shade_cache.get(color)
        if shades is None:
            factors = _SHADOW_LEVEL + (_HIGHLIGHT_LEVEL - _SHADOW_LEVEL) * self._layers
            rows = np.clip(np.outer(factors, color), 0, 255)
            shades = [(float(b), float(g), float(r)) for b, g, r in rows]
            self._shade_cache[color] = shades
        return shades

    def _face_drawer(
        self, pose: PerformerPose, head_i: int, pos: F64
    ) -> Callable[[ImageArray], None]:
        """Hair, eyes, brows, nose, mouth and ears, drawn after the head sphere."""
        cam, pal = self.camera, self.shape.palette
        rot = pose.joint_rotations[head_i]
        origin = pos[head_i]
        centre = origin + quat.rotate(rot, np.array(_HEAD_CENTRE))
        to_cam = cam.position - centre
        to_cam /= np.linalg.norm(to_cam)

        def facing(local: npt.ArrayLike) -> float:
            normal = quat.rotate(rot, np.asarray(local, np.float64) - np.array(_HEAD_CENTRE))
            return float(normal @ to_cam / max(np.linalg.norm(normal), 1e-9))

        def px(local: npt.ArrayLike) -> F64:
            out: F64 = cam.project(origin + quat.rotate(rot, np.asarray(local, np.float64)))
            return out

        def draw(image: ImageArray) -> None:
            scale = cam.focal_px / max(float(px(_HEAD_CENTRE)[..., 2]), 1e-3)
            # Hair: the visible part of a cap over the top and back of the head.
            dirs = _SPHERE_DIRS
            cap = dirs[(dirs[:, 1] > 0.28) | ((dirs[:, 2] < -0.2) & (dirs[:, 1] > -0.55))]
            local = np.array(_HEAD_CENTRE) + cap * (_HEAD_RADIUS * 1.06)
            world_n = quat.rotate(rot, cap)
            visible = world_n @ to_cam > -0.05
            if visible.sum() >= 3:
                pts = cam.project(origin + quat.rotate(rot, local[visible]))[:, :2]
                hull = cv2.convexHull(np.round(pts * (1 << _SHIFT)).astype(np.int32))
                hair = tuple(float(v) for v in pal.hair)
                cv2.fillConvexPoly(image, hull, hair, cv2.LINE_AA, _SHIFT)
            dot_r = max(1, round(0.009 * scale))
            for side in ("left", "right"):
                ear = _FACE[f"{side}_ear"]
                if abs(facing(ear)) < 0.55:
                    c = px(ear)[:2]
                    axes = (max(1, round(0.018 * scale)), max(1, round(0.03 * scale)))
                    cv2.ellipse(image, _pt(c), axes, 0, 0, 360, pal.skin, -1, cv2.LINE_AA)
                eye = _FACE[f"{side}_eye"]
                if facing(eye) > 0.25:
                    c = px(eye)[:2]
                    cv2.circle(image, _pt(c), dot_r + 1, (235, 235, 235), -1, cv2.LINE_AA)
                    cv2.circle(image, _pt(c), dot_r, pal.eyes, -1, cv2.LINE_AA)
                    sign = 1.0 if side == "left" else -1.0
                    b0 = px((sign * 0.018, 0.128, 0.098))[:2]
                    b1 = px((sign * 0.052, 0.126, 0.084))[:2]
                    cv2.line(image, _pt(b0), _pt(b1), pal.hair, max(1, dot_r), cv2.LINE_AA)
            if facing(_FACE["nose"]) > 0.2:
                n0 = px((0.0, 0.100, 0.108))[:2]
                n1 = px(_FACE["nose"])[:2]
                shade = tuple(float(v) * 0.8 for v in pal.skin)
                cv2.line(image, _pt(n0), _pt(n1), shade, max(1, dot_r), cv2.LINE_AA)
            if facing((0.0, 0.040, 0.103)) > 0.25:
                m0, m1 = px(_FACE["mouth_left"])[:2], px(_FACE["mouth_right"])[:2]
                cv2.line(image, _pt(m0), _pt(m1), pal.lips, max(1, dot_r), cv2.LINE_AA)

        return draw


def _fibonacci_sphere(n: int) -> F64:
    i = np.arange(n) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - y * y)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    out: F64 = np.stack([r * np.cos(phi), y, r * np.sin(phi)], axis=1)
    return out


_SPHERE_DIRS = _fibonacci_sphere(160)


def _pt(p: F64) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))


def ground_truth_keypoints(
    performer: SyntheticPerformer, t: float, layout: KeypointLayout
) -> tuple[Keypoints, Keypoints]:
    """Image-space and world-space ground truth (P = 1) of the frame at ``t`` seconds."""
    pose = performer.pose_at(t)
    return (
        performer.keypoints(pose, layout, Space.IMAGE),
        performer.keypoints(pose, layout, Space.WORLD),
    )


def torso_size_px(keypoints: Keypoints) -> FloatArray:
    """Per person (P,): distance from the shoulder centre to the hip centre, in the keypoints'
    units (pixels for image keypoints); the scale torso-normalised errors divide by."""
    layout = keypoints.layout
    idx = [layout.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    p = keypoints.xyz[:, idx, :2].astype(np.float64)
    shoulders = 0.5 * (p[:, 0] + p[:, 1])
    hips = 0.5 * (p[:, 2] + p[:, 3])
    out: FloatArray = np.linalg.norm(shoulders - hips, axis=1).astype(np.float32)
    return out
