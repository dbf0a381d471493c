"""What every UDP pose sink shares: target URLs, options, rate cap, held pose, mirroring.

A sink is configured once for a rig (bone names, hierarchy, rest pose) and then fed
:class:`~avatarlink.types.BoneRotations` every frame. Everything that can be wrong with the
configuration (unknown or non-ASCII bone names, a malformed URL or option, a datagram limit too
small) raises :class:`~avatarlink.errors.ConfigError`/``OutputError`` when the sink is opened, never
while streaming.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ConfigError, OutputError
from avatarlink.outputs.humanoid import mirror_index, validate_bone_names
from avatarlink.outputs.udp import Datagram, UdpTransport
from avatarlink.types import BoneRotations

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: Ethernet MTU (1500) minus IPv4 (20) and UDP (8) headers: the largest datagram that is never
#: fragmented on a LAN (also kept on loopback so a stream tested locally behaves the same remotely).
DEFAULT_MAX_DATAGRAM = 1472
#: A quaternion whose norm is within this of 1 is taken as unit length (sent unchanged).
UNIT_TOLERANCE = 1e-5
#: Smallest accepted datagram limit: below this a single VMC bone message no longer fits.
MIN_MAX_DATAGRAM = 128


@dataclasses.dataclass(frozen=True)
class SinkOptions:
    """Options every sink takes (keyword arguments, or the query of its URL).

    Attributes:
        max_rate_hz: send at most this many frames per second (wall clock); None sends every frame.
        max_datagram: largest UDP datagram in bytes; a frame that needs more is split into bundles.
        mirror: mirror the pose left/right (selfie view) before sending.
        root_translation: move the avatar's root with the hips' displacement since the first
            frame; off keeps the avatar in place (the hips still rotate).
        person: send the person with this track id (multi-person models give stable ids from
            0); None sends the first person found. One URL per person feeds one avatar each.
    """

    max_rate_hz: float | None = None
    max_datagram: int = DEFAULT_MAX_DATAGRAM
    mirror: bool = False
    root_translation: bool = False
    person: int | None = None

    def __post_init__(self) -> None:
        if self.max_rate_hz is not None and not self.max_rate_hz > 0:
            raise ConfigError(f"max_rate_hz must be > 0 frames/s, got {self.max_rate_hz}")
        if self.person is not None and self.person < 0:
            raise ConfigError(f"person must be a track id >= 0, got {self.person}")
        if self.max_datagram < MIN_MAX_DATAGRAM or self.max_datagram > 65507:
            raise ConfigError(
                f"max_datagram must be {MIN_MAX_DATAGRAM}..65507 bytes, got {self.max_datagram}"
            )


OptionsT = TypeVar("OptionsT", bound=SinkOptions)
SinkT = TypeVar("SinkT", bound="UdpPoseSink")


def parse_target(url: str, scheme: str, default_port: int) -> tuple[str, int, dict[str, str]]:
    """Split ``scheme://host[:port][?key=value&...]`` into host, port and query options.

    IPv6 hosts go in brackets: ``vmc://[::1]:39539``.

    Raises:
        OutputError: wrong scheme, missing host, bad port, or a path after the port.
    """
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise OutputError(f"{url!r}: expected a {scheme}:// URL")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise OutputError(f"{url!r}: bad port ({exc})") from exc
    if not host:
        raise OutputError(f"{url!r}: missing host, e.g. {scheme}://127.0.0.1:{default_port}")
    if parts.path not in ("", "/"):
        raise OutputError(f"{url!r}: unexpected path {parts.path!r}")
    if port == 0:
        raise OutputError(f"{url!r}: port 0 is not a receiver's port")
    query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    return host, port if port is not None else default_port, query


def options_from(
    cls: type[OptionsT], where: str, query: dict[str, str], overrides: dict[str, Any]
) -> OptionsT:
    """Build an options dataclass from keyword values, then URL query strings (which win).

    Query strings are converted by the field's type: ``1/0/true/false/yes/no/on/off`` for bools,
    numbers, ``none`` for an optional number, comma-separated lists for tuples.

    Raises:
        ConfigError: an unknown key or a value that does not convert, naming both.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = dict(overrides)
    for key, text in query.items():
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown option {key!r} (known: {', '.join(sorted(fields))})"
            )
        values[key] = _convert(text, hints[key], f"{where}: option {key}")
    unknown = set(values) - fields
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _convert(text: str, hint: Any, where: str) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:
        if text.lower() in ("", "none"):
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on", ""):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if typing.get_origin(hint) is tuple:
            item = args[0]
            return tuple(item(t.strip()) for t in text.split(",") if t.strip())
        if hint is str:
            return text
    except ValueError as exc:
        raise ConfigError(
            f"{where}: cannot read {text!r} as {getattr(hint, '__name__', hint)}"
        ) from exc
    raise ConfigError(f"{where}: unsupported option type {hint}")


