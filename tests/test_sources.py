"""File sources: images, folders, videos; unreadable input gives one clear error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatarlink.errors import InputError
from avatarlink.sources import SAMPLE_IMAGE, open_file_source, read_image


def test_sample_image_reads_as_bgr() -> None:
    image = read_image(SAMPLE_IMAGE)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no such file or folder: .*nothere\.jpg"):
        open_file_source(tmp_path / "nothere.jpg")


def test_non_image_file_is_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt is not an image, a video or a folder"):
        open_file_source(text)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputError, match=r"cannot decode .*fake\.jpg"):
        open_file_source(fake)


def test_folder_skips_and_counts_corrupt_frames(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((20, 30, 3), i * 40, np.uint8))
    (tmp_path / "f1b.png").write_bytes(b"broken")
    source = open_file_source(tmp_path)
    frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3]
    assert source.skipped == 1
    assert frames[-1].t == pytest.approx(3 / 30)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no images"):
        open_file_source(tmp_path)


def test_video_frames_carry_media_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    source = open_file_source(path)
    frames = list(source)
    source.close()
    assert len(frames) == 10
    times = np.array([f.t for f in frames])
    assert np.allclose(np.diff(times), 1 / 25, atol=1e-3)
    assert frames[0].t == pytest.approx(0.0)


def test_corrupt_video_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match=r"broken\.mp4"):
        open_file_source(path)
