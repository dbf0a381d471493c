"""MoveNet on real photos: keypoints land on the right source pixels; bad input handled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatarlink.errors import InputError, ModelError
from avatarlink.evaluation import bbox_norm, load_coco_people, pck
from avatarlink.models import create_estimator, get_spec
from avatarlink.models.base import PoseEstimator
from avatarlink.preprocess import Box
from avatarlink.session import SessionOptions
from avatarlink.skeletons import Coco17
from avatarlink.sources import SAMPLE_IMAGE, read_image
from tests.conftest import shared_data

# PCK@0.2 (bbox-normalised) measured on the 12 annotated COCO people with GT-bbox crops, minus a
# small margin for numeric differences between machines/providers.
MEASURED_PCK = {"movenet-lightning": 0.884, "movenet-thunder": 0.890}
MARGIN = 0.03


@pytest.fixture(scope="module", params=["movenet-lightning", "movenet-thunder"])
def estimator(request: pytest.FixtureRequest) -> PoseEstimator:
    return create_estimator(request.param, SessionOptions("cpu", 1))


def test_sample_photo_has_a_person_with_a_face_where_it_should_be(
    estimator: PoseEstimator,
) -> None:
    result = estimator.estimate(read_image(SAMPLE_IMAGE)).image
    assert result.num_persons == 1
    assert result.xyz.dtype == np.float32 and result.xyz.shape == (1, 17, 3)
    nose, leye, reye = result.xyz[0, [Coco17.NOSE, Coco17.LEFT_EYE, Coco17.RIGHT_EYE], :2]
    # the astronaut's face is around (225, 110) in the 512x512 photo; her left eye is on the
    # image's right (she faces the camera)
    assert np.linalg.norm(nose - [225, 120]) < 25
    assert leye[0] > nose[0] > reye[0]
    assert np.isnan(result.xyz[0, :, 2]).all()  # MoveNet has no depth


def test_region_offsets_map_back_exactly(estimator: PoseEstimator) -> None:
    """The photo pasted at an offset in a bigger frame, estimated through --bbox on it, gives the
    same keypoints shifted by exactly the offset (same model input pixels)."""
    photo = read_image(SAMPLE_IMAGE)
    canvas = np.zeros((900, 1400, 3), np.uint8)
    ox, oy = 608, 240  # multiples of 8 = 512/192 * 3: whole model pixels, identical sampling
    canvas[oy : oy + 512, ox : ox + 512] = photo
    direct = estimator.estimate(photo).image
    cropped = estimator.estimate(canvas, Box(ox, oy, 512, 512)).image
    shifted = direct.xyz[..., :2] + [ox, oy]
    assert np.allclose(cropped.xyz[..., :2], shifted, atol=1e-3, equal_nan=True)
    assert np.allclose(cropped.score, direct.score, atol=1e-5)


def test_letterboxed_frame_maps_to_source_pixels(estimator: PoseEstimator) -> None:
    """A landscape frame with the photo inside, letterboxed with padding: keypoints land on the
    photo's pixels (the person is a little smaller in the model input, so allow a few px)."""
    photo = read_image(SAMPLE_IMAGE)
    frame = np.zeros((560, 640, 3), np.uint8)
    frame[24:536, 100:612] = photo
    direct = estimator.estimate(photo).image
    inframe = estimator.estimate(frame).image
    assert inframe.num_persons == 1
    both = np.isfinite(direct.xyz[0, :, 0]) & np.isfinite(inframe.xyz[0, :, 0])
    both &= (direct.score[0] > 0.3) & (inframe.score[0] > 0.3)
    err = np.linalg.norm(inframe.xyz[0, both, :2] - (direct.xyz[0, both, :2] + [100, 24]), axis=1)
    assert both.sum() >= 8
    assert np.median(err) < 20  # a mapping bug (e.g. padding ignored) would be >= 40 px here


def test_blank_image_is_no_person(estimator: PoseEstimator) -> None:
    for value in (0, 128, 255):
        result = estimator.estimate(np.full((480, 640, 3), value, np.uint8)).image
        assert result.num_persons == 0
        assert result.xyz.shape == (0, 17, 3)


def test_wrong_dtype_or_channels_is_a_clear_error(estimator: PoseEstimator) -> None:
    with pytest.raises(InputError, match="uint8"):
        estimator.estimate(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        estimator.estimate(np.zeros((100, 100, 4), np.uint8))


def test_missing_model_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARLINK_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match=r"movenet_lightning\.onnx.*restore"):
        create_estimator("movenet-lightning")
    (tmp_path / get_spec("movenet-lightning").file).write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match=r"movenet_lightning\.onnx could not be loaded.*restore"):
        create_estimator("movenet-lightning")


def test_coco_pck_with_ground_truth_boxes(estimator: PoseEstimator) -> None:
    people = load_coco_people(shared_data("coco", "test_coco.json"))
    assert len(people) == 12
    preds = []
    for person in people:
        result = estimator.estimate(read_image(person.image), person.bbox).image
        preds.append(result.xyz[0, :, :2] if result.num_persons else np.full((17, 2), np.nan))
    gt = np.stack([p.keypoints for p in people])
    value = pck(np.stack(preds), gt, bbox_norm(people))
    assert value >= MEASURED_PCK[estimator.name] - MARGIN, value
