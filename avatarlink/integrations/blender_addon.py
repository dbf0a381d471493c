# mypy: disallow-subclassing-any=False, disallow-untyped-decorators=False
# mypy: disable-error-code="valid-type"
"""avatarlink VMC receiver for Blender: drive an armature from a VMC stream, live or recorded.

Self-contained: this file runs inside Blender without avatarlink installed. Write it with the rig
mappings embedded::

    avatarlink blender-addon --out avatarlink_vmc.py

then in Blender: Edit > Preferences > Add-ons > Install..., pick the file, tick it. The panel is in
the 3D viewport's sidebar (N), tab "avatarlink".

What it does, on a timer (default 100 Hz):

1. Receives VMC datagrams (``/VMC/Ext/Bone/Pos``, ``/VMC/Ext/Root/Pos``) on UDP, by default
   127.0.0.1:39539, without blocking Blender.
2. Maps ``HumanBodyBones`` names to the armature's bone names through a mapping: one of the
   embedded rig mappings (from avatarlink's ``rigs/*.yaml``: Rigify metarig, Mixamo, VRM, Unity
   names), a JSON mapping file, or "by name" (the armature uses the humanoid names). An optional
   prefix (e.g. ``DEF-`` for a generated Rigify rig) is put in front of every target name.
3. Converts each rotation from Unity space to Blender space (Unity: left-handed, +Y up, avatar
   faces +Z; Blender: right-handed, +Z up, character faces -Y; both keep the character's left on
   its left: x_b = -x_u, y_b = -z_u, z_b = y_u, a reflection, so the quaternion's vector part maps
   to (x, z, -y)), then into each bone's rest frame: VMC rotations are local rotations relative to
   a T-pose whose bone frames are aligned with the avatar's axes (here: armature space), so with D
   the accumulated delta of a bone (parent's D times its local rotation) and R its rest
   orientation in armature space, the pose
   rotation is ``R^-1 @ D_parent^-1 @ D @ R`` (D_parent: the nearest mapped ancestor in the
   armature; unmapped bones in between stay at rest).
4. Optionally moves the armature object with the VMC root, and inserts keyframes while "Record" is
   on (one per received frame, at the scene's frame rate).

JSON mapping file format: ``{"bones": {"Hips": "pelvis", "LeftUpperArm": "arm_L", ...},
"parents": {"LeftUpperArm": "LeftShoulder", ...}}``; ``parents`` is optional (the humanoid
hierarchy is the default).
"""

import json
import math
import socket
import struct
import time
from typing import Any

try:  # only inside Blender; the protocol part below works without it (tests use both)
    import bpy
    import mathutils
    from bpy.props import (
        BoolProperty,
        EnumProperty,
        FloatProperty,
        FloatVectorProperty,
        IntProperty,
        PointerProperty,
        StringProperty,
    )
except ImportError:  # pragma: no cover - outside Blender
    bpy = None

bl_info = {
    "name": "avatarlink VMC receiver",
    "author": "avatarlink developers",
    "version": (0, 1, 0),
    "blender": (3, 6, 0),
    "location": "View3D > Sidebar > avatarlink",
    "description": "Drive an armature from a VMC stream (avatarlink, VSeeFace, ...); record keys",
    "category": "Animation",
}

DEFAULT_PORT = 39539

# Rig mappings: name -> {"bones": {HumanBodyBones name: armature bone}, "parents": {...}}.
# ``avatarlink blender-addon`` writes them from the rig YAML files between the two markers.
# --- avatarlink mappings begin ---
MAPPINGS: dict[str, Any] = {}
# --- avatarlink mappings end ---

_FINGERS = ("Thumb", "Index", "Middle", "Ring", "Little")


def _humanoid_parents() -> dict[str, str]:
    """Unity's humanoid hierarchy: bone -> parent (Hips has none)."""
    parents = {
        "Spine": "Hips",
        "Chest": "Spine",
        "UpperChest": "Chest",
        "Neck": "UpperChest",
        "Head": "Neck",
        "LeftEye": "Head",
        "RightEye": "Head",
        "Jaw": "Head",
    }
    for side in ("Left", "Right"):
        parents.update(
            {
                side + "UpperLeg": "Hips",
                side + "LowerLeg": side + "UpperLeg",
                side + "Foot": side + "LowerLeg",
                side + "Toes": side + "Foot",
                side + "Shoulder": "UpperChest",
                side + "UpperArm": side + "Shoulder",
                side + "LowerArm": side + "UpperArm",
                side + "Hand": side + "LowerArm",
            }
        )
        for finger in _FINGERS:
            parents[side + finger + "Proximal"] = side + "Hand"
            parents[side + finger + "Intermediate"] = side + finger + "Proximal"
            parents[side + finger + "Distal"] = side + finger + "Intermediate"
    return parents


