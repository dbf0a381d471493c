"""The whole loop: per-stage ms, throughput, capture-to-send latency, overhead, accuracy.

Three passes over the same stages (model, smoothing, lifting, solver, a real VMC sender to a UDP
receiver on 127.0.0.1 that counts what arrives):

1. Throughput: the source as fast as possible, every frame processed (decoding overlaps the loop
   in the capture thread), with the run's default loop. Gives per-stage median/p90 ms, frames
   per second, and the non-model overhead: the loop's work per frame minus inference, in ms and
   as a ratio to inference.
2. The same with ``pipeline.overlap`` (the stages after the model in a second thread): frames per
   second only, to compare the alternative in the same run.
3. Latency: the source paced at its own frame rate (as a camera delivers), latest-frame-wins.
   Gives capture-to-send latency p50/p99, its growth (median of the last fifth minus the first
   fifth: a queue building up shows here) and dropped frames.

On the synthetic performer (``--source synthetic``, optionally ``--pre-render`` to a temporary
video so decoding a real file is measured) the throughput pass is also scored against the ground
truth: 2D keypoint error of the estimator (px and in torso lengths) and the geodesic error of the
solved local bone rotations (degrees; median and p90, all bones and per bone group). The same
lifter and solver are also fed the ground-truth 2D keypoints of those frames: the accuracy the
rest of the pipeline reaches with a perfect pose model.

Targets (reported, not asserted): overhead <= 1 ms per frame median; latency p50 <= inference +
3 ms without growth; >= 100 fps on a 720p video with MoveNet Lightning (``--pre-render --width
1280 --height 720``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink import quat
from avatarlink.pipeline import STAGES
from avatarlink.types import FrameResult

F64 = npt.NDArray[np.float64]

STAGE_KEYS: tuple[str, ...] = (*STAGES, "total")
BONE_GROUPS: dict[str, tuple[str, ...]] = {
    "torso": ("Hips", "Spine", "Chest", "UpperChest", "Neck", "Head"),
    "arms": ("Shoulder", "UpperArm", "LowerArm", "Hand"),
    "legs": ("UpperLeg", "LowerLeg", "Foot", "Toes"),
}
OVERHEAD_TARGET_MS = 1.0
LATENCY_MARGIN_MS = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avatarlink bench pipeline``."""
    from avatarlink.models.registry import DEFAULT_MODEL
    from avatarlink.session import DEVICES

    parser.add_argument(
        "--source", default="synthetic", help="synthetic (default) or a video/folder path"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="pose model (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU inference threads")
    parser.add_argument("--rig", default="unity_humanoid", help="rig (default: %(default)s)")
    parser.add_argument("--smoothing", default=None, help="smoothing preset")
    parser.add_argument("--frames", type=int, default=300, help="timed frames (default: 300)")
    parser.add_argument("--warmup", type=int, default=15, help="untimed first frames")
    parser.add_argument("--width", type=int, default=640, help="synthetic frame width (px)")
    parser.add_argument("--height", type=int, default=480, help="synthetic frame height (px)")
    parser.add_argument(
        "--pre-render",
        action="store_true",
        help="render the synthetic performer to a temporary video first and read that file",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=10.0,
        help="length of the real-time latency pass (0 skips it; 60 checks for growth)",
    )
    parser.add_argument("--json", dest="json_out", help="write the results as JSON here")
    parser.add_argument("--plot", help="write a PNG chart of stage times and latency here")


@dataclass
class _Record:
    t: float
    timings: dict[str, float]
    latency_ms: float
    wall: float
    raw: Any = None  # the estimator's keypoints
    rotations: Any = None  # the first person's solved rotations
    kp_err_px: F64 | None = None
    kp_err_torso: F64 | None = None
    rot_err: dict[str, float] = field(default_factory=dict)
    rot_err_truth_2d: dict[str, float] = field(default_factory=dict)