class PoseState:
    """The latest local rotation of each of a sink's bones, held while a bone is not observed.

    Incoming :class:`BoneRotations` may list bones in any order or a subset: they are matched by
    name (the mapping is cached per bone tuple). A bone counts only when ``valid`` and its
    quaternion is finite and non-zero; otherwise it keeps its last value (the rest pose at first).

    Attributes:
        rot: float32 (B, 4) xyzw local rotations, world frame, after mirroring when enabled.
        root_offset: float32 (3,) metres, world frame: hips displacement since the first frame
            (zeros unless root translation is on).
    """

    def __init__(
        self, bones: Sequence[str], *, mirror: bool, root_translation: bool, where: str
    ) -> None:
        self.bones = tuple(bones)
        self._index = {name: i for i, name in enumerate(self.bones)}
        self._mirror = mirror_index(self.bones, where) if mirror else None
        self._root_translation = root_translation
        self._held = np.tile(np.array([0, 0, 0, 1], np.float32), (len(self.bones), 1))
        self._root_origin: FloatArray | None = None
        self._maps: dict[tuple[str, ...], tuple[IntArray, IntArray]] = {}
        self.rot = self._held.copy()
        self.root_offset = np.zeros(3, np.float32)

    def update(self, pose: BoneRotations) -> None:
        """Take the valid rotations (and root position) of one person."""
        src, dst = self._map(pose.bones)
        q = np.asarray(pose.rot, np.float32)[src]
        norm = np.linalg.norm(q, axis=1)
        ok = np.asarray(pose.valid, bool)[src] & np.isfinite(norm) & (norm > 1e-6)
        # Renormalise only quaternions that are visibly off unit length, so unit input passes
        # through bit for bit (float32 renormalisation would jitter the last bit).
        scale = np.where(np.abs(norm - 1.0) > UNIT_TOLERANCE, 1.0 / np.maximum(norm, 1e-6), 1.0)
        self._held[dst[ok]] = q[ok] * scale[ok, None].astype(np.float32)
        if self._mirror is None:
            self.rot = self._held
        else:
            # Reflection through the body's sagittal plane (x -> -x), as in unity_space: swap sides
            # and negate the y, z quaternion components.
            self.rot = self._held[self._mirror] * np.array([1, -1, -1, 1], np.float32)
        if self._root_translation:
            root = np.asarray(pose.root_pos, np.float32)
            if np.all(np.isfinite(root)):
                if self._root_origin is None:
                    self._root_origin = root.copy()
                offset = root - self._root_origin
                if self._mirror is not None:
                    offset = offset * np.array([-1, 1, 1], np.float32)
                self.root_offset = offset

    def _map(self, names: tuple[str, ...]) -> tuple[IntArray, IntArray]:
        cached = self._maps.get(names)
        if cached is None:
            pairs = [(i, self._index[n]) for i, n in enumerate(names) if n in self._index]
            src = np.array([p[0] for p in pairs], np.int64)
            dst = np.array([p[1] for p in pairs], np.int64)
            cached = self._maps[names] = (src, dst)
        return cached


class UdpPoseSink:
    """Base of the UDP sinks: one target, rate cap, held pose, counters.

    Subclasses set :attr:`scheme` and :attr:`default_port` and implement :meth:`_frame` (datagrams
    of one person's pose) and :meth:`_idle` (datagrams when nobody is seen).
    """

    scheme: ClassVar[str]
    default_port: ClassVar[int]

    def __init__(
        self,
        host: str,
        port: int,
        bones: Sequence[str],
        options: SinkOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        where = f"{self.scheme}://{host}:{port}"
        validate_bone_names(bones, where)
        self.url = where
        self.options = options
        self.state = PoseState(
            bones, mirror=options.mirror, root_translation=options.root_translation, where=where
        )
        self.frames_sent = 0
        self.frames_skipped = 0
        self._clock = clock
        self._min_interval = 0.0 if options.max_rate_hz is None else 1.0 / options.max_rate_hz
        self._last_sent = -float("inf")
        self._t0: float | None = None
        self._transport = UdpTransport(host, port)

    @property
    def packets_sent(self) -> int:
        """Datagrams sent so far."""
        return self._transport.packets_sent

    @property
    def errors(self) -> int:
        """Datagrams that could not be sent (receiver down, ...)."""
        return self._transport.errors

    def encode(self, rotations: Sequence[BoneRotations], t: float) -> list[bytes]:
        """The datagrams :meth:`send` would send for this frame (copies; updates the held pose)."""
        return [bytes(d) for d in self._datagrams(rotations, t)]

    def send(self, rotations: Sequence[BoneRotations], t: float) -> None:
        """Send one person's pose (or an idle status when that person is not seen).

        Args:
            rotations: one :class:`BoneRotations` per person; the first is sent, or the one whose
                ``person_id`` is ``options.person``.
            t: capture time of the frame in seconds.
        """
        now = self._clock()
        if now - self._last_sent < self._min_interval:
            self.frames_skipped += 1
            return
        self._last_sent = now
        self._transport.send(self._datagrams(rotations, t))
        self.frames_sent += 1

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._transport.close()

    def __enter__(self: SinkT) -> SinkT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _datagrams(self, rotations: Sequence[BoneRotations], t: float) -> Sequence[Datagram]:
        if self._t0 is None:
            self._t0 = t
        elapsed = t - self._t0
        chosen = self._choose(rotations)
        if chosen is None:
            return self._idle(elapsed)
        self.state.update(chosen)
        return self._frame(elapsed)

    def _choose(self, rotations: Sequence[BoneRotations]) -> BoneRotations | None:
        """The person this sink follows: ``options.person``'s id, else the first one."""
        person = self.options.person
        if person is None:
            return rotations[0] if rotations else None
        return next((r for r in rotations if r.person_id == person), None)

    def _frame(self, elapsed: float) -> Sequence[Datagram]:
        raise NotImplementedError

    def _idle(self, elapsed: float) -> Sequence[Datagram]:
        raise NotImplementedError
