"""Frame sources: an image file, a folder of images, or a video file -> :class:`Frame` objects.

Each source yields frames with ``t`` = media time in seconds (video: the container timestamp;
image folders: ``index / fps``), so filters behave the same whether a file plays in real time or
as fast as possible. Unreadable frames are skipped, counted and logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from avatarlink.errors import InputError
from avatarlink.types import Frame, ImageArray

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})

SAMPLE_IMAGE = Path(__file__).resolve().parent / "data" / "astronaut.png"


class FrameSource(Protocol):
    """Something that yields frames; ``skipped`` counts unreadable ones."""

    name: str
    skipped: int

    def __iter__(self) -> Iterator[Frame]:
        """Frames in order."""
        ...

    def close(self) -> None:
        """Release files or devices."""
        ...


def read_image(path: Path) -> ImageArray:
    """Read an image file as uint8 (H, W, 3) BGR; InputError names the file when it cannot."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such image file: {path}")
    data = np.fromfile(str(path), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"cannot decode {path} as an image (not an image, or corrupt)")
    return np.ascontiguousarray(image)


class ImageFileSource:
    """A single image as a one-frame source."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.skipped = 0
        self._image = read_image(self.path)

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(self._image, 0.0, 0, self.name)

    def close(self) -> None:
        """Nothing to release."""


class ImageFolderSource:
    """The images of a folder in name order, at a nominal ``fps`` for timestamps."""

    def __init__(self, folder: Path, fps: float = 30.0) -> None:
        self.folder = Path(folder)
        self.name = str(self.folder)
        self.fps = fps
        self.skipped = 0
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputError(
                f"folder {self.folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            try:
                image = read_image(path)
            except InputError as exc:
                self._skip(exc)
                continue
            yield Frame(image, index / self.fps, index, str(path))

    def _skip(self, exc: InputError) -> None:
        if self.skipped == 0:
            log.warning("skipping unreadable frame: %s (further ones are counted only)", exc)
        self.skipped += 1

    def close(self) -> None:
        """Nothing to release."""


class VideoFileSource:
    """A video file decoded with OpenCV; ``t`` is the media timestamp in seconds."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.skipped = 0
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise InputError(f"cannot open {self.path} as a video (unknown format or corrupt)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if np.isfinite(fps) and fps > 0 else 30.0

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                break
            msec = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
            t = msec / 1e3 if np.isfinite(msec) and (msec > 0 or index == 0) else index / self.fps
            yield Frame(np.ascontiguousarray(image), t, index, self.name)
            index += 1

    def close(self) -> None:
        """Release the decoder."""
        self._cap.release()


def open_file_source(spec: str | Path) -> FrameSource:
    """Open a file or folder source; InputError explains what was wrong with ``spec``."""
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageFileSource(path)
    if suffix in VIDEO_SUFFIXES:
        return VideoFileSource(path)
    try:  # an image with an unusual or missing suffix
        return ImageFileSource(path)
    except InputError:
        pass
    raise InputError(
        f"{path} is not an image, a video or a folder avatarlink can read (images: "
        f"{', '.join(sorted(IMAGE_SUFFIXES))}; videos: {', '.join(sorted(VIDEO_SUFFIXES))})"
    )
