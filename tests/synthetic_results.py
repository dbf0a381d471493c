"""Synthetic pipeline results for tests of observers (preview, recorder) and exports.

A small humanoid skeleton moves its limbs with known smooth rotations; its joints are projected into
an image to give COCO-17 keypoints, so every stage's output is consistent and known exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from avatarlink.bvh import forward_kinematics
from avatarlink.recording import RigSkeleton
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import BoneRotations, Frame, FrameResult, Keypoints, Space

_BONES: tuple[tuple[str, str | None, tuple[float, float, float]], ...] = (
    ("Hips", None, (0.0, 0.95, 0.0)),
    ("Spine", "Hips", (0.0, 0.10, 0.0)),
    ("LeftUpperLeg", "Hips", (0.09, -0.05, 0.0)),
    ("RightUpperLeg", "Hips", (-0.09, -0.05, 0.0)),
    ("Chest", "Spine", (0.0, 0.24, 0.0)),
    ("LeftLowerLeg", "LeftUpperLeg", (0.0, -0.42, 0.0)),
    ("RightLowerLeg", "RightUpperLeg", (0.0, -0.42, 0.0)),
    ("Neck", "Chest", (0.0, 0.15, 0.0)),
    ("LeftUpperArm", "Chest", (0.14, 0.10, 0.0)),
    ("RightUpperArm", "Chest", (-0.14, 0.10, 0.0)),
    ("LeftFoot", "LeftLowerLeg", (0.0, -0.42, 0.0)),
    ("RightFoot", "RightLowerLeg", (0.0, -0.42, 0.0)),
    ("Head", "Neck", (0.0, 0.09, 0.0)),
    ("LeftLowerArm", "LeftUpperArm", (0.27, 0.0, 0.0)),
    ("RightLowerArm", "RightUpperArm", (-0.27, 0.0, 0.0)),
    ("LeftHand", "LeftLowerArm", (0.25, 0.0, 0.0)),
    ("RightHand", "RightLowerArm", (-0.25, 0.0, 0.0)),
)

# COCO-17 point -> the joint it sits on (eyes/ears/nose on the head, offset in the image).
_COCO_JOINT = {
    "nose": "Head", "left_eye": "Head", "right_eye": "Head", "left_ear": "Head",
    "right_ear": "Head", "left_shoulder": "LeftUpperArm", "right_shoulder": "RightUpperArm",
    "left_elbow": "LeftLowerArm", "right_elbow": "RightLowerArm", "left_wrist": "LeftHand",
    "right_wrist": "RightHand", "left_hip": "LeftUpperLeg", "right_hip": "RightUpperLeg",
    "left_knee": "LeftLowerLeg", "right_knee": "RightLowerLeg", "left_ankle": "LeftFoot",
    "right_ankle": "RightFoot",
}  # fmt: skip
_FACE_OFFSET_M = {
    "nose": (0.0, 0.08), "left_eye": (0.03, 0.1), "right_eye": (-0.03, 0.1),
    "left_ear": (0.07, 0.08), "right_ear": (-0.07, 0.08),
}  # fmt: skip


def skeleton() -> RigSkeleton:
    """The 17-bone test skeleton (parent first)."""
    names = tuple(b[0] for b in _BONES)
    parents = np.array([-1 if p is None else names.index(p) for _, p, _ in _BONES], np.int64)
    offsets = np.array([o for _, _, o in _BONES], np.float32)
    return RigSkeleton("test-rig", names, parents, offsets)


def rotations_at(t: float, sk: RigSkeleton | None = None) -> np.ndarray:
    """float64 (B, 4) xyzw local rotations at time ``t`` (s): arms wave, legs step, head turns."""
    sk = sk or skeleton()
    rotvec = np.zeros((len(sk.bones), 3))
    index = {n: i for i, n in enumerate(sk.bones)}
    w = 2 * np.pi * 0.5 * t
    rotvec[index["LeftUpperArm"]] = (0.3 * np.sin(w), 0.2, 0.9 * np.sin(w) - 0.4)
    rotvec[index["RightUpperArm"]] = (0.0, -0.3 * np.cos(w), -0.6 * np.cos(w) + 0.5)
    rotvec[index["LeftLowerArm"]] = (0.0, 0.8 + 0.5 * np.sin(w), 0.0)
    rotvec[index["RightLowerArm"]] = (0.0, -0.6, 0.3 * np.sin(w))
    rotvec[index["LeftUpperLeg"]] = (0.5 * np.sin(w), 0.0, 0.05)
    rotvec[index["RightUpperLeg"]] = (-0.5 * np.sin(w), 0.0, -0.05)
    rotvec[index["LeftLowerLeg"]] = (0.6 * max(0.0, np.sin(w)), 0.0, 0.0)
    rotvec[index["Head"]] = (0.1, 0.6 * np.sin(0.5 * w), 0.0)
    rotvec[index["Hips"]] = (0.0, 0.3 * np.sin(0.25 * w), 0.0)
    return np.asarray(Rotation.from_rotvec(rotvec).as_quat(), np.float64)


def root_at(t: float) -> np.ndarray:
    """float64 (3,) root position (m) at time ``t``: sways sideways, bobs."""
    return np.array([0.2 * np.sin(0.8 * t), 0.03 * np.sin(4.0 * t), -2.5], np.float64)


def project(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Image pixels (..., 2) of world points (..., 3): a camera 3 m in front of the hips."""
    w, h = size
    focal = 0.9 * h
    depth = 3.0 - points[..., 2]
    u = w / 2 + focal * points[..., 0] / depth
    v = h * 0.55 - focal * (points[..., 1] - 0.9) / depth
    return np.stack([u, v], axis=-1)


