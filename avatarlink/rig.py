"""Humanoid rigs: the rig YAML schema, a line-keeping loader, validation, and forward kinematics.

A rig is one YAML file (presets in ``rigs/``; see ``rigs/unity_humanoid.yaml`` for a commented
example). It names each bone with its Unity ``HumanBodyBones`` name and gives

- ``parent``, ``position`` (rest local position: metres from the parent joint, in the file's
  axes; a real T-pose, never zeros except the root), ``target`` (the bone's name in the target
  armature), an optional ``direction`` (the rest direction, checked against ``drive``);
- ``drive``: the two keypoints whose direction the bone follows (``from``/``to``: a keypoint name
  such as ``left_elbow``, a name from ``virtual``, or an inline ``mid(a, b)``);
- ``up``: the twist reference: ``{from, to}`` (a second direction, e.g. the hip line), or
  ``{hinge: ChildBone}`` (the plane of this bone and its hinged child, e.g. an upper arm from its
  elbow); no ``up`` means minimal twist relative to the parent;
- ``fit``: three or more keypoints sitting on this bone (e.g. nose, eyes and ears on the Head):
  the bone's rotation is then the least-squares fit of their rest layout onto the observed points,
  which averages out noise and survives a few missing points; ``drive``/``up`` remain the fallback;
- ``distribute``: bones of a chain sharing this bone's rotation, ``{Spine: 0.34, ...}``;
- ``limits`` in degrees: ``{swing, swing_centre, twist: [min, max]}`` or
  ``{hinge: {axis, range: [min, max]}}`` (positive angles turn right-handed about ``axis``).

Rig-level keys: ``convention`` (``unity`` left-handed +Y up, ``blender`` right-handed +Z up,
``gltf`` right-handed +Y up: the axes the file's numbers are written in and the target expects),
``forward`` (the axis the character faces in that convention), ``mirror``, ``layouts``
(``coco17``, ``blazepose33``), ``hip_height``, ``virtual`` (named keypoint expressions) and
``keypoints`` (where each keypoint sits on the rest pose: a bone's joint plus an offset).

Loaded rigs are expressed in avatarlink's world frame (:mod:`avatarlink.types`: metres,
right-handed, +Y up, the character faces +Z, its left at +X) with identity rest rotations: a
bone's local rotation is relative to its rest orientation, in world axes. Every validation error
is a :class:`~avatarlink.errors.RigError` naming the file, the line and the dotted key.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from avatarlink import quat
from avatarlink.errors import RigError
from avatarlink.skeletons import KeypointLayout

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

_FINGERS = ("Thumb", "Index", "Middle", "Ring", "Little")
_PHALANGES = ("Proximal", "Intermediate", "Distal")

#: Unity ``HumanBodyBones`` names in enum order (55 bones).
HUMAN_BONES: tuple[str, ...] = (
    "Hips", "LeftUpperLeg", "RightUpperLeg", "LeftLowerLeg", "RightLowerLeg", "LeftFoot",
    "RightFoot", "Spine", "Chest", "Neck", "Head", "LeftShoulder", "RightShoulder",
    "LeftUpperArm", "RightUpperArm", "LeftLowerArm", "RightLowerArm", "LeftHand", "RightHand",
    "LeftToes", "RightToes", "LeftEye", "RightEye", "Jaw",
    *(f"Left{f}{p}" for f in _FINGERS for p in _PHALANGES),
    *(f"Right{f}{p}" for f in _FINGERS for p in _PHALANGES),
    "UpperChest",
)  # fmt: skip

#: Limit kinds in :attr:`BoneLimits.kind`.
LIMIT_FREE, LIMIT_CONE, LIMIT_HINGE = 0, 1, 2

#: Target conventions: (handedness sign +1 right / -1 left, up axis) of the file's numbers.
CONVENTIONS: Mapping[str, tuple[int, str]] = MappingProxyType(
    {"unity": (-1, "+Y"), "blender": (1, "+Z"), "gltf": (1, "+Y")}
)
_DEFAULT_FORWARD = {"unity": "+Z", "blender": "-Y", "gltf": "+Z"}
_AXES = {
    "+X": (1.0, 0.0, 0.0), "-X": (-1.0, 0.0, 0.0), "+Y": (0.0, 1.0, 0.0),
    "-Y": (0.0, -1.0, 0.0), "+Z": (0.0, 0.0, 1.0), "-Z": (0.0, 0.0, -1.0),
}  # fmt: skip

_TOP_KEYS = (
    "name", "description", "convention", "forward", "mirror", "layouts", "units", "hip_height",
    "rest_direction_tolerance_deg", "virtual", "keypoints", "bones",
)  # fmt: skip
_BONE_KEYS = (
    "target", "parent", "position", "direction", "drive", "up", "fit", "distribute", "limits",
)  # fmt: skip
_MID_RE = re.compile(r"^mid\((.*)\)$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Hinge axes may deviate this much from perpendicular to the bone before the file is rejected.
_HINGE_PERPENDICULAR_TOLERANCE_DEG = 10.0
_DEFAULT_DIRECTION_TOLERANCE_DEG = 5.0


# ---------------------------------------------------------------------------------------------
# Public data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BoneLimits:
    """Joint limits of all bones, in world axes at rest, angles in degrees.

    Attributes:
        kind: int8 (B,) ``LIMIT_FREE``, ``LIMIT_CONE`` or ``LIMIT_HINGE``.
        swing_deg: (B,) half-angle of the swing cone (cone bones; 180 when free).
        swing_centre: (B, 3) unit axis of the swing cone (the rest direction unless given).
        twist_deg: (B, 2) twist range about the rest direction (cone bones).
        hinge_axis: (B, 3) unit hinge axis (hinge bones; zero elsewhere).
        hinge_range_deg: (B, 2) hinge angle range (hinge bones).
    """

    kind: npt.NDArray[np.int8]
    swing_deg: F64
    swing_centre: F64
    twist_deg: F64
    hinge_axis: F64
    hinge_range_deg: F64


@dataclass(frozen=True)
class UpReference:
    """A bone's twist reference: a direction ``source -> target`` or a hinged child bone."""

    source: str | None = None
    target: str | None = None
    hinge: str | None = None


