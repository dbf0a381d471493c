"""OSC encoding byte for byte against python-osc, the fixed-layout fast path, strict decoding."""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Sequence

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY as PYOSC_IMMEDIATELY
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from avatarlink.errors import OutputError
from avatarlink.outputs.osc_decode import OscDecodeError, decode_packet
from avatarlink.outputs.osc_encode import (
    FixedBundles,
    MessageSpec,
    OscArg,
    bundle,
    message,
    osc_string,
    pack_bundles,
)


def _pyosc_message(address: str, args: Sequence[object], tags: str) -> bytes:
    builder = OscMessageBuilder(address)
    for arg, tag in zip(args, tags, strict=True):
        builder.add_arg(arg, tag)
    return bytes(builder.build().dgram)


def _pyosc_bundle(messages: list[bytes]) -> bytes:
    from pythonosc.osc_message import OscMessage

    builder = OscBundleBuilder(PYOSC_IMMEDIATELY)
    for data in messages:
        builder.add_content(OscMessage(data))
    return bytes(builder.build().dgram)


@pytest.mark.parametrize(
    ("text", "encoded"),
    [("", b"\0\0\0\0"), ("abc", b"abc\0"), ("abcd", b"abcd\0\0\0\0"), ("Hips", b"Hips\0\0\0\0")],
)
def test_osc_string_is_nul_terminated_and_padded(text: str, encoded: bytes) -> None:
    assert osc_string(text) == encoded


@pytest.mark.parametrize("bad", ["Hüfte", "a\0b"])
def test_osc_string_refuses_non_ascii_and_nul(bad: str) -> None:
    with pytest.raises(OutputError):
        osc_string(bad)


@pytest.mark.parametrize(
    ("address", "args", "tags"),
    [
        ("/VMC/Ext/Root/Pos", ["root", 0.0, 0.95, -0.5, 0.0, 0.1, 0.0, 0.995], "sfffffff"),
        (
            "/VMC/Ext/Bone/Pos",
            ["LeftUpperArm", -0.11, 0.0, 0.0, 0.0, 0.0, -0.7071, 0.7071],
            "sfffffff",
        ),
        ("/VMC/Ext/OK", [1, 3, 0, 1], "iiii"),
        ("/VMC/Ext/T", [12.345], "f"),
        ("/VMC/Ext/Blend/Apply", [], ""),
        ("/tracking/trackers/1/position", [0.1, 0.95, -0.02], "fff"),
        ("/tracking/trackers/head/rotation", [10.0, 350.0, 0.5], "fff"),
        ("/x", [-(2**31), 2**31 - 1, "", b"\x01\x02\x03"], "iisb"),
    ],
)
def test_message_matches_python_osc_byte_for_byte(
    address: str, args: list[OscArg], tags: str
) -> None:
    expected = _pyosc_message(address, args, tags)
    assert message(address, args, tags) == expected  # explicit type tags
    assert message(address, args) == expected  # inferred from the Python types


def test_numpy_scalars_encode_like_python_numbers() -> None:
    plain = message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.5, 0.25, 0.0, 0.0, 0.0, 1.0])
    values = np.array([0.0, 0.5, 0.25, 0.0, 0.0, 0.0, 1.0], np.float32)
    assert message("/VMC/Ext/Bone/Pos", ["Head", *values]) == plain  # np.float32 -> 'f'
    assert message("/VMC/Ext/OK", [np.int64(1), np.int32(3), np.uint8(0), 1]) == message(
        "/VMC/Ext/OK", [1, 3, 0, 1]
    )
    assert message("/VMC/Ext/T", [np.float64(2.5)]) == message("/VMC/Ext/T", [2.5])


def test_message_refuses_bad_input() -> None:
    with pytest.raises(OutputError, match="start with"):
        message("VMC/Ext/T", [1.0])
    with pytest.raises(OutputError, match="cannot send"):
        message("/x", [object()])  # type: ignore[list-item]
    with pytest.raises(OutputError, match="cannot encode"):
        message("/x", ["text"], "f")
    with pytest.raises(OutputError, match="arguments but"):
        message("/x", [1.0, 2.0], "f")


