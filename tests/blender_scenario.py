"""Runs inside Blender's Python (``bpy``) for tests/test_blender_addon.py; not a test itself.

Usage: python blender_scenario.py ADDON.py SCENE.json

SCENE.json: {"mapping": name, "prefix": str, "object_rotation_deg": [x, y, z],
"bones": [{"name", "parent", "head", "tail", "roll"}] (Blender axes, metres)}.

Builds the armature, registers the add-on, starts its receiver on a free port and prints
``READY <port>``. Then for each stdin line ``{"updates": N, "bones": [names]}`` it runs the add-on's
timer callback until N datagrams with bone data have arrived (with "record": true, recording is on),
and prints one JSON line with the keyed data paths and, for each named pose bone, its rest and
posed world rotation matrices (3x3, rows) and its world head-to-tail direction.
"""

import importlib.util
import json
import math
import sys
import time
from typing import Any

import bpy


def load_addon(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("avatarlink_vmc_addon", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_armature(scene_spec: dict[str, Any]) -> Any:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    data = bpy.data.armatures.new("Rig")
    obj = bpy.data.objects.new("Rig", data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    edit: dict[str, Any] = {}
    for spec in scene_spec["bones"]:
        bone = data.edit_bones.new(spec["name"])
        bone.head = spec["head"]
        bone.tail = spec["tail"]
        bone.roll = spec["roll"]
        bone.use_connect = False
        if spec["parent"]:
            bone.parent = edit[spec["parent"]]
        edit[spec["name"]] = bone
    bpy.ops.object.mode_set(mode="OBJECT")
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = [math.radians(a) for a in scene_spec["object_rotation_deg"]]
    obj.location = (0.5, -0.25, 0.0)
    bpy.context.view_layer.update()
    return obj


def rows(matrix: Any) -> list[list[float]]:
    return [list(r) for r in matrix]


def main() -> None:
    addon_path, scene_path = sys.argv[1], sys.argv[2]
    with open(scene_path, encoding="utf-8") as f:
        scene_spec = json.load(f)
    armature = build_armature(scene_spec)
    addon = load_addon(addon_path)
    addon.register()
    settings = bpy.context.scene.avatarlink
    settings.armature = armature
    settings.mapping = scene_spec["mapping"]
    settings.prefix = scene_spec.get("prefix", "")
    settings.port = 0  # any free port
    receiver = addon.start_receiver(bpy.context.scene)
    binding = addon.RUNTIME.binding
    print(f"READY {receiver.port} {len(binding.targets)}", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        settings.record = bool(request.get("record", False))
        deadline = time.monotonic() + 10.0
        while receiver.updates < request["updates"] and time.monotonic() < deadline:
            addon.tick()
            time.sleep(0.002)
        addon.tick()
        bpy.context.view_layer.update()
        out = {
            "updates": receiver.updates,
            "malformed": receiver.malformed,
            "error": receiver.last_error,
            "bones": {},
        }
        action = armature.animation_data.action if armature.animation_data else None
        out["keyed"] = sorted(
            {fc.data_path for fc in action.fcurves if len(fc.keyframe_points)} if action else []
        )
        world = armature.matrix_world
        for name in request["bones"]:
            pose_bone = armature.pose.bones[name]
            posed = (world @ pose_bone.matrix).to_3x3().normalized()
            rest = (world @ armature.data.bones[name].matrix_local).to_3x3().normalized()
            direction = (world.to_3x3() @ (pose_bone.tail - pose_bone.head)).normalized()
            out["bones"][name] = {
                "posed": rows(posed),
                "rest": rows(rest),
                "direction": list(direction),
            }
        print(json.dumps(out), flush=True)
    addon.unregister()


if __name__ == "__main__":
    main()