@dataclass(frozen=True)
class Site:
    """Where a keypoint sits on the rest pose: ``bone``'s joint plus ``offset`` (world, metres)."""

    bone: int
    offset: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Rig:
    """A validated humanoid rig in avatarlink's world frame (identity rest rotations).

    Attributes:
        name: rig name (the file's ``name``, else its stem).
        path: the YAML file it came from.
        bones: humanoid (``HumanBodyBones``) names, parent before child.
        parents: int64 (B,) parent index, -1 for the root (Hips).
        target_names: each bone's name in the target armature (e.g. Rigify ``upper_arm.L``).
        rest_local_positions: float32 (B, 3) metres from the parent joint, world axes (zeros only
            for the root, whose entry is its absolute rest position).
        rest_positions: float32 (B, 3) rest joint positions in metres (world frame).
        rest_directions: float64 (B, 3) unit rest direction of each bone (world frame).
        convention: the target's coordinate convention: ``"unity"``, ``"blender"`` or ``"gltf"``.
        forward: the axis the character faces in that convention, e.g. ``"+Z"``.
        to_target: float64 (3, 3) matrix taking world-frame vectors to the target's axes.
        mirror: whether the rig asks for mirrored (selfie) input.
        layouts: keypoint layouts the rig supports.
        hip_height: metres from the ground (y = 0) to the Hips joint at rest.
        limits: joint limits (:class:`BoneLimits`).
        drives: per bone ``(from, to)`` point expressions, or None when undriven.
        ups: per bone twist reference, or None.
        fits: per bone the keypoints its rotation is fitted to (least squares), or None.
        distribute: per bone the ``(bone index, weight)`` chain sharing its rotation (driver
            only; chain order root-side first, ending with the bone itself), or None.
        virtual: named point expressions (name -> component keypoint names).
        sites: keypoint name -> :class:`Site`.
        description: free text from the file.
    """

    name: str
    path: Path
    bones: tuple[str, ...]
    parents: I64
    target_names: tuple[str, ...]
    rest_local_positions: F32
    rest_positions: F32
    rest_directions: F64
    convention: str
    forward: str
    to_target: F64
    mirror: bool
    layouts: tuple[KeypointLayout, ...]
    hip_height: float
    limits: BoneLimits
    drives: tuple[tuple[str, str] | None, ...]
    ups: tuple[UpReference | None, ...]
    fits: tuple[tuple[str, ...] | None, ...]
    distribute: tuple[tuple[tuple[int, float], ...] | None, ...]
    virtual: Mapping[str, tuple[str, ...]]
    sites: Mapping[str, Site]
    description: str = ""

    @property
    def num_bones(self) -> int:
        """B, the number of bones."""
        return len(self.bones)

    def index(self, bone: str) -> int:
        """Index of a humanoid bone name; ``KeyError`` names the rig when absent."""
        try:
            return self.bones.index(bone)
        except ValueError:
            raise KeyError(f"rig {self.name!r} has no bone {bone!r}") from None

    def point_components(self, expr: str) -> tuple[str, ...]:
        """The keypoint names a point expression averages (``mid(a, b)``, a virtual, or a name)."""
        return _components(expr, self.virtual)

    def point_weights(self, expr: str, layout: KeypointLayout) -> F64 | None:
        """Weights (K,) over ``layout``'s keypoints giving the point, or None when the layout
        lacks one of its keypoints."""
        names = self.point_components(expr)
        w = np.zeros(layout.num_keypoints)
        for n in names:
            if n not in layout.names:
                return None
            w[layout.index(n)] += 1.0 / len(names)
        return w

    def rest_point(self, expr: str) -> F64:
        """Rest position (3,) in metres (world frame) of a point expression."""
        pts = [self._site_position(n) for n in self.point_components(expr)]
        out: F64 = np.mean(pts, axis=0)
        return out

    def _site_position(self, name: str) -> F64:
        site = self.sites[name]
        out: F64 = self.rest_positions[site.bone].astype(np.float64) + np.asarray(site.offset)
        return out

    def rest_keypoints(self, layout: KeypointLayout) -> F64:
        """Rest positions (K, 3) of ``layout``'s keypoints; NaN where the rig has no site."""
        out = np.full((layout.num_keypoints, 3), np.nan)
        for k, n in enumerate(layout.names):
            if n in self.sites:
                out[k] = self._site_position(n)
        return out

    def driven_bones(self, layout: KeypointLayout) -> tuple[str, ...]:
        """Bones whose ``drive`` the layout's keypoints can evaluate."""
        out = []
        for b, drive in enumerate(self.drives):
            if drive is not None and all(self.point_weights(e, layout) is not None for e in drive):
                out.append(self.bones[b])
        return tuple(out)

    def children(self, bone: int) -> tuple[int, ...]:
        """Indices of a bone's children."""
        return tuple(int(c) for c in np.nonzero(self.parents == bone)[0])


def rigs_dir() -> Path:
    """The folder of preset rig YAMLs (``$AVATARLINK_RIGS`` overrides the project's ``rigs/``)."""
    env = os.environ.get("AVATARLINK_RIGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "rigs"


def list_rigs() -> tuple[str, ...]:
    """Names of the preset rigs (YAML stems in :func:`rigs_dir`), sorted."""
    folder = rigs_dir()
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.stem for p in folder.glob("*.yaml")))