HUMANOID_PARENTS: dict[str, str] = _humanoid_parents()
HUMANOID_BONES: frozenset[str] = frozenset(HUMANOID_PARENTS) | {"Hips"}


# --------------------------------------------------------------------------------------------
# Protocol: OSC decoding and the VMC receiver (plain Python, no Blender needed)
# --------------------------------------------------------------------------------------------


class OscError(ValueError):
    """A datagram that is not valid OSC."""


def _osc_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise OscError("unterminated string")
    nxt = pos + ((end - pos) // 4 + 1) * 4
    if nxt > len(data):
        raise OscError("truncated string padding")
    return data[pos:end].decode("ascii"), nxt


def decode_osc(data: bytes, depth: int = 0) -> list[tuple[str, list[Any]]]:
    """Messages of one OSC datagram as ``(address, args)``, bundles flattened.

    Raises:
        OscError: anything malformed (the caller counts it and goes on).
    """
    if depth > 8:
        raise OscError("bundles nested too deep")
    if data.startswith(b"#bundle\0"):
        out: list[tuple[str, list[Any]]] = []
        pos = 16
        if len(data) < pos:
            raise OscError("truncated bundle header")
        while pos < len(data):
            if pos + 4 > len(data):
                raise OscError("truncated element size")
            (size,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if size <= 0 or pos + size > len(data):
                raise OscError(f"bad element size {size}")
            out.extend(decode_osc(data[pos : pos + size], depth + 1))
            pos += size
        return out
    address, pos = _osc_string(data, 0)
    if not address.startswith("/"):
        raise OscError(f"address {address!r} does not start with '/'")
    tags, pos = _osc_string(data, pos)
    if not tags.startswith(","):
        raise OscError("missing type tags")
    args: list[Any] = []
    for tag in tags[1:]:
        if tag in "if":
            if pos + 4 > len(data):
                raise OscError("truncated argument")
            args.append(struct.unpack_from(">i" if tag == "i" else ">f", data, pos)[0])
            pos += 4
        elif tag == "s":
            value, pos = _osc_string(data, pos)
            args.append(value)
        elif tag in "hdt":
            if pos + 8 > len(data):
                raise OscError("truncated argument")
            args.append(struct.unpack_from(">d" if tag == "d" else ">q", data, pos)[0])
            pos += 8
        elif tag in "TFNI":
            args.append(tag == "T" if tag in "TF" else None)
        else:
            raise OscError(f"unsupported type tag {tag!r}")
    return [(address, args)]


class VmcReceiver:
    """Non-blocking VMC receiver keeping the latest value per bone (Unity space).

    Attributes:
        bones: humanoid name -> (position xyz, rotation xyzw), Unity space, latest received.
        root: (position xyz, rotation xyzw) of ``/VMC/Ext/Root/Pos``, or None.
        packets, malformed: datagram counts; ``updates``: datagrams that carried bone or root
            values; ``frames``: root messages (one per VMC frame); ``rate_hz``: datagrams/s.
        last_error: the latest problem, for the status panel.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.bones: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        self.root: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self.packets = 0
        self.frames = 0
        self.updates = 0
        self.malformed = 0
        self.rate_hz = 0.0
        self.last_error = ""
        self._rate_count = 0
        self._rate_start = time.monotonic()

    def poll(self, max_packets: int = 1000) -> int:
        """Read the datagrams waiting (at most ``max_packets``); returns how many were read."""
        count = 0
        while count < max_packets:
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.last_error = str(exc)
                break
            count += 1
            self.handle(data)
        self.packets += count
        self._rate_count += count
        now = time.monotonic()
        if now - self._rate_start >= 1.0:
            self.rate_hz = self._rate_count / (now - self._rate_start)
            self._rate_count, self._rate_start = 0, now
        return count

    def handle(self, data: bytes) -> None:
        """Apply one datagram to the latest-value state (errors are counted, never raised)."""
        try:
            messages = decode_osc(data)
        except (OscError, UnicodeDecodeError, struct.error) as exc:
            self.malformed += 1
            self.last_error = f"malformed datagram: {exc}"
            return
        updated = False
        for address, args in messages:
            if address == "/VMC/Ext/Bone/Pos" or address == "/VMC/Ext/Root/Pos":
                if len(args) < 8 or not isinstance(args[0], str):
                    self.last_error = f"{address}: expected s + 7 floats"
                    continue
                values = tuple(float(v) for v in args[1:8])
                if not all(math.isfinite(v) for v in values):
                    self.last_error = f"{address} {args[0]}: non-finite value"
                    continue
                pose = (values[:3], values[3:7])
                updated = True
                if address == "/VMC/Ext/Root/Pos":
                    self.root = pose
                    self.frames += 1
                elif args[0] in HUMANOID_BONES:
                    self.bones[args[0]] = pose
                else:
                    self.last_error = f"unknown bone {args[0]!r}"
        if updated:
            self.updates += 1

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def unity_to_blender_position(p: tuple[float, ...]) -> tuple[float, float, float]:
    """Unity position (x, y, z) -> Blender (x, y, z): (-x, -z, y)."""
    return (-p[0], -p[2], p[1])


def unity_to_blender_quaternion(q: tuple[float, ...]) -> tuple[float, float, float, float]:
    """Unity quaternion (x, y, z, w) -> the same rotation in Blender axes, as (w, x, y, z).

    The axis map M (x_b = -x_u, y_b = -z_u, z_b = y_u) has det -1, so a rotation's axis maps as
    det(M) M v = (x, z, -y) and its angle is kept.
    """
    return (q[3], q[0], q[2], -q[1])


# --------------------------------------------------------------------------------------------
# Blender side: binding a mapping to an armature, applying poses, UI
# --------------------------------------------------------------------------------------------


def resolve_mapping(name: str, path: str = "") -> dict[str, Any]:
    """The mapping called ``name``: an embedded one, ``"BY_NAME"``, or ``"FILE"`` (JSON at path)."""
    if name == "FILE":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get("bones"), dict):
            raise ValueError(f"{path}: expected {{'bones': {{humanoid: bone}}, ...}}")
        return data
    if name == "BY_NAME" or name not in MAPPINGS:
        return {"bones": {b: b for b in HUMANOID_BONES}}
    mapping: dict[str, Any] = MAPPINGS[name]
    return mapping


class Binding:
    """A mapping bound to one armature: which pose bones get which humanoid rotation.

    Attributes:
        targets: list of (humanoid name, pose bone name, nearest mapped ancestor humanoid name or
            None, rest rotation quaternion in armature space).
        missing: humanoid bones of the mapping whose target bone the armature lacks.
    """

    def __init__(self, armature: Any, mapping: dict[str, Any], prefix: str = "") -> None:
        self.parents: dict[str, str] = dict(HUMANOID_PARENTS)
        self.parents.update(mapping.get("parents") or {})
        bones = armature.data.bones
        by_target: dict[str, str] = {}
        self.missing: list[str] = []
        for human, target in mapping["bones"].items():
            name = prefix + str(target)
            if name in bones:
                by_target[name] = human
            elif human in HUMANOID_BONES:
                self.missing.append(human)
        self.targets: list[tuple[str, str, str | None, Any]] = []
        # Parent-first order so that keyframes and poses apply in hierarchy order.
        for bone in _parent_first(bones):
            human = by_target.get(bone.name)
            if human is None:
                continue
            ancestor = bone.parent
            while ancestor is not None and ancestor.name not in by_target:
                ancestor = ancestor.parent
            parent_human = by_target[ancestor.name] if ancestor is not None else None
            rest = bone.matrix_local.to_quaternion()
            self.targets.append((human, bone.name, parent_human, rest))


def _parent_first(bones: Any) -> list[Any]:
    out: list[Any] = []
    stack = [b for b in bones if b.parent is None]
    while stack:
        bone = stack.pop(0)
        out.append(bone)
        stack.extend(bone.children)
    return out


def world_deltas(
    received: dict[str, tuple[tuple[float, ...], tuple[float, ...]]], parents: dict[str, str]
) -> dict[str, Any]:
    """Accumulated world rotation (Blender axes, mathutils.Quaternion) of every humanoid bone.

    A bone not received contributes the identity (it stays at rest relative to its parent).
    """
    deltas: dict[str, Any] = {}

    def delta(name: str) -> Any:
        if name in deltas:
            return deltas[name]
        pose = received.get(name)
        local = (
            mathutils.Quaternion(unity_to_blender_quaternion(pose[1]))
            if pose is not None
            else mathutils.Quaternion()
        )
        parent = parents.get(name)
        value = delta(parent) @ local if parent else local
        deltas[name] = value
        return value

    for name in HUMANOID_BONES:
        delta(name)
    return deltas


def apply_pose(
    armature: Any,
    binding: Binding,
    receiver: VmcReceiver,
    root_origin: tuple[float, float, float] | None = None,
) -> int:
    """Set the armature's pose bones from the receiver's latest values; returns bones posed.

    With ``root_origin`` (Blender position), the armature object is moved to it plus the root.
    """
    # The rotations are the avatar's own, so they apply in armature space as they are: an
    # armature object turned in the scene turns the whole pose with it.
    deltas = world_deltas(receiver.bones, binding.parents)
    posed = 0
    for human, bone_name, parent_human, rest in binding.targets:
        if human not in receiver.bones:
            continue
        d = deltas[human]
        if parent_human is not None:
            d = deltas[parent_human].inverted() @ d
        pose_bone = armature.pose.bones[bone_name]
        pose_bone.rotation_mode = "QUATERNION"
        pose_bone.rotation_quaternion = rest.inverted() @ d @ rest
        posed += 1
    if root_origin is not None and receiver.root is not None:
        base = mathutils.Vector(root_origin)
        armature.location = base + mathutils.Vector(unity_to_blender_position(receiver.root[0]))
    return posed


class _Runtime:
    """What lives outside Blender's data: the socket, the binding, recording state."""

    receiver: VmcReceiver | None = None
    binding: Binding | None = None
    armature_name = ""
    updates_seen = 0
    record_start: float | None = None
    record_frame0 = 0
    last_keyed_frame: int | None = None


RUNTIME = _Runtime()


def start_receiver(scene: Any) -> VmcReceiver:
    """Bind the socket and the mapping for ``scene.avatarlink``; starts the timer if registered."""
    settings = scene.avatarlink
    stop_receiver()
    armature = settings.armature
    if armature is None or armature.type != "ARMATURE":
        raise ValueError("pick an armature first")
    mapping = resolve_mapping(settings.mapping, bpy.path.abspath(settings.mapping_file))
    RUNTIME.binding = Binding(armature, mapping, settings.prefix)
    if not RUNTIME.binding.targets:
        raise ValueError(f"no bone of {armature.name} matches the mapping {settings.mapping}")
    RUNTIME.receiver = VmcReceiver(settings.host, settings.port)
    RUNTIME.armature_name = armature.name
    RUNTIME.updates_seen = 0
    settings.root_origin = armature.location
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=0.0)
    return RUNTIME.receiver


def stop_receiver() -> None:
    """Close the socket and stop the timer."""
    if RUNTIME.receiver is not None:
        RUNTIME.receiver.close()
        RUNTIME.receiver = None
    if bpy is not None and bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


def tick() -> float | None:
    """Timer callback: receive, pose, record. Returns the next interval (None stops)."""
    receiver = RUNTIME.receiver
    if receiver is None:
        return None
    scene = bpy.context.scene
    settings = scene.avatarlink
    interval: float = 1.0 / max(settings.update_hz, 1.0)
    try:
        receiver.poll()
        armature = bpy.data.objects.get(RUNTIME.armature_name)
        if armature is None or RUNTIME.binding is None:
            receiver.last_error = f"armature {RUNTIME.armature_name!r} is gone"
            return interval
        if receiver.updates != RUNTIME.updates_seen:
            RUNTIME.updates_seen = receiver.updates
            origin = tuple(settings.root_origin) if settings.apply_root else None
            apply_pose(armature, RUNTIME.binding, receiver, origin)
            if settings.record:
                _record(scene, armature)
            else:
                RUNTIME.record_start = None
    except Exception as exc:  # a timer that raises is unregistered by Blender: report instead
        receiver.last_error = f"{type(exc).__name__}: {exc}"
    return interval


def _record(scene: Any, armature: Any) -> None:
    """Key the posed bones at the frame matching the wall-clock time since recording began."""
    now = time.monotonic()
    if RUNTIME.record_start is None:
        RUNTIME.record_start = now
        RUNTIME.record_frame0 = scene.frame_current
        RUNTIME.last_keyed_frame = None
    fps = scene.render.fps / scene.render.fps_base
    frame = RUNTIME.record_frame0 + round((now - RUNTIME.record_start) * fps)
    if frame == RUNTIME.last_keyed_frame or RUNTIME.binding is None:
        return
    RUNTIME.last_keyed_frame = frame
    group = "avatarlink"
    for _, bone_name, _, _ in RUNTIME.binding.targets:
        pose_bone = armature.pose.bones[bone_name]
        pose_bone.keyframe_insert("rotation_quaternion", frame=frame, group=group)
    if scene.avatarlink.apply_root:
        armature.keyframe_insert("location", frame=frame, group=group)
    scene.frame_end = max(scene.frame_end, frame)


if bpy is not None:
    # Blender keeps no reference to the strings a dynamic enum callback returns: keep them here.
    _MAPPING_ITEMS: list[tuple[str, str, str]] = [
        *((name, name, f"embedded mapping of rig {name}") for name in sorted(MAPPINGS)),
        ("BY_NAME", "By humanoid name", "armature bones named like HumanBodyBones"),
        ("FILE", "JSON file", "a mapping file (see the add-on's documentation)"),
    ]

    def _mapping_items(self: Any, context: Any) -> list[tuple[str, str, str]]:
        return _MAPPING_ITEMS

    def _is_armature(self: Any, obj: Any) -> bool:
        return bool(obj.type == "ARMATURE")

    class AVATARLINK_PG_settings(bpy.types.PropertyGroup):  # noqa: N801 - Blender naming
        """Per-scene settings of the receiver."""

        host: StringProperty(name="Host", default="127.0.0.1", description="address to bind")
        port: IntProperty(name="Port", default=DEFAULT_PORT, min=0, max=65535)
        armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature)
        mapping: EnumProperty(name="Mapping", items=_mapping_items)
        mapping_file: StringProperty(name="Mapping file", subtype="FILE_PATH")
        prefix: StringProperty(name="Bone prefix", default="", description="e.g. DEF- for Rigify")
        apply_root: BoolProperty(name="Move with root", default=False)
        record: BoolProperty(name="Record keyframes", default=False)
        update_hz: FloatProperty(name="Update rate", default=100.0, min=1.0, max=1000.0)
        root_origin: FloatVectorProperty(name="Root origin", size=3)

    class AVATARLINK_OT_start(bpy.types.Operator):  # noqa: N801
        """Start receiving VMC and driving the armature"""

        bl_idname = "avatarlink.start"
        bl_label = "Start receiving"

        def execute(self, context: Any) -> set[str]:
            try:
                receiver = start_receiver(context.scene)
            except (OSError, ValueError) as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            self.report({"INFO"}, f"listening on UDP port {receiver.port}")
            return {"FINISHED"}

    class AVATARLINK_OT_stop(bpy.types.Operator):  # noqa: N801
        """Stop receiving"""

        bl_idname = "avatarlink.stop"
        bl_label = "Stop"

        def execute(self, context: Any) -> set[str]:
            stop_receiver()
            return {"FINISHED"}

    class AVATARLINK_PT_panel(bpy.types.Panel):  # noqa: N801
        """Settings and live status."""

        bl_label = "avatarlink VMC"
        bl_idname = "AVATARLINK_PT_panel"
        bl_space_type = "VIEW_3D"
        bl_region_type = "UI"
        bl_category = "avatarlink"

        def draw(self, context: Any) -> None:
            settings = context.scene.avatarlink
            layout = self.layout
            col = layout.column()
            col.prop(settings, "armature")
            col.prop(settings, "mapping")
            if settings.mapping == "FILE":
                col.prop(settings, "mapping_file")
            col.prop(settings, "prefix")
            row = col.row()
            row.prop(settings, "host")
            row.prop(settings, "port")
            col.prop(settings, "apply_root")
            col.prop(settings, "record")
            receiver = RUNTIME.receiver
            if receiver is None:
                col.operator("avatarlink.start", icon="PLAY")
                return
            col.operator("avatarlink.stop", icon="PAUSE")
            box = layout.box()
            box.label(text=f"port {receiver.port}: {receiver.rate_hz:.0f} datagrams/s")
            mapped = len(RUNTIME.binding.targets) if RUNTIME.binding else 0
            box.label(text=f"bones received {len(receiver.bones)}, mapped {mapped}")
            box.label(text=f"frames {receiver.frames}, malformed {receiver.malformed}")
            if RUNTIME.binding is not None and RUNTIME.binding.missing:
                missing = ", ".join(RUNTIME.binding.missing[:4])
                box.label(text=f"not in armature: {missing}")
            if receiver.last_error:
                box.label(text=receiver.last_error, icon="ERROR")

    _CLASSES = (
        AVATARLINK_PG_settings,
        AVATARLINK_OT_start,
        AVATARLINK_OT_stop,
        AVATARLINK_PT_panel,
    )


def register() -> None:
    """Blender add-on entry point."""
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.avatarlink = PointerProperty(type=AVATARLINK_PG_settings)


def unregister() -> None:
    """Blender add-on exit point."""
    stop_receiver()
    del bpy.types.Scene.avatarlink
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
