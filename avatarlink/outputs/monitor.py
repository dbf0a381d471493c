"""A strict stream monitor: what ``avatarlink listen`` runs to tell why "nothing moves in Unity".

:class:`StreamMonitor` takes raw UDP datagrams (VMC, VRChat OSC trackers) and checks them the way
the strictest receivers do (EVMC4U type-checks every argument; VSeeFace wants bundles): OSC 1.0
framing, known addresses, exact type tags and argument counts, ``HumanBodyBones`` names, finite
numbers. It keeps counts and the latest values, and never raises on bad input.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from avatarlink.outputs.humanoid import HUMAN_BODY_BONES
from avatarlink.outputs.osc_decode import OscDecodeError, OscMessage, decode_packet

#: Accepted type-tag signatures per VMC address (protocol v2.0..v2.7 forms).
VMC_SIGNATURES: dict[str, tuple[str, ...]] = {
    "/VMC/Ext/Root/Pos": ("s" + "f" * 7, "s" + "f" * 13),  # v2.1 adds scale and offset
    "/VMC/Ext/Bone/Pos": ("s" + "f" * 7,),
    "/VMC/Ext/OK": ("i", "iii", "iiii"),  # v1, v2.5, v2.7
    "/VMC/Ext/T": ("f",),
    "/VMC/Ext/Blend/Val": ("sf",),
    "/VMC/Ext/Blend/Apply": ("",),
    "/VMC/Ext/Cam": ("s" + "f" * 8,),
    "/VMC/Ext/Hmd/Pos": ("s" + "f" * 7,),
    "/VMC/Ext/Con/Pos": ("s" + "f" * 7,),
    "/VMC/Ext/Tra/Pos": ("s" + "f" * 7,),
}
_VRCHAT = re.compile(r"^/tracking/trackers/([1-8]|head)/(position|rotation)$")
_BONES = frozenset(HUMAN_BODY_BONES)
_REASONS_KEPT = 5  # distinct problems / unknown addresses reported
_REASONS_TRACKED = 200  # distinct ones counted before the rest go under "other" (bounded memory)


@dataclass(frozen=True)
class MonitorSnapshot:
    """Counts and latest values of a stream (plain data, JSON-ready via :meth:`to_dict`).

    Rates are over the arrivals of the last ``window_s`` seconds. ``frame_rate_hz`` counts
    ``/VMC/Ext/T`` messages (one per frame), or ``/VMC/Ext/Root/Pos`` when a sender sends no T.
    """

    elapsed_s: float
    datagrams: int
    bytes: int
    datagram_rate_hz: float
    frame_rate_hz: float
    bundles: int
    messages: int
    bone_messages: int
    bones_seen: list[str]
    root: list[float] | None
    ok: list[int] | None
    vmc_time: float | None
    vrchat_updates: int
    vrchat_trackers: list[str]
    malformed_datagrams: int
    invalid_messages: int
    unknown_messages: int
    problems: dict[str, int] = field(default_factory=dict)
    unknown_addresses: dict[str, int] = field(default_factory=dict)
    senders: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict."""
        return asdict(self)

    def summary_line(self) -> str:
        """One human-readable status line."""
        if self.datagrams == 0:
            return "nothing received yet"
        parts = [f"{self.frame_rate_hz:5.1f} frames/s", f"{self.datagram_rate_hz:6.1f} datagrams/s"]
        if self.bone_messages:
            parts.append(f"bones {len(self.bones_seen)}")
        if self.root is not None:
            parts.append("root ({:+.2f}, {:+.2f}, {:+.2f})".format(*self.root[:3]))
        if self.ok is not None:
            names = ("loaded", "calib", "mode", "tracking")
            parts.append("OK " + " ".join(f"{n}={v}" for n, v in zip(names, self.ok, strict=False)))
        if self.vrchat_updates:
            parts.append(f"vrchat trackers {','.join(self.vrchat_trackers)}")
        parts.append(f"malformed {self.malformed_datagrams}")
        parts.append(f"invalid {self.invalid_messages}")
        if self.unknown_messages:
            parts.append(f"unknown {self.unknown_messages}")
        return " | ".join(parts)


