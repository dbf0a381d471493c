"""PoseNet (MobileNetV1 x0.75, single pose) adapter: decode in numpy or inside the ONNX graph.

Model contract (models/MODELS.md): input ``image`` float32 (1, H, W, 3) RGB in [-1, 1] with H and W
any ``16 n + 1``; outputs ``heatmap`` (1, H', W', 17) logits, ``offsets`` (1, H', W', 34) (17 dy
then 17 dx, input pixels) and two displacement maps (multi-pose only, unused here); output stride
16, so H' = (H - 1) / 16 + 1.

Decoding (see :mod:`avatarlink.decode` for the coordinate convention):

- ``decode="fused"``: the sibling file ``posenet_mobilenet_fused.onnx`` (built by
  :mod:`avatarlink.fuse`) returns only (17, 3) = y, x, score in input pixels; only the letterbox
  back to source pixels runs in numpy. With ``io_binding=True`` the output is bound on the
  provider's device and only those 204 bytes are copied to the host.
- ``decode="numpy"``: the raw model hands back heatmap and offsets, decoded by
  :func:`avatarlink.decode.decode_posenet` with any ``method`` (``offsets`` or a heatmap-only
  refinement of :data:`avatarlink.decode.REFINE_METHODS`).
- ``decode="auto"``: fused when the method is ``offsets`` and the fused file is present, else numpy.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink.decode import REFINE_METHODS, RefineSettings, decode_posenet
from avatarlink.errors import ConfigError, ModelError
from avatarlink.fuse import FUSED_OUTPUT, fused_path
from avatarlink.models.base import EstimateResult, keypoints_2d, stage_timings
from avatarlink.models.movenet import DetectionThresholds
from avatarlink.models.registry import ModelSpec
from avatarlink.preprocess import Box, Letterbox, letterbox_image
from avatarlink.session import InferenceSession, SessionOptions
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import ImageArray, Keypoints, Space

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

STRIDE = 16
"""Output stride: input pixels per heatmap cell."""

MIN_SIZE = 129
MAX_SIZE = 1025
"""Input sizes (pixels, each side) accepted: ``16 n + 1`` within [MIN_SIZE, MAX_SIZE]."""

COMMON_SIZES = (257, 353, 385, 449, 513, 641, 721)
"""The sizes the resolution study covers (docs/decoding.md)."""

METHODS = ("offsets", *REFINE_METHODS)
"""Decode methods: PoseNet's offsets, or heatmap-only peak refinement."""

DECODES = ("auto", "fused", "numpy")

PIXEL_SCALE = 127.5
"""Input normalisation: ``rgb / PIXEL_SCALE - 1`` maps 0..255 to [-1, 1]."""


def valid_sizes() -> tuple[int, ...]:
    """Every input side length PoseNet takes here: 129, 145, ..., 1025."""
    return tuple(range(MIN_SIZE, MAX_SIZE + 1, STRIDE))


def check_input_size(value: object) -> tuple[int, int]:
    """Validate ``input_size`` (an int, or (width, height)); returns (width, height).

    Raises:
        ConfigError: naming the bad value and listing the valid sizes.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2:
        sides = list(value)
    else:
        sides = [value, value]
    valid = valid_sizes()
    for side in sides:
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)):
            raise ConfigError(
                f"PoseNet input_size must be an int or (width, height) of ints, got {value!r}; "
                f"valid sizes: {', '.join(map(str, valid))}"
            )
        if int(side) not in valid:
            below = max((s for s in valid if s < side), default=valid[0])
            above = min((s for s in valid if s > side), default=valid[-1])
            raise ConfigError(
                f"PoseNet input_size {value!r} is not valid: each side must be 16*n + 1 pixels "
                f"between {MIN_SIZE} and {MAX_SIZE} (nearest to {side}: {below} or {above}); "
                f"valid sizes: {', '.join(map(str, valid))}"
            )
    return int(sides[0]), int(sides[1])


def to_model_input(rgb: npt.NDArray[np.uint8]) -> FloatArray:
    """RGB uint8 (H, W, 3) to the model's float32 (1, H, W, 3) in [-1, 1]."""
    batch: FloatArray = (rgb[None].astype(np.float32) / np.float32(PIXEL_SCALE)) - np.float32(1.0)
    return batch


def yxs_to_keypoints(
    yxs: FloatArray, letterbox: Letterbox, thresholds: DetectionThresholds
) -> Keypoints:
    """(17, 3) y, x (model-input pixels), score to :class:`Keypoints` in source pixels."""
    xy = letterbox.to_source(yxs[None, :, 1::-1])  # (1, 17, 2) x, y
    score = np.ascontiguousarray(yxs[None, :, 2], dtype=np.float32)
    if not float(score.mean()) >= thresholds.person:
        return Keypoints.empty(KeypointLayout.COCO17, Space.IMAGE)
    return keypoints_2d(xy, score, KeypointLayout.COCO17, thresholds.keypoint)


