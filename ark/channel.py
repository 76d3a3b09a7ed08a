"""Publishers and subscribers: direct ZeroMQ PUB→SUB connections, no broker on the data path.

A publisher binds its own socket (``ipc://`` for peers on this host, ``tcp://`` for others)
and advertises both endpoints; a subscriber connects to every publisher of its topic that
the registry names. Large arrays are sent zero-copy: do not modify an array in place after
publishing it. Received arrays are views of the received frames (each subscriber owns its own).

Per subscription there is a bounded queue (oldest dropped), an optional latest-only mode
and drop accounting: queue overflow plus gaps in the publishers' sequence numbers. Below
Ark, the transport's high-water marks (the publisher's ``queue``, default 1000 messages,
and twice the subscriber's) bound what waits in ZeroMQ; the executor drains it after every
callback, so a steady stream faster than the callback loses its oldest messages, while a
single burst bigger than those marks loses its newest there. Both are counted as drops.
"""

from __future__ import annotations

import collections
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import zmq

from ark.errors import ArkError, DecodeError, SchemaError
from ark.messages import SchemaInfo, schema_of
from ark.wire import MessageInfo, decode, decode_header, encode

if TYPE_CHECKING:
    from ark.node import Node

log = logging.getLogger("ark.channel")

# Plain ints for the per-message calls: pyzmq's enum members cost Python-level enum code.
_NOBLOCK, _SNDMORE, _POLLIN = int(zmq.NOBLOCK), int(zmq.SNDMORE), int(zmq.POLLIN)


@dataclass
class RawMessage:
    """A message delivered without decoding against a schema (recorders, echo, bridges)."""

    header: dict
    buffers: list[memoryview]

    @property
    def schema(self) -> str:
        return self.header["s"]


def _endpoint_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


class Publisher:
    """Sends messages of one schema on one topic. Created by ``Node.publisher``."""

    def __init__(self, node: "Node", topic: str, schema: type | tuple[str, int], *, latched: bool = False,
                 queue: int = 1000) -> None:
        self.node = node
        self.topic = topic
        self._topic_b = topic.encode()
        if isinstance(schema, tuple):  # raw publisher (replay): schema name and version only
            self.schema_info: SchemaInfo | None = None
            self.schema_name, self.schema_version = schema
        else:
            self.schema_info = schema_of(schema)
            self.schema_name, self.schema_version = self.schema_info.name, self.schema_info.version
        self.latched = latched
        self.seq = 0
        self.published = 0
        self._lock = threading.Lock()
        self._last: list | None = None
        sock = node.context.socket(zmq.XPUB if latched else zmq.PUB)
        sock.sndhwm = queue
        sock.linger = 200  # let queued frames leave on close; a closed node loses nothing it sent
        if latched:
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscription, not only the first
        node.security.server(sock)
        self.endpoints = node.bind_endpoints(sock, f"pub-{_endpoint_name(topic)}")
        self.socket = sock
        node._add_publisher(self)

    def publish(self, msg: Any, stamp_ns: int | None = None) -> None:
        """Send ``msg`` stamped now (or ``stamp_ns``, e.g. a sensor's capture time).

        Raises SchemaError (locally) if it does not match the topic's schema.
        """
        if self.schema_info is not None and getattr(msg, "__ark_schema__", None) is not self.schema_info:
            raise SchemaError(f"{self.topic} carries {self.schema_name}, not {type(msg).__name__}")
        with self._lock:
            self.seq += 1
            frames = encode(self._topic_b, msg, self.seq, time.time_ns() if stamp_ns is None else stamp_ns,
                            self.node.id)
            self._send(frames, encoded=True)

    def publish_raw(self, header: dict, buffers: Sequence[Any], stamp_ns: int | None = None) -> None:
        """Send an already-encoded message (header map and buffers), re-sequenced as this publisher's."""
        import msgpack

        with self._lock:
            self.seq += 1
            h = dict(header, q=self.seq, p=self.node.id, t=stamp_ns if stamp_ns is not None else time.time_ns())
            self._send([self._topic_b, msgpack.packb(h, use_bin_type=True), *buffers])

    def _send(self, frames: list, encoded: bool = False) -> None:
        if encoded:
            # encode() made these (bytes and memoryviews only): send them frame by frame with
            # int flags; send_multipart re-checks each frame and ORs IntFlag members per frame.
            send = self.socket.send
            last = len(frames) - 1
            for i in range(last):
                send(frames[i], _SNDMORE, copy=False)
            send(frames[last], 0, copy=False)
        else:
            self.socket.send_multipart(frames, copy=False)
        self.published += 1
        if self.latched:
            self._last = frames

    def _on_subscription(self) -> None:
        """XPUB readable: a subscriber joined; resend the latched message (duplicates are filtered by seq)."""
        with self._lock:
            while True:
                try:
                    event = self.socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if event[:1] == b"\x01" and self._last is not None:
                    self.socket.send_multipart(self._last, copy=False)

    def stats(self) -> dict:
        return {"published": self.published}

    def close(self) -> None:
        self.node._remove_publisher(self)


