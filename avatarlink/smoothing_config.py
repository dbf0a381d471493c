"""The ``smoothing`` configuration section: frozen dataclasses, presets, YAML and CLI overrides.

Every parameter has a name and a unit. A section picks a preset and overrides any key of it::

    smoothing:
      preset: balanced        # responsive | balanced | smooth | mediapipe | none
      filter: kalman          # none | one_euro | kalman | velocity
      one_euro:
        min_cutoff: 0.8       # Hz
      kalman:
        process_noise: 2000   # person-size^2 / s^3

Image-space lengths are in *person sizes* (see ``scale``): the filters see coordinates divided by
the person's on-screen size, so one set of parameters works near and far from the camera. World
space (metres) is not scaled, so there the same numbers read as metres.

Validation errors name the dotted key, the expected range with its unit, the value and the file
(and line, when known):
``smoothing.one_euro.min_cutoff must be > 0 Hz, got -1.0 (config.yaml line 4)``.
Nothing here imports the filters, so the global configuration can fold this section in cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avatarlink.errors import ConfigError

__all__ = [
    "DEFAULT_PRESET",
    "FILTER_KINDS",
    "KALMAN_MODELS",
    "PRESETS",
    "ROTATION_FILTERS",
    "SCALE_MODES",
    "SPEED_MODES",
    "KalmanParams",
    "OneEuroParams",
    "RotationParams",
    "SmoothingConfig",
    "VelocityParams",
    "add_arguments",
    "from_args",
    "from_mapping",
    "load",
    "to_mapping",
    "with_overrides",
]

FILTER_KINDS: tuple[str, ...] = ("none", "one_euro", "kalman", "velocity")
SCALE_MODES: tuple[str, ...] = ("torso", "bbox_diagonal", "bbox_mean", "none")
KALMAN_MODELS: tuple[str, ...] = ("constant_velocity", "constant_acceleration")
ROTATION_FILTERS: tuple[str, ...] = ("none", "one_euro")
SPEED_MODES: tuple[str, ...] = ("keypoint", "axis")


def _f(default: Any, check: str, unit: str = "", choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field carrying its validation rule (``check``) and unit for error messages."""
    return field(default=default, metadata={"check": check, "unit": unit, "choices": choices})


@dataclass(frozen=True)
class OneEuroParams:
    """One-Euro filter parameters (Casiez, Roussel, Vogel, CHI 2012).

    Attributes:
        min_cutoff: Hz; the cutoff at rest. Lower is smoother when still and slower in slow motion.
        beta: s per length unit (image: s per person size; world: s/m); how fast the cutoff rises
            with speed: cutoff = min_cutoff + beta * |speed|.
        d_cutoff: Hz; cutoff of the low-pass applied to the speed estimate.
        speed: ``keypoint``: all coordinates of a keypoint adapt to the norm of its speed (image:
            x, y; world: x, y, z), so smoothing does not depend on the direction of motion;
            ``axis``: each coordinate adapts to its own speed (the reference filter, MediaPipe).
        deadband: person sizes/s (world: m/s); speeds below this leave the cutoff at
            ``min_cutoff`` (roughly the speed sensor noise alone gives a still point), so noise
            does not open the filter. 0 is the reference filter.
    """

    min_cutoff: float = _f(0.5, "gt0", "Hz")
    beta: float = _f(25.0, "ge0", "s per person size")
    d_cutoff: float = _f(2.0, "gt0", "Hz")
    speed: str = _f("keypoint", "choice", choices=SPEED_MODES)
    deadband: float = _f(0.2, "ge0", "person sizes/s")