class PoseNetEstimator:
    """Single-person PoseNet: letterbox -> model -> decode -> source pixels.

    Args:
        spec: registry entry (its ``file`` is the raw model; the fused one sits beside it).
        options: device and threads.
        input_size: side length, or (width, height), each ``16 n + 1``; default ``spec.input_size``.
        method: one of :data:`METHODS`.
        decode: one of :data:`DECODES`.
        thresholds: keypoint and person score thresholds.
        refine: tuning of the heatmap-only methods.
        io_binding: fused decode only: bind the output on the provider's device and copy the
            (17, 3) result to the host (the way to keep the maps on a GPU).
    """

    layout = KeypointLayout.COCO17

    def __init__(
        self,
        spec: ModelSpec,
        options: SessionOptions,
        input_size: int | tuple[int, int] | None = None,
        method: str = "offsets",
        decode: str = "auto",
        thresholds: DetectionThresholds | None = None,
        refine: RefineSettings | None = None,
        io_binding: bool = False,
    ) -> None:
        self.name = spec.name
        self.width, self.height = check_input_size(
            input_size if input_size is not None else spec.input_size
        )
        if method not in METHODS:
            raise ConfigError(f"PoseNet method must be one of {', '.join(METHODS)}, got {method!r}")
        if decode not in DECODES:
            raise ConfigError(f"PoseNet decode must be one of {', '.join(DECODES)}, got {decode!r}")
        fused_file = fused_path(spec.path)
        if decode == "fused" and method != "offsets":
            raise ConfigError(
                f"decode='fused' implements method 'offsets' only, got method {method!r}; "
                "use decode='numpy' for heatmap refinement"
            )
        if decode == "fused" and not fused_file.is_file():
            raise ModelError(
                f"fused PoseNet model not found: {fused_file}; build it with "
                f"`python -m avatarlink.fuse {spec.path}` (needs the onnx package) or "
                "use decode='numpy'"
            )
        if decode == "auto":
            decode = "fused" if method == "offsets" and fused_file.is_file() else "numpy"
            log.debug("PoseNet decode=auto chose %s", decode)
        self.method = method
        self.decode = decode
        self.thresholds = thresholds or DetectionThresholds()
        self.refine = refine or RefineSettings()
        self.io_binding = io_binding
        self.session = InferenceSession(fused_file if decode == "fused" else spec.path, options)
        self.input_name = self.session.inputs[0].name
        if decode == "fused" and FUSED_OUTPUT not in self.session.output_names:
            raise ModelError(f"{fused_file}: no {FUSED_OUTPUT!r} output; rebuild it")
        if decode == "numpy":
            missing = {"heatmap", "offsets"} - set(self.session.output_names)
            if missing:
                raise ModelError(f"{spec.path}: missing outputs {sorted(missing)}")

    @property
    def provider(self) -> str:
        """The execution provider in use."""
        return self.session.provider

    def reset(self) -> None:
        """Single-pose PoseNet keeps no state."""

    def infer(self, batch: FloatArray) -> FloatArray:
        """Model + decode on one prepared input: (17, 3) y, x (input pixels), score."""
        if self.decode == "fused":
            if self.io_binding:
                return run_bound(self.session, self.input_name, batch)
            out = self.session.run({self.input_name: batch}, (FUSED_OUTPUT,))[FUSED_OUTPUT]
            return np.asarray(out, np.float32)
        raw = self.session.run({self.input_name: batch}, ("heatmap", "offsets"))
        return decode_posenet(raw["heatmap"], raw["offsets"], self.method, STRIDE, self.refine)

    def estimate(self, image: ImageArray, region: Box | None = None) -> EstimateResult:
        """Keypoints (1 or 0 persons, 17 points) in source pixels of ``image``."""
        t0 = time.perf_counter()
        rgb, lb = letterbox_image(image, self.width, self.height, region)
        batch = to_model_input(rgb)
        t1 = time.perf_counter()
        if self.decode == "fused":
            yxs = self.infer(batch)
            t2 = time.perf_counter()
        else:
            raw = self.session.run({self.input_name: batch}, ("heatmap", "offsets"))
            t2 = time.perf_counter()
            yxs = decode_posenet(raw["heatmap"], raw["offsets"], self.method, STRIDE, self.refine)
        keypoints = yxs_to_keypoints(yxs, lb, self.thresholds)
        t3 = time.perf_counter()
        return EstimateResult(keypoints, None, stage_timings(t0, t1, t2, t3))


def binding_device(session: InferenceSession) -> str:
    """ONNX Runtime device type that holds the outputs of ``session``'s provider."""
    return (
        "cuda"
        if session.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        else "cpu"
    )


def run_bound(session: InferenceSession, input_name: str, batch: FloatArray) -> FloatArray:
    """Run a fused model with IO binding: output kept on the device, (17, 3) copied to the host."""
    raw: Any = session.raw
    binding = raw.io_binding()
    binding.bind_cpu_input(input_name, batch)
    binding.bind_output(FUSED_OUTPUT, binding_device(session))
    raw.run_with_iobinding(binding)
    out = binding.copy_outputs_to_cpu()[0]
    return np.asarray(out, np.float32)