def test_bundle_matches_python_osc() -> None:
    parts = [
        message("/VMC/Ext/Root/Pos", ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
        message("/VMC/Ext/OK", [1, 3, 0, 1]),
        message("/VMC/Ext/T", [0.5]),
    ]
    assert bundle(parts) == _pyosc_bundle(parts)


def test_pack_bundles_splits_under_the_limit_in_order() -> None:
    parts = [message("/VMC/Ext/Bone/Pos", [f"n{i}", *([0.5] * 7)]) for i in range(40)]
    for limit in (64, 100, 256, 1472):
        if limit < 16 + 4 + len(parts[0]):
            with pytest.raises(OutputError, match="cannot fit"):
                pack_bundles(parts, limit)
            continue
        datagrams = pack_bundles(parts, limit)
        assert all(len(d) <= limit for d in datagrams)
        decoded = [m for d in datagrams for m in decode_packet(d).messages]
        assert [m.args[0] for m in decoded] == [f"n{i}" for i in range(40)]
        # Greedy: no two neighbours would have fitted together.
        for a, b in itertools.pairwise(datagrams):
            first_of_b = struct.unpack(">i", b[16:20])[0] + 4
            assert len(a) + first_of_b > limit


def _specs(names: list[str]) -> list[MessageSpec]:
    specs = [MessageSpec("/VMC/Ext/Root/Pos", "s" + "f" * 7, ("root",))]
    specs += [MessageSpec("/VMC/Ext/Bone/Pos", "s" + "f" * 7, (n,)) for n in names]
    return [*specs, MessageSpec("/VMC/Ext/OK", "iiii"), MessageSpec("/VMC/Ext/T", "f")]


def test_fixed_bundles_match_python_osc_byte_for_byte() -> None:
    names = ["Hips", "Spine", "LeftUpperArm", "RightIndexIntermediate"] * 10
    layout = FixedBundles(_specs(names), 600)
    rng = np.random.default_rng(0)
    for _ in range(3):  # refilled frames must not keep stale values
        floats = rng.normal(size=layout.num_floats).astype(np.float32)
        ints = rng.integers(-1000, 1000, size=layout.num_ints).astype(np.int32)
        got = [bytes(v) for v in layout.fill(floats, ints)]
        # The same messages built by python-osc, grouped as FixedBundles grouped them.
        f, i = iter(floats.tolist()), iter(ints.tolist())
        messages = [
            _pyosc_message("/VMC/Ext/Root/Pos", ["root", *[next(f) for _ in range(7)]], "sfffffff")
        ]
        for n in names:
            messages.append(
                _pyosc_message("/VMC/Ext/Bone/Pos", [n, *[next(f) for _ in range(7)]], "sfffffff")
            )
        messages.append(_pyosc_message("/VMC/Ext/OK", [next(i) for _ in range(4)], "iiii"))
        messages.append(_pyosc_message("/VMC/Ext/T", [next(f)], "f"))
        expected, start = [], 0
        for data in got:
            count = len(decode_packet(data).messages)
            expected.append(_pyosc_bundle(messages[start : start + count]))
            start += count
        assert start == len(messages)
        assert got == expected
        assert all(len(d) <= 600 for d in got)
        assert layout.datagrams() == got


def test_fixed_bundles_refuses_what_it_cannot_lay_out() -> None:
    with pytest.raises(OutputError, match="only f, i and s"):
        FixedBundles([MessageSpec("/x", "d")], 1472)
    with pytest.raises(OutputError, match="need 1 strings, got 0"):
        FixedBundles([MessageSpec("/x", "sf")], 1472)
    with pytest.raises(OutputError, match="cannot fit"):
        FixedBundles([MessageSpec("/x", "f" * 400)], 1472)


# --- strict decoding ---------------------------------------------------------------------------


def test_decoder_round_trips_our_encoding() -> None:
    data = bundle([message("/a", [1, 2.5, "x", b"\x00\x01", True, None]), bundle([message("/b")])])
    packet = decode_packet(data)
    assert packet.bundles == 2
    assert [m.address for m in packet.messages] == ["/a", "/b"]
    assert packet.messages[0].typetags == "ifsbTN"
    assert packet.messages[0].args == (1, 2.5, "x", b"\x00\x01", True, None)


def test_decoder_rejects_every_truncation_and_garbage_without_crashing() -> None:
    first = message("/VMC/Ext/Bone/Pos", ["Head", *([0.25] * 7)])
    good = bundle([first, message("/VMC/Ext/T", [1.0])])
    for cut in range(len(good)):
        if cut in (16, 16 + 4 + len(first)):
            continue  # cut at an element boundary: a valid bundle with fewer elements
        with pytest.raises(OscDecodeError):
            decode_packet(good[:cut])
    rng = np.random.default_rng(9)
    for _ in range(500):
        noise = bytearray(good)
        for pos in rng.integers(0, len(noise), size=3):
            noise[pos] = int(rng.integers(0, 256))
        with contextlib.suppress(OscDecodeError):
            decode_packet(bytes(noise))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"/abc", "NUL-terminated"),
        (b"/ab\0,f\0\0", "truncated"),
        (b"/ab\0f\0\0\0", "',"),
        (b"/a\0x,\0\0\0", "non-zero padding"),
        (b"/ab\0,\0\0\0\0\0\0\0", "bytes left"),
        (b"/ab\0,q\0\0", "unknown OSC type tag"),
        (b"ab\0\0,\0\0\0", "does not start with '/'"),
        (b"/ab\0", "no type tag"),
        (b"#bundle\0" + b"\0" * 8 + b"\0\0\0\x08/a\0\0", "claims"),
        (b"/\xe9\0\0,\0\0\0", "not ASCII"),
    ],
)
def test_decoder_names_the_problem(data: bytes, reason: str) -> None:
    with pytest.raises(OscDecodeError, match=reason):
        decode_packet(data)


def test_decoder_limits_bundle_nesting() -> None:
    data = message("/a")
    for _ in range(12):
        data = bundle([data])
    with pytest.raises(OscDecodeError, match="nested"):
        decode_packet(data)
