"""The web preview over real HTTP on 127.0.0.1: content, path traversal, hosts, slow viewers; the
annotated video writer and the window's display check."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic_results import make_result, skeleton

from avatarlink.bvh import forward_kinematics
from avatarlink.errors import ConfigError, OutputError
from avatarlink.preview import (
    PreviewOptions,
    PreviewServer,
    VideoPreviewWriter,
    WindowPreview,
    annotate,
    is_loopback,
)
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import Keypoints


@pytest.fixture
def server() -> Iterator[PreviewServer]:
    srv = PreviewServer("127.0.0.1", 0, rig=skeleton())
    yield srv
    srv.close()


def request(
    srv: PreviewServer, path: str, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send ``path`` byte for byte (no client-side normalisation) and read the whole answer."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{srv.port}")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def read_events(srv: PreviewServer, count: int, timeout: float = 10.0) -> list[dict]:
    """The first ``count`` frame messages of /events."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    out = []
    while len(out) < count:
        line = resp.readline()
        assert line, "stream ended early"
        if line.startswith(b"data: "):
            out.append(json.loads(line[6:]))
    conn.close()
    return out


def test_page_assets_and_config_are_served_with_a_strict_policy(server: PreviewServer) -> None:
    for path, ctype in [
        ("/", "text/html"),
        ("/index.html", "text/html"),
        ("/preview.js", "text/javascript"),
        ("/preview.css", "text/css"),
        ("/config.json", "application/json"),
    ]:
        status, headers, body = request(server, path)
        assert status == 200, path
        assert headers["content-type"].startswith(ctype)
        assert "connect-src 'self'" in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert body
    config = json.loads(request(server, "/config.json")[2])
    assert config["rig"]["bones"] == list(skeleton().bones)
    assert config["layouts"]["coco17"]["edges"][0] == list(KeypointLayout.COCO17.edges[0])
    status, headers, body = request(server, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 100


def test_page_makes_no_external_requests() -> None:
    root = resources.files("avatarlink.preview_static")
    html = root.joinpath("index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    # Relative URLs of this server only (``data:,`` stops the browser asking for a favicon).
    assert refs and all(r == "data:," or not re.match(r"^([a-z]+:|//)", r) for r in refs), refs
    for name in ("index.html", "preview.js", "preview.css"):
        text = root.joinpath(name).read_text()
        assert not re.search(r"https?://|wss?://|//[a-z0-9-]+\.[a-z]", text), name
        assert "@import" not in text and "url(" not in text


@pytest.mark.parametrize(
    "path",
    [
        "/../avatarlink/preview.py",
        "/../../../../etc/passwd",
        "/..%2f..%2fpreview.py",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/.%2e/preview.py",
        "/preview.js/../../preview.py",
        "/preview.js%00.py",
        "/..\\preview.py",
        "/%5c..%5cpreview.py",
        "//etc/passwd",
        "/preview.py",
        "/__init__.py",
        "/preview_static/",
        "/preview_static/index.html",
        "/avatarlink/",
        "/static/",
        "/index.html/",
        "/%2e%2e%c0%af%2e%2e%c0%afetc/passwd",
        "/favicon.ico",
    ],
)
def test_nothing_outside_the_page_is_served(server: PreviewServer, path: str) -> None:
    status, _, body = request(server, path)
    assert status == 404
    assert b"import" not in body and b"root:" not in body and b"<a href" not in body


def test_only_get_and_head_are_allowed(server: PreviewServer) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = request(server, "/", method=method)
        assert status == 405 and headers["allow"] == "GET, HEAD"


def test_loopback_server_rejects_foreign_host_headers(server: PreviewServer) -> None:
    assert request(server, "/", host=f"evil.example:{server.port}")[0] == 403
    assert request(server, "/events", host="192.168.1.5")[0] == 403
    assert request(server, "/", host=f"localhost:{server.port}")[0] == 200
    assert request(server, "/", host=f"[::1]:{server.port}")[0] == 200


def test_binding_other_interfaces_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "avatarlink.preview"):
        srv = PreviewServer("0.0.0.0", 0)
    try:
        assert "reachable from other machines" in caplog.text
        assert srv.url == f"http://127.0.0.1:{srv.port}/"
        assert not srv.loopback_only
    finally:
        srv.close()
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.0.2")


def test_port_in_use_is_a_clear_error(server: PreviewServer) -> None:
    with pytest.raises(OutputError, match=f"127.0.0.1:{server.port}.*--preview-port"):
        PreviewServer("127.0.0.1", server.port)


def test_events_carry_image_keypoints_rig_joints_and_stats(server: PreviewServer) -> None:
    result = make_result(7, 1.25)
    server.publish(result)
    (msg,) = read_events(server, 1)
    assert msg["frame"] == 7 and msg["t"] == 1.25
    assert (msg["width"], msg["height"]) == (320, 240)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(msg["jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    assert np.abs(image.astype(int) - result.frame.image).mean() < 3  # the frame, JPEG-coded
    np.testing.assert_allclose(np.array(msg["raw"])[0, :, :2], result.raw.xyz[0, :, :2], atol=0.01)
    np.testing.assert_allclose(
        np.array(msg["smoothed"])[0, :, 2], result.smoothed.score[0], atol=0.01
    )
    sk = skeleton()
    joints = forward_kinematics(sk, result.rotations[0].rot, sk.offsets[0])
    np.testing.assert_allclose(np.array(msg["joints"][0]), joints, atol=1e-4)
    assert msg["timings_ms"] == {"capture": 0.5, "inference": 7.0, "solve": 0.2}
    assert msg["latency_ms"] == 14.0 and msg["provider"] == "CPUExecutionProvider"
    assert msg["stats"]["packets_sent"] == 21.0


def test_missing_points_no_person_and_no_rig(tmp_path: Path) -> None:
    srv = PreviewServer("127.0.0.1", 0, options=PreviewOptions(max_width=160))
    try:
        result = make_result(0, 0.0)
        xyz = result.raw.xyz.copy()
        xyz[0, 0] = np.nan
        srv.publish(replace(result, raw=replace(result.raw, xyz=xyz)))
        (msg,) = read_events(srv, 1)
        assert (msg["width"], msg["height"]) == (160, 120)  # scaled down, keypoints with it
        assert msg["raw"][0][0][:2] == [None, None]
        np.testing.assert_allclose(
            np.array(msg["smoothed"])[0, :, :2], result.smoothed.xyz[0, :, :2] / 2, atol=0.01
        )
        assert "joints" not in msg and len(msg["world"][0]) == 17  # no rig: lifted keypoints
        empty = Keypoints.empty(KeypointLayout.COCO17)
        srv.publish(replace(result, raw=empty, smoothed=empty, rotations=(), world=None))
        (msg,) = read_events(srv, 1)
        assert msg["raw"] == [] and msg["smoothed"] == [] and "world" not in msg
    finally:
        srv.close()


def test_slow_viewer_never_slows_publishing_and_skips_frames(server: PreviewServer) -> None:
    # A viewer that connects and then never reads: its socket buffers fill up and its thread
    # blocks in send. Publishing must go on regardless, and other viewers keep getting frames.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    big = [make_result(i, i / 30, size=(640, 480), image_noise=True) for i in range(8)]
    for i in range(8):
        server.publish(big[i])
    deadline = time.monotonic() + 10
    while server.viewers < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.viewers == 1

    published = threading.Event()

    def publish_many() -> None:
        for i in range(8, 400):
            server.publish(replace(big[i % 8], frame=replace(big[i % 8].frame, index=i)))
            time.sleep(0.001)
        published.set()

    thread = threading.Thread(target=publish_many)
    thread.start()
    thread.join(timeout=30)  # a hang guard, not a speed target
    assert published.is_set(), "publish() blocked behind a stalled viewer"
    # A fresh viewer still gets the newest frame.
    (msg,) = read_events(server, 1)
    assert msg["frame"] == 399
    # The stalled viewer fell behind; it was given the newest frames only, never a backlog.
    assert server.frames_skipped > 0
    stalled.close()


def test_mjpeg_stream_sends_annotated_jpeg_parts(server: PreviewServer) -> None:
    result = make_result(3, 0.1)
    server.publish(result)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/stream.mjpg?view=raw")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("multipart/x-mixed-replace; boundary=")
    assert resp.readline().startswith(b"--")
    headers = {}
    while (line := resp.readline().strip()) != b"":
        key, value = line.decode().split(": ", 1)
        headers[key] = value
    assert headers["Content-Type"] == "image/jpeg"
    jpeg = resp.read(int(headers["Content-Length"]))
    conn.close()
    frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    expected = annotate(result, "raw")
    assert frame.shape == expected.shape
    assert np.abs(frame.astype(int) - expected).mean() < 4
    assert np.abs(frame.astype(int) - result.frame.image).mean() > 0.5  # skeleton and text drawn
    assert request(server, "/stream.mjpg?view=other")[0] == 400


def test_close_disconnects_viewers_and_frees_the_port() -> None:
    srv = PreviewServer("127.0.0.1", 0)
    port = srv.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    assert resp.readline().startswith(b"retry:")
    srv.close()
    assert resp.read() in (b"", b"\n")  # stream ends
    conn.close()
    again = PreviewServer("127.0.0.1", port)
    again.close()


def test_annotate_draws_the_chosen_view() -> None:
    result = make_result(0, 0.0, noise_px=15.0)
    smoothed = annotate(result, "smoothed", hud=False)
    raw = annotate(result, "raw", hud=False)
    assert smoothed.shape == result.frame.image.shape
    # Each view's skeleton is drawn at its own keypoints.
    x, y = np.round(result.smoothed.xyz[0, 5, :2]).astype(int)  # left shoulder
    assert np.abs(smoothed[y, x].astype(int) - result.frame.image[y, x]).sum() > 100
    assert not np.array_equal(smoothed, raw)
    assert not np.array_equal(annotate(result, "raw"), raw)  # the status line


def test_preview_video_is_annotated_and_real_time(tmp_path: Path) -> None:
    path = tmp_path / "preview.mp4"
    writer = VideoPreviewWriter(path, fps=30.0)
    times = [i / 30 for i in range(20)] + [1.0 + i / 30 for i in range(10)]  # a 1/3 s gap
    for i, t in enumerate(times):
        writer.publish(make_result(i, t))
    writer.close()
    assert writer.dropped == 0
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    # Frames placed on the 30 fps grid by capture time: 0 .. 1.3 s -> 40 frames.
    assert len(frames) == writer.frames_written == 40
    first = make_result(0, 0.0)
    x, y = np.round(first.smoothed.xyz[0, 5, :2]).astype(int)
    assert np.abs(frames[0][y, x].astype(int) - first.frame.image[y, x]).sum() > 100


def test_window_needs_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("avatarlink.preview.sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ConfigError, match="--preview"):
        WindowPreview()


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_fps"):
        PreviewOptions(max_fps=0)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        PreviewOptions(jpeg_quality=101)


# --- the run/demo options --------------------------------------------------------------------


class _Config:
    def __init__(self, **sections: object) -> None:
        self.sections = sections
        self.model = "movenet-lightning"
        self.source = "synthetic"

    def section(self, name: str) -> object:
        return self.sections.get(name)


class _Pipeline:
    def __init__(self) -> None:
        self.observers: list = []

        class Estimator:
            layout = KeypointLayout.COCO17
            name = "movenet-lightning"

        class Stages:
            estimator = Estimator()

        self.stages = Stages()

    def add_observer(self, fn: object) -> None:
        self.observers.append(fn)


def _args(argv: list[str], demo: bool) -> object:
    import argparse

    from avatarlink.commands.observers import add_observer_arguments

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_observer_arguments(parser, demo)
    return parser.parse_args(argv)


def test_preview_is_on_by_default_in_demo_only_and_flags_win() -> None:
    from avatarlink.commands.observers import observer_settings

    assert observer_settings(_args([], True), _Config(), True).preview
    assert not observer_settings(_args([], False), _Config(), False).preview
    assert not observer_settings(_args(["--no-preview"], True), _Config(), True).preview
    config = _Config(preview={"enabled": True, "port": 9001, "max_fps": 10}, record={"path": "a"})
    s = observer_settings(_args(["--preview-port", "9002"], False), config, False)
    assert s.preview and s.port == 9002 and s.port_given
    assert s.preview_options == {"max_fps": 10.0} and s.record == "a"
    assert (
        observer_settings(_args(["--record", "b.jsonl"], False), config, False).record == "b.jsonl"
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"preview": {"prot": 1}}, "preview.prot"),
        ({"preview": {"port": "x"}}, "preview.port must be int"),
        ({"preview": {"port": 70000}}, "0..65535"),
        ({"preview": "yes"}, "preview must be a mapping"),
        ({"record": {"flush_interval_s": 0}}, "record.flush_interval_s"),
    ],
)
def test_bad_preview_config_names_the_key(sections: dict, message: str) -> None:
    from avatarlink.commands.observers import observer_settings

    with pytest.raises(ConfigError, match=message):
        observer_settings(_args([], False), _Config(**sections), False)


def test_attach_observers_serves_records_and_falls_back_to_a_free_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    from avatarlink.commands import observers
    from avatarlink.recording import load_recording

    with PreviewServer("127.0.0.1", 0) as busy:
        monkeypatch.setattr(observers, "DEFAULT_PREVIEW_PORT", busy.port)
        # A port the user chose that is in use: a clear error.
        args = _args(["--preview-port", str(busy.port)], True)
        with pytest.raises(OutputError, match="--preview-port"), contextlib.ExitStack() as stack:
            observers.attach_observers(_Pipeline(), args, _Config(), skeleton(), stack)
        # The default port in use (another run): the preview moves to a free port.
        pipeline = _Pipeline()
        args = _args(["--record", str(tmp_path / "r.jsonl")], True)
        with contextlib.ExitStack() as stack:
            lines = observers.attach_observers(pipeline, args, _Config(), skeleton(), stack)
            url = next(line for line in lines if line.startswith("preview: open http://"))
            assert f":{busy.port}/" not in url
            assert any(line == f"recording to {tmp_path / 'r.jsonl'}" for line in lines)
            assert len(pipeline.observers) == 2
            for i in range(3):
                for fn in pipeline.observers:
                    fn(make_result(i, i / 30))
    recording = load_recording(tmp_path / "r.jsonl")
    assert recording.header.model == "movenet-lightning" and len(recording.frames) == 3
    assert recording.header.rig_name == "test-rig"


def test_window_replaces_the_demo_page_and_falls_back_to_it_without_display(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib

    from avatarlink.commands import observers

    s = observers.observer_settings(_args(["--window"], True), _Config(), True)
    assert s.window and not s.preview
    s = observers.observer_settings(_args(["--window", "--preview"], True), _Config(), True)
    assert s.window and s.preview
    # No display: the page is served instead of failing.
    monkeypatch.setattr("avatarlink.preview.has_display", lambda: False)
    monkeypatch.setattr(observers, "DEFAULT_PREVIEW_PORT", 0)
    pipeline = _Pipeline()
    with contextlib.ExitStack() as stack:
        lines = observers.attach_observers(
            pipeline, _args(["--window"], True), _Config(), skeleton(), stack
        )
    assert len(pipeline.observers) == 1 and lines[0].startswith("preview: open http://")
