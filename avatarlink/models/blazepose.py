"""BlazePose: person detector + landmark model, ROI tracking, 33 image and world keypoints.

Pipeline per frame (MediaPipe Pose's graph, re-implemented on ONNX Runtime):

1. Detection (only when needed): :class:`~avatarlink.models.blazepose_detector.PoseDetector` finds
   people; each detection gives a rotated square ROI centred on the mid-hip, upright along the
   hip -> full-body-point vector (see :mod:`avatarlink.roi`). With ``max_persons`` > 1 the
   detector also searches overlapping tiles, since it favours the most prominent person.
2. Landmarks: the ROI is cropped to 256 x 256 RGB in [0, 1] (edge pixels replicated outside the
   frame); the model returns 39 points (33 BlazePose points + 2 auxiliary ROI points + 4 unused) in
   crop pixels, refined on the 64 x 64 heatmaps (:func:`refine_from_heatmap`) and mapped back to
   the source with the inverse affine; world landmarks; a pose flag.
3. Tracking: the next frame's ROI comes from this frame's auxiliary points 33 (hip centre) and 34
   (full-body point). The detector runs again only when a track is lost (flag below the threshold,
   ROI mostly outside the frame, degenerate landmarks) or, with ``max_persons > 1``, every
   ``redetect_interval`` frames while fewer people than allowed are tracked. Identities are kept
   with IoU matching (tracked ROIs vs detections, and recently lost tracks vs new detections).

Model contract (models/MODELS.md): input ``input`` float32 (1, 256, 256, 3) RGB in [0, 1]; outputs
by name: ``landmarks`` (1, 195) = 39 x (x, y, z, visibility logit, presence logit), x, y, z in input
pixels, z negative towards the camera; ``pose_flag`` (1, 1) probability; ``world_landmarks``
(1, 117) = 39 x (x, y, z) metres; ``heatmap`` (1, 64, 64, 39), logits in the ``full`` file
(converted from .tflite) and probabilities in ``lite``/``heavy`` (from TF.js). Other outputs are
ignored; the shipped files have no ``segmentation`` output (the person mask is not converted, see
models/MODELS.md). The detector file sits next to the landmark file.

Timings (``EstimateResult.timings_ms``, ms): ``preprocess`` (letterbox and crops), ``detector``
and ``landmark`` (model runs), ``postprocess`` (everything else: decoding, NMS, refinement,
ROIs, tracking). :attr:`BlazePoseEstimator.stats` counts frames and detector passes.

Outputs of :meth:`BlazePoseEstimator.estimate`:

- ``image``: (P, 33, 3) source pixels x, y and z, where z is the model's relative depth scaled to
  source pixels (MediaPipe's sign: smaller = nearer the camera); ``score`` = landmark visibility in
  [0, 1]; ``person_score`` = pose flag; ``ids`` = track ids. Every point has a position (BlazePose
  predicts occluded points too); low visibility marks the unreliable ones.
- ``world``: (P, 33, 3) metres in avatarlink's world frame (:mod:`avatarlink.types`: right-handed,
  +X to the camera's right, +Y up, +Z towards the camera), origin exactly at the mid-point of the
  two hips. MediaPipe's world landmarks are x right, y down, z away from the camera, relative to the
  upright ROI; they are first rotated by the ROI rotation about the camera axis (as MediaPipe's
  WorldLandmarkProjectionCalculator does), then converted with (x, y, z) -> (x, -y, -z), a
  180-degree turn about X (so handedness is kept), then re-centred on the hip mid-point.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import numpy.typing as npt

from avatarlink.decode import Activation, quadratic_offsets, sigmoid
from avatarlink.errors import ConfigError, ModelError
from avatarlink.models.base import EstimateResult
from avatarlink.models.blazepose_detector import Detections, DetectorConfig, PoseDetector
from avatarlink.models.registry import ModelSpec
from avatarlink.preprocess import Box, check_image
from avatarlink.roi import RotatedRect, box_iou, crop_rotated, roi_from_alignment_points
from avatarlink.session import InferenceSession, SessionOptions
from avatarlink.skeletons import BlazePose33, KeypointLayout, blazepose_to_coco_indices
from avatarlink.types import FloatArray, ImageArray, Keypoints, Space

log = logging.getLogger(__name__)

NUM_LANDMARKS = 33
NUM_MODEL_LANDMARKS = 39
AUX_HIP_CENTER, AUX_FULL_BODY = 33, 34
_HIPS = np.array([BlazePose33.LEFT_HIP, BlazePose33.RIGHT_HIP])

# Output names: the converted files use the first name; the second is the TF.js signature name.
_OUTPUT_NAMES = {
    "landmarks": ("landmarks", "ld_3d"),
    "pose_flag": ("pose_flag", "output_poseflag"),
    "world_landmarks": ("world_landmarks", "world_3d"),
}
_HEATMAP_NAMES = ("heatmap", "activation_heatmap")
HEATMAP_REFINE_METHODS = ("none", "quadratic")
# The TF.js exports (lite, heavy) apply the sigmoid inside the graph; the tflite export (full) not.
_HEATMAP_PROBABILITIES = frozenset({"blazepose-lite", "blazepose-heavy"})


@dataclass(frozen=True)
class BlazePoseConfig:
    """Tuning of the BlazePose pipeline.

    Attributes:
        max_persons: track at most this many people (one ROI each), >= 1.
        tracking: reuse the previous frame's landmarks for the next ROI; False runs the detector
            on every frame (static images).
        pose_flag_threshold: a landmark result with a pose flag below it means "no person here"
            and ends the track, in [0, 1].
        min_frame_overlap: a track whose ROI overlaps the frame less than this is dropped (the
            person left), in [0, 1]; the overlap is the intersection over the smaller of the ROI
            and frame areas (:meth:`~avatarlink.roi.RotatedRect.frame_overlap`), so a close-up
            ROI larger than the frame still counts as inside.
        min_roi_size: ROIs with a smaller side (source pixels) are degenerate: such a track is
            dropped and such a detection ignored, >= 0.
        redetect_interval: frames between detector runs while at least one but fewer than
            ``max_persons`` people are tracked (never with ``max_persons`` = 1), >= 1.
        match_iou: IoU (axis-aligned ROI bounds) above which a detection is the same person as a
            tracked or recently lost one.
        duplicate_iou: IoU above which two tracks have converged on one person (the weaker goes).
        id_memory_frames: how many frames a lost track's id can be given back to a re-detected
            person at the same place.
        region_margin: with an explicit person region, the detector sees the region enlarged by
            this factor about its centre (context around a tight box), >= 1.
        region_refinements: with an explicit region, how many times the landmark model runs
            again on the ROI from its own auxiliary points (what tracking does on the next frame);
            each costs one landmark-model run, >= 0.
        heatmap_refine: refinement of the 33 image points from the model's 64 x 64 heatmaps
            (:func:`refine_from_heatmap`): ``quadratic`` or ``none``.
        heatmap_window_cells: search radius around each regressed point, heatmap cells
            (3 = MediaPipe's 7 x 7 refinement kernel), >= 0.
        heatmap_min_score: a point is refined only where its peak probability reaches this, in
            [0, 1] (MediaPipe's min_confidence_to_refine).
        detector_tiles: with ``max_persons`` > 1, also run the detector on a tiles x tiles grid
            of overlapping windows (:meth:`~avatarlink.models.blazepose_detector.PoseDetector.
            detect_tiled`) to find people beside the most prominent one; 0 = the whole frame
            only. Costs tiles^2 extra detector runs per detection; unused with one person.
        detector_file: the detector model, next to the landmark model.
        detector: anchor and decoding settings of the detector.
    """

    max_persons: int = 1
    tracking: bool = True
    pose_flag_threshold: float = 0.5
    min_frame_overlap: float = 0.25
    min_roi_size: float = 8.0
    redetect_interval: int = 10
    match_iou: float = 0.3
    duplicate_iou: float = 0.5
    id_memory_frames: int = 30
    region_margin: float = 1.25
    region_refinements: int = 1
    heatmap_refine: str = "none"
    heatmap_window_cells: int = 3
    heatmap_min_score: float = 0.5
    detector_tiles: int = 2
    detector_file: str = "pose_detection.onnx"
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if self.max_persons < 1:
            raise ConfigError(f"blazepose.max_persons must be >= 1, got {self.max_persons}")
        if self.redetect_interval < 1:
            raise ConfigError(
                f"blazepose.redetect_interval must be >= 1 frame, got {self.redetect_interval}"
            )
        for name in (
            "region_refinements",
            "heatmap_window_cells",
            "detector_tiles",
            "min_roi_size",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"blazepose.{name} must be >= 0, got {getattr(self, name)}")
        if self.heatmap_refine not in HEATMAP_REFINE_METHODS:
            raise ConfigError(
                f"blazepose.heatmap_refine must be one of {', '.join(HEATMAP_REFINE_METHODS)}, "
                f"got {self.heatmap_refine!r}"
            )
        if self.region_margin < 1.0:
            raise ConfigError(f"blazepose.region_margin must be >= 1, got {self.region_margin}")
        for name in (
            "pose_flag_threshold",
            "min_frame_overlap",
            "match_iou",
            "duplicate_iou",
            "heatmap_min_score",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"blazepose.{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class PoseLandmarks:
    """One person's landmark-model result.

    Attributes:
        xyz: float32 (39, 3) source pixels x, y and relative depth z (source-pixel scale); rows
            0..32 are BlazePose-33, 33..34 the auxiliary ROI points.
        visibility: float32 (39,) probability that each point is visible, in [0, 1].
        presence: float32 (39,) probability that each point is inside the frame, in [0, 1].
        world: float32 (33, 3) metres, avatarlink world frame, origin at the hip mid-point.
        flag: pose-present probability in [0, 1].
        roi: the ROI the model ran on.
    """

    xyz: FloatArray
    visibility: FloatArray
    presence: FloatArray
    world: FloatArray
    flag: float
    roi: RotatedRect

    @property
    def finite(self) -> bool:
        """All positions used downstream (33 points, 2 auxiliary, world) are finite."""
        return bool(
            np.isfinite(self.xyz[: AUX_FULL_BODY + 1]).all() and np.isfinite(self.world).all()
        )

    def next_roi(self, scale: float = 1.25) -> RotatedRect:
        """The next frame's ROI from the auxiliary points (hip centre -> full-body point)."""
        return roi_from_alignment_points(
            self.xyz[AUX_HIP_CENTER, :2], self.xyz[AUX_FULL_BODY, :2], scale
        )


def world_to_avatarlink(world: npt.ArrayLike, rotation: float) -> FloatArray:
    """MediaPipe world landmarks of an ROI -> avatarlink world frame, hip-centred.

    Args:
        world: (K, 3) metres, MediaPipe axes relative to the upright ROI (x right, y down, z away
            from the camera); K >= 25 so both hips are present.
        rotation: the ROI rotation in radians (:class:`~avatarlink.roi.RotatedRect`).

    Returns:
        float32 (K, 3) metres: +X camera's right, +Y up, +Z towards the camera, origin at the
        mid-point of the hips (BlazePose points 23 and 24).
    """
    w = np.asarray(world, np.float64)
    c, s = math.cos(rotation), math.sin(rotation)
    x = c * w[:, 0] - s * w[:, 1]
    y = s * w[:, 0] + c * w[:, 1]
    out = np.stack([x, -y, -w[:, 2]], axis=1)
    out -= out[_HIPS].mean(axis=0)
    return out.astype(np.float32)


def decode_landmarks(
    landmarks: npt.ArrayLike,
    world: npt.ArrayLike,
    flag: float,
    roi: RotatedRect,
    input_size: int,
    uv: FloatArray | None = None,
) -> PoseLandmarks:
    """Raw landmark-model outputs of one crop -> :class:`PoseLandmarks` in source pixels.

    Args:
        landmarks: (195,) = 39 x (x, y, z, visibility logit, presence logit), crop pixels.
        world: (117,) = 39 x (x, y, z) metres, MediaPipe axes relative to the ROI.
        flag: pose-present probability.
        roi: the ROI the crop was taken from.
        input_size: crop side in pixels (256).
        uv: float32 (39, 2) crop x, y to use instead of the regressed ones (e.g. refined).
    """
    raw = np.asarray(landmarks, np.float32).reshape(NUM_MODEL_LANDMARKS, 5)
    xy = roi.to_source(raw[:, :2] if uv is None else uv, input_size)
    z = raw[:, 2:3] * np.float32(roi.size / input_size)
    xyz = np.concatenate([xy, z], axis=1).astype(np.float32)
    world_xyz = np.asarray(world, np.float32).reshape(NUM_MODEL_LANDMARKS, 3)[:NUM_LANDMARKS]
    return PoseLandmarks(
        xyz=xyz,
        visibility=sigmoid(raw[:, 3]),
        presence=sigmoid(raw[:, 4]),
        world=world_to_avatarlink(world_xyz, roi.rotation),
        flag=float(flag),
        roi=roi,
    )


def refine_from_heatmap(
    uv: FloatArray,
    heatmap: npt.ArrayLike,
    input_size: int,
    activation: Activation = "logit",
    window_cells: int = 3,
    min_score: float = 0.5,
    max_shift: float = 0.5,
) -> FloatArray:
    """Move the regressed crop points onto their local heatmap peaks (MediaPipe's refinement).

    For each of the 33 points, the heatmap cells within ``window_cells`` of the regressed point
    are searched for their maximum; where its probability reaches ``min_score``, the point moves
    to that peak, located to a fraction of a cell by one Newton step on the log-probability
    (:func:`avatarlink.decode.quadratic_offsets`). Elsewhere (occluded points, weak peaks) the
    regression stays. Only 33 small windows are read, not the whole heatmap.

    Args:
        uv: float32 (N >= 33, 2) crop pixels (corner convention) from the regression.
        heatmap: (H, W, C >= 33) heatmaps of the crop; cell i is centred on crop pixel
            coordinate ``i * s`` with s = input_size / W (no half-cell offset: MediaPipe's own
            refinement reads cell i as ``i / W`` of the crop, and the peaks of real crops agree
            with the regressed points only this way).
        input_size: crop side in pixels.
        activation: ``logit`` or ``prob`` (what the heatmap values are).
        window_cells: search radius, cells (3 = MediaPipe's 7 x 7 kernel).
        min_score: peak probability needed to refine.
        max_shift: largest sub-cell step, cells.

    Returns:
        float32 (N, 2) crop pixels; rows beyond 33 unchanged.
    """
    hm = np.asarray(heatmap, np.float32)
    h, w = hm.shape[:2]
    k = NUM_LANDMARKS
    stride = np.array([input_size / h, input_size / w], np.float32)  # (y, x) pixels per cell
    out = np.array(uv, np.float32, copy=True)
    finite = np.isfinite(out[:k]).all(axis=1)
    centre = np.rint(np.nan_to_num(out[:k, ::-1]) / stride).astype(np.int64)  # (k, 2) row, col
    # Read one extra ring so a peak at the window's edge still has its 3 x 3 neighbourhood.
    offsets = np.arange(-window_cells - 1, window_cells + 2)
    n = len(offsets)
    rows = np.clip(centre[:, :1] + offsets, 0, h - 1)  # (k, n)
    cols = np.clip(centre[:, 1:] + offsets, 0, w - 1)  # (k, n)
    chan = np.arange(k)
    patch = hm[rows[:, :, None], cols[:, None, :], chan[:, None, None]]  # (k, n, n)
    search = patch.copy()
    search[:, [0, -1], :] = -np.inf
    search[:, :, [0, -1]] = -np.inf
    best = search.reshape(k, n * n).argmax(axis=1)
    local = np.stack([best // n, best % n], axis=1)
    peak = patch.reshape(k, n * n)[chan, best]
    if activation == "logit":
        score = sigmoid(peak)
        logp = -np.logaddexp(np.float32(0.0), -patch)
    else:
        score = peak
        logp = np.log(np.maximum(patch, np.float32(1e-10)))
    step = quadratic_offsets(np.moveaxis(logp, 0, -1).astype(np.float32), local, max_shift)
    cell = np.stack([rows[chan, local[:, 0]], cols[chan, local[:, 1]]], axis=1)
    # No step across the heatmap's own border (the clipped ring repeats the edge cells there).
    inner = (cell > 0) & (cell < np.array([h - 1, w - 1]))
    cell = cell + np.where(inner, step, 0.0)
    refined = (cell * stride)[:, ::-1]
    use = finite & (score >= min_score)
    out[:k][use] = refined[use]
    return out


def blazepose_to_coco17(keypoints: Keypoints) -> Keypoints:
    """The COCO-17 subset of BlazePose-33 keypoints (same persons, space, scores and ids)."""
    if keypoints.layout is not KeypointLayout.BLAZEPOSE33:
        raise ValueError(f"expected blazepose33 keypoints, got {keypoints.layout.value}")
    idx = blazepose_to_coco_indices()
    return Keypoints(
        np.ascontiguousarray(keypoints.xyz[:, idx]),
        np.ascontiguousarray(keypoints.score[:, idx]),
        KeypointLayout.COCO17,
        keypoints.space,
        keypoints.person_score,
        keypoints.ids,
    )


@dataclass
class _Track:
    """A tracked person (mutable tracker state)."""

    track_id: int
    roi: RotatedRect


@dataclass
class _LostTrack:
    track_id: int
    bounds: FloatArray  # (4,) last ROI bounds x0, y0, x1, y1
    frame: int


@dataclass(frozen=True)
class TrackerStats:
    """Counts since the last reset: ``frames`` processed and ``detector_runs``."""

    frames: int
    detector_runs: int


DetectFn = Callable[[ImageArray, Box | None], Detections]
LandmarkFn = Callable[[ImageArray, RotatedRect], PoseLandmarks | None]


class PoseTracker:
    """ROI tracking and identities over frames, independent of the models.

    Args:
        config: the pipeline settings.
        detect: ``detect(image, region)`` -> detections in source pixels.
        landmark: ``landmark(image, roi)`` -> the landmark result for the ROI (None on failure).
    """

    def __init__(self, config: BlazePoseConfig, detect: DetectFn, landmark: LandmarkFn) -> None:
        self.config = config
        self._detect = detect
        self._landmark = landmark
        self.reset()

    def reset(self) -> None:
        """Forget all tracks, lost ids and counters; the next frame runs the detector."""
        self._tracks: list[_Track] = []
        self._lost: list[_LostTrack] = []
        self._next_id = 0
        self._frame = 0
        self._last_detection = -(10**9)
        self._detector_runs = 0

    @property
    def stats(self) -> TrackerStats:
        """Frames and detector runs since the last reset."""
        return TrackerStats(self._frame, self._detector_runs)

    def step(self, image: ImageArray) -> list[tuple[int, PoseLandmarks]]:
        """Process one frame; returns (track id, landmarks) per person, ids ascending."""
        cfg = self.config
        height, width = image.shape[:2]
        self._frame += 1
        self._lost = [t for t in self._lost if self._frame - t.frame <= cfg.id_memory_frames]
        for track in list(self._tracks):
            if not cfg.tracking or not self._usable(track.roi, width, height):
                self._lose(track)
        if self._needs_detection():
            self._add_detections(self._detect(image, None), width, height)
        results: list[tuple[int, PoseLandmarks]] = []
        for track in list(self._tracks):
            lm = self._landmark(image, track.roi)
            if lm is None or not lm.finite or not lm.flag >= cfg.pose_flag_threshold:
                self._lose(track)
                continue
            results.append((track.track_id, lm))
            next_roi = lm.next_roi(cfg.detector.roi_scale)
            if next_roi.valid and next_roi.size >= cfg.min_roi_size:
                track.roi = next_roi
            else:
                self._lose(track)
        results = self._drop_duplicates(results)
        results.sort(key=lambda r: r[0])
        return results

    def _usable(self, roi: RotatedRect, width: int, height: int) -> bool:
        """Finite, at least ``min_roi_size`` and enough of it in the frame."""
        cfg = self.config
        return (
            roi.valid
            and roi.size >= cfg.min_roi_size
            and roi.frame_overlap(width, height) >= cfg.min_frame_overlap
        )

    def _needs_detection(self) -> bool:
        cfg = self.config
        if not self._tracks:
            return True
        if len(self._tracks) >= cfg.max_persons:
            return False
        return self._frame - self._last_detection >= cfg.redetect_interval

    def _add_detections(self, dets: Detections, width: int, height: int) -> None:
        cfg = self.config
        self._detector_runs += 1
        self._last_detection = self._frame
        for roi in dets.rois(cfg.detector.roi_scale):
            if len(self._tracks) >= cfg.max_persons:
                break
            if not self._usable(roi, width, height):
                continue
            bounds = roi.aabb()
            if self._tracks:
                tracked = np.stack([t.roi.aabb() for t in self._tracks])
                if float(box_iou(bounds, tracked).max()) > cfg.match_iou:
                    continue  # already tracked: keep the tracked ROI and its id
            self._tracks.append(_Track(self._recover_id(bounds), roi))

    def _recover_id(self, bounds: FloatArray) -> int:
        """The id of the best-overlapping recently lost track, else a new id."""
        if self._lost:
            iou = box_iou(bounds, np.stack([t.bounds for t in self._lost]))[0]
            best = int(np.argmax(iou))
            if iou[best] > self.config.match_iou:
                return self._lost.pop(best).track_id
        self._next_id += 1
        return self._next_id - 1

    def _lose(self, track: _Track) -> None:
        self._tracks.remove(track)
        if track.roi.valid:
            self._lost.append(_LostTrack(track.track_id, track.roi.aabb(), self._frame))

    def _drop_duplicates(
        self, results: list[tuple[int, PoseLandmarks]]
    ) -> list[tuple[int, PoseLandmarks]]:
        if len(results) < 2:
            return results
        by_id = {t.track_id: t for t in self._tracks}
        bounds = np.stack([lm.roi.aabb() for _, lm in results])
        iou = box_iou(bounds, bounds)
        order = sorted(range(len(results)), key=lambda i: -results[i][1].flag)
        kept: list[int] = []
        for i in order:  # persons, not keypoints
            if all(iou[i, j] <= self.config.duplicate_iou for j in kept):
                kept.append(i)
            elif results[i][0] in by_id:
                self._tracks.remove(by_id[results[i][0]])  # same person twice: drop silently
        return [results[i] for i in sorted(kept)]


class LandmarkModel:
    """The BlazePose landmark network on one rotated ROI crop."""

    def __init__(self, session: InferenceSession, heatmap: bool = False) -> None:
        self.session = session
        inp = session.inputs[0]
        if len(inp.shape) != 4 or inp.shape[3] != 3 or inp.shape[1] != inp.shape[2]:
            raise ModelError(f"{session.path}: expected a square NHWC RGB input, got {inp.shape}")
        self.input_name = inp.name
        self.input_size = int(inp.shape[1] or 256)
        available = set(session.output_names)
        names: dict[str, str] = {}
        for key, candidates in _OUTPUT_NAMES.items():
            found = [n for n in candidates if n in available]
            if not found:
                raise ModelError(
                    f"{session.path}: no output named {' or '.join(candidates)} "
                    f"(outputs: {sorted(available)}); rebuild it with python models/build.py"
                )
            names[key] = found[0]
        if heatmap:
            found = [n for n in _HEATMAP_NAMES if n in available]
            if not found:
                raise ModelError(
                    f"{session.path}: heatmap refinement needs an output named "
                    f"{' or '.join(_HEATMAP_NAMES)} (outputs: {sorted(available)})"
                )
            names["heatmap"] = found[0]
        self.names = names
        self.requested = tuple(names.values())

    def preprocess(self, image: ImageArray, roi: RotatedRect) -> FloatArray:
        """(1, S, S, 3) float32 RGB in [0, 1]: the upright crop of ``roi`` (BGR ``image``);
        outside the frame, edge pixels are replicated as in MediaPipe's crop."""
        crop = crop_rotated(image, roi, self.input_size, cv2.BORDER_REPLICATE)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        tensor: FloatArray = rgb[None].astype(np.float32)
        tensor *= 1.0 / 255.0
        return tensor

    def infer(self, tensor: FloatArray) -> dict[str, npt.NDArray[np.float32]]:
        """Raw outputs by canonical name (``landmarks``, ``pose_flag``, ``world_landmarks`` and,
        when asked for, ``heatmap``)."""
        out = self.session.run({self.input_name: tensor}, self.requested)
        return {key: out[name] for key, name in self.names.items()}


class BlazePoseEstimator:
    """BlazePose (detector + landmark model + ROI tracking) as a :class:`PoseEstimator`.

    Args:
        spec: the landmark model's registry entry; the detector file sits next to it.
        options: device and threads for both models.
        config: pipeline settings (persons, thresholds, tracking).
    """

    layout = KeypointLayout.BLAZEPOSE33

    def __init__(
        self,
        spec: ModelSpec,
        options: SessionOptions,
        config: BlazePoseConfig | None = None,
        max_persons: int | None = None,
    ) -> None:
        self.name = spec.name
        self.config = config or BlazePoseConfig()
        if max_persons is not None:
            self.config = replace(self.config, max_persons=max_persons)
        refine = self.config.heatmap_refine != "none"
        self.landmark_model = LandmarkModel(InferenceSession(spec.path, options), heatmap=refine)
        self.heatmap_activation: Activation = (
            "prob" if spec.name in _HEATMAP_PROBABILITIES else "logit"
        )
        self.detector = PoseDetector(
            spec.path.parent / self.config.detector_file, options, self.config.detector
        )
        self.tracker = PoseTracker(self.config, self._detect, self._landmarks)
        self._timings: dict[str, float] = {}

    @property
    def provider(self) -> str:
        """The execution provider of the landmark model."""
        return self.landmark_model.session.provider

    @property
    def stats(self) -> TrackerStats:
        """Frames processed and detector runs since the last :meth:`reset`."""
        return self.tracker.stats

    def reset(self) -> None:
        """Forget the tracks: the next frame starts with a detection."""
        self.tracker.reset()

    def _add_time(self, key: str, ms: float) -> None:
        self._timings[key] = self._timings.get(key, 0.0) + ms

    def _detect(self, image: ImageArray, region: Box | None) -> Detections:
        tiles = self.config.detector_tiles if self.config.max_persons > 1 else 0
        if region is None and tiles > 0:
            dets, t = self.detector.detect_tiled(image, tiles)
        else:
            dets, t = self.detector.detect(image, region)
        self._add_time("preprocess", t.preprocess)
        self._add_time("detector", t.model)
        return dets

    def _landmarks(self, image: ImageArray, roi: RotatedRect) -> PoseLandmarks | None:
        t0 = time.perf_counter()
        tensor = self.landmark_model.preprocess(image, roi)
        t1 = time.perf_counter()
        out = self.landmark_model.infer(tensor)
        t2 = time.perf_counter()
        self._add_time("preprocess", (t1 - t0) * 1e3)
        self._add_time("landmark", (t2 - t1) * 1e3)
        cfg = self.config
        size = self.landmark_model.input_size
        raw = np.asarray(out["landmarks"], np.float32).reshape(NUM_MODEL_LANDMARKS, 5)
        uv = None
        if "heatmap" in out:
            uv = refine_from_heatmap(
                raw[:, :2],
                out["heatmap"][0],
                size,
                self.heatmap_activation,
                cfg.heatmap_window_cells,
                cfg.heatmap_min_score,
            )
        flag = float(np.asarray(out["pose_flag"]).reshape(-1)[0])
        return decode_landmarks(raw, out["world_landmarks"][0], flag, roi, size, uv)

    def estimate(self, image: ImageArray, region: Box | None = None) -> EstimateResult:
        """Keypoints of up to ``max_persons`` people in ``image`` (uint8 (H, W, 3) BGR).

        With ``region`` (source pixels), one person is looked for inside it: the detector sees the
        region enlarged by ``region_margin``, then the landmark model runs on the detection's ROI
        and ``region_refinements`` more times on the ROI from its own auxiliary points (an upright
        ROI on the region when nothing is detected); tracking state is neither used nor changed.
        A frame with no pixels gives "no person".
        """
        t0 = time.perf_counter()
        self._timings = {"preprocess": 0.0, "detector": 0.0, "landmark": 0.0}
        if _is_empty_frame(image):
            results: list[tuple[int, PoseLandmarks]] = []
        else:
            image = check_image(image)
            results = (
                self._in_region(image, region) if region is not None else self.tracker.step(image)
            )
        image_kp, world_kp = _to_keypoints(results)
        total = (time.perf_counter() - t0) * 1e3
        timings = dict(self._timings)
        timings["postprocess"] = max(0.0, total - sum(timings.values()))
        return EstimateResult(image_kp, world_kp, timings)

    def _in_region(self, image: ImageArray, region: Box) -> list[tuple[int, PoseLandmarks]]:
        cfg = self.config
        m = cfg.region_margin
        cx, cy = region.x + region.w / 2, region.y + region.h / 2
        wide = Box(cx - region.w * m / 2, cy - region.h * m / 2, region.w * m, region.h * m)
        dets = self._detect(image, wide)
        roi = _best_in_region(dets, region, cfg.detector.roi_scale)
        if roi is None:
            # No detection: an upright ROI on the box, as wide as the detector's ROI would be.
            roi = RotatedRect(cx, cy, max(region.w, region.h) * cfg.detector.roi_scale, 0.0)
        lm = self._landmarks(image, roi)
        for _ in range(cfg.region_refinements):
            if lm is None or not lm.finite:
                break
            again = lm.next_roi(cfg.detector.roi_scale)
            if not again.valid:
                break
            lm = self._landmarks(image, again)
        if lm is None or not lm.finite or not lm.flag >= cfg.pose_flag_threshold:
            return []
        return [(-1, lm)]


def _is_empty_frame(image: object) -> bool:
    return isinstance(image, np.ndarray) and image.ndim == 3 and 0 in image.shape[:2]


def _best_in_region(dets: Detections, region: Box, scale: float) -> RotatedRect | None:
    """ROI of the detection that best fills ``region``: the highest IoU between the region and
    the detection's body square (the ROI without its ``scale`` margin, axis-aligned); None when
    no detection overlaps the region."""
    rois = [r for r in dets.rois(scale) if r.valid]
    if not rois:
        return None
    bodies = np.stack([replace(r, size=r.size / scale).aabb() for r in rois])
    target = np.array([region.x, region.y, region.x + region.w, region.y + region.h])
    iou = box_iou(target, bodies)[0]
    best = int(np.argmax(iou))
    return rois[best] if iou[best] > 0.0 else None


def _to_keypoints(results: list[tuple[int, PoseLandmarks]]) -> tuple[Keypoints, Keypoints]:
    layout = KeypointLayout.BLAZEPOSE33
    if not results:
        return Keypoints.empty(layout, Space.IMAGE), Keypoints.empty(layout, Space.WORLD)
    xyz = np.stack([lm.xyz[:NUM_LANDMARKS] for _, lm in results])
    world = np.stack([lm.world for _, lm in results])
    score = np.stack([lm.visibility[:NUM_LANDMARKS] for _, lm in results])
    flags = np.array([lm.flag for _, lm in results], np.float32)
    ids = np.array([tid for tid, _ in results], np.int64)
    image_kp = Keypoints(xyz, score, layout, Space.IMAGE, flags, ids)
    world_kp = Keypoints(world, score.copy(), layout, Space.WORLD, flags.copy(), ids.copy())
    return image_kp, world_kp
