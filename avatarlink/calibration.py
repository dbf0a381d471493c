"""Calibration: measure the performer's proportions and facing from a few seconds of T-pose.

The performer stands facing the camera in a T-pose (arms straight out) or an A-pose (arms straight,
30-60 degrees down), whole body in view. Every frame is checked (keypoints visible, arms and legs
straight, arms level or lowered as the pose asks, legs vertical); frames that fail are rejected
with a reason. From the accepted frames the median length of every lifting segment
(:func:`avatarlink.lift.segment_lengths` names: ``torso``, ``shoulders``, ``left_upper_arm`` ...)
is measured, and, for world keypoints (BlazePose), the direction the performer faces relative to
the camera. In a T-pose facing the camera the body is in the image plane, so image lengths are
true lengths up to one scale: ratios are measured in the image, and metres come from the
performer's height when given (else from the rig's torso). Feet and the neck point partly at the
camera and keep the rig's proportions.

The result is a profile YAML that ``avatarlink run --profile FILE`` loads:
:func:`load_profile`, then :meth:`CalibrationProfile.apply` gives the lifter lengths and the
solver's facing correction.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from avatarlink.errors import ConfigError, InputError, RigError
from avatarlink.lift import LiftConfig, segment_lengths
from avatarlink.rig import Rig, dotted, load_yaml_with_lines
from avatarlink.skeletons import KeypointLayout
from avatarlink.solver import SolverConfig, dataclass_from_mapping
from avatarlink.types import Keypoints, Space

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

PROFILE_VERSION = 1
REQUIRED = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# Segments measured in the pose (in the image plane when facing the camera).
_MEASURED = {
    "torso": (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder")),
    "hips": (("left_hip",), ("right_hip",)),
    "shoulders": (("left_shoulder",), ("right_shoulder",)),
    "upper_arm": (("{s}_shoulder",), ("{s}_elbow",)),
    "forearm": (("{s}_elbow",), ("{s}_wrist",)),
    "thigh": (("{s}_hip",), ("{s}_knee",)),
    "shin": (("{s}_knee",), ("{s}_ankle",)),
}
# Eye to top of head of an adult, metres: turns the nose-to-ankle span into a stature.
_EYE_TO_CROWN_M = 0.12


class CalibrationError(InputError):
    """The calibration could not be measured (pose not held, body not fully visible...)."""


@dataclass(frozen=True)
class CalibrationConfig:
    """Tuning of the calibration (the ``calibration`` section).

    Attributes:
        seconds: how long to record.
        pose: ``"t"``, ``"a"`` or ``"auto"`` (either, the same in every accepted frame).
        min_score: keypoints scoring below this count as not visible.
        min_good_fraction: share of frames that must pass every check.
        straight_tolerance_deg: elbows and knees must be straighter than this.
        t_pose_tolerance_deg: T-pose arms within this of horizontal.
        a_pose_range_deg: A-pose arms this far below horizontal, (min, max).
        legs_vertical_tolerance_deg: legs within this of vertical.
        max_spread: largest allowed relative spread (MAD / median) of the torso length.
        height_m: the performer's height; None keeps the rig's scale (only ratios are measured).
    """

    seconds: float = 3.0
    pose: str = "auto"
    min_score: float = 0.5
    min_good_fraction: float = 0.6
    straight_tolerance_deg: float = 25.0
    t_pose_tolerance_deg: float = 25.0
    a_pose_range_deg: tuple[float, float] = (25.0, 65.0)
    legs_vertical_tolerance_deg: float = 20.0
    max_spread: float = 0.1
    height_m: float | None = None

    def __post_init__(self) -> None:
        if self.pose not in ("t", "a", "auto"):
            raise ConfigError(f"calibration.pose must be t, a or auto, got {self.pose!r}")
        if not self.seconds > 0:
            raise ConfigError(f"calibration.seconds must be > 0 s, got {self.seconds!r}")
        if not 0 < self.min_good_fraction <= 1:
            raise ConfigError(
                f"calibration.min_good_fraction must be in (0, 1], got {self.min_good_fraction!r}"
            )
        if self.height_m is not None and not 0.5 < self.height_m < 3.0:
            raise ConfigError(f"calibration.height_m must be in (0.5, 3) m, got {self.height_m!r}")


def calibration_config_from_mapping(
    data: Mapping[str, Any] | None,
    source: str,
    lines: Mapping[str, int],
    prefix: str = "calibration",
) -> CalibrationConfig:
    """Validate the ``calibration`` config section; errors name the dotted key, file and line."""
    cfg: CalibrationConfig = dataclass_from_mapping(CalibrationConfig, data, source, lines, prefix)
    return cfg


@dataclass(frozen=True)
class CalibrationProfile:
    """A performer's measured proportions and facing.

    Attributes:
        rig: the rig it was measured for (its proportions fill what was not measured).
        layout: keypoint layout used.
        pose: ``"t"`` or ``"a"``.
        segment_lengths_m: lifting segment lengths in metres (see :func:`segment_lengths`).
        ratios: measured segment lengths over the torso length.
        scale: ``"height"`` (metres from ``height_m``), ``"world"`` (metric 3D keypoints) or
            ``"rig"`` (the rig's torso length).
        height_m: the height given, if any.
        facing_yaw_deg: the performer's facing relative to the camera about +Y (3D input only;
            0 for image keypoints, which cannot tell).
        camera_roll_deg: how far the body's vertical leans in the image (camera roll).
        frames_used, frames_total: accepted and recorded frames.
        source: where the frames came from.
    """

    rig: str
    layout: str
    pose: str
    segment_lengths_m: Mapping[str, float]
    ratios: Mapping[str, float]
    scale: str
    height_m: float | None
    facing_yaw_deg: float
    camera_roll_deg: float
    frames_used: int
    frames_total: int
    source: str = ""

    def apply(
        self, solver: SolverConfig | None = None, lift: LiftConfig | None = None
    ) -> tuple[SolverConfig, dict[str, float]]:
        """The solver config with this facing correction, and the lifter's ``lengths``.

        Usage: ``solver_cfg, lengths = profile.apply(cfg)``; ``Lifter(rig, lift_cfg, lengths)``.
        """
        solver = dataclasses.replace(solver or SolverConfig(), facing_yaw_deg=self.facing_yaw_deg)
        return solver, dict(self.segment_lengths_m)


@dataclass
class FrameCheck:
    """Outcome of checking one frame: ``ok`` or the first reason it was rejected."""

    ok: bool
    reason: str = ""
    pose: str = ""


@dataclass
class _Accumulator:
    lengths: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    yaw: list[float] = field(default_factory=list)
    roll: list[float] = field(default_factory=list)
    span: list[float] = field(default_factory=list)  # nose-to-ankle (px or m)
    poses: list[str] = field(default_factory=list)


class Calibrator:
    """Accumulates frames of one performer holding the pose; :meth:`result` measures.

    Feed :meth:`add` with the estimator's keypoints, image or world (the most confident person of
    each frame is used); frames may mix, the world ones decide scale and facing.

    ``lift`` is the config of the lifter that will use the profile (default ``LiftConfig()``):
    the profile's lengths are between the points its layout marks (COCO-17's annotated hips,
    ``coco_offsets``), as the lifter measures them; ``LiftConfig(coco_offsets=False)`` for
    keypoints on the rig's joint centres.
    """

    def __init__(
        self,
        rig: Rig,
        config: CalibrationConfig | None = None,
        source: str = "",
        lift: LiftConfig | None = None,
    ) -> None:
        self.rig = rig
        self.lift = lift if lift is not None else LiftConfig()
        self.config = config or CalibrationConfig()
        self.source = source
        self.frames = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self.missing: collections.Counter[str] = collections.Counter()
        self._image = _Accumulator()
        self._world = _Accumulator()
        self.layout: KeypointLayout | None = None

    def add(self, keypoints: Keypoints) -> FrameCheck:
        """Check one frame and keep its measurements when it passes."""
        self.frames += 1
        if self.layout is None:
            self.layout = keypoints.layout
        if keypoints.num_persons == 0:
            self.rejected["nobody in view"] += 1
            return FrameCheck(False, "nobody in view")
        p = int(np.argmax(keypoints.person_score))
        names = keypoints.layout.names
        xyz = np.asarray(keypoints.xyz[p], np.float64)
        world = keypoints.space is Space.WORLD
        if not world:
            xyz = xyz * np.array([1.0, -1.0, 1.0])  # image y down -> up
        visible = (keypoints.score[p] >= self.config.min_score) & np.isfinite(xyz[:, :2]).all(1)
        pts = {n: xyz[i] if world else np.array([xyz[i, 0], xyz[i, 1], 0.0])
               for i, n in enumerate(names) if visible[i]}  # fmt: skip
        missing = [n for n in REQUIRED if n not in pts]
        if missing:
            self.missing.update(missing)
            reason = f"not visible: {', '.join(missing)}"
            self.rejected["body not fully visible"] += 1
            return FrameCheck(False, reason)
        check = self._check_pose(pts)
        if not check.ok:
            self.rejected[check.reason] += 1
            return check
        acc = self._world if world else self._image
        for name, length in _measure(pts).items():
            acc.lengths[name].append(length)
        pelvis = (pts["left_hip"] + pts["right_hip"]) / 2
        thorax = (pts["left_shoulder"] + pts["right_shoulder"]) / 2
        up = thorax - pelvis
        acc.roll.append(math.degrees(math.atan2(up[0], up[1])))
        if world:
            left = (pts["left_shoulder"] - pts["right_shoulder"]) + (
                pts["left_hip"] - pts["right_hip"]
            )
            forward = np.cross(left, up)
            acc.yaw.append(math.degrees(math.atan2(forward[0], forward[2])))
        if "nose" in pts:
            ankles = (pts["left_ankle"] + pts["right_ankle"]) / 2
            acc.span.append(float(pts["nose"][1] - ankles[1]))
        acc.poses.append(check.pose)
        return check

    def _check_pose(self, pts: Mapping[str, F64]) -> FrameCheck:
        cfg = self.config
        arm_pose = []
        for side in ("left", "right"):
            s, e, w = pts[f"{side}_shoulder"], pts[f"{side}_elbow"], pts[f"{side}_wrist"]
            bend = _angle(e - s, w - e)
            if bend > cfg.straight_tolerance_deg:
                return FrameCheck(False, f"{side} arm bent ({bend:.0f} deg at the elbow)")
            arm = w - s
            below = math.degrees(math.atan2(-arm[1], math.hypot(arm[0], arm[2])))
            if abs(below) <= cfg.t_pose_tolerance_deg and cfg.pose in ("t", "auto"):
                arm_pose.append("t")
            elif cfg.a_pose_range_deg[0] <= below <= cfg.a_pose_range_deg[1] and cfg.pose in (
                "a",
                "auto",
            ):
                arm_pose.append("a")
            else:
                want = {"t": "level (T-pose)", "a": "30-60 deg down (A-pose)",
                        "auto": "level (T-pose) or 30-60 deg down (A-pose)"}[cfg.pose]  # fmt: skip
                where = "below" if below > 0 else "above"
                return FrameCheck(
                    False, f"{side} arm {abs(below):.0f} deg {where} horizontal, want {want}"
                )
            h, k, a = pts[f"{side}_hip"], pts[f"{side}_knee"], pts[f"{side}_ankle"]
            knee = _angle(k - h, a - k)
            if knee > cfg.straight_tolerance_deg:
                return FrameCheck(False, f"{side} knee bent ({knee:.0f} deg)")
            tilt = _angle(a - h, np.array([0.0, -1.0, 0.0]))
            if tilt > cfg.legs_vertical_tolerance_deg:
                return FrameCheck(False, f"{side} leg {tilt:.0f} deg from vertical")
        if arm_pose[0] != arm_pose[1]:
            return FrameCheck(False, "arms differ (one level, one lowered)")
        return FrameCheck(True, pose=arm_pose[0])

    def result(self) -> CalibrationProfile:
        """Measure the profile from the accepted frames.

        Raises:
            CalibrationError: too few accepted frames (the message says why frames were rejected
                and what to do), or the measurements spread too much (pose not held still).
        """
        cfg = self.config
        use_world = bool(self._world.poses)
        acc = self._world if use_world else self._image
        good = len(acc.poses)
        if self.frames == 0:
            raise CalibrationError("calibration: no frames were recorded (check the source)")
        if good < max(1, math.ceil(cfg.min_good_fraction * self.frames)):
            raise CalibrationError(self._failure_message(good))
        poses = collections.Counter(acc.poses)
        pose = poses.most_common(1)[0][0]
        med = {k: float(np.median(v)) for k, v in acc.lengths.items()}
        torso = acc.lengths["torso"]
        spread = float(np.median(np.abs(np.array(torso) - med["torso"]))) / med["torso"]
        if spread > cfg.max_spread:
            raise CalibrationError(
                f"calibration: the pose was not held still (torso length varied by "
                f"{100 * spread:.0f}% between frames, at most {100 * cfg.max_spread:.0f}% "
                "allowed); stand still for the whole recording"
            )
        layout = self.layout or self.rig.layouts[0]
        rig_lengths = segment_lengths(self.rig, layout, self.lift)
        ratios = {k: v / med["torso"] for k, v in med.items()}
        if use_world:
            metres_per_unit, scale = 1.0, "world"
        elif cfg.height_m is not None and acc.span:
            nose = self.rig.rest_point("nose")
            ankles = self.rig.rest_point("mid(left_ankle, right_ankle)")
            eyes_y = self.rig.rest_point("mid(left_eye, right_eye)")[1]
            rig_span, rig_stature = nose[1] - ankles[1], eyes_y + _EYE_TO_CROWN_M
            # The performer's nose-to-ankle span is the rig's share of the given height.
            span_m = rig_span * cfg.height_m / rig_stature
            metres_per_unit, scale = span_m / float(np.median(acc.span)), "height"
        else:
            metres_per_unit, scale = rig_lengths["torso"] / med["torso"], "rig"
        lengths = dict(rig_lengths)
        # Unmeasured segments (feet, neck) keep the rig's proportions at the measured scale.
        torso_m = med["torso"] * metres_per_unit
        for k in lengths:
            lengths[k] = rig_lengths[k] * torso_m / rig_lengths["torso"]
        for k, v in med.items():
            if k in ("upper_arm", "forearm", "thigh", "shin"):
                for side in ("left", "right"):
                    lengths[f"{side}_{k}"] = v * metres_per_unit
            else:
                lengths[k] = v * metres_per_unit
        return CalibrationProfile(
            rig=self.rig.name,
            layout=layout.value,
            pose=pose,
            segment_lengths_m={k: round(v, 4) for k, v in lengths.items()},
            ratios={k: round(v, 4) for k, v in ratios.items()},
            scale=scale,
            height_m=cfg.height_m,
            facing_yaw_deg=round(float(np.median(acc.yaw)), 2) if acc.yaw else 0.0,
            camera_roll_deg=round(float(np.median(acc.roll)), 2),
            frames_used=good,
            frames_total=self.frames,
            source=self.source,
        )

    def _failure_message(self, good: int) -> str:
        share = 100.0 * good / max(self.frames, 1)
        need = 100.0 * self.config.min_good_fraction
        reasons = "; ".join(f"{r} ({n} frames)" for r, n in self.rejected.most_common(3))
        if self.rejected and self.rejected.most_common(1)[0][0] == "body not fully visible":
            parts = ", ".join(f"{n} ({c})" for n, c in self.missing.most_common(4))
            return (
                f"calibration: body not fully visible: only {good} of {self.frames} frames "
                f"({share:.0f}%, need {need:.0f}%) showed the whole body; missing most often: "
                f"{parts}. Step back until head, hands and feet are all in the frame."
            )
        pose = {"t": "a T-pose", "a": "an A-pose", "auto": "a T- or A-pose"}[self.config.pose]
        return (
            f"calibration: the pose was not held: {good} of {self.frames} frames ({share:.0f}%, "
            f"need {need:.0f}%) showed {pose}; rejected: {reasons}. Stand facing the camera, "
            "arms straight out to the sides (or straight and lowered for an A-pose), legs "
            "straight, and hold still."
        )


def calibrate(
    frames: Iterable[Keypoints],
    rig: Rig,
    config: CalibrationConfig | None = None,
    source: str = "",
    lift: LiftConfig | None = None,
) -> CalibrationProfile:
    """Run a :class:`Calibrator` over keypoint frames and return the profile (``lift``: the
    config of the lifter that will use it, see :class:`Calibrator`)."""
    cal = Calibrator(rig, config, source, lift)
    for kp in frames:
        cal.add(kp)
    return cal.result()


def _measure(pts: Mapping[str, F64]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, (a, b) in _MEASURED.items():
        sides = ("left", "right") if "{s}" in a[0] else ("",)
        values = []
        for s in sides:
            pa = np.mean([pts[n.format(s=s)] for n in a], axis=0)
            pb = np.mean([pts[n.format(s=s)] for n in b], axis=0)
            values.append(float(np.linalg.norm(pa - pb)))
        out[name] = float(np.mean(values))  # left and right averaged: people are symmetric
    return out


def _angle(u: F64, v: F64) -> float:
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu < 1e-9 or nv < 1e-9:
        return 0.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / (nu * nv)))))


# ---------------------------------------------------------------------------------------------
# Profile files
# ---------------------------------------------------------------------------------------------


def save_profile(profile: CalibrationProfile, path: str | Path) -> Path:
    """Write a profile YAML (with a header saying what it is)."""
    path = Path(path)
    data = {"avatarlink_profile": PROFILE_VERSION, **dataclasses.asdict(profile)}
    data["segment_lengths_m"] = dict(profile.segment_lengths_m)
    data["ratios"] = dict(profile.ratios)
    header = (
        "# avatarlink calibration profile: the performer's segment lengths (metres) and facing.\n"
        f"# Load with: avatarlink run --profile {path.name}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_profile(path: str | Path) -> CalibrationProfile:
    """Read and validate a profile YAML.

    Raises:
        ConfigError: unreadable or invalid file (naming the file, line and key).
    """
    path = Path(path)
    try:
        data, lines = load_yaml_with_lines(path)
    except RigError as exc:
        raise ConfigError(str(exc).replace("rig file", "profile")) from exc

    def fail(key: tuple[str, ...], message: str) -> ConfigError:
        line = lines.get(key, lines.get(key[:1], 0))
        return ConfigError(f"{path}:{line}: {dotted(key) or '(top level)'}: {message}")

    if not isinstance(data, dict) or "avatarlink_profile" not in data:
        raise fail((), "not an avatarlink calibration profile (no 'avatarlink_profile' key)")
    if data["avatarlink_profile"] != PROFILE_VERSION:
        raise fail(("avatarlink_profile",), f"unsupported version {data['avatarlink_profile']!r}")
    known = {f.name for f in dataclasses.fields(CalibrationProfile)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "avatarlink_profile":
            continue
        if key not in known:
            raise fail((key,), f"unknown key; valid: {', '.join(sorted(known))}")
        values[key] = value
    for key in ("segment_lengths_m", "ratios"):
        raw = values.get(key)
        if not isinstance(raw, dict):
            raise fail((key,), "expected a mapping of segment name to number")
        for name, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise fail((key, name), f"expected a positive number, got {v!r}")
        values[key] = {str(k): float(v) for k, v in raw.items()}
    for key in ("facing_yaw_deg", "camera_roll_deg"):
        v = values.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise fail((key,), f"expected a number of degrees, got {v!r}")
        values[key] = float(v)
    for key in ("rig", "layout", "pose", "scale"):
        if not isinstance(values.get(key), str):
            raise fail((key,), f"expected a string, got {values.get(key)!r}")
    for key in ("frames_used", "frames_total"):
        if not isinstance(values.get(key), int):
            raise fail((key,), f"expected an integer, got {values.get(key)!r}")
    values.setdefault("height_m", None)
    values.setdefault("source", "")
    return CalibrationProfile(**values)
