"""ROS 2 CDR and type layer: round trips of every bridged type, golden bytes cross-checked between
rosbags and cyclonedds, RIHS01 hashes, custom .msg/.srv registration, zero-copy views, bad input,
the mapping file and QoS."""

# No `from __future__ import annotations`: cyclonedds reads the IdlStruct annotations below at run time.
from dataclasses import dataclass, field

import numpy as np
import pytest

import rosbags  # noqa: E402,F401  (the ros extra, part of the dev install)
import cyclonedds  # noqa: E402,F401

from cyclonedds.core import Policy  # noqa: E402
from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl.types import float64, int32, sequence, uint8, uint32  # noqa: E402

from ark.errors import ConfigError  # noqa: E402
from ark.messages import (Bool, DictArrays, Float64Array, Image, JointState, LaserScan, Pose, String,  # noqa: E402
                          Twist, to_jsonable)
from bridge_ros.cdr import CdrError, RosTypeError, RosTypes, dds_topic_name, dds_type_name  # noqa: E402
from bridge_ros.config import load_bridge_config, parse_bridge_config  # noqa: E402
from bridge_ros.convert import CONVERTERS, ConvertError, converter_for, generic_converter  # noqa: E402
from bridge_ros.dds_types import DdsTypes  # noqa: E402
from bridge_ros.messages import (CameraInfo, CompressedImage, Imu, Odometry, PointCloud, TFMessage,  # noqa: E402
                                 Transform)
from bridge_ros.qos import PRESETS, parse_qos  # noqa: E402

STAMP = 1_700_000_123_456_789_012


def samples() -> dict[str, object]:
    """One representative Ark message per bridged ROS type (values exact in float32 where ROS uses it)."""
    rng = np.random.default_rng(7)
    return {
        "sensor_msgs/msg/Image": Image(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8), "rgb8", "cam"),
        "sensor_msgs/msg/CompressedImage": CompressedImage(np.arange(11, dtype=np.uint8), "png", "cam"),
        "sensor_msgs/msg/CameraInfo": CameraInfo(640, 480, "plumb_bob", np.arange(5.0), np.eye(3) * 500, np.eye(3),
                                                 np.arange(12.0).reshape(3, 4), 1, 2, [1, 2, 3, 4], True, "cam"),
        "sensor_msgs/msg/JointState": JointState(["a", "b"], np.array([0.5, -1.25]), np.array([1.0, 2.0]), np.zeros(0)),
        "sensor_msgs/msg/LaserScan": LaserScan(np.arange(7, dtype=np.float32) / 4, -1.5, 1.5, 0.5, 0.25, 30.0, "laser"),
        "sensor_msgs/msg/PointCloud2": PointCloud({"x": np.arange(5, dtype=np.float32), "y": -np.arange(5, dtype=np.float32),
                                                   "intensity": np.arange(5, dtype=np.uint16),
                                                   "normal": np.arange(15.0).reshape(5, 3)}, False, "lidar"),
        "sensor_msgs/msg/Imu": Imu(np.array([0, 0, 0.6, 0.8]), np.eye(3), np.array([1.0, 2, 3]), np.eye(3) * 2,
                                   np.array([0, 0, 9.81]), np.eye(3) * 3, "imu"),
        "geometry_msgs/msg/Twist": Twist(np.array([1.0, 2, 3]), np.array([-1.0, 0, 0.5])),
        "geometry_msgs/msg/Pose": Pose(np.array([1.0, 2, 3]), np.array([0, 0, 0.6, 0.8])),
        "geometry_msgs/msg/PoseStamped": Pose(np.array([1.0, 2, 3]), np.array([0, 0, 0.6, 0.8]), "map"),
        "geometry_msgs/msg/TransformStamped": Transform(np.array([1.0, 2, 3]), np.array([0, 0, 0.6, 0.8]), "odom", "base"),
        "tf2_msgs/msg/TFMessage": TFMessage(np.arange(6.0).reshape(2, 3), np.tile([0, 0, 0, 1.0], (2, 1)),
                                            np.array([5, STAMP], np.int64), ["map", "odom"], ["odom", "base"]),
        "nav_msgs/msg/Odometry": Odometry(np.array([1.0, 2, 3]), np.array([0, 0, 0.6, 0.8]), np.eye(6),
                                          np.array([0.5, 0, 0]), np.array([0, 0, 0.1]), np.eye(6) * 2, "odom", "base"),
        "std_msgs/msg/String": String("héllo ROS"),
        "std_msgs/msg/Bool": Bool(True),
        "std_msgs/msg/Float64MultiArray": Float64Array(np.arange(6.0).reshape(2, 3)),
    }


