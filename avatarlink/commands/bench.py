"""``avatarlink bench [NAME] ...``: run one of the registered benchmarks (avatarlink.benches)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from avatarlink.benches import BENCHES

DEFAULT_BENCH = "pipeline"


def register(subparsers: Any) -> None:
    """Add ``bench`` with one sub-parser per registered benchmark."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmarks: pipeline stages, decoding, smoothing, retargeting, streaming",
        description="Run a benchmark. Without NAME runs the pipeline benchmark.",
    )
    if DEFAULT_BENCH in BENCHES:  # `avatarlink bench --frames 100` runs the default with options
        importlib.import_module(BENCHES[DEFAULT_BENCH]).add_arguments(parser)
    names = parser.add_subparsers(dest="bench_name", metavar="NAME")
    for name, module_path in BENCHES.items():
        module = importlib.import_module(module_path)
        sub = names.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    parser.set_defaults(handler=_default_bench(parser))


def _default_bench(parser: argparse.ArgumentParser) -> Any:
    def handler(args: argparse.Namespace) -> int:
        if DEFAULT_BENCH not in BENCHES:
            parser.print_help()
            return 2
        module = importlib.import_module(BENCHES[DEFAULT_BENCH])
        return int(module.run(args))

    return handler
