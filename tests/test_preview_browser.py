"""The preview page in a real browser: headless Chromium (the system package) driven by Playwright.

Set ``AVATARLINK_PREVIEW_SCREENSHOT=path.png`` to keep the screenshot (docs/preview.png is the one
of the demo run: ``AVATARLINK_PREVIEW_SCREENSHOT=docs/preview.png pytest -k demo_run``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic_results import make_result, skeleton

from avatarlink.preview import PreviewServer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "Chromium not installed (Debian: apt-get install chromium; see tools/test-setup.sh)"
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = chromium_path()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Feeder:
    """Publishes a moving synthetic performer at ~30 fps until stopped."""

    def __init__(self, server: PreviewServer) -> None:
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.wait(1 / 30):
            result = make_result(i, i / 30, size=(640, 480), persons=1)
            stats = dict(result.stats, **{"packets_sent[vmc://127.0.0.1:39539]": 2.0 * i})
            self.server.publish(replace(result, stats=stats))
            i += 1

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


CANVAS_STATS = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sum2 = 0, vivid = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i] + d[i + 1] + d[i + 2];
    sum += v; sum2 += v * v;
    if (Math.max(d[i], d[i + 1]) > 180 && d[i + 2] < 90) vivid += 1;
  }
  const n = d.length / 4;
  return {mean: sum / n, std: Math.sqrt(sum2 / n - (sum / n) ** 2), vivid: vivid, n: n};
}"""

PIXEL = """([id, x, y]) => Array.from(
  document.getElementById(id).getContext('2d').getImageData(x, y, 1, 1).data)"""


def test_page_shows_frames_skeleton_rig_and_stats(browser: Any, tmp_path: Path) -> None:
    server = PreviewServer("127.0.0.1", 0, rig=skeleton())
    requests: list[str] = []
    problems: list[str] = []
    try:
        with Feeder(server):
            page = browser.new_page(viewport={"width": 1400, "height": 760})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.goto(server.url)
            page.wait_for_function(
                "() => window.avatarlinkPreview.framesDrawn >= 10", timeout=20000
            )

            state = page.evaluate(
                "() => { const s = window.avatarlinkPreview; return {segments: s.segmentsDrawn,"
                " bones: s.bonesDrawn, view: s.view, msg: s.lastMessage}; }"
            )
            # Camera canvas: the frame is drawn (not blank) and the skeleton on top of it.
            cam = page.evaluate(CANVAS_STATS, "image")
            assert cam["n"] == 640 * 480
            assert cam["std"] > 5 and cam["mean"] > 30
            assert state["segments"] == 16  # every COCO-17 edge of the one person
            assert cam["vivid"] > 300  # confidence-coloured lines (the frame has none)
            # The pixel halfway along the left upper arm has a confidence colour.
            pts = np.array(state["msg"]["smoothed"][0], dtype=float)
            mid = np.round((pts[5, :2] + pts[7, :2]) / 2).astype(int)
            r, g, b, _ = page.evaluate(PIXEL, ["image", int(mid[0]), int(mid[1])])
            assert max(r, g) > 180 and b < 90, (r, g, b)
            # 3D view: one segment per non-root bone, drawn in the side colours.
            assert state["bones"] == len(skeleton().bones) - 1
            rig = page.evaluate(CANVAS_STATS, "rig3d")
            assert rig["std"] > 5
            # Timing bars and stream numbers.
            assert page.locator("#timings .timing").count() == 3
            table = page.inner_text("#stats")
            assert "CPUExecutionProvider" in table and "vmc://127.0.0.1:39539" in table
            assert page.inner_text("#status") == "live"

            # Raw vs smoothed toggle.
            page.check("input[value=raw]")
            page.wait_for_function("() => window.avatarlinkPreview.view === 'raw'")
            # the next drawn frame shows one skeleton per view (waits for it, not a fixed delay)
            page.wait_for_function(
                "() => window.avatarlinkPreview.segmentsDrawn === 16", timeout=10000
            )
            page.check("input[value=both]")
            page.wait_for_function(
                "() => window.avatarlinkPreview.segmentsDrawn === 32", timeout=10000
            )
            page.check("input[value=smoothed]")

            # Orbit the 3D view with the mouse: the picture changes.
            before = page.evaluate(CANVAS_STATS, "rig3d")
            box = page.locator("#rig3d").bounding_box()
            page.mouse.move(box["x"] + 100, box["y"] + 100)
            page.mouse.down()
            page.mouse.move(box["x"] + 250, box["y"] + 140, steps=5)
            page.mouse.up()
            assert page.evaluate("() => window.avatarlinkPreview.yaw") > 1.5
            assert page.evaluate(CANVAS_STATS, "rig3d") != before

            page.wait_for_timeout(300)
            shot = tmp_path / "preview.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("AVATARLINK_PREVIEW_SCREENSHOT")
            if keep:
                shutil.copyfile(shot, keep)
            page.close()
    finally:
        server.close()
    assert not problems, problems
    # The page talked to its own server only (data: URLs are the decoded frames).
    foreign = [u for u in requests if not (u.startswith(server.url) or u.startswith("data:"))]
    assert not foreign, foreign


