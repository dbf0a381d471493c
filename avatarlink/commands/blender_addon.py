"""``avatarlink blender-addon --out PATH``: write the Blender VMC receiver add-on.

The add-on (``avatarlink/integrations/blender_addon.py``) runs inside Blender without avatarlink
installed, so the rig mappings (HumanBodyBones -> armature bone names, and the hierarchy) are
embedded into the written file from the rig YAML files. Install the written file from Blender's
Edit > Preferences > Add-ons > Install...; the panel is in the 3D viewport's sidebar, tab
"avatarlink".
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Any

from avatarlink.errors import InputError

BEGIN = "# --- avatarlink mappings begin ---\n"
END = "# --- avatarlink mappings end ---\n"


def register(subparsers: Any) -> None:
    """Add the ``blender-addon`` subcommand."""
    parser = subparsers.add_parser(
        "blender-addon",
        aliases=["blender_addon"],  # the module's name, which COMMAND_MODULES lists
        help="write the Blender add-on that receives VMC and drives an armature",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="PATH", help="the .py file to write")
    parser.add_argument(
        "--rig",
        action="append",
        default=None,
        metavar="RIG",
        help="rig name or YAML whose mapping to embed (repeatable; default: every bundled rig)",
    )
    parser.add_argument(
        "--mapping-json",
        metavar="PATH",
        help="also write the mapping of the (single) --rig as a JSON file for the add-on's "
        "'JSON file' option",
    )
    parser.set_defaults(handler=run)


def rig_mapping(rig: Any) -> dict[str, Any]:
    """The add-on's mapping of a rig: humanoid -> armature bone, humanoid -> humanoid parent."""
    bones = {b: t for b, t in zip(rig.bones, rig.target_names, strict=True)}
    parents = {
        b: rig.bones[p] for b, p in zip(rig.bones, rig.parents.tolist(), strict=True) if p >= 0
    }
    return {"bones": bones, "parents": parents}


def addon_source(mappings: dict[str, Any]) -> str:
    """The add-on's source with ``mappings`` embedded."""
    template = (
        resources.files("avatarlink.integrations")
        .joinpath("blender_addon.py")
        .read_text(encoding="utf-8")
    )
    start, end = template.index(BEGIN) + len(BEGIN), template.index(END)
    body = "MAPPINGS: dict[str, Any] = " + json.dumps(mappings, indent=1, sort_keys=True) + "\n"
    return template[:start] + body + template[end:]


def run(args: argparse.Namespace) -> int:
    """Write the add-on (and optionally a JSON mapping)."""
    from avatarlink.rig import list_rigs, load_rig

    names = args.rig or list(list_rigs())
    rigs = [load_rig(name) for name in names]
    mappings = {rig.name: rig_mapping(rig) for rig in rigs}
    out = Path(args.out)
    if out.suffix != ".py":
        raise InputError(f"--out {out}: Blender installs add-ons from a .py file")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(addon_source(mappings), encoding="utf-8")
    print(f"wrote {out} with mappings: {', '.join(mappings)}")
    if args.mapping_json:
        if len(rigs) != 1:
            raise InputError("--mapping-json needs exactly one --rig")
        path = Path(args.mapping_json)
        path.write_text(json.dumps(mappings[rigs[0].name], indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    print("install it in Blender: Edit > Preferences > Add-ons > Install..., then tick it;")
    print("the panel is in the 3D viewport sidebar (N), tab 'avatarlink'")
    return 0
