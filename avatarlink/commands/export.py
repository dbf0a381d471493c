"""``avatarlink export FILE --bvh OUT.bvh``: a recording as a BVH animation (Blender, Maya...)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from avatarlink.bvh import UNITS


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a recording (--record) as BVH",
        description=(
            "Write a recording as a BVH file: the rig's hierarchy and T-pose offsets, one rotation "
            "per bone per frame and the hips translation, resampled to a fixed frame rate. The rig "
            "stored in the recording is used unless --rig is given."
        ),
    )
    parser.add_argument("file", help="recording written by --record (JSON lines)")
    parser.add_argument("--bvh", required=True, metavar="OUT.bvh", help="BVH file to write")
    parser.add_argument(
        "--rig", default=None, help="rig name or YAML (default: the rig stored in the recording)"
    )
    parser.add_argument(
        "--fps", type=float, default=30.0, help="output frame rate (default: %(default)s)"
    )
    parser.add_argument(
        "--person", type=int, default=0, help="which person slot to export (default: 0)"
    )
    parser.add_argument(
        "--units",
        choices=sorted(UNITS),
        default="cm",
        help="length unit of offsets and positions (default: %(default)s; "
        "import with scale 0.01 in Blender for cm)",
    )
    parser.set_defaults(handler=run)


def resolve_skeleton(spec: str | None, header: Any) -> Any:
    """The :class:`RigSkeleton` to use: ``--rig`` if given, else the recording's stored rig."""
    from avatarlink.errors import ConfigError
    from avatarlink.recording import RigSkeleton

    if spec is None:
        if isinstance(header.rig, RigSkeleton):
            return header.rig
        if not header.rig:
            raise ConfigError("the recording stores no rig; pass --rig NAME_OR_YAML")
        spec = str(header.rig)
    try:
        from avatarlink.rig import load_rig
    except ImportError as exc:  # pragma: no cover - only on a partial install
        raise ConfigError(f"cannot load rig {spec!r}: avatarlink.rig is unavailable") from exc
    return RigSkeleton.from_rig(load_rig(spec), name=spec)


def run(args: argparse.Namespace) -> int:
    """Run the export command."""
    from avatarlink.bvh import motion_from_track, write_bvh
    from avatarlink.commands.progress import Progress
    from avatarlink.recording import load_recording

    reading = Progress("reading", 1)
    recording = load_recording(args.file, lambda done, total: _step(reading, done, total))
    reading.close()
    if recording.damage:
        print(f"avatarlink: warning: {recording.damage}", file=sys.stderr)
    skeleton = resolve_skeleton(args.rig, recording.header)
    track = recording.track(args.person, bones=skeleton.bones)
    recorded = set().union(*(set(p.bones) for f in recording.frames for p in f.persons[:1]))
    motion = motion_from_track(track, skeleton, fps=args.fps)
    writing = Progress("writing", motion.num_frames)
    out = write_bvh(args.bvh, motion, units=args.units, progress=writing.update)
    writing.close()
    unmapped = sorted(recorded - set(skeleton.bones))
    print(
        f"wrote {out}: {motion.num_frames} frames at {args.fps:g} fps "
        f"({(motion.num_frames - 1) / args.fps:.2f} s) from {int(track.present.sum())} recorded "
        f"frames of person {args.person}; rig {skeleton.name} ({len(skeleton.bones)} joints), "
        f"units {args.units}"
    )
    if unmapped:
        print(f"note: bones not in the rig were left out: {', '.join(unmapped)}", file=sys.stderr)
    return 0


def _step(progress: Any, done: int, total: int) -> None:
    progress.total = max(total, 1)
    progress.update(done)
