"""The hand-written CDR readers (``bridge_ros.cdr_fast``) against rosbags: for JointState and Image
payloads that rosbags serialises (empty arrays, non-ASCII names, padded rows, 16-bit and float
encodings, big-endian pixels, big-endian CDR) the shortcut gives the same Ark message as
rosbags + the converter, or declines; for damaged payloads it never accepts what rosbags rejects;
and the bridge, fed those payloads, forwards or counts exactly as on the general path."""

import re

import numpy as np
import pytest

import rosbags  # noqa: F401  (the ros extra, part of the dev install)

from ark.messages import Image, JointState
from ark.node import Node
from bridge_ros.bridge import Bridge
from bridge_ros.cdr import CdrError, RosTypes
from bridge_ros.cdr_fast import FastPathUnsupported, read_image, read_joint_state
from bridge_ros.config import parse_bridge_config
from bridge_ros.convert import ConvertError, converter_for, make_header
from tests.conftest import wait_until

JS, IMG = "sensor_msgs/msg/JointState", "sensor_msgs/msg/Image"


@pytest.fixture(scope="module")
def types() -> RosTypes:
    t = RosTypes("humble")
    t.warm([JS, IMG])
    return t


def cdr(types: RosTypes, msg, name: str, little: bool = True) -> bytes:
    if little:
        return bytes(types.serialize(msg, name))
    return bytes(types.store.serialize_cdr(msg, name, little_endian=False))


def joint_state(types: RosTypes, names, pos, vel, eff, stamp=(12, 345), frame: str = "") -> object:
    return types.make(JS, header=make_header(types, stamp[0] * 10**9 + stamp[1], frame), name=list(names),
                      position=np.asarray(pos, np.float64), velocity=np.asarray(vel, np.float64),
                      effort=np.asarray(eff, np.float64))


def image(types: RosTypes, h: int, w: int, enc: str, step: int, data: np.ndarray, big: int = 0,
          frame: str = "cam", stamp: int = 7 * 10**9 + 8) -> object:
    return types.make(IMG, header=make_header(types, stamp, frame), height=h, width=w, encoding=enc,
                      is_bigendian=big, step=step, data=np.asarray(data, np.uint8).reshape(-1))


def joint_states(types: RosTypes) -> list[bytes]:
    return [cdr(types, m, JS) for m in (
        joint_state(types, ["a", "b"], [0.5, -1.25], [1.0, 2.0], []),
        joint_state(types, [], [], [], []),                                     # everything empty
        joint_state(types, ["épaule", "肘", "x" * 37], [1, 2, 3], [4, 5, 6], [7, 8, 9], frame="bâse"),
        joint_state(types, ["j0"], [], [np.pi], [], stamp=(-5, 999_999_999)),   # arrays of different lengths
        joint_state(types, ["", "abc"], [np.nan, np.inf], [], [-0.0], stamp=(2**31 - 1, 0)),
    )]


def images(types: RosTypes) -> list[bytes]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    padded = np.zeros((3, 20), np.uint8)
    padded[:, :15] = rng.integers(0, 256, (3, 15))
    mono16 = rng.integers(0, 2**16, (3, 4), dtype=np.uint16)
    depth = rng.random((2, 3)).astype(np.float32)
    return [cdr(types, m, IMG) for m in (
        image(types, 4, 5, "rgb8", 15, rgb),
        image(types, 3, 5, "bgr8", 20, padded, frame="kamera_ü"),              # rows padded to 20 bytes
        image(types, 3, 4, "mono16", 8, mono16.view(np.uint8)),
        image(types, 3, 4, "mono16", 8, mono16.astype(">u2").view(np.uint8), big=1),  # big-endian pixels
        image(types, 2, 3, "32FC1", 12, depth.view(np.uint8)),
        image(types, 0, 0, "rgb8", 0, np.zeros(0, np.uint8), frame=""),        # empty image
        image(types, 1, 3, "mono8", 3, np.arange(3)),
        image(types, 2, 2, "bayer_rggb8", 2, np.arange(4)),                    # is_bigendian lands 4-aligned
        image(types, 1, 3, "yuv422", 6, np.arange(6)),                         # unsupported encoding
        image(types, 2, 3, "rgb8", 9, np.arange(10)),                          # too few bytes
    )]


def assert_same(a, b) -> None:
    """Two Ark messages are equal field by field, arrays by dtype, shape and value."""
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True), name
        else:
            assert x == y, name


def general(types: RosTypes, data: bytes, name: str):
    """What the bridge's general path makes of a payload: (Ark message, stamp), or the exception."""
    try:
        return converter_for(name).to_ark(types.deserialize(data, name))
    except (CdrError, ConvertError) as exc:
        return exc


def test_joint_state_reader_matches_rosbags(types):
    for data in joint_states(types):
        ros = types.deserialize(data, JS)
        sec, nanosec, names, pos, vel, eff = read_joint_state(data)
        assert (sec, nanosec, names) == (ros.header.stamp.sec, ros.header.stamp.nanosec, list(ros.name))
        for ours, theirs in ((pos, ros.position), (vel, ros.velocity), (eff, ros.effort)):
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs, equal_nan=True)
        msg, stamp = converter_for(JS).from_cdr(data)
        want, want_stamp = general(types, data, JS)
        assert stamp == want_stamp
        assert_same(msg, want)


