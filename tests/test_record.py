"""Recording to MCAP and replay: round trip, timing, file layout, corrupt files, clean stop."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader

from ark import DictArrays, Image, JointState, Node, String
from ark.config import ArkConfig
from ark.record import RecordingError, RecordWriter, iter_recording, play, record, record_to_wire, wire_to_record
from ark.wire import encode
from tests.conftest import wait_until

TOPICS = {"/cam": Image, "/joints": JointState, "/blobs": DictArrays, "/chat": String}


def _messages(i: int) -> dict[str, Any]:
    rng = np.random.default_rng(i)
    return {
        "/cam": Image(rng.integers(0, 255, (4, 5, 3), dtype=np.uint8), "rgb8", f"cam{i}"),
        "/joints": JointState([f"j{k}" for k in range(3)], rng.standard_normal(3), rng.standard_normal(3), np.zeros(0)),
        "/blobs": DictArrays({"a": rng.standard_normal((2, 2)).astype(np.float32), "b": np.arange(i + 1, dtype=np.int64)},
                             {"episode": i, "tags": ["x", "y"]}),
        "/chat": String(f"hello {i}"),
    }


def _sub_stat(node: Node, name: str, topic: str, key: str) -> int:
    """A counter of node ``name``'s subscription to ``topic``, as its heartbeats report it to the registry."""
    for info in node.registry.request("graph")["nodes"].values():
        if info["name"] == name:
            return info.get("stats", {}).get("sub", {}).get(topic, {}).get(key, 0)
    return 0


class _Recorder:
    """Runs ``record`` in a thread until ``finish()`` sets its stop event."""

    def __init__(self, path: Path, topics: list[str] | None, cfg: ArkConfig, **kw: Any) -> None:
        self.stop = threading.Event()
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(path, topics, cfg, kw), daemon=True)
        self.thread.start()

    def _run(self, path: Path, topics: list[str] | None, cfg: ArkConfig, kw: dict) -> None:
        try:
            self.result = record(path, topics, config=cfg, stop=self.stop, progress=False, **kw)
        except BaseException as exc:  # surfaced by finish()
            self.result = exc

    def finish(self) -> Any:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "record() did not return after stop"
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def _record_session(cfg: ArkConfig, path: Path, n: int) -> Any:
    """Record ``n`` rounds of the four test topics; returns (stats, published messages by topic)."""
    src = Node("src", config=cfg)
    pubs = {t: src.publisher(t, cls) for t, cls in TOPICS.items()}
    rec = _Recorder(path, list(TOPICS), cfg)
    try:
        assert wait_until(lambda: all(_sub_stat(src, "ark-record", t, "publishers") >= 1 for t in TOPICS), 5)
        time.sleep(0.05)  # subscription travels to the publisher after the connect
        sent: dict[str, list] = {t: [] for t in TOPICS}
        for i in range(n):
            for t, msg in _messages(i).items():
                pubs[t].publish(msg)
                sent[t].append(msg)
        assert wait_until(lambda: all(_sub_stat(src, "ark-record", t, "received") >= n for t in TOPICS), 5)
    finally:
        stats = rec.finish()
        src.shutdown()
    return stats, sent


def test_round_trip_record_then_play_to_typed_subscribers(cfg: ArkConfig, tmp_path: Path) -> None:
    path = tmp_path / "run.mcap"
    stats, sent = _record_session(cfg, path, 3)
    assert stats.messages == 12 and stats.topics == {t: 3 for t in TOPICS}

    got: dict[str, list] = {t: [] for t in TOPICS}
    sink = Node("sink", config=cfg)
    for t, cls in TOPICS.items():
        sink.subscriber(t, cls, got[t].append, queue=50)
    sink.start()
    try:
        pstats = play(path, config=cfg, rate=0, progress=False)
        assert pstats.messages == 12
        assert wait_until(lambda: all(len(v) == 3 for v in got.values()), 5), {t: len(v) for t, v in got.items()}
    finally:
        sink.shutdown()

    for i in range(3):
        cam, want = got["/cam"][i], sent["/cam"][i]
        assert np.array_equal(cam.data, want.data) and cam.data.dtype == np.uint8 and cam.frame_id == f"cam{i}"
        js, want_js = got["/joints"][i], sent["/joints"][i]
        assert js.name == want_js.name
        for f in ("position", "velocity", "effort"):
            assert np.array_equal(getattr(js, f), getattr(want_js, f))
        blobs, want_b = got["/blobs"][i], sent["/blobs"][i]
        assert set(blobs.arrays) == {"a", "b"} and blobs.meta == want_b.meta
        for k in ("a", "b"):
            assert np.array_equal(blobs.arrays[k], want_b.arrays[k]) and blobs.arrays[k].dtype == want_b.arrays[k].dtype
        assert got["/chat"][i].data == f"hello {i}"


