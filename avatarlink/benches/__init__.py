"""Benchmarks behind ``avatarlink bench [NAME]``; one module per benchmark.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Register a new one in
:data:`BENCHES`. Benchmarks report medians and spreads and compare alternatives in the same run.
"""

from __future__ import annotations

# name -> module path. "pipeline" is what a bare ``avatarlink bench`` runs.
BENCHES: dict[str, str] = {
    "pipeline": "avatarlink.benches.pipeline",
    "decode": "avatarlink.benches.decode",
    "tracking": "avatarlink.benches.tracking",
    "blazepose": "avatarlink.benches.blazepose",
    "preview": "avatarlink.benches.preview",
    "retarget": "avatarlink.benches.retarget",
    "smoothing": "avatarlink.benches.smoothing",
    "streaming": "avatarlink.benches.streaming",
}
