"""The ``avatarlink`` command line: argument parsing, logging set-up and one-line errors.

Each subcommand lives in its own module under :mod:`avatarlink.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` (a function taking the parsed
namespace and returning an exit code). Heavy imports happen inside handlers so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from avatarlink import __version__
from avatarlink.errors import AvatarlinkError

log = logging.getLogger(__name__)

# Subcommand modules, in the order ``--help`` lists them. Adding a command = one module + one name.
COMMAND_MODULES: tuple[str, ...] = (
    "run",
    "demo",
    "estimate",
    "models",
    "bench",
    "rig",
    "calibrate",
    "export",
    "replay",
    "report",
    "listen",
    "blender_addon",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="avatarlink",
        description="Camera or video in, humanoid avatar bone rotations out (VMC/OSC).",
    )
    parser.add_argument("--version", action="version", version=f"avatarlink {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"avatarlink.commands.{name}")
        module.register(subparsers)
    return parser


def configure_logging(verbosity: int) -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except AvatarlinkError as exc:
        print(f"avatarlink: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avatarlink: interrupted", file=sys.stderr)
        return 130
