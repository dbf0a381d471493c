"""VRChat OSC trackers: ``vrchat://127.0.0.1:9000``.

VRChat accepts up to 8 full-body trackers and a head reference over OSC::

    /tracking/trackers/{1..8}/position   f x y z      metres, Unity world space
    /tracking/trackers/{1..8}/rotation   f x y z      Euler degrees, applied Z, X, Y (Unity order)
    /tracking/trackers/head/position     f x y z      used by VRChat only to align the playspace
    /tracking/trackers/head/rotation     f x y z

Slots follow SlimeVR's assignment (1 hip, 2 left foot, 3 right foot, 4 left knee, 5 right knee,
6 chest, 7 left elbow, 8 right elbow); VRChat recommends hips and feet, the default subset. Tracker
poses come from forward kinematics of the rig with the solved local rotations, scaled so the rig's
stature matches the user's height when ``height_m`` is given, with the floor at y = 0. One bundle
per update (split only if it exceeds the datagram limit). Nothing is sent while nobody is seen.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ConfigError
from avatarlink.outputs.base import (
    SinkOptions,
    UdpPoseSink,
    options_from,
    parse_target,
)
from avatarlink.outputs.humanoid import validate_bone_names
from avatarlink.outputs.osc_encode import FixedBundles, MessageSpec
from avatarlink.outputs.udp import Datagram
from avatarlink.outputs.unity_space import (
    positions_to_unity,
    quaternions_to_unity,
    unity_euler_degrees,
)
from avatarlink.types import RigLike

DEFAULT_PORT = 9000

#: Tracker slot -> humanoid bones that can provide it, first present wins (SlimeVR's assignment).
TRACKER_SLOTS: dict[int, tuple[str, ...]] = {
    1: ("Hips",),
    2: ("LeftFoot",),
    3: ("RightFoot",),
    4: ("LeftLowerLeg",),
    5: ("RightLowerLeg",),
    6: ("Chest", "UpperChest", "Spine"),
    7: ("LeftLowerArm",),
    8: ("RightLowerArm",),
}


@dataclasses.dataclass(frozen=True)
class VrchatOptions(SinkOptions):
    """VRChat tracker options (plus :class:`SinkOptions`).

    Attributes:
        trackers: tracker slots to send, from 1..8 (default hips and feet).
        head: also send ``/tracking/trackers/head`` for playspace alignment.
        height_m: the user's height in metres; the rig is scaled to it. None keeps the rig's size.
        head_height_ratio: height of the Head bone's origin (skull base, about chin level) as a
            fraction of stature; 0.87 after Drillis & Contini's body-segment proportions.
        floor_y_m: the floor's height in the rig's rest frame; None takes 0 when the rig's rest
            pose is above y = 0 (rig origin on the floor), else its lowest bone.
    """

    trackers: tuple[int, ...] = (1, 2, 3)
    head: bool = True
    height_m: float | None = None
    head_height_ratio: float = 0.87
    floor_y_m: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [s for s in self.trackers if s not in TRACKER_SLOTS]
        if bad or len(set(self.trackers)) != len(self.trackers):
            raise ConfigError(f"trackers must be distinct slots from 1..8, got {self.trackers}")
        if not self.trackers and not self.head:
            raise ConfigError("no trackers selected and head is off: nothing to send")
        if self.height_m is not None and not 0.5 <= self.height_m <= 2.5:
            raise ConfigError(f"height_m must be 0.5..2.5 m, got {self.height_m}")
        if not 0.5 < self.head_height_ratio < 1.0:
            raise ConfigError(
                f"head_height_ratio must be in (0.5, 1), got {self.head_height_ratio}"
            )


class VrchatSink(UdpPoseSink):
    """Streams tracker poses computed from a rig's bone rotations to VRChat.

    Attributes:
        slots: the OSC slot names sent, in order (``"1"``.. ``"8"``, ``"head"``).
        slot_bones: index into the rig's bones of each slot.
        scale: metres of the user per metre of the rig.
        floor_y: the floor height in the rig's rest frame, metres.
    """

    scheme: ClassVar[str] = "vrchat"
    default_port: ClassVar[int] = DEFAULT_PORT

    def __init__(
        self,
        host: str,
        port: int,
        bones: Sequence[str],
        parents: npt.ArrayLike,
        rest_local_positions: npt.ArrayLike,
        options: VrchatOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open a sender.

        Args:
            host, port: VRChat's OSC input (default 127.0.0.1:9000).
            bones: B ``HumanBodyBones`` names, parent first.
            parents: int (B,) parent index, -1 for the root.
            rest_local_positions: (B, 3) metres, world frame, rest offset of each bone from its
                parent (the root's from the rig origin).
            options: tracker subset, height, rate cap, mirroring, ...

        Raises:
            ConfigError: bad names or hierarchy, or a selected tracker the rig cannot provide.
        """
        options = options or VrchatOptions()
        where = f"vrchat://{host}:{port}"
        validate_bone_names(bones, where)
        self.bones = tuple(bones)
        num = len(self.bones)
        self._parents = np.asarray(parents, np.int64)
        self._rest = np.asarray(rest_local_positions, np.float32)
        if self._parents.shape != (num,) or np.any(self._parents >= np.arange(num)):
            raise ConfigError(
                f"{where}: parents must be ({num},) with each parent before its child"
            )
        if self._rest.shape != (num, 3) or not np.all(np.isfinite(self._rest)):
            raise ConfigError(f"{where}: rest_local_positions must be finite ({num}, 3)")

        index = {name: i for i, name in enumerate(self.bones)}
        slots: list[tuple[str, int]] = []
        for slot in options.trackers:
            found = next((index[b] for b in TRACKER_SLOTS[slot] if b in index), None)
            if found is None:
                raise ConfigError(
                    f"{where}: tracker {slot} needs one of "
                    f"{', '.join(TRACKER_SLOTS[slot])} in the rig"
                )
            slots.append((str(slot), found))
        if options.head:
            if "Head" not in index:
                raise ConfigError(f"{where}: the head reference needs a Head bone in the rig")
            slots.append(("head", index["Head"]))
        self.slots = tuple(s for s, _ in slots)
        self.slot_bones = np.array([i for _, i in slots], np.int64)

        rest_world = _rest_world_positions(self._parents, self._rest)
        low = float(rest_world[:, 1].min())
        self.floor_y = options.floor_y_m if options.floor_y_m is not None else min(0.0, low)
        self.scale = 1.0
        if options.height_m is not None:
            if "Head" not in index:
                raise ConfigError(f"{where}: height_m needs a Head bone to measure the rig")
            stature = (rest_world[index["Head"], 1] - self.floor_y) / options.head_height_ratio
            if not stature > 0:
                raise ConfigError(f"{where}: the rig's Head is not above its floor")
            self.scale = float(options.height_m / stature)
        self._levels = _fk_levels(self._parents, self.slot_bones)

        specs = []
        for name in self.slots:
            specs.append(MessageSpec(f"/tracking/trackers/{name}/position", "fff"))
            specs.append(MessageSpec(f"/tracking/trackers/{name}/rotation", "fff"))
        self.layout = FixedBundles(specs, options.max_datagram)
        self._floats = np.zeros((len(self.slots), 2, 3), np.float32)
        super().__init__(host, port, bones, options, clock=clock)

    @classmethod
    def from_rig(
        cls, rig: RigLike, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options: Any
    ) -> VrchatSink:
        """A sender for a rig (with ``bones``, ``parents`` and ``rest_local_positions``)."""
        opts = options_from(VrchatOptions, f"vrchat://{host}:{port}", {}, options)
        return cls(host, port, rig.bones, rig.parents, rig.rest_local_positions, opts)

    @classmethod
    def from_url(cls, url: str, rig: RigLike, **options: Any) -> VrchatSink:
        """``vrchat://HOST[:PORT][?trackers=1,2,3&height_m=1.7...]``; URL options win."""
        host, port, query = parse_target(url, cls.scheme, cls.default_port)
        opts = options_from(VrchatOptions, url, query, options)
        return cls(host, port, rig.bones, rig.parents, rig.rest_local_positions, opts)

    def tracker_poses(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """World poses of the slots for the held pose, in avatarlink's frame, scaled, floor at 0.

        Returns:
            positions float32 (S, 3) metres and rotations float32 (S, 4) xyzw, S = len(slots).
        """
        local = self.state.rot
        world_rot = np.zeros_like(local)
        world_pos = np.zeros((len(self.bones), 3), np.float32)
        for children, parents in self._levels:
            roots = parents < 0
            if np.any(roots):
                c = children[roots]
                world_rot[c] = local[c]
                world_pos[c] = self._rest[c] + self.state.root_offset
            c, p = children[~roots], parents[~roots]
            if c.size:
                world_rot[c] = _qmul(world_rot[p], local[c])
                world_pos[c] = world_pos[p] + _qrot(world_rot[p], self._rest[c])
        pos = (world_pos[self.slot_bones] - np.array([0, self.floor_y, 0], np.float32)) * self.scale
        return pos.astype(np.float32), world_rot[self.slot_bones]

    def _frame(self, elapsed: float) -> Sequence[Datagram]:
        pos, rot = self.tracker_poses()
        self._floats[:, 0] = positions_to_unity(pos)
        self._floats[:, 1] = unity_euler_degrees(quaternions_to_unity(rot))
        return self.layout.fill(self._floats.ravel())

    def _idle(self, elapsed: float) -> Sequence[Datagram]:
        return []


def _rest_world_positions(
    parents: npt.NDArray[np.int64], rest: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Rest positions (B, 3) in the rig frame: sums of local offsets along each chain."""
    world = np.zeros_like(rest)
    for i, p in enumerate(parents):  # configuration time only
        world[i] = rest[i] + (world[p] if p >= 0 else 0.0)
    return world


def _fk_levels(
    parents: npt.NDArray[np.int64], targets: npt.NDArray[np.int64]
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Ancestors of ``targets`` by depth: [(children, their parents)], root level first."""
    needed: set[int] = set()
    for t in targets.tolist():
        while t >= 0 and t not in needed:
            needed.add(t)
            t = int(parents[t])
    depth: dict[int, int] = {}
    for i in sorted(needed):  # parents come first
        p = int(parents[i])
        depth[i] = 0 if p < 0 else depth[p] + 1
    levels = []
    for d in range(max(depth.values()) + 1 if depth else 0):
        kids = np.array([i for i in sorted(needed) if depth[i] == d], np.int64)
        levels.append((kids, parents[kids]))
    return levels


def _qmul(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Hamilton products a * b of (N, 4) xyzw quaternions (b applied first)."""
    ax, ay, az, aw = a.T
    bx, by, bz, bw = b.T
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=1,
    ).astype(np.float32)


def _qrot(q: npt.NDArray[np.float32], v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rotate (N, 3) vectors by (N, 4) xyzw unit quaternions."""
    u, w = q[:, :3], q[:, 3:4]
    t = 2.0 * np.cross(u, v)
    return (v + w * t + np.cross(u, t)).astype(np.float32)