class Subscriber:
    """Receives messages of one topic. Created by ``Node.subscriber``.

    With a callback, the node's executor calls it for each message (``cb(msg)`` or
    ``cb(msg, info)``). Without one, take messages with ``recv(timeout)`` or ``latest()``.
    """

    def __init__(self, node: "Node", topic: str, schema: type | None, callback: Callable | None = None, *,
                 queue: int = 10, latest_only: bool = False) -> None:
        if queue < 1:
            raise ArkError(f"subscriber {topic}: queue must be >= 1, got {queue}")
        self.node = node
        self.topic = topic
        self.schema_info = schema_of(schema) if schema is not None else None
        self.callback = callback
        self._with_info = callback is not None and _takes_two(callback)
        self.latest_only = latest_only
        self.queue: collections.deque = collections.deque(maxlen=1 if latest_only else queue)
        self.received = 0
        self.dropped = 0
        self.decode_errors = 0
        self.duplicates = 0
        self.callback_errors = 0
        self.last_error: str | None = None
        self._last_seq: dict[str, int] = {}
        self._cond = threading.Condition()
        self.connected: set[str] = set()
        self.pending_endpoints: list[tuple[str, Any]] | None = None
        sock = node.context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = max(2 * queue, 100)
        # A single frame over the limit is refused by the transport before it is buffered.
        sock.setsockopt(zmq.MAXMSGSIZE, node.config.max_message_bytes)
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.socket = sock
        # libzmq drops a link for good after an oversized frame; watch for that and reconnect.
        self.monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.link_resets = 0
        node._add_subscriber(self)

    # -- executor side --------------------------------------------------------------
    def _connect(self, targets: list[tuple[str, Any]]) -> None:
        """Connect to exactly these (endpoint, key) targets; called on the executor's thread."""
        want = {ep for ep, _ in targets}
        for ep in self.connected - want:
            try:
                self.socket.disconnect(ep)
            except zmq.ZMQError:
                pass
        for ep, key in targets:
            if ep not in self.connected:
                self.node.security.client(self.socket, key)
                self.socket.connect(ep)
        self.connected = want

    def _on_monitor(self) -> None:
        """A link went down (oversized frame, publisher gone): connect again if still wanted."""
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            ep = event.get("endpoint", b"").decode()
            if ep in self.connected:
                self.link_resets += 1
                try:
                    self.socket.disconnect(ep)
                except zmq.ZMQError:
                    pass
                self.socket.connect(ep)

    def _close_sockets(self) -> None:
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.socket.close(0)

    def _drain(self, check_first: bool = False) -> int:
        """Move everything the socket holds into the bounded queue; returns messages taken.

        The executor calls it when its poll found the socket readable; ``check_first`` is for
        callers that do not know (between callbacks).
        """
        n = 0
        limit = self.node.config.max_message_bytes
        sock = self.socket
        while True:
            # A zero-timeout poll says when the socket is empty: cheaper than a raised zmq.Again,
            # and than getsockopt(EVENTS), which converts the option to an enum on every call.
            if (n or check_first) and not zmq.zmq_poll([(sock, _POLLIN)], 0):
                return n
            try:
                frame = sock.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return n
            # Frame by frame: each Frame carries its RCVMORE flag, which saves recv_multipart's
            # getsockopt per frame. The parts of a message arrive together (ZeroMQ is atomic).
            frames = [frame]
            while frame.more:
                frame = sock.recv(_NOBLOCK, copy=False)
                frames.append(frame)
            n += 1
            try:
                if self.schema_info is None:
                    header, buffers, total = decode_header(frames, limit)
                    info = MessageInfo(self.topic, header["s"], header["v"], header["q"], header["t"], header["p"], total)
                    msg: Any = RawMessage(header, list(buffers))
                else:
                    msg, info = decode(frames, self.schema_info, limit)
            except DecodeError as exc:
                self.decode_errors += 1
                if self.decode_errors <= 10 or self.decode_errors % 1000 == 0:
                    log.warning("%s: dropped a message: %s (%d so far)", self.topic, exc, self.decode_errors)
                self.last_error = str(exc)
                continue
            last = self._last_seq.get(info.source)
            if last is not None:
                if info.seq <= last:
                    self.duplicates += 1  # a latched resend we already have
                    continue
                self.dropped += info.seq - last - 1
            self._last_seq[info.source] = info.seq
            self.received += 1
            with self._cond:
                if len(self.queue) == self.queue.maxlen:
                    self.dropped += 1  # deque drops the oldest
                self.queue.append((msg, info))
                self._cond.notify_all()

    def _dispatch(self) -> int:
        """Run the callback over queued messages; returns how many ran."""
        ran = 0
        budget = len(self.queue)
        while budget > 0:
            try:
                msg, info = self.queue.popleft()
            except IndexError:
                break
            budget -= 1
            ran += 1
            try:
                if self._with_info:
                    self.callback(msg, info)  # type: ignore[misc]
                else:
                    self.callback(msg)  # type: ignore[misc]
            except Exception:
                self.callback_errors += 1
                log.exception("%s: callback raised (node %s keeps running)", self.topic, self.node.name)
            if budget:  # more to run: keep the transport's queue short while callbacks are slow
                self._drain(check_first=True)  # (after the last one, the next poll drains anyway)
        return ran

    # -- user side ------------------------------------------------------------------
    def recv(self, timeout: float | None = None, with_info: bool = False) -> Any:
        """The oldest queued message (waiting up to ``timeout`` s), or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                if self.queue:
                    msg, info = self.queue.popleft()
                    return (msg, info) if with_info else msg
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                if self.node.spinning:
                    self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
                    continue
            self.node.spin_once(0.05 if remaining is None else min(remaining, 0.05))

    def latest(self) -> Any:
        """The newest queued message (discarding older ones), or None; never waits."""
        if not self.node.spinning:
            self.node.spin_once(0)
        with self._cond:
            if not self.queue:
                return None
            msg, _ = self.queue[-1]
            self.queue.clear()
            return msg

    def stats(self) -> dict:
        return {"received": self.received, "dropped": self.dropped, "decode_errors": self.decode_errors,
                "callback_errors": self.callback_errors, "link_resets": self.link_resets,
                "publishers": len(self.connected)}

    def close(self) -> None:
        self.node._remove_subscriber(self)


def _takes_two(fn: Callable) -> bool:
    try:
        # Parameters with defaults don't count: ``lambda m, t=topic: ...`` takes one argument.
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2