@pytest.fixture(scope="module")
def types() -> RosTypes:
    return RosTypes("humble")


def test_every_listed_type_has_a_converter():
    listed = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
              "sensor_msgs/msg/JointState", "sensor_msgs/msg/LaserScan", "sensor_msgs/msg/PointCloud2",
              "sensor_msgs/msg/Imu", "geometry_msgs/msg/Twist", "geometry_msgs/msg/Pose",
              "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/TransformStamped", "tf2_msgs/msg/TFMessage",
              "nav_msgs/msg/Odometry", "std_msgs/msg/String", "std_msgs/msg/Float64MultiArray"}
    assert listed <= set(CONVERTERS) and set(CONVERTERS) == set(samples())


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
@pytest.mark.parametrize("ros_type", sorted(samples()))
def test_ark_ros_cdr_round_trip(ros_type, distro):
    types = RosTypes(distro)
    conv = CONVERTERS[ros_type]
    ark_msg = samples()[ros_type]
    data = types.serialize(conv.to_ros(ark_msg, STAMP, types), ros_type)
    assert bytes(data[:3]) == b"\x00\x01\x00" and len(data) % 4 == 0 and data[3] < 4  # CDR LE, padded to 4
    back, stamp = conv.to_ark(types.deserialize(bytes(data), ros_type))
    assert type(back) is type(ark_msg)
    assert to_jsonable(back) == to_jsonable(ark_msg)
    has_header = any(f == "header" for f, _ in types.fields(ros_type))
    if ros_type == "tf2_msgs/msg/TFMessage":
        assert stamp == STAMP  # the newest transform's stamp
    else:
        assert stamp == (STAMP if has_header else None)


@pytest.mark.parametrize("ros_type", sorted(samples()))
def test_golden_bytes_agree_between_rosbags_and_cyclonedds(types, ros_type):
    """The generated IdlStruct serialises the same message to the same bytes, and reads rosbags' bytes back."""
    ros_msg = CONVERTERS[ros_type].to_ros(samples()[ros_type], STAMP, types)
    ours = bytes(types.serialize(ros_msg, ros_type))
    idl = DdsTypes(types).to_idl(ros_msg)
    theirs = idl.serialize()
    assert type(idl).__idl_typename__ == dds_type_name(ros_type)
    pad = ours[3]
    assert ours[:3] == theirs[:3] and ours[4:len(ours) - pad] == theirs[4:] and ours[len(ours) - pad:] == bytes(pad)
    assert type(idl).deserialize(ours).serialize() == theirs
    assert types.deserialize(theirs, ros_type) is not None