@dataclass(frozen=True)
class KalmanParams:
    """Kalman filter parameters; one independent filter per coordinate.

    Attributes:
        model: ``constant_velocity`` (state position, velocity; white acceleration noise) or
            ``constant_acceleration`` (position, velocity, acceleration; white jerk noise).
        process_noise: spectral density of the white noise driving the model, in person-size^2/s^3
            (constant velocity) or person-size^2/s^5 (constant acceleration). Higher follows faster.
        measurement_noise: standard deviation of one measurement, in person sizes.
        initial_velocity_std: person sizes/s; the velocity's uncertainty when a track starts.
        initial_acceleration_std: person sizes/s^2; likewise for the constant-acceleration model.

    The estimate depends only on the ratios of these variances, so it is scale-equivariant: the
    units above are what the numbers mean for a filter fed person-size-normalised coordinates.
    """

    model: str = _f("constant_velocity", "choice", choices=KALMAN_MODELS)
    process_noise: float = _f(10.0, "gt0", "person-size^2/s^3")
    measurement_noise: float = _f(0.01, "gt0", "person sizes")
    initial_velocity_std: float = _f(2.0, "gt0", "person sizes/s")
    initial_acceleration_std: float = _f(20.0, "gt0", "person sizes/s^2")


@dataclass(frozen=True)
class VelocityParams:
    """MediaPipe's relative-velocity filter: an EMA whose weight grows with windowed speed.

    Attributes:
        window: frames of past displacements averaged into the speed.
        velocity_scale: s per person size; new-sample weight = 1 - 1 / (1 + velocity_scale*|v|).
        assumed_frame_s: s; a window entry counts only while the window spans at most
            ``(1 + entries) * assumed_frame_s`` (MediaPipe assumes 30 fps: 1/30 s).
    """

    window: int = _f(5, "int_ge1", "frames")
    velocity_scale: float = _f(10.0, "ge0", "s per person size")
    assumed_frame_s: float = _f(1.0 / 30.0, "gt0", "s")


@dataclass(frozen=True)
class RotationParams:
    """Bone-rotation smoothing: a One-Euro on unit quaternions (slerp low-pass).

    Attributes:
        filter: ``one_euro`` or ``none``.
        min_cutoff: Hz; cutoff at rest.
        beta: s/rad; cutoff = min_cutoff + beta * angular speed (rad/s).
        d_cutoff: Hz; cutoff of the angular-speed estimate.
    """

    filter: str = _f("one_euro", "choice", choices=ROTATION_FILTERS)
    min_cutoff: float = _f(1.0, "gt0", "Hz")
    beta: float = _f(0.5, "ge0", "s/rad")
    d_cutoff: float = _f(1.0, "gt0", "Hz")


@dataclass(frozen=True)
class SmoothingConfig:
    """The whole ``smoothing`` section.

    Attributes:
        preset: name of the preset these values started from (informational).
        filter: keypoint filter: ``none``, ``one_euro``, ``kalman`` or ``velocity`` (MediaPipe's).
        score_threshold: keypoints scoring below this (or NaN) do not update their filter.
        lost_after_s: s; a person unseen, or a keypoint missing, for longer restarts from scratch.
        scale: image-space normalisation: ``torso`` (shoulder-to-hip-centre length),
            ``bbox_diagonal``, ``bbox_mean`` ((width + height) / 2, MediaPipe's object scale) or
            ``none`` (pixels). World space is never scaled.
        match_max_distance: person sizes (image) or metres (world); an untracked person farther
            than this from every known person starts a new track.
        fill_missing: when true, a missing keypoint is output at its held/predicted position
            (score unchanged); when false it stays NaN.
        one_euro, kalman, velocity: keypoint filter parameters (``filter`` names the one used).
        rotation: bone-rotation smoothing.
        root: One-Euro on the avatar's root position, in metres (beta in s/m).
    """

    preset: str = _f("balanced", "str")
    filter: str = _f("one_euro", "choice", choices=FILTER_KINDS)
    score_threshold: float = _f(0.3, "unit", "")
    lost_after_s: float = _f(0.5, "gt0", "s")
    scale: str = _f("torso", "choice", choices=SCALE_MODES)
    match_max_distance: float = _f(1.0, "gt0", "person sizes")
    fill_missing: bool = _f(False, "bool")
    one_euro: OneEuroParams = field(default_factory=OneEuroParams)
    kalman: KalmanParams = field(default_factory=KalmanParams)
    velocity: VelocityParams = field(default_factory=VelocityParams)
    rotation: RotationParams = field(default_factory=RotationParams)
    root: OneEuroParams = field(
        default_factory=lambda: OneEuroParams(min_cutoff=1.0, beta=2.0, d_cutoff=1.0, deadband=0.0)
    )


