"""``avatarlink run``: the main job: capture -> estimate -> smooth -> lift -> solve -> send, live.

Every option can live in one YAML file (``--config``); flags override it; ``--print-config`` shows
the merged result. Ctrl-C or SIGTERM stops cleanly within a second: the capture stops, outputs
are closed and observers (preview, recording) are closed and flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import yaml

DEFAULT_SEND_HELP = "vmc://127.0.0.1:39539"


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="the main job: stream a camera, video or the synthetic performer as bone rotations",
        description=(
            "Capture frames, estimate the pose, smooth, lift to 3D, solve the rig's bone "
            "rotations and stream them (VMC to 127.0.0.1:39539 by default). SOURCE is a camera "
            "index, a video file, an image folder, an rtsp:// or http:// URL, or 'synthetic'."
        ),
    )
    add_run_arguments(parser)
    parser.set_defaults(handler=run)


def add_run_arguments(parser: argparse.ArgumentParser, demo: bool = False) -> None:
    """The options of ``run`` (``demo`` shares them). Every default is None so that only the
    flags actually given override the config file."""
    from avatarlink.models.registry import DEFAULT_MODEL, MODELS
    from avatarlink.session import DEVICES
    from avatarlink.smoothing_config import add_arguments as add_smoothing_arguments

    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with any of the options")
    parser.add_argument(
        "--print-config", action="store_true", help="print the merged configuration and exit"
    )
    if not demo:
        parser.add_argument(
            "--source",
            metavar="SRC",
            help="camera index (0), video, image folder, rtsp:// or http:// URL, or synthetic "
            "(default: 0)",
        )
    parser.add_argument(
        "--model", help=f"pose model (default: {DEFAULT_MODEL}; one of {', '.join(MODELS)})"
    )
    parser.add_argument("--device", choices=DEVICES, help="execution provider (default: auto)")
    parser.add_argument("--threads", type=int, help="CPU inference threads")
    parser.add_argument("--rig", metavar="RIG", help="rig name or YAML (default: unity_humanoid)")
    parser.add_argument("--profile", metavar="CALIB.yaml", help="calibration profile")
    parser.add_argument(
        "--send",
        action="append",
        metavar="URL",
        help=f"stream to vmc://HOST:PORT or vrchat://HOST:PORT; repeatable (default: "
        f"{DEFAULT_SEND_HELP})",
    )
    parser.add_argument("--send-rate", type=float, metavar="HZ", help="send at most HZ frames/s")
    parser.add_argument(
        "--mirror", action="store_true", default=None, help="mirror left/right (selfie view)"
    )
    parser.add_argument(
        "--root-translation",
        action="store_true",
        default=None,
        help="move the avatar with the hips",
    )
    add_smoothing_arguments(parser)
    parser.add_argument("--seconds", type=float, metavar="N", help="stop after N seconds")
    parser.add_argument("--quiet", action="store_true", default=None, help="no live status line")
    if not demo:
        parser.add_argument(
            "--realtime",
            action="store_true",
            default=None,
            help="play files and the synthetic performer at their own rate (default: as fast "
            "as possible)",
        )
        parser.add_argument(
            "--loop", action="store_true", default=None, help="restart files at their end"
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set capture.stall_timeout_s=2 (repeatable)",
    )
    add_observer_arguments(parser, demo)


def add_observer_arguments(parser: argparse.ArgumentParser, demo: bool) -> None:
    """Options of the pipeline observers (preview page/window/video, recording)."""
    from avatarlink.commands import observers

    observers.add_observer_arguments(parser, demo)


def attach_observers(
    pipeline: Any, args: argparse.Namespace, config: Any, rig: Any, stack: contextlib.ExitStack
) -> list[str]:
    """Attach the observers the options ask for; returns lines to print (where to look)."""
    from avatarlink.commands import observers

    return observers.attach_observers(pipeline, args, config, rig, stack)


# Flag -> dotted config key.
_FLAG_KEYS: dict[str, str] = {
    "source": "source",
    "model": "model",
    "device": "device",
    "threads": "threads",
    "rig": "rig",
    "profile": "profile",
    "send": "send",
    "send_rate": "outputs.max_rate_hz",
    "mirror": "outputs.mirror",
    "root_translation": "outputs.root_translation",
    "seconds": "seconds",
    "quiet": "quiet",
    "realtime": "capture.realtime",
    "loop": "capture.loop",
}


def overrides_from_args(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Dotted config keys for every flag actually given (``defaults`` first: a command's own)."""
    from avatarlink.errors import ConfigError

    out: dict[str, Any] = dict(defaults or {})
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    if getattr(args, "smoothing", None) is not None:
        out["smoothing.preset"] = args.smoothing
    for item in getattr(args, "smooth", None) or []:
        key, value = _key_value(item, "--smooth")
        out[key if key.startswith("smoothing.") else f"smoothing.{key}"] = value
    for item in getattr(args, "set", None) or []:
        key, value = _key_value(item, "--set")
        out[key] = value
    if "send" in out and not out["send"]:
        raise ConfigError("--send needs at least one URL")
    return out


