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
