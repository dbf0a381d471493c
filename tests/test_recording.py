"""Recording writer and reader: round trip, flushing, crashes, truncated and foreign files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from synthetic_results import make_result, skeleton

from avatarlink import recording as rec_mod
from avatarlink.errors import InputError
from avatarlink.recording import (
    SCHEMA,
    Recorder,
    RecordingHeader,
    RecordingReader,
    load_recording,
)
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import BoneRotations, Keypoints

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def header() -> RecordingHeader:
    return RecordingHeader("movenet-lightning", KeypointLayout.COCO17, skeleton(), "synthetic")


def write(path: Path, results: list) -> None:
    with Recorder(path, header()) as recorder:
        for result in results:
            recorder.write(result)


def test_round_trip_keeps_keypoints_rotations_and_persons(tmp_path: Path) -> None:
    results = [make_result(i, 10.0 + i / 30, persons=1 + i % 2) for i in range(12)]
    # A frame with nobody, and a frame with a missing point and an unobserved bone.
    results[5] = replace(
        results[5],
        raw=Keypoints.empty(KeypointLayout.COCO17),
        smoothed=Keypoints.empty(KeypointLayout.COCO17),
        rotations=(),
    )
    r7 = results[7]
    xyz = r7.raw.xyz.copy()
    xyz[0, 3] = np.nan
    valid = r7.rotations[0].valid.copy()
    valid[4] = False
    results[7] = replace(
        r7,
        raw=replace(r7.raw, xyz=xyz),
        rotations=(replace(r7.rotations[0], valid=valid), *r7.rotations[1:]),
    )
    path = tmp_path / "session.jsonl"
    write(path, results)

    loaded = load_recording(path)
    assert loaded.damage is None
    assert loaded.header.model == "movenet-lightning"
    assert loaded.header.layout is KeypointLayout.COCO17
    assert loaded.header.image_size == (320, 240)
    assert loaded.header.rig_name == "test-rig"
    sk = skeleton()
    assert loaded.header.rig is not None and not isinstance(loaded.header.rig, str)
    assert loaded.header.rig.bones == sk.bones
    np.testing.assert_array_equal(loaded.header.rig.parents, sk.parents)
    np.testing.assert_allclose(loaded.header.rig.offsets, sk.offsets, atol=1e-5)
    assert len(loaded.frames) == len(results)
    for res, fr in zip(results, loaded.frames, strict=True):
        assert fr.frame == res.frame.index
        assert fr.t == pytest.approx(res.frame.t, abs=1e-6)
        assert len(fr.persons) == res.raw.num_persons
        assert fr.timings_ms == pytest.approx(res.timings_ms, abs=1e-3)
        assert fr.latency_ms == pytest.approx(res.latency_ms, abs=1e-3)
        for p, person in enumerate(fr.persons):
            np.testing.assert_allclose(person.raw[:, :2], res.raw.xyz[p, :, :2], atol=0.006)
            np.testing.assert_allclose(person.raw[:, 2], res.raw.score[p], atol=1e-4)
            np.testing.assert_allclose(
                person.smoothed[:, :2], res.smoothed.xyz[p, :, :2], atol=0.006
            )
            rot = res.rotations[p]
            assert person.bones == rot.bones
            np.testing.assert_allclose(person.rot, rot.rot, atol=1e-6)
            np.testing.assert_allclose(person.root, rot.root_pos, atol=1e-5)
            np.testing.assert_array_equal(person.valid, rot.valid)
    assert np.isnan(loaded.frames[7].persons[0].raw[3, :2]).all()
    assert loaded.frames[7].persons[0].raw[3, 2] == pytest.approx(
        results[7].raw.score[0, 3], abs=1e-4
    )
    assert loaded.frames[5].persons == ()

    track = loaded.track(0)
    assert track.present.tolist() == [i != 5 for i in range(12)]
    assert track.bones == sk.bones
    assert np.isnan(track.rot[5]).all()
    np.testing.assert_allclose(track.rot[3], results[3].rotations[0].rot, atol=1e-6)
    assert not track.valid[7, 4] and track.valid[7, 3]
    np.testing.assert_allclose(track.timings_ms["inference"][:3], [6.0, 7.0, 8.0])
    second = loaded.track(1)
    assert second.present.tolist() == [i % 2 == 1 and i != 5 for i in range(12)]


def test_header_line_and_frame_lines_follow_the_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    write(path, [make_result(0, 1.5), make_result(1, 1.6)])
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    assert head["schema"] == SCHEMA and head["version"] == 1
    assert head["layout"] == "coco17" and head["keypoints"][0] == "nose"
    assert head["rotation_space"] == "world"
    frame = json.loads(lines[1])
    assert set(frame) >= {"frame", "t", "persons"}
    person = frame["persons"][0]
    assert len(person["raw"]) == 17 and len(person["raw"][0]) == 3
    assert len(person["bones"]["Hips"]) == 4 and len(person["root"]) == 3
    # Compact: one person of COCO-17 plus 17 bones stays around a kilobyte.
    assert len(lines[1]) < 1800


def test_empty_session_still_writes_a_readable_header(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    Recorder(path, header()).close()
    loaded = load_recording(path)
    assert loaded.frames == () and loaded.damage is None
    assert loaded.header.image_size is None


def test_writer_flushes_at_least_every_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(rec_mod.time, "monotonic", lambda: clock[0])
    path = tmp_path / "live.jsonl"
    recorder = Recorder(path, header(), flush_interval_s=1.0)
    on_disk = []
    for i in range(30):
        clock[0] = i * 0.1  # 10 frames per second
        # Small lines (nobody in view), so the file buffer alone would hold them all.
        recorder.write(make_result(i, clock[0], persons=0))
        on_disk.append(len(path.read_bytes().splitlines()) - 1)
    # Frames on disk never lag the written frames by more than one second's worth (10) + 1.
    lag = np.arange(1, 31) - np.array(on_disk)
    assert lag.max() <= 11
    assert on_disk[-1] >= 20
    recorder.close()
    assert len(path.read_bytes().splitlines()) == 31


def test_lines_are_flushed_when_frames_stop_coming(tmp_path: Path) -> None:
    import time

    path = tmp_path / "stalled.jsonl"
    recorder = Recorder(path, header(), flush_interval_s=0.05)
    recorder.write(make_result(0, 0.0, persons=0))
    recorder.write(make_result(1, 0.01, persons=0))
    deadline = time.monotonic() + 10  # a hang guard; the flush is due after 0.05 s
    while len(path.read_bytes().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(path.read_bytes().splitlines()) == 3  # header + 2 frames, recorder still open
    recorder.close()


def test_killed_writer_loses_at_most_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(PROJECT_ROOT / "tests")!r})
        from synthetic_results import make_result, skeleton
        from avatarlink import recording
        clock = [0.0]
        recording.time.monotonic = lambda: clock[0]
        header = recording.RecordingHeader("m", recording.KeypointLayout.COCO17, skeleton())
        recorder = recording.Recorder({str(path)!r}, header, flush_interval_s=1.0)
        for i in range(60):
            clock[0] = i / 30
            recorder.write(make_result(i, clock[0], persons=0))
        os._exit(3)  # a crash: no close, no flush
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, timeout=60)
    assert proc.returncode == 3
    reader = RecordingReader(path)
    frames = list(reader)
    # 60 small frames (a few kB, less than the file buffer) over 1.97 s at 30 fps: everything up
    # to the flush one second in survives.
    assert len(frames) >= 60 - 30
    assert [f.frame for f in frames] == list(range(len(frames)))


def _cut(path: Path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def test_truncated_file_replays_up_to_the_damage_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    write(path, [make_result(i, i / 30) for i in range(10)])
    data = path.read_bytes()
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    _cut(path, last_line_start + 40)  # half of the last frame line
    reader = RecordingReader(path)
    frames = list(reader)
    assert [f.frame for f in frames] == list(range(9))
    assert reader.damage is not None
    assert "line 11" in reader.damage and "truncated" in reader.damage
    assert str(path) in reader.damage and "9 frame" in reader.damage


def test_damaged_middle_line_stops_there(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    write(path, [make_result(i, i / 30) for i in range(6)])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"frame": 2, "t": "soon", "persons": []}\n'
    path.write_bytes(b"".join(lines))
    loaded = load_recording(path)
    assert len(loaded.frames) == 2
    assert loaded.damage is not None and "line 4" in loaded.damage and "damaged" in loaded.damage


def test_wrong_point_count_is_damage_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "short.jsonl"
    write(path, [make_result(i, i / 30) for i in range(3)])
    lines = path.read_text().splitlines(keepends=True)
    frame = json.loads(lines[2])
    frame["persons"][0]["raw"] = frame["persons"][0]["raw"][:5]
    lines[2] = json.dumps(frame) + "\n"
    path.write_text("".join(lines))
    loaded = load_recording(path)
    assert len(loaded.frames) == 1
    assert loaded.damage is not None and "17" in loaded.damage


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"not json\n", "unknown recording format"),
        (b'{"schema": "other"}\n', "not an avatarlink recording"),
        (b'{"schema": "avatarlink.recording", "version": 99, "layout": "coco17"}\n', "version 99"),
        (b'{"schema": "avatarlink.recording", "version": 1, "layout": "hands21"}\n', "layout"),
        (b'{"schema": "avatarlink.recording", "ver', "not JSON"),
    ],
)
def test_foreign_or_broken_headers_raise_input_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        RecordingReader(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl"):
        load_recording(tmp_path / "nope.jsonl")


def test_nan_rotations_and_root_are_written_as_null(tmp_path: Path) -> None:
    res = make_result(0, 0.0)
    bad = BoneRotations(
        res.rotations[0].bones,
        np.full_like(res.rotations[0].rot, np.nan),
        np.full(3, np.nan, np.float32),
        np.zeros(len(res.rotations[0].bones), bool),
        0.0,
    )
    path = tmp_path / "nan.jsonl"
    write(path, [replace(res, rotations=(bad,), latency_ms=float("nan"))])
    text = path.read_text()
    assert "NaN" not in text
    json.loads(text.splitlines()[1])  # strict JSON
    person = load_recording(path).frames[0].persons[0]
    assert np.isnan(person.rot).all() and np.isnan(person.root).all()
    assert not person.valid.any()


# --- replay -----------------------------------------------------------------------------------


def test_replay_streams_recorded_rotations_over_udp_in_real_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import time

    from avatarlink.cli import main
    from avatarlink.outputs.osc_decode import decode_packet
    from avatarlink.outputs.unity_space import quaternions_to_unity

    path = tmp_path / "take.jsonl"
    results = [make_result(i, 100.0 + i / 20) for i in range(12)]  # 0.55 s at 20 fps
    write(path, results)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    port = receiver.getsockname()[1]
    start = time.monotonic()
    code = main(["replay", str(path), "--send", f"vmc://127.0.0.1:{port}", "--speed", "2"])
    elapsed = time.monotonic() - start
    assert code == 0
    assert elapsed >= 0.55 / 2 * 0.95  # paced by the recorded times, not sent at once
    arm_rotations: list[tuple[float, ...]] = []
    while True:
        try:
            data = receiver.recv(65536)
        except TimeoutError:
            break
        for msg in decode_packet(data).messages:
            if msg.address == "/VMC/Ext/Bone/Pos" and msg.args[0] == "LeftUpperArm":
                arm_rotations.append(tuple(float(v) for v in msg.args[4:8]))
    receiver.close()
    assert len(arm_rotations) == len(results)
    arm = skeleton().bones.index("LeftUpperArm")
    expected = quaternions_to_unity(np.stack([r.rotations[0].rot[arm] for r in results]))
    np.testing.assert_allclose(np.array(arm_rotations), expected, atol=1e-5)
    out = capsys.readouterr().out
    assert "sent 12 frames" in out and "1 full pass" in out


def test_replay_of_a_truncated_file_warns_and_sends_what_is_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avatarlink.cli import main

    path = tmp_path / "cut.jsonl"
    write(path, [make_result(i, i / 100) for i in range(5)])
    _cut(path, path.stat().st_size - 30)
    assert main(["replay", str(path), "--send", "vmc://127.0.0.1:9", "--speed", "10"]) == 0
    captured = capsys.readouterr()
    assert "truncated" in captured.err and "sent 4 frames" in captured.out
    assert main(["replay", str(path), "--speed", "0"]) == 2


def test_replay_loop_repeats_until_interrupted_in_frame_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import avatarlink.outputs
    from avatarlink.cli import main

    path = tmp_path / "loop.jsonl"
    results = [make_result(i, i / 100) for i in range(5)]
    results[2] = replace(results[2], rotations=())  # nobody solved in one frame
    write(path, results)
    sent: list[tuple[int, float]] = []

    class Sink:
        packets_sent = 0
        errors = 0

        def send(self, rotations: list, t: float) -> None:
            if len(sent) == 12:
                raise KeyboardInterrupt
            sent.append((len(rotations), t))

        def close(self) -> None:
            pass

    monkeypatch.setattr(avatarlink.outputs, "open_sinks", lambda args, rig: [Sink()])
    assert main(["replay", str(path), "--loop", "--speed", "4"]) == 0
    assert [n for n, _ in sent] == [1, 1, 0, 1, 1] * 2 + [1, 1]
    times = np.array([t for _, t in sent])
    assert np.all(np.diff(times) > 0)  # the clock handed to sinks never goes back across passes
    assert "sent 12 frames" in capsys.readouterr().out
