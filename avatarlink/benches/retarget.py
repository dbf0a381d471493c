"""Retargeting accuracy and speed on synthetic poses whose bone rotations are known.

Random poses inside the rig's joint limits (:func:`avatarlink.solver.sample_pose`) go through
forward kinematics to world keypoints, then through the solver, and the solved local rotations are
compared with the truth in degrees per bone. Inputs:

``3d``
    exact world keypoints (every pose's root turned at random).
``3d_noise``
    the same plus isotropic Gaussian noise of ``--noise-cm`` RMS 3D displacement per keypoint
    (standard deviation ``noise / sqrt(3)`` per axis).
``2d``
    a perspective projection by a virtual camera (``--camera-distance`` from the hips,
    ``--focal-px``) of poses roughly facing it, lifted with the rig's bone lengths (weak
    perspective plus the perspective correction, the focal length being known) and solved.

Records (``--json OUT``): ``rig, layout, input, poses, bones, median_deg, p95_deg, mean_deg,
max_deg, ms_per_frame`` (median per-frame time of the streaming path: ``BoneSolver.solve`` on one
person; for ``2d`` plus ``Lifter.lift``), ``ms_per_frame_batch`` (the same poses solved as one
batch) and ``per_bone``. Rig authors run it on their YAML: ``avatarlink bench retarget --rig
my_rig.yaml``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink import quat
from avatarlink.lift import LiftConfig, Lifter
from avatarlink.rig import Rig, forward_kinematics, keypoints_from_pose, list_rigs, load_rig
from avatarlink.skeletons import KeypointLayout
from avatarlink.solver import BoneSolver, SolverConfig, build_plan, sample_pose
from avatarlink.types import Keypoints, Space

F64 = npt.NDArray[np.float64]

INPUTS = ("3d", "3d_noise", "2d")
DEFAULT_RIG = "unity_humanoid"


@dataclass(frozen=True)
class VirtualCamera:
    """A pinhole camera on the +Z axis looking at the hips (world origin) along -Z.

    Attributes:
        distance_m: camera distance from the hips in metres.
        focal_px: focal length in pixels.
        width, height: image size in pixels (the principal point is the centre).
    """

    distance_m: float = 3.5
    focal_px: float = 600.0
    width: int = 640
    height: int = 480

    def project(self, world: npt.ArrayLike) -> F64:
        """Pixels (..., 2) of world points (..., 3) (x right, y down)."""
        p = np.asarray(world, np.float64)
        depth = self.distance_m - p[..., 2]
        u = self.width / 2 + self.focal_px * p[..., 0] / depth
        v = self.height / 2 - self.focal_px * p[..., 1] / depth
        out: F64 = np.stack([u, v], axis=-1)
        return out


def synthetic_poses(
    rig: Rig, layout: KeypointLayout, n: int, rng: np.random.Generator, root: str = "any"
) -> tuple[F64, F64]:
    """Random poses and their world keypoints: (truth local rotations (n, B, 4), keypoints
    (n, K, 3) in metres with the Hips joint at the origin)."""
    truth = sample_pose(rig, layout, n, rng, root=root)
    pos, rot = forward_kinematics(rig, truth, np.zeros(3))
    return truth, keypoints_from_pose(rig, layout, pos, rot)


def rotation_errors_deg(truth: npt.ArrayLike, solved: npt.ArrayLike, mask: npt.ArrayLike) -> F64:
    """Angles in degrees (n, E) between solved and true local rotations of the masked bones."""
    err = np.degrees(quat.angle_between(truth, solved))
    out: F64 = err[:, np.asarray(mask, bool)]
    return out


def evaluate(
    rig: Rig,
    layout: KeypointLayout,
    kind: str,
    poses: int = 300,
    seed: int = 0,
    noise_cm: float = 1.0,
    camera: VirtualCamera | None = None,
    timed: bool = True,
) -> dict[str, Any]:
    """One synthetic evaluation; returns a record (see the module docstring)."""
    if kind not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {kind!r}")
    camera = camera or VirtualCamera()
    rng = np.random.default_rng(seed)
    truth, world = synthetic_poses(rig, layout, poses, rng, "facing" if kind == "2d" else "any")
    k = layout.num_keypoints
    score = np.asarray(np.isfinite(world).all(axis=-1), np.float32)
    if kind == "3d_noise":
        world = world + rng.normal(0.0, noise_cm / 100.0 / np.sqrt(3.0), world.shape)
    solver = BoneSolver(rig, SolverConfig(mirror=False))
    # exact keypoints on the rig's joints: no COCO annotation offsets, no allowance for noise
    lift_cfg = LiftConfig(
        focal_px=camera.focal_px,
        coco_offsets=False,
        depth_margin=0.0,
        in_line_margin=0.0,
        straight_deg=0.0,
    )
    lifter = Lifter(rig, lift_cfg) if kind == "2d" else None
    if kind == "2d":
        image = np.concatenate([camera.project(world), np.zeros((poses, k, 1))], axis=-1)
        frames = [
            Keypoints(image[i : i + 1].astype(np.float32), score[i : i + 1], layout, Space.IMAGE)
            for i in range(poses)
        ]
    else:
        frames = [
            Keypoints(world[i : i + 1].astype(np.float32), score[i : i + 1], layout, Space.WORLD)
            for i in range(poses)
        ]
    solved = np.zeros_like(truth)
    times = np.zeros(poses)
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        kp = lifter.lift(frame) if lifter is not None else frame
        out = solver.solve(kp, float(i))
        times[i] = time.perf_counter() - t0
        solved[i] = out[0].rot
    batch_ms = float("nan")
    if timed and kind != "2d":
        all_kp = Keypoints(world.astype(np.float32), score, layout, Space.WORLD)
        solver.solve_batch(all_kp)  # warm-up
        t0 = time.perf_counter()
        solver.solve_batch(all_kp)
        batch_ms = (time.perf_counter() - t0) * 1000.0 / poses
    mask = build_plan(rig, layout).evaluated
    err = rotation_errors_deg(truth, solved, mask)
    bones = [b for b, m in zip(rig.bones, mask, strict=True) if m]
    record: dict[str, Any] = {
        "rig": rig.name,
        "layout": layout.value,
        "input": kind,
        "poses": poses,
        "bones": len(bones),
        "rig_bones": rig.num_bones,
        "median_deg": round(float(np.median(err)), 3),
        "p95_deg": round(float(np.percentile(err, 95)), 3),
        "mean_deg": round(float(np.mean(err)), 3),
        "max_deg": round(float(np.max(err)), 3),
        "ms_per_frame": round(float(np.median(times[min(5, poses - 1) :]) * 1000.0), 4),
        "ms_per_frame_batch": round(batch_ms, 4),
        "per_bone": {
            b: {
                "median_deg": round(float(np.median(err[:, j])), 3),
                "p95_deg": round(float(np.percentile(err[:, j], 95)), 3),
            }
            for j, b in enumerate(bones)
        },
    }
    if kind == "3d_noise":
        record["noise_cm_rms"] = noise_cm
    if kind == "2d":
        record["camera"] = {"distance_m": camera.distance_m, "focal_px": camera.focal_px}
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avatarlink bench retarget``."""
    parser.add_argument(
        "--rig",
        default=DEFAULT_RIG,
        help="preset name or rig YAML path, or 'all' for every preset (default: %(default)s)",
    )
    parser.add_argument("--poses", type=int, default=300, help="random poses per case")
    parser.add_argument(
        "--layout",
        default="all",
        help="coco17, blazepose33, or all the rig supports (default: %(default)s)",
    )
    parser.add_argument(
        "--input", default="all", help=f"one of {', '.join(INPUTS)}, or all (default: all)"
    )
    parser.add_argument("--noise-cm", type=float, default=1.0, help="RMS 3D noise for 3d_noise")
    parser.add_argument("--camera-distance", type=float, default=3.5, help="metres, for 2d")
    parser.add_argument("--focal-px", type=float, default=600.0, help="pixels, for 2d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the records here")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation for every requested rig x layout x input; print a table."""
    rigs = list(list_rigs()) if args.rig == "all" else [args.rig]
    inputs = list(INPUTS) if args.input == "all" else [args.input]
    if args.poses < 2:
        raise SystemExit("--poses must be at least 2")
    camera = VirtualCamera(distance_m=args.camera_distance, focal_px=args.focal_px)
    records = []
    print(
        f"{'rig':16} {'layout':12} {'input':9} {'bones':>5} {'median':>8} {'p95':>8} "
        f"{'ms/frame':>9} {'ms/batch-frame':>14}"
    )
    for name in rigs:
        rig = load_rig(name)
        layouts = rig.layouts if args.layout == "all" else (KeypointLayout.from_name(args.layout),)
        for layout in layouts:
            for kind in inputs:
                rec = evaluate(rig, layout, kind, args.poses, args.seed, args.noise_cm, camera)
                records.append(rec)
                print(
                    f"{rec['rig']:16} {rec['layout']:12} {rec['input']:9} {rec['bones']:>5} "
                    f"{rec['median_deg']:>7.2f}d {rec['p95_deg']:>7.2f}d "
                    f"{rec['ms_per_frame']:>9.3f} {rec['ms_per_frame_batch']:>14.4f}"
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {len(records)} records to {args.json}")
    return 0
