"""Session recordings: a compact JSON-lines file of keypoints and bone rotations, and its reader.

File format (schema ``avatarlink.recording``, version 1), UTF-8, one JSON object per line:

Header (first line)::

    {"schema": "avatarlink.recording", "version": 1, "model": "movenet-lightning",
     "layout": "coco17", "keypoints": ["nose", ...], "image_size": [640, 480],
     "rotation_space": "world", "rig": {"name": "default", "bones": ["Hips", ...],
     "parents": [-1, 0, ...], "offsets": [[0.0, 0.95, 0.0], ...]}, "created": "2025-...Z",
     "source": "camera:0"}

Frames (one line each)::

    {"frame": 12, "t": 3.2165, "persons": [{"raw": [[x, y, score], ...],
     "smoothed": [[x, y, score], ...], "bones": {"Hips": [qx, qy, qz, qw], ...},
     "root": [x, y, z]}], "timings_ms": {"inference": 6.1, ...}, "latency_ms": 21.4}

- ``raw``/``smoothed``: source-image pixels (origin top-left, +y down) and the score in [0, 1]; a
  missing point is ``[null, null, score]``.
- ``bones``: local rotations relative to the rig's rest pose, quaternions ``xyzw``, in avatarlink's
  world axes (right-handed, +Y up, +Z towards the camera; see :mod:`avatarlink.types`), i.e. as the
  solver hands them to the outputs, **before** any conversion to Unity's left-handed frame.
  ``invalid`` (optional) lists the bones not observed in that frame (their rotation is the one that
  was sent anyway). ``root``: hip position in metres, same axes.
- ``rig``: the hierarchy the rotations refer to (``offsets`` are rest-pose offsets from the parent
  in metres, world axes), so a recording can be exported without the rig file. It may also be a
  plain rig name, or absent.
- ``timings_ms``/``latency_ms``/``id`` are optional.

The writer flushes at least every ``flush_interval_s`` (1 s), so a crash loses at most the last
second. The reader stops at the first line that is not a valid frame (a truncated last line after
a crash, or damage) and reports it in :attr:`RecordingReader.damage`; the frames before it replay.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from avatarlink.errors import InputError, OutputError
from avatarlink.skeletons import KeypointLayout
from avatarlink.types import BoneRotations, FloatArray, FrameResult, Keypoints

log = logging.getLogger(__name__)

SCHEMA = "avatarlink.recording"
SCHEMA_VERSION = 1
#: Axes of the rotations and root positions stored in recordings (see the module docstring).
ROTATION_SPACE = "world"

# Decimal places written per quantity: 0.01 px, 1e-4 score, 1e-6 quaternion, 0.01 mm, 1 us.
_PIXEL_DECIMALS = 2
_SCORE_DECIMALS = 4
_QUAT_DECIMALS = 6
_METRE_DECIMALS = 5
_TIME_DECIMALS = 6
_MS_DECIMALS = 3
# Frames between two progress callbacks of load_recording.
_PROGRESS_EVERY = 500


@dataclass(frozen=True)
class RigSkeleton:
    """The hierarchy recorded rotations refer to: enough for BVH export and 3D views.

    Attributes:
        name: rig name or path it was loaded from.
        bones: humanoid bone names, parent first, length B.
        parents: int64 (B,) parent index, -1 for the root (Hips).
        offsets: float32 (B, 3) rest-pose offset of each bone from its parent, metres, world axes
            (for the root: its rest position above the floor point).
    """

    name: str
    bones: tuple[str, ...]
    parents: npt.NDArray[np.int64]
    offsets: FloatArray

    def __post_init__(self) -> None:
        b = len(self.bones)
        if self.parents.shape != (b,) or self.offsets.shape != (b, 3):
            raise ValueError(
                f"rig {self.name!r}: parents {self.parents.shape} / offsets {self.offsets.shape} "
                f"do not match {b} bones"
            )
        if b and (self.parents[0] != -1 or np.any(self.parents[1:] >= np.arange(1, b))):
            raise ValueError(f"rig {self.name!r}: bones must be ordered parent first, root first")

    @property
    def rest_local_positions(self) -> FloatArray:
        """``offsets`` under the name rigs use, so a skeleton can stand in for a rig (sinks)."""
        return self.offsets

    @classmethod
    def from_rig(cls, rig: Any, name: str | None = None) -> RigSkeleton:
        """From any rig object with ``bones``, ``parents`` and ``rest_local_positions``."""
        return cls(
            name=str(name if name is not None else getattr(rig, "name", "rig")),
            bones=tuple(str(b) for b in rig.bones),
            parents=np.asarray(rig.parents, np.int64),
            offsets=np.asarray(rig.rest_local_positions, np.float32),
        )

    def to_json(self) -> dict[str, Any]:
        """The header's ``rig`` object."""
        return {
            "name": self.name,
            "bones": list(self.bones),
            "parents": self.parents.tolist(),
            "offsets": np.round(self.offsets.astype(np.float64), _METRE_DECIMALS).tolist(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any], where: str) -> RigSkeleton:
        """Parse the header's ``rig`` object; ``InputError`` names ``where`` when malformed."""
        try:
            return cls(
                name=str(value.get("name", "rig")),
                bones=tuple(str(b) for b in value["bones"]),
                parents=np.asarray(value["parents"], np.int64),
                offsets=np.asarray(value["offsets"], np.float32).reshape(-1, 3),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: header key 'rig' is malformed: {exc}") from exc


@dataclass(frozen=True)
class RecordingHeader:
    """What a recording is about (the first line of the file).

    Attributes:
        model: pose model name.
        layout: keypoint layout of ``raw``/``smoothed``.
        rig: the rig hierarchy (preferred), a rig name, or None.
        source: human-readable input name (camera, file).
        image_size: (width, height) of the source frames in pixels, when known.
        created: ISO-8601 UTC time the recording started.
        extra: further header keys, kept as read.
    """

    model: str
    layout: KeypointLayout
    rig: RigSkeleton | str | None = None
    source: str = ""
    image_size: tuple[int, int] | None = None
    created: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rig_name(self) -> str | None:
        """The rig's name (or path), whether the header holds its hierarchy or only its name."""
        return self.rig.name if isinstance(self.rig, RigSkeleton) else self.rig

    def to_json(self) -> dict[str, Any]:
        """The header line as a JSON object."""
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "model": self.model,
            "layout": self.layout.value,
            "keypoints": list(self.layout.names),
            "rotation_space": ROTATION_SPACE,
            "created": self.created or _utc_now(),
            "source": self.source,
        }
        if self.image_size is not None:
            out["image_size"] = [int(self.image_size[0]), int(self.image_size[1])]
        if isinstance(self.rig, RigSkeleton):
            out["rig"] = self.rig.to_json()
        elif self.rig is not None:
            out["rig"] = self.rig
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any], where: str) -> RecordingHeader:
        """Parse and validate a header line; ``InputError`` names ``where`` and the key."""
        if value.get("schema") != SCHEMA:
            raise InputError(
                f"{where}: not an avatarlink recording (header 'schema' is "
                f"{value.get('schema')!r}, expected {SCHEMA!r})"
            )
        version = value.get("version")
        if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
            raise InputError(
                f"{where}: recording schema version {version!r} is not supported "
                f"(this avatarlink reads 1..{SCHEMA_VERSION}; upgrade avatarlink)"
            )
        space = value.get("rotation_space", ROTATION_SPACE)
        if space != ROTATION_SPACE:
            raise InputError(f"{where}: header 'rotation_space' {space!r} is not supported")
        try:
            layout = KeypointLayout.from_name(str(value["layout"]))
        except (KeyError, ValueError) as exc:
            raise InputError(f"{where}: header key 'layout': {exc}") from exc
        rig_value = value.get("rig")
        rig: RigSkeleton | str | None
        if isinstance(rig_value, Mapping):
            rig = RigSkeleton.from_json(rig_value, where)
        else:
            rig = None if rig_value is None else str(rig_value)
        size = value.get("image_size")
        known = {"schema", "version", "model", "layout", "keypoints", "rotation_space", "rig"}
        known |= {"source", "image_size", "created"}
        return cls(
            model=str(value.get("model", "")),
            layout=layout,
            rig=rig,
            source=str(value.get("source", "")),
            image_size=(int(size[0]), int(size[1])) if size else None,
            created=str(value.get("created", "")),
            extra={k: v for k, v in value.items() if k not in known},
        )