# Presets, from least to most smoothing. The numbers come from `avatarlink bench smoothing`
# (synthetic tracks with known clean motion: jitter at rest against lag in motion). "balanced"
# is the dataclass defaults.
PRESETS: dict[str, SmoothingConfig] = {
    "none": SmoothingConfig(preset="none", filter="none"),
    "responsive": SmoothingConfig(
        preset="responsive",
        one_euro=OneEuroParams(min_cutoff=1.0, beta=30.0, d_cutoff=3.0, deadband=0.1),
        kalman=KalmanParams(process_noise=100.0),
        rotation=RotationParams(min_cutoff=2.0, beta=1.0),
    ),
    "balanced": SmoothingConfig(preset="balanced"),
    "smooth": SmoothingConfig(
        preset="smooth",
        one_euro=OneEuroParams(min_cutoff=0.3, beta=15.0, d_cutoff=1.5, deadband=0.3),
        kalman=KalmanParams(process_noise=1.0),
        rotation=RotationParams(min_cutoff=0.5, beta=0.3),
    ),
    # MediaPipe Pose's own landmark smoothing, for comparison: a per-coordinate One-Euro whose
    # speed is normalised by the object scale (landmark box (w + h) / 2), and its relative
    # velocity filter.
    "mediapipe": SmoothingConfig(
        preset="mediapipe",
        scale="bbox_mean",
        one_euro=OneEuroParams(
            min_cutoff=0.05, beta=80.0, d_cutoff=1.0, speed="axis", deadband=0.0
        ),
        velocity=VelocityParams(window=5, velocity_scale=10.0),
    ),
}
DEFAULT_PRESET = "balanced"


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _where(source: str, lines: Mapping[str, int] | None, dotted: str) -> str:
    """`` (file line N)`` / `` (file)`` / ``""`` for an error message."""
    line = None
    if lines:
        # The nearest enclosing key that has a line (e.g. the section when the key is absent).
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            line = lines.get(".".join(parts[:n]))
            if line is not None:
                break
    if source and line is not None:
        return f" ({source} line {line})"
    if source:
        return f" ({source})"
    if line is not None:
        return f" (line {line})"
    return ""


def _check_value(value: Any, meta: Mapping[str, Any], dotted: str, where: str) -> Any:
    """Validate one scalar against its field's rule; return it converted (int -> float etc.)."""
    check, unit = meta["check"], meta["unit"]
    unit_s = f" {unit}" if unit else ""
    if check == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted} must be true or false, got {value!r}{where}")
        return value
    if check in ("choice", "str"):
        if not isinstance(value, str):
            raise ConfigError(f"{dotted} must be a string, got {value!r}{where}")
        choices = meta["choices"]
        if choices and value not in choices:
            raise ConfigError(f"{dotted} must be one of {list(choices)}, got {value!r}{where}")
        return value
    if check == "int_ge1":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted} must be an integer{unit_s}, got {value!r}{where}")
        if value < 1:
            raise ConfigError(f"{dotted} must be >= 1{unit_s}, got {value}{where}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{dotted} must be a number{unit_s}, got {value!r}{where}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{dotted} must be finite{unit_s}, got {value!r}{where}")
    if check == "gt0" and not number > 0:
        raise ConfigError(f"{dotted} must be > 0{unit_s}, got {number}{where}")
    if check == "ge0" and not number >= 0:
        raise ConfigError(f"{dotted} must be >= 0{unit_s}, got {number}{where}")
    if check == "unit" and not 0.0 <= number <= 1.0:
        raise ConfigError(f"{dotted} must be in [0, 1]{unit_s}, got {number}{where}")
    return number


