"""Headless debug preview: a small web page served on localhost, an OpenCV window, a video file.

All three are pipeline observers (``pipeline.add_observer(preview.publish)``) that never slow the
pipeline: :meth:`publish` only stores a reference to the newest :class:`FrameResult` (frames are
immutable once published) and returns. Encoding and sending happen in the viewers' threads, each
viewer always takes the newest frame, so a slow viewer skips frames instead of holding anything up.

The web preview (:class:`PreviewServer`)
----------------------------------------
``GET /``                 the page (``preview_static/index.html``, ``preview.js``, ``preview.css``)
``GET /config.json``      keypoint layouts (names, edges) and the rig hierarchy, fetched once
``GET /events``           Server-Sent Events: one JSON message per frame with the JPEG image
                          (base64), raw and smoothed keypoints (source pixels), the rig's joint
                          positions (metres, world axes, from forward kinematics here, so the page
                          needs no quaternion maths), per-stage timings, fps, latency, provider,
                          dropped frames and packets per receiver
``GET /stream.mjpg``      the annotated view as MJPEG (``?view=raw`` or ``smoothed``), for players
                          and OBS

Nothing else is served: paths are looked up in a fixed table (no file system access from a URL,
so no directory listing and no traversal), only GET/HEAD are allowed, a loopback-bound server
answers only requests whose ``Host`` names the loopback (DNS-rebinding defence), and every page
response carries a Content-Security-Policy that forbids requests to any other origin.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink.draw import draw_keypoints
from avatarlink.errors import ConfigError, OutputError
from avatarlink.recording import RigSkeleton
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import FrameResult, ImageArray, Keypoints

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
VIEWS = ("smoothed", "raw")

_STATIC_PACKAGE = "avatarlink.preview_static"
# URL path -> (file in preview_static, content type). Nothing outside this table is served.
_STATIC_ROUTES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/preview.js": ("preview.js", "text/javascript; charset=utf-8"),
    "/preview.css": ("preview.css", "text/css; charset=utf-8"),
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_MJPEG_BOUNDARY = "avatarlinkframe"
# How often the server loop checks for shutdown, seconds (close() waits up to this long).
_SHUTDOWN_POLL_S = 0.05


@dataclass(frozen=True)
class PreviewOptions:
    """Settings of the web preview.

    Attributes:
        max_fps: most frames per second sent to each viewer (the rest are skipped for it).
        jpeg_quality: JPEG quality 1-100 of the images sent.
        max_width: images wider than this (pixels) are scaled down before encoding.
        keepalive_s: idle time after which a viewer gets a keep-alive (detects closed tabs).
        send_timeout_s: a viewer whose socket accepts nothing for this long is disconnected.
    """

    max_fps: float = 30.0
    jpeg_quality: int = 80
    max_width: int = 960
    keepalive_s: float = 2.0
    send_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.max_fps > 0:
            raise ConfigError(f"preview.max_fps must be > 0 frames/s, got {self.max_fps}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"preview.jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.max_width < 16:
            raise ConfigError(f"preview.max_width must be >= 16 px, got {self.max_width}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def annotate(result: FrameResult, view: str = "smoothed", hud: bool = True) -> ImageArray:
    """The frame with the ``view`` keypoints drawn (coloured by confidence) and a status line.

    Args:
        result: one pipeline result.
        view: ``smoothed`` or ``raw``.
        hud: draw fps, latency and provider in the top-left corner.

    Returns:
        uint8 (H, W, 3) BGR, a new image.
    """
    keypoints = result.smoothed if view == "smoothed" else result.raw
    out = draw_keypoints(result.frame.image, keypoints)
    if hud:
        fps = result.stats.get("fps", math.nan)
        text = f"{view}  {fps:.1f} fps  {result.latency_ms:.1f} ms  {result.provider}"
        scale = max(0.4, out.shape[0] / 900)
        org = (8, int(22 * scale / 0.6))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(
            out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out


def _nullable(values: npt.ArrayLike, decimals: int) -> Any:
    """Nested lists of ``values`` rounded, with NaN/inf as None (JSON null)."""
    arr = np.asarray(np.round(np.asarray(values, np.float64), decimals))
    out = arr.astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()


def _points(keypoints: Keypoints, scale: float) -> list[Any]:
    """Per person ``[[x, y, score], ...]`` in displayed-image pixels."""
    xys = np.concatenate([keypoints.xyz[..., :2] * scale, keypoints.score[..., None]], axis=-1)
    out: list[Any] = _nullable(xys, 2)
    return out


class _Broadcast:
    """The newest frame and lazily encoded views of it, shared by every viewer thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.latest: FrameResult | None = None
        self.seq = 0
        self.closed = False
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._cache_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def publish(self, result: FrameResult) -> None:
        with self.cond:
            self.latest = result
            self.seq += 1
            self.cond.notify_all()

    def wait_newer(self, seen: int, timeout: float) -> tuple[int, FrameResult | None]:
        """Block until a frame newer than ``seen`` (or close/timeout); returns (seq, frame)."""
        with self.cond:
            self.cond.wait_for(lambda: self.seq > seen or self.closed, timeout)
            return self.seq, self.latest

    def encoded(
        self, kind: str, seq: int, result: FrameResult, encode: Callable[[FrameResult], bytes]
    ) -> bytes:
        """``encode(result)`` computed once per (kind, frame) however many viewers ask."""
        with self._locks_lock:
            lock = self._cache_locks.setdefault(kind, threading.Lock())
        with lock:
            cached = self._cache.get(kind)
            if cached is not None and cached[0] >= seq:
                return cached[1]
            data = encode(result)
            self._cache[kind] = (seq, data)
            return data

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class PreviewServer:
    """The web preview: ``publish`` every result, viewers connect with a browser.

    Example::

        server = PreviewServer("127.0.0.1", 8765, rig=rig)
        pipeline.add_observer(server.publish)
        print("preview at", server.url)
        ...
        server.close()
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        rig: Any = None,
        options: PreviewOptions | None = None,
    ) -> None:
        """Start serving in background threads.

        Args:
            host: interface to bind; anything but the loopback logs a warning (the page shows the
                camera image to whoever can connect).
            port: TCP port; 0 picks a free one (see :attr:`url`).
            rig: the rig the rotations refer to (``avatarlink.rig.Rig``, a :class:`RigSkeleton`
                or anything with ``bones``, ``parents``, ``rest_local_positions``); None shows
                the lifted world keypoints in the 3D view instead.
            options: rates and quality.

        Raises:
            OutputError: the address cannot be bound (port in use, unknown interface).
        """
        self.options = options or PreviewOptions()
        self.skeleton = None if rig is None else _as_skeleton(rig)
        self._broadcast = _Broadcast()
        self._root_origin: npt.NDArray[np.float64] | None = None
        self._stats_lock = threading.Lock()
        self.frames_published = 0
        self.frames_skipped = 0  # frames a viewer did not get because it was slower than the stream
        self.viewers = 0
        self._connections: set[socket.socket] = set()
        self._static = _load_static()
        self._config = json.dumps(self._config_json()).encode()
        self.loopback_only = is_loopback(host)
        handler = _make_handler(self)
        server_cls = _IPv6Server if ":" in host else _IPv4Server
        try:
            self._httpd = server_cls((host, port), handler)
        except OSError as exc:
            raise OutputError(
                f"cannot serve the preview on {host}:{port}: {exc.strerror or exc}; "
                "pick another --preview-port"
            ) from exc
        self.host = host
        self.port = int(self._httpd.server_address[1])
        if not self.loopback_only:
            log.warning(
                "the preview listens on %s:%d, reachable from other machines: anyone who can "
                "connect sees the camera image",
                host,
                self.port,
            )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(_SHUTDOWN_POLL_S,),
            name="avatarlink-preview",
            daemon=True,
        )
        self._thread.start()
        log.info("preview at %s", self.url)

    @property
    def url(self) -> str:
        """Address of the page (``http://127.0.0.1:PORT/``)."""
        shown = self.host
        if shown in ("0.0.0.0", "::", ""):
            shown = "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/"

    def publish(self, result: FrameResult) -> None:
        """Make ``result`` the newest frame (O(1); never blocks on viewers)."""
        self._broadcast.publish(result)
        self.frames_published += 1

    __call__ = publish

    def close(self) -> None:
        """Stop serving and disconnect every viewer (idempotent)."""
        if self._broadcast.closed:
            return
        self._broadcast.close()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._stats_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2.0)

    def __enter__(self) -> PreviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- content ---------------------------------------------------------------------------

    def _config_json(self) -> dict[str, Any]:
        layouts = {
            layout.value: {"names": list(layout.names), "edges": [list(e) for e in layout.edges]}
            for layout in KeypointLayout
        }
        rig = None
        if self.skeleton is not None:
            rig = {
                "name": self.skeleton.name,
                "bones": list(self.skeleton.bones),
                "parents": self.skeleton.parents.tolist(),
            }
        return {"layouts": layouts, "rig": rig, "views": list(VIEWS)}

    def frame_message(self, result: FrameResult) -> dict[str, Any]:
        """The ``/events`` message of one frame, without the image (see the module docstring)."""
        h, w = result.frame.image.shape[:2]
        scale = min(1.0, self.options.max_width / w)
        message: dict[str, Any] = {
            "frame": int(result.frame.index),
            "t": round(float(result.frame.t), 6),
            "width": round(w * scale),
            "height": round(h * scale),
            "layout": result.smoothed.layout.value,
            "raw": _points(result.raw, scale),
            "smoothed": _points(result.smoothed, scale),
            "timings_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()},
            "latency_ms": _nullable(result.latency_ms, 3),
            "provider": result.provider,
            "stats": {k: _nullable(v, 3) for k, v in result.stats.items()},
            "viewer_skipped": self.frames_skipped,
        }
        message.update(self._three_d(result))
        return message

    def _three_d(self, result: FrameResult) -> dict[str, Any]:
        """Joint positions for the 3D view: the rig's (``joints``) or the world keypoints."""
        if self.skeleton is not None and result.rotations:
            from avatarlink.bvh import forward_kinematics

            sk = self.skeleton
            column = {name: i for i, name in enumerate(sk.bones)}
            people = []
            for rot in result.rotations:
                local = np.tile([0.0, 0.0, 0.0, 1.0], (len(sk.bones), 1))
                idx = np.array([column.get(b, -1) for b in rot.bones], np.int64)
                keep = idx >= 0
                local[idx[keep]] = rot.rot[keep]
                root = np.asarray(rot.root_pos, np.float64)
                if self._root_origin is None and np.isfinite(root).all():
                    self._root_origin = root.copy()
                shift = root - self._root_origin if self._root_origin is not None else 0.0
                hips = sk.offsets[0].astype(np.float64) + np.nan_to_num(shift)
                people.append(_nullable(forward_kinematics(sk, local, hips), 4))
            return {"joints": people}
        if result.world is not None and result.world.num_persons:
            world = result.world
            return {"world": _nullable(world.xyz, 4), "world_layout": world.layout.value}
        return {}

    def _encode_event(self, result: FrameResult) -> bytes:
        message = self.frame_message(result)
        image = result.frame.image
        if message["width"] != image.shape[1]:
            size = (message["width"], message["height"])
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        message["jpeg"] = base64.b64encode(_jpeg(image, self.options.jpeg_quality)).decode()
        return b"data: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"

    def _encode_mjpeg(self, view: str) -> Callable[[FrameResult], bytes]:
        def encode(result: FrameResult) -> bytes:
            image = annotate(result, view)
            w = image.shape[1]
            if w > self.options.max_width:
                h = round(image.shape[0] * self.options.max_width / w)
                image = cv2.resize(image, (self.options.max_width, h), interpolation=cv2.INTER_AREA)
            jpeg = _jpeg(image, self.options.jpeg_quality)
            head = (
                f"--{_MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg)}\r\n\r\n"
            ).encode()
            return head + jpeg + b"\r\n"

        return encode

    # --- streaming loop shared by /events and /stream.mjpg ------------------------------------

    def _stream(self, kind: str, encode: Callable[[FrameResult], bytes]) -> Iterator[bytes]:
        """Chunks to send one viewer: the newest frame at most ``max_fps`` times a second, and an
        empty chunk when idle for ``keepalive_s``."""
        seen = 0
        last_sent = 0.0
        interval = 1.0 / self.options.max_fps
        bc = self._broadcast
        while not bc.closed:
            wait = interval - (time.monotonic() - last_sent)
            if wait > 0:
                time.sleep(wait)
            seq, result = bc.wait_newer(seen, self.options.keepalive_s)
            if bc.closed:
                return
            if result is None or seq <= seen:
                yield b""
                continue
            if seen:
                with self._stats_lock:
                    self.frames_skipped += seq - seen - 1
            seen = seq
            last_sent = time.monotonic()
            yield bc.encoded(kind, seq, result, encode)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._stats_lock:
            if add:
                self._connections.add(conn)
                self.viewers += 1
            else:
                self._connections.discard(conn)
                self.viewers -= 1