class _UdpCounter:
    """A UDP receiver on 127.0.0.1 counting datagrams (so the sender's work is real)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.packets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(65536)
                self.packets += 1
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


def run(args: argparse.Namespace) -> int:
    """Run the pipeline benchmark; prints a report, optionally writes JSON and a chart."""
    from avatarlink.capture import Capture, CaptureOptions, parse_source, reader_factory
    from avatarlink.config import load_config
    from avatarlink.pipeline import Pipeline, PipelineOptions, build_stages
    from avatarlink.rig import load_rig
    from avatarlink.synthetic import SyntheticOptions, SyntheticPerformer

    receiver = _UdpCounter()
    overrides: dict[str, Any] = {
        "model": args.model,
        "device": args.device,
        "threads": args.threads,
        "rig": args.rig,
        "send": [f"vmc://127.0.0.1:{receiver.port}"],
        "source": args.source,  # the synthetic performer's camera gives the lifter its focal length
        "synthetic.width": args.width,
        "synthetic.height": args.height,
    }
    if args.smoothing:
        overrides["smoothing.preset"] = args.smoothing
    config = load_config(None, overrides)
    rig = load_rig(config.rig)
    performer: SyntheticPerformer | None = None
    tmp_video: Path | None = None
    source = args.source
    if parse_source(source)[0] == "synthetic":
        performer = SyntheticPerformer(rig, SyntheticOptions(width=args.width, height=args.height))
        if args.pre_render:
            tmp_video = _pre_render(performer, args.warmup + args.frames)
            source = str(tmp_video)
    synthetic_factory = performer.reader if performer is not None else None
    factory = reader_factory(source, config.capture, synthetic_factory)
    stages = build_stages(config, rig)
    try:
        count = args.warmup + args.frames

        def throughput(overlap: bool) -> tuple[list[_Record], float, str]:
            stages.reset()
            capture = Capture(factory, CaptureOptions(handoff="every", loop=True))
            pipe = Pipeline(capture.start(), stages, PipelineOptions(overlap=overlap))
            try:
                recs = _collect(pipe, count, None)
            finally:
                capture.stop()
            timed = recs[args.warmup :]
            span = timed[-1].wall - timed[0].wall if len(timed) > 1 else math.nan
            return recs, (len(timed) - 1) / span if span > 0 else math.nan, pipe.provider

        print(f"bench pipeline: {source} -> {args.model}...", file=sys.stderr)
        records, fps, provider = throughput(overlap=False)
        if performer is not None:
            oracle = _TruthLifting(config, rig)
            for rec in records:  # in time order: the lifter and solver keep temporal state
                _score(rec, performer, oracle)
        records = records[args.warmup :]
        print("throughput with the stages after the model overlapped...", file=sys.stderr)
        _, fps_overlapped, _ = throughput(overlap=True)
        latency: list[_Record] = []
        dropped = 0
        if args.latency_seconds > 0:
            print(f"latency pass: {args.latency_seconds:g} s in real time...", file=sys.stderr)
            stages.reset()
            paced = Capture(factory, CaptureOptions(realtime=True, loop=True))
            try:
                latency = _collect(Pipeline(paced.start(), stages), None, args.latency_seconds)
            finally:
                paced.stop()
            latency = latency[args.warmup :]
            dropped = paced.counters.dropped
        result = _summarise(records, latency, fps, dropped, provider, args, source)
        result["fps_overlapped"] = round(fps_overlapped, 1)
        result["packets_received"] = receiver.packets
    finally:
        for sink in stages.sinks:
            sink.close()
        receiver.close()
        if tmp_video is not None:
            tmp_video.unlink(missing_ok=True)
    _report(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(_finite(result), indent=2) + "\n")
        print(f"wrote {args.json_out}")
    if args.plot:
        _plot(result, records, latency, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _pre_render(performer: Any, frames: int) -> Path:
    """Render ``frames`` frames of the performer into a temporary MP4 (MJPG AVI as fallback)."""
    opts = performer.options
    fd, name = tempfile.mkstemp(suffix=".mp4", prefix="avatarlink-bench-")
    os.close(fd)
    path = Path(name)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"mp4v"), opts.fps, (opts.width, opts.height)
    )
    if not writer.isOpened():
        path.unlink(missing_ok=True)
        path = path.with_suffix(".avi")
        writer = cv2.VideoWriter(
            str(path), cv2.VideoWriter.fourcc(*"MJPG"), opts.fps, (opts.width, opts.height)
        )
    print(f"pre-rendering {frames} frames to {path}...", file=sys.stderr)
    for i in range(frames):
        writer.write(performer.frame(i / opts.fps)[0])
    writer.release()
    return path


class _TruthLifting:
    """The run's lifter and solver fed the ground-truth 2D keypoints: the accuracy the rest of
    the pipeline reaches with a perfect pose model (compared in the same run)."""

    def __init__(self, config: Any, rig: Any) -> None:
        import dataclasses

        from avatarlink.lift import Lifter
        from avatarlink.pipeline import lift_config
        from avatarlink.solver import BoneSolver, SolverConfig

        solver = config.section("solver")
        # the ground truth's keypoints are the rig's joints, not COCO's annotated points
        self.lifter = Lifter(rig, dataclasses.replace(lift_config(config), coco_offsets=False))
        self.solver = BoneSolver(
            rig, solver if isinstance(solver, SolverConfig) else SolverConfig()
        )

    def rotations(self, truth: Any, t: float) -> Any:
        world = self.lifter.lift(truth, t)
        solved = self.solver.solve(world, t)
        return solved[0] if solved else None


def _collect(pipe: Any, frames: int | None, seconds: float | None) -> list[_Record]:
    """Run ``pipe`` and keep each frame's timings and outputs (scored after the run, so that
    scoring never competes with the loop)."""
    records: list[_Record] = []

    def tick(result: FrameResult | None) -> None:
        if result is not None:
            records.append(
                _Record(
                    result.frame.t,
                    dict(result.timings_ms),
                    result.latency_ms,
                    time.perf_counter(),
                    result.raw,
                    result.rotations[0] if result.rotations else None,
                )
            )

    pipe.run(seconds=seconds, max_frames=frames, on_tick=tick)
    return records


def _score(rec: _Record, performer: Any, oracle: _TruthLifting | None) -> None:
    """Keypoint and rotation errors of one frame against the performer's ground truth."""
    from avatarlink.synthetic import torso_size_px
    from avatarlink.types import Space

    raw = rec.raw
    pose = performer.pose_at(rec.t)
    truth = performer.keypoints(pose, raw.layout, Space.IMAGE)
    if raw.num_persons:
        err = np.linalg.norm(raw.xyz[0, :, :2].astype(np.float64) - truth.xyz[0, :, :2], axis=1)
        rec.kp_err_px = err
        rec.kp_err_torso = err / max(float(torso_size_px(truth)[0]), 1e-6)
    gt = dict(zip(pose.rotations.bones, pose.rotations.rot, strict=True))
    if rec.rotations is not None:
        rec.rot_err = _rotation_errors(rec.rotations, gt)
    if oracle is not None:
        solved = oracle.rotations(truth, rec.t)
        if solved is not None:
            rec.rot_err_truth_2d = _rotation_errors(solved, gt)


