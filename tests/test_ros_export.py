"""`ark ros export`: an Ark MCAP recording (made with ark.record) becomes a rosbag2 (MCAP or sqlite3)
that rosbags' reader opens with the right topics, types, counts and decodable messages."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import rosbags  # noqa: E402,F401  (the ros extra, part of the dev install)

from rosbags.rosbag2 import Reader  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from ark import DictArrays, Image, JointState, Node, Pose, String  # noqa: E402
from ark.config import ArkConfig  # noqa: E402
from ark.record import iter_recording, record  # noqa: E402
from bridge_ros.export import ExportError, export_rosbag2  # noqa: E402
from bridge_ros.messages import Imu  # noqa: E402
from tests.conftest import wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {"/cam": Image, "/joints": JointState, "/pose": Pose, "/chat": String, "/imu": Imu, "/blobs": DictArrays}
N = 6


def _message(topic: str, i: int) -> Any:
    if topic == "/cam":
        frame = np.full((48, 64, 3), i, np.uint8)
        return Image(frame, "bgr8", "cam")
    if topic == "/joints":
        return JointState(["a", "b"], np.array([i, 2.0 * i]), np.zeros(2), np.zeros(0))
    if topic == "/pose":
        return Pose(np.array([i, 0.0, 1.0]), np.array([0, 0, 0, 1.0]), "map")
    if topic == "/chat":
        return String(f"hello {i}")
    if topic == "/imu":
        return Imu(linear_acceleration=np.array([0, 0, 9.81 + i]), frame_id="imu")
    return DictArrays({"data": np.arange(i + 1.0)}, {})


def _subscribed(node: Node, topic: str, key: str) -> int:
    for info in node.registry.request("graph")["nodes"].values():
        if info["name"] == "ark-record":
            return info.get("stats", {}).get("sub", {}).get(topic, {}).get(key, 0)
    return 0


@pytest.fixture
def recording(cfg: ArkConfig, tmp_path: Path) -> Path:
    """A recording of N messages on each of TOPICS, made by ark.record from live publishers."""
    path = tmp_path / "run.mcap"
    stop = threading.Event()
    result: list = []
    thread = threading.Thread(target=lambda: result.append(record(path, list(TOPICS), config=cfg, stop=stop,
                                                                  progress=False)), daemon=True)
    src = Node("src", config=cfg)
    pubs = {t: src.publisher(t, cls) for t, cls in TOPICS.items()}
    thread.start()
    try:
        assert wait_until(lambda: all(_subscribed(src, t, "publishers") >= 1 for t in TOPICS), 5)
        time.sleep(0.05)
        for i in range(N):
            for t in TOPICS:
                pubs[t].publish(_message(t, i))
            time.sleep(0.01)
        assert wait_until(lambda: all(_subscribed(src, t, "received") >= N for t in TOPICS), 5)
    finally:
        stop.set()
        thread.join(10)
        src.shutdown()
    assert result and result[0].topics == {t: N for t in TOPICS}
    return path


@pytest.mark.parametrize("storage,distro", [("mcap", "humble"), ("sqlite3", "jazzy")])
def test_export_reads_back_with_rosbags(recording: Path, tmp_path: Path, storage: str, distro: str) -> None:
    out = tmp_path / f"bag_{storage}"
    stats = export_rosbag2(recording, out, storage=storage, distro=distro)
    assert stats.messages == 5 * N and stats.skipped_messages == 0
    assert stats.skipped_topics == {"/blobs": "no ROS 2 type for ark/DictArrays"}
    expected_types = {"/cam": "sensor_msgs/msg/Image", "/joints": "sensor_msgs/msg/JointState",
                      "/pose": "geometry_msgs/msg/PoseStamped", "/chat": "std_msgs/msg/String",
                      "/imu": "sensor_msgs/msg/Imu"}
    recorded = {m.topic: [] for m in iter_recording(recording)}
    for m in iter_recording(recording):
        recorded[m.topic].append(m)

    typestore = get_typestore(Stores.ROS2_HUMBLE if distro == "humble" else Stores.ROS2_JAZZY)
    info = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert (info["storage_identifier"], info["version"]) == (storage, {"humble": 8, "jazzy": 9}[distro])
    with Reader(out) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == expected_types
        assert {c.topic: c.msgcount for c in reader.connections} == {t: N for t in expected_types}
        assert all(c.digest == typestore.hash_rihs01(c.msgtype) for c in reader.connections)
        seen: dict[str, list] = {t: [] for t in expected_types}
        for conn, timestamp, raw in reader.messages():
            seen[conn.topic].append((timestamp, typestore.deserialize_cdr(raw, conn.msgtype)))
    for topic, msgs in seen.items():
        rec = recorded[topic]
        assert [t for t, _ in msgs] == [m.log_time_ns for m in rec]  # bag time = when the recorder got it
        for i, (_, msg) in enumerate(msgs):
            if hasattr(msg, "header"):
                assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == rec[i].publish_time_ns
            if topic == "/cam":
                assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (48, 64, "bgr8", "cam")
                assert np.all(msg.data == i)
            elif topic == "/joints":
                assert msg.name == ["a", "b"] and msg.position.tolist() == [i, 2.0 * i]
            elif topic == "/pose":
                assert msg.header.frame_id == "map" and msg.pose.position.x == i
            elif topic == "/chat":
                assert msg.data == f"hello {i}"
            elif topic == "/imu":
                assert msg.linear_acceleration.z == pytest.approx(9.81 + i) and msg.orientation.w == 1.0


def test_export_options_and_errors(recording: Path, tmp_path: Path) -> None:
    stats = export_rosbag2(recording, tmp_path / "typed", topics=["/blobs", "/chat"],
                           types={"/blobs": "std_msgs/msg/Float64MultiArray"})
    assert stats.topics == {"/blobs": ("std_msgs/msg/Float64MultiArray", N), "/chat": ("std_msgs/msg/String", N)}
    with Reader(tmp_path / "typed") as reader:
        store = get_typestore(Stores.ROS2_HUMBLE)
        blobs = [store.deserialize_cdr(raw, c.msgtype).data.tolist() for c, _, raw in reader.messages()
                 if c.topic == "/blobs"]
    assert blobs == [list(np.arange(i + 1.0)) for i in range(N)]
    # A DictArrays that does not describe the named type is skipped message by message, and counted.
    wrong = export_rosbag2(recording, tmp_path / "wrong", topics=["/blobs"], types={"/blobs": "std_msgs/msg/String"})
    assert wrong.skipped_messages == N and wrong.topics == {"/blobs": ("std_msgs/msg/String", 0)}
    with pytest.raises(ExportError, match="exists already"):
        export_rosbag2(recording, tmp_path / "typed")
    with pytest.raises(ExportError, match="no topic"):
        export_rosbag2(recording, tmp_path / "x", topics=["/nope"])
    with pytest.raises(ExportError, match="unknown rosbag2 storage"):
        export_rosbag2(recording, tmp_path / "y", storage="bag")


def test_cli_export_and_one_line_errors(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_bag"
    cmd = [sys.executable, "-m", "bridge_ros", "ros", "export", str(recording), "--format", "rosbag2", str(out),
           "--storage", "sqlite3", "--distro", "jazzy"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{5 * N} messages" in done.stderr and "skipped /blobs" in done.stderr
    with Reader(out) as reader:
        assert reader.message_count == 5 * N
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.strip().startswith("error:") and "exists already" in again.stderr
    assert "Traceback" not in again.stderr
    missing = subprocess.run([sys.executable, "-m", "bridge_ros", "ros", "export", str(tmp_path / "none.mcap"),
                              "--format", "rosbag2", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("topics:\n  - {ark: /a, type: nope_msgs/msg/Nope, direction: ark_to_ros}\n")
    cfg_err = subprocess.run([sys.executable, "-m", "bridge_ros", "ros", "bridge", str(bad)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert cfg_err.returncode == 2 and "Traceback" not in cfg_err.stderr
    assert f"{bad}: key 'topics[0].type': unknown ROS type 'nope_msgs/msg/Nope'" in cfg_err.stderr
