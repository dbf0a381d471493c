"""The global YAML configuration of ``avatarlink run``: one file for everything, CLI flags on top.

A complete file (every key optional; ``avatarlink run --print-config`` shows the merged result)::

    source: 0                       # camera index, video, image folder, URL, or synthetic
    model: movenet-lightning
    max_persons: 1                  # people to track with multi-person models (one avatar each)
    device: auto                    # auto | cpu | cuda | tensorrt
    threads: null                   # CPU inference threads (null: all cores but one)
    rig: unity_humanoid             # a name in rigs/ or a path to a rig YAML
    profile: null                   # calibration profile YAML
    send: [vmc://127.0.0.1:39539]   # one or more vmc:// or vrchat:// URLs
    seconds: null                   # stop after this many seconds
    quiet: false                    # no live status line
    capture: {realtime: false, loop: false, stall_timeout_s: 0.9, ...}
    synthetic: {width: 640, height: 480, fps: 30, motions: [], ...}
    outputs: {max_rate_hz: null, mirror: false, ...}
    status: {interval_s: 0.25, log_interval_s: 10.0}
    pipeline: {overlap: false, keepalive_hz: 10, ...}
    tracking: {crop: true, min_score: 0.2, hold: 0.1, ...}   # crop tracking (single-pose models)
    smoothing: {preset: balanced, ...}   # or just: smoothing: balanced
    lift: {fov_deg: 60, ...}        # avatarlink.lift.LiftConfig (the camera's horizontal FOV)
    solver: {...}                   # avatarlink.solver.SolverConfig
    preview: {...}                  # the preview page/window (see avatarlink.commands.observers)
    record: {...}                   # session recording
    calibration: {...}              # avatarlink calibrate

Sections owned by other modules are validated by the function registered in :data:`SECTIONS`
(``smoothing``, ``solver``, ``lift``) or by their owner when used (:data:`PASSTHROUGH_SECTIONS`);
each error names the dotted key, the file and the line:
``capture.stall_timeout_s must be > 0 s, got -1 (run.yaml line 4)``. Unknown keys are errors that
name the key and suggest the nearest valid one.

Precedence: built-in defaults < the config file < command-line flags (given as dotted keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avatarlink.capture import CaptureOptions
from avatarlink.errors import ConfigError, yaml_problem
from avatarlink.models.registry import DEFAULT_MODEL
from avatarlink.outputs.base import SinkOptions
from avatarlink.pipeline import PipelineOptions
from avatarlink.session import DEVICES
from avatarlink.status import StatusOptions
from avatarlink.synthetic import SyntheticOptions
from avatarlink.tracking import CropTrackingConfig

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "0"
DEFAULT_RIG = "unity_humanoid"
DEFAULT_SEND = "vmc://127.0.0.1:39539"
COMMAND_LINE = "command line"

#: Sections validated by other modules: name -> ``"module:function"``. The function is called as
#: ``function(data, source, lines, prefix)`` (data: the section's contents; source: file name;
#: lines: dotted key -> line; prefix: the section name) and returns the validated section. A
#: section whose module is absent is kept as plain data.
SECTIONS: dict[str, str] = {
    "smoothing": "avatarlink.smoothing_config:from_mapping",
    "solver": "avatarlink.solver:solver_config_from_mapping",
    "lift": "avatarlink.lift:lift_config_from_mapping",
}

#: Sections accepted as plain mappings whose owners validate them when they use them.
PASSTHROUGH_SECTIONS: tuple[str, ...] = (
    "calibration",
    "preview",
    "record",
)


@dataclass(frozen=True)
class AppConfig:
    """The merged configuration of one run (see the module docstring for each key)."""

    source: str = DEFAULT_SOURCE
    model: str = DEFAULT_MODEL
    max_persons: int = 1
    device: str = "auto"
    threads: int | None = None
    rig: str = DEFAULT_RIG
    profile: str | None = None
    send: tuple[str, ...] = (DEFAULT_SEND,)
    seconds: float | None = None
    quiet: bool = False
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    synthetic: SyntheticOptions = field(default_factory=SyntheticOptions)
    outputs: SinkOptions = field(default_factory=SinkOptions)
    status: StatusOptions = field(default_factory=StatusOptions)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    tracking: CropTrackingConfig = field(default_factory=CropTrackingConfig)
    #: Sections of :data:`SECTIONS` and :data:`PASSTHROUGH_SECTIONS`, validated, by name.
    sections: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        """A registered section's validated value (its default when the file has none)."""
        return self.sections.get(name)


