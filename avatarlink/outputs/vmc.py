"""VMC protocol sender: avatarlink as a "Performer" driving a "Marionette" (EVMC4U, VSeeFace,
Warudo, VNyan, VMC4B, ...), default ``vmc://127.0.0.1:39539``.

Per frame (VMC protocol, v2.7 forms), in this order, packed into as few OSC bundles as fit the
datagram limit (VSeeFace expects bundles):

=====================  ==========================================================================
``/VMC/Ext/Root/Pos``  s ``"root"``, f px py pz, f qx qy qz qw: the avatar root in Unity space.
``/VMC/Ext/Bone/Pos``  one per bone: s HumanBodyBones name, f px py pz (the bone's rest local
                       position: VSeeFace and others use it, zeros collapse the avatar), f qx qy
                       qz qw (its local rotation relative to the rest pose).
``/VMC/Ext/OK``        i loaded (1), i calibration state (3 = calibrated), i calibration mode
                       (0 = normal), i tracking status (1 = a person is tracked, 0 = not).
``/VMC/Ext/T``         f seconds since the first frame sent (float32 keeps ms resolution).
=====================  ==========================================================================

Local rotations map one-to-one because VMC receivers (VRM "normalized" bones, EVMC4U) take a bone's
local rotation relative to a T-pose whose bone frames are all aligned with the world, which is how
:class:`~avatarlink.types.BoneRotations` is defined. Conversion to Unity's frame happens only in
:mod:`avatarlink.outputs.unity_space`.

When nobody is seen, a small bundle with ``/VMC/Ext/OK`` (tracking status 0) and ``/VMC/Ext/T`` is
sent instead, so the avatar holds its last pose and the receiver knows why.
"""

from __future__ import annotations

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
from avatarlink.outputs.unity_space import positions_to_unity, quaternions_to_unity
from avatarlink.types import RigLike

DEFAULT_PORT = 39539

ADDRESS_ROOT = "/VMC/Ext/Root/Pos"
ADDRESS_BONE = "/VMC/Ext/Bone/Pos"
ADDRESS_OK = "/VMC/Ext/OK"
ADDRESS_TIME = "/VMC/Ext/T"

#: /VMC/Ext/OK values: model loaded, calibration state "calibrated", calibration mode "normal".
OK_LOADED = 1
OK_CALIBRATED = 3
OK_MODE_NORMAL = 0

_FLOATS_PER_BONE = 7  # px py pz qx qy qz qw


class VmcSink(UdpPoseSink):
    """Streams a rig's bone rotations to one VMC receiver.

    Attributes:
        bones: the rig's bone names (ASCII ``HumanBodyBones`` names), length B.
        rest_unity: float32 (B, 3) rest local positions in Unity space (what Bone/Pos carries).
        layout: the fixed datagram layout of a frame.
    """

    scheme: ClassVar[str] = "vmc"
    default_port: ClassVar[int] = DEFAULT_PORT

    def __init__(
        self,
        host: str,
        port: int,
        bones: Sequence[str],
        rest_local_positions: npt.ArrayLike,
        options: SinkOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open a sender.

        Args:
            host, port: the receiver.
            bones: B ``HumanBodyBones`` names; checked here (unknown or non-ASCII names raise).
            rest_local_positions: (B, 3) metres, world frame, each bone's rest offset from its
                parent (Hips: from the floor). Must be finite; zero offsets are refused for
                every bone but the first root (receivers would collapse those bones).
            options: rate cap, datagram size, mirroring, root translation.
            clock: seconds, for the rate cap (tests pass a fake one).

        Raises:
            ConfigError: bad bone names or rest positions, or a datagram limit too small.
        """
        options = options or SinkOptions()
        where = f"vmc://{host}:{port}"
        validate_bone_names(bones, where)
        rest = np.asarray(rest_local_positions, np.float32)
        if rest.shape != (len(bones), 3):
            raise ConfigError(
                f"{where}: rest_local_positions must be ({len(bones)}, 3), got {rest.shape}"
            )
        if not np.all(np.isfinite(rest)):
            raise ConfigError(f"{where}: rest_local_positions has non-finite values")
        zero = [b for b, p in zip(bones[1:], rest[1:], strict=True) if not np.any(p)]
        if zero:
            raise ConfigError(
                f"{where}: rest local position of {', '.join(zero)} is (0, 0, 0); "
                "VMC receivers need the rig's real T-pose offsets"
            )
        specs = [MessageSpec(ADDRESS_ROOT, "s" + "f" * 7, ("root",))]
        specs += [MessageSpec(ADDRESS_BONE, "s" + "f" * 7, (name,)) for name in bones]
        specs += [MessageSpec(ADDRESS_OK, "iiii"), MessageSpec(ADDRESS_TIME, "f")]
        idle = [MessageSpec(ADDRESS_OK, "iiii"), MessageSpec(ADDRESS_TIME, "f")]
        self.layout = FixedBundles(specs, options.max_datagram)
        self._idle_layout = FixedBundles(idle, options.max_datagram)
        super().__init__(host, port, bones, options, clock=clock)
        self.bones = tuple(bones)
        self.rest_unity = positions_to_unity(rest)
        num = len(self.bones)
        # Float vector: root (7), bones (B x 7), time (1); rest positions are written once.
        self._floats = np.zeros(7 + num * _FLOATS_PER_BONE + 1, np.float32)
        self._floats[6] = 1.0  # root rotation: identity
        self._bone_floats = self._floats[7 : 7 + num * _FLOATS_PER_BONE].reshape(num, 7)
        self._bone_floats[:, :3] = self.rest_unity
        self._tracking = np.array([OK_LOADED, OK_CALIBRATED, OK_MODE_NORMAL, 1], np.int32)
        self._not_tracking = np.array([OK_LOADED, OK_CALIBRATED, OK_MODE_NORMAL, 0], np.int32)

    @classmethod
    def from_rig(
        cls, rig: RigLike, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options: Any
    ) -> VmcSink:
        """A sender for a rig (anything with ``bones`` and ``rest_local_positions``)."""
        where = f"vmc://{host}:{port}"
        return cls(
            host,
            port,
            rig.bones,
            rig.rest_local_positions,
            options_from(SinkOptions, where, {}, options),
        )

    @classmethod
    def from_url(cls, url: str, rig: RigLike, **options: Any) -> VmcSink:
        """``vmc://HOST[:PORT][?option=value...]``; URL options override keyword ones."""
        host, port, query = parse_target(url, cls.scheme, cls.default_port)
        opts = options_from(SinkOptions, url, query, options)
        return cls(host, port, rig.bones, rig.rest_local_positions, opts)

    def _frame(self, elapsed: float) -> Sequence[Datagram]:
        self._bone_floats[:, 3:] = quaternions_to_unity(self.state.rot)
        self._floats[:3] = positions_to_unity(self.state.root_offset)
        self._floats[-1] = elapsed
        return self.layout.fill(self._floats, self._tracking)

    def _idle(self, elapsed: float) -> Sequence[Datagram]:
        return self._idle_layout.fill(np.array([elapsed], np.float32), self._not_tracking)