# Written by hand from the ROS 2 .msg files: an oracle independent of the generator.
@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class RosJointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
class RosImage(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    encoding: str = ""
    is_bigendian: uint8 = 0
    step: uint32 = 0
    data: sequence[uint8] = field(default_factory=list)


def test_golden_bytes_of_hand_written_ros_types(types):
    js = RosJointState(Header(Time(1, 2), "abc"), ["j1"], [1.0, 2.0], [], [3.0])
    golden = bytes.fromhex("000100000100000002000000040000006162630001000000030000006a3100000200000000000000"
                           "0000f03f000000000000004000000000010000000000000000000840")
    assert js.serialize() == golden
    m = types.deserialize(golden, "sensor_msgs/msg/JointState")
    assert (m.header.stamp.sec, m.header.frame_id, m.name, m.position.tolist(), m.effort.tolist()) == \
        (1, "abc", ["j1"], [1.0, 2.0], [3.0])
    ark, stamp = CONVERTERS["sensor_msgs/msg/JointState"].to_ark(m)
    assert stamp == 1_000_000_002 and ark.position.tolist() == [1.0, 2.0]
    img = RosImage(Header(Time(3, 4), "cam"), 2, 2, "mono8", 0, 2, [1, 2, 3, 4])
    a, _ = CONVERTERS["sensor_msgs/msg/Image"].to_ark(types.deserialize(img.serialize(), "sensor_msgs/msg/Image"))
    assert a.data.tolist() == [[1, 2], [3, 4]] and a.encoding == "mono8" and a.frame_id == "cam"
    back = types.serialize(CONVERTERS["sensor_msgs/msg/Image"].to_ros(a, 3_000_000_004, types), "sensor_msgs/msg/Image")
    assert RosImage.deserialize(bytes(back)) == img


def test_received_arrays_are_views_over_the_cdr_payload(types):
    conv = CONVERTERS["sensor_msgs/msg/Image"]
    frame = np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8).reshape(480, 640, 3)
    payload = bytes(types.serialize(conv.to_ros(Image(frame, "bgr8"), 0, types), "sensor_msgs/msg/Image"))
    img, _ = conv.to_ark(types.deserialize(payload, "sensor_msgs/msg/Image"))
    buf = np.frombuffer(payload, np.uint8)
    assert np.array_equal(img.data, frame) and np.shares_memory(img.data, buf)
    js, _ = CONVERTERS["sensor_msgs/msg/JointState"].to_ark(types.deserialize(
        bytes(types.serialize(CONVERTERS["sensor_msgs/msg/JointState"].to_ros(
            JointState(["a"], np.array([1.0]), np.zeros(1), np.zeros(1)), 0, types), "sensor_msgs/msg/JointState")),
        "sensor_msgs/msg/JointState"))
    assert js.position.base is not None  # a view, not a copy


def test_padded_rows_big_endian_and_depth_images(types):
    conv = CONVERTERS["sensor_msgs/msg/Image"]
    # 2x3 rgb8 with 2 padding bytes per row (step 11)
    rows = np.arange(2 * 11, dtype=np.uint8).reshape(2, 11)
    msg = types.make("sensor_msgs/msg/Image", height=2, width=3, encoding="rgb8", step=11, data=rows.reshape(-1))
    img, _ = conv.to_ark(msg)
    assert img.data.shape == (2, 3, 3) and np.array_equal(img.data, rows[:, :9].reshape(2, 3, 3))
    # big-endian mono16 is swapped to host order
    be = np.array([[1, 256]], dtype=">u2")
    msg = types.make("sensor_msgs/msg/Image", height=1, width=2, encoding="mono16", is_bigendian=1, step=4,
                     data=be.view(np.uint8).reshape(-1))
    img, _ = conv.to_ark(msg)
    assert img.data.tolist() == [[1, 256]] and img.data.dtype == np.uint16
    depth = Image(np.full((2, 2), 1.5, np.float32), "depth32f")
    ros = conv.to_ros(depth, 0, types)
    assert ros.encoding == "32FC1" and ros.step == 8
    assert conv.to_ark(ros)[0].encoding == "depth32f"


def test_conversion_errors_are_specific(types):
    conv = CONVERTERS["sensor_msgs/msg/Image"]
    with pytest.raises(ConvertError, match="unsupported encoding"):
        conv.to_ark(types.make("sensor_msgs/msg/Image", encoding="weird8", height=1, width=1, step=1,
                               data=np.zeros(1, np.uint8)))
    with pytest.raises(ConvertError, match="too few"):
        conv.to_ark(types.make("sensor_msgs/msg/Image", encoding="rgb8", height=10, width=10, step=30,
                               data=np.zeros(5, np.uint8)))
    with pytest.raises(ConvertError, match="needs uint8 with 3"):
        conv.to_ros(Image(np.zeros((2, 2), np.float32), "rgb8"), 0, types)
    with pytest.raises(ConvertError, match="outside point_step"):
        field_ = types.make("sensor_msgs/msg/PointField", name="x", offset=8, datatype=7, count=1)
        CONVERTERS["sensor_msgs/msg/PointCloud2"].to_ark(types.make(
            "sensor_msgs/msg/PointCloud2", height=1, width=1, fields=[field_], point_step=4, row_step=4,
            data=np.zeros(4, np.uint8)))


