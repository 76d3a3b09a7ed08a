"""Recording and replay: topics to MCAP files and back.

``record`` subscribes schema-agnostically to topics and writes each message to an MCAP file
(it opens in Foxglove and Rerun); ``play`` republishes a recording with its original timing.

File layout: one MCAP schema per Ark schema (encoding ``jsonschema``, a JSON Schema of the
message's fields), one channel per topic (message encoding ``msgpack``, metadata
``ark.schema``/``ark.version``). A message is a msgpack map of the message in natural form::

    {"_schema": "ark/Image", "_version": 1, "_seq": 7, "encoding": "rgb8", "frame_id": "",
     "data": {"dtype": "|u1", "shape": [480, 640, 3], "data": b"..."}}

Dict-of-array fields are maps of such array objects. A message's ``log_time`` is when the
recorder received it, its ``publish_time`` the publisher's stamp. Chunks are small and
flushed at least once a second, so a recorder that dies leaves a file whose earlier chunks
remain readable (``play`` and :func:`iter_recording` read such files up to the damage).

    stats = record("run.mcap", ["/camera", "/joints"], duration=10)
    play("run.mcap", rate=2.0)
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import signal
import sys
import threading
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import msgpack
import numpy as np

from ark.channel import RawMessage
from ark.config import ArkConfig
from ark.errors import ArkError, RegistryError, SchemaError
from ark.messages import ALLOWED_DTYPES, SchemaInfo, lookup_schema
from ark.wire import MessageInfo

log = logging.getLogger("ark.record")

MCAP_MAGIC = b"\x89MCAP0\r\n"
CHUNK_BYTES = 256 * 1024  # small chunks: a crash loses at most one chunk's worth
FLUSH_EVERY_S = 1.0  # and at most this much time's worth
GRAPH_POLL_S = 1.0  # how often ``all_topics`` looks for new topics
SUBSCRIBER_WAIT_S = 1.0  # the most ``play`` waits for subscribers to connect
PROFILE = "ark"


class RecordingError(ArkError):
    """A recording cannot be written or read (missing, corrupt or not an MCAP file)."""


@dataclass
class RecordStats:
    """What a recording session wrote."""

    path: str
    messages: int = 0  # messages written
    bytes: int = 0  # message data written (before chunk compression)
    topics: dict[str, int] = field(default_factory=dict)  # messages written per topic
    dropped: int = 0  # messages lost before the recorder saw them (queue overflow, sequence gaps)
    duration_s: float = 0.0


@dataclass
class PlayStats:
    """What a replay published."""

    path: str
    messages: int = 0  # messages published (all loops)
    bytes: int = 0  # recorded message data published
    topics: dict[str, int] = field(default_factory=dict)  # messages published per topic
    skipped: int = 0  # messages whose schema differs from their topic's first one
    loops: int = 0  # passes over the file
    duration_s: float = 0.0


@dataclass
class RecordedMessage:
    """One message read back from a recording, in wire form (header map and buffers)."""

    topic: str
    schema: str
    version: int
    log_time_ns: int
    publish_time_ns: int
    header: dict
    buffers: list[memoryview]
    nbytes: int


# --------------------------------------------------------------------------------------
# Message form: wire (header + buffers) <-> msgpack record


def _array_obj(dtype: str, shape: list[int], data: Any) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data": data}


def wire_to_record(header: dict, buffers: Sequence[Any]) -> bytes:
    """The msgpack record of a wire message: plain fields, arrays as {dtype, shape, data}."""
    rec: dict[str, Any] = {"_schema": header["s"], "_version": header["v"], "_seq": header["q"]}
    rec.update(header.get("f", {}))
    for (name, key, dtype, shape), buf in zip(header.get("a", []), buffers):
        obj = _array_obj(dtype, shape, memoryview(buf).cast("B"))
        if key is None:
            rec[name] = obj
        else:
            rec.setdefault(name, {})[key] = obj
    return msgpack.packb(rec, use_bin_type=True)


def _looks_like_array(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"dtype", "shape", "data"} and isinstance(value["data"], bytes)


def _check_array(where: str, value: Any) -> tuple[str, list[int], memoryview]:
    if not _looks_like_array(value):
        raise RecordingError(f"recorded message: {where} is not an array object")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if dtype not in ALLOWED_DTYPES:
        raise RecordingError(f"recorded message: {where} has dtype {dtype!r}, which is not allowed")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise RecordingError(f"recorded message: {where} has a bad shape {shape!r}")
    need = math.prod(shape) * np.dtype(dtype).itemsize
    if need != len(data):
        raise RecordingError(f"recorded message: {where} holds {len(data)} bytes, shape {tuple(shape)} {dtype} needs {need}")
    return dtype, shape, memoryview(data)


def record_to_wire(data: bytes, stamp_ns: int = 0) -> tuple[dict, list[memoryview]]:
    """The wire header and buffers of a recorded message (the inverse of :func:`wire_to_record`).

    Which fields are arrays is taken from the locally registered schema when its name and
    version match, otherwise from the shape of the values. Raises RecordingError on a record
    that is not a valid message.
    """
    try:
        rec = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise RecordingError(f"recorded message: not msgpack ({type(exc).__name__})") from None
    if not isinstance(rec, dict):
        raise RecordingError("recorded message: not a map")
    schema, version, seq = rec.pop("_schema", None), rec.pop("_version", None), rec.pop("_seq", 0)
    if not isinstance(schema, str) or not isinstance(version, int) or not isinstance(seq, int):
        raise RecordingError("recorded message: _schema, _version or _seq missing or mistyped")
    info: SchemaInfo | None
    try:
        info = lookup_schema(schema)
        if info.version != version:
            info = None
    except SchemaError:
        info = None
    array_names = {n for n, _ in info.array_fields} if info else None
    dict_names = set(info.dict_array_fields) if info else None
    fields: dict[str, Any] = {}
    arrays: list[list] = []
    buffers: list[memoryview] = []
    for name, value in rec.items():
        is_array = name in array_names if info else _looks_like_array(value)
        is_dict = name in dict_names if info else (
            isinstance(value, dict) and bool(value) and all(_looks_like_array(v) for v in value.values()))
        if is_array:
            dtype, shape, buf = _check_array(name, value)
            arrays.append([name, None, dtype, shape])
            buffers.append(buf)
        elif is_dict:
            if not isinstance(value, dict):
                raise RecordingError(f"recorded message: {name} is not a map of arrays")
            for key, item in value.items():
                dtype, shape, buf = _check_array(f"{name}[{key!r}]", item)
                arrays.append([name, key, dtype, shape])
                buffers.append(buf)
        else:
            fields[name] = value
    header = {"s": schema, "v": version, "q": seq, "t": stamp_ns, "p": "", "f": fields, "a": arrays}
    return header, buffers


# --------------------------------------------------------------------------------------
# JSON Schema of a message

_ARRAY_JSON = {
    "type": "object",
    "properties": {
        "dtype": {"type": "string", "description": "numpy dtype string, little-endian (e.g. <f8, |u1)"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "string", "contentEncoding": "base64", "description": "raw C-order bytes"},
    },
    "required": ["dtype", "shape", "data"],
}


def _json_type(tp: Any) -> dict:
    """A JSON Schema fragment for a plain field annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    if origin is list:
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if origin is typing.Union or origin is types.UnionType:
        return {"anyOf": [_json_type(a) for a in args]}
    return {}


