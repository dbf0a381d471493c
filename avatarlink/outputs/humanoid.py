"""Humanoid bone names as the sinks check them (ASCII ``HumanBodyBones``); left/right mirroring."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ConfigError
from avatarlink.rig import HUMAN_BONES

#: ``UnityEngine.HumanBodyBones`` in enum order: the index of a name is its enum value (0..54).
HUMAN_BODY_BONES: tuple[str, ...] = HUMAN_BONES

_BONE_SET = frozenset(HUMAN_BODY_BONES)


def validate_bone_names(names: Sequence[str], where: str) -> None:
    """Raise :class:`ConfigError` unless every name is an ASCII ``HumanBodyBones`` name, once each.

    Args:
        names: bone names, e.g. a rig's ``bones``.
        where: what the names come from, for the message (a file, an option).
    """
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.isascii():
            raise ConfigError(f"{where}: bone {i} name {name!r} is not an ASCII string")
        if name not in _BONE_SET:
            raise ConfigError(
                f"{where}: bone {i} name {name!r} is not a Unity HumanBodyBones name "
                f"(e.g. Hips, LeftUpperArm, RightIndexProximal)"
            )
        if name in seen:
            raise ConfigError(f"{where}: bone {name!r} is listed twice")
        seen.add(name)


def mirror_name(name: str) -> str:
    """The left/right counterpart of a bone name (``LeftHand`` <-> ``RightHand``), else itself."""
    if name.startswith("Left"):
        return "Right" + name[4:]
    if name.startswith("Right"):
        return "Left" + name[5:]
    return name


def mirror_index(names: Sequence[str], where: str) -> npt.NDArray[np.int64]:
    """Index of each bone's left/right counterpart in ``names``, shape (B,).

    Raises:
        ConfigError: a sided bone whose counterpart is absent (mirroring could not move it).
    """
    index = {name: i for i, name in enumerate(names)}
    out = np.arange(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        other = mirror_name(name)
        if other not in index:
            raise ConfigError(f"{where}: mirroring needs {other!r} as the counterpart of {name!r}")
        out[i] = index[other]
    return out
