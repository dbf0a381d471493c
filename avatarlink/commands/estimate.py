"""``avatarlink estimate PATH``: keypoints of an image, video or folder, as JSON and drawings."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np

from avatarlink.commands.common import add_model_arguments, session_options


def register(subparsers: Any) -> None:
    """Add the ``estimate`` subcommand."""
    parser = subparsers.add_parser(
        "estimate",
        help="estimate keypoints on an image, video or image folder",
        description=(
            "Estimate body keypoints. Without PATH uses the built-in sample photo. "
            "Prints a summary per frame; --json writes the keypoints (one JSON object per line "
            "for videos and folders), --draw writes the image(s) with the skeleton."
        ),
    )
    parser.add_argument("path", nargs="?", default=None, help="image, video or folder")
    add_model_arguments(parser)
    parser.add_argument("--bbox", help="person region x,y,w,h in pixels (top-down use)")
    parser.add_argument(
        "--max-persons",
        type=int,
        default=None,
        help="multi-person models (movenet-multipose, blazepose-*): report at most N people",
    )
    parser.add_argument("--json", dest="json_out", help="write keypoints JSON here ('-' = stdout)")
    parser.add_argument(
        "--draw",
        help="write the image with the skeleton (for videos/folders: a video if OUT is .mp4/.avi, "
        "else one image per frame named OUT_STEM_000123.png)",
    )
    parser.set_defaults(handler=run)


def frame_record(source: str, frame: int, t: float, model: str, result: Any) -> dict[str, Any]:
    """The JSON record of one frame (keypoints in source pixels; missing values are null)."""
    persons: list[dict[str, Any]] = []
    image = result.image
    for p in range(image.num_persons):
        xys = [
            [_num(x), _num(y), _num(s)]
            for (x, y, _), s in zip(image.xyz[p], image.score[p], strict=True)
        ]
        person: dict[str, Any] = {"keypoints": xys, "score": _num(image.person_score[p])}
        if int(image.ids[p]) >= 0:
            person["id"] = int(image.ids[p])
        if result.world is not None and p < result.world.num_persons:
            person["world_keypoints"] = [[_num(v) for v in xyz] for xyz in result.world.xyz[p]]
        persons.append(person)
    return {
        "source": source,
        "frame": frame,
        "t": round(float(t), 6),
        "model": model,
        "layout": image.layout.value,
        "persons": persons,
    }


def _num(value: float) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def run(args: argparse.Namespace) -> int:
    """Run the estimate command."""
    from avatarlink.draw import draw_keypoints
    from avatarlink.models.registry import create_estimator
    from avatarlink.preprocess import Box
    from avatarlink.sources import SAMPLE_IMAGE, VIDEO_SUFFIXES, open_file_source

    region = Box.parse(args.bbox) if args.bbox else None
    source = open_file_source(args.path or SAMPLE_IMAGE)
    estimator = create_estimator(args.model, session_options(args), max_persons=args.max_persons)
    json_file: IO[str] | None = None
    if args.json_out:
        json_file = sys.stdout if args.json_out == "-" else open(args.json_out, "w")  # noqa: SIM115
    writer: Any = None
    writer_size: list[int] = [0, 0]
    draw_path = Path(args.draw) if args.draw else None
    frames = 0
    try:
        for frame in source:
            result = estimator.estimate(frame.image, region)
            frames += 1
            if json_file is not None:
                record = frame_record(frame.source, frame.index, frame.t, args.model, result)
                json_file.write(json.dumps(record) + "\n")
            if args.json_out != "-":
                print(_summary(frame.source, frame.index, result))
            if draw_path is not None:
                drawn = draw_keypoints(frame.image, result.image)
                writer = _write_drawing(draw_path, drawn, frame.index, source, writer, writer_size)
        if draw_path is not None and draw_path.suffix.lower() in VIDEO_SUFFIXES and writer:
            print(f"wrote {draw_path}")
    finally:
        source.close()
        if writer is not None:
            writer.release()
        if json_file is not None and json_file is not sys.stdout:
            json_file.close()
    if source.skipped:
        print(f"skipped {source.skipped} unreadable frame(s)", file=sys.stderr)
    return 0 if frames else 1


def _summary(source: str, index: int, result: Any) -> str:
    image = result.image
    ms = sum(result.timings_ms.values())
    if image.num_persons == 0:
        return f"{Path(source).name} frame {index}: no person ({ms:.1f} ms)"
    found = int(np.isfinite(image.xyz[..., 0]).sum())
    total = image.score.size
    return (
        f"{Path(source).name} frame {index}: {image.num_persons} person(s), "
        f"{found}/{total} keypoints, mean score {float(image.score.mean()):.2f} ({ms:.1f} ms)"
    )


def _write_drawing(
    path: Path, drawn: Any, index: int, source: Any, writer: Any, writer_size: list[int]
) -> Any:
    """Write one drawn frame (an image, or the video; ``writer_size`` is the video's w, h)."""
    import cv2

    from avatarlink.errors import InputError
    from avatarlink.preprocess import letterbox_image
    from avatarlink.sources import VIDEO_SUFFIXES, ImageFileSource

    if isinstance(source, ImageFileSource):
        if not cv2.imwrite(str(path), drawn):
            raise InputError(f"cannot write drawing to {path} (unknown image suffix?)")
        print(f"wrote {path}")
        return writer
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if writer is None:
            fourcc = cv2.VideoWriter.fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
            fps = getattr(source, "fps", 30.0)
            writer = cv2.VideoWriter(str(path), fourcc, fps, (drawn.shape[1], drawn.shape[0]))
            if not writer.isOpened():
                raise InputError(f"cannot open video writer for {path}")
            writer_size[:] = [drawn.shape[1], drawn.shape[0]]
        if [drawn.shape[1], drawn.shape[0]] != writer_size:
            # a folder of different sizes: letterbox each into the video's frame size
            rgb, _ = letterbox_image(drawn, writer_size[0], writer_size[1])
            drawn = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        writer.write(drawn)
        return writer
    out = path.with_name(f"{path.stem}_{index:06d}{path.suffix or '.png'}")
    if not cv2.imwrite(str(out), drawn):
        raise InputError(f"cannot write drawing to {out}")
    return writer