def _start_demo(tmp_path: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    """``avatarlink demo`` with the preview on a free port; returns (process, page URL, output)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))  # a receiver for the VMC stream, so sends do not fail
    port = udp.getsockname()[1]
    cmd = [sys.executable, "-m", "avatarlink", "demo", "--seconds", "60", "--quiet"]
    cmd += ["--preview-port", "0", "--send", f"vmc://127.0.0.1:{port}"]
    cmd += ["--record", str(tmp_path / "demo.jsonl")]
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    output: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            output.append(line)
            match = re.search(r"preview: open (http://\S+)", line)
            if match:
                found.append(match.group(1))
                ready.set()
        ready.set()
        udp.close()

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(timeout=60)
    if not found:
        proc.kill()
        pytest.fail("the demo printed no preview URL:\n" + "".join(output))
    return proc, found[0], output


@pytest.mark.slow
def test_page_during_a_demo_run(browser: Any, tmp_path: Path) -> None:
    """The real pipeline (synthetic performer -> pose model -> solver) feeds the page."""
    proc, url, output = _start_demo(tmp_path)
    requests: list[str] = []
    problems: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 640})
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.goto(url)
        page.wait_for_function(
            "() => window.avatarlinkPreview.framesDrawn >= 20"
            " && window.avatarlinkPreview.segmentsDrawn > 10",
            timeout=60000,
        )
        cam = page.evaluate(CANVAS_STATS, "image")
        assert cam["std"] > 10  # the rendered room and performer, not a blank canvas
        assert cam["vivid"] > 100  # the skeleton drawn over it
        msg = page.evaluate("() => window.avatarlinkPreview.lastMessage")
        assert msg["provider"] and msg["stats"]["fps"] > 0
        assert set(msg["timings_ms"]) >= {"inference", "capture"}
        # The skeleton is where the model put it: a confidence colour halfway along a limb.
        pts = np.array([[np.nan if v is None else v for v in p] for p in msg["smoothed"][0]])
        hits = 0
        for a, b in ((5, 7), (6, 8), (11, 13), (12, 14), (5, 6), (11, 12)):
            mid = np.round((pts[a, :2] + pts[b, :2]) / 2)
            if np.isfinite(mid).all():
                r, g, bl, _ = page.evaluate(PIXEL, ["image", int(mid[0]), int(mid[1])])
                hits += max(r, g) > 180 and bl < 90
        assert hits >= 3
        page.wait_for_timeout(500)
        shot = tmp_path / "demo.png"
        page.screenshot(path=str(shot))
        keep = os.environ.get("AVATARLINK_PREVIEW_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)  # a clean stop, as Ctrl-C
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, "".join(output)
    assert not problems, problems
    foreign = [u for u in requests if not (u.startswith(url) or u.startswith("data:"))]
    assert not foreign, foreign
    # The recording of the same run is complete and readable after the clean stop.
    from avatarlink.recording import load_recording

    recording = load_recording(tmp_path / "demo.jsonl")
    assert recording.damage is None and len(recording.frames) >= 20
