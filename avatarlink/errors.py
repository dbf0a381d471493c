"""One base exception and a few subclasses; every message names the file, key or value at fault."""

from __future__ import annotations


class AvatarlinkError(Exception):
    """Base class of every error avatarlink raises on purpose (the CLI prints these as one line)."""


class InputError(AvatarlinkError):
    """A source (image, video, folder, camera) or an array handed to a stage is unusable."""


class ConfigError(AvatarlinkError):
    """A configuration file, preset or option is invalid; the message names the dotted key."""


class ModelError(AvatarlinkError):
    """A model file is missing, corrupt or cannot run; the message names the file and the fix."""


class RigError(ConfigError):
    """A rig YAML is invalid; the message names the file, line and dotted key."""


class OutputError(AvatarlinkError):
    """An output (sink) target is invalid, e.g. a malformed ``vmc://host:port``."""


def yaml_problem(exc: Exception) -> str:
    """One line for a PyYAML error: ``line L column C: problem`` (no multi-line context)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1} column {mark.column + 1}: {problem}"