_TOP_DATACLASS_SECTIONS = ("capture", "synthetic", "outputs", "status", "pipeline", "tracking")


# ---------------------------------------------------------------------------------------------
# Public API


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> AppConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (dotted keys).

    Args:
        path: a YAML config file, or None.
        overrides: dotted key -> value from the command line, e.g. ``{"capture.loop": True}``.

    Raises:
        ConfigError: unreadable file, malformed YAML, unknown key or invalid value (the message
            names the dotted key and the file and line, or "command line").
    """
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    source = ""
    if path is not None:
        source = str(path)
        data, lines = read_yaml(Path(path))
    overridden: set[str] = set()
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
        overridden.add(dotted)
    return build_config(data, source, lines, overridden)


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML mapping and its dotted key -> 1-based line map.

    Raises:
        ConfigError: missing/unreadable file, malformed YAML, or a top level that is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(exc)}") from exc
    lines: dict[str, int] = {}
    if root is not None:
        _line_map(root, "", lines)
    if data is None:
        return {}, lines
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys, got {type(data).__name__}")
    return data, lines


def build_config(
    data: Mapping[str, Any],
    source: str = "",
    lines: Mapping[str, int] | None = None,
    overridden: set[str] | None = None,
) -> AppConfig:
    """Validate a whole configuration mapping into an :class:`AppConfig`."""
    where = _Where(source, lines or {}, overridden or set())
    if not isinstance(data, Mapping):
        raise ConfigError(f"the configuration must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(AppConfig)} - {"sections"}
    known |= set(SECTIONS) | set(PASSTHROUGH_SECTIONS)
    values: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key not in known:
            raise ConfigError(_unknown(key, known, where(key)))
        if key in SECTIONS:
            sections[key] = _validate_section(key, value, where)
        elif key in PASSTHROUGH_SECTIONS:
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a mapping of keys, got {value!r}{where(key)}")
            sections[key] = dict(value or {})
        elif key in _TOP_DATACLASS_SECTIONS:
            default = getattr(AppConfig(), key)
            values[key] = _build_dataclass(type(default), value, key, where)
        else:
            values[key] = _convert_top(key, value, where)
    for name in SECTIONS:
        if name not in sections:
            sections[name] = _validate_section(name, None, where)
    return AppConfig(**values, sections=sections)


def to_mapping(config: AppConfig) -> dict[str, Any]:
    """The configuration as plain nested data (what ``--print-config`` shows; loads back)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "sections":
            for name, section in value.items():
                out[name] = _plain(section)
        else:
            out[f.name] = _plain(value)
    return out


