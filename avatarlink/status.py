"""The one-line live status of a run: fps, latency, provider, person found, packets sent.

On a terminal the line is rewritten in place (carriage return) at most every ``interval_s``; when
the stream is not a terminal (a log file, a pipe) one full line is written every
``log_interval_s`` so logs are not flooded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from avatarlink.errors import ConfigError


@dataclass(frozen=True)
class StatusOptions:
    """How often the status is shown.

    Attributes:
        interval_s: seconds between refreshes of the in-place line on a terminal.
        log_interval_s: seconds between full lines when the stream is not a terminal.
    """

    interval_s: float = 0.25
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        for key in ("interval_s", "log_interval_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"status.{key} must be > 0 s, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class StatusFields:
    """What the status line shows.

    Attributes:
        fps: frames processed per second (recent average).
        latency_ms: capture-to-send latency of the last frame, ms (NaN when none yet).
        provider: execution provider running the model.
        person: whether a person was found in the last frame.
        packets_sent: datagrams sent so far, all outputs together.
        dropped: frames dropped by the capture (latest-frame-wins) so far.
        errors: stage errors plus send errors so far.
        state: capture state (``ok``, ``lost``, ``ended``...).
    """

    fps: float
    latency_ms: float
    provider: str
    person: bool
    packets_sent: int
    dropped: int
    errors: int
    state: str


def format_status(fields: StatusFields) -> str:
    """The status as one line without a newline."""
    latency = "-" if fields.latency_ms != fields.latency_ms else f"{fields.latency_ms:5.1f} ms"
    tracking = "person" if fields.person else "no person"
    if fields.state == "lost":
        tracking = "SOURCE LOST (reconnecting)"
    parts = [
        f"{fields.fps:5.1f} fps",
        f"latency {latency}",
        fields.provider,
        tracking,
        f"sent {fields.packets_sent}",
        f"dropped {fields.dropped}",
    ]
    if fields.errors:
        parts.append(f"errors {fields.errors}")
    return " | ".join(parts)


class StatusLine:
    """Writes :func:`format_status` lines to ``stream`` without spamming it.

    Args:
        stream: where to write (the CLI passes stderr).
        options: refresh intervals.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        stream: TextIO,
        options: StatusOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.options = options or StatusOptions()
        self._clock = clock
        isatty = getattr(stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self._interval = (
            self.options.interval_s if self.interactive else self.options.log_interval_s
        )
        self._next = clock() + (0.0 if self.interactive else self._interval)
        self._width = 0
        self.lines_written = 0

    def update(self, fields: StatusFields, force: bool = False) -> bool:
        """Show ``fields`` if the refresh interval has passed (or ``force``); True when shown."""
        now = self._clock()
        if not force and now < self._next:
            return False
        self._next = now + self._interval
        text = format_status(fields)
        if self.interactive:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.lines_written += 1
        return True

    def close(self) -> None:
        """End the in-place line so later output starts on a fresh line."""
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
