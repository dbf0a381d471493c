"""Global YAML configuration: defaults, file, command-line overrides, errors naming key and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avatarlink.config import (
    DEFAULT_RIG,
    DEFAULT_SEND,
    build_config,
    dump_yaml,
    load_config,
    to_mapping,
)
from avatarlink.errors import ConfigError
from avatarlink.models.registry import DEFAULT_MODEL


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config()
    assert config.source == "0"
    assert config.model == DEFAULT_MODEL
    assert config.rig == DEFAULT_RIG == "unity_humanoid"
    assert config.send == (DEFAULT_SEND,) == ("vmc://127.0.0.1:39539",)
    assert config.capture.stall_timeout_s == 0.9
    assert config.section("smoothing").preset == "balanced"


def test_file_then_command_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "source: 1\n"
        "model: movenet-thunder\n"
        "send: vrchat://127.0.0.1:9000\n"
        "capture:\n  loop: true\n  stall_timeout_s: 0.5\n"
        "smoothing: smooth\n"
        "synthetic:\n  motions: [wave, squat]\n"
        "solver:\n  hold_s: 1.5\n",
    )
    config = load_config(path, {"model": "movenet-lightning", "capture.realtime": True})
    assert config.source == "1"  # `source: 1` is camera 1
    assert config.model == "movenet-lightning"  # the flag wins
    assert config.send == ("vrchat://127.0.0.1:9000",)
    assert config.capture.loop and config.capture.realtime
    assert config.capture.stall_timeout_s == 0.5
    assert config.synthetic.motions == ("wave", "squat")
    assert config.section("smoothing").preset == "smooth"
    assert config.section("solver").hold_s == 1.5
    # A flag may override one key of a section the file gave as a preset name.
    tuned = load_config(path, {"smoothing.one_euro.beta": 0.7})
    assert tuned.section("smoothing").preset == "smooth"
    assert tuned.section("smoothing").one_euro.beta == 0.7


def test_print_config_round_trips(tmp_path: Path) -> None:
    path = _write(tmp_path, "capture:\n  fps: 60\nsmoothing:\n  preset: responsive\n")
    config = load_config(path)
    text = dump_yaml(config)
    again = build_config(yaml.safe_load(text))
    assert to_mapping(again) == to_mapping(config)
    assert "stall_timeout_s: 0.9" in text and "preset: responsive" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("captur: {}\n", r"captur is not a known key \(did you mean 'capture'\?\).* line 1\)"),
        (
            "source: 0\ncapture:\n  stal_timeout_s: 1\n",
            r"capture\.stal_timeout_s is not a known key \(did you mean 'stall_timeout_s'\?\).*"
            r"run\.yaml line 3\)",
        ),
        ("capture:\n  realtime: maybe\n", r"capture\.realtime must be true or false.*line 2\)"),
        ("capture:\n  stall_timeout_s: -1\n", r"capture\.stall_timeout_s must be > 0 s.*line 2\)"),
        (
            "smoothing:\n  one_euro:\n    min_cutoff: -1\n",
            r"smoothing\.one_euro\.min_cutoff must be > 0 Hz.*run\.yaml line 3\)",
        ),
        ("synthetic:\n  motions: [moonwalk]\n", r"synthetic\.motions: unknown motion 'moonwalk'"),
        ("outputs:\n  max_rate_hz: 0\n", r"outputs\.max_rate_hz must be > 0.*line 2\)"),
        ("device: gpu\n", r"device must be one of auto, cpu, cuda, tensorrt.*line 1\)"),
        ("send: [localhost]\n", r"send\[0\] must be a URL"),
        ("threads: two\n", r"threads must be an integer"),
        ("preview: 3\n", r"preview must be a mapping"),
        ("solver:\n  hold: 1\n", r"solver\.hold is not a known key.*line 2\)"),
    ],
)
def test_bad_keys_and_values_name_the_key_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "run.yaml" in str(info.value)


def test_command_line_errors_say_so() -> None:
    with pytest.raises(
        ConfigError, match=r"capture\.stall_timeout_s must be > 0 s.*\(command line\)"
    ):
        load_config(None, {"capture.stall_timeout_s": -2.0})
    with pytest.raises(ConfigError, match=r"smoothing\.one_euro\.beta must be >= 0.*command line"):
        load_config(None, {"smoothing.one_euro.beta": -1.0})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = _write(tmp_path, "capture: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run\.yaml is not valid YAML"):
        load_config(bad)
    scalar = _write(tmp_path, "just a string\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)
    empty = _write(tmp_path, "")
    assert load_config(empty).source == "0"


def test_broken_yaml_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("model: movenet-lightning\nsend: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    text = str(exc.value)
    assert "\n" not in text and str(bad) in text and "line 3" in text
