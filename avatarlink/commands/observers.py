"""Options and wiring of the pipeline observers of ``run`` and ``demo``: the browser preview, the
OpenCV window, the annotated video and the session recording.

Config file sections (flags override them)::

    preview:
      enabled: true          # --preview / --no-preview (default: on for demo, off for run)
      host: 127.0.0.1        # --preview-host; other interfaces are reachable from the network
      port: 8765             # --preview-port; 0 picks a free port
      window: false          # --window (instead of the page; without a display: the page)
      video: null            # --preview-video OUT.mp4
      video_fps: 30          # frame rate of that video
      max_fps: 30            # most frames per second sent to each browser
      jpeg_quality: 80
      max_width: 960         # wider frames are scaled down for the browser
    record:
      path: null             # --record FILE.jsonl
      flush_interval_s: 1.0  # a crash loses at most this much
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_PREVIEW_KEYS = (
    "enabled", "host", "port", "window", "video", "video_fps", "max_fps", "jpeg_quality",
    "max_width",
)  # fmt: skip
_RECORD_KEYS = ("path", "flush_interval_s")
DEFAULT_PREVIEW_PORT = 8765


def add_observer_arguments(parser: argparse.ArgumentParser, demo: bool) -> None:
    """``--preview/--no-preview``, ``--preview-host``, ``--preview-port``, ``--window``,
    ``--preview-video`` and ``--record``; every default is None so the config file can set them."""
    group = parser.add_argument_group("preview and recording")
    group.add_argument(
        "--preview",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve a live debug page on http://127.0.0.1:8765/ "
        f"(default: {'on' if demo else 'off'})",
    )
    group.add_argument(
        "--preview-host",
        metavar="HOST",
        help="interface of the preview page (default 127.0.0.1; anything else is reachable from "
        "the network and shows the camera image to whoever connects)",
    )
    group.add_argument(
        "--preview-port", type=int, metavar="PORT", help="port of the preview page (default 8765)"
    )
    group.add_argument(
        "--window",
        action="store_true",
        default=None,
        help="show the annotated view in an OpenCV window (needs a display; q or Esc quits)",
    )
    group.add_argument(
        "--preview-video", metavar="OUT.mp4", help="record the annotated view to a video file"
    )
    group.add_argument(
        "--record",
        metavar="FILE.jsonl",
        help="record keypoints and bone rotations (replay, export and report read it)",
    )
    parser.set_defaults(preview_default=demo)


@dataclass(frozen=True)
class ObserverSettings:
    """What to attach, merged from the config sections and the flags."""

    preview: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PREVIEW_PORT
    port_given: bool = False
    window: bool = False
    video: str | None = None
    video_fps: float = 30.0
    preview_options: Mapping[str, Any] = field(default_factory=dict)
    record: str | None = None
    flush_interval_s: float = 1.0


def _section(config: Any, name: str, keys: tuple[str, ...], source: str) -> dict[str, Any]:
    from avatarlink.errors import ConfigError

    data = config.section(name) if config is not None else None
    if data is None:
        return {}
    where = f" ({source})" if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name} must be a mapping of keys, got {type(data).__name__}{where}")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError(
            f"unknown key {name}.{unknown[0]}{where}; valid: "
            + ", ".join(f"{name}.{k}" for k in keys)
        )
    return dict(data)


def _typed(value: Any, kind: type, key: str, source: str) -> Any:
    from avatarlink.errors import ConfigError

    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        where = f" ({source})" if source else ""
        raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}{where}")
    return value


def observer_settings(args: argparse.Namespace, config: Any, demo: bool) -> ObserverSettings:
    """Merge the ``preview``/``record`` config sections and the flags (flags win)."""
    from avatarlink.errors import ConfigError

    source = str(getattr(args, "config", None) or "")
    prev = _section(config, "preview", _PREVIEW_KEYS, source)
    rec = _section(config, "record", _RECORD_KEYS, source)
    flags = {
        "enabled": getattr(args, "preview", None),
        "host": getattr(args, "preview_host", None),
        "port": getattr(args, "preview_port", None),
        "window": getattr(args, "window", None),
        "video": getattr(args, "preview_video", None),
    }
    port_given = flags["port"] is not None or "port" in prev
    enabled_given = flags["enabled"] is not None or "enabled" in prev
    prev.update({k: v for k, v in flags.items() if v is not None})
    if getattr(args, "record", None) is not None:
        rec["path"] = args.record
    kinds = {"enabled": bool, "host": str, "port": int, "window": bool, "video_fps": float}
    kinds |= {"max_fps": float, "jpeg_quality": int, "max_width": int}
    for key, kind in kinds.items():
        if prev.get(key) is not None:
            prev[key] = _typed(prev[key], kind, f"preview.{key}", source)
    port = prev.get("port", DEFAULT_PREVIEW_PORT)
    if not 0 <= port <= 65535:
        raise ConfigError(f"preview.port must be in 0..65535, got {port}")
    fps = prev.get("video_fps", 30.0)
    if not fps > 0:
        raise ConfigError(f"preview.video_fps must be > 0 frames/s, got {fps}")
    flush = _typed(rec.get("flush_interval_s", 1.0), float, "record.flush_interval_s", source)
    if not flush > 0:
        raise ConfigError(f"record.flush_interval_s must be > 0 s, got {flush}")
    options: dict[str, Any] = {
        k: prev[k] for k in ("max_fps", "jpeg_quality", "max_width") if k in prev
    }
    video = prev.get("video")
    path = rec.get("path")
    window = bool(prev.get("window", False))
    # The window replaces the page that demo opens by default (unless asked for both).
    preview = bool(prev["enabled"]) if enabled_given else (demo and not window)
    return ObserverSettings(
        preview=preview,
        host=str(prev.get("host", "127.0.0.1")),
        port=int(port),
        port_given=port_given,
        window=window,
        video=None if video is None else str(video),
        video_fps=float(fps),
        preview_options=options,
        record=None if path is None else str(path),
        flush_interval_s=float(flush),
    )


def attach_observers(
    pipeline: Any,
    args: argparse.Namespace,
    config: Any,
    rig: Any,
    stack: contextlib.ExitStack,
) -> list[str]:
    """Attach what the options ask for to ``pipeline``; each is closed by ``stack``. Returns
    lines telling the user where to look."""
    from avatarlink.errors import OutputError
    from avatarlink.preview import (
        PreviewOptions,
        PreviewServer,
        VideoPreviewWriter,
        WindowPreview,
        has_display,
    )
    from avatarlink.recording import Recorder, RecordingHeader, RigSkeleton

    settings = observer_settings(args, config, bool(getattr(args, "preview_default", False)))
    lines: list[str] = []
    window = settings.window
    if window and not has_display():
        log.warning("--window needs a display and there is none; serving the preview page instead")
        window = False
    if settings.preview or (settings.window and not window):
        options = PreviewOptions(**settings.preview_options)
        try:
            server = PreviewServer(settings.host, settings.port, rig=rig, options=options)
        except OutputError:
            if settings.port_given:
                raise
            # The default port is taken (another run?): any free port will do.
            log.warning("preview port %d is in use; using a free port", settings.port)
            server = PreviewServer(settings.host, 0, rig=rig, options=options)
        stack.callback(server.close)
        pipeline.add_observer(server.publish)
        lines.append(f"preview: open {server.url} in a browser")
    if window:
        viewer = WindowPreview(on_quit=_interrupt)
        stack.callback(viewer.close)
        pipeline.add_observer(viewer.publish)
        lines.append("preview window open (q or Esc quits)")
    if settings.video:
        video = VideoPreviewWriter(settings.video, fps=settings.video_fps)
        stack.callback(video.close)
        pipeline.add_observer(video.publish)
        lines.append(f"recording the annotated view to {settings.video}")
    if settings.record:
        estimator = pipeline.stages.estimator
        header = RecordingHeader(
            model=str(getattr(config, "model", getattr(estimator, "name", ""))),
            layout=estimator.layout,
            rig=RigSkeleton.from_rig(rig),
            source=str(getattr(config, "source", "")),
        )
        recorder = Recorder(settings.record, header, settings.flush_interval_s)
        stack.callback(recorder.close)
        pipeline.add_observer(recorder.write)
        lines.append(f"recording to {settings.record}")
    return lines


def _interrupt() -> None:
    """Stop the run as Ctrl-C does (the window was closed)."""
    signal.raise_signal(signal.SIGINT)
