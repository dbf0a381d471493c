"""Drawing keypoints and skeletons on BGR images (for --draw, the preview and recordings)."""

from __future__ import annotations

import cv2
import numpy as np

from avatarlink.types import ImageArray, Keypoints


def confidence_colour(score: float) -> tuple[int, int, int]:
    """BGR colour from red (score 0) through yellow to green (score 1)."""
    s = float(np.clip(score, 0.0, 1.0))
    return (0, int(255 * min(1.0, 2 * s)), int(255 * min(1.0, 2 * (1 - s))))


def draw_keypoints(
    image: ImageArray, keypoints: Keypoints, thickness: int | None = None
) -> ImageArray:
    """A copy of ``image`` with every person's skeleton drawn, coloured by confidence.

    Args:
        image: uint8 (H, W, 3) BGR.
        keypoints: image-space keypoints; missing (NaN) points and their edges are skipped.
        thickness: line width in px (default scales with the image size).
    """
    out: ImageArray = image.copy()
    width = thickness or max(2, round(max(image.shape[:2]) / 250))
    edges = np.array(keypoints.layout.edges, np.int64)
    for person in range(keypoints.num_persons):
        xy = keypoints.xyz[person, :, :2]
        finite: list[bool] = (np.isfinite(xy[:, 0]) & np.isfinite(xy[:, 1])).tolist()
        pts = np.round(np.nan_to_num(xy)).astype(np.int64).tolist()
        score = keypoints.score[person]
        for a, b in edges:
            if finite[a] and finite[b]:
                colour = confidence_colour(min(score[a], score[b]))
                cv2.line(out, tuple(pts[a]), tuple(pts[b]), colour, width, cv2.LINE_AA)
        for k in np.flatnonzero(finite).tolist():
            colour = confidence_colour(score[k])
            cv2.circle(out, tuple(pts[k]), width + 1, colour, -1, cv2.LINE_AA)
    return out
