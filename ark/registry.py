"""The registry: maps topics and services to endpoints, tracks node liveness, answers graph queries.

It is a small request/reply server (ZeroMQ ROUTER, msgpack maps) that is never on the data
path. Nodes register, advertise their publishers and services, subscribe (which returns the
current publishers) and send heartbeats; each heartbeat reply carries the graph's ``epoch``
so nodes re-resolve their subscriptions when it changes. A node silent for
``stale_after_s`` disappears with its endpoints. The registry keeps no state on disk: after a
restart, nodes find themselves unknown at their next heartbeat and register again.

``ensure_registry`` starts one in-process when the configured port is free. Binding the TCP
port is atomic, so of several processes starting at the same moment exactly one wins.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from typing import Any

import msgpack
import zmq

from ark.config import ArkConfig
from ark.errors import RegistryError, RegistryUnreachable
from ark.security import Security

log = logging.getLogger("ark.registry")

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "*"}


def host_id() -> str:
    """Identifies this machine, so peers on it use ipc:// instead of tcp://."""
    try:
        with open("/etc/machine-id") as fh:
            return f"{socket.gethostname()}-{fh.read().strip()[:12]}"
    except OSError:
        return socket.gethostname()


class Registry:
    """The registry server. ``serve()`` runs until ``stop()``; ``start()`` runs it in a thread."""

    def __init__(self, config: ArkConfig, security: Security | None = None) -> None:
        self.config = config
        self.security = security or Security(config.security)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.publishers: dict[str, list[dict[str, Any]]] = {}
        self.subscribers: dict[str, list[dict[str, Any]]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.epoch = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: zmq.Socket | None = None
        self.requests = 0
        self.bad_requests = 0

    # -- lifecycle -------------------------------------------------------------------
    def bind(self) -> None:
        """Bind the registry port; raises zmq.ZMQError(EADDRINUSE) when another registry has it."""
        sock = self.security.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        self.security.server(sock)
        try:
            sock.bind(self.config.registry)
        except zmq.ZMQError:
            sock.close(0)
            raise
        self._sock = sock

    def start(self) -> "Registry":
        """Serve in a daemon thread (bind first)."""
        if self._sock is None:
            self.bind()
        self._thread = threading.Thread(target=self.serve, name="ark-registry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def serve(self) -> None:
        """Answer requests until stop(); a malformed request gets an error reply, never a crash."""
        if self._sock is None:
            self.bind()
        sock = self._sock
        assert sock is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        next_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                if poller.poll(100):
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(sock, frames)
                now = time.monotonic()
                if now >= next_sweep:
                    self.sweep(now)
                    next_sweep = now + min(0.5, self.config.stale_after_s / 4)
        finally:
            sock.close(0)
            self._sock = None

    def _handle(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        self.requests += 1
        if len(frames) < 3:
            self.bad_requests += 1
            return  # not a REQ envelope: nothing to reply to
        envelope, payload = frames[:-1], frames[-1]
        try:
            req = msgpack.unpackb(payload, raw=False, strict_map_key=True)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise ValueError("request is not a map with 'op'")
            reply = self.dispatch(req)
        except Exception as exc:  # any garbage from the network: answer, count, go on
            self.bad_requests += 1
            reply = {"ok": False, "error": f"bad request: {exc}"}
        sock.send_multipart([*envelope, msgpack.packb(reply, use_bin_type=True)])

    # -- state -----------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> None:
        """Forget nodes that have not sent a heartbeat for ``stale_after_s``."""
        now = time.monotonic() if now is None else now
        for nid in [n for n, info in self.nodes.items() if now - info["last_seen"] > self.config.stale_after_s]:
            log.info("node %s is stale; removing it", self.nodes[nid]["name"])
            self._drop_node(nid)

    def _drop_node(self, nid: str) -> None:
        self.nodes.pop(nid, None)
        for table in (self.publishers, self.subscribers):
            for topic in list(table):
                table[topic] = [e for e in table[topic] if e["node"] != nid]
                if not table[topic]:
                    del table[topic]
        for name in [s for s, e in self.services.items() if e["node"] == nid]:
            del self.services[name]
        self.epoch += 1

    def _schema_of(self, topic: str) -> tuple[str, int] | None:
        for entry in self.publishers.get(topic, []) + self.subscribers.get(topic, []):
            if entry["schema"] is not None:  # schema-agnostic subscribers (recorders) don't fix it
                return entry["schema"], entry["version"]
        return None

    def _need_node(self, req: dict) -> str:
        nid = req.get("node")
        if nid not in self.nodes:
            raise _Unknown()
        self.nodes[nid]["last_seen"] = time.monotonic()
        return nid

    def dispatch(self, req: dict) -> dict:
        """Apply one request and return its reply."""
        op = req["op"]
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        try:
            return handler(req)
        except _Unknown:
            return {"ok": False, "error": "unknown node", "code": "unknown"}
        except KeyError as exc:
            return {"ok": False, "error": f"request {op!r} lacks {exc}"}

    def _op_ping(self, req: dict) -> dict:
        return {"ok": True, "epoch": self.epoch, "pid": os.getpid()}

    def _op_register(self, req: dict) -> dict:
        nid = req["node"]
        if nid in self.nodes:
            self._drop_node(nid)
        self.nodes[nid] = {"name": str(req["name"]), "pid": req.get("pid"), "host": req.get("host"),
                           "last_seen": time.monotonic(), "stats": {}}
        self.epoch += 1
        return {"ok": True, "epoch": self.epoch}

    def _op_unregister(self, req: dict) -> dict:
        if req.get("node") in self.nodes:
            self._drop_node(req["node"])
        return {"ok": True, "epoch": self.epoch}

    def _op_heartbeat(self, req: dict) -> dict:
        nid = self._need_node(req)
        stats = req.get("stats")
        if isinstance(stats, dict):
            self.nodes[nid]["stats"] = stats
        return {"ok": True, "epoch": self.epoch}

    def _check_schema(self, topic: str, schema: str, version: int) -> dict | None:
        have = self._schema_of(topic)
        if have is not None and have != (schema, version):
            return {"ok": False, "error": f"topic {topic} carries {have[0]} v{have[1]}, not {schema} v{version}"}
        return None

    def _op_advertise(self, req: dict) -> dict:
        nid = self._need_node(req)
        topic, schema, version = req["topic"], req["schema"], req["version"]
        if (err := self._check_schema(topic, schema, version)) is not None:
            return err
        entry = {"node": nid, "schema": schema, "version": version, "endpoints": req["endpoints"],
                 "host": req.get("host"), "latched": bool(req.get("latched")), "key": req.get("key")}
        self.publishers.setdefault(topic, []).append(entry)
        self.epoch += 1
        return {"ok": True, "epoch": self.epoch}

    def _op_subscribe(self, req: dict) -> dict:
        nid = self._need_node(req)
        topic, schema, version = req["topic"], req["schema"], req["version"]
        if schema is not None and (err := self._check_schema(topic, schema, version)) is not None:
            return err
        self.subscribers.setdefault(topic, []).append({"node": nid, "schema": schema, "version": version})
        self.epoch += 1
        return {"ok": True, "epoch": self.epoch, "publishers": self.publishers.get(topic, [])}

    def _op_unadvertise(self, req: dict) -> dict:
        nid = self._need_node(req)
        for table in (self.publishers, self.subscribers):
            if req["topic"] in table:
                table[req["topic"]] = [e for e in table[req["topic"]] if e["node"] != nid or e.get("endpoints") != req.get("endpoints")]
        self.epoch += 1
        return {"ok": True, "epoch": self.epoch}

    def _op_lookup(self, req: dict) -> dict:
        return {"ok": True, "epoch": self.epoch, "publishers": self.publishers.get(req["topic"], []),
                "schema": self._schema_of(req["topic"])}

    def _op_advertise_service(self, req: dict) -> dict:
        nid = self._need_node(req)
        name = req["service"]
        owner = self.services.get(name)
        if owner is not None and owner["node"] != nid:
            return {"ok": False, "error": f"service {name} is already provided by node {self.nodes[owner['node']]['name']}"}
        self.services[name] = {"node": nid, "request": req["request"], "response": req["response"],
                               "endpoints": req["endpoints"], "host": req.get("host"), "key": req.get("key")}
        self.epoch += 1
        return {"ok": True, "epoch": self.epoch}

    def _op_lookup_service(self, req: dict) -> dict:
        entry = self.services.get(req["service"])
        if entry is None:
            return {"ok": False, "error": f"no service {req['service']}", "code": "not-found"}
        return {"ok": True, "service": entry}

    def _op_graph(self, req: dict) -> dict:
        now = time.monotonic()
        nodes = {nid: {**{k: v for k, v in n.items() if k != "last_seen"}, "age_s": now - n["last_seen"]}
                 for nid, n in self.nodes.items()}
        return {"ok": True, "epoch": self.epoch, "nodes": nodes, "publishers": self.publishers,
                "subscribers": self.subscribers, "services": self.services}


class _Unknown(Exception):
    pass


class RegistryClient:
    """A thread-safe request/reply client of the registry (a fresh socket after each timeout)."""

    def __init__(self, config: ArkConfig, security: Security | None = None) -> None:
        self.config = config
        self.security = security or Security(config.security)
        self._lock = threading.Lock()
        self._sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self.security.context.socket(zmq.REQ)
            sock.linger = 0
            self.security.client(sock, self.security.registry_key)
            sock.connect(self.config.registry)
            self._sock = sock
        return self._sock

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict:
        """Send one request; RegistryUnreachable on timeout, RegistryError when refused."""
        timeout = self.config.request_timeout_s if timeout is None else timeout
        with self._lock:
            sock = self._socket()
            sock.send(msgpack.packb({"op": op, **fields}, use_bin_type=True))
            if not sock.poll(int(timeout * 1000), zmq.POLLIN):
                # Lazy pirate: a REQ socket that missed its reply is stuck; replace it.
                sock.close(0)
                self._sock = None
                raise RegistryUnreachable(f"no registry answered at {self.config.registry} within {timeout:g}s")
            reply = msgpack.unpackb(sock.recv(), raw=False)
        if not reply.get("ok"):
            err = RegistryError(reply.get("error", "registry refused the request"))
            err.code = reply.get("code")  # type: ignore[attr-defined]
            raise err
        return reply

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None


_embedded: dict[str, Registry] = {}
_embedded_lock = threading.Lock()


def ensure_registry(config: ArkConfig, security: Security | None = None) -> Registry | None:
    """Start an in-process registry if the configured local port is free; None if one runs elsewhere."""
    if not config.auto_registry:
        return None
    host = config.registry[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host not in _LOCAL_HOSTS and host != config.host:
        return None
    with _embedded_lock:
        reg = _embedded.get(config.registry)
        if reg is not None and reg._thread is not None and reg._thread.is_alive():
            return reg
        reg = Registry(config, security)
        try:
            reg.bind()
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE:
                return None
            raise RegistryError(f"cannot start a registry at {config.registry}: {exc}") from None
        reg.start()
        _embedded[config.registry] = reg
        log.info("started an embedded registry at %s", config.registry)
        return reg


def stop_embedded() -> None:
    """Stop every registry this process started (tests, clean interpreter exit)."""
    with _embedded_lock:
        for reg in _embedded.values():
            reg.stop()
        _embedded.clear()