def load_rig(name_or_path: str | Path) -> Rig:
    """Load and validate a rig: a preset name (``unity_humanoid``) or a path to a YAML file.

    Raises:
        RigError: unknown preset, unreadable file, or invalid contents (file, line, dotted key).
    """
    text = str(name_or_path)
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or os.sep in text or "/" in text):
        path = rigs_dir() / f"{text}.yaml"
        if not path.is_file():
            presets = list_rigs()
            close = difflib.get_close_matches(text, presets, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RigError(
                f"no rig preset {text!r}{hint}; presets in {rigs_dir()}: "
                f"{', '.join(presets) or 'none'}; or give a path to a rig YAML"
            )
    return _RigBuilder(path).build()


# ---------------------------------------------------------------------------------------------
# Line-keeping YAML
# ---------------------------------------------------------------------------------------------

Key = tuple[str | int, ...]


def dotted(key: Key) -> str:
    """``("bones", "Hips", "limits", "twist", 1)`` -> ``"bones.Hips.limits.twist[1]"``."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Key, int]]:
    """Parse YAML keeping where each value was: returns ``(data, lines)`` with ``lines`` mapping
    key paths (tuples of mapping keys and list indices) to 1-based line numbers.

    Raises:
        RigError: unreadable file, YAML syntax error (with its line), or a duplicate key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RigError(f"{path}: cannot read rig file: {exc.strerror or exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 0
        raise RigError(f"{path}:{line}: invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise RigError(f"{path}: invalid YAML: {exc}") from exc
    lines: dict[Key, int] = {}
    if node is None:
        return None, lines
    constructor = yaml.SafeLoader("")
    data = _node_value(node, (), lines, constructor, path)
    return data, lines


def _node_value(
    node: yaml.Node, key: Key, lines: dict[Key, int], ctor: yaml.SafeLoader, path: Path
) -> Any:
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for k_node, v_node in node.value:
            k = ctor.construct_object(k_node, deep=True)
            k = str(k) if not isinstance(k, str) else k
            child = (*key, k)
            if k in out:
                raise RigError(
                    f"{path}:{k_node.start_mark.line + 1}: {dotted(child)}: duplicate key"
                )
            lines[child] = k_node.start_mark.line + 1
            out[k] = _node_value(v_node, child, lines, ctor, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_value(item, (*key, i), lines, ctor, path) for i, item in enumerate(node.value)
        ]
    try:
        return ctor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise RigError(f"{path}:{node.start_mark.line + 1}: {dotted(key)}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Building and validating
# ---------------------------------------------------------------------------------------------


def _components(expr: str, virtual: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    expr = expr.strip()
    m = _MID_RE.match(expr)
    if m:
        names = [p.strip() for p in m.group(1).split(",")]
        out: list[str] = []
        for n in names:
            out.extend(_components(n, virtual))
        return tuple(out)
    if expr in virtual:
        return virtual[expr]
    return (expr,)


def axis_matrix(convention: str, forward: str) -> F64:
    """The matrix (3, 3) taking vectors written in a target convention to avatarlink's world frame.

    ``forward`` is the axis the character faces in that convention (``"+Z"``, ``"-Y"`` ...). The
    world frame has +Y up, the character facing +Z and its left at +X (right-handed).
    """
    hand, up_name = CONVENTIONS[convention]
    up = np.array(_AXES[up_name])
    fwd = np.array(_AXES[forward])
    # left = up x forward in a right-handed system; the same formula points right in a
    # left-handed one, hence the handedness sign.
    left = hand * np.cross(up, fwd)
    target_basis = np.stack([left, up, fwd], axis=1)  # columns: target coords of world X, Y, Z
    out: F64 = target_basis.T  # orthonormal: inverse is the transpose
    return out


class _RigBuilder:
    """Validates one rig file into a :class:`Rig`; every error names file, line and key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[Key, int] = {}

    # -- error helpers ------------------------------------------------------------------------

    def error(self, key: Key, message: str) -> RigError:
        line = 0
        for n in range(len(key), -1, -1):
            if key[:n] in self.lines:
                line = self.lines[key[:n]]
                break
        where = dotted(key) or "(top level)"
        return RigError(f"{self.path}:{line}: {where}: {message}")

    def mapping(self, value: Any, key: Key, allowed: Sequence[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {_type_name(value)}")
        if allowed is not None:
            for k in value:
                if k not in allowed:
                    close = difflib.get_close_matches(str(k), allowed, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise self.error(
                        (*key, k), f"unknown key{hint}; valid keys: {', '.join(allowed)}"
                    )
        return value

    def number(self, value: Any, key: Key, what: str = "a number") -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected {what}, got {_type_name(value)} {value!r}")
        if not np.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        return float(value)

    def string(self, value: Any, key: Key) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {_type_name(value)}")
        return value.strip()

    def vec3(self, value: Any, key: Key) -> F64:
        if not isinstance(value, list) or len(value) != 3:
            raise self.error(
                key, f"expected a list of 3 numbers [x, y, z], got {_type_name(value)} {value!r}"
            )
        return np.array([self.number(v, (*key, i)) for i, v in enumerate(value)])

    def direction(self, value: Any, key: Key) -> F64:
        v = self.vec3(value, key)
        if np.linalg.norm(v) < 1e-9:
            raise self.error(key, f"zero-length direction {value!r}; give a non-zero vector")
        out: F64 = v / np.linalg.norm(v)
        return out

    def angle_range(self, value: Any, key: Key, lo: float, hi: float) -> tuple[float, float]:
        if not isinstance(value, list) or len(value) != 2:
            raise self.error(
                key, f"expected [min, max] in degrees, got {_type_name(value)} {value!r}"
            )
        a = self.number(value[0], (*key, 0), "a number of degrees")
        b = self.number(value[1], (*key, 1), "a number of degrees")
        for i, v in enumerate((a, b)):
            if not lo <= v <= hi:
                raise self.error((*key, i), f"{v:g} deg is out of range [{lo:g}, {hi:g}] deg")
        if a > b:
            raise self.error(key, f"min {a:g} deg is greater than max {b:g} deg")
        return a, b

    # -- the build ----------------------------------------------------------------------------

    def build(self) -> Rig:
        data, self.lines = load_yaml_with_lines(self.path)
        top = self.mapping(data if data is not None else {}, (), _TOP_KEYS)
        for required in ("convention", "layouts", "bones"):
            if required not in top:
                raise self.error((), f"missing required key {required!r}")
        name = self.string(top.get("name", self.path.stem), ("name",))
        description = str(top.get("description", "") or "")
        convention = self.string(top["convention"], ("convention",))
        if convention not in CONVENTIONS:
            raise self.error(
                ("convention",),
                f"unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}",
            )
        forward = self.string(top.get("forward", _DEFAULT_FORWARD[convention]), ("forward",))
        if forward not in _AXES:
            raise self.error(("forward",), f"expected one of {', '.join(_AXES)}, got {forward!r}")
        if abs(np.dot(_AXES[forward], _AXES[CONVENTIONS[convention][1]])) > 0.5:
            raise self.error(
                ("forward",),
                f"forward {forward} is the up axis of convention {convention!r}",
            )
        to_world = axis_matrix(convention, forward)
        self.to_world = to_world
        self.hand = float(np.linalg.det(to_world))
        mirror = top.get("mirror", False)
        if not isinstance(mirror, bool):
            raise self.error(("mirror",), f"expected true or false, got {mirror!r}")
        if "units" in top:
            units = self.mapping(top["units"], ("units",), ("length", "angle"))
            for k, want in (("length", "m"), ("angle", "deg")):
                if k in units and units[k] != want:
                    raise self.error(
                        ("units", k), f"rig files use {want!r} for {k}, got {units[k]!r}"
                    )
        layouts = self.layouts(top["layouts"])
        known_points = {n for lay in layouts for n in lay.names}
        virtual = self.virtual(top.get("virtual", {}) or {}, known_points)
        bones_data = self.mapping(top["bones"], ("bones",))
        if not bones_data:
            raise self.error(("bones",), "a rig needs at least the Hips bone")
        order, parents = self.hierarchy(bones_data)
        n = len(order)
        bone_index = {b: i for i, b in enumerate(order)}
        specs = [self.mapping(bones_data[b], ("bones", b), _BONE_KEYS) for b in order]
        local = np.zeros((n, 3))
        for i, (b, spec) in enumerate(zip(order, specs, strict=True)):
            if "position" not in spec:
                raise self.error(("bones", b), "missing required key 'position' (metres)")
            local[i] = to_world @ self.vec3(spec["position"], ("bones", b, "position"))
            if parents[i] >= 0 and np.linalg.norm(local[i]) < 1e-6:
                raise self.error(
                    ("bones", b, "position"),
                    "rest position [0, 0, 0] puts the bone on its parent's joint; give the real "
                    "T-pose offset in metres (receivers reset on all-zero positions)",
                )
        rest = np.zeros((n, 3))
        for i in range(n):
            rest[i] = local[i] + (rest[parents[i]] if parents[i] >= 0 else 0.0)
        sites = self.sites(top.get("keypoints", {}) or {}, bone_index, known_points)
        targets = []
        for b, spec in zip(order, specs, strict=True):
            target = spec.get("target", b)
            targets.append(self.string(target, ("bones", b, "target")))
        drives, ups, distribute = self.drives(
            order, specs, bone_index, parents, known_points, virtual, sites
        )
        # Rest directions: from the drive at rest when driven, else towards the (first) child.
        rest_dirs = np.zeros((n, 3))
        tol = self.number(
            top.get("rest_direction_tolerance_deg", _DEFAULT_DIRECTION_TOLERANCE_DEG),
            ("rest_direction_tolerance_deg",),
        )
        site_pos = {k: rest[s.bone] + np.asarray(s.offset) for k, s in sites.items()}
        for i, (b, spec) in enumerate(zip(order, specs, strict=True)):
            declared = None
            if "direction" in spec:
                declared = to_world @ self.direction(spec["direction"], ("bones", b, "direction"))
            if drives[i] is not None:
                src, dst = drives[i]  # type: ignore[misc]
                v = _expr_rest(dst, virtual, site_pos) - _expr_rest(src, virtual, site_pos)
                if np.linalg.norm(v) < 1e-6:
                    raise self.error(
                        ("bones", b, "drive"),
                        f"zero-length rest direction: {src!r} and {dst!r} coincide at rest",
                    )
                computed = v / np.linalg.norm(v)
                if declared is not None:
                    off = np.degrees(np.arccos(np.clip(np.dot(declared, computed), -1, 1)))
                    if off > tol:
                        raise self.error(
                            ("bones", b, "direction"),
                            f"rest direction is {off:.1f} deg from the drive's rest direction "
                            f"{_fmt(to_world.T @ computed)} (tolerance {tol:g} deg)",
                        )
                rest_dirs[i] = computed
            elif declared is not None:
                rest_dirs[i] = declared
            else:
                kids = [c for c in range(n) if parents[c] == i]
                if kids:
                    v = local[kids[0]]
                    rest_dirs[i] = v / np.linalg.norm(v)
                else:
                    rest_dirs[i] = rest_dirs[parents[i]] if parents[i] >= 0 else (0.0, 1.0, 0.0)
        fits = self.fits(order, specs, drives, bone_index, known_points, virtual, sites)
        limits = self.limits(order, specs, rest_dirs)
        self.check_references(order, drives, ups, distribute, limits, rest_dirs, parents)
        hip_height = float(rest[0, 1])
        if "hip_height" in top:
            hip_height = self.number(top["hip_height"], ("hip_height",), "metres")
            if hip_height <= 0:
                raise self.error(("hip_height",), f"must be > 0 m, got {hip_height:g}")
        return Rig(
            name=name,
            path=self.path,
            bones=tuple(order),
            parents=np.asarray(parents, np.int64),
            target_names=tuple(targets),
            rest_local_positions=np.where((np.asarray(parents) < 0)[:, None], rest, local).astype(
                np.float32
            ),
            rest_positions=rest.astype(np.float32),
            rest_directions=rest_dirs,
            convention=convention,
            forward=forward,
            to_target=to_world.T.copy(),
            mirror=mirror,
            layouts=layouts,
            hip_height=hip_height,
            limits=limits,
            drives=tuple(drives),
            ups=tuple(ups),
            fits=tuple(fits),
            distribute=tuple(distribute),
            virtual=MappingProxyType(virtual),
            sites=MappingProxyType(sites),
            description=description.strip(),
        )

    def layouts(self, value: Any) -> tuple[KeypointLayout, ...]:
        key: Key = ("layouts",)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a list of keypoint layouts, got {value!r}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(KeypointLayout.from_name(self.string(v, (*key, i))))
            except ValueError as exc:
                raise self.error((*key, i), str(exc)) from None
        return tuple(out)

    def virtual(self, value: Any, known: set[str]) -> dict[str, tuple[str, ...]]:
        key: Key = ("virtual",)
        raw = self.mapping(value, key)
        exprs: dict[str, str] = {}
        for name, expr in raw.items():
            if not _NAME_RE.match(name):
                raise self.error((*key, name), "virtual point names are lower_snake_case")
            if name in known:
                raise self.error((*key, name), f"{name!r} is already a keypoint name")
            exprs[name] = self.string(expr, (*key, name))
        out: dict[str, tuple[str, ...]] = {}

        def resolve(name: str, stack: tuple[str, ...]) -> tuple[str, ...]:
            if name in out:
                return out[name]
            if name in stack:
                cycle = " -> ".join((*stack, name))
                raise self.error((*key, stack[0]), f"virtual points form a cycle: {cycle}")
            expr = exprs[name]
            m = _MID_RE.match(expr)
            parts = [p.strip() for p in m.group(1).split(",")] if m else [expr]
            comps: list[str] = []
            for p in parts:
                if p in exprs:
                    comps.extend(resolve(p, (*stack, name)))
                elif p in known:
                    comps.append(p)
                else:
                    raise self.error((*key, name), _unknown_point(p, known | set(exprs)))
            out[name] = tuple(comps)
            return out[name]

        for name in exprs:
            resolve(name, ())
        return out

    def sites(self, value: Any, bone_index: dict[str, int], known: set[str]) -> dict[str, Site]:
        key: Key = ("keypoints",)
        raw = self.mapping(value, key)
        out: dict[str, Site] = {}
        for name, spec in raw.items():
            k = (*key, name)
            if name not in known:
                raise self.error(k, _unknown_point(name, known))
            offset = np.zeros(3)
            if isinstance(spec, str):
                bone = spec
            else:
                spec = self.mapping(spec, k, ("bone", "offset"))
                if "bone" not in spec:
                    raise self.error(k, "missing required key 'bone'")
                bone = self.string(spec["bone"], (*k, "bone"))
                if "offset" in spec:
                    offset = self.to_world @ self.vec3(spec["offset"], (*k, "offset"))
            if bone not in bone_index:
                raise self.error(k, _unknown_bone(bone, bone_index))
            out[name] = Site(
                bone_index[bone], (float(offset[0]), float(offset[1]), float(offset[2]))
            )
        return out

    def hierarchy(self, bones: dict[str, Any]) -> tuple[list[str], list[int]]:
        for b in bones:
            if b not in HUMAN_BONES:
                raise self.error(("bones", b), _unknown_bone(b, HUMAN_BONES))
        parent_of: dict[str, str | None] = {}
        for b, spec in bones.items():
            spec = self.mapping(spec, ("bones", b), _BONE_KEYS)
            if "parent" not in spec:
                raise self.error(("bones", b), "missing required key 'parent' (null for Hips)")
            p = spec["parent"]
            if p is not None:
                p = self.string(p, ("bones", b, "parent"))
                if p not in bones:
                    raise self.error(
                        ("bones", b, "parent"),
                        f"parent {p!r} is not a bone of this rig (missing parent); "
                        + (_unknown_bone(p, HUMAN_BONES) if p not in HUMAN_BONES else "add it"),
                    )
                if p == b:
                    raise self.error(("bones", b, "parent"), f"{b} cannot be its own parent")
            parent_of[b] = p
        roots = [b for b, p in parent_of.items() if p is None]
        if "Hips" not in bones:
            raise self.error(("bones",), "missing the root bone Hips (parent: null)")
        if parent_of["Hips"] is not None:
            raise self.error(("bones", "Hips", "parent"), "Hips is the root: give parent: null")
        for b in roots:
            if b != "Hips":
                raise self.error(
                    ("bones", b, "parent"), f"{b} has no parent; only Hips is a root bone"
                )
        # Cycle detection: walk up from each bone.
        for b in bones:
            seen = [b]
            p = parent_of[b]
            while p is not None:
                if p in seen:
                    cycle = " -> ".join([*seen[seen.index(p) :], p])
                    raise self.error(("bones", b, "parent"), f"parent cycle: {cycle}")
                seen.append(p)
                p = parent_of[p]
        # Parent-before-child order: depth-first from Hips, children in file order.
        order: list[str] = []
        stack = ["Hips"]
        while stack:
            b = stack.pop()
            order.append(b)
            kids = [c for c in bones if parent_of[c] == b]
            stack.extend(reversed(kids))
        idx = {b: i for i, b in enumerate(order)}
        parents = [idx[p] if (p := parent_of[b]) is not None else -1 for b in order]
        return order, parents

    def point_expr(
        self,
        value: Any,
        key: Key,
        known: set[str],
        virtual: Mapping[str, tuple[str, ...]],
        sites: Mapping[str, Site],
    ) -> str:
        expr = self.string(value, key)
        m = _MID_RE.match(expr)
        parts = [p.strip() for p in m.group(1).split(",")] if m else [expr]
        if m and len(parts) < 2:
            raise self.error(key, f"mid() needs at least two points, got {expr!r}")
        for p in parts:
            if p not in known and p not in virtual:
                raise self.error(key, _unknown_point(p, known | set(virtual)))
        for comp in _components(expr, virtual):
            if comp not in sites:
                raise self.error(
                    key,
                    f"keypoint {comp!r} has no rest site: add it under 'keypoints' "
                    "(the bone it sits on and an offset)",
                )
        return expr

    def drives(
        self,
        order: list[str],
        specs: list[dict[str, Any]],
        bone_index: dict[str, int],
        parents: list[int],
        known: set[str],
        virtual: Mapping[str, tuple[str, ...]],
        sites: Mapping[str, Site],
    ) -> tuple[
        list[tuple[str, str] | None],
        list[UpReference | None],
        list[tuple[tuple[int, float], ...] | None],
    ]:
        drives: list[tuple[str, str] | None] = []
        ups: list[UpReference | None] = []
        dist: list[tuple[tuple[int, float], ...] | None] = []
        for i, (b, spec) in enumerate(zip(order, specs, strict=True)):
            k: Key = ("bones", b)
            if "drive" in spec:
                d = self.mapping(spec["drive"], (*k, "drive"), ("from", "to"))
                for req in ("from", "to"):
                    if req not in d:
                        raise self.error((*k, "drive"), f"missing required key {req!r}")
                src = self.point_expr(d["from"], (*k, "drive", "from"), known, virtual, sites)
                dst = self.point_expr(d["to"], (*k, "drive", "to"), known, virtual, sites)
                drives.append((src, dst))
            else:
                drives.append(None)
            if "up" in spec:
                if drives[-1] is None:
                    raise self.error((*k, "up"), "'up' needs a 'drive' on the same bone")
                u = self.mapping(spec["up"], (*k, "up"), ("from", "to", "hinge"))
                if "hinge" in u:
                    if "from" in u or "to" in u:
                        raise self.error((*k, "up"), "give either 'hinge' or 'from'/'to'")
                    child = self.string(u["hinge"], (*k, "up", "hinge"))
                    if child not in bone_index:
                        raise self.error((*k, "up", "hinge"), _unknown_bone(child, bone_index))
                    if parents[bone_index[child]] != i:
                        raise self.error((*k, "up", "hinge"), f"{child} is not a child of {b}")
                    ups.append(UpReference(hinge=child))
                else:
                    for req in ("from", "to"):
                        if req not in u:
                            raise self.error((*k, "up"), f"missing required key {req!r}")
                    src = self.point_expr(u["from"], (*k, "up", "from"), known, virtual, sites)
                    dst = self.point_expr(u["to"], (*k, "up", "to"), known, virtual, sites)
                    ups.append(UpReference(source=src, target=dst))
            else:
                ups.append(None)
            if "distribute" in spec:
                dk = (*k, "distribute")
                raw = self.mapping(spec["distribute"], dk)
                if drives[-1] is None or ups[-1] is None or ups[-1].hinge is not None:
                    raise self.error(dk, "'distribute' needs a 'drive' and an 'up' from/to")
                chain: list[tuple[int, float]] = []
                for name, w in raw.items():
                    if name not in bone_index:
                        raise self.error((*dk, name), _unknown_bone(name, bone_index))
                    wv = self.number(w, (*dk, name), "a weight")
                    if not 0.0 < wv <= 1.0:
                        raise self.error((*dk, name), f"weight must be in (0, 1], got {wv:g}")
                    chain.append((bone_index[name], wv))
                chain.sort(key=lambda c: c[0])  # parent-before-child order
                if chain[-1][0] != i:
                    raise self.error(dk, f"the chain must end with {b} itself")
                for (a, _), (c, _) in itertools.pairwise(chain):
                    if parents[c] != a:
                        raise self.error(
                            dk, f"{order[a]} -> {order[c]} is not a parent -> child link"
                        )
                total = sum(w for _, w in chain)
                if abs(total - 1.0) > 1e-3:
                    raise self.error(dk, f"weights must sum to 1, got {total:g}")
                dist.append(tuple(chain))
            else:
                dist.append(None)
        return drives, ups, dist

    def fits(
        self,
        order: list[str],
        specs: list[dict[str, Any]],
        drives: list[tuple[str, str] | None],
        bone_index: dict[str, int],
        known: set[str],
        virtual: Mapping[str, tuple[str, ...]],
        sites: Mapping[str, Site],
    ) -> list[tuple[str, ...] | None]:
        out: list[tuple[str, ...] | None] = []
        for i, (b, spec) in enumerate(zip(order, specs, strict=True)):
            if "fit" not in spec:
                out.append(None)
                continue
            k: Key = ("bones", b, "fit")
            if drives[i] is None:
                raise self.error(k, "'fit' needs a 'drive' on the same bone (its rest direction)")
            raw = spec["fit"]
            if not isinstance(raw, list) or len(raw) < 3:
                raise self.error(k, f"expected a list of at least 3 keypoints, got {raw!r}")
            names = []
            for j, v in enumerate(raw):
                expr = self.point_expr(v, (*k, j), known, virtual, sites)
                for comp in _components(expr, virtual):
                    if sites[comp].bone != i:
                        raise self.error(
                            (*k, j),
                            f"keypoint {comp!r} sits on {order[sites[comp].bone]}, not {b}; "
                            "fitted keypoints must move with the bone",
                        )
                names.append(expr)
            out.append(tuple(names))
        return out

    def limits(self, order: list[str], specs: list[dict[str, Any]], dirs: F64) -> BoneLimits:
        n = len(order)
        kind = np.zeros(n, np.int8)
        swing = np.full(n, 180.0)
        centre = dirs.copy()
        twist = np.tile([-180.0, 180.0], (n, 1))
        axis = np.zeros((n, 3))
        hinge = np.zeros((n, 2))
        for i, (b, spec) in enumerate(zip(order, specs, strict=True)):
            if "limits" not in spec or spec["limits"] in (None, "free"):
                continue
            k: Key = ("bones", b, "limits")
            lim = self.mapping(spec["limits"], k, ("swing", "swing_centre", "twist", "hinge"))
            if "hinge" in lim:
                if set(lim) - {"hinge"}:
                    raise self.error(k, "a hinge has no swing or twist; give one or the other")
                h = self.mapping(lim["hinge"], (*k, "hinge"), ("axis", "range"))
                for req in ("axis", "range"):
                    if req not in h:
                        raise self.error((*k, "hinge"), f"missing required key {req!r}")
                # An axis is a pseudo-vector: a reflecting axis change also flips it.
                a = self.hand * (self.to_world @ self.direction(h["axis"], (*k, "hinge", "axis")))
                off = abs(90.0 - np.degrees(np.arccos(np.clip(np.dot(a, dirs[i]), -1, 1))))
                if off > _HINGE_PERPENDICULAR_TOLERANCE_DEG:
                    raise self.error(
                        (*k, "hinge", "axis"),
                        f"hinge axis is {90 - off:.1f} deg from the bone's rest direction; it "
                        "must be (nearly) perpendicular to it",
                    )
                a = a - np.dot(a, dirs[i]) * dirs[i]
                lo, hi = self.angle_range(h["range"], (*k, "hinge", "range"), -180.0, 180.0)
                if not lo <= 0.0 <= hi:
                    raise self.error(
                        (*k, "hinge", "range"), "the range must include 0 (the rest pose)"
                    )
                kind[i], axis[i], hinge[i] = LIMIT_HINGE, a / np.linalg.norm(a), (lo, hi)
                continue
            kind[i] = LIMIT_CONE
            if "swing" in lim:
                swing[i] = self.number(lim["swing"], (*k, "swing"), "a number of degrees")
                if not 0.0 <= swing[i] <= 180.0:
                    raise self.error(
                        (*k, "swing"), f"{swing[i]:g} deg is out of range [0, 180] deg"
                    )
            if "swing_centre" in lim:
                centre[i] = self.to_world @ self.direction(
                    lim["swing_centre"], (*k, "swing_centre")
                )
                off = np.degrees(np.arccos(np.clip(np.dot(centre[i], dirs[i]), -1, 1)))
                if off > swing[i] + 1e-6:
                    raise self.error(
                        (*k, "swing_centre"),
                        f"the rest direction is {off:.1f} deg from the cone centre, outside the "
                        f"{swing[i]:g} deg swing cone (the rest pose must be allowed)",
                    )
            if "twist" in lim:
                lo, hi = self.angle_range(lim["twist"], (*k, "twist"), -180.0, 180.0)
                if not lo <= 0.0 <= hi:
                    raise self.error((*k, "twist"), "the range must include 0 (the rest pose)")
                # Twist turns about the (polar) rest direction: a reflecting axis change
                # (left-handed file) reverses its sense.
                twist[i] = (lo, hi) if self.hand > 0 else (-hi, -lo)
        return BoneLimits(kind, swing, centre, twist, axis, hinge)

    def check_references(
        self,
        order: list[str],
        drives: list[tuple[str, str] | None],
        ups: list[UpReference | None],
        distribute: list[tuple[tuple[int, float], ...] | None],
        limits: BoneLimits,
        dirs: F64,
        parents: list[int],
    ) -> None:
        members: dict[int, str] = {}
        for i, chain in enumerate(distribute):
            if chain is None:
                continue
            for j, _ in chain[:-1]:
                if drives[j] is not None:
                    raise self.error(
                        ("bones", order[i], "distribute", order[j]),
                        f"{order[j]} has its own drive; a shared bone must be undriven",
                    )
                if j in members:
                    raise self.error(
                        ("bones", order[i], "distribute", order[j]),
                        f"{order[j]} is already shared by {members[j]}",
                    )
                members[j] = order[i]
        for i, up in enumerate(ups):
            k: Key = ("bones", order[i], "up")
            if up is None:
                continue
            if limits.kind[i] == LIMIT_HINGE:
                raise self.error(k, "a hinge bone has no twist; remove 'up'")
            if up.hinge is not None:
                c = order.index(up.hinge)
                if limits.kind[c] != LIMIT_HINGE or drives[c] is None:
                    raise self.error((*k, "hinge"), f"{up.hinge} needs a drive and hinge limits")
                if abs(np.dot(limits.hinge_axis[c], dirs[i])) > np.sin(
                    np.radians(_HINGE_PERPENDICULAR_TOLERANCE_DEG)
                ):
                    raise self.error(
                        (*k, "hinge"),
                        f"{up.hinge}'s hinge axis must be perpendicular to {order[i]}'s direction",
                    )
                # The plane normal (this x child) only keeps its sign while the child's angle
                # from this bone stays within (0, 180) deg.
                rest_angle = np.degrees(
                    quat.twist_angle(quat.from_two_vectors(dirs[i], dirs[c]), limits.hinge_axis[c])
                )
                lo, hi = limits.hinge_range_deg[c] + rest_angle
                if lo < -1e-6 or hi > 180.0 + 1e-6:
                    raise self.error(
                        (*k, "hinge"),
                        f"{up.hinge}'s hinge range must stay within [0, 180] deg of "
                        f"{order[i]}'s direction to give it a twist reference",
                    )


def _expr_rest(expr: str, virtual: Mapping[str, tuple[str, ...]], pos: Mapping[str, F64]) -> F64:
    out: F64 = np.mean([pos[n] for n in _components(expr, virtual)], axis=0)
    return out


def _unknown_bone(name: str, valid: Mapping[str, int] | Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown bone {name!r}{hint}; bones are Unity HumanBodyBones names"


def _unknown_point(name: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown keypoint {name!r}{hint}; use a keypoint of the rig's layouts, a 'virtual' "
        "name, or mid(a, b)"
    )


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _fmt(v: F64) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"


# ---------------------------------------------------------------------------------------------
# Kinematics
# ---------------------------------------------------------------------------------------------


def _depth_levels(parents: I64) -> list[I64]:
    depth = np.zeros(len(parents), np.int64)
    for i, p in enumerate(parents):
        depth[i] = depth[p] + 1 if p >= 0 else 0
    return [np.nonzero(depth == d)[0] for d in range(int(depth.max()) + 1)]


def forward_kinematics(
    rig: Rig, local_rot: npt.ArrayLike, root_pos: npt.ArrayLike | None = None
) -> tuple[F64, F64]:
    """Global joint positions and rotations from local rotations (the rig's rest pose at identity).

    ``global_rot[b] = global_rot[parent] * local_rot[b]`` and
    ``pos[b] = pos[parent] + global_rot[parent] (rest_local_positions[b])``; the root's position is
    ``root_pos`` and its global rotation its local one. Everything is in avatarlink's world frame
    (metres, right-handed, +Y up, rest pose facing +Z).

    Args:
        rig: the rig.
        local_rot: (..., B, 4) xyzw local rotations relative to rest, in world axes.
        root_pos: (..., 3) Hips position in metres; default: the rig's rest Hips position.

    Returns:
        ``(positions (..., B, 3), rotations (..., B, 4))``, float64.
    """
    q = quat.normalize(local_rot)
    lead = q.shape[:-2]
    b = rig.num_bones
    if q.shape[-2] != b:
        raise ValueError(f"local_rot must be (..., {b}, 4) for rig {rig.name!r}, got {q.shape}")
    rot = np.empty_like(q)
    pos = np.empty((*lead, b, 3))
    if root_pos is None:
        root = np.broadcast_to(rig.rest_positions[0].astype(np.float64), (*lead, 3))
    else:
        root = np.broadcast_to(np.asarray(root_pos, np.float64), (*lead, 3))
    offsets = rig.rest_local_positions.astype(np.float64)
    levels = _depth_levels(rig.parents)
    pos[..., 0, :] = root
    rot[..., 0, :] = q[..., 0, :]
    for idx in levels[1:]:
        par = rig.parents[idx]
        rot[..., idx, :] = quat.multiply(rot[..., par, :], q[..., idx, :])
        pos[..., idx, :] = pos[..., par, :] + quat.rotate(rot[..., par, :], offsets[idx])
    return pos, rot


def site_arrays(rig: Rig, layout: KeypointLayout) -> tuple[I64, F64, npt.NDArray[np.bool_]]:
    """For each of ``layout``'s keypoints: the bone it sits on (K,), its offset (K, 3) in metres
    (world axes at rest) and whether the rig places it at all (K,)."""
    k = layout.num_keypoints
    bone = np.zeros(k, np.int64)
    offset = np.zeros((k, 3))
    has = np.zeros(k, bool)
    for i, n in enumerate(layout.names):
        site = rig.sites.get(n)
        if site is not None:
            bone[i], offset[i], has[i] = site.bone, site.offset, True
    return bone, offset, has


def keypoints_from_pose(
    rig: Rig, layout: KeypointLayout, positions: npt.ArrayLike, rotations: npt.ArrayLike
) -> F64:
    """World keypoints (..., K, 3) of a posed rig: each keypoint follows the bone it sits on.

    Args:
        rig: the rig.
        layout: the keypoint set to produce.
        positions, rotations: :func:`forward_kinematics` outputs, (..., B, 3) and (..., B, 4).

    Returns:
        float64 (..., K, 3) metres in the world frame; NaN for keypoints the rig does not place.
    """
    bone, offset, has = site_arrays(rig, layout)
    pos = np.asarray(positions, np.float64)
    rot = np.asarray(rotations, np.float64)
    out = pos[..., bone, :] + quat.rotate(rot[..., bone, :], offset)
    out[..., ~has, :] = np.nan
    return out
