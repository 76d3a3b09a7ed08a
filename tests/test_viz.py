"""Visualisation: Ark's MCAP is well-formed, the Foxglove export and live tap carry Foxglove schemas, PNG plots."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time

import numpy as np
import pytest
from mcap.reader import make_reader

from ark import Image, JointState, LaserScan, Node, Pose, String
from ark.record import RecordWriter
from ark.wire import decode_header, encode
from conftest import wait_until


def sample_messages():
    from ark.slam.node import OccupancyGridMsg

    img = Image(data=np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), encoding="rgb8", frame_id="cam")
    pose = Pose(position=np.array([1.0, 2.0, 0.0]), orientation=np.array([0.0, 0.0, 0.0, 1.0]), frame_id="map")
    scan = LaserScan(ranges=np.linspace(1.0, 2.0, 8).astype(np.float32), angle_min=-1.0, angle_max=0.75,
                     angle_increment=0.25, range_min=0.05, range_max=5.0, frame_id="base_link")
    grid = OccupancyGridMsg(data=np.array([[-1, 0], [100, 50]], dtype=np.int8), resolution=0.5, origin=[1.0, -1.0, 0.0])
    joints = JointState(name=["a", "b"], position=np.array([0.1, 0.2]), velocity=np.zeros(2), effort=np.ones(2))
    return [("/camera", img), ("/pose", pose), ("/scan", scan), ("/map", grid), ("/joints", joints),
            ("/note", String("hello"))]


@pytest.fixture
def ark_mcap(tmp_path):
    path = tmp_path / "run.mcap"
    with RecordWriter(path) as w:
        for k in range(3):
            for topic, msg in sample_messages():
                header, buffers, _ = decode_header(encode(topic.encode(), msg, k + 1, 1_000_000_000 + k, "test"))
                w.write(topic, header, buffers, log_time_ns=2_000_000_000 + 1000 * k)
    return path


def test_ark_mcap_has_valid_json_schemas_and_one_channel_per_topic(ark_mcap):
    with open(ark_mcap, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count == 18
        channels = {c.topic: c for c in summary.channels.values()}
        assert set(channels) == {"/camera", "/pose", "/scan", "/map", "/joints", "/note"}
        for ch in channels.values():
            schema = summary.schemas[ch.schema_id]
            assert schema.encoding == "jsonschema" and ch.message_encoding == "msgpack"
            body = json.loads(schema.data)
            assert body["type"] == "object" and body["properties"]["_schema"]["const"] == schema.name
            assert ch.metadata["ark.schema"] == schema.name
        assert summary.schemas[channels["/scan"].schema_id].name == "ark/LaserScan"
        assert "ranges" in json.loads(summary.schemas[channels["/scan"].schema_id].data)["properties"]


def test_json_export_is_plain_json_that_matches_its_schema_names(ark_mcap, tmp_path):
    from ark.viz.foxglove import export_mcap_json

    out = tmp_path / "run.json.mcap"
    counts = export_mcap_json(ark_mcap, out)
    assert counts["/scan"] == 3 and sum(counts.values()) == 18
    with open(out, "rb") as f:
        seen = 0
        for schema, channel, message in make_reader(f).iter_messages(topics=["/scan"]):
            assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
            rec = json.loads(message.data)
            assert rec["_schema"] == schema.name == "ark/LaserScan"
            ranges = np.frombuffer(base64.b64decode(rec["ranges"]["data"]), dtype=rec["ranges"]["dtype"])
            assert np.allclose(ranges, np.linspace(1.0, 2.0, 8))
            seen += 1
        assert seen == 3


def _decoder(schema):
    """A protobuf message class from an MCAP protobuf schema (a FileDescriptorSet)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fds = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))