def _json_value_type(value: Any) -> dict:
    """A JSON Schema fragment guessed from one value (schemas not registered in this process)."""
    for tp, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                     (list, "array"), (dict, "object"), (type(None), "null")):
        if isinstance(value, tp):
            return {"type": name}
    return {}


def json_schema(header: dict) -> dict:
    """The JSON Schema of the messages whose first wire header is ``header``."""
    name, version = header["s"], header["v"]
    props: dict[str, Any] = {"_schema": {"type": "string", "const": name},
                             "_version": {"type": "integer", "const": version},
                             "_seq": {"type": "integer"}}
    description = ""
    try:
        info: SchemaInfo | None = lookup_schema(name)
        if info.version != version:
            info = None
    except SchemaError:
        info = None
    if info is not None:
        description = (info.cls.__doc__ or "").strip()
        hints = typing.get_type_hints(info.cls)
        specs = dict(info.array_fields)
        for f in dataclasses.fields(info.cls):
            if f.name in specs:
                spec = specs[f.name]
                frag = dict(_ARRAY_JSON)
                if spec.dtype is not None or spec.shape is not None:
                    shape = "any" if spec.shape is None else "(" + ", ".join("N" if s is None else str(s) for s in spec.shape) + ")"
                    frag["description"] = f"dtype {spec.dtype if spec.dtype is not None else 'any'}, shape {shape}"
                props[f.name] = frag
            elif f.name in info.dict_array_fields:
                props[f.name] = {"type": "object", "additionalProperties": _ARRAY_JSON}
            else:
                props[f.name] = _json_type(hints[f.name])
    else:
        for key, value in header.get("f", {}).items():
            props[key] = _json_value_type(value)
        for fname, key, _, _ in header.get("a", []):
            props[fname] = _ARRAY_JSON if key is None else {"type": "object", "additionalProperties": _ARRAY_JSON}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": name,
            "description": description or f"Ark message {name} v{version}",
            "type": "object", "properties": props, "required": ["_schema", "_version"]}