class StreamMonitor:
    """Validates datagrams and keeps stream statistics.

    Args:
        window_s: seconds over which rates are measured.
        clock: time source in seconds (tests pass a fake one).
    """

    def __init__(self, window_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window = window_s
        self._start = clock()
        self._datagram_times: deque[float] = deque()
        self._time_times: deque[float] = deque()  # arrivals of /VMC/Ext/T
        self._root_times: deque[float] = deque()  # arrivals of /VMC/Ext/Root/Pos
        self.datagrams = 0
        self.bytes = 0
        self.bundles = 0
        self.messages = 0
        self.bone_messages = 0
        self.malformed = 0
        self.invalid = 0
        self.unknown = 0
        self.vrchat_updates = 0
        self.bones_seen: set[str] = set()
        self.vrchat_trackers: set[str] = set()
        self.root: list[float] | None = None
        self.ok: list[int] | None = None
        self.vmc_time: float | None = None
        self.problems: Counter[str] = Counter()
        self.unknown_addresses: Counter[str] = Counter()
        self.senders: set[str] = set()

    def feed(self, datagram: bytes, sender: str | None = None) -> None:
        """Check one datagram and update the statistics (never raises on bad content)."""
        now = self._clock()
        self.datagrams += 1
        self.bytes += len(datagram)
        self._datagram_times.append(now)
        if sender is not None:
            self.senders.add(sender)
        try:
            packet = decode_packet(datagram)
        except OscDecodeError as exc:
            self.malformed += 1
            _count(self.problems, f"malformed: {_reason(str(exc))}")
            return
        self.bundles += packet.bundles
        vrchat = False
        for msg in packet.messages:
            self.messages += 1
            vrchat |= self._check(msg, now)
        if vrchat:
            self.vrchat_updates += 1

    def snapshot(self) -> MonitorSnapshot:
        """The current statistics."""
        now = self._clock()
        for times in (self._datagram_times, self._time_times, self._root_times):
            while times and times[0] < now - self._window:
                times.popleft()
        frames = self._time_times or self._root_times
        return MonitorSnapshot(
            elapsed_s=round(now - self._start, 3),
            datagrams=self.datagrams,
            bytes=self.bytes,
            datagram_rate_hz=_rate(self._datagram_times),
            frame_rate_hz=_rate(frames),
            bundles=self.bundles,
            messages=self.messages,
            bone_messages=self.bone_messages,
            bones_seen=sorted(self.bones_seen, key=HUMAN_BODY_BONES.index),
            root=self.root,
            ok=self.ok,
            vmc_time=self.vmc_time,
            vrchat_updates=self.vrchat_updates,
            vrchat_trackers=sorted(self.vrchat_trackers),
            malformed_datagrams=self.malformed,
            invalid_messages=self.invalid,
            unknown_messages=self.unknown,
            problems=dict(self.problems.most_common(_REASONS_KEPT)),
            unknown_addresses=dict(self.unknown_addresses.most_common(_REASONS_KEPT)),
            senders=sorted(self.senders),
        )

    def _check(self, msg: OscMessage, now: float) -> bool:
        """Validate one message; returns True for a VRChat tracker message."""
        address, tags, args = msg.address, msg.typetags, msg.args
        signatures = VMC_SIGNATURES.get(address)
        vrchat = signatures is None and _VRCHAT.match(address) is not None
        if vrchat:
            signatures = ("fff",)
        if signatures is None:
            self.unknown += 1
            _count(self.unknown_addresses, address)
            return False
        if tags not in signatures:
            self._invalid(f"{address}: type tags ,{tags} (expected ,{' or ,'.join(signatures)})")
            return False
        floats = [a for a in args if isinstance(a, float)]
        if not all(math.isfinite(v) for v in floats):
            self._invalid(f"{address}: non-finite number")
            return False
        if vrchat:
            match = _VRCHAT.match(address)
            assert match is not None
            self.vrchat_trackers.add(match.group(1))
            return True
        if address == "/VMC/Ext/Bone/Pos":
            name = str(args[0])
            if name not in _BONES:
                self._invalid(f"{address}: unknown bone name {name!r}")
                return False
            self.bone_messages += 1
            self.bones_seen.add(name)
        elif address == "/VMC/Ext/Root/Pos":
            self.root = [round(v, 4) for v in floats[:7]]
            self._root_times.append(now)
        elif address == "/VMC/Ext/OK":
            self.ok = [int(a) for a in args if isinstance(a, int)]
        elif address == "/VMC/Ext/T":
            self.vmc_time = floats[0]
            self._time_times.append(now)
        return False

    def _invalid(self, reason: str) -> None:
        self.invalid += 1
        _count(self.problems, f"invalid: {reason}")


def _count(counter: Counter[str], key: str) -> None:
    if key not in counter and len(counter) >= _REASONS_TRACKED:
        key = "other"
    counter[key] += 1


def _rate(times: deque[float]) -> float:
    """Events per second from arrival times in the window: (n - 1) / (last - first)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return round((len(times) - 1) / (times[-1] - times[0]), 2)


def _reason(text: str) -> str:
    """A decode error without its byte offset, so identical problems count together."""
    return re.sub(r" at byte \d+", "", text)