def test_foxglove_export_writes_foxglove_schemas_that_decode(ark_mcap, tmp_path):
    import foxglove  # noqa: F401  (the viz extra, part of the dev install)
    import google.protobuf  # noqa: F401  (decodes what was written; comes with onnx in the dev install)
    from ark.viz.foxglove import export_mcap

    out = tmp_path / "run.foxglove.mcap"
    counts = export_mcap(ark_mcap, out, transforms={"/pose": "base_link"})
    assert sum(counts.values()) == 18
    want = {"/camera": "foxglove.RawImage", "/pose": "foxglove.PoseInFrame", "/scan": "foxglove.LaserScan",
            "/map": "foxglove.Grid", "/joints": "foxglove.JointStates", "/tf": "foxglove.FrameTransforms"}
    first = {}
    with open(out, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            if channel.topic in want:
                assert schema.name == want[channel.topic] and schema.encoding == "protobuf"
                assert channel.message_encoding == "protobuf"
                first.setdefault(channel.topic, _decoder(schema).FromString(message.data))
            else:
                assert channel.topic == "/note" and channel.message_encoding == "json"
                assert json.loads(message.data) == {"data": "hello"}
    assert set(first) == set(want)
    img = first["/camera"]
    assert (img.width, img.height, img.encoding, img.step) == (5, 4, "rgb8", 15) and len(img.data) == 60
    assert img.timestamp.seconds == 1 and img.timestamp.nanos == 0  # the publisher's stamp
    assert first["/pose"].pose.position.y == 2.0 and first["/pose"].frame_id == "map"
    assert list(first["/scan"].ranges) == pytest.approx(np.linspace(1.0, 2.0, 8).tolist())
    grid = first["/map"]
    assert grid.column_count == 2 and grid.cell_size.x == 0.5 and grid.pose.position.x == 1.0
    assert np.frombuffer(grid.data, np.int8).tolist() == [-1, 0, 100, 50]
    assert first["/tf"].transforms[0].child_frame_id == "base_link"
    assert [j.name for j in first["/joints"].joints] == ["a", "b"]


class WsClient:
    """Just enough of a WebSocket client (RFC 6455) to talk to a Foxglove server on loopback."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Sec-WebSocket-Protocol: foxglove.sdk.v1\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(4096)
        head, self.rest = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self, n: int) -> bytes:
        while len(self.rest) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.rest += chunk
        out, self.rest = self.rest[:n], self.rest[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def send_text(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def close(self) -> None:
        self.sock.close()


def test_foxglove_tap_serves_ark_topics_over_websocket_and_to_mcap(cfg, tmp_path):
    import foxglove  # noqa: F401  (the viz extra, part of the dev install)
    import google.protobuf  # noqa: F401
    from ark.viz.foxglove import FoxgloveTap

    mcap_path = tmp_path / "tap.mcap"
    tap = FoxgloveTap(["/pose", "/scan"], port=0, transforms={"/pose": "base_link"}, mcap_path=mcap_path,
                      config=cfg).start()
    src = Node("robot", config=cfg).start()
    pose_pub = src.publisher("/pose", Pose)
    scan_pub = src.publisher("/scan", LaserScan)
    pose, scan = sample_messages()[1][1], sample_messages()[2][1]
    assert wait_until(lambda: (pose_pub.publish(pose), scan_pub.publish(scan), tap.sink.messages >= 2)[2], 5.0, 0.05)
    client = WsClient(tap.port)
    try:
        channels, end = {}, time.monotonic() + 5
        while time.monotonic() < end and not {"/pose", "/scan", "/tf"} <= set(channels):
            op, payload = client.recv()
            if op == 1:
                msg = json.loads(payload)
                if msg.get("op") == "advertise":
                    channels.update({c["topic"]: c for c in msg["channels"]})
        assert channels["/pose"]["schemaName"] == "foxglove.PoseInFrame" and channels["/pose"]["encoding"] == "protobuf"
        assert channels["/scan"]["schemaName"] == "foxglove.LaserScan"
        assert channels["/tf"]["schemaName"] == "foxglove.FrameTransforms"
        client.send_text(json.dumps({"op": "subscribe", "subscriptions": [{"id": 7, "channelId": channels["/pose"]["id"]}]}))
        got = None
        end = time.monotonic() + 5
        while got is None and time.monotonic() < end:
            pose_pub.publish(pose)
            client.sock.settimeout(0.5)
            try:
                op, payload = client.recv()
            except socket.timeout:
                continue
            if op == 2 and payload[0] == 1:  # binary "message data" for our subscription
                assert struct.unpack("<I", payload[1:5])[0] == 7
                got = payload[13:]
        assert got is not None
        from types import SimpleNamespace

        ch = channels["/pose"]
        schema = SimpleNamespace(name=ch["schemaName"], data=base64.b64decode(ch["schema"]))
        decoded = _decoder(schema).FromString(got)
        assert decoded.pose.position.x == 1.0 and decoded.pose.position.y == 2.0 and decoded.frame_id == "map"
    finally:
        client.close()
    src.shutdown()
    tap.shutdown()
    with open(mcap_path, "rb") as f:
        topics = {c.topic for c in make_reader(f).get_summary().channels.values()}
    assert {"/pose", "/scan", "/tf"} <= topics


def test_png_plots_are_written(tmp_path):
    import matplotlib  # noqa: F401  (the viz extra, part of the dev install)
    from ark.viz.plots import benchmark_bars, rate_accuracy, training_curves, trajectories

    rows = [{"scene": "room", "method": "odometry", "ate": 0.3}, {"scene": "room", "method": "SLAM", "ate": 0.01},
            {"scene": "ring", "method": "odometry", "ate": 1.5}, {"scene": "ring", "method": "SLAM", "ate": 0.03}]
    paths = [training_curves({"train": [3, 2, 1.5, 1.2], "val": ([0, 2], [3.1, 1.8])}, tmp_path / "a.png"),
             rate_accuracy({"ark": ([10, 40, 20], [0.5, 0.9, 0.8])}, tmp_path / "b.png", xlabel="kbit/s"),
             benchmark_bars(rows, "ate", tmp_path / "c.png", label="method", group="scene", log_y=True),
             trajectories({"truth": np.c_[np.arange(5), np.arange(5)], "est": np.c_[np.arange(5), np.arange(5) + 0.1]},
                          tmp_path / "sub" / "d.png", occupancy=np.full((10, 10), 0.5), extent=(0, 5, 0, 5))]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", data[16:24])
        assert w >= 400 and h >= 300
