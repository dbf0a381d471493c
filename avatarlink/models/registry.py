"""The single model registry: name -> file, input, keypoint layout and the decoding adapter."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatarlink.errors import ModelError
from avatarlink.models.base import PoseEstimator
from avatarlink.session import SessionOptions
from avatarlink.skeletons import KeypointLayout
from avatarlink.tracking import CropTrackingConfig

DEFAULT_MODEL = "movenet-lightning"


@dataclass(frozen=True)
class ModelSpec:
    """One shipped model.

    Attributes:
        name: registry name used on the command line (``--model``).
        file: file name under :func:`models_dir`.
        adapter: ``"module:Class"`` of the estimator; the class is built as
            ``Class(spec, session_options, **options)``.
        input_size: default (width, height) of the model input in pixels.
        layout: keypoint set the model outputs.
        description: one line for ``avatarlink models``.
        crop_tracking: a single-pose model that gains from crop tracking (``tracking=`` option of
            :func:`create_estimator`).
        multi_person: the adapter finds several people (takes ``max_persons``).
    """

    name: str
    file: str
    adapter: str
    input_size: tuple[int, int]
    layout: KeypointLayout
    description: str
    crop_tracking: bool = False
    multi_person: bool = False

    @property
    def path(self) -> Path:
        """Absolute path of the model file."""
        return models_dir() / self.file


_MOVENET = "avatarlink.models.movenet:MoveNetEstimator"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "movenet-lightning",
            "movenet_lightning.onnx",
            _MOVENET,
            (192, 192),
            KeypointLayout.COCO17,
            "MoveNet SinglePose Lightning: fastest, 17 COCO points",
            crop_tracking=True,
        ),
        ModelSpec(
            "movenet-thunder",
            "movenet_thunder.onnx",
            _MOVENET,
            (256, 256),
            KeypointLayout.COCO17,
            "MoveNet SinglePose Thunder: more accurate, 17 COCO points",
            crop_tracking=True,
        ),
        ModelSpec(
            "movenet-multipose",
            "movenet_multipose.onnx",
            "avatarlink.models.movenet_multipose:MoveNetMultiPoseEstimator",
            (256, 256),
            KeypointLayout.COCO17,
            "MoveNet MultiPose Lightning: up to 6 people with stable ids, 17 COCO points",
            multi_person=True,
        ),
        ModelSpec(
            "posenet",
            "posenet_mobilenet.onnx",
            "avatarlink.models.posenet:PoseNetEstimator",
            (257, 257),
            KeypointLayout.COCO17,
            "PoseNet MobileNetV1 0.75: any 16n+1 input (input_size=...), decode fused in the graph",
            crop_tracking=True,
        ),
        ModelSpec(
            "blazepose-full",
            "blazepose_full.onnx",
            "avatarlink.models.blazepose:BlazePoseEstimator",
            (256, 256),
            KeypointLayout.BLAZEPOSE33,
            "BlazePose full + person detector: 33 points, world metres, ROI tracking",
            multi_person=True,
        ),
        ModelSpec(
            "blazepose-lite",
            "blazepose_lite.onnx",
            "avatarlink.models.blazepose:BlazePoseEstimator",
            (256, 256),
            KeypointLayout.BLAZEPOSE33,
            "BlazePose lite + person detector: fastest BlazePose, 33 points, world metres",
            multi_person=True,
        ),
        ModelSpec(
            "blazepose-heavy",
            "blazepose_heavy.onnx",
            "avatarlink.models.blazepose:BlazePoseEstimator",
            (256, 256),
            KeypointLayout.BLAZEPOSE33,
            "BlazePose heavy + person detector: most accurate BlazePose, 33 points, world metres",
            multi_person=True,
        ),
    )
}


def models_dir() -> Path:
    """Folder holding the ONNX files: ``$AVATARLINK_MODELS_DIR`` or the checkout's ``models/``."""
    env = os.environ.get("AVATARLINK_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; ``ModelError`` lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(MODELS)}") from None


def create_estimator(
    name: str,
    options: SessionOptions | None = None,
    tracking: CropTrackingConfig | None = None,
    max_persons: int | None = None,
    **adapter_options: Any,
) -> PoseEstimator:
    """Build the estimator for a registered model (loads its ONNX session).

    Args:
        name: registry name.
        options: device and threads.
        tracking: crop tracking for single-pose models (``spec.crop_tracking``); ignored by
            models that find people themselves, and off when None or ``tracking.crop`` is false.
        max_persons: for multi-person models, report at most this many people (>= 1).
        adapter_options: keyword options of the model's adapter class.
    """
    spec = get_spec(name)
    if max_persons is not None:
        if max_persons < 1:
            raise ModelError(f"max_persons must be >= 1, got {max_persons}")
        if spec.multi_person:
            adapter_options["max_persons"] = max_persons
    module_name, _, class_name = spec.adapter.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    estimator: PoseEstimator = cls(spec, options or SessionOptions(), **adapter_options)
    if tracking is not None and tracking.crop and spec.crop_tracking:
        from avatarlink.tracking import CropTrackedEstimator

        estimator = CropTrackedEstimator(estimator, tracking)
    return estimator