# --------------------------------------------------------------------------------------
# Writing


def _compression() -> Any:
    from mcap.writer import CompressionType

    for kind, module in ((CompressionType.ZSTD, "zstandard"), (CompressionType.LZ4, "lz4")):
        try:
            __import__(module)
            return kind
        except ImportError:
            continue
    return CompressionType.NONE


class RecordWriter:
    """Writes wire messages into an MCAP file; thread-safe. ``close()`` finishes the file."""

    def __init__(self, path: str | Path) -> None:
        from mcap.writer import Writer

        self.path = str(path)
        try:
            self._file = open(self.path, "wb")
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write ({exc.strerror})") from None
        self._writer = Writer(self._file, chunk_size=CHUNK_BYTES, compression=_compression())
        self._writer.start(profile=PROFILE, library="ark")
        self._lock = threading.Lock()
        self._schemas: dict[tuple[str, int], int] = {}
        self._channels: dict[tuple[str, str, int], int] = {}
        self._pending = False
        self._closed = False
        self.messages = 0
        self.bytes = 0
        self.topics: dict[str, int] = {}

    def write(self, topic: str, header: dict, buffers: Sequence[Any], log_time_ns: int | None = None) -> None:
        """Append one message; ``log_time_ns`` defaults to now (the time of receipt)."""
        data = wire_to_record(header, buffers)
        with self._lock:
            if self._closed:
                return
            # Stamped inside the lock so log times ascend in file order.
            log_time = time.time_ns() if log_time_ns is None else log_time_ns
            channel = self._channel(topic, header)
            self._writer.add_message(channel, log_time=log_time, data=data, publish_time=max(0, header["t"]),
                                     sequence=header["q"] & 0xFFFFFFFF)
            self._pending = True
            self.messages += 1
            self.bytes += len(data)
            self.topics[topic] = self.topics.get(topic, 0) + 1

    def _channel(self, topic: str, header: dict) -> int:
        name, version = header["s"], header["v"]
        key = (topic, name, version)
        if key not in self._channels:
            if (name, version) not in self._schemas:
                data = json.dumps(json_schema(header)).encode()
                self._schemas[(name, version)] = self._writer.register_schema(name, "jsonschema", data)
            self._channels[key] = self._writer.register_channel(
                topic, "msgpack", self._schemas[(name, version)],
                metadata={"ark.schema": name, "ark.version": str(version)})
        return self._channels[key]

    def flush(self) -> None:
        """Write the chunk in progress to disk so that it survives a crash."""
        with self._lock:
            if self._pending and not self._closed:
                self._writer.flush()
                self._pending = False

    def close(self) -> None:
        """Finish the file (summary and footer) and close it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._writer.finish()
            finally:
                self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# Progress line and signals


class _Progress:
    """A live one-line status on a terminal; silent when disabled or not a TTY."""

    def __init__(self, enabled: bool) -> None:
        self._live = None
        self._next = 0.0
        if enabled and sys.stdout.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live("", console=Console(highlight=False), refresh_per_second=4, transient=False)
            self._live.start()

    def update(self, render: Callable[[], str], force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if force or now >= self._next:
            self._next = now + 0.25
            self._live.update(render())

    def close(self, render: Callable[[], str]) -> None:
        if self._live is not None:
            self._live.update(render())
            self._live.stop()


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _status(verb: str, path: str, messages: int, nbytes: int, topics: dict[str, int], elapsed: float) -> str:
    from rich.markup import escape

    per_topic = "  ".join(f"{escape(t)}: {n}" for t, n in sorted(topics.items()))
    return f"[bold]{verb}[/] {escape(path)}  {elapsed:.1f}s  {messages} msgs  {_human_bytes(nbytes)}  {per_topic}"


def _on_signals(event: threading.Event) -> Callable[[], None]:
    """Make SIGINT/SIGTERM set ``event`` (main thread only); returns a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda *_: event.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in previous.items()] and None