def test_malformed_cdr_raises_cdr_error(types):
    good = bytes(types.serialize(types.make("sensor_msgs/msg/JointState", name=["a", "b"]), "sensor_msgs/msg/JointState"))
    for bad in (b"", b"\x00\x01", b"\x07\x07\x00\x00abcd", good[:20], good[:4] + b"\xff" * 40,
                b"\x00\x01\x00\x00" + b"\xff\xff\xff\x7f"):
        with pytest.raises(CdrError):
            types.deserialize(bad, "sensor_msgs/msg/JointState")


def test_rihs01_hashes_match_ros2():
    """Hashes that Jazzy's `ros2 topic info -v` prints for these types."""
    jazzy = RosTypes("jazzy")
    assert jazzy.rihs01("std_msgs/msg/String") == \
        "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
    assert jazzy.rihs01("sensor_msgs/msg/JointState") == \
        "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
    assert jazzy.rihs01("sensor_msgs/Image") == RosTypes("humble").rihs01("sensor_msgs/msg/Image")


def test_custom_msg_registration_from_text():
    types = RosTypes("jazzy")
    # A type registered from its .msg text hashes exactly as the built-in definition does.
    fresh = RosTypes("jazzy")
    fresh.store.fielddefs.pop("std_msgs/msg/String")
    fresh.register_msg("std_msgs/msg/String", "# a comment\nstring data\n")
    assert fresh.rihs01("std_msgs/msg/String") == types.rihs01("std_msgs/msg/String")

    name = types.register_msg("my_msgs/Wrench", "std_msgs/Header header\nfloat64[3] force\nfloat64[3] torque\n"
                                                "int32 MODE_A=1\nstring label")
    assert name == "my_msgs/msg/Wrench" and types.has("my_msgs/msg/Wrench")
    h = types.rihs01(name)
    assert h.startswith("RIHS01_") and len(h) == 7 + 64
    other = RosTypes("jazzy")
    other.register_msg("my_msgs/msg/Wrench", "std_msgs/Header header\nfloat64[3] force\nfloat64[3] torque2\nstring label")
    assert other.rihs01(name) != h  # a renamed field changes the hash
    assert "float64[3] force" in types.msgdef(name)
    assert types.dds_type_name(name) == "my_msgs::msg::dds_::Wrench_"

    msg = types.make(name, force=np.array([1.0, 2, 3]), label="x")
    data = types.serialize(msg, name)
    back = types.deserialize(bytes(data), name)
    assert back.force.tolist() == [1.0, 2.0, 3.0] and back.label == "x"
    # Generic bridging as ark/DictArrays, and a DDS type with the ROS name.
    conv = generic_converter(name)
    d, _ = conv.to_ark(back)
    assert isinstance(d, DictArrays) and d.arrays["force"].tolist() == [1.0, 2.0, 3.0] and d.meta["label"] == "x"
    assert bytes(types.serialize(conv.to_ros(d, 0, types), name)) == bytes(data)
    assert DdsTypes(types).idl_class(name).__idl_typename__ == "my_msgs::msg::dds_::Wrench_"
    assert converter_for(name, None, types).ark_name == "ark/DictArrays"


def test_custom_srv_registration_and_bad_definitions():
    types = RosTypes("humble")
    req, rep = types.register_srv("my_srvs/srv/AddTwo", "int64 a\nint64 b\n---\nint64 sum\n")
    assert (req, rep) == ("my_srvs/srv/AddTwo_Request", "my_srvs/srv/AddTwo_Response")
    data = types.serialize(types.make(req, a=2, b=3), req)
    assert types.deserialize(bytes(data), req).b == 3
    assert types.dds_type_name(rep) == "my_srvs::srv::dds_::AddTwo_Response_"
    with pytest.raises(RosTypeError, match="unknown type my_msgs/msg/Missing"):
        types.register_msg("my_msgs/msg/Uses", "Missing m")
    with pytest.raises(RosTypeError, match="already present"):
        types.register_msg("std_msgs/msg/String", "int32 data")
    with pytest.raises(RosTypeError, match="one '---'"):
        types.register_srv("my_srvs/srv/Bad", "int64 a")
    with pytest.raises(RosTypeError, match="unknown ROS type"):
        types.check("nope_msgs/msg/Nope")