def _key_value(item: str, flag: str) -> tuple[str, Any]:
    from avatarlink.errors import ConfigError

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag} {item!r}: unreadable value") from exc
    return key.strip(), value


def run(args: argparse.Namespace) -> int:
    """Run the ``run`` command."""
    from avatarlink.config import dump_yaml, load_config

    config = load_config(args.config, overrides_from_args(args))
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    return run_pipeline(config, args)


def run_pipeline(
    config: Any, args: argparse.Namespace, intro: Callable[[Any, list[str]], None] | None = None
) -> int:
    """Build the stages and the capture from ``config`` and run until stopped.

    Args:
        config: the merged :class:`~avatarlink.config.AppConfig`.
        args: the parsed options (observers read theirs from it).
        intro: called once everything is open, with the pipeline and the observers' lines, to
            print where to look (``demo`` prints its instructions there).
    """
    from avatarlink.capture import Capture, parse_source, reader_factory
    from avatarlink.pipeline import Pipeline, build_stages
    from avatarlink.rig import load_rig
    from avatarlink.status import StatusLine

    rig = load_rig(config.rig)
    synthetic_factory = None
    if parse_source(config.source)[0] == "synthetic":
        from avatarlink.synthetic import SyntheticPerformer

        performer = SyntheticPerformer(rig, config.synthetic)
        synthetic_factory = performer.reader
    factory = reader_factory(config.source, config.capture, synthetic_factory)
    stop = threading.Event()
    with contextlib.ExitStack() as stack, _stop_on_signals(stop):
        stages = build_stages(config, rig)
        capture = Capture(factory, config.capture)
        pipeline = Pipeline(capture, stages, config.pipeline)
        stack.callback(pipeline.close)
        capture.start()
        lines = attach_observers(pipeline, args, config, rig, stack)
        if intro is not None:
            intro(pipeline, lines)
        else:
            _print_intro(config, pipeline, lines)
        status = None if config.quiet else StatusLine(sys.stderr, config.status)

        def tick(_: object) -> None:
            if status is not None:
                status.update(pipeline.status_fields())

        try:
            summary = pipeline.run(stop, seconds=config.seconds, on_tick=tick)
        finally:
            if status is not None:
                status.close()
    stats = summary.stats
    fps = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"avatarlink: {summary.reason}: {summary.frames} frames in {summary.seconds:.1f} s "
        f"({fps:.1f} fps), {int(stats['packets_sent'])} packets sent, "
        f"{int(stats.get('dropped', 0))} frames dropped, {int(stats.get('skipped', 0))} skipped, "
        f"{int(stats['errors'])} stage errors",
        file=sys.stderr,
    )
    return 0


def _print_intro(config: Any, pipeline: Any, lines: list[str]) -> None:
    if config.quiet:
        return
    capture = pipeline.capture
    targets = ", ".join(config.send)
    print(
        f"avatarlink: {capture.name} -> {config.model} ({pipeline.provider}) -> rig "
        f"{config.rig} -> {targets}; Ctrl-C stops",
        file=sys.stderr,
    )
    for line in lines:
        print(f"avatarlink: {line}", file=sys.stderr)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (a clean shutdown); a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