def test_file_opens_with_mcap_reader(cfg: ArkConfig, tmp_path: Path) -> None:
    path = tmp_path / "layout.mcap"
    _record_session(cfg, path, 2)
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None
        assert sorted(ch.topic for ch in summary.channels.values()) == sorted(TOPICS)
        assert {ch.message_encoding for ch in summary.channels.values()} == {"msgpack"}
        assert {s.encoding for s in summary.schemas.values()} == {"jsonschema"}
        names = {s.name: json.loads(s.data) for s in summary.schemas.values()}
        assert set(names) == {"ark/Image", "ark/JointState", "ark/DictArrays", "ark/String"}
        assert names["ark/Image"]["properties"]["data"]["properties"]["data"]["contentEncoding"] == "base64"
        assert names["ark/JointState"]["properties"]["name"] == {"type": "array", "items": {"type": "string"}}
        counts = {summary.channels[cid].topic: n for cid, n in summary.statistics.channel_message_counts.items()}
        assert counts == {t: 2 for t in TOPICS}
        import msgpack
        for _, channel, message in reader.iter_messages(topics=["/cam"]):
            rec = msgpack.unpackb(message.data)
            assert rec["_schema"] == "ark/Image" and rec["data"]["dtype"] == "|u1" and rec["data"]["shape"] == [4, 5, 3]
            assert message.publish_time > 0 and message.log_time >= message.publish_time - 10**9


def test_record_to_wire_inverts_wire_to_record() -> None:
    msg = _messages(4)["/blobs"]
    frames = encode(b"/blobs", msg, 9, 123, "me")
    import msgpack
    header = msgpack.unpackb(frames[1])
    back, buffers = record_to_wire(wire_to_record(header, frames[2:]), stamp_ns=123)
    assert back["s"] == "ark/DictArrays" and back["q"] == 9 and back["t"] == 123 and back["f"] == header["f"]
    assert sorted(map(tuple, (e[:3] for e in back["a"]))) == sorted(map(tuple, (e[:3] for e in header["a"])))
    assert sorted(bytes(b) for b in buffers) == sorted(bytes(b) for b in frames[2:])
    with pytest.raises(RecordingError):
        record_to_wire(msgpack.packb({"_schema": "ark/Image", "_version": 1, "_seq": 1,
                                      "data": {"dtype": "|O", "shape": [1], "data": b"x"}}))


def _synthetic(path: Path, n: int, spacing_ns: int) -> None:
    """A recording of ``n`` String messages on /tick whose log times are ``spacing_ns`` apart."""
    import msgpack
    with RecordWriter(path) as w:
        for i in range(n):
            header = msgpack.unpackb(encode(b"/tick", String(str(i)), i + 1, 1000 + i, "src")[1])
            w.write("/tick", header, [], log_time_ns=10**18 + i * spacing_ns)


def test_play_keeps_timing_scaled_by_rate(cfg: ArkConfig, tmp_path: Path) -> None:
    path = tmp_path / "tick.mcap"
    _synthetic(path, 5, 100_000_000)  # 100 ms apart: 0.4 s of recording
    arrivals: list[tuple[float, str]] = []
    sink = Node("sink", config=cfg)
    sink.subscriber("/tick", String, lambda m: arrivals.append((time.monotonic(), m.data)), queue=50)
    sink.start()
    try:
        stats = play(path, config=cfg, rate=2.0, progress=False)
        assert wait_until(lambda: len(arrivals) == 5, 3)
    finally:
        sink.shutdown()
    assert stats.messages == 5 and [d for _, d in arrivals] == ["0", "1", "2", "3", "4"]
    span = arrivals[-1][0] - arrivals[0][0]
    assert 0.1 < span < 0.35, span  # 0.2 s expected at rate 2; 0.4 s would mean the rate was ignored


def test_play_can_keep_original_stamps(cfg: ArkConfig, tmp_path: Path) -> None:
    path = tmp_path / "stamps.mcap"
    _synthetic(path, 3, 1_000_000)
    stamps: list[int] = []
    sink = Node("sink", config=cfg)
    sink.subscriber("/tick", String, lambda m, info: stamps.append(info.stamp_ns), queue=50)
    sink.start()
    try:
        play(path, config=cfg, rate=0, progress=False, original_stamps=True)
        assert wait_until(lambda: len(stamps) == 3, 3)
    finally:
        sink.shutdown()
    assert stamps == [1000, 1001, 1002]


