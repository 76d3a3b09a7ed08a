"""Live DDS bridge: a separate process acting as a ROS 2 node (a plain cyclonedds participant with
ROS 2's topic names, type names and QoS, types written by hand from the .msg files) exchanges
JointState and 640x480 Image streams with Ark nodes through the bridge, both ways; QoS mapping;
malformed CDR and type-hash mismatches are counted while the bridge keeps running.

Cyclone DDS is confined to loopback (unicast discovery, no multicast) on a per-run domain id.
The peer runs as ``python -m tests.test_ros_dds peer SPEC``.
"""

# No `from __future__ import annotations`: cyclonedds reads the IdlStruct annotations at run time.
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest

import rosbags  # noqa: E402,F401  (the ros extra, part of the dev install)
import cyclonedds  # noqa: E402,F401

from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl.types import float64, int32, sequence, uint8, uint32  # noqa: E402

DOMAIN = 100 + os.getpid() % 100  # unique per test run, so concurrent runs never meet
LOOPBACK = ("<CycloneDDS><Domain Id=\"any\"><General><Interfaces><NetworkInterface address=\"127.0.0.1\"/>"
            "</Interfaces><AllowMulticast>false</AllowMulticast></General><Discovery>"
            "<ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>60</MaxAutoParticipantIndex>"
            "<Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery></Domain></CycloneDDS>")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- ROS 2 types, by hand from the .msg files ------------------------------------------------
@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    encoding: str = ""
    is_bigendian: uint8 = 0
    step: uint32 = 0
    data: sequence[uint8] = field(default_factory=list)


# -- the stand-in ROS 2 node -------------------------------------------------------------------
def _peer_qos(spec: dict):
    from cyclonedds.core import Policy, Qos
    from cyclonedds.util import duration

    q = spec.get("qos", {})
    policies = [Policy.Reliability.BestEffort if q.get("reliability") == "best_effort"
                else Policy.Reliability.Reliable(duration(milliseconds=100)),
                Policy.History.KeepLast(q.get("depth", 10)),
                Policy.Durability.TransientLocal if q.get("durability") == "transient_local"
                else Policy.Durability.Volatile]
    if spec.get("typehash"):
        policies.append(Policy.Userdata(f"typehash={spec['typehash']};".encode()))
    return Qos(*policies)


def _stamp(i: int) -> Time:
    return Time(sec=1000 + i, nanosec=i)


def _make(kind: str, i: int, spec: dict):
    if kind == "joint_state":
        return JointState(Header(_stamp(i), "base"), ["j0", "j1"], [float(i), -float(i)], [0.5], [])
    h, w = spec.get("height", 480), spec.get("width", 640)
    frame = np.full((h, w, 3), i % 256, np.uint8)
    frame[0, 0] = (i, 1, 2)
    return Image(Header(_stamp(i), "cam"), h, w, "rgb8", 0, w * 3, frame.reshape(-1).tolist())


def _garbage(i: int) -> bytes:
    """A sample that Cyclone DDS passes on but that is not a valid ROS message: text that is not UTF-8.

    (Cyclone itself discards payloads that are structurally invalid for the type, such as a
    sequence longer than the sample, so those never reach the bridge.)
    """
    bad = b"\xff\xfe" + bytes([i % 200 + 0x30]) + b"\x00"  # 4-byte string, not UTF-8
    if i % 2 == 0:  # in header.frame_id
        return b"\x00\x01\x00\x00" + b"\x00" * 8 + (4).to_bytes(4, "little") + bad + b"\x00" * 16
    # in name[0]
    return (b"\x00\x01\x00\x00" + b"\x00" * 8 + (1).to_bytes(4, "little") + b"\x00" * 4 + (1).to_bytes(4, "little")
            + (4).to_bytes(4, "little") + bad + b"\x00" * 12)


def _summary(kind: str, s) -> list:
    stamp = s.header.stamp.sec * 10**9 + s.header.stamp.nanosec
    if kind == "joint_state":
        return [list(s.name), list(s.position), stamp]
    data = np.asarray(s.data, np.uint8).reshape(s.height, s.width, 3)
    return [s.height, s.width, s.encoding, data[0, 0].tolist(), int(data[-1, -1, 0]), stamp]


