"""``avatarlink listen``: receive VMC / VRChat OSC and check it like a strict receiver would.

What to run when "nothing moves in Unity": point the sender (avatarlink, or any VMC performer) at
this port and read the live summary (rates, bones seen, last root, /VMC/Ext/OK, malformed and
invalid counts with reasons). Malformed or truncated datagrams are counted, never fatal.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from typing import Any

from avatarlink.errors import InputError

DEFAULT_PORT = 39539
_MAX_DATAGRAM = 65535


def register(subparsers: Any) -> None:
    """Add the ``listen`` subcommand."""
    parser = subparsers.add_parser(
        "listen",
        help="receive and validate a VMC / VRChat OSC stream (what a strict receiver sees)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"UDP port (default {DEFAULT_PORT}; 0 = any free)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between summaries"
    )
    parser.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Bind, receive and print summaries until ``--duration`` or Ctrl+C."""
    from avatarlink.outputs.monitor import StreamMonitor

    if args.interval <= 0:
        raise InputError(f"--interval must be > 0 s, got {args.interval}")
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    monitor = StreamMonitor()
    _emit(
        args.json,
        {"event": "listening", "host": host, "port": port},
        f"listening on udp://{host}:{port} (Ctrl+C to stop)",
    )
    start = time.monotonic()
    next_report = start + args.interval
    stop_at = None if args.duration is None else start + args.duration
    try:
        while True:
            now = time.monotonic()
            if stop_at is not None and now >= stop_at:
                break
            deadline = min(next_report, stop_at) if stop_at is not None else next_report
            readable, _, _ = select.select([sock], [], [], max(0.0, deadline - now))
            if readable:
                _drain(sock, monitor)
            if time.monotonic() >= next_report:
                next_report += args.interval
                _report(args.json, monitor, "summary", host, port)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    _report(args.json, monitor, "final", host, port)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, port))
    except OSError as exc:
        hint = (
            " (another program, e.g. the avatar app, may be using it; try --port)" if port else ""
        )
        raise InputError(
            f"cannot listen on udp://{host}:{port}: {exc.strerror or exc}{hint}"
        ) from exc
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket, monitor: Any) -> None:
    """Read every datagram waiting on the socket."""
    while True:
        try:
            data, address = sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # e.g. ICMP errors surfacing on some platforms: not fatal
            return
        monitor.feed(data, f"{address[0]}:{address[1]}")


def _report(as_json: bool, monitor: Any, event: str, host: str, port: int) -> None:
    snap = monitor.snapshot()
    if as_json:
        _emit(True, {"event": event, **snap.to_dict()}, "")
        return
    line = snap.summary_line()
    if snap.datagrams == 0:
        line += f" on udp://{host}:{port}: is the sender pointed here, and no firewall in between?"
    _emit(False, {}, line)
    if event == "final" or snap.malformed_datagrams or snap.invalid_messages:
        for reason, count in snap.problems.items():
            _emit(False, {}, f"  {count:6d} x {reason}")
        for address, count in snap.unknown_addresses.items():
            _emit(False, {}, f"  {count:6d} x unknown address {address}")


def _emit(as_json: bool, obj: dict[str, Any], text: str) -> None:
    print(json.dumps(obj) if as_json else text, file=sys.stdout, flush=True)