def coco_keypoints(sk: RigSkeleton, joints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 (17, 2) image keypoints of one person from world joints (B, 3)."""
    index = {n: i for i, n in enumerate(sk.bones)}
    pts = np.stack([joints[index[_COCO_JOINT[n]]] for n in KeypointLayout.COCO17.names])
    for n, (dx, dy) in _FACE_OFFSET_M.items():
        pts[KeypointLayout.COCO17.index(n)] += (dx, dy, 0.0)
    return project(pts, size).astype(np.float32)


def make_result(
    index: int,
    t: float,
    size: tuple[int, int] = (320, 240),
    persons: int = 1,
    noise_px: float = 2.0,
    seed: int = 0,
    image_noise: bool = False,
) -> FrameResult:
    """A consistent :class:`FrameResult` at time ``t``: image, raw (noisy) and smoothed keypoints,
    world joints and rotations of ``persons`` people (the second is shifted sideways).
    ``image_noise`` fills the image with random pixels (large JPEGs)."""
    sk = skeleton()
    rng = np.random.default_rng(seed + index)
    w, h = size
    image = np.full((h, w, 3), 40, np.uint8)
    image[:, :, 1] = np.linspace(30, 90, w, dtype=np.uint8)[None, :]
    if image_noise:  # incompressible content: large JPEGs
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rot = rotations_at(t, sk)
    joints = forward_kinematics(sk, rot, np.array([0.0, 0.95, 0.0]))
    clean = []
    rotations = []
    for p in range(persons):
        shift = np.array([0.6 * p, 0.0, 0.0])
        clean.append(coco_keypoints(sk, joints + shift, size))
        rotations.append(
            BoneRotations(
                sk.bones,
                rot.astype(np.float32),
                root_at(t).astype(np.float32) + shift.astype(np.float32),
                np.ones(len(sk.bones), bool),
                t,
            )
        )
    xy = np.stack(clean) if clean else np.zeros((0, 17, 2), np.float32)
    score = np.clip(0.4 + 0.6 * rng.random(xy.shape[:2]), 0, 1).astype(np.float32)
    raw_xy = xy + rng.normal(0.0, noise_px, xy.shape).astype(np.float32)
    zeros = np.zeros((*xy.shape[:2], 1), np.float32)
    raw = Keypoints(np.concatenate([raw_xy, zeros], -1), score, KeypointLayout.COCO17)
    smoothed = Keypoints(np.concatenate([xy, zeros], -1), score, KeypointLayout.COCO17)
    world = Keypoints(
        np.zeros((persons, 17, 3), np.float32), score, KeypointLayout.COCO17, Space.WORLD
    )
    return FrameResult(
        frame=Frame(image, t, index, "synthetic"),
        raw=raw,
        smoothed=smoothed,
        world=world,
        rotations=tuple(rotations),
        timings_ms={"capture": 0.5, "inference": 6.0 + index % 3, "solve": 0.2},
        latency_ms=12.0 + index % 5,
        provider="CPUExecutionProvider",
        stats={"fps": 30.0, "dropped": 1.0, "packets_sent": 3.0 * index},
    )
