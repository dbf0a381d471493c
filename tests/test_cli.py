"""The command line: --version, --help on every subcommand, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from avatarlink import __version__
from avatarlink.cli import COMMAND_MODULES, build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avatarlink", *args], capture_output=True, text=True, timeout=120
    )


def test_version_via_python_m() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"avatarlink {__version__}"


@pytest.mark.parametrize("command", COMMAND_MODULES)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    assert "usage: avatarlink" in capsys.readouterr().out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_path_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = _run("estimate", str(tmp_path / "missing.jpg"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "missing.jpg" in result.stderr and "Traceback" not in result.stderr


def test_unknown_model_lists_the_valid_ones() -> None:
    result = _run("estimate", "--model", "nope")
    assert result.returncode == 2
    assert "unknown model 'nope'" in result.stderr and "movenet-lightning" in result.stderr


def test_estimate_folder_writes_json_lines_and_one_video(tmp_path: Path) -> None:
    """A folder of differently sized images: one JSON line per frame, every frame in the video."""
    import json

    import cv2
    import numpy as np

    from avatarlink.sources import SAMPLE_IMAGE, read_image

    photo = read_image(SAMPLE_IMAGE)
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), photo)
    cv2.imwrite(str(folder / "b.png"), cv2.resize(photo, (300, 420)))
    cv2.imwrite(str(folder / "c.png"), np.zeros((240, 320, 3), np.uint8))
    out_json, out_video = tmp_path / "k.jsonl", tmp_path / "k.avi"
    assert main(["estimate", str(folder), "--json", str(out_json), "--draw", str(out_video)]) == 0
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert len(records[0]["persons"]) == 1 and records[2]["persons"] == []
    assert len(records[0]["persons"][0]["keypoints"]) == 17
    video = cv2.VideoCapture(str(out_video))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    video.release()