@dataclass(frozen=True)
class RecordedPerson:
    """One person of one recorded frame.

    Attributes:
        raw: float32 (K, 3) ``[x, y, score]`` in source pixels before smoothing; NaN x/y if missing.
        smoothed: float32 (K, 3) the same after smoothing.
        bones: bone names of ``rot`` (length B; empty when no rotations were solved).
        rot: float32 (B, 4) local rotations xyzw, world axes (see the module docstring).
        root: float32 (3,) hip position in metres, world axes (NaN when not solved).
        valid: bool (B,) whether each rotation was observed in that frame.
        id: track id, -1 when untracked.
    """

    raw: FloatArray
    smoothed: FloatArray
    bones: tuple[str, ...]
    rot: FloatArray
    root: FloatArray
    valid: npt.NDArray[np.bool_]
    id: int = -1

    def rotations(self, t: float) -> BoneRotations:
        """These rotations as a :class:`BoneRotations` stamped with time ``t`` (seconds)."""
        return BoneRotations(self.bones, self.rot, self.root, self.valid, t, self.id)


@dataclass(frozen=True)
class RecordedFrame:
    """One frame line: ``frame`` index, capture time ``t`` (s), persons, optional timings."""

    frame: int
    t: float
    persons: tuple[RecordedPerson, ...]
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    latency_ms: float = math.nan


