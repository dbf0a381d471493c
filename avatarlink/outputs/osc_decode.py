"""Strict OSC 1.0 decoding, as a picky receiver does it: every length, padding and type checked.

Used by ``avatarlink listen`` to tell a user exactly what is wrong with a stream. Anything that
does not follow OSC 1.0 raises :class:`OscDecodeError` with the reason and byte offset; the decoder
never reads past the datagram and never crashes on garbage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from avatarlink.errors import InputError

OscValue = int | float | str | bytes | bool | None

_BUNDLE_TAG = b"#bundle\0"
_MAX_DEPTH = 8  # bundles nested deeper than this are refused (a crafted packet could recurse)
_FIXED = {"i": ">i", "f": ">f", "h": ">q", "d": ">d", "t": ">Q", "c": ">I", "r": ">I", "m": ">I"}


class OscDecodeError(InputError):
    """A datagram that is not valid OSC 1.0; the message gives the reason and byte offset."""


@dataclass(frozen=True)
class OscMessage:
    """One decoded OSC message.

    Attributes:
        address: the OSC address, e.g. ``/VMC/Ext/Bone/Pos``.
        typetags: the type letters without the leading comma, e.g. ``sfffffff``.
        args: decoded values, one per type letter (None for ``N`` and ``I``).
    """

    address: str
    typetags: str
    args: tuple[OscValue, ...]


@dataclass(frozen=True)
class OscPacket:
    """A decoded datagram: its messages in order (bundles flattened) and its bundle count."""

    messages: tuple[OscMessage, ...]
    bundles: int


def decode_packet(data: bytes) -> OscPacket:
    """Decode one UDP datagram holding an OSC message or bundle.

    Raises:
        OscDecodeError: the datagram is not valid OSC 1.0.
    """
    view = memoryview(data)
    messages: list[OscMessage] = []
    bundles = _decode_element(view, 0, len(view), messages, 0)
    return OscPacket(tuple(messages), bundles)


def _decode_element(
    data: memoryview, start: int, end: int, out: list[OscMessage], depth: int
) -> int:
    """Decode the element in data[start:end] into ``out``; returns how many bundles it held."""
    if end - start == 0:
        raise OscDecodeError(f"empty OSC element at byte {start}")
    if (end - start) % 4:
        raise OscDecodeError(
            f"OSC element at byte {start} is {end - start} bytes, not a multiple of 4"
        )
    if data[start : start + 8] == _BUNDLE_TAG:
        return _decode_bundle(data, start, end, out, depth)
    out.append(_decode_message(data, start, end))
    return 0


def _decode_bundle(
    data: memoryview, start: int, end: int, out: list[OscMessage], depth: int
) -> int:
    if depth >= _MAX_DEPTH:
        raise OscDecodeError(f"OSC bundles nested deeper than {_MAX_DEPTH} at byte {start}")
    if end - start < 16:
        raise OscDecodeError(f"truncated bundle header at byte {start}")
    pos, count = start + 16, 1
    while pos < end:
        if end - pos < 4:
            raise OscDecodeError(f"truncated bundle element size at byte {pos}")
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if size <= 0 or size % 4 or pos + size > end:
            raise OscDecodeError(
                f"bundle element at byte {pos - 4} claims {size} bytes, {end - pos} remain"
            )
        count += _decode_element(data, pos, pos + size, out, depth + 1)
        pos += size
    return count


def _decode_message(data: memoryview, start: int, end: int) -> OscMessage:
    address, pos = _read_string(data, start, end, "address")
    if not address.startswith("/"):
        raise OscDecodeError(f"OSC address {address!r} at byte {start} does not start with '/'")
    if pos == end:
        # OSC 1.0 allows old senders to omit the type tags; strict receivers do not.
        raise OscDecodeError(f"{address}: no type tag string")
    tags, pos = _read_string(data, pos, end, "type tags")
    if not tags.startswith(","):
        raise OscDecodeError(f"{address}: type tag string {tags!r} does not start with ','")
    tags = tags[1:]
    args: list[OscValue] = []
    for tag in tags:
        if tag in _FIXED:
            fmt = _FIXED[tag]
            size = struct.calcsize(fmt)
            if pos + size > end:
                raise OscDecodeError(f"{address}: argument {tag!r} truncated at byte {pos}")
            args.append(struct.unpack_from(fmt, data, pos)[0])
            pos += size
        elif tag in "sS":
            value, pos = _read_string(data, pos, end, "string argument")
            args.append(value)
        elif tag == "b":
            if pos + 4 > end:
                raise OscDecodeError(f"{address}: blob size truncated at byte {pos}")
            (size,) = struct.unpack_from(">i", data, pos)
            padded = size + (-size % 4)
            if size < 0 or pos + 4 + padded > end:
                raise OscDecodeError(f"{address}: blob of {size} bytes truncated at byte {pos}")
            args.append(bytes(data[pos + 4 : pos + 4 + size]))
            pos += 4 + padded
        elif tag in "TF":
            args.append(tag == "T")
        elif tag in "NI":
            args.append(None)
        else:
            raise OscDecodeError(f"{address}: unknown OSC type tag {tag!r}")
    if pos != end:
        raise OscDecodeError(f"{address}: {end - pos} bytes left after the arguments ({tags!r})")
    return OscMessage(address, tags, tuple(args))


def _read_string(data: memoryview, start: int, end: int, what: str) -> tuple[str, int]:
    """Read an OSC-string at ``start``; returns it and the offset after its padding."""
    nul = bytes(data[start:end]).find(b"\0")
    if nul < 0:
        raise OscDecodeError(f"{what} at byte {start} is not NUL-terminated")
    stop = start + nul
    padded_end = start + (nul // 4 + 1) * 4
    if padded_end > end:
        raise OscDecodeError(f"{what} at byte {start} is truncated (padding)")
    if any(data[stop:padded_end]):
        raise OscDecodeError(f"{what} at byte {start} has non-zero padding")
    raw = bytes(data[start:stop])
    try:
        return raw.decode("ascii"), padded_end
    except UnicodeDecodeError as exc:
        raise OscDecodeError(f"{what} at byte {start} is not ASCII: {raw!r}") from exc
