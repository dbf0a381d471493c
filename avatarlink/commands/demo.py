"""``avatarlink demo``: the main job on the built-in synthetic performer, streaming VMC locally.

It is ``avatarlink run --source synthetic --realtime --loop`` with the real model: it needs no
camera, and prints where the stream goes and how to see the avatar move.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from avatarlink.commands.run import add_run_arguments, overrides_from_args, run_pipeline

#: What ``demo`` changes from ``run``'s defaults (flags and ``--config`` still override these).
DEMO_DEFAULTS: dict[str, Any] = {
    "source": "synthetic",
    "capture.realtime": True,
    "capture.loop": True,
}


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on the built-in synthetic performer (no camera needed)",
        description=(
            "Stream the built-in synthetic performer (a rendered figure that idles, waves, raises "
            "its arms, squats, walks in place, turns and leans) through the real pose model and "
            "solver to VMC on 127.0.0.1:39539, in real time, until Ctrl-C or --seconds."
        ),
    )
    add_run_arguments(parser, demo=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from avatarlink.config import dump_yaml, load_config

    config = load_config(args.config, overrides_from_args(args, DEMO_DEFAULTS))
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    return run_pipeline(config, args, intro=_intro(config))


def _intro(config: Any) -> Any:
    def intro(pipeline: Any, lines: list[str]) -> None:
        seconds = f" for {config.seconds:g} s" if config.seconds else " until Ctrl-C"
        motions = (
            ", ".join(config.synthetic.motions) or "idle, wave, arm raises, squat, walk, turn, lean"
        )
        out = [
            f"avatarlink demo: the synthetic performer ({motions}) -> {config.model} "
            f"({pipeline.provider}) -> rig {config.rig}{seconds}",
        ]
        for url in config.send:
            out.append(f"  streaming to {url}")
        out += [f"  {line}" for line in lines]
        port = _vmc_port(config.send)
        out += [
            f"  to see the avatar move, start a VMC receiver on port {port}:",
            f"    Unity:    EVMC4U (ExternalReceiver) on a VRM avatar, port {port}",
            f"    Blender:  the VMC4B add-on, receive on port {port}",
            f"    VSeeFace: Settings > General > OSC/VMC receiver, port {port} (tracking off)",
            f"  or check the stream in another terminal: avatarlink listen --port {port}",
        ]
        print("\n".join(out), file=sys.stderr)

    return intro


def _vmc_port(urls: tuple[str, ...]) -> int:
    """The port of the first ``vmc://`` URL (39539 when there is none or it gives none)."""
    from urllib.parse import urlsplit

    for url in urls:
        parts = urlsplit(url)
        if parts.scheme == "vmc":
            try:
                return parts.port or 39539
            except ValueError:
                return 39539
    return 39539