def _utc_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="seconds").replace("+00:00", "Z")


def _json_array(values: npt.NDArray[Any], decimals: int) -> str:
    """Compact JSON of a float array with NaN/inf as null (the array holds numbers only)."""
    text = json.dumps(np.round(values.astype(np.float64), decimals).tolist(), separators=(",", ":"))
    return text.replace("NaN", "null").replace("-Infinity", "null").replace("Infinity", "null")


def _points_json(keypoints: Keypoints, person: int) -> str:
    xys = np.empty((keypoints.xyz.shape[1], 3), np.float64)
    xys[:, :2] = np.round(keypoints.xyz[person, :, :2], _PIXEL_DECIMALS)
    xys[:, 2] = np.round(keypoints.score[person], _SCORE_DECIMALS)
    return _json_array(xys, _SCORE_DECIMALS)


def frame_line(result: FrameResult) -> str:
    """The JSON line (without newline) recording one :class:`FrameResult`."""
    raw, smoothed = result.raw, result.smoothed
    count = max(raw.num_persons, smoothed.num_persons, len(result.rotations))
    persons: list[str] = []
    for p in range(count):
        parts: list[str] = []
        if p < raw.num_persons:
            parts.append('"raw":' + _points_json(raw, p))
        if p < smoothed.num_persons:
            parts.append('"smoothed":' + _points_json(smoothed, p))
            if int(smoothed.ids[p]) >= 0:
                parts.append(f'"id":{int(smoothed.ids[p])}')
        if p < len(result.rotations):
            rot = result.rotations[p]
            quats = np.round(rot.rot.astype(np.float64), _QUAT_DECIMALS).tolist()
            # One dumps call for all bones; bone names never contain "NaN", numbers may.
            bones = json.dumps(dict(zip(rot.bones, quats, strict=True)), separators=(",", ":"))
            parts.append('"bones":' + bones.replace("NaN", "null"))
            parts.append('"root":' + _json_array(rot.root_pos, _METRE_DECIMALS))
            if not bool(np.all(rot.valid)):
                invalid = [name for name, ok in zip(rot.bones, rot.valid, strict=True) if not ok]
                parts.append('"invalid":' + json.dumps(invalid, separators=(",", ":")))
        persons.append("{" + ",".join(parts) + "}")
    timings = {k: round(float(v), _MS_DECIMALS) for k, v in result.timings_ms.items()}
    head = f'{{"frame":{int(result.frame.index)},"t":{_finite(result.frame.t, _TIME_DECIMALS)}'
    tail = f',"timings_ms":{json.dumps(timings, separators=(",", ":"))}'
    tail += f',"latency_ms":{_finite(result.latency_ms, _MS_DECIMALS)}}}'
    return head + ',"persons":[' + ",".join(persons) + "]" + tail.replace("NaN", "null")


