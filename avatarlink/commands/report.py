"""``avatarlink report FILE``: jitter, lag and timing of a recording, as numbers and a PNG."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="plot raw vs smoothed keypoints, jitter, lag and stage timings of a recording",
        description=(
            "Summarise a recording (--record) for tuning smoothing: trajectories of chosen "
            "keypoints raw vs smoothed, jitter and lag per keypoint, and a histogram of each "
            "pipeline stage's time. Prints the numbers and writes one PNG."
        ),
    )
    parser.add_argument("file", help="recording written by --record (JSON lines)")
    parser.add_argument(
        "--out", default=None, help="image to write (default: FILE with suffix .report.png)"
    )
    parser.add_argument(
        "--keypoints",
        default="left_wrist,right_wrist",
        help="comma-separated keypoints to plot over time (default: %(default)s; at most 4)",
    )
    parser.add_argument(
        "--person", type=int, default=0, help="person slot to analyse (default: %(default)s)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the report command."""
    from avatarlink.recording import load_recording
    from avatarlink.report import render_report, write_report

    recording = load_recording(args.file)
    if recording.damage:
        print(f"avatarlink: warning: {recording.damage}", file=sys.stderr)
    names = [n.strip() for n in args.keypoints.split(",") if n.strip()]
    image, sm, tm = render_report(recording, args.person, names)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".report.png")
    write_report(out, image)
    fps = 1.0 / sm.frame_s
    print(
        f"{recording.path.name}: {len(recording.frames)} frames, {recording.duration_s:.1f} s, "
        f"{fps:.1f} fps (median), model {recording.header.model}"
    )
    print(
        f"jitter (torso lengths/frame^2): raw {_num(sm.jitter_raw_all, 5)}, smoothed "
        f"{_num(sm.jitter_smoothed_all, 5)} (x{_num(sm.jitter_ratio, 2)}); "
        f"lag of smoothed behind raw: {_num(sm.lag_ms_all, 1)} ms"
    )
    order = sorted(range(len(sm.names)), key=lambda k: -_finite_or(float(sm.jitter_raw[k])))
    worst = ", ".join(
        f"{sm.names[k]} {_num(sm.jitter_raw[k], 4)}->{_num(sm.jitter_smoothed[k], 4)}"
        for k in order[:3]
    )
    print(f"most jittery raw keypoints: {worst}")
    if tm.stages:
        stages = ", ".join(f"{k} {tm.median(k):.1f}" for k in tm.stages)
        print(f"median ms per stage: {stages}")
    if tm.latency_ms.size:
        lat = tm.latency_ms
        print(
            f"latency ms: median {float(_median(lat)):.1f}, "
            f"95th percentile {float(_percentile(lat, 95)):.1f}"
        )
    print(f"wrote {out}")
    return 0


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _finite_or(value: float, default: float = -1.0) -> float:
    return float(value) if math.isfinite(value) else default


def _median(values: Any) -> float:
    import numpy as np

    return float(np.median(values))


def _percentile(values: Any, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))