def _merge(
    base: Any, data: Mapping[str, Any], prefix: str, source: str, lines: Mapping[str, int] | None
) -> Any:
    """``base`` (a frozen dataclass) with the keys of ``data`` replaced, each one validated."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix} must be a mapping of keys, got {type(data).__name__}"
            f"{_where(source, lines, prefix)}"
        )
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        where = _where(source, lines, dotted)
        if key not in fields:
            raise ConfigError(f"{dotted} is not a known key; valid: {sorted(fields)}{where}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(
                current, value if value is not None else {}, dotted, source, lines
            )
        else:
            changes[key] = _check_value(value, fields[key].metadata, dotted, where)
    return dataclasses.replace(base, **changes)


def from_mapping(
    data: Mapping[str, Any] | None,
    source: str = "",
    lines: Mapping[str, int] | None = None,
    prefix: str = "smoothing",
) -> SmoothingConfig:
    """Build and validate a :class:`SmoothingConfig` from the *contents* of a ``smoothing`` section.

    Args:
        data: the section's mapping (``None`` or empty: the default preset). ``preset`` picks the
            starting preset; every other key overrides it (nested sections key by key).
        source: file name for error messages (e.g. ``config.yaml``).
        lines: optional dotted key (``smoothing.one_euro.beta``) -> line number, for messages.
        prefix: the section's dotted name in messages.

    Raises:
        ConfigError: naming the dotted key, the rule with its unit, the value and the file/line.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix} must be a mapping of keys, got {type(data).__name__}"
            f"{_where(source, lines, prefix)}"
        )
    rest = dict(data)
    name = rest.pop("preset", DEFAULT_PRESET)
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(
            f"{prefix}.preset must be one of {sorted(PRESETS)}, got {name!r}"
            f"{_where(source, lines, prefix + '.preset')}"
        )
    config: SmoothingConfig = _merge(PRESETS[name], rest, prefix, source, lines)
    return config


def to_mapping(config: SmoothingConfig) -> dict[str, Any]:
    """The config as plain nested dicts (round-trips through :func:`from_mapping`)."""
    return dataclasses.asdict(config)


def _parse_override(item: str, source: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"smoothing override must look like KEY=VALUE, got {item!r} ({source})")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"smoothing override {item!r}: unreadable value ({source})") from exc
    return key, value


def with_overrides(
    config: SmoothingConfig,
    overrides: Mapping[str, Any] | Sequence[str],
    source: str = "command line",
) -> SmoothingConfig:
    """``config`` with dotted keys replaced: ``{"one_euro.beta": 0.3}``, ``["one_euro.beta=0.3"]``.

    Keys may carry the ``smoothing.`` prefix. A ``preset`` key restarts from that preset and
    applies the other overrides to it. Values given as text are read as YAML scalars.
    """
    items: list[tuple[str, Any]]
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = [_parse_override(item, source) for item in overrides]
    nested: dict[str, Any] = {}
    for key, value in items:
        parts = key.split(".")
        if parts[0] == "smoothing":
            parts = parts[1:]
        if not parts or not all(parts):
            raise ConfigError(f"smoothing override key {key!r} is empty or malformed ({source})")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"smoothing.{'.'.join(parts)} conflicts with another override")
            node = child
        node[parts[-1]] = value
    if "preset" in nested:
        return from_mapping(nested, source)
    return from_mapping(_deep_merge(to_mapping(config), nested), source)


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: str | Path, section: str = "smoothing") -> SmoothingConfig:
    """Read the ``smoothing`` section of a YAML file (absent section: the default preset).

    Raises:
        ConfigError: unreadable file, malformed YAML, or an invalid key (with its line).
    """
    from avatarlink.config import read_yaml  # the one YAML reader (keeps line numbers)

    path = Path(path)
    data, lines = read_yaml(path)
    return from_mapping(data.get(section), str(path), lines, prefix=section)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--smoothing PRESET`` and repeatable ``--smooth KEY=VALUE`` to a command's parser."""
    group = parser.add_argument_group("smoothing")
    group.add_argument(
        "--smoothing",
        metavar="PRESET",
        choices=sorted(PRESETS),
        default=None,
        help=f"smoothing preset: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})",
    )
    group.add_argument(
        "--smooth",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one smoothing parameter, e.g. --smooth one_euro.beta=0.3 (repeatable)",
    )


def from_args(args: argparse.Namespace, base: SmoothingConfig | None = None) -> SmoothingConfig:
    """The config from :func:`add_arguments`' options, applied over ``base`` (YAML or default)."""
    config = base if base is not None else PRESETS[DEFAULT_PRESET]
    preset: str | None = getattr(args, "smoothing", None)
    items: list[str] = list(getattr(args, "smooth", []) or [])
    if preset is not None:
        items = [f"preset={preset}", *items]
    return with_overrides(config, items) if items else config
