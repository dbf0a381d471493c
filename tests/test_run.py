"""``avatarlink run`` and ``demo`` as a user runs them: config merging, errors, signals, packets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from avatarlink.cli import main
from avatarlink.outputs.osc_decode import decode_packet

PROJECT = Path(__file__).resolve().parents[1]


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    return sock


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "avatarlink", *args],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_packets(sock: socket.socket, count: int, timeout: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            continue
    return got


def test_print_config_merges_file_and_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("source: synthetic\nmodel: movenet-thunder\ncapture:\n  loop: true\n")
    code = main(
        ["run", "--config", str(path), "--model", "movenet-lightning", "--smoothing", "smooth",
         "--set", "synthetic.fps=12", "--send", "vmc://127.0.0.1:40000", "--print-config"]
    )  # fmt: skip
    assert code == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    assert merged["source"] == "synthetic"
    assert merged["model"] == "movenet-lightning"
    assert merged["capture"]["loop"] is True
    assert merged["synthetic"]["fps"] == 12.0
    assert merged["smoothing"]["preset"] == "smooth"
    assert merged["send"] == ["vmc://127.0.0.1:40000"]
    assert merged["rig"] == "unity_humanoid"


def test_bad_config_key_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("source: synthetic\ncapture:\n  relatime: true\n")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "capture.relatime is not a known key" in err and "did you mean 'realtime'" in err
    assert "run.yaml line 3" in err
    assert main(["run", "--set", "capture.stall_timeout_s=0"]) == 2
    assert "capture.stall_timeout_s must be > 0" in capsys.readouterr().err


def test_demo_streams_vmc_and_stops_after_seconds() -> None:
    sock = _udp()
    try:
        proc = _spawn(
            "demo", "--seconds", "2", "--send", f"vmc://127.0.0.1:{sock.getsockname()[1]}",
            "--no-preview",
        )  # fmt: skip
        packets = _wait_for_packets(sock, 20, 60.0)
        _, err = proc.communicate(timeout=60)
    finally:
        sock.close()
    assert proc.returncode == 0, err
    assert len(packets) >= 20
    addresses = {m.address for p in packets for m in decode_packet(p).messages}
    assert {"/VMC/Ext/OK", "/VMC/Ext/T"} <= addresses
    assert "synthetic performer" in err and "VSeeFace" in err
    assert "seconds:" in err and "frames in" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_run_cleanly_within_a_second(sig: signal.Signals) -> None:
    sock = _udp()
    try:
        proc = _spawn(
            "run", "--source", "synthetic", "--realtime", "--loop", "--quiet",
            "--send", f"vmc://127.0.0.1:{sock.getsockname()[1]}",
        )  # fmt: skip
        assert _wait_for_packets(sock, 5, 60.0), "no packets before the signal"
        start = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    assert proc.returncode == 0, err
    assert elapsed < 1.5  # one second plus process exit
    assert "stopped:" in err and "Traceback" not in err


def test_run_on_a_video_file(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from avatarlink.rig import load_rig
    from avatarlink.synthetic import SyntheticOptions, SyntheticPerformer

    performer = SyntheticPerformer(
        load_rig("unity_humanoid"), SyntheticOptions(width=320, height=240)
    )
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (320, 240))
    for i in range(15):
        writer.write(performer.frame(i / 30.0)[0])
    writer.write(np.zeros((240, 320, 3), np.uint8))
    writer.release()
    sock = _udp()
    try:
        proc = _spawn(
            "run", "--source", str(path), "--quiet", "--send",
            f"vmc://127.0.0.1:{sock.getsockname()[1]}",
        )  # fmt: skip
        _, err = proc.communicate(timeout=60)
        packets = _wait_for_packets(sock, 16, 1.0)
    finally:
        sock.close()
    assert proc.returncode == 0, err
    assert "ended: 16 frames" in err
    assert len(packets) >= 16


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_status_line_rewrites_in_place_on_a_terminal_and_is_sparse_in_logs() -> None:
    from avatarlink.status import StatusFields, StatusLine, StatusOptions

    fields = StatusFields(98.7, 11.2, "CPUExecutionProvider", True, 1234, 3, 0, "ok")
    now = [0.0]
    options = StatusOptions(interval_s=0.25, log_interval_s=10.0)
    tty = _Stream(True)
    line = StatusLine(tty, options, clock=lambda: now[0])  # type: ignore[arg-type]
    for i in range(100):  # 100 frames over 1 s
        now[0] = i * 0.01
        line.update(fields)
    line.close()
    assert line.lines_written == 4
    assert tty.text.count("\r") == 4 and tty.text.endswith("\n") and tty.text.count("\n") == 1
    assert "98.7 fps" in tty.text and "latency  11.2 ms" in tty.text and "sent 1234" in tty.text
    log = _Stream(False)
    line = StatusLine(log, options, clock=lambda: now[0])  # type: ignore[arg-type]
    for i in range(3000):  # 30 s
        now[0] = i * 0.01
        line.update(fields)
    assert log.text.count("\n") == 2 and "\r" not in log.text
    lost = StatusFields(0.0, float("nan"), "CPU", False, 0, 0, 2, "lost")
    line.update(lost, force=True)
    assert "SOURCE LOST" in log.text.splitlines()[-1] and "errors 2" in log.text


def test_bench_reports_the_documented_keys(tmp_path: Path) -> None:
    import json

    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    args = ["bench", "--frames", "12", "--warmup", "3", "--latency-seconds", "1"]
    args += ["--width", "320", "--height", "240", "--json", str(out), "--plot", str(plot)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    keys = ["fps", "latency_ms_p50", "latency_ms_p99", "stages_ms", "overhead_ms"]
    keys += ["overhead_ratio", "dropped", "kp_err_px", "rot_err_deg_median", "rot_err_deg_p90"]
    for key in keys:
        assert key in result, key
    stages = result["stages_ms"]
    for stage in ("capture", "preprocess", "inference", "decode", "smoothing", "lifting", "solve",
                  "send"):  # fmt: skip
        assert stages[stage]["median"] >= 0.0 and stages[stage]["p90"] >= stages[stage]["median"]
    assert result["frames"] == 12 and result["fps"] > 0
    assert result["overhead_ms"] == pytest.approx(
        result["overhead_ratio"] * stages["inference"]["median"], rel=0.05, abs=0.01
    )
    assert 0.0 <= result["kp_err_px"] < 50.0  # the model finds the performer
    assert {"torso", "arms", "legs"} <= set(result["rot_err_deg_by_group"])
    assert 0.0 <= result["rot_err_deg_median"] <= result["rot_err_deg_p90"] <= 180.0
    assert plot.stat().st_size > 1000