# --------------------------------------------------------------------------------------
# record


def record(path: str | Path, topics: list[str] | None, *, config: ArkConfig | None = None,
           duration: float | None = None, stop: threading.Event | None = None, all_topics: bool = False,
           progress: bool = True) -> RecordStats:
    """Record ``topics`` (or, with ``all_topics``, every topic, including ones that appear later) to an MCAP file.

    Runs until ``stop`` is set, ``duration`` seconds pass, or SIGINT/SIGTERM arrives, then
    finishes the file and returns what was written. Topics without publishers are recorded
    once they appear. Raises RecordingError when the file cannot be written.
    """
    from ark.node import Node

    wanted = list(dict.fromkeys(topics or []))
    if not wanted and not all_topics:
        raise RecordingError(f"{path}: nothing to record (name topics or use all_topics)")
    if duration is not None and not duration > 0:
        raise RecordingError(f"{path}: duration must be > 0 s, got {duration}")
    path = str(path)
    writer = RecordWriter(path)
    halt = threading.Event()
    failure: list[BaseException] = []

    def on_message(msg: RawMessage, info: MessageInfo) -> None:
        if failure:
            return
        try:
            writer.write(info.topic, msg.header, msg.buffers)
        except Exception as exc:  # disk full, closed file: stop rather than lose data silently
            failure.append(exc)
            halt.set()

    try:
        node = Node("ark-record", config=config)
    except BaseException:
        writer.close()
        raise
    subscribed: dict[str, Any] = {}

    def subscribe(topic: str) -> None:
        if topic not in subscribed:
            subscribed[topic] = node.subscriber(topic, None, on_message, queue=256)

    restore = _on_signals(halt)
    bar = _Progress(progress)
    started = time.monotonic()
    render = lambda: _status("recording", path, writer.messages, writer.bytes, writer.topics,  # noqa: E731
                             time.monotonic() - started)
    try:
        for topic in wanted:
            subscribe(topic)
        node.start()
        deadline = None if duration is None else started + duration
        next_poll = started
        next_flush = started + FLUSH_EVERY_S
        while not halt.is_set() and not (stop is not None and stop.is_set()):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if all_topics and now >= next_poll:
                next_poll = now + GRAPH_POLL_S
                try:
                    for topic in node.registry.request("graph")["publishers"]:
                        subscribe(topic)
                except RegistryError as exc:
                    log.warning("record: graph query failed (%s); retrying", exc)
            if now >= next_flush:
                next_flush = now + FLUSH_EVERY_S
                writer.flush()
            bar.update(render)
            halt.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - now)))
    finally:
        # Signal handlers stay ours until the file is finished: a second Ctrl-C must not tear it.
        dropped = sum(s.dropped for s in subscribed.values())
        node.shutdown()
        # Messages the node received but had not yet handed to the callback are written too.
        for sub in subscribed.values():
            while sub.queue:
                msg, info = sub.queue.popleft()
                on_message(msg, info)
        writer.close()
        bar.close(render)
        restore()
    if failure:
        exc = failure[0]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RecordingError(f"{path}: recording stopped, cannot write ({reason})")
    return RecordStats(path=path, messages=writer.messages, bytes=writer.bytes, topics=dict(writer.topics),
                       dropped=dropped, duration_s=time.monotonic() - started)