def dump_yaml(config: AppConfig) -> str:
    """YAML text of :func:`to_mapping`."""
    return yaml.safe_dump(to_mapping(config), sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------------------------------------
# Helpers


class _Where:
    """Formats `` (file line N)`` / `` (command line)`` for a dotted key."""

    def __init__(self, source: str, lines: Mapping[str, int], overridden: set[str]) -> None:
        self.source, self.lines, self.overridden = source, lines, overridden

    def __call__(self, dotted: str) -> str:
        if dotted in self.overridden:
            return f" ({COMMAND_LINE})"
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            line = self.lines.get(".".join(parts[:n]))
            if line is not None:
                return f" ({self.source} line {line})" if self.source else f" (line {line})"
        return f" ({self.source})" if self.source else ""


def _unknown(dotted: str, valid: set[str], where: str) -> str:
    name = dotted.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, sorted(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{dotted} is not a known key{hint}; valid: {', '.join(sorted(valid))}{where}"


def _validate_section(name: str, value: Any, where: _Where) -> Any:
    module_name, _, function_name = SECTIONS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        log.debug("section %s: validator %s not available; kept as given", name, module_name)
        return value
    validator: Callable[..., Any] = getattr(module, function_name)
    if isinstance(value, str) and name == "smoothing":
        value = {"preset": value}  # `smoothing: smooth` is short for `smoothing: {preset: smooth}`
    lines = {key: line for key, line in where.lines.items() if key not in where.overridden}
    if any(key == name or key.startswith(name + ".") for key in where.overridden):
        return validator(value, COMMAND_LINE, lines, name)
    return validator(value, where.source, lines, name)


def _convert_top(key: str, value: Any, where: _Where) -> Any:
    if key == "source" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `source: 0` is camera 0
    if key == "send" and isinstance(value, str):
        value = [value]
    hint = typing.get_type_hints(AppConfig)[key]
    value = _convert(value, hint, key, where)
    if key == "device" and value not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {value!r}{where(key)}")
    if key == "max_persons" and value < 1:
        raise ConfigError(f"max_persons must be >= 1, got {value!r}{where(key)}")
    if key == "threads" and value is not None and value < 1:
        raise ConfigError(f"threads must be >= 1 or null, got {value!r}{where(key)}")
    if key == "seconds" and value is not None and not value > 0:
        raise ConfigError(f"seconds must be > 0 or null, got {value!r}{where(key)}")
    if key in ("source", "model", "rig") and not value.strip():
        raise ConfigError(f"{key} must not be empty{where(key)}")
    if key == "send":
        for i, url in enumerate(value):
            if "://" not in url:
                raise ConfigError(
                    f"send[{i}] must be a URL such as vmc://127.0.0.1:39539, got {url!r}"
                    f"{where(key)}"
                )
    return value


def _build_dataclass(cls: type[Any], value: Any, prefix: str, where: _Where) -> Any:
    """A frozen dataclass from a mapping, every key checked; the class's own checks re-worded."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{prefix} must be a mapping of keys, got {value!r}{where(prefix)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        dotted = f"{prefix}.{key}"
        if key not in fields:
            raise ConfigError(_unknown(dotted, fields, where(dotted)))
        kwargs[key] = _convert(item, hints[key], dotted, where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        message = str(exc)
        bad = next((k for k in kwargs if f"{prefix}.{k}" in message or f"{k} " in message), None)
        if bad is not None and message.startswith(f"{bad} "):
            message = f"{prefix}.{message}"  # the class names the key without its section
        suffix = where(f"{prefix}.{bad}") if bad else where(prefix)
        raise ConfigError(message + suffix) from exc


def _convert(value: Any, hint: Any, dotted: str, where: _Where) -> Any:
    """Check ``value`` against a type hint (bool, int, float, str, X | None, tuple[str, ...])."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted} must be true or false, got {value!r}{where(dotted)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted} must be an integer, got {value!r}{where(dotted)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted} must be a number, got {value!r}{where(dotted)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{dotted} must be finite, got {value!r}{where(dotted)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{dotted} must be a string, got {value!r}{where(dotted)}")
        return value
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted} must be a list, got {value!r}{where(dotted)}")
        return tuple(_convert(v, args[0], f"{dotted}[{i}]", where) for i, v in enumerate(value))
    raise ConfigError(f"{dotted}: unsupported option type {hint}{where(dotted)}")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"malformed key {dotted!r} ({COMMAND_LINE})")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "smoothing":
            child = {"preset": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def _line_map(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    """Dotted key -> 1-based line for every key of a composed YAML mapping node."""
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
        out[dotted] = key_node.start_mark.line + 1
        _line_map(value_node, dotted, out)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
