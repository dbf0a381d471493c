"""Whole frame vs tracked crop for single-pose models, on the synthetic performer, by distance.

For each camera distance the same rendered sequence is estimated twice: whole-frame letterbox and
crop tracking (:mod:`avatarlink.tracking`). Reported per mode: keypoint error against the ground
truth (px and torso lengths), raw jitter (RMS second difference in torso lengths per frame², next
to the ground truth's own), and the smoothed jitter-vs-lag frontier over the smoothing presets.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink.commands.common import add_model_arguments, session_options

F64 = npt.NDArray[np.float64]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avatarlink bench tracking``."""
    add_model_arguments(parser)
    parser.add_argument(
        "--distances",
        default="2.5,3.6,5.0,7.0",
        help="camera distances in metres (comma-separated; default: %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="sequence length per distance")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the sequence")
    parser.add_argument(
        "--motions",
        default="wave,raise_left,squat,walk,turn",
        help="performer motions to play (comma-separated)",
    )
    parser.add_argument("--json", dest="json_out", help="write the records here")


def _estimate_sequence(
    estimator: Any, frames: list[npt.NDArray[np.uint8]]
) -> tuple[F64, F64, list[float]]:
    """Run every frame; returns xy (T, 17, 2) with NaN where missing, scores (T, 17), ms/frame."""
    xy = np.full((len(frames), 17, 2), np.nan)
    score = np.zeros((len(frames), 17))
    ms = []
    for i, image in enumerate(frames):
        result = estimator.estimate(image)
        ms.append(sum(result.timings_ms.values()))
        if result.image.num_persons:
            xy[i] = result.image.xyz[0, :, :2]
            score[i] = result.image.score[0]
    return xy, score, ms


def _smoothed(xy: F64, score: F64, fps: float, preset: str) -> F64:
    from avatarlink.skeletons import KeypointLayout
    from avatarlink.smoothing import KeypointSmoother
    from avatarlink.smoothing_config import PRESETS
    from avatarlink.types import Keypoints, Space

    smoother = KeypointSmoother(PRESETS[preset])
    out = np.full_like(xy, np.nan)
    for i in range(len(xy)):
        xyz = np.concatenate([xy[i], np.full((17, 1), np.nan)], axis=1)[None].astype(np.float32)
        kp = Keypoints(xyz, score[i][None].astype(np.float32), KeypointLayout.COCO17, Space.IMAGE)
        if not np.isfinite(xy[i]).any():
            kp = Keypoints.empty(KeypointLayout.COCO17)
        res = smoother(kp, i / fps)
        if res.num_persons:
            out[i] = res.xyz[0, :, :2]
    return out


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one table row per distance, mode and preset."""
    from avatarlink import metrics
    from avatarlink.models.registry import create_estimator, get_spec
    from avatarlink.rig import load_rig
    from avatarlink.skeletons import KeypointLayout
    from avatarlink.smoothing_config import PRESETS
    from avatarlink.synthetic import SyntheticOptions, SyntheticPerformer
    from avatarlink.tracking import CropTrackingConfig
    from avatarlink.types import Space

    spec = get_spec(args.model)
    if spec.layout is not KeypointLayout.COCO17:
        print(f"bench tracking needs a COCO-17 single-pose model, not {args.model}")
        return 2
    rig = load_rig("unity_humanoid")
    distances = [float(d) for d in args.distances.split(",")]
    motions = tuple(m for m in args.motions.split(",") if m)
    n = int(args.seconds * args.fps)
    records: list[dict[str, Any]] = []
    presets = [p for p in ("responsive", "balanced", "smooth") if p in PRESETS]
    header = (
        f"{'dist m':>6} {'mode':<6} {'torso px':>8} {'err px':>7} {'err/torso':>9} "
        f"{'jitter':>8} {'gt jitter':>9} {'ms':>6}  smoothed: preset jitter lag_ms"
    )
    print(f"{args.model}, {n} frames per distance at {args.fps:g} fps; jitter in torso/frame^2")
    print(header)
    for distance in distances:
        options = SyntheticOptions(fps=args.fps, camera_distance_m=distance, motions=motions)
        performer = SyntheticPerformer(rig, options)
        frames, truth = [], []
        for i in range(n):
            image, pose = performer.frame(i / args.fps)
            frames.append(image)
            gt = performer.keypoints(pose, KeypointLayout.COCO17, Space.IMAGE)
            truth.append(gt.xyz[0, :, :2])
        gt_xy = np.asarray(truth, np.float64)
        torso = metrics.torso_length(gt_xy, KeypointLayout.COCO17)  # (T,)
        gt_jitter = metrics.jitter_rms(gt_xy, torso[:, None])
        for mode, tracking in (("whole", None), ("crop", CropTrackingConfig())):
            estimator = create_estimator(args.model, session_options(args), tracking=tracking)
            xy, score, ms = _estimate_sequence(estimator, frames)
            err = np.linalg.norm(xy - gt_xy, axis=-1)
            record: dict[str, Any] = {
                "model": args.model,
                "distance_m": distance,
                "mode": mode,
                "frames": n,
                "torso_px": round(float(np.median(torso)), 1),
                "err_px": round(float(np.nanmedian(err)), 2),
                "err_torso": round(float(np.nanmedian(err / torso[:, None])), 4),
                "found": round(float(np.isfinite(xy[..., 0]).mean()), 3),
                "jitter": round(metrics.jitter_rms(xy, torso[:, None]), 5),
                "gt_jitter": round(gt_jitter, 5),
                "ms_per_frame": round(statistics.median(ms), 2),
                "smoothed": [],
            }
            for preset in presets:
                smooth = _smoothed(xy, score, args.fps, preset)
                record["smoothed"].append(
                    {
                        "preset": preset,
                        "jitter": round(metrics.jitter_rms(smooth, torso[:, None]), 5),
                        "lag_ms": round(metrics.lag_ms(smooth, gt_xy, 1.0 / args.fps), 1),
                        "err_torso": round(
                            float(
                                np.nanmedian(
                                    np.linalg.norm(smooth - gt_xy, axis=-1) / torso[:, None]
                                )
                            ),
                            4,
                        ),
                    }
                )
            records.append(record)
            frontier = " ".join(
                f"{s['preset']} {s['jitter']:.4f} {s['lag_ms']:.0f}" for s in record["smoothed"]
            )
            print(
                f"{distance:>6.1f} {mode:<6} {record['torso_px']:>8.1f} {record['err_px']:>7.2f} "
                f"{record['err_torso']:>9.4f} {record['jitter']:>8.4f} {gt_jitter:>9.4f} "
                f"{record['ms_per_frame']:>6.2f}  {frontier}"
            )
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(records, fh, indent=2)
    return 0