def test_image_reader_matches_rosbags_and_is_a_view(types):
    conv = converter_for(IMG)
    for data in images(types):
        ros = types.deserialize(data, IMG)
        sec, nanosec, frame, h, w, enc, big, step, pixels = read_image(data)
        assert (sec, nanosec, frame, h, w, enc, big, step) == (
            ros.header.stamp.sec, ros.header.stamp.nanosec, ros.header.frame_id, ros.height, ros.width,
            ros.encoding, ros.is_bigendian, ros.step)
        assert np.array_equal(pixels, ros.data)
        assert pixels.size == 0 or np.shares_memory(pixels, np.frombuffer(data, np.uint8))  # a view, no copy
        want = general(types, data, IMG)
        if isinstance(want, ConvertError):
            with pytest.raises(ConvertError, match=re.escape(str(want))):
                conv.from_cdr(data)
            continue
        msg, stamp = conv.from_cdr(data)
        assert stamp == want[1]
        assert_same(msg, want[0])
        if not big and msg.data.size:  # zero-copy: the Ark image is a view over the received bytes
            assert np.shares_memory(msg.data, np.frombuffer(data, np.uint8))


def test_big_endian_cdr_is_declined(types):
    js = cdr(types, joint_state(types, ["a"], [1.5], [], []), JS, little=False)
    img = cdr(types, image(types, 1, 2, "mono16", 4, np.arange(4)), IMG, little=False)
    assert js[:2] == b"\x00\x00" and img[:2] == b"\x00\x00"  # rosbags wrote big-endian CDR
    for data, read in ((js, read_joint_state), (img, read_image)):
        with pytest.raises(FastPathUnsupported):
            read(data)
    assert general(types, js, JS)[0].position.tolist() == [1.5]  # the general path still takes it


@pytest.mark.parametrize("name", [JS, IMG])
def test_damaged_payloads_are_never_accepted_where_rosbags_refuses(types, name):
    """Truncations, bit flips and appended bytes: whenever the shortcut accepts, rosbags accepts the
    same payload and the Ark messages agree; valid ones the shortcut takes in the same way."""
    rng = np.random.default_rng(11)
    bases = joint_states(types) if name == JS else images(types)[:8]
    conv = converter_for(name)
    accepted = refused = 0
    for base in bases:
        variants = [base[:n] for n in range(len(base))] + [base + b"\x00" * k for k in (1, 3, 4, 8)]
        for _ in range(60):
            b = bytearray(base)
            for pos in rng.integers(0, len(b), rng.integers(1, 4)):
                b[pos] = int(rng.integers(0, 256))
            variants.append(bytes(b))
        for data in variants:
            try:
                msg, stamp = conv.from_cdr(data)
            except Exception:  # the bridge then takes the general path
                refused += 1
                continue
            accepted += 1
            want = general(types, data, name)
            assert not isinstance(want, Exception), (data, want)
            assert stamp == want[1]
            assert_same(msg, want[0])
    assert accepted and refused  # both sides of the check ran


def test_bridge_forwards_and_counts_the_same_with_the_shortcut(types, cfg, monkeypatch):
    """The real bridge on its real DDS backend; the payloads (malformed ones included, which no
    DDS writer would send) go straight into the sample handler the bridge gave the backend."""
    from tests.test_ros_dds import DOMAIN, LOOPBACK

    monkeypatch.setenv("CYCLONEDDS_URI", LOOPBACK)
    config, rtypes, routes = parse_bridge_config({"backend": "dds", "domain_id": DOMAIN, "topics": [
        {"ark": "/js", "ros": "/js", "type": JS, "direction": "ros_to_ark", "qos": {"depth": 50}},
        {"ark": "/img", "ros": "/img", "type": IMG, "direction": "ros_to_ark", "qos": {"depth": 50}}]})
    bridge = Bridge(config, rtypes, routes, ark_config=cfg).start()
    got: dict[str, list] = {"/js": [], "/img": []}
    sink = Node("sink", config=cfg)
    sink.subscriber("/js", JointState, lambda m, i: got["/js"].append((m, i.stamp_ns)), queue=100)
    sink.subscriber("/img", Image, lambda m, i: got["/img"].append((m, i.stamp_ns)), queue=100)
    sink.start()
    on_js, on_img = (r.on_sample for r in bridge.backend._readers)
    probe = cdr(types, joint_state(types, ["probe"], [0.0], [], []), JS)
    assert wait_until(lambda: got["/js"] or on_js(probe, 1), timeout=10, step=0.1)  # the Ark link is up
    probes = routes[0].forwarded
    big_endian = cdr(types, joint_state(types, ["be"], [2.5], [], [], stamp=(3, 4)), JS, little=False)
    js_payloads = joint_states(types) + [big_endian]
    for data in js_payloads + [probe[:20], b"\x00\x01\x00\x00\xff"]:
        on_js(data, 99)
    img_payloads = images(types)
    for data in img_payloads:
        on_img(data, 99)
    good_imgs = [d for d in img_payloads if not isinstance(general(types, d, IMG), ConvertError)]
    received = lambda: [x for x in got["/js"] if x[0].name != ["probe"]]  # noqa: E731
    assert wait_until(lambda: len(received()) == len(js_payloads) and len(got["/img"]) == len(good_imgs))
    js_route, img_route = routes
    assert (js_route.forwarded - probes, js_route.malformed, js_route.convert_errors) == (len(js_payloads), 2, 0)
    assert (img_route.forwarded, img_route.convert_errors) == (len(good_imgs), 2)
    for data, (msg, stamp) in zip(js_payloads, received()):
        want, want_stamp = general(types, data, JS)
        assert stamp == want_stamp  # the ROS header stamp became the Ark stamp
        assert_same(msg, want)
    for data, (msg, stamp) in zip(good_imgs, got["/img"]):
        want, want_stamp = general(types, data, IMG)
        assert stamp == (want_stamp or 99)
        assert_same(msg, want)
    sink.shutdown()
    bridge.shutdown()
