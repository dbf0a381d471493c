"""OSC 1.0 encoding: messages, bundles, and fixed-layout bundles refilled in place every frame.

Wire format (OSC 1.0): an OSC-string is ASCII, NUL-terminated and zero-padded to a multiple of 4
bytes; ``i`` is a big-endian int32, ``f`` a big-endian IEEE float32; a message is address, type-tag
string (``","`` + one letter per argument), then the arguments; a bundle is ``"#bundle\\0"``, an
8-byte NTP time tag, then elements each prefixed by its int32 byte size. The output is byte-for-byte
what python-osc builds for the same message (tests check this).

:class:`FixedBundles` is the fast path for streaming: a frame whose messages never change shape
(same addresses, type tags and string arguments; only the numbers change) is laid out once into a
byte buffer; each frame then writes all numbers with one vectorised numpy assignment and hands the
datagrams to the socket as memoryviews (no per-message Python work).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import numpy.typing as npt

from avatarlink.errors import OutputError

#: The time tag meaning "immediately" (OSC 1.0: 63 zero bits, then a one), as python-osc writes it.
IMMEDIATELY = 1

#: Bytes of a bundle's header: ``"#bundle\0"`` and the 8-byte time tag.
BUNDLE_HEADER_SIZE = 16

#: Bytes before each bundle element: its int32 size.
ELEMENT_SIZE_PREFIX = 4

_BUNDLE_TAG = b"#bundle\0"
_INT32 = struct.Struct(">i")
_FLOAT32 = struct.Struct(">f")
_UINT64 = struct.Struct(">Q")

OscArg = int | float | str | bytes | bool | None | np.integer | np.floating


def osc_string(value: str) -> bytes:
    """``value`` as an OSC-string: ASCII, NUL-terminated, zero-padded to a multiple of 4 bytes.

    Raises:
        OutputError: ``value`` is not ASCII or contains a NUL.
    """
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise OutputError(f"OSC string {value!r} is not ASCII") from exc
    if b"\0" in raw:
        raise OutputError(f"OSC string {value!r} contains a NUL character")
    return raw + b"\0" * (4 - len(raw) % 4)


def osc_blob(value: bytes) -> bytes:
    """``value`` as an OSC-blob: int32 size, the bytes, zero padding to a multiple of 4."""
    return _INT32.pack(len(value)) + value + b"\0" * (-len(value) % 4)


def infer_typetags(args: Sequence[OscArg]) -> str:
    """OSC type letters for Python values, as python-osc infers them (numpy scalars included).

    bool -> ``T``/``F``, None -> ``N``, integers -> ``i``, other reals -> ``f``, str -> ``s``,
    bytes -> ``b``.
    """
    tags = []
    for arg in args:
        if isinstance(arg, (bool, np.bool_)):
            tags.append("T" if arg else "F")
        elif arg is None:
            tags.append("N")
        elif isinstance(arg, Integral):
            tags.append("i")
        elif isinstance(arg, Real):
            tags.append("f")
        elif isinstance(arg, str):
            tags.append("s")
        elif isinstance(arg, (bytes, bytearray)):
            tags.append("b")
        else:
            raise OutputError(f"cannot send {arg!r} ({type(arg).__name__}) over OSC")
    return "".join(tags)


def message(address: str, args: Sequence[OscArg] = (), typetags: str | None = None) -> bytes:
    """One OSC message.

    Args:
        address: OSC address, starting with ``/``.
        args: argument values; numpy scalars are accepted and converted.
        typetags: one letter per argument (without the leading comma); inferred when None.

    Raises:
        OutputError: bad address, unknown type letter, or a value that does not fit its letter.
    """
    if not address.startswith("/"):
        raise OutputError(f"OSC address {address!r} must start with '/'")
    if typetags is None:
        typetags = infer_typetags(args)
    if len(typetags) != len(args):
        raise OutputError(f"{address}: {len(args)} arguments but type tags {typetags!r}")
    parts = [osc_string(address), osc_string("," + typetags)]
    for tag, arg in zip(typetags, args, strict=True):
        try:
            if tag == "f":
                parts.append(_FLOAT32.pack(float(arg)))  # type: ignore[arg-type]
            elif tag == "i":
                parts.append(_INT32.pack(int(arg)))  # type: ignore[arg-type]
            elif tag == "s":
                parts.append(osc_string(str(arg)))
            elif tag == "b":
                parts.append(osc_blob(bytes(arg)))  # type: ignore[arg-type]
            elif tag in "TFNI":
                pass  # no argument data
            else:
                raise OutputError(f"{address}: unsupported OSC type tag {tag!r}")
        except (struct.error, TypeError, ValueError) as exc:
            raise OutputError(f"{address}: cannot encode {arg!r} as OSC type {tag!r}") from exc
    return b"".join(parts)


def bundle(elements: Sequence[bytes], timetag: int = IMMEDIATELY) -> bytes:
    """One OSC bundle holding already encoded messages or bundles."""
    parts = [_BUNDLE_TAG, _UINT64.pack(timetag)]
    for element in elements:
        parts.append(_INT32.pack(len(element)))
        parts.append(element)
    return b"".join(parts)


def pack_bundles(
    elements: Sequence[bytes], max_datagram: int, timetag: int = IMMEDIATELY
) -> list[bytes]:
    """Bundles of consecutive ``elements``, greedily filled, each at most ``max_datagram`` bytes.

    Raises:
        OutputError: one element alone does not fit in ``max_datagram``.
    """
    groups = _group_sizes([len(e) for e in elements], max_datagram)
    out, start = [], 0
    for count in groups:
        out.append(bundle(elements[start : start + count], timetag))
        start += count
    return out


def _group_sizes(sizes: Sequence[int], max_datagram: int) -> list[int]:
    """How many consecutive elements go in each bundle so that no bundle exceeds the limit."""
    groups: list[int] = []
    used = BUNDLE_HEADER_SIZE
    count = 0
    for size in sizes:
        need = ELEMENT_SIZE_PREFIX + size
        if BUNDLE_HEADER_SIZE + need > max_datagram:
            raise OutputError(
                f"an OSC message of {size} bytes cannot fit in a {max_datagram}-byte datagram"
            )
        if used + need > max_datagram:
            groups.append(count)
            used, count = BUNDLE_HEADER_SIZE, 0
        used += need
        count += 1
    if count:
        groups.append(count)
    return groups


@dataclass(frozen=True)
class MessageSpec:
    """The fixed shape of one OSC message in a :class:`FixedBundles` layout.

    Attributes:
        address: OSC address.
        typetags: one letter per argument without the comma: ``f`` (refilled float),
            ``i`` (refilled int) or ``s`` (a constant string taken from ``strings``).
        strings: the constant value of each ``s`` argument, in order.
    """

    address: str
    typetags: str
    strings: tuple[str, ...] = ()


class FixedBundles:
    """Datagrams (OSC bundles) of a fixed list of messages whose numbers are refilled per frame.

    The messages are packed in order into as few bundles as fit ``max_datagram`` bytes each. All
    ``f`` arguments of all messages, in message then argument order, form the float vector F; all
    ``i`` arguments the int vector I.

    Attributes:
        num_floats: length of F.
        num_ints: length of I.
        datagram_sizes: byte size of each datagram.
    """

    def __init__(
        self, specs: Sequence[MessageSpec], max_datagram: int, timetag: int = IMMEDIATELY
    ) -> None:
        encoded: list[bytes] = []
        float_offsets: list[list[int]] = []  # per message: byte offsets of its floats
        int_offsets: list[list[int]] = []
        for spec in specs:
            data, f_off, i_off = _template_message(spec)
            encoded.append(data)
            float_offsets.append(f_off)
            int_offsets.append(i_off)
        groups = _group_sizes([len(e) for e in encoded], max_datagram)

        buf = bytearray()
        floats: list[int] = []
        ints: list[int] = []
        bounds: list[tuple[int, int]] = []
        index = 0
        for count in groups:
            start = len(buf)
            buf += _BUNDLE_TAG + _UINT64.pack(timetag)
            for k in range(index, index + count):
                buf += _INT32.pack(len(encoded[k]))
                base = len(buf)
                floats.extend(base + off for off in float_offsets[k])
                ints.extend(base + off for off in int_offsets[k])
                buf += encoded[k]
            bounds.append((start, len(buf)))
            index += count

        self._buf = np.frombuffer(bytes(buf), np.uint8).copy()
        self._f4 = self._buf.view(">f4")
        self._i4 = self._buf.view(">i4")
        # Every OSC field is 4-byte aligned, so byte offsets map to 4-byte word indices.
        self._fidx = np.asarray(floats, np.intp) // 4
        self._iidx = np.asarray(ints, np.intp) // 4
        mem = memoryview(self._buf)
        self._views = [mem[a:b] for a, b in bounds]
        self.num_floats = len(floats)
        self.num_ints = len(ints)
        self.datagram_sizes = tuple(b - a for a, b in bounds)

    def fill(
        self,
        floats: npt.ArrayLike,
        ints: npt.ArrayLike | None = None,
    ) -> list[memoryview]:
        """Write the numbers into the datagrams and return them.

        Args:
            floats: (num_floats,) values of the ``f`` arguments (any real dtype; stored as float32).
            ints: (num_ints,) values of the ``i`` arguments; None keeps the previous ones.

        Returns:
            One memoryview per datagram into an internal buffer that the next ``fill`` overwrites:
            send or copy them before calling again.
        """
        self._f4[self._fidx] = floats
        if ints is not None:
            self._i4[self._iidx] = ints
        return self._views

    def datagrams(self) -> list[bytes]:
        """Copies of the current datagrams."""
        return [bytes(v) for v in self._views]


def _template_message(spec: MessageSpec) -> tuple[bytes, list[int], list[int]]:
    """A message with zeroed numbers, and the byte offsets of its floats and ints."""
    if any(tag not in "fis" for tag in spec.typetags):
        raise OutputError(f"{spec.address}: FixedBundles supports only f, i and s arguments")
    if spec.typetags.count("s") != len(spec.strings):
        raise OutputError(
            f"{spec.address}: type tags {spec.typetags!r} need {spec.typetags.count('s')} "
            f"strings, got {len(spec.strings)}"
        )
    parts = [osc_string(spec.address), osc_string("," + spec.typetags)]
    offset = sum(len(p) for p in parts)
    f_off: list[int] = []
    i_off: list[int] = []
    strings = iter(spec.strings)
    for tag in spec.typetags:
        if tag == "s":
            part = osc_string(next(strings))
        else:
            (f_off if tag == "f" else i_off).append(offset)
            part = b"\0\0\0\0"
        parts.append(part)
        offset += len(part)
    return b"".join(parts), f_off, i_off
