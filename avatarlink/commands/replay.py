"""``avatarlink replay FILE``: stream a recording to VMC/OSC receivers again, in real time."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

DEFAULT_SEND = "vmc://127.0.0.1:39539"
#: A frame sent later than this after its due time counts as late in the summary (seconds).
LATE_S = 0.010


def register(subparsers: Any) -> None:
    """Add the ``replay`` subcommand."""
    from avatarlink.outputs import add_sink_arguments

    parser = subparsers.add_parser(
        "replay",
        help="stream a recording (--record) to VMC/OSC receivers again",
        description=(
            "Send the bone rotations of a recording to receivers at the pace they were captured "
            "(or --speed times faster), so a Unity or Blender scene can be tested without a "
            f"camera. Without --send streams to {DEFAULT_SEND}."
        ),
    )
    parser.add_argument("file", help="recording written by --record (JSON lines)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="playback speed factor (default: %(default)s)"
    )
    parser.add_argument("--loop", action="store_true", help="start over at the end until Ctrl+C")
    parser.add_argument(
        "--person", type=int, default=0, help="person slot sent first (default: %(default)s)"
    )
    parser.add_argument(
        "--rig", default=None, help="rig name or YAML (default: the rig stored in the recording)"
    )
    add_sink_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the replay command."""
    from avatarlink.commands.export import resolve_skeleton
    from avatarlink.commands.progress import Progress
    from avatarlink.errors import InputError
    from avatarlink.outputs import open_sinks
    from avatarlink.recording import load_recording

    if not args.speed > 0:
        raise InputError(f"--speed must be > 0, got {args.speed}")
    recording = load_recording(args.file)
    if recording.damage:
        print(f"avatarlink: warning: {recording.damage}", file=sys.stderr)
    frames = recording.frames
    if not frames:
        raise InputError(f"{args.file}: the recording has no frames to replay")
    skeleton = resolve_skeleton(args.rig, recording.header)
    if not args.send:
        args.send = [DEFAULT_SEND]
    sinks = open_sinks(args, skeleton)
    print(
        f"replaying {len(frames)} frames ({recording.duration_s:.1f} s) at {args.speed:g}x "
        f"to {', '.join(args.send)}" + (" in a loop (Ctrl+C stops)" if args.loop else "")
    )
    t0 = frames[0].t
    # Replay time of frame i: (t_i - t0) / speed after the pass starts; a loop adds one frame
    # interval between passes so the first frame of a pass is not sent with the last.
    period = recording.duration_s + (recording.duration_s / max(len(frames) - 1, 1))
    sent = late = passes = 0
    start = time.monotonic()
    progress = Progress("replay", len(frames))
    try:
        while True:
            pass_start = start + passes * period / args.speed
            for i, frame in enumerate(frames):
                due = pass_start + (frame.t - t0) / args.speed
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif -wait > LATE_S:
                    late += 1
                now = time.monotonic()
                persons = [p for p in frame.persons if p.bones]
                if 0 < args.person < len(persons):
                    persons.insert(0, persons.pop(args.person))
                rotations = [p.rotations(now) for p in persons]
                for sink in sinks:
                    sink.send(rotations, now)
                sent += 1
                progress.update(i + 1, f"pass {passes + 1}" if args.loop else "")
            passes += 1
            if not args.loop:
                break
    except KeyboardInterrupt:
        print("", file=sys.stderr)
    finally:
        progress.close()
        for sink in sinks:
            sink.close()
    elapsed = time.monotonic() - start
    packets = sum(int(s.packets_sent) for s in sinks)
    errors = sum(int(s.errors) for s in sinks)
    print(
        f"sent {sent} frames in {elapsed:.2f} s ({passes} full pass(es)); {packets} packets, "
        f"{errors} send errors, {late} frames late by more than {LATE_S * 1e3:.0f} ms"
    )
    return 0
