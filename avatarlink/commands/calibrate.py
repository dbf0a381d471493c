"""``avatarlink calibrate``: record a few seconds of T-pose and save the performer's profile."""

from __future__ import annotations

import argparse
import time
from typing import Any

from avatarlink.commands.common import add_model_arguments, session_options


def register(subparsers: Any) -> None:
    """Add the ``calibrate`` subcommand."""
    parser = subparsers.add_parser(
        "calibrate",
        help="measure your proportions from a few seconds of T-pose; writes a profile YAML",
        description=(
            "Stand facing the camera in a T-pose (arms straight out) or an A-pose, whole body in "
            "view, and hold still. Frames that do not show the pose are rejected with a reason; "
            "the median segment lengths (and, with a 3D model, your facing direction) are saved "
            "to a profile that `avatarlink run --profile FILE` loads."
        ),
    )
    parser.add_argument("--source", default="0", help="camera index, video, folder or image")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to record")
    parser.add_argument("--rig", default="unity_humanoid", help="rig preset or YAML")
    parser.add_argument("--pose", choices=("t", "a", "auto"), default="auto")
    parser.add_argument("--height-m", type=float, default=None, help="your height, metres")
    parser.add_argument("--countdown", type=float, default=0.0, help="seconds before recording")
    parser.add_argument(
        "--out", "-o", default="profile.yaml", help="profile to write (default: %(default)s)"
    )
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Record, check each frame, measure, save."""
    from avatarlink.calibration import CalibrationConfig, Calibrator, save_profile
    from avatarlink.capture import CaptureOptions, open_capture
    from avatarlink.models.registry import create_estimator
    from avatarlink.rig import load_rig

    rig = load_rig(args.rig)
    config = CalibrationConfig(seconds=args.seconds, pose=args.pose, height_m=args.height_m)
    estimator = create_estimator(args.model, session_options(args))
    calibrator = Calibrator(rig, config, source=str(args.source))
    if args.countdown > 0:
        print(f"get into a T-pose: recording starts in {args.countdown:g} s ...")
        time.sleep(args.countdown)
    print(f"recording {config.seconds:g} s from {args.source}: hold the pose")
    start: float | None = None
    with open_capture(args.source, CaptureOptions()) as capture:
        while True:
            item = capture.get(timeout=5.0)
            if item is None:
                break
            frame = item.frame
            start = frame.t if start is None else start
            if frame.t - start > config.seconds:
                break
            result = estimator.estimate(frame.image)
            world = getattr(result, "world", None)
            check = calibrator.add(world if world is not None else result.image)
            if not check.ok and args.verbose:
                print(f"  frame {frame.index}: {check.reason}")
    profile = calibrator.result()
    path = save_profile(profile, args.out)
    lengths = profile.segment_lengths_m
    print(
        f"calibrated from {profile.frames_used}/{profile.frames_total} frames ({profile.pose}-pose,"
        f" scale from {profile.scale}): torso {lengths['torso']:.3f} m, upper arm "
        f"{lengths['left_upper_arm']:.3f} m, thigh {lengths['left_thigh']:.3f} m, facing "
        f"{profile.facing_yaw_deg:+.1f} deg"
    )
    print(f"wrote {path}")
    return 0
