"""VRChat OSC trackers: Unity Euler angles, forward kinematics, slots, scaling, datagrams."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatarlink.errors import ConfigError
from avatarlink.outputs import VrchatOptions, VrchatSink, open_sink
from avatarlink.outputs.osc_decode import decode_packet
from avatarlink.outputs.osc_encode import bundle, message
from avatarlink.outputs.unity_space import unity_euler_degrees
from avatarlink.rig import Rig, load_rig
from avatarlink.types import BoneRotations


@pytest.fixture(scope="module")
def rig() -> Rig:
    return load_rig("unity_humanoid")


def _pose(rig: Rig, local: dict[str, Rotation] | None = None) -> BoneRotations:
    rot = np.tile(np.array([0, 0, 0, 1], np.float32), (rig.num_bones, 1))
    for name, r in (local or {}).items():
        rot[rig.index(name)] = r.as_quat()
    return BoneRotations(rig.bones, rot, np.zeros(3, np.float32), np.ones(rig.num_bones, bool), 0.0)


def _unity_euler_to_matrix(e: np.ndarray) -> np.ndarray:
    """Unity's Quaternion.Euler(x, y, z): Z applied first, then X, then Y."""
    x, y, z = np.radians(e)
    rx = Rotation.from_rotvec([x, 0, 0]).as_matrix()
    ry = Rotation.from_rotvec([0, y, 0]).as_matrix()
    rz = Rotation.from_rotvec([0, 0, z]).as_matrix()
    out: np.ndarray = ry @ rx @ rz
    return out


def _trackers(datagrams: list[bytes]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for d in datagrams:
        for m in decode_packet(d).messages:
            assert m.typetags == "fff"
            out[m.address.removeprefix("/tracking/trackers/")] = np.array(m.args, float)
    return out


# --- Unity Euler angles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("axis", "angle", "expected"),
    [
        ("x", 30, [30, 0, 0]),
        ("y", 90, [0, 90, 0]),
        ("z", -45, [0, 0, 315]),
        ("y", 180, [0, 180, 0]),
    ],
)
def test_unity_euler_of_single_axis_rotations(
    axis: str, angle: float, expected: list[float]
) -> None:
    q = Rotation.from_euler(axis, angle, degrees=True).as_quat()
    np.testing.assert_allclose(unity_euler_degrees(q), expected, atol=1e-4)


def test_unity_euler_recomposes_random_rotations_including_gimbal_lock() -> None:
    rotations = list(Rotation.random(200, random_state=7))
    rotations += [Rotation.from_euler("YXZ", [40, 90, 0], degrees=True)]  # x = +90: gimbal lock
    rotations += [Rotation.from_euler("YXZ", [-70, -90, 0], degrees=True)]
    for r in rotations:
        e = unity_euler_degrees(r.as_quat())
        assert np.all((e >= 0) & (e < 360))
        np.testing.assert_allclose(_unity_euler_to_matrix(e), r.as_matrix(), atol=1e-4)


# --- trackers ------------------------------------------------------------------------------------


def test_rest_pose_trackers_in_unity_space(rig: Rig) -> None:
    with VrchatSink.from_rig(rig, port=9, trackers=(1, 2, 3, 4, 5, 6, 7, 8)) as sink:
        got = _trackers(sink.encode([_pose(rig)], 0.0))
    assert set(got) == {
        f"{s}/{k}" for s in [*map(str, range(1, 9)), "head"] for k in ("position", "rotation")
    }
    rest = rig.rest_positions
    for slot, bone in [
        ("1", "Hips"),
        ("2", "LeftFoot"),
        ("3", "RightFoot"),
        ("4", "LeftLowerLeg"),
        ("6", "Chest"),
        ("7", "LeftLowerArm"),
        ("8", "RightLowerArm"),
        ("head", "Head"),
    ]:
        x, y, z = rest[rig.index(bone)]
        np.testing.assert_allclose(got[f"{slot}/position"], [-x, y, z], atol=1e-6)
        np.testing.assert_allclose(got[f"{slot}/rotation"], [0, 0, 0], atol=1e-4)
    assert got["2/position"][0] < 0 < got["3/position"][0]  # Unity: the left foot at -X


def test_knee_raised_moves_the_foot_forward_and_up(rig: Rig) -> None:
    # Thigh forward: -90 deg about +X takes the leg (-Y) to +Z, the subject's front.
    local = {"LeftUpperLeg": Rotation.from_euler("x", -90, degrees=True)}
    with VrchatSink.from_rig(rig, port=9) as sink:
        got = _trackers(sink.encode([_pose(rig, local)], 0.0))
    hip = rig.rest_positions[rig.index("LeftUpperLeg")]
    leg = np.linalg.norm(rig.rest_positions[rig.index("LeftFoot")] - hip)
    expected = hip + np.array([0, 0, leg])  # the whole leg points forward from the hip joint
    np.testing.assert_allclose(
        got["2/position"], [-expected[0], expected[1], expected[2]], atol=1e-5
    )
    # Tracker rotation: the foot turned with the thigh, 270 (= -90) deg about Unity's X.
    np.testing.assert_allclose(got["2/rotation"], [270, 0, 0], atol=1e-3)
    right = rig.rest_positions[rig.index("RightFoot")]
    np.testing.assert_allclose(got["3/position"], [-right[0], right[1], right[2]], atol=1e-6)


