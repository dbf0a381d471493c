"""Observer costs: what the preview and the recorder take from the pipeline thread, and what the
viewers' threads spend per frame.

On the pipeline thread (the numbers that matter for frame rate): ``PreviewServer.publish`` and
``Recorder.write`` of one person with the rig's bones. In the viewer threads (never on the
pipeline thread): one ``/events`` message (JPEG + JSON + forward kinematics) and one annotated
MJPEG part. Also the BVH export rate. Medians and interquartile spreads over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from avatarlink.skeletons import KeypointLayout
from avatarlink.types import BoneRotations, Frame, FrameResult, Keypoints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the preview benchmark."""
    parser.add_argument("--repeat", type=int, default=300, help="timed calls per measure")
    parser.add_argument("--width", type=int, default=640, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels")
    parser.add_argument("--rig", default="unity_humanoid", help="rig whose bones are recorded")


def _result(rig: Any, width: int, height: int, index: int) -> FrameResult:
    rng = np.random.default_rng(index)
    bones = tuple(rig.bones)
    # A camera-like image: smooth shading plus sensor noise (JPEG size depends on content).
    ramp = np.linspace(40, 200, width, dtype=np.float32)[None, :, None]
    image = np.clip(ramp + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    xy = rng.uniform([0, 0], [width, height], (1, 17, 2)).astype(np.float32)
    kp = Keypoints(
        np.concatenate([xy, np.zeros((1, 17, 1), np.float32)], -1),
        rng.uniform(0.2, 1.0, (1, 17)).astype(np.float32),
        KeypointLayout.COCO17,
    )
    q = rng.normal(size=(len(bones), 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rot = BoneRotations(bones, q, np.zeros(3, np.float32), np.ones(len(bones), bool), index / 30)
    timings = {"inference": 8.0, "solve": 0.3, "send": 0.1}
    stats = {"fps": 30.0, "dropped": 0.0, "packets_sent": float(index)}
    frame = Frame(image, index / 30, index, "bench")
    return FrameResult(frame, kp, kp, None, (rot,), timings, 20.0, "CPUExecutionProvider", stats)


def _time(fn: Callable[[int], object], repeat: int, warmup: int = 10) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile in microseconds of ``fn(i)`` for i in 0..repeat-1."""
    for i in range(min(warmup, repeat)):
        fn(i)
    samples = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        samples[i] = (time.perf_counter() - t0) * 1e6
    q25, q50, q75 = np.percentile(samples, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one line per measure."""
    from avatarlink.bvh import motion_from_track, write_bvh
    from avatarlink.preview import PreviewServer, annotate
    from avatarlink.recording import Recorder, RecordingHeader, RigSkeleton, load_recording
    from avatarlink.rig import load_rig

    rig = load_rig(args.rig)
    base = [_result(rig, args.width, args.height, i) for i in range(32)]
    # Distinct, increasing frame times (the recording is exported below), shared images.
    results = [
        replace(base[i % 32], frame=replace(base[i % 32].frame, t=i / 30, index=i))
        for i in range(args.repeat + 10)
    ]
    sk = RigSkeleton.from_rig(rig)
    rows: list[tuple[str, tuple[float, float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        header = RecordingHeader("bench", KeypointLayout.COCO17, sk)
        with Recorder(path, header) as recorder, PreviewServer("127.0.0.1", 0, rig=rig) as server:
            rows.append(("pipeline thread: PreviewServer.publish", _time(
                lambda i: server.publish(results[i]), args.repeat)))  # fmt: skip
            rows.append(("pipeline thread: Recorder.write (1 person)", _time(
                lambda i: recorder.write(results[i]), args.repeat, warmup=0)))  # fmt: skip
            rows.append(("viewer thread: /events message", _time(
                lambda i: server._encode_event(results[i]), args.repeat // 3)))  # fmt: skip
            mjpeg = server._encode_mjpeg("smoothed")
            rows.append(("viewer thread: MJPEG part (annotate+JPEG)", _time(
                lambda i: mjpeg(results[i]), args.repeat // 3)))  # fmt: skip
            rows.append(("annotate only", _time(
                lambda i: annotate(results[i]), args.repeat // 3)))  # fmt: skip
        recording = load_recording(path)
        track = recording.track(0)
        t0 = time.perf_counter()
        motion = motion_from_track(track, sk, fps=30.0)
        write_bvh(Path(tmp) / "bench.bvh", motion)
        export_s = time.perf_counter() - t0
        line_bytes = path.stat().st_size / max(len(recording.frames), 1)
    print(f"preview/recording costs, {args.width}x{args.height} frames, rig {args.rig} "
          f"({len(sk.bones)} bones); median [25%..75%] us")  # fmt: skip
    for name, (med, lo, hi) in rows:
        print(f"  {name:<44} {med:9.1f}  [{lo:.1f}..{hi:.1f}]")
    print(f"  recording size: {line_bytes:.0f} bytes per frame")
    rate = motion.num_frames / export_s if export_s > 0 else float("inf")
    print(
        f"  BVH export: {motion.num_frames} frames in {export_s * 1e3:.1f} ms ({rate:.0f} frames/s)"
    )
    return 0
