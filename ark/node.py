"""Nodes: the unit of an Ark graph.

A :class:`Node` owns its publishers, subscribers, timers, services and parameters. Its
executor is one loop that polls every socket and fires timers; callbacks run on it, one at
a time. Run it with ``spin()`` (blocks, returns on SIGINT/SIGTERM or ``shutdown()``) or
``start()`` (a background thread, so several nodes share one process). A second thread per
node sends heartbeats to the registry and re-resolves subscriptions when the graph changes.

    from ark import Node, String

    talker = Node("talker").start()
    pub = talker.publisher("/chatter", String)
    listener = Node("listener")
    listener.subscriber("/chatter", String, lambda m: print("heard", m.data))
    talker.timer(10, lambda: pub.publish(String("hello")))
    listener.spin(duration=2.0)
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import signal
import threading
import time
import uuid
import weakref
from typing import Any, Callable

import zmq

from ark import config as ark_config
from ark.channel import Publisher, Subscriber
from ark.config import ArkConfig
from ark.errors import ArkError, RegistryError, RegistryUnreachable
from ark.messages import Parameter
from ark.registry import RegistryClient, ensure_registry, host_id
from ark.security import Security
from ark.service import ServiceClient, ServiceServer

log = logging.getLogger("ark.node")


class Timer:
    """Calls ``callback`` every ``period`` seconds on the executor; counts overruns."""

    def __init__(self, period: float, callback: Callable[[], Any]) -> None:
        if not period > 0:
            raise ArkError(f"timer period must be > 0, got {period}")
        self.period = period
        self.callback = callback
        self.next = time.monotonic() + period
        self.ticks = 0
        self.overruns = 0
        self.cancelled = False

    def _fire(self) -> None:
        self.ticks += 1
        try:
            self.callback()
        except Exception:
            log.exception("timer callback raised")
        self.next += self.period
        now = time.monotonic()
        if now >= self.next:
            # Late: skip the missed ticks rather than bursting to catch up, and count them.
            missed = math.floor((now - self.next) / self.period) + 1
            self.overruns += missed
            self.next += missed * self.period

    def cancel(self) -> None:
        self.cancelled = True


_live: "weakref.WeakSet[Node]" = weakref.WeakSet()


def shutdown_all() -> None:
    """Shut down every node of this process that is still running (tests, interpreter exit)."""
    for node in list(_live):
        node.shutdown()


class Node:
    """A participant in the Ark graph. See the module docstring for an example."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass whose constructor raises after Node.__init__ registered it (a service name
        # already taken, a bad parameter) would otherwise leave a half-built node in the graph,
        # heartbeating from a daemon thread until the process exits. Wrap each subclass's own
        # __init__ so that a failure makes the node leave the graph before the error propagates.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def __init__(self: Node, *args: Any, **kw: Any) -> None:
            try:
                init(self, *args, **kw)
            except BaseException:
                if "_hb_thread" in self.__dict__:  # Node.__init__ got as far as registering
                    try:
                        self.shutdown()
                    except Exception:  # noqa: BLE001 - the original error is the one to report
                        log.debug("cleanup of a node whose constructor failed raised", exc_info=True)
                raise

        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, name: str, *, config: ArkConfig | None = None, params: dict[str, Any] | None = None) -> None:
        if not name or any(c.isspace() for c in name):
            raise ArkError(f"node name must be non-empty without spaces, got {name!r}")
        self.name = name
        self.config = config or ark_config.load()
        self.security = Security(self.config.security)
        self.context: zmq.Context = self.security.context
        self.id = f"{name.strip('/').replace('/', '.')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.host = host_id()
        self.params: dict[str, Any] = dict(params or {})
        self.publishers: list[Publisher] = []
        self.subscribers: list[Subscriber] = []
        self.services: list[ServiceServer] = []
        self.timers: list[Timer] = []
        self._clients: list[ServiceClient] = []
        self._lock = threading.RLock()
        self._dirty = True
        self._poller = zmq.Poller()
        self._handlers: dict[Any, Callable[[], Any]] = {}
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spin_owner: int | None = None
        self._closed = False
        self._epoch: int | None = None
        self._ipc_counter = 0
        self._wake_addr = f"inproc://ark-wake-{self.id}"
        self._wake_rx = self.context.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self.context.socket(zmq.PUSH)
        self._wake_tx.sndhwm = 1
        self._wake_tx.linger = 0
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()

        ensure_registry(self.config, self.security)
        self.registry = RegistryClient(self.config, self.security)
        try:
            self._register_all()
        except RegistryUnreachable:
            self._close_sockets()
            raise RegistryUnreachable(
                f"no registry at {self.config.registry} (start one with `ark registry`, or set ARK_REGISTRY)") from None
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name=f"ark-hb-{name}", daemon=True)
        self._hb_thread.start()
        _live.add(self)
        self.service(f"{self.name}/param", Parameter, Parameter, self._param_service)

    # -- channels ----------------------------------------------------------------------
    def publisher(self, topic: str, schema: type, *, latched: bool = False, queue: int = 1000) -> Publisher:
        """Advertise ``topic`` carrying ``schema`` messages. ``latched``: late joiners get the last one."""
        return Publisher(self, topic, schema, latched=latched, queue=queue)

    def subscriber(self, topic: str, schema: type | None, callback: Callable | None = None, *,
                   queue: int = 10, latest_only: bool = False) -> Subscriber:
        """Subscribe to ``topic``. ``schema=None`` receives RawMessage objects of any schema."""
        return Subscriber(self, topic, schema, callback, queue=queue, latest_only=latest_only)

    def service(self, name: str, request: type, response: type, handler: Callable[[Any], Any]) -> ServiceServer:
        """Serve ``name``: ``handler(request) -> response`` runs on this node's executor."""
        return ServiceServer(self, name, request, response, handler)

    def client(self, name: str, request: type, response: type) -> ServiceClient:
        """A client of service ``name``; ``client.call(req, timeout)`` returns the response."""
        c = ServiceClient(self, name, request, response)
        self._clients.append(c)
        return c

    def call(self, name: str, request: Any, response: type, timeout: float = 2.0) -> Any:
        """One-off service call."""
        c = ServiceClient(self, name, type(request), response)
        try:
            return c.call(request, timeout)
        finally:
            c.close()

    def timer(self, rate_hz: float, callback: Callable[[], Any]) -> Timer:
        """Call ``callback`` at ``rate_hz`` on the executor."""
        if not rate_hz > 0:
            raise ArkError(f"timer rate must be > 0 Hz, got {rate_hz}")
        t = Timer(1.0 / rate_hz, callback)
        with self._lock:
            self.timers.append(t)
        self._wake()
        return t

    # -- parameters -------------------------------------------------------------------
    def param(self, name: str, default: Any = None) -> Any:
        """A parameter's value (set at launch, by ``set_param`` or remotely), else ``default``."""
        return self.params.get(name, default)

    def set_param(self, name: str, value: Any) -> None:
        self.params[name] = value

    def _param_service(self, req: Parameter) -> Parameter:
        if req.name == "":
            return Parameter("", dict(self.params))
        if req.value is not None:
            self.params[req.name] = req.value
        if req.name not in self.params:
            raise ArkError(f"node {self.name} has no parameter {req.name!r}")
        return Parameter(req.name, self.params[req.name])

    # -- endpoints --------------------------------------------------------------------
    def bind_endpoints(self, sock: zmq.Socket, label: str) -> dict[str, str]:
        """Bind ``sock`` to a fresh ipc:// path and an ephemeral tcp:// port; returns both."""
        with self._lock:
            self._ipc_counter += 1
            n = self._ipc_counter
        os.makedirs(self.config.ipc_dir, exist_ok=True)
        path = os.path.join(str(self.config.ipc_dir), f"{self.id}-{n}-{label}")[:100]
        sock.bind(f"ipc://{path}")
        sock.bind(f"tcp://{self.config.host}:0")
        return {"ipc": f"ipc://{path}", "tcp": sock.last_endpoint.decode()}

    def pick_endpoint(self, entry: dict) -> str:
        """ipc:// for a peer on this host, tcp:// otherwise."""
        eps = entry["endpoints"]
        return eps["ipc"] if entry.get("host") == self.host and "ipc" in eps else eps["tcp"]

    def _key(self) -> str | None:
        return self.security.public_key.decode() if self.security.public_key else None

    # -- registration -------------------------------------------------------------------
    def _advertise(self, pub: Publisher) -> None:
        self.registry.request("advertise", node=self.id, topic=pub.topic, schema=pub.schema_name,
                              version=pub.schema_version, endpoints=pub.endpoints, host=self.host,
                              latched=pub.latched, key=self._key())

    def _subscribe(self, sub: Subscriber) -> None:
        info = sub.schema_info
        rep = self.registry.request("subscribe", node=self.id, topic=sub.topic,
                                    schema=info.name if info else None, version=info.version if info else None)
        self._set_targets(sub, rep["publishers"])

    def _advertise_service(self, srv: ServiceServer) -> None:
        self.registry.request("advertise_service", node=self.id, service=srv.name,
                              request=[srv.request_info.name, srv.request_info.version],
                              response=[srv.response_info.name, srv.response_info.version],
                              endpoints=srv.endpoints, host=self.host, key=self._key())

    def _register_all(self) -> None:
        """(Re-)register this node and everything it offers; after a registry restart too."""
        rep = self.registry.request("register", node=self.id, name=self.name, pid=os.getpid(), host=self.host)
        for pub in list(self.publishers):
            self._advertise(pub)
        for srv in list(self.services):
            self._advertise_service(srv)
        for sub in list(self.subscribers):
            self._subscribe(sub)
        self._epoch = rep["epoch"]

    def _set_targets(self, sub: Subscriber, publishers: list[dict]) -> None:
        targets = [(self.pick_endpoint(p), p.get("key")) for p in publishers]
        sub.pending_endpoints = targets
        self._dirty = True
        self._wake()

    def _refresh(self) -> None:
        for sub in list(self.subscribers):
            rep = self.registry.request("lookup", topic=sub.topic)
            self._set_targets(sub, rep["publishers"])

    def stats(self) -> dict:
        """Counters per channel, reported to the registry with each heartbeat."""
        out: dict[str, Any] = {"pub": {p.topic: p.stats() for p in self.publishers},
                               "sub": {s.topic: s.stats() for s in self.subscribers},
                               "srv": {s.name: s.stats() for s in self.services},
                               "timers": [{"period": t.period, "ticks": t.ticks, "overruns": t.overruns} for t in self.timers]}
        return out

    def _heartbeat_loop(self) -> None:
        failing_since: float | None = None
        while not self._stop.wait(self.config.heartbeat_s):
            try:
                if failing_since is not None:
                    self._register_all()
                    failing_since = None
                    self._refresh()
                    continue
                rep = self.registry.request("heartbeat", node=self.id, stats=self.stats())
                if rep["epoch"] != self._epoch:
                    self._epoch = rep["epoch"]
                    self._refresh()
            except RegistryUnreachable:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > 4 * self.config.heartbeat_s:
                    # The registry is gone: take its place if its port is free (atomic bind).
                    ensure_registry(self.config, self.security)
            except RegistryError as exc:
                if getattr(exc, "code", None) == "unknown":
                    failing_since = time.monotonic()  # registry restarted without us: register again
                else:
                    log.warning("node %s: registry refused: %s", self.name, exc)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("node %s: heartbeat failed", self.name)

    # -- executor ---------------------------------------------------------------------
    def _wake(self) -> None:
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except (zmq.Again, zmq.ZMQError):
                pass  # a wake-up is already pending (or the node is closing)

    def _rebuild(self) -> None:
        self._dirty = False
        poller = zmq.Poller()
        handlers: dict[Any, Callable[[], Any]] = {self._wake_rx: self._drain_wake}
        poller.register(self._wake_rx, zmq.POLLIN)
        with self._lock:
            for sub in self.subscribers:
                if sub.pending_endpoints is not None:
                    targets, sub.pending_endpoints = sub.pending_endpoints, None
                    sub._connect(targets)
                poller.register(sub.socket, zmq.POLLIN)
                handlers[sub.socket] = sub._drain
                poller.register(sub.monitor, zmq.POLLIN)
                handlers[sub.monitor] = sub._on_monitor
            for srv in self.services:
                poller.register(srv.socket, zmq.POLLIN)
                handlers[srv.socket] = srv._handle
            for pub in self.publishers:
                if pub.latched:
                    poller.register(pub.socket, zmq.POLLIN)
                    handlers[pub.socket] = pub._on_subscription
            self.timers = [t for t in self.timers if not t.cancelled]
        self._poller, self._handlers = poller, handlers

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    @property
    def spinning(self) -> bool:
        """True while an executor loop runs in another thread than the caller's."""
        return self._spin_owner is not None and self._spin_owner != threading.get_ident()

    def spin_once(self, timeout: float = 0.1) -> int:
        """Wait up to ``timeout`` s for work, handle it, run due timers; returns callbacks run."""
        if self._closed:
            return 0
        while not self._commands.empty():
            self._commands.get_nowait()()
        if self._dirty:
            self._rebuild()
        now = time.monotonic()
        timers = self.timers
        if timers:
            timeout = min(timeout, max(0.0, min(t.next for t in timers) - now))
        ran = 0
        try:
            ready = self._poller.poll(int(timeout * 1000) if timeout > 0 else 0)
        except zmq.ZMQError as exc:
            if self._closed or self._stop.is_set():
                return 0
            log.warning("node %s: poll failed (%s); rebuilding", self.name, exc)
            self._dirty = True
            return 0
        for sock, _ in ready:
            try:
                self._handlers[sock]()
            except zmq.ZMQError as exc:  # a socket closed under us: rebuild, never die
                log.warning("node %s: socket error %s; rebuilding", self.name, exc)
                self._dirty = True
        for sub in self.subscribers:
            if sub.callback is not None and sub.queue:
                ran += sub._dispatch()
        now = time.monotonic()
        for t in timers:
            if not t.cancelled and now >= t.next:
                t._fire()
                ran += 1
        return ran

    def spin(self, duration: float | None = None) -> None:
        """Run the executor until shutdown(), SIGINT/SIGTERM, or ``duration`` seconds."""
        end = None if duration is None else time.monotonic() + duration
        restore = self._install_signals()
        self._spin_owner = threading.get_ident()
        try:
            while not self._stop.is_set():
                remaining = 0.1 if end is None else min(0.1, end - time.monotonic())
                if remaining <= 0:
                    break
                self.spin_once(remaining)
        finally:
            self._spin_owner = None
            restore()
        if self._stop.is_set():
            self._close_all()

    def start(self) -> "Node":
        """Run the executor in a background thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.spin, name=f"ark-node-{self.name}", daemon=True)
            self._thread.start()
            while self._spin_owner is None and self._thread.is_alive():
                time.sleep(0.001)
        return self

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            log.info("node %s: signal %d, shutting down", self.name, signum)
            self._stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return lambda: [signal.signal(s, h) for s, h in previous.items()] and None

    def shutdown(self) -> None:
        """Stop the executor and heartbeats, leave the graph, close every socket."""
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._close_all()

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        self._stop.set()
        if self._hb_thread.is_alive() and self._hb_thread is not threading.current_thread():
            self._hb_thread.join(timeout=2)
        try:
            self.registry.request("unregister", node=self.id, timeout=0.3)
        except RegistryError:
            pass  # registry gone: it forgets us when we go stale
        self._close_sockets()

    def _close_sockets(self) -> None:
        for c in self._clients:
            c.close()
        for group in (self.publishers, self.subscribers, self.services):
            for item in group:
                getattr(item, "_close_sockets", item.socket.close)()
                for ep in getattr(item, "endpoints", {}).values():
                    if ep.startswith("ipc://"):
                        try:
                            os.unlink(ep[len("ipc://"):])
                        except OSError:
                            pass
        self._wake_tx.close(0)
        self._wake_rx.close(0)
        self.registry.close()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # -- bookkeeping used by channels ---------------------------------------------------
    def _add_publisher(self, pub: Publisher) -> None:
        try:
            self._advertise(pub)
        except RegistryError:
            pub.socket.close(0)
            raise
        with self._lock:
            self.publishers.append(pub)
        self._dirty = True
        self._wake()

    def _remove_publisher(self, pub: Publisher) -> None:
        self._remove(self.publishers, pub, lambda: self.registry.request(
            "unadvertise", node=self.id, topic=pub.topic, endpoints=pub.endpoints))

    def _add_subscriber(self, sub: Subscriber) -> None:
        # Ask the registry first: a refused subscription must never reach the executor's poller.
        try:
            self._subscribe(sub)
        except RegistryError:
            sub._close_sockets()
            raise
        with self._lock:
            self.subscribers.append(sub)
        self._dirty = True
        self._wake()

    def _remove_subscriber(self, sub: Subscriber) -> None:
        self._remove(self.subscribers, sub, lambda: self.registry.request(
            "unadvertise", node=self.id, topic=sub.topic, endpoints=None))

    def _add_service(self, srv: ServiceServer) -> None:
        try:
            self._advertise_service(srv)
        except RegistryError:
            srv.socket.close(0)
            raise
        with self._lock:
            self.services.append(srv)
        self._dirty = True
        self._wake()

    def _remove_service(self, srv: ServiceServer) -> None:
        self._remove(self.services, srv, lambda: None)

    def _remove(self, group: list, item: Any, unregister: Callable[[], Any]) -> None:
        with self._lock:
            if item not in group:
                return
            group.remove(item)
        try:
            unregister()
        except RegistryError:
            pass
        self._dirty = True
        # The executor may be polling this socket: close it on the executor's thread.
        self._commands.put(getattr(item, "_close_sockets", item.socket.close))
        self._wake()
        if not self.spinning:
            self.spin_once(0)
