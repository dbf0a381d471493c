"""Checks of a converted model: ONNX Runtime vs the original runtime, fp16 file vs fp32 file.

Only numpy and onnxruntime are used here; the original runtime comes in as a
:class:`references.Reference`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from specs import ModelSpec

RANGES = {"0..255": (0.0, 255.0), "0..1": (0.0, 1.0), "-1..1": (-1.0, 1.0)}


def session(model: Path | bytes) -> ort.InferenceSession:
    """A single-threaded CPU session with ONNX Runtime's default (full) graph optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def image_input(spec: ModelSpec, rgb: np.ndarray) -> np.ndarray:
    """Scale an RGB image already resized to the input size, (H, W, 3) float 0..255, to the
    model's value range and dtype; returns (1, H, W, 3)."""
    lo, hi = RANGES[spec.input_range]
    if spec.input_dtype == "int32":
        return np.round(rgb)[None].astype(np.int32)
    scaled = lo + rgb.astype(np.float64) * ((hi - lo) / 255.0)
    return scaled[None].astype(spec.input_dtype)


def random_input(spec: ModelSpec, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Uniform noise over the model's input range, (1, H, W, 3)."""
    lo, hi = RANGES[spec.input_range]
    shape = (1, size[0], size[1], 3)
    if spec.input_dtype == "int32":
        return rng.integers(int(lo), int(hi) + 1, size=shape, dtype=np.int32)
    return rng.uniform(lo, hi, size=shape).astype(spec.input_dtype)


@dataclass(frozen=True)
class Diff:
    """Max differences of one output: absolute, and relative to the reference's max magnitude."""

    max_abs: float
    max_rel: float


def compare(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> list[Diff]:
    """Per-output max abs / relative difference; shapes must match exactly."""
    diffs = []
    for ref, out in zip(reference, actual, strict=True):
        if ref.shape != out.shape:
            raise AssertionError(f"shape {out.shape} != reference {ref.shape}")
        abs_diff = float(np.max(np.abs(ref.astype(np.float64) - out.astype(np.float64))))
        scale = float(np.max(np.abs(ref))) or 1.0
        diffs.append(Diff(abs_diff, abs_diff / scale))
    return diffs


def run_onnx(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of ``sess`` in graph order."""
    return [np.asarray(o) for o in sess.run(None, dict(feeds))]


def bit_identical(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    """True when every output has the same shape, dtype and bytes."""
    return all(
        x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for x, y in zip(a, b, strict=True)
    )