def _finite(value: float, decimals: int) -> str:
    value = float(value)
    return repr(round(value, decimals)) if math.isfinite(value) else "null"


class Recorder:
    """Writes a recording; a pipeline observer (``pipeline.add_observer(recorder.write)``).

    Each :meth:`write` serialises one frame (well under a millisecond for one person) and appends
    it to a buffered file. The buffer is handed to the operating system at least every
    ``flush_interval_s`` seconds (by the next write, or by a background thread when frames stop
    coming), so a crash of the process loses at most that much.
    """

    def __init__(
        self,
        path: str | Path,
        header: RecordingHeader,
        flush_interval_s: float = 1.0,
    ) -> None:
        """Open ``path`` for writing (the header goes out with the first frame, or on close).

        Args:
            path: output file (parent folders must exist).
            header: model, layout and rig; ``image_size`` is filled from the first frame if None.
            flush_interval_s: longest time between flushes, in seconds.
        """
        self.path = Path(path)
        self.header = header
        self.flush_interval_s = float(flush_interval_s)
        self.frames_written = 0
        try:
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise OutputError(f"cannot write recording {self.path}: {exc.strerror}") from exc
        self._header_written = False
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_idle, name="avatarlink-recorder-flush", daemon=True
        )
        self._flusher.start()

    def _flush_idle(self) -> None:
        """Flush lines that wait longer than the interval because no frame came to flush them."""
        while not self._stop.wait(self.flush_interval_s):
            with self._lock:
                if not self._dirty or self._file is None:
                    continue
                try:
                    self._file.flush()
                except OSError as exc:
                    log.error("cannot write recording %s: %s", self.path, exc.strerror)
                self._dirty = False
                self._last_flush = time.monotonic()

    def _write_header(self, image_size: tuple[int, int] | None) -> None:
        header = self.header
        if header.image_size is None and image_size is not None:
            header = RecordingHeader(
                header.model, header.layout, header.rig, header.source, image_size,
                header.created, header.extra,
            )  # fmt: skip
            self.header = header
        self._put(json.dumps(header.to_json(), separators=(",", ":")))
        self._header_written = True

    def _put(self, line: str) -> None:
        if self._file is None:
            raise OutputError(f"recording {self.path} is closed")
        try:
            self._file.write(line + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write recording {self.path}: {exc.strerror}") from exc

    def write(self, result: FrameResult) -> None:
        """Append one frame (call from the pipeline thread)."""
        line = frame_line(result)
        with self._lock:
            if not self._header_written:
                h, w = result.frame.image.shape[:2]
                self._write_header((int(w), int(h)))
            self._put(line)
            self._dirty = True
            self.frames_written += 1
            now = time.monotonic()
            if now - self._last_flush >= self.flush_interval_s:
                self._flush_locked()
                self._last_flush = now

    __call__ = write

    def flush(self) -> None:
        """Hand buffered lines to the operating system."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                raise OutputError(f"cannot write recording {self.path}: {exc.strerror}") from exc
            self._dirty = False

    def close(self) -> None:
        """Flush and close (idempotent); writes the header if no frame came."""
        self._stop.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join()
        with self._lock:
            if self._file is None:
                return
            if not self._header_written:
                self._write_header(None)
            self._flush_locked()
            self._file.close()
            self._file = None
        log.info("wrote %d frame(s) to %s", self.frames_written, self.path)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _points(value: Any, k: int, key: str) -> FloatArray:
    arr = np.array(value, dtype=np.float32)  # None -> NaN
    if arr.shape != (k, 3):
        raise ValueError(f"'{key}' must be {k} [x, y, score] triples, got shape {arr.shape}")
    return arr


def parse_frame(value: Any, num_keypoints: int) -> RecordedFrame:
    """A :class:`RecordedFrame` from a decoded frame line; ``ValueError`` says what is wrong."""
    if not isinstance(value, dict):
        raise ValueError("a frame line must be a JSON object")
    try:
        frame, t, persons_in = int(value["frame"]), float(value["t"]), value["persons"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"missing or bad key {exc}") from None
    if not math.isfinite(t):
        raise ValueError("'t' is not a finite number")
    persons: list[RecordedPerson] = []
    nan_points = np.full((num_keypoints, 3), np.nan, np.float32)
    for person in persons_in:
        if not isinstance(person, dict):
            raise ValueError("each entry of 'persons' must be an object")
        raw = _points(person["raw"], num_keypoints, "raw") if "raw" in person else nan_points
        smoothed = (
            _points(person["smoothed"], num_keypoints, "smoothed")
            if "smoothed" in person
            else nan_points
        )
        bones_in: dict[str, Any] = person.get("bones") or {}
        names = tuple(bones_in)
        rot = np.array(list(bones_in.values()), dtype=np.float32).reshape(len(names), 4)
        root = np.array(person.get("root", [None] * 3), dtype=np.float32).reshape(3)
        invalid = set(person.get("invalid", ()))
        valid = np.array([n not in invalid for n in names], dtype=bool)
        persons.append(
            RecordedPerson(raw, smoothed, names, rot, root, valid, int(person.get("id", -1)))
        )
    timings = value.get("timings_ms") or {}
    latency = value.get("latency_ms")
    return RecordedFrame(
        frame=frame,
        t=t,
        persons=tuple(persons),
        timings_ms={str(k): float(v) for k, v in timings.items() if v is not None},
        latency_ms=float(latency) if latency is not None else math.nan,
    )


class RecordingReader:
    """Iterates the frames of a recording file, stopping cleanly at a truncated or damaged line.

    After iteration, :attr:`damage` is None for a clean file, else a one-line message naming the
    file, line and byte offset of the damage and how many frames were read before it.
    """

    def __init__(self, path: str | Path) -> None:
        """Open ``path`` and read its header; ``InputError`` when it is not a readable recording."""
        self.path = Path(path)
        self.damage: str | None = None
        self.frames_read = 0
        try:
            self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"cannot read recording {self.path}: {exc.strerror}") from exc
        first = self._file.read(1)
        self._file.seek(0)
        if first and first != b"{":
            self._file.close()
            raise InputError(f"{self.path}: unknown recording format (not JSON lines)")
        line = self._file.readline()
        self._offset = len(line)
        self._line_no = 1
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._file.close()
            what = "empty" if not line.strip() else f"header line is not JSON ({exc})"
            raise InputError(f"{self.path}: not a readable recording: {what}") from None
        if not isinstance(value, dict):
            self._file.close()
            raise InputError(f"{self.path}: header line is not a JSON object")
        self.header = RecordingHeader.from_json(value, str(self.path))
        self.size = self.path.stat().st_size

    @property
    def bytes_read(self) -> int:
        """Bytes of the file consumed so far (for progress)."""
        return self._offset

    def __iter__(self) -> Iterator[RecordedFrame]:
        k = self.header.layout.num_keypoints
        try:
            for line in self._file:
                self._line_no += 1
                offset = self._offset
                self._offset += len(line)
                if not line.strip():
                    continue
                try:
                    frame = parse_frame(json.loads(line), k)
                except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
                    truncated = not line.endswith(b"\n")
                    why = "is truncated" if truncated else f"is damaged ({exc})"
                    self.damage = (
                        f"{self.path}: line {self._line_no} (byte {offset}) {why}; "
                        f"kept the {self.frames_read} frame(s) before it"
                    )
                    log.warning("%s", self.damage)
                    return
                self.frames_read += 1
                yield frame
        finally:
            self._file.close()

    def close(self) -> None:
        """Close the file (iteration closes it too)."""
        self._file.close()


@dataclass(frozen=True)
class Recording:
    """A whole recording in memory: header, frames, and the damage message (None when clean)."""

    path: Path
    header: RecordingHeader
    frames: tuple[RecordedFrame, ...]
    damage: str | None = None

    @property
    def duration_s(self) -> float:
        """Time from the first to the last frame, seconds (0 for fewer than two frames)."""
        return self.frames[-1].t - self.frames[0].t if len(self.frames) > 1 else 0.0

    def track(self, person: int = 0, bones: Sequence[str] | None = None) -> PersonTrack:
        """Per-frame arrays of one person slot (NaN where that person is absent)."""
        return PersonTrack.from_frames(self.frames, self.header, person, bones)


def load_recording(
    path: str | Path, progress: Callable[[int, int], None] | None = None
) -> Recording:
    """Read a whole recording (up to any damage, reported in ``Recording.damage``).

    Args:
        path: the recording file.
        progress: called now and then with ``(bytes_read, file_size)``.
    """
    reader = RecordingReader(path)
    frames: list[RecordedFrame] = []
    for frame in reader:
        frames.append(frame)
        if progress is not None and len(frames) % _PROGRESS_EVERY == 0:
            progress(reader.bytes_read, reader.size)
    if progress is not None:
        progress(reader.size, reader.size)
    return Recording(reader.path, reader.header, tuple(frames), reader.damage)


@dataclass(frozen=True)
class PersonTrack:
    """One person slot of a recording as arrays over T frames.

    Attributes:
        frame: int64 (T,) frame indices; t: float64 (T,) capture times in seconds.
        present: bool (T,) whether the person appears in each frame.
        raw, smoothed: float32 (T, K, 3) ``[x, y, score]`` in source pixels, NaN where absent.
        bones: bone names of ``rot`` (length B).
        rot: float32 (T, B, 4) local rotations xyzw (world axes), NaN where absent.
        root: float32 (T, 3) hip position in metres, NaN where absent.
        valid: bool (T, B) rotation observed in that frame.
        timings_ms: stage name -> float64 (T,) milliseconds (NaN where not recorded).
        latency_ms: float64 (T,) capture-to-sent latency, NaN where not recorded.
    """

    frame: npt.NDArray[np.int64]
    t: npt.NDArray[np.float64]
    present: npt.NDArray[np.bool_]
    raw: FloatArray
    smoothed: FloatArray
    bones: tuple[str, ...]
    rot: FloatArray
    root: FloatArray
    valid: npt.NDArray[np.bool_]
    timings_ms: Mapping[str, npt.NDArray[np.float64]]
    latency_ms: npt.NDArray[np.float64]

    @classmethod
    def from_frames(
        cls,
        frames: Sequence[RecordedFrame],
        header: RecordingHeader,
        person: int = 0,
        bones: Sequence[str] | None = None,
    ) -> PersonTrack:
        """Gather ``person`` from every frame; ``bones`` defaults to the header rig's bones (else
        the union of recorded bone names in first-seen order)."""
        n, k = len(frames), header.layout.num_keypoints
        if bones is None:
            if isinstance(header.rig, RigSkeleton):
                bones = header.rig.bones
            else:
                seen: dict[str, None] = {}
                for fr in frames:
                    for pr in fr.persons:
                        seen.update(dict.fromkeys(pr.bones))
                bones = tuple(seen)
        names = tuple(bones)
        column = {name: i for i, name in enumerate(names)}
        raw = np.full((n, k, 3), np.nan, np.float32)
        smoothed = np.full((n, k, 3), np.nan, np.float32)
        rot = np.full((n, len(names), 4), np.nan, np.float32)
        root = np.full((n, 3), np.nan, np.float32)
        valid = np.zeros((n, len(names)), bool)
        present = np.zeros(n, bool)
        stages: dict[str, None] = {}
        for fr in frames:
            stages.update(dict.fromkeys(fr.timings_ms))
        timings = {s: np.full(n, np.nan) for s in stages}
        latency = np.full(n, np.nan)
        for i, fr in enumerate(frames):
            for s, ms in fr.timings_ms.items():
                timings[s][i] = ms
            latency[i] = fr.latency_ms
            if person >= len(fr.persons):
                continue
            pr = fr.persons[person]
            present[i] = True
            raw[i], smoothed[i], root[i] = pr.raw, pr.smoothed, pr.root
            if pr.bones:
                cols = np.array([column.get(b, -1) for b in pr.bones], np.int64)
                keep = cols >= 0
                rot[i, cols[keep]] = pr.rot[keep]
                valid[i, cols[keep]] = pr.valid[keep]
        return cls(
            frame=np.array([fr.frame for fr in frames], np.int64),
            t=np.array([fr.t for fr in frames], np.float64),
            present=present,
            raw=raw,
            smoothed=smoothed,
            bones=names,
            rot=rot,
            root=root,
            valid=valid,
            timings_ms=timings,
            latency_ms=latency,
        )
