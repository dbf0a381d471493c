"""Streaming: encode + send of one VMC frame (55 bones) vs a naive python-osc sender.

Each candidate sends the same frame (Root/Pos, 55 Bone/Pos, OK, T) to a UDP socket on 127.0.0.1
that is drained between repetitions, so the numbers include the ``sendto`` system calls:

- ``avatarlink VmcSink.send``: the fixed-layout encoder (one numpy write of all numbers into a
  prebuilt buffer) plus the Unity conversion, split into bundles of at most 1472 bytes.
- ``avatarlink encode only``: the same without the socket.
- ``python-osc, one bundle``: ``OscMessageBuilder`` per message, one ``OscBundleBuilder`` bundle,
  ``SimpleUDPClient.send`` (the obvious way; one 4.7 kB datagram, fragmented on a network).
- ``python-osc, split bundles``: the same messages packed into bundles under 1472 bytes.

Per-frame times are medians over repetitions (each ``--frames`` frames), with the interquartile
range; the ratio is python-osc's median over ours.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from avatarlink.outputs.base import DEFAULT_MAX_DATAGRAM
from avatarlink.outputs.unity_space import positions_to_unity, quaternions_to_unity
from avatarlink.outputs.vmc import VmcSink
from avatarlink.types import BoneRotations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avatarlink bench streaming``."""
    parser.add_argument("--rig", default="unity_humanoid", help="rig whose bones are sent")
    parser.add_argument("--frames", type=int, default=200, help="frames per repetition")
    parser.add_argument("--repeats", type=int, default=15, help="repetitions (median over them)")
    parser.add_argument("--json", metavar="OUT", type=Path, help="write the records as JSON")


def _naive_sender(
    port: int, bones: tuple[str, ...], rest: np.ndarray, split: bool
) -> Callable[[BoneRotations, float], None]:
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder
    from pythonosc.udp_client import SimpleUDPClient

    client = SimpleUDPClient("127.0.0.1", port)
    rest_unity = positions_to_unity(rest).tolist()

    def build(address: str, args: list[Any]) -> Any:
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(arg)
        return builder.build()

    def send(pose: BoneRotations, t: float) -> None:
        rot = quaternions_to_unity(pose.rot).tolist()  # python-osc refuses numpy floats
        messages = [build("/VMC/Ext/Root/Pos", ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])]
        for name, p, q in zip(bones, rest_unity, rot, strict=True):
            messages.append(build("/VMC/Ext/Bone/Pos", [name, *p, *q]))
        messages.append(build("/VMC/Ext/OK", [1, 3, 0, 1]))
        messages.append(build("/VMC/Ext/T", [t]))
        groups: list[list[Any]] = [[]]
        size = 16
        for msg in messages:
            if split and size + 4 + msg.size > DEFAULT_MAX_DATAGRAM:
                groups.append([])
                size = 16
            groups[-1].append(msg)
            size += 4 + msg.size
        for group in groups:
            bundle = OscBundleBuilder(IMMEDIATELY)
            for msg in group:
                bundle.add_content(msg)
            client.send(bundle.build())

    return send


def _time_per_frame(
    fn: Callable[[BoneRotations, float], None],
    poses: list[BoneRotations],
    repeats: int,
    drain: Callable[[], None],
) -> np.ndarray:
    for pose in poses[:20]:  # warm up
        fn(pose, pose.t)
    drain()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for pose in poses:
            fn(pose, pose.t)
        out.append((time.perf_counter() - start) / len(poses) * 1e3)
        drain()
    return np.array(out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the benchmark and print a table (ms per frame)."""
    from avatarlink.rig import load_rig

    stream = out if out is not None else sys.stdout
    rig = load_rig(args.rig)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    receiver.setblocking(False)
    port = receiver.getsockname()[1]

    def drain() -> None:
        while True:
            try:
                receiver.recv(65536)
            except BlockingIOError:
                return

    rng = np.random.default_rng(0)
    poses = []
    for i in range(args.frames):
        q = rng.normal(size=(rig.num_bones, 4)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        poses.append(
            BoneRotations(
                rig.bones, q, np.zeros(3, np.float32), np.ones(rig.num_bones, bool), i / 60
            )
        )
    sink = VmcSink.from_rig(rig, "127.0.0.1", port)
    encode_sink = VmcSink.from_rig(rig, "127.0.0.1", port)

    def encode_only(pose: BoneRotations, t: float) -> None:
        encode_sink._datagrams([pose], t)

    candidates: list[tuple[str, Callable[[BoneRotations, float], None]]] = [
        ("avatarlink VmcSink.send", lambda p, t: sink.send([p], t)),
        ("avatarlink encode only", encode_only),
        ("python-osc, one bundle", _naive_sender(port, rig.bones, rig.rest_local_positions, False)),
        (
            "python-osc, split bundles",
            _naive_sender(port, rig.bones, rig.rest_local_positions, True),
        ),
    ]
    records: list[dict[str, Any]] = []
    for name, fn in candidates:
        times = _time_per_frame(fn, poses, args.repeats, drain)
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        records.append({"what": name, "ms_median": float(median), "ms_iqr": float(q3 - q1)})
    ours = float(records[0]["ms_median"])
    stream.write(
        f"VMC frame of {rig.num_bones} bones ({rig.name}), {len(sink.layout.datagram_sizes)} "
        f"datagrams of <= {DEFAULT_MAX_DATAGRAM} bytes; ms per frame, median (IQR) over "
        f"{args.repeats} x {args.frames} frames:\n"
    )
    for rec in records:
        ratio = float(rec["ms_median"]) / ours
        rec["ratio_to_avatarlink"] = ratio
        stream.write(
            f"  {rec['what']:<28} {rec['ms_median']:.4f}  ({rec['ms_iqr']:.4f})  x{ratio:.1f}\n"
        )
    sink.close()
    encode_sink.close()
    receiver.close()
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
        stream.write(f"wrote {args.json}\n")
    return 0