def _rotation_errors(solved: Any, truth: dict[str, Any]) -> dict[str, float]:
    """Geodesic angle in degrees between solved and true local rotations, per valid bone."""
    names = [b for b, v in zip(solved.bones, solved.valid, strict=True) if v and b in truth]
    if not names:
        return {}
    idx = [solved.bones.index(b) for b in names]
    ang = np.degrees(quat.angle_between(solved.rot[idx], np.stack([truth[b] for b in names])))
    return dict(zip(names, (float(a) for a in ang), strict=True))


def _pct(values: Sequence[float] | F64, q: float) -> float:
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    return float(np.percentile(arr, q)) if arr.size else math.nan


def _group(bone: str) -> str:
    for group, parts in BONE_GROUPS.items():
        core = bone.removeprefix("Left").removeprefix("Right")
        if core in parts:
            return group
    return "other"


def _summarise(
    records: list[_Record],
    latency: list[_Record],
    fps: float,
    dropped: int,
    provider: str,
    args: argparse.Namespace,
    source: str,
) -> dict[str, Any]:
    stages: dict[str, dict[str, float]] = {}
    for key in STAGE_KEYS:
        vals = [r.timings.get(key, 0.0) for r in records]
        stages[key] = {"median": round(_pct(vals, 50), 3), "p90": round(_pct(vals, 90), 3)}
    # The loop's own bookkeeping: the iteration's wall time not spent in any stage.
    inside = ("preprocess", "inference", "decode", "smoothing", "lifting", "solve", "send")
    own = [r.timings["total"] - sum(r.timings.get(k, 0.0) for k in inside) for r in records]
    stages["loop"] = {"median": round(_pct(own, 50), 3), "p90": round(_pct(own, 90), 3)}
    overhead = [r.timings["total"] - r.timings.get("inference", 0.0) for r in records]
    inference = stages["inference"]["median"]
    overhead_ms = _pct(overhead, 50)
    lat = [r.latency_ms for r in latency] if latency else [r.latency_ms for r in records]
    # Of the latency, the time before and after the loop worked on the frame (waiting for the
    # loop to finish the previous frame, waking up).
    wait = [r.latency_ms - r.timings["total"] for r in (latency or records)]
    fifth = max(1, len(lat) // 5)
    growth = _pct(lat[-fifth:], 50) - _pct(lat[:fifth], 50) if len(lat) >= 10 else math.nan
    out: dict[str, Any] = {
        "source": source,
        "model": args.model,
        "provider": provider,
        "cpu_count": os.cpu_count(),
        "frames": len(records),
        "fps": round(fps, 1),
        "latency_ms_p50": round(_pct(lat, 50), 2),
        "latency_ms_p99": round(_pct(lat, 99), 2),
        "latency_growth_ms": round(growth, 2),
        "latency_wait_ms_p50": round(_pct(wait, 50), 2),
        "latency_loop_ms_p50": round(_pct([r.timings["total"] for r in latency or records], 50), 2),
        "latency_frames": len(latency),
        "latency_paced": bool(latency),
        "stages_ms": stages,
        "overhead_ms": round(overhead_ms, 3),
        "overhead_ratio": round(overhead_ms / inference, 3) if inference > 0 else math.nan,
        "dropped": int(dropped),
        "targets": {
            "overhead_ms_max": OVERHEAD_TARGET_MS,
            "latency_ms_p50_max": round(inference + LATENCY_MARGIN_MS, 2),
            "fps_min_720p_lightning": 100.0,
        },
    }
    kp = [r.kp_err_px for r in records if r.kp_err_px is not None]
    if kp:
        px = np.concatenate(kp)
        torso = np.concatenate([r.kp_err_torso for r in records if r.kp_err_torso is not None])
        out["kp_err_px"] = round(_pct(px, 50), 2)
        out["kp_err_px_p90"] = round(_pct(px, 90), 2)
        out["kp_err_torso"] = round(_pct(torso, 50), 4)
        out["person_found_ratio"] = round(len(kp) / len(records), 3)
    rot = [r.rot_err for r in records if r.rot_err]
    if rot:
        every = [a for r in rot for a in r.values()]
        out["rot_err_deg_median"] = round(_pct(every, 50), 2)
        out["rot_err_deg_p90"] = round(_pct(every, 90), 2)
        groups: dict[str, list[float]] = {}
        for r in rot:
            for bone, a in r.items():
                groups.setdefault(_group(bone), []).append(a)
        out["rot_err_deg_by_group"] = {
            g: {"median": round(_pct(v, 50), 2), "p90": round(_pct(v, 90), 2)}
            for g, v in sorted(groups.items())
        }
    elif "kp_err_px" in out:
        out["rot_err_deg_median"] = out["rot_err_deg_p90"] = None
    ideal = [a for r in records for a in r.rot_err_truth_2d.values()]
    if ideal:
        out["rot_err_deg_truth_2d_median"] = round(_pct(ideal, 50), 2)
        out["rot_err_deg_truth_2d_p90"] = round(_pct(ideal, 90), 2)
    return out


def _report(r: dict[str, Any]) -> None:
    print(f"source {r['source']}  model {r['model']}  provider {r['provider']}  "
          f"{r['frames']} frames  {r['cpu_count']} CPUs")  # fmt: skip
    print(f"{'stage':<12}{'median ms':>10}{'p90 ms':>10}")
    for key, v in r["stages_ms"].items():
        print(f"{key:<12}{v['median']:>10.3f}{v['p90']:>10.3f}")
    inf = r["stages_ms"]["inference"]["median"]
    print(
        f"throughput        {r['fps']:.1f} fps as fast as possible ({r['fps_overlapped']:.1f} fps "
        "with pipeline.overlap: the stages after the model in a second thread)"
    )
    print(
        f"overhead          {r['overhead_ms']:.3f} ms/frame besides inference "
        f"({r['overhead_ratio']:.2f}x inference; target <= {OVERHEAD_TARGET_MS} ms)"
    )
    paced = "paced at the source rate" if r["latency_paced"] else "unpaced (queueing included)"
    print(
        f"latency           p50 {r['latency_ms_p50']:.2f} ms, p99 {r['latency_ms_p99']:.2f} ms "
        f"({paced}; target p50 <= {inf + LATENCY_MARGIN_MS:.2f}); growth "
        f"{r['latency_growth_ms']:+.2f} ms; dropped {r['dropped']}"
    )
    print(
        f"                  of which the loop's work {r['latency_loop_ms_p50']:.2f} ms and waiting "
        f"{r['latency_wait_ms_p50']:.2f} ms (p50)"
    )
    if "kp_err_px" in r:
        print(
            f"2D keypoints      median {r['kp_err_px']:.2f} px (p90 {r['kp_err_px_p90']:.2f}), "
            f"{r['kp_err_torso']:.3f} torso lengths; person found in "
            f"{100 * r['person_found_ratio']:.0f}% of frames"
        )
    if r.get("rot_err_deg_median") is not None:
        groups = ", ".join(
            f"{g} {v['median']:.1f}/{v['p90']:.1f}" for g, v in r["rot_err_deg_by_group"].items()
        )
        print(
            f"bone rotations    median {r['rot_err_deg_median']:.1f} deg, p90 "
            f"{r['rot_err_deg_p90']:.1f} deg (median/p90 by group: {groups})"
        )
    elif "kp_err_px" in r:
        print("bone rotations    none solved (no lifter or solver output)")
    if "rot_err_deg_truth_2d_median" in r:
        print(
            f"  with true 2D    median {r['rot_err_deg_truth_2d_median']:.1f} deg, p90 "
            f"{r['rot_err_deg_truth_2d_p90']:.1f} deg (lifting and solving alone, same frames)"
        )


def _plot(
    result: dict[str, Any], records: list[_Record], latency: list[_Record], path: Path
) -> None:
    """Stage medians as bars and latency over time, drawn with OpenCV."""
    w, h = 900, 520
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"{result['model']} on {Path(result['source']).name}: {result['fps']} fps",
                (20, 30), font, 0.7, (0, 0, 0), 2, cv2.LINE_AA)  # fmt: skip
    stages = [k for k in STAGE_KEYS if k != "total"]
    vals = [result["stages_ms"][k]["median"] for k in stages]
    top = max(max(vals), 1e-3)
    for i, (k, v) in enumerate(zip(stages, vals, strict=True)):
        y = 60 + i * 26
        cv2.putText(img, k, (20, y + 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        length = int(500 * v / top)
        cv2.rectangle(img, (130, y), (130 + max(length, 1), y + 18), (200, 120, 40), -1)
        cv2.putText(
            img, f"{v:.2f} ms", (140 + length, y + 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    lat = np.array([r.latency_ms for r in (latency or records)])
    if lat.size > 1:
        x0, y0, pw, ph = 60, 300, 800, 180
        cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), (0, 0, 0), 1)
        hi = float(np.percentile(lat, 99.5)) * 1.1 or 1.0
        xs = x0 + np.linspace(0, pw, lat.size)
        ys = y0 + ph - np.clip(lat / hi, 0, 1) * ph
        pts = np.stack([xs, ys], axis=1).astype(np.int32)
        cv2.polylines(img, [pts], False, (40, 40, 200), 1, cv2.LINE_AA)
        cv2.putText(img, f"capture-to-send latency (ms), p50 {result['latency_ms_p50']}",
                    (x0, y0 - 8), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
        cv2.putText(img, f"{hi:.1f}", (10, y0 + 12), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, "0", (40, y0 + ph), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        from avatarlink.errors import OutputError

        raise OutputError(f"cannot write the chart to {path} (unknown image suffix?)")