def test_dds_names():
    assert dds_topic_name("/joint_states") == "rt/joint_states"
    assert dds_topic_name("camera/image_raw") == "rt/camera/image_raw"
    assert dds_type_name("sensor_msgs/Image") == "sensor_msgs::msg::dds_::Image_"


def test_qos_presets_and_their_dds_form():
    assert parse_qos("sensor_data") == PRESETS["sensor_data"]
    latched = parse_qos({"profile": "latched", "depth": 3})
    assert (latched.durability, latched.depth, latched.reliability) == ("transient_local", 3, "reliable")
    dds = latched.to_dds()
    assert dds[Policy.Durability] == Policy.Durability.TransientLocal
    assert dds[Policy.History] == Policy.History.KeepLast(3)
    assert isinstance(dds[Policy.Reliability], Policy.Reliability.Reliable)
    assert PRESETS["sensor_data"].to_dds()[Policy.Reliability] == Policy.Reliability.BestEffort
    bag = PRESETS["latched"].to_rosbag2()
    assert bag.durability.name == "TRANSIENT_LOCAL" and bag.depth == 1


def test_mapping_file_errors_name_file_and_key(tmp_path):
    def load(text: str):
        p = tmp_path / "bridge.yaml"
        p.write_text(text)
        return load_bridge_config(p)

    topic = "topics:\n  - {ark: /a, type: %s, direction: %s%s}\n"
    with pytest.raises(ConfigError, match=r"bridge\.yaml: key 'topics\[0\]\.type': unknown ROS type 'foo_msgs/msg/Bar'"):
        load(topic % ("foo_msgs/msg/Bar", "ark_to_ros", ""))
    with pytest.raises(ConfigError, match=r"key 'topics\[0\]\.direction'.*'ark_to_ros' or 'ros_to_ark'"):
        load(topic % ("sensor_msgs/msg/Image", "sideways", ""))
    with pytest.raises(ConfigError, match=r"key 'topics\[0\]\.qos': unknown QoS preset 'fastest'"):
        load(topic % ("sensor_msgs/msg/Image", "ark_to_ros", ", qos: fastest"))
    with pytest.raises(ConfigError, match=r"key 'topics\[0\]\.qos\.reliability'"):
        load(topic % ("sensor_msgs/msg/Image", "ark_to_ros", ", qos: {reliability: sometimes}"))
    with pytest.raises(ConfigError, match=r"key 'topics\[0\]\.ark_type'.*ark/Image or ark/DictArrays"):
        load(topic % ("sensor_msgs/msg/Image", "ark_to_ros", ", ark_type: ark/Pose"))
    with pytest.raises(ConfigError, match=r"key 'custom_types'.*unknown type"):
        load("custom_types:\n  my/msg/A: 'Nope n'\n")
    with pytest.raises(ConfigError, match=r"key 'topics\[1\]\.ark': ark topic /a is already bridged"):
        load(topic % ("std_msgs/msg/String", "ark_to_ros", "") +
             "  - {ark: /a, ros: /b, type: std_msgs/msg/String, direction: ros_to_ark}\n")
    with pytest.raises(ConfigError, match=r"key 'extra': Extra inputs"):
        load("extra: 1\n")
    with pytest.raises(ConfigError, match="no such file"):
        load_bridge_config(tmp_path / "missing.yaml")
    cfg, _, routes = load(topic % ("sensor_msgs/Image", "ark_to_ros", ", ros: cam, qos: sensor_data"))
    assert routes[0].ros_topic == "/cam" and routes[0].ros_type == "sensor_msgs/msg/Image"
    assert routes[0].qos == PRESETS["sensor_data"] and cfg.backend == "auto"


def test_shipped_mapping_is_valid():
    cfg, types, routes = load_bridge_config("configs/ros_bridge.yaml")
    assert routes and all(types.has(r.ros_type) for r in routes)
    cfg2, _, routes2 = parse_bridge_config({"distro": "jazzy", "custom_types": {"a_msgs/msg/A": "float32 x"},
                                            "topics": [{"ark": "/a", "type": "a_msgs/msg/A",
                                                        "direction": "ros_to_ark"}]})
    assert routes2[0].converter.ark_name == "ark/DictArrays" and routes2[0].type_hash.startswith("RIHS01_")