def test_world_rotations_accumulate_down_the_chain(rig: Rig) -> None:
    rng = np.random.default_rng(3)
    local = {n: Rotation.from_rotvec(rng.normal(size=3) * 0.4) for n in rig.bones}
    with VrchatSink.from_rig(rig, port=9, trackers=(2,), head=False) as sink:
        got = _trackers(sink.encode([_pose(rig, local)], 0.0))
    world = Rotation.identity()
    position = np.zeros(3)
    chain = ["Hips", "LeftUpperLeg", "LeftLowerLeg", "LeftFoot"]
    for name in chain:
        position = position + world.apply(rig.rest_local_positions[rig.index(name)])
        world = world * local[name]
    m = rig.to_target
    np.testing.assert_allclose(got["2/position"], m @ position, atol=1e-5)
    np.testing.assert_allclose(
        _unity_euler_to_matrix(got["2/rotation"]), m @ world.as_matrix() @ m.T, atol=1e-4
    )


def test_height_scales_positions_above_the_floor(rig: Rig) -> None:
    head_y = rig.rest_positions[rig.index("Head")][1]
    stature = head_y / 0.87
    with VrchatSink.from_rig(rig, port=9, height_m=round(stature * 1.2, 6)) as tall:
        assert tall.scale == pytest.approx(1.2, rel=1e-5)
        got = _trackers(tall.encode([_pose(rig)], 0.0))
    np.testing.assert_allclose(got["1/position"][1], rig.hip_height * 1.2, rtol=1e-5)


def test_mirror_swaps_the_feet(rig: Rig) -> None:
    local = {"LeftUpperLeg": Rotation.from_euler("x", -90, degrees=True)}
    with VrchatSink.from_rig(rig, port=9, mirror=True) as sink:
        got = _trackers(sink.encode([_pose(rig, local)], 0.0))
    assert got["3/position"][2] > 0.5  # the right foot went forward
    assert got["2/position"][2] == pytest.approx(
        rig.rest_positions[rig.index("LeftFoot")][2], abs=1e-6
    )


def test_one_bundle_per_update_with_exact_bytes(rig: Rig) -> None:
    with VrchatSink.from_rig(rig, port=9, trackers=(1,), head=False) as sink:
        (datagram,) = sink.encode([_pose(rig)], 0.0)
    y = float(np.float32(rig.hip_height))
    expected = bundle(
        [
            message("/tracking/trackers/1/position", [0.0, y, 0.0]),
            message("/tracking/trackers/1/rotation", [0.0, 0.0, 0.0]),
        ]
    )
    assert datagram == expected


def test_nothing_is_sent_while_nobody_is_seen(rig: Rig) -> None:
    with VrchatSink.from_rig(rig, port=9) as sink:
        assert sink.encode([], 0.0) == []


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"trackers": (0,)}, "distinct slots"),
        ({"trackers": (1, 1)}, "distinct slots"),
        ({"trackers": (), "head": False}, "nothing to send"),
        ({"height_m": 4.0}, "height_m"),
        ({"head_height_ratio": 1.5}, "head_height_ratio"),
    ],
)
def test_bad_options_are_config_errors(rig: Rig, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        VrchatSink.from_rig(rig, port=9, **options)


def test_a_rig_without_chest_falls_back_along_the_spine() -> None:
    bones = ["Hips", "Spine", "UpperChest", "Neck", "Head"]
    parents = [-1, 0, 1, 2, 3]
    rest = np.array([[0, 1, 0], [0, 0.1, 0], [0, 0.2, 0], [0, 0.15, 0], [0, 0.1, 0]])
    sink = VrchatSink("127.0.0.1", 9, bones, parents, rest, VrchatOptions(trackers=(1, 6)))
    assert sink.slots == ("1", "6", "head")
    assert [bones[i] for i in sink.slot_bones] == ["Hips", "UpperChest", "Head"]
    sink.close()
    with pytest.raises(ConfigError, match="tracker 2 needs one of LeftFoot"):
        VrchatSink("127.0.0.1", 9, bones, parents, rest, VrchatOptions(trackers=(2,)))


def test_url_query_picks_trackers_and_round_trip(rig: Rig) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(1.0)
    port = receiver.getsockname()[1]
    try:
        sink = open_sink(f"vrchat://127.0.0.1:{port}?trackers=1,6,7,8&head=0", rig)
        assert isinstance(sink, VrchatSink) and sink.slots == ("1", "6", "7", "8")
        sink.send([_pose(rig)], 0.0)
        sink.close()
        got = _trackers([receiver.recv(65536)])
    finally:
        receiver.close()
    assert sorted(got) == sorted(f"{s}/{k}" for s in "1678" for k in ("position", "rotation"))