def run_peer(spec: dict) -> None:
    """Publish or subscribe like a ROS 2 node would, print progress lines and a JSON result."""
    from cyclonedds._clayer import ddspy_write
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    kind = spec["type"]
    cls = JointState if kind == "joint_state" else Image
    dp = DomainParticipant(spec["domain"])
    topic = Topic(dp, spec["topic"], cls)
    deadline = time.monotonic() + spec.get("timeout", 10)
    if spec["mode"] == "publish":
        w = DataWriter(dp, topic, qos=_peer_qos(spec))
        while w.get_publication_matched_status().current_count < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("matched", flush=True)
        for i in range(spec.get("garbage", 0)):  # what a broken or hostile node could send
            ddspy_write(w._ref, _garbage(i))
        for i in range(spec["count"]):
            w.write(_make(kind, i, spec))
            time.sleep(1.0 / spec.get("rate", 50))
        time.sleep(spec.get("linger", 0.3))
        print(json.dumps({"sent": spec["count"]}), flush=True)
        return
    r = DataReader(dp, topic, qos=_peer_qos(spec))
    got: list = []
    matched = False
    while len(got) < spec["count"] and time.monotonic() < deadline:
        if not matched and r.get_subscription_matched_status().current_count >= 1:
            matched = True
            print("matched", flush=True)
        for s in r.take(16):
            got.append(_summary(kind, s))
        time.sleep(0.005)
    incompatible = r.get_requested_incompatible_qos_status().total_count
    print(json.dumps({"received": got, "incompatible": incompatible}), flush=True)


