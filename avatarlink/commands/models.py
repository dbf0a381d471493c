"""``avatarlink models [--bench]``: list the shipped models; optionally time them here."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from avatarlink.commands.common import add_session_arguments, session_options

# Stages that are model inference (the rest, e.g. preprocess/decode/postprocess, is "other").
MODEL_STAGES = frozenset({"inference", "detector", "landmark"})


def register(subparsers: Any) -> None:
    """Add the ``models`` subcommand."""
    parser = subparsers.add_parser(
        "models",
        help="list the shipped models (with --bench: execution provider and median ms here)",
        description="List the models in the registry; --bench loads each and times it.",
    )
    add_session_arguments(parser)
    parser.add_argument("--bench", action="store_true", help="load and time each model")
    parser.add_argument("--frames", type=int, default=50, help="timed runs per model (--bench)")
    parser.add_argument("--only", help="comma-separated model names to include")
    parser.add_argument("--json", dest="json_out", help="write the table as JSON here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """List (and optionally benchmark) the registered models."""
    from avatarlink.models.registry import MODELS

    names = args.only.split(",") if args.only else list(MODELS)
    rows = []
    for name in names:
        spec = MODELS.get(name)
        if spec is None:
            from avatarlink.errors import ModelError

            raise ModelError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
        path = spec.path
        row: dict[str, Any] = {
            "name": name,
            "file": spec.file,
            "mb": round(path.stat().st_size / 1e6, 1) if path.is_file() else None,
            "input": f"{spec.input_size[0]}x{spec.input_size[1]}",
            "layout": spec.layout.value,
            "description": spec.description,
        }
        if args.bench and path.is_file():
            row.update(_bench(name, args))
        rows.append(row)
    _print_table(rows, args.bench)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


def _bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from avatarlink.models.registry import create_estimator
    from avatarlink.sources import SAMPLE_IMAGE, read_image

    t0 = time.perf_counter()
    estimator = create_estimator(name, session_options(args))
    load_ms = (time.perf_counter() - t0) * 1e3
    photo = read_image(SAMPLE_IMAGE)
    frame = np.zeros((720, 1280, 3), np.uint8)  # a 720p frame with the photo in it
    frame[104:616, 384:896] = photo
    for _ in range(3):
        estimator.estimate(frame)
    stages: dict[str, list[float]] = {"model": [], "other": []}
    for _ in range(max(1, args.frames)):
        result = estimator.estimate(frame)
        model_ms = other_ms = 0.0
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
            if stage in MODEL_STAGES:
                model_ms += ms
            else:
                other_ms += ms
        stages["model"].append(model_ms)
        stages["other"].append(other_ms)
    out: dict[str, Any] = {"provider": estimator.provider, "load_ms": round(load_ms, 1)}
    for stage, values in stages.items():
        out[f"{stage}_ms"] = round(statistics.median(values), 3)
        out[f"{stage}_ms_p90"] = round(float(np.percentile(values, 90)), 3)
    return out


def _print_table(rows: list[dict[str, Any]], bench: bool) -> None:
    header = f"{'model':<20} {'MB':>6} {'input':>9} {'layout':<12}"
    if bench:
        header += f" {'provider':<24} {'model ms':>9} {'other ms':>9} {'(p90)':>7}"
    print(header)
    for row in rows:
        mb = f"{row['mb']:.1f}" if row["mb"] is not None else "missing"
        line = f"{row['name']:<20} {mb:>6} {row['input']:>9} {row['layout']:<12}"
        if bench and "provider" in row:
            line += (
                f" {row['provider']:<24} {row['model_ms']:>9.2f} {row['other_ms']:>9.3f}"
                f" {row['other_ms_p90']:>7.3f}"
            )
        print(line)