# --------------------------------------------------------------------------------------
# Reading


def _open(path: str) -> io.BufferedReader:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read ({exc.strerror})") from None
    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        f.close()
        raise RecordingError(f"{path}: not an MCAP file")
    f.seek(0)
    return f


def _summary(f: io.BufferedReader) -> Any:
    """The file's summary, or None when it has none (a recorder that did not finish)."""
    from mcap.reader import SeekingReader

    try:
        summary = SeekingReader(f).get_summary()
    except Exception:
        summary = None
    f.seek(0)
    return summary if summary is not None and summary.chunk_indexes else None


def recording_channels(path: str | Path) -> dict[str, tuple[str, int]]:
    """The topics of a recording with the Ark schema name and version each carries."""
    from mcap.stream_reader import StreamReader
    from mcap.records import Channel, Schema

    path = str(path)
    with _open(path) as f:
        summary = _summary(f)
        if summary is not None:
            schemas, channels = summary.schemas, list(summary.channels.values())
        else:  # unfinished file: collect what the readable part declares
            schemas, channels = {}, []
            try:
                for rec in StreamReader(f).records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec
                    elif isinstance(rec, Channel):
                        channels.append(rec)
            except Exception:
                pass
    out: dict[str, tuple[str, int]] = {}
    for ch in channels:
        name = ch.metadata.get("ark.schema") or (schemas[ch.schema_id].name if ch.schema_id in schemas else "")
        try:
            version = int(ch.metadata.get("ark.version", "1"))
        except ValueError:
            version = 1
        if name:
            out.setdefault(ch.topic, (name, version))
    return out


def iter_recording(path: str | Path, topics: list[str] | None = None) -> Iterator[RecordedMessage]:
    """The messages of a recording in log-time order, as wire headers and buffers.

    A file whose recorder did not finish it is read up to its first damaged record. Raises
    RecordingError when the file is missing, not MCAP, or holds no readable records.
    """
    from mcap.reader import NonSeekingReader, SeekingReader

    path = str(path)
    f = _open(path)
    try:
        summary = _summary(f)
        if summary is not None:
            source = SeekingReader(f).iter_messages(topics=topics, log_time_order=True)
        else:
            source = NonSeekingReader(f).iter_messages(topics=topics, log_time_order=False)
        count = 0
        while True:
            try:
                schema, channel, message = next(source)
            except StopIteration:
                break
            except Exception as exc:
                if summary is None and count > 0:
                    log.warning("%s: unfinished recording; read %d messages up to damage (%s)", path, count, exc)
                    break
                raise RecordingError(f"{path}: corrupt recording ({type(exc).__name__}: {exc})") from None
            if channel.message_encoding != "msgpack":
                continue  # not written by Ark: nothing we can republish
            try:
                header, buffers = record_to_wire(message.data, message.publish_time)
            except RecordingError as exc:
                log.warning("%s: skipped a message on %s: %s", path, channel.topic, exc)
                continue
            count += 1
            yield RecordedMessage(channel.topic, header["s"], header["v"], message.log_time, message.publish_time,
                                  header, buffers, len(message.data))
    finally:
        f.close()


# --------------------------------------------------------------------------------------
# play