def _as_skeleton(rig: Any) -> RigSkeleton:
    if isinstance(rig, RigSkeleton):
        return rig
    return RigSkeleton.from_rig(rig)


def _jpeg(image: ImageArray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OutputError("JPEG encoding of a preview frame failed")
    return bytes(buf.tobytes())


def _load_static() -> dict[str, tuple[bytes, str]]:
    root = resources.files(_STATIC_PACKAGE)
    table: dict[str, tuple[bytes, str]] = {}
    for route, (name, ctype) in _STATIC_ROUTES.items():
        table[route] = (root.joinpath(name).read_bytes(), ctype)
    return table


class _IPv4Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6Server(_IPv4Server):
    address_family = socket.AF_INET6


def _make_handler(server: PreviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "avatarlink-preview"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def _refuse_method(self) -> None:
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, extra={"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815

        def _host_ok(self) -> bool:
            if not server.loopback_only:
                return True
            host = self.headers.get("Host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            return is_loopback(name)

        def _headers(self, status: int, ctype: str, length: int | None, extra: Any = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", _CSP)
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()

        def _send_error(self, status: HTTPStatus, extra: Mapping[str, str] | None = None) -> None:
            body = f"{status.value} {status.phrase}\n".encode()
            self._headers(status.value, "text/plain; charset=utf-8", len(body), extra)
            if self.command != "HEAD":
                self.wfile.write(body)

        def _route(self, head: bool) -> None:
            if not self._host_ok():
                self._send_error(HTTPStatus.FORBIDDEN)
                return
            parts = urlsplit(self.path)
            path = parts.path
            if path in server._static:
                body, ctype = server._static[path]
                self._headers(200, ctype, len(body))
                if not head:
                    self.wfile.write(body)
            elif path == "/config.json":
                self._headers(200, "application/json", len(server._config))
                if not head:
                    self.wfile.write(server._config)
            elif path == "/events":
                self._serve_stream(head, "event", "text/event-stream", server._encode_event)
            elif path == "/stream.mjpg":
                view = parse_qs(parts.query).get("view", ["smoothed"])[0]
                if view not in VIEWS:
                    self._send_error(HTTPStatus.BAD_REQUEST)
                    return
                ctype = f"multipart/x-mixed-replace; boundary={_MJPEG_BOUNDARY}"
                self._serve_stream(head, f"mjpeg-{view}", ctype, server._encode_mjpeg(view))
            else:
                self._send_error(HTTPStatus.NOT_FOUND)

        def _serve_stream(
            self, head: bool, kind: str, ctype: str, encode: Callable[[FrameResult], bytes]
        ) -> None:
            self._headers(200, ctype, None, {"Connection": "close"})
            self.close_connection = True
            if head:
                return
            conn = self.connection
            conn.settimeout(server.options.send_timeout_s)
            server._track(conn, True)
            try:
                if kind == "event":
                    self.wfile.write(b"retry: 1000\n\n")
                for chunk in server._stream(kind, encode):
                    # An SSE comment keeps idle connections checked; MJPEG just waits.
                    data = chunk or (b":\n\n" if kind == "event" else b"")
                    if data:
                        self.wfile.write(data)
                        self.wfile.flush()
            except (OSError, ValueError):
                log.debug("preview viewer %s went away", self.address_string())
            except Exception:
                log.exception("preview stream to %s failed", self.address_string())
            finally:
                server._track(conn, False)

    return Handler


# --- OpenCV window and annotated video ---------------------------------------------------------


def has_display() -> bool:
    """Whether a window can be opened (Linux/BSD need an X11 or Wayland display)."""
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class WindowPreview:
    """Shows the annotated view in an OpenCV window (``--window``), from its own thread.

    ``q`` or Esc in the window (or closing it) calls ``on_quit`` once, e.g. to stop the pipeline.
    """

    def __init__(
        self,
        title: str = "avatarlink",
        view: str = "smoothed",
        on_quit: Callable[[], None] | None = None,
    ) -> None:
        """Open the window; ``ConfigError`` when there is no display."""
        if not has_display():
            raise ConfigError(
                "--window needs a display (DISPLAY/WAYLAND_DISPLAY is not set); "
                "use --preview and open the page in a browser instead"
            )
        self.title = title
        self.view = view
        self.on_quit = on_quit
        self._broadcast = _Broadcast()
        self._thread = threading.Thread(target=self._loop, name="avatarlink-window", daemon=True)
        self._thread.start()

    def publish(self, result: FrameResult) -> None:
        """Make ``result`` the frame shown next (never blocks)."""
        self._broadcast.publish(result)

    __call__ = publish

    def _loop(self) -> None:
        seen = 0
        opened = False
        try:
            while not self._broadcast.closed:
                seq, result = self._broadcast.wait_newer(seen, 0.03)
                if result is not None and seq > seen:
                    seen = seq
                    cv2.imshow(self.title, annotate(result, self.view))
                    opened = True
                key = cv2.waitKey(1) & 0xFF if opened else -1
                visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) if opened else 1.0
                if key in (ord("q"), 27) or visible < 1:
                    if self.on_quit is not None:
                        self.on_quit()
                    return
        except cv2.error as exc:
            log.error("the preview window failed: %s", exc)
        finally:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)

    def close(self) -> None:
        """Close the window."""
        self._broadcast.close()
        self._thread.join(timeout=2.0)


class VideoPreviewWriter:
    """Records the annotated view to a video file (``--preview-video OUT.mp4``).

    Frames are placed by their capture time on a fixed ``fps`` grid (repeated to fill gaps,
    skipped when early), so the video plays in real time whatever the pipeline's rate. Encoding
    runs in a background thread behind a bounded queue; if it falls behind, frames are dropped
    (counted in :attr:`dropped`) rather than slowing the pipeline.
    """

    def __init__(
        self, path: str | Path, fps: float = 30.0, view: str = "smoothed", queue_size: int = 64
    ) -> None:
        """Prepare the writer (the file opens with the first frame, which gives the size)."""
        self.path = Path(path)
        if not fps > 0:
            raise ConfigError(f"preview video fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.view = view
        self.dropped = 0
        self.frames_written = 0
        self._queue: queue.Queue[FrameResult | None] = queue.Queue(maxsize=queue_size)
        self._writer: Any = None
        self._t0: float | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._loop, name="avatarlink-video", daemon=True)
        self._thread.start()

    def publish(self, result: FrameResult) -> None:
        """Queue ``result`` for the video (never blocks; drops when the queue is full)."""
        try:
            self._queue.put_nowait(result)
        except queue.Full:
            self.dropped += 1

    __call__ = publish

    def _open(self, image: ImageArray) -> Any:
        suffix = self.path.suffix.lower()
        fourcc = cv2.VideoWriter.fourcc(*("mp4v" if suffix in (".mp4", ".m4v", ".mov") else "MJPG"))
        h, w = image.shape[:2]
        writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (w, h))
        if not writer.isOpened():
            raise OutputError(f"cannot open video writer for {self.path} (suffix {suffix!r})")
        return writer

    def _loop(self) -> None:
        while True:
            result = self._queue.get()
            if result is None:
                return
            if self._error is not None:
                continue
            try:
                image = annotate(result, self.view)
                if self._writer is None:
                    self._writer = self._open(image)
                    self._t0 = result.frame.t
                assert self._t0 is not None
                due = math.floor((result.frame.t - self._t0) * self.fps + 0.5) + 1
                if self.frames_written == 0:
                    due = 1
                while self.frames_written < due:
                    self._writer.write(image)
                    self.frames_written += 1
            except (OutputError, cv2.error) as exc:
                self._error = exc
                log.error("preview video %s: %s", self.path, exc)

    def close(self) -> None:
        """Finish the file (waits for queued frames)."""
        self._queue.put(None)
        self._thread.join()
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.dropped:
            log.warning("preview video %s: %d frame(s) dropped", self.path, self.dropped)
