"""The report: jitter and lag of a recording with known noise and delay, the figure, the command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic_results import make_result, skeleton

from avatarlink.cli import main
from avatarlink.errors import InputError
from avatarlink.recording import Recorder, RecordingHeader, load_recording
from avatarlink.report import nice_ticks, render_report, smoothing_report, timing_report
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import Keypoints

FPS = 30.0
DELAY_FRAMES = 3
NOISE_PX = 3.0


def clean_track(n: int) -> np.ndarray:
    """(n, 17, 2) smooth motion of every keypoint around a standing pose."""
    base = make_result(0, 0.0, size=(640, 480), noise_px=0.0).smoothed.xyz[0, :, :2]
    t = np.arange(n)[:, None] / FPS
    phase = np.arange(17)[None, :] * 0.4
    dx = 25 * np.sin(2 * np.pi * 0.7 * t + phase)
    dy = 15 * np.sin(2 * np.pi * 0.45 * t + 2 * phase)
    return base[None] + np.stack([dx, dy], axis=-1)


def write_known(path: Path, n: int = 240) -> None:
    """Raw = clean + white noise; smoothed = clean delayed by DELAY_FRAMES frames."""
    rng = np.random.default_rng(5)
    clean = clean_track(n + DELAY_FRAMES)
    header = RecordingHeader("synthetic", KeypointLayout.COCO17, skeleton())
    with Recorder(path, header) as recorder:
        for i in range(n):
            base = make_result(i, 50.0 + i / FPS, size=(640, 480))
            raw_xy = clean[i + DELAY_FRAMES] + rng.normal(0, NOISE_PX, (17, 2))
            smooth_xy = clean[i]
            score = np.full((1, 17), 0.9, np.float32)
            zeros = np.zeros((1, 17, 1), np.float32)
            raw = Keypoints(
                np.concatenate([raw_xy[None], zeros], -1).astype(np.float32),
                score,
                KeypointLayout.COCO17,
            )
            smoothed = replace(
                raw, xyz=np.concatenate([smooth_xy[None], zeros], -1).astype(np.float32)
            )
            timings = {"inference": 5.0 + (i % 10), "solve": 0.5, "total": 9.0}
            recorder.write(replace(base, raw=raw, smoothed=smoothed, timings_ms=timings))


def test_jitter_and_lag_of_known_noise_and_delay(tmp_path: Path) -> None:
    path = tmp_path / "known.jsonl"
    write_known(path)
    recording = load_recording(path)
    track = recording.track(0)
    sm = smoothing_report(track, KeypointLayout.COCO17)
    assert sm.frame_s == pytest.approx(1 / FPS, rel=1e-3)
    # White noise of sigma s has a second difference of RMS sqrt(6)*s per axis.
    torso = float(np.nanmedian(np.linalg.norm(
        track.smoothed[:, [5, 6], :2].mean(1) - track.smoothed[:, [11, 12], :2].mean(1), axis=-1
    )))  # fmt: skip
    expected_raw = np.sqrt(6 * 2) * NOISE_PX / torso
    assert sm.jitter_raw_all == pytest.approx(expected_raw, rel=0.15)
    assert sm.jitter_smoothed_all < 0.1 * sm.jitter_raw_all
    assert sm.jitter_ratio < 0.1
    # metrics.lag_ms reads this slow motion's 100 ms delay as ~93 ms (its correlation sums are
    # not normalised by overlap length); the report must show it, positive and near 3 frames.
    assert sm.lag_ms_all == pytest.approx(DELAY_FRAMES * 1000 / FPS, abs=15.0)
    assert np.nanmedian(sm.lag_ms) == pytest.approx(DELAY_FRAMES * 1000 / FPS, abs=20.0)
    tm = timing_report(track)
    assert tm.median("inference") == pytest.approx(9.5)
    assert tm.median("solve") == 0.5
    assert tm.latency_ms.size == 240


def test_figure_has_every_panel_drawn(tmp_path: Path) -> None:
    path = tmp_path / "known.jsonl"
    write_known(path, n=90)
    image, _, _ = render_report(load_recording(path), keypoints=["left_wrist", "nose", "left_knee"])
    # Title row + two rows of trajectories + jitter/lag row + timing row.
    assert image.shape == (4 * 380 + 70, 1600, 3)
    assert image.dtype == np.uint8
    rows = [image[60 + r * 380 : 60 + (r + 1) * 380] for r in range(4)]
    for row in rows:
        assert (row < 250).any(axis=-1).mean() > 0.01  # something is drawn in every row
    # Smoothed x (dark blue) appears in the trajectory panels.
    dark_blue = np.all(np.abs(rows[0].astype(int) - (150, 60, 10)) < 30, axis=-1)
    assert dark_blue.sum() > 200


def test_report_command_prints_numbers_and_writes_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "known.jsonl"
    write_known(path)
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "known.report.png"
    assert f"wrote {png}" in out
    lag = float(out.split("lag of smoothed behind raw: ")[1].split(" ms")[0])
    assert lag == pytest.approx(100.0, abs=15.0)
    assert "jitter (torso lengths/frame^2): raw" in out
    assert "median ms per stage: inference" in out
    image = cv2.imread(str(png))
    assert image is not None and image.shape[1] == 1600
    custom = tmp_path / "r.png"
    assert main(["report", str(path), "--out", str(custom), "--keypoints", "nose"]) == 0
    assert custom.exists()


def test_report_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "known.jsonl"
    write_known(path, n=10)
    assert main(["report", str(path), "--keypoints", "left_pinky"]) == 2
    assert "left_pinky" in capsys.readouterr().err
    with pytest.raises(InputError, match="person 3 never appears"):
        render_report(load_recording(path), person=3)
    with pytest.raises(InputError, match="at most 4"):
        render_report(load_recording(path), keypoints=["nose"] * 5)


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    np.testing.assert_allclose(nice_ticks(0, 10), [0, 2, 4, 6, 8, 10])
    np.testing.assert_allclose(nice_ticks(-0.33, 0.71), [-0.2, 0, 0.2, 0.4, 0.6])
    np.testing.assert_allclose(nice_ticks(101, 149), [110, 120, 130, 140])
