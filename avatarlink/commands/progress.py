"""A small progress line on stderr for long exports and replays (only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Shortest time between two redraws of the progress line, seconds.
REDRAW_INTERVAL_S = 0.2
_BAR_WIDTH = 30


class Progress:
    """``label [#####.....]  42%  1234/2900  12.3 s`` redrawn in place on a terminal.

    On anything but a terminal (a log file, a pipe, a test) it stays silent; the commands print a
    summary line at the end either way.
    """

    def __init__(
        self, label: str, total: float, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        """``total`` is the amount that means 100 % (frames, bytes, seconds)."""
        self.label = label
        self.total = max(float(total), 1e-9)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled if enabled is not None else bool(isatty and isatty())
        self._start = time.monotonic()
        self._last_draw = -1.0
        self._shown = False

    def update(self, done: float, note: str = "") -> None:
        """Report progress ``done`` (same unit as ``total``); redraws at most every 0.2 s."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < REDRAW_INTERVAL_S and done < self.total:
            return
        self._last_draw = now
        frac = min(1.0, max(0.0, done / self.total))
        filled = round(frac * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        text = f"\r{self.label} [{bar}] {100 * frac:3.0f}%  {now - self._start:6.1f} s  {note}"
        self.stream.write(text.ljust(79))
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """End the progress line (so the summary starts on a fresh line)."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
