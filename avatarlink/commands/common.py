"""Options shared by several subcommands (model, device, threads)."""

from __future__ import annotations

import argparse

from avatarlink.session import DEVICES, SessionOptions


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str | None = None) -> None:
    """``--model``, ``--device`` and ``--threads``."""
    from avatarlink.models.registry import DEFAULT_MODEL, MODELS

    parser.add_argument(
        "--model",
        default=default_model or DEFAULT_MODEL,
        help=f"pose model (default: %(default)s; one of {', '.join(MODELS)})",
    )
    add_session_arguments(parser)


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="execution provider: auto tries TensorRT, CUDA, then CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU inference threads (default: all cores but one, leaving one for capture/sending)",
    )


def session_options(args: argparse.Namespace) -> SessionOptions:
    """The :class:`SessionOptions` from ``--device``/``--threads``."""
    return SessionOptions(device=args.device, threads=args.threads)
