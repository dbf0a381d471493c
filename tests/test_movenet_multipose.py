"""MoveNet MultiPose: decoding of the (1, 6, 56) output, input sizing, real photos, identities."""

from __future__ import annotations

import numpy as np
import pytest

from avatarlink.errors import ConfigError
from avatarlink.evaluation import load_coco_people
from avatarlink.models import create_estimator
from avatarlink.models.movenet_multipose import (
    MultiPoseConfig,
    decode_multipose,
    input_size_for,
)
from avatarlink.session import SessionOptions
from avatarlink.sources import read_image
from tests.conftest import shared_data


def _row(y: float, x: float, score: float) -> np.ndarray:
    """One person: all 17 points at (y, x) normalised, a box around them, a person score."""
    row = np.zeros(56, np.float32)
    row[:51] = np.tile([y, x, 0.8], 17)
    row[51:55] = [y - 0.1, x - 0.05, y + 0.1, x + 0.05]
    row[55] = score
    return row


def test_decode_known_people_sorted_and_thresholded() -> None:
    raw = np.zeros((1, 6, 56), np.float32)
    raw[0, 0] = _row(0.5, 0.25, 0.4)
    raw[0, 3] = _row(0.2, 0.75, 0.9)
    raw[0, 5] = _row(0.9, 0.9, 0.1)  # below threshold
    xy, score, boxes, person = decode_multipose(raw, 256, 160, MultiPoseConfig())
    assert xy.shape == (2, 17, 2) and score.shape == (2, 17)
    assert np.allclose(person, [0.9, 0.4])
    assert np.allclose(xy[0], [0.75 * 256, 0.2 * 160])  # x from the 2nd value, y from the 1st
    assert np.allclose(xy[1], [0.25 * 256, 0.5 * 160])
    assert np.allclose(boxes[0], [0.7 * 256, 0.1 * 160, 0.8 * 256, 0.3 * 160])


@pytest.mark.parametrize(
    ("w", "h", "expected"),
    [
        (1280, 720, (256, 160)),
        (720, 1280, (160, 256)),
        (640, 640, (256, 256)),
        (640, 480, (256, 192)),
    ],
)
def test_input_size_keeps_aspect_in_multiples_of_32(
    w: int, h: int, expected: tuple[int, int]
) -> None:
    assert input_size_for(w, h, 256) == expected


def test_bad_long_side() -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        MultiPoseConfig(long_side=250)


def test_finds_the_people_of_a_real_photo_with_stable_ids() -> None:
    people = [
        p
        for p in load_coco_people(shared_data("coco", "test_coco.json"), min_keypoints=12)
        if p.image.name == "000000197388.jpg"
    ]
    est = create_estimator("movenet-multipose", SessionOptions("cpu", 1))
    image = read_image(people[0].image)
    first = est.estimate(image).image
    assert first.num_persons >= 3
    matched = 0
    for person in people:
        gt = person.keypoints
        labelled = gt[:, 2] > 0
        err = np.linalg.norm(first.xyz[:, labelled, :2] - gt[None, labelled, :2], axis=2)
        per_person = np.nanmedian(np.where(np.isnan(err), np.inf, err), axis=1)
        matched += bool(per_person.min() < 0.1 * max(person.bbox.w, person.bbox.h))
    assert matched >= len(people) - 1
    second = est.estimate(image).image
    assert sorted(second.ids.tolist()) == sorted(first.ids.tolist())
    assert len(set(first.ids.tolist())) == first.num_persons


def test_max_persons_limits_the_people_reported() -> None:
    image = read_image(shared_data("coco", "000000197388.jpg"))
    est = create_estimator("movenet-multipose", SessionOptions("cpu", 1), max_persons=2)
    assert est.estimate(image).image.num_persons == 2
