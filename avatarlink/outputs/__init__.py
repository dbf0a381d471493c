"""Outputs (sinks): where solved bone rotations go. One module per protocol plus this registry.

=============================  ===============================================================
``vmc://HOST[:PORT]``          VMC protocol (EVMC4U, VSeeFace, Warudo, VNyan, VMC4B), port 39539
``vrchat://HOST[:PORT]``       VRChat OSC trackers, port 9000
=============================  ===============================================================

Options go as keyword arguments of :func:`open_sink` or in the URL query, which wins for that URL
(``vmc://127.0.0.1:39540?mirror=1&max_rate_hz=30``). Adding a protocol = one module with a
:class:`~avatarlink.outputs.base.UdpPoseSink` subclass (or any class meeting :class:`Sink` with a
``from_url(url, rig, **options)`` constructor) and one entry in :data:`SINKS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from avatarlink.errors import OutputError
from avatarlink.outputs.base import DEFAULT_MAX_DATAGRAM, SinkOptions
from avatarlink.outputs.vmc import VmcSink
from avatarlink.outputs.vrchat import VrchatOptions, VrchatSink
from avatarlink.types import BoneRotations, RigLike


@runtime_checkable
class Sink(Protocol):
    """Something that takes each frame's bone rotations and sends or stores them."""

    @property
    def packets_sent(self) -> int:
        """Datagrams (or records) sent so far."""
        ...

    @property
    def errors(self) -> int:
        """Datagrams that could not be sent; streaming goes on regardless."""
        ...

    def send(self, rotations: Sequence[BoneRotations], t: float) -> None:
        """Send one frame: one entry per person (the first is used), empty when nobody is seen."""
        ...

    def close(self) -> None:
        """Release the socket or file."""
        ...


#: URL scheme -> sink class (each has ``from_url(url, rig, **options)``).
SINKS: dict[str, Any] = {
    "vmc": VmcSink,
    "vrchat": VrchatSink,
}


def open_sink(url: str, rig: RigLike, **options: Any) -> Sink:
    """Open the sink for ``url`` (scheme picks the class, see :data:`SINKS`) for ``rig``.

    Args:
        url: ``vmc://127.0.0.1:39539``, ``vrchat://127.0.0.1:9000?trackers=1,2,3``, ...
        rig: bone names, parents and rest pose (``avatarlink.rig.Rig`` or alike).
        options: sink options (:class:`SinkOptions`, :class:`VrchatOptions`); URL query wins.

    Raises:
        OutputError: unknown scheme or malformed URL; ConfigError: bad options or rig.
    """
    scheme = urlsplit(url).scheme
    cls = SINKS.get(scheme)
    if cls is None:
        raise OutputError(
            f"{url!r}: unknown output scheme {scheme!r} "
            f"(known: {', '.join(f'{s}://' for s in SINKS)})"
        )
    sink: Sink = cls.from_url(url, rig, **options)
    return sink


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--send URL`` (repeatable), ``--send-rate``, ``--mirror``, ``--max-datagram``,
    ``--root-translation`` to a command that streams."""
    group = parser.add_argument_group("streaming")
    group.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="URL",
        help="stream to vmc://HOST:PORT (default port 39539) or vrchat://HOST:PORT (9000); "
        "repeat to feed several receivers; per-URL options as ?key=value",
    )
    group.add_argument(
        "--send-rate", type=float, default=None, metavar="HZ", help="send at most HZ frames/s"
    )
    group.add_argument("--mirror", action="store_true", help="mirror left/right (selfie view)")
    group.add_argument(
        "--max-datagram",
        type=int,
        default=DEFAULT_MAX_DATAGRAM,
        metavar="BYTES",
        help="largest UDP datagram; frames are split into bundles "
        f"(default {DEFAULT_MAX_DATAGRAM})",
    )
    group.add_argument(
        "--root-translation",
        action="store_true",
        help="move the avatar with the hips (default: avatar stays in place)",
    )


def open_sinks(args: argparse.Namespace, rig: RigLike) -> list[Sink]:
    """Open every ``--send`` URL of ``args`` (see :func:`add_sink_arguments`) for ``rig``."""
    common = {
        "max_rate_hz": args.send_rate,
        "mirror": args.mirror,
        "max_datagram": args.max_datagram,
        "root_translation": args.root_translation,
    }
    sinks: list[Sink] = []
    try:
        for url in args.send:
            sinks.append(open_sink(url, rig, **common))
    except Exception:
        for sink in sinks:
            sink.close()
        raise
    return sinks


__all__ = [
    "SINKS",
    "RigLike",
    "Sink",
    "SinkOptions",
    "VmcSink",
    "VrchatOptions",
    "VrchatSink",
    "add_sink_arguments",
    "open_sink",
    "open_sinks",
]