def _wait_for_subscribers(node: Any, topics: Sequence[str], timeout: float) -> None:
    """Wait (at most ``timeout`` s) until every subscriber of ``topics`` reports a connection to every publisher."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            graph = node.registry.request("graph")
        except RegistryError:
            return
        ready = True
        for topic in topics:
            want = len(graph["publishers"].get(topic, []))
            for entry in graph["subscribers"].get(topic, []):
                stats = graph["nodes"].get(entry["node"], {}).get("stats", {})
                if stats.get("sub", {}).get(topic, {}).get("publishers", 0) < want:
                    ready = False
        if ready:
            time.sleep(0.05)  # the subscription itself travels to our socket after the connect
            return
        time.sleep(0.02)


def play(path: str | Path, *, config: ArkConfig | None = None, rate: float = 1.0, loop: bool = False,
         topics: list[str] | None = None, stop: threading.Event | None = None, progress: bool = True,
         original_stamps: bool = False) -> PlayStats:
    """Republish a recording with its original inter-message timing scaled by ``rate``.

    ``rate=2`` plays twice as fast; ``rate<=0`` as fast as possible. Each topic is published
    under its recorded schema name and version, so typed subscribers decode it. ``loop``
    repeats until ``stop`` or SIGINT/SIGTERM. Messages carry the time of replay as their stamp
    unless ``original_stamps``. Raises RecordingError for a missing, corrupt or non-MCAP file.
    """
    from ark.node import Node

    path = str(path)
    channels = recording_channels(path)
    if topics is not None:
        channels = {t: s for t, s in channels.items() if t in set(topics)}
    stats = PlayStats(path=path)
    if not channels:
        for _ in iter_recording(path):  # raises if the file is corrupt rather than empty
            pass
        return stats
    halt = threading.Event()
    node = Node("ark-play", config=config)
    restore = _on_signals(halt)
    bar = _Progress(progress)
    started = time.monotonic()
    render = lambda: _status("playing", path, stats.messages, stats.bytes, stats.topics,  # noqa: E731
                             time.monotonic() - started)

    def stopped() -> bool:
        return halt.is_set() or (stop is not None and stop.is_set())

    def sleep(seconds: float) -> None:
        end = time.monotonic() + seconds
        while not stopped() and (left := end - time.monotonic()) > 0:
            halt.wait(min(left, 0.05))

    try:
        # A deep queue: at rate<=0 the publisher outpaces the transport for a while.
        publishers = {t: node.publisher(t, s, queue=1000) for t, s in channels.items()}
        _wait_for_subscribers(node, list(publishers), SUBSCRIBER_WAIT_S)
        while not stopped():
            t0_wall: float | None = None
            t0_log = 0
            for m in iter_recording(path, topics=list(publishers)):
                if stopped():
                    break
                if t0_wall is None:
                    t0_wall, t0_log = time.monotonic(), m.log_time_ns
                elif rate > 0:
                    sleep(t0_wall + (m.log_time_ns - t0_log) / 1e9 / rate - time.monotonic())
                    if stopped():
                        break
                pub = publishers.get(m.topic)
                if pub is None or (m.schema, m.version) != (pub.schema_name, pub.schema_version):
                    stats.skipped += 1
                    continue
                pub.publish_raw(m.header, m.buffers, stamp_ns=m.publish_time_ns if original_stamps else None)
                stats.messages += 1
                stats.bytes += m.nbytes
                stats.topics[m.topic] = stats.topics.get(m.topic, 0) + 1
                bar.update(render)
            stats.loops += 1
            if not loop or t0_wall is None:
                break
    finally:
        node.shutdown()  # publisher sockets linger so that queued messages still leave
        bar.close(render)
        restore()
    stats.duration_s = time.monotonic() - started
    return stats


__all__ = ["PlayStats", "RecordStats", "RecordWriter", "RecordedMessage", "RecordingError", "iter_recording",
           "json_schema", "play", "record", "record_to_wire", "recording_channels", "wire_to_record"]