class Peer:
    """A stand-in ROS 2 node in its own process."""

    def __init__(self, **spec) -> None:
        spec.setdefault("domain", DOMAIN)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.test_ros_dds", "peer", json.dumps(spec)],
                                     cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def wait_line(self, word: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if line.strip() == word:
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError(f"peer never printed {word!r}: {self.proc.stderr.read()}")

    def result(self, timeout: float = 20.0) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


if __name__ == "__main__" and sys.argv[1:2] == ["peer"]:
    run_peer(json.loads(sys.argv[2]))
    sys.exit(0)


# -- tests ---------------------------------------------------------------------------------------
from ark.messages import Image as ArkImage  # noqa: E402
from ark.messages import JointState as ArkJointState  # noqa: E402
from ark.node import Node  # noqa: E402
from bridge_ros.bridge import BackendUnavailable, Bridge, rclpy_available, select_backend  # noqa: E402
from bridge_ros.config import parse_bridge_config  # noqa: E402
from tests.conftest import wait_until  # noqa: E402


@pytest.fixture(autouse=True)
def loopback_dds(monkeypatch):
    monkeypatch.setenv("CYCLONEDDS_URI", LOOPBACK)


@pytest.fixture
def peers():
    started: list[Peer] = []

    def start(**spec) -> Peer:
        p = Peer(**spec)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def unique(name: str) -> str:
    return f"/{name}_{uuid.uuid4().hex[:6]}"


def make_bridge(cfg, topics: list[dict], distro: str = "humble") -> Bridge:
    config, types, routes = parse_bridge_config({"backend": "dds", "distro": distro, "domain_id": DOMAIN,
                                                 "node_name": "bridge", "topics": topics}, "test mapping")
    return Bridge(config, types, routes, ark_config=cfg).start()


def route(bridge: Bridge, ark_topic: str):
    return next(r for r in bridge.routes if r.ark_topic == ark_topic)


def test_backend_selection():
    assert select_backend("auto") == ("rclpy" if rclpy_available() else "dds")
    assert select_backend("dds") == "dds"
    if not rclpy_available():
        with pytest.raises(BackendUnavailable, match="rclpy"):
            select_backend("rclpy")


def test_ros_node_to_ark_joint_states_and_image_stream(cfg, peers):
    joints, camera = unique("joint_states"), unique("image_raw")
    bridge = make_bridge(cfg, [
        {"ark": "/joints", "ros": joints, "type": "sensor_msgs/msg/JointState", "direction": "ros_to_ark"},
        {"ark": "/camera", "ros": camera, "type": "sensor_msgs/msg/Image", "direction": "ros_to_ark"},
    ])
    got_joints, got_images = [], []
    sink = Node("sink", config=cfg)
    sink.subscriber("/joints", ArkJointState, lambda m, i: got_joints.append((m, i)), queue=100)
    sink.subscriber("/camera", ArkImage, lambda m, i: got_images.append((m, i)), queue=100)
    sink.start()
    js = peers(mode="publish", type="joint_state", topic="rt" + joints, count=20, rate=100)
    img = peers(mode="publish", type="image", topic="rt" + camera, count=8, rate=15)
    assert js.result()["sent"] == 20 and img.result()["sent"] == 8
    assert wait_until(lambda: len(got_joints) == 20 and len(got_images) == 8, timeout=10)
    for i, (m, info) in enumerate(got_joints):
        assert m.name == ["j0", "j1"] and m.position.tolist() == [i, -i] and m.velocity.tolist() == [0.5]
        assert info.stamp_ns == (1000 + i) * 10**9 + i  # the ROS header stamp
    for i, (m, info) in enumerate(got_images):
        assert m.data.shape == (480, 640, 3) and m.encoding == "rgb8" and m.frame_id == "cam"
        assert m.data[0, 0].tolist() == [i, 1, 2] and int(m.data[-1, -1, 0]) == i
        assert info.stamp_ns == (1000 + i) * 10**9 + i
    stats = bridge.stats()["routes"]
    assert [r["forwarded"] for r in stats] == [20, 8] and all(r["malformed"] == 0 for r in stats)
    bridge.shutdown()


def test_ark_to_ros_node_joint_states_and_image_stream(cfg, peers):
    joints, camera = unique("joint_cmd"), unique("image_out")
    bridge = make_bridge(cfg, [
        {"ark": "/cmd", "ros": joints, "type": "sensor_msgs/msg/JointState", "direction": "ark_to_ros"},
        {"ark": "/cam_out", "ros": camera, "type": "sensor_msgs/msg/Image", "direction": "ark_to_ros"},
    ])
    js = peers(mode="subscribe", type="joint_state", topic="rt" + joints, count=10, timeout=15)
    img = peers(mode="subscribe", type="image", topic="rt" + camera, count=5, timeout=15)
    js.wait_line("matched")
    img.wait_line("matched")
    src = Node("src", config=cfg)
    pub_js = src.publisher("/cmd", ArkJointState)
    pub_img = src.publisher("/cam_out", ArkImage)
    assert wait_until(lambda: all(s.stats()["publishers"] >= 1 for s in bridge.node.subscribers), timeout=5)
    for i in range(10):
        pub_js.publish(ArkJointState(["a"], np.array([float(i)]), np.zeros(1), np.zeros(1)))
        if i < 5:
            frame = np.full((480, 640, 3), 7, np.uint8)
            frame[0, 0] = (i, 1, 2)
            pub_img.publish(ArkImage(frame, "rgb8", "cam"))
        time.sleep(0.03)
    joints_got = js.result()["received"]
    images_got = img.result()["received"]
    assert [j[1] for j in joints_got] == [[float(i)] for i in range(10)]
    assert all(j[0] == ["a"] and j[2] > 0 for j in joints_got)  # stamped with the Ark publisher's clock
    assert [im[:5] for im in images_got] == [[480, 640, "rgb8", [i, 1, 2], 7] for i in range(5)]
    src.shutdown()
    bridge.shutdown()


def test_qos_mapping_reliability_and_latching(cfg, peers):
    scan, latched = unique("fast"), unique("latched")
    bridge = make_bridge(cfg, [
        {"ark": "/fast", "ros": scan, "type": "sensor_msgs/msg/JointState", "direction": "ark_to_ros",
         "qos": "sensor_data"},
        {"ark": "/latched", "ros": latched, "type": "sensor_msgs/msg/JointState", "direction": "ark_to_ros",
         "qos": "latched"},
    ])
    src = Node("src", config=cfg)
    pub_fast = src.publisher("/fast", ArkJointState)
    pub_latched = src.publisher("/latched", ArkJointState)
    assert wait_until(lambda: all(s.stats()["publishers"] >= 1 for s in bridge.node.subscribers), timeout=5)
    pub_latched.publish(ArkJointState(["only"], np.array([42.0]), np.zeros(1), np.zeros(1)))
    assert wait_until(lambda: route(bridge, "/latched").forwarded == 1, timeout=5)
    # A reliable ROS reader cannot match a best-effort writer: counted on both sides, nothing crashes.
    strict = peers(mode="subscribe", type="joint_state", topic="rt" + scan, count=1, timeout=2.5)
    # A best-effort ROS reader matches; a transient-local one joining late still gets the last message.
    loose = peers(mode="subscribe", type="joint_state", topic="rt" + scan, count=3, timeout=10,
                  qos={"reliability": "best_effort"})
    late = peers(mode="subscribe", type="joint_state", topic="rt" + latched, count=1, timeout=10,
                 qos={"durability": "transient_local", "depth": 1})
    loose.wait_line("matched")
    for i in range(40):  # best effort: keep sending until the reader has had three
        pub_fast.publish(ArkJointState(["f"], np.array([float(i)]), np.zeros(1), np.zeros(1)))
        time.sleep(0.02)
        if loose.proc.poll() is not None:
            break
    assert len(loose.result()["received"]) == 3
    assert late.result()["received"][0][1] == [42.0]
    strict_result = strict.result()
    assert strict_result["received"] == [] and strict_result["incompatible"] >= 1
    assert wait_until(lambda: route(bridge, "/fast").incompatible_qos >= 1, timeout=3)
    assert route(bridge, "/latched").incompatible_qos == 0
    src.shutdown()
    bridge.shutdown()


def test_malformed_cdr_and_type_hash_mismatch_are_counted_and_survived(cfg, peers, caplog):
    good, mismatched = unique("good"), unique("mismatched")
    bridge = make_bridge(cfg, [
        {"ark": "/good", "ros": good, "type": "sensor_msgs/msg/JointState", "direction": "ros_to_ark"},
        {"ark": "/mismatched", "ros": mismatched, "type": "sensor_msgs/msg/JointState", "direction": "ros_to_ark"},
    ], distro="jazzy")
    got = []
    sink = Node("sink", config=cfg)
    sink.subscriber("/good", ArkJointState, lambda m: got.append(m), queue=100)
    sink.subscriber("/mismatched", ArkJointState, lambda m: got.append(m), queue=100)
    sink.start()
    ours = route(bridge, "/good").type_hash
    assert ours == "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
    broken = peers(mode="publish", type="joint_state", topic="rt" + good, count=5, garbage=3, typehash=ours)
    other = peers(mode="publish", type="joint_state", topic="rt" + mismatched, count=4, typehash="RIHS01_" + "0" * 64)
    assert broken.result()["sent"] == 5 and other.result()["sent"] == 4
    assert wait_until(lambda: route(bridge, "/good").forwarded == 5 and route(bridge, "/mismatched").hash_mismatch == 4,
                      timeout=10)
    g, m = route(bridge, "/good"), route(bridge, "/mismatched")
    assert (g.malformed, g.hash_mismatch) == (3, 0) and "malformed CDR" in g.last_error
    assert (m.forwarded, m.malformed) == (0, 0)
    assert [x.position.tolist()[0] for x in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "type hash RIHS01_000" in messages and "malformed" in messages
    bridge.shutdown()


def test_cli_bridge_runs_for_a_duration_and_reports(cfg, env_for, tmp_path, peers):
    topic = unique("cli")
    mapping = tmp_path / "bridge.yaml"
    mapping.write_text(f"backend: dds\ndomain_id: {DOMAIN}\ntopics:\n"
                       f"  - {{ark: /cli, ros: {topic}, type: sensor_msgs/msg/JointState, direction: ros_to_ark}}\n")
    env = dict(env_for, CYCLONEDDS_URI=LOOPBACK)
    proc = subprocess.Popen([sys.executable, "-m", "bridge_ros", "ros", "bridge", str(mapping), "--duration", "4",
                             "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert peers(mode="publish", type="joint_state", topic="rt" + topic, count=5).result()["sent"] == 5
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["backend"] == "dds" and stats["routes"][0]["forwarded"] == 5
    assert "5 forwarded" in err