@pytest.mark.parametrize("content", [b"", b"not an mcap file at all", b"\x89MCAP0\r\n" + b"\xff" * 64])
def test_corrupt_file_raises_recording_error(cfg: ArkConfig, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mcap"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match="bad.mcap"):
        play(path, config=cfg, progress=False)
    with pytest.raises(RecordingError, match="missing.mcap"):
        play(tmp_path / "missing.mcap", config=cfg, progress=False)


def test_unfinished_recording_is_readable_up_to_the_damage(tmp_path: Path) -> None:
    """A recorder that dies leaves flushed chunks readable (as a kill -9 would, minus the summary)."""
    path = tmp_path / "crash.mcap"
    import msgpack
    w = RecordWriter(path)
    for i in range(4):
        header = msgpack.unpackb(encode(b"/tick", String(str(i)), i + 1, 1000 + i, "src")[1])
        w.write("/tick", header, [], log_time_ns=10**18 + i)
        w.flush()
    w._file.flush()  # simulate the process vanishing here: no finish(), no footer
    data = path.read_bytes()
    path.write_bytes(data + b"\x05\x10")  # plus a torn record at the end
    got = [m.header["f"]["data"] for m in iter_recording(path)]
    assert got == ["0", "1", "2", "3"]
    w._file.close()


def test_stop_event_ends_recording_with_everything_received(cfg: ArkConfig, tmp_path: Path) -> None:
    path = tmp_path / "stop.mcap"
    src = Node("src", config=cfg)
    pub = src.publisher("/chat", String)
    rec = _Recorder(path, ["/chat", "/absent"], cfg)
    try:
        assert wait_until(lambda: _sub_stat(src, "ark-record", "/chat", "publishers") >= 1, 5)
        time.sleep(0.05)
        for i in range(25):
            pub.publish(String(f"m{i}"))
        assert wait_until(lambda: _sub_stat(src, "ark-record", "/chat", "received") >= 25, 5)
    finally:
        stats = rec.finish()
        src.shutdown()
    assert stats.messages == 25 and stats.topics == {"/chat": 25}
    assert [m.header["f"]["data"] for m in iter_recording(path)] == [f"m{i}" for i in range(25)]


def test_all_topics_picks_up_topics_that_appear_later(cfg: ArkConfig, tmp_path: Path) -> None:
    path = tmp_path / "all.mcap"
    src = Node("src", config=cfg)
    rec = _Recorder(path, None, cfg, all_topics=True)
    try:
        time.sleep(0.1)
        pub = src.publisher("/late", String)  # appears after the recorder started
        assert wait_until(lambda: _sub_stat(src, "ark-record", "/late", "publishers") >= 1, 5)
        time.sleep(0.05)
        for i in range(3):
            pub.publish(String(str(i)))
        assert wait_until(lambda: _sub_stat(src, "ark-record", "/late", "received") >= 3, 5)
    finally:
        stats = rec.finish()
        src.shutdown()
    assert stats.topics == {"/late": 3}


def test_duration_ends_recording_and_nothing_to_record_is_an_error(cfg: ArkConfig, tmp_path: Path) -> None:
    t0 = time.monotonic()
    stats = record(tmp_path / "short.mcap", ["/nothing"], config=cfg, duration=0.3, progress=False)
    assert 0.25 < time.monotonic() - t0 < 3 and stats.messages == 0
    assert play(tmp_path / "short.mcap", config=cfg, progress=False).messages == 0  # empty but valid
    with pytest.raises(RecordingError):
        record(tmp_path / "none.mcap", None, config=cfg, progress=False)


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_recorder_process_ended_by_signal_leaves_readable_file(cfg: ArkConfig, env_for: dict, tmp_path: Path,
                                                               how: str) -> None:
    """SIGINT finishes the file; kill -9 still leaves the chunks flushed so far (flushed within ~1 s)."""
    import signal
    import subprocess

    from tests.conftest import PYTHON

    path = tmp_path / "proc.mcap"
    code = f"from ark.record import record; print(record({str(path)!r}, ['/chat'], progress=False).messages)"
    src = Node("src", config=cfg)  # first, so the graph's registry lives in this process, not the recorder's
    proc = subprocess.Popen([PYTHON, "-c", code], env=env_for, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        pub = src.publisher("/chat", String)
        assert wait_until(lambda: _sub_stat(src, "ark-record", "/chat", "publishers") >= 1, 10)
        time.sleep(0.05)
        for i in range(10):
            pub.publish(String(f"m{i}"))
        assert wait_until(lambda: _sub_stat(src, "ark-record", "/chat", "received") >= 10, 5)

        def readable() -> int:
            try:
                return sum(1 for _ in iter_recording(path))
            except RecordingError:
                return 0

        if how == "SIGKILL":
            assert wait_until(lambda: readable() == 10, 5)  # the periodic flush put them on disk
        proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        src.shutdown()
    if how == "SIGINT":
        assert proc.returncode == 0, err
        assert out.strip() == "10"
        with open(path, "rb") as f:
            assert make_reader(f).get_summary().statistics.message_count == 10  # finished: has a summary
    assert [m.header["f"]["data"] for m in iter_recording(path)] == [f"m{i}" for i in range(10)]
