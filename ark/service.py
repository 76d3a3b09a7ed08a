"""Services: typed request/reply with timeouts.

A server binds a ROUTER socket and answers on its node's executor; a client sends from its
own DEALER socket and waits for the reply with the matching request id. Frames:
``[b"", request-id, status, topic, header, buffer...]`` where status is ``K`` (ok, a message
follows) or ``E`` (error, one msgpack string follows).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import msgpack
import zmq

from ark.errors import ArkError, DecodeError, NotFound, RegistryError, SchemaError, ServiceError, ServiceTimeout
from ark.messages import schema_of
from ark.wire import decode, encode

if TYPE_CHECKING:
    from ark.node import Node

log = logging.getLogger("ark.service")

# A call unanswered this long asks the registry once whether its service moved (a restarted
# server has new endpoints; without the check the call waited out its whole timeout there).
RECHECK_S = 0.2


class ServiceServer:
    """Answers requests of one service with ``handler(request) -> response``."""

    def __init__(self, node: "Node", name: str, request: type, response: type, handler: Callable[[Any], Any]) -> None:
        self.node = node
        self.name = name
        self.request_info = schema_of(request)
        self.response_info = schema_of(response)
        self.handler = handler
        self.calls = 0
        self.errors = 0
        sock = node.context.socket(zmq.ROUTER)
        sock.linger = 200
        sock.setsockopt(zmq.MAXMSGSIZE, node.config.max_message_bytes)
        node.security.server(sock)
        self.endpoints = node.bind_endpoints(sock, "srv-" + "".join(c if c.isalnum() else "_" for c in name))
        self.socket = sock
        node._add_service(self)

    def _handle(self) -> None:
        """Answer every queued request; bad requests get an error reply and are counted."""
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 5 or frames[1].bytes != b"":
                self.errors += 1
                continue  # not from an Ark client: no envelope to answer
            envelope = [frames[0].bytes, b"", frames[2].bytes]
            self.calls += 1
            try:
                request, _ = decode(frames[3:], self.request_info, self.node.config.max_message_bytes)
                response = self.handler(request)
                if getattr(response, "__ark_schema__", None) is not self.response_info:
                    raise SchemaError(f"handler returned {type(response).__name__}, not {self.response_info.name}")
                reply = [*envelope, b"K", *encode(self.name.encode(), response, self.calls, 0, self.node.id)]
            except Exception as exc:
                self.errors += 1
                if not isinstance(exc, (ArkError, DecodeError)):
                    log.exception("service %s: handler raised", self.name)
                reply = [*envelope, b"E", msgpack.packb(f"{type(exc).__name__}: {exc}")]
            self.socket.send_multipart(reply, copy=False)

    def stats(self) -> dict:
        return {"calls": self.calls, "errors": self.errors}

    def close(self) -> None:
        self.node._remove_service(self)


class ServiceClient:
    """Calls one service. Thread-safe; each call blocks its caller up to ``timeout`` seconds."""

    _ids = itertools.count(1)

    def __init__(self, node: "Node", name: str, request: type, response: type) -> None:
        self.node = node
        self.name = name
        self.request_info = schema_of(request)
        self.response_info = schema_of(response)
        self._lock = threading.Lock()
        self._sock: zmq.Socket | None = None
        self._endpoint: str | None = None

    def _resolve(self) -> None:
        try:
            entry = self.node.registry.request("lookup_service", service=self.name)["service"]
        except RegistryError as exc:
            if getattr(exc, "code", None) == "not-found":
                raise NotFound(f"no service {self.name} in the graph") from None
            raise
        want = (entry["request"], entry["response"])
        have = ([self.request_info.name, self.request_info.version], [self.response_info.name, self.response_info.version])
        if [list(w) for w in want] != [list(h) for h in have]:
            raise SchemaError(f"service {self.name} takes {want[0][0]} -> {want[1][0]}, not "
                              f"{self.request_info.name} -> {self.response_info.name}")
        endpoint = self.node.pick_endpoint(entry)
        if self._sock is None or endpoint != self._endpoint:
            self._reset()
            sock = self.node.context.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.MAXMSGSIZE, self.node.config.max_message_bytes)
            self.node.security.client(sock, entry.get("key"))
            sock.connect(endpoint)
            self._sock, self._endpoint = sock, endpoint

    def _moved(self) -> bool:
        """Whether the registry now lists the service at another endpoint than the one in use."""
        try:
            entry = self.node.registry.request("lookup_service", service=self.name)["service"]
        except (RegistryError, ArkError):
            return False  # gone or unreachable for now: keep waiting on the old endpoint
        return self.node.pick_endpoint(entry) != self._endpoint

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._sock, self._endpoint = None, None

    def call(self, request: Any, timeout: float = 2.0) -> Any:
        """Send ``request`` and return the response; ServiceTimeout, ServiceError or NotFound otherwise."""
        if getattr(request, "__ark_schema__", None) is not self.request_info:
            raise SchemaError(f"service {self.name} takes {self.request_info.name}, not {type(request).__name__}")
        with self._lock:
            if self._sock is None:
                self._resolve()
            assert self._sock is not None
            rid = str(next(self._ids)).encode()
            frames_out = [b"", rid, *encode(self.name.encode(), request, 0, 0, self.node.id)]
            self._sock.send_multipart(frames_out, copy=False)
            deadline = time.monotonic() + timeout
            rechecked = False
            while True:
                left = deadline - time.monotonic()
                # No answer soon: ask the registry once whether the service moved (a restarted
                # server binds new endpoints), and if so send there, within this call's deadline.
                wait = left if rechecked else min(left, RECHECK_S)
                if left <= 0 or not self._sock.poll(max(0, int(wait * 1000)), zmq.POLLIN):
                    if not rechecked and left > 0:
                        rechecked = True
                        if self._moved():
                            self._resolve()
                            self._sock.send_multipart(frames_out, copy=False)
                        continue
                    if time.monotonic() < deadline:
                        continue
                    self._reset()  # the server may be gone: resolve again next time
                    raise ServiceTimeout(f"service {self.name} did not answer within {timeout:g}s")
                frames = self._sock.recv_multipart(copy=False)
                if len(frames) >= 4 and frames[1].bytes == rid:
                    break  # replies to earlier, timed-out calls are skipped
            if frames[2].bytes == b"E":
                raise ServiceError(f"service {self.name} failed: {msgpack.unpackb(frames[3].bytes)}")
            try:
                response, _ = decode(frames[3:], self.response_info, self.node.config.max_message_bytes)
            except DecodeError as exc:
                raise ServiceError(f"service {self.name} sent a bad reply: {exc}") from None
            return response

    def close(self) -> None:
        with self._lock:
            self._reset()
