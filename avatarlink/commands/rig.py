"""``avatarlink rig check FILE`` and ``avatarlink rig list``: validate and inspect rig YAMLs."""

from __future__ import annotations

import argparse
from typing import Any

from avatarlink.errors import RigError


def register(subparsers: Any) -> None:
    """Add ``rig`` with its ``check`` and ``list`` actions."""
    parser = subparsers.add_parser(
        "rig",
        help="check a rig YAML or list the preset rigs",
        description="Validate rig YAMLs (errors name the file, line and key) and list presets.",
    )
    actions = parser.add_subparsers(dest="rig_action", metavar="ACTION")
    check = actions.add_parser(
        "check", help="validate a rig YAML (path or preset name) and print its bone tree"
    )
    check.add_argument("rig", help="path to a rig YAML, or a preset name")
    check.set_defaults(handler=_check)
    lister = actions.add_parser("list", help="list the preset rigs")
    lister.set_defaults(handler=_list)
    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _check(args: argparse.Namespace) -> int:
    from avatarlink.rig import load_rig

    rig = load_rig(args.rig)
    print(summary(rig))
    return 0


def _list(args: argparse.Namespace) -> int:
    from avatarlink.rig import list_rigs, load_rig, rigs_dir

    names = list_rigs()
    if not names:
        print(f"no preset rigs in {rigs_dir()}")
        return 1
    print(f"preset rigs in {rigs_dir()}:")
    for name in names:
        try:
            rig = load_rig(name)
        except RigError as exc:
            print(f"  {name:16} INVALID: {exc}")
            continue
        layouts = ", ".join(lay.value for lay in rig.layouts)
        first = rig.description.splitlines()[0] if rig.description else ""
        print(
            f"  {name:16} {rig.num_bones:2d} bones  {rig.convention:7} forward {rig.forward}  "
            f"[{layouts}]  {first}"
        )
    return 0


def summary(rig: Any) -> str:
    """A readable summary: header, bone tree with drives and limits, bones driven per layout."""
    from avatarlink.rig import LIMIT_CONE, LIMIT_HINGE
    from avatarlink.solver import K_MEMBER, K_NONE, build_plan

    lines = [
        f"rig {rig.name} ({rig.path}): valid",
        f"  {rig.num_bones} bones, convention {rig.convention} (forward {rig.forward}), "
        f"hip height {rig.hip_height:.3f} m, mirror {'on' if rig.mirror else 'off'}, "
        f"layouts {', '.join(lay.value for lay in rig.layouts)}",
    ]
    depth = [0] * rig.num_bones
    for b in range(rig.num_bones):
        p = int(rig.parents[b])
        depth[b] = depth[p] + 1 if p >= 0 else 0
    shared_by: dict[int, str] = {}
    for b, chain in enumerate(rig.distribute):
        for j, w in chain or ():
            if j != b:
                shared_by[j] = f"shares {rig.bones[b]}'s rotation ({w:g})"
    lim = rig.limits
    for b, name in enumerate(rig.bones):
        parts = []
        if rig.target_names[b] != name:
            parts.append(f"-> {rig.target_names[b]}")
        drive = rig.drives[b]
        if drive is not None:
            parts.append(f"drive {drive[0]} -> {drive[1]}")
        up = rig.ups[b]
        if up is not None:
            parts.append(f"twist from {up.hinge}'s hinge" if up.hinge else
                         f"up {up.source} -> {up.target}")  # fmt: skip
        if rig.fits[b]:
            parts.append(f"fit {len(rig.fits[b])} points")
        if b in shared_by:
            parts.append(shared_by[b])
        if lim.kind[b] == LIMIT_HINGE:
            lo, hi = lim.hinge_range_deg[b]
            ax = ", ".join(f"{v:.2f}" for v in lim.hinge_axis[b])
            parts.append(f"hinge [{ax}] {lo:g}..{hi:g} deg")
        elif lim.kind[b] == LIMIT_CONE:
            lo, hi = lim.twist_deg[b]
            parts.append(f"swing {lim.swing_deg[b]:g} deg, twist {lo:g}..{hi:g} deg")
        else:
            parts.append("free")
        lines.append("  " + "  " * depth[b] + f"{name}: " + "; ".join(parts))
    for layout in rig.layouts:
        plan = build_plan(rig, layout)
        driven = [
            rig.bones[b] for b in range(rig.num_bones) if plan.kind[b] not in (K_NONE, K_MEMBER)
        ]
        shared = [rig.bones[b] for b in range(rig.num_bones) if plan.kind[b] == K_MEMBER]
        lines.append(
            f"  {layout.value}: {len(driven)} driven bones ({', '.join(driven)})"
            + (f", {len(shared)} sharing ({', '.join(shared)})" if shared else "")
            + f"; {rig.num_bones - len(driven) - len(shared)} stay at rest"
        )
    return "\n".join(lines)
