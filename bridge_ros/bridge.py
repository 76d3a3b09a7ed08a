"""The live bridge: an Ark node whose other side is a ROS 2 graph.

For each mapping (:mod:`bridge_ros.config`) it either subscribes to an Ark topic and writes
each message, converted and CDR-serialised, to the ROS 2 topic (``ark_to_ros``), or reads
the ROS 2 topic and publishes each sample on the Ark topic (``ros_to_ark``). ROS header
stamps become Ark publisher stamps and back. The ROS side is a backend: Cyclone DDS
(:mod:`bridge_ros.dds`, needs no ROS installation) or rclpy (:mod:`bridge_ros.rclpy_backend`,
picked automatically where ``import rclpy`` works).

Nothing a peer sends can stop the bridge: a payload that does not decode, a message that
does not convert, a peer with incompatible QoS or a different type hash is logged and
counted per route (:meth:`Bridge.stats`), and the bridge goes on.

    bridge = Bridge.from_file("configs/ros_bridge.yaml").start()
    ...
    print(bridge.stats())
    bridge.shutdown()
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ark.config import ArkConfig
from ark.errors import ArkError
from ark.node import Node
from ark.wire import MessageInfo
from bridge_ros.cdr import CdrError, RosTypes
from bridge_ros.config import BridgeConfig, Route, load_bridge_config

log = logging.getLogger("bridge_ros.bridge")


class BackendUnavailable(ArkError):
    """The requested ROS backend cannot run here (rclpy missing, DDS library unusable)."""


def rclpy_available() -> bool:
    """Whether ROS 2's Python client library imports in this interpreter."""
    try:
        import rclpy  # noqa: F401
    except Exception:  # ImportError, or a sourced-but-broken ROS environment
        return False
    return True


def select_backend(name: str) -> str:
    """``auto`` → ``rclpy`` where it imports, else ``dds``; other names are checked and returned."""
    if name == "auto":
        return "rclpy" if rclpy_available() else "dds"
    if name == "rclpy" and not rclpy_available():
        raise BackendUnavailable("backend rclpy: ROS 2 (rclpy) is not installed or not sourced; use backend: dds")
    if name not in ("dds", "rclpy"):
        raise BackendUnavailable(f"unknown backend {name!r} (auto, dds or rclpy)")
    return name


def make_backend(name: str, config: BridgeConfig, types: RosTypes) -> Any:
    """An opened backend of kind ``name`` (``dds`` or ``rclpy``)."""
    if select_backend(name) == "rclpy":
        from bridge_ros.rclpy_backend import RclpyBackend

        return RclpyBackend(config, types)
    try:
        from bridge_ros.dds import DdsBackend
    except ImportError as exc:
        raise BackendUnavailable(f"backend dds needs the cyclonedds package ({exc}); pip install 'ark-robotics[ros]'") \
            from None
    try:
        return DdsBackend(config, types)
    except Exception as exc:  # cyclonedds raises DDSException for a bad XML config or domain
        raise BackendUnavailable(f"cannot join DDS domain {config.domain_id}: {exc}") from None


def _ark_queue(route: Route) -> int:
    """The Ark-side queue for a route: its keep-last depth, or for keep-all at least 1000 messages
    (more when the mapping's depth asks for more), so a burst that DDS delivers is not dropped here."""
    return route.qos.depth if route.qos.history == "keep_last" else max(route.qos.depth, 1000)


def publish_stamped(pub: Any, msg: Any, stamp_ns: int) -> None:
    """Publish ``msg`` on an Ark publisher with ``stamp_ns`` as its publisher stamp (not now)."""
    pub.publish(msg, stamp_ns=stamp_ns)


class Bridge:
    """Bridges the routes of one mapping between an Ark node and a ROS 2 backend."""

    def __init__(self, config: BridgeConfig, types: RosTypes, routes: list[Route], *,
                 ark_config: ArkConfig | None = None, backend: str | None = None) -> None:
        self.config = config
        self.types = types
        self.routes = routes
        self.backend_name = select_backend(backend or config.backend)
        types.warm({r.ros_type for r in routes})  # build (de)serialisers before the first message
        self.backend = make_backend(self.backend_name, config, types)
        try:
            self.node = Node(config.node_name, config=ark_config)
        except BaseException:
            self.backend.close()
            raise
        self._stop = threading.Event()
        try:
            for route in routes:
                if route.direction == "ros_to_ark":
                    self._ros_to_ark(route)
                else:
                    self._ark_to_ros(route)
        except BaseException:
            self.shutdown()
            raise

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "Bridge":
        """A bridge for the mapping in a YAML file (ConfigError names what is wrong in it)."""
        config, types, routes = load_bridge_config(path)
        return cls(config, types, routes, **kwargs)

    # -- wiring ---------------------------------------------------------------------------
    def _ros_to_ark(self, route: Route) -> None:
        depth = _ark_queue(route)
        pub = self.node.publisher(route.ark_topic, route.converter.ark_schema, latched=route.qos.latched,
                                  queue=max(depth, 100))
        types, conv, name = self.types, route.converter, route.ros_type
        from_cdr, publish = conv.from_cdr, pub.publish

        def on_sample(data: bytes, source_ns: int) -> None:
            if from_cdr is not None:  # the hot types: CDR straight to the Ark message
                try:
                    msg, stamp = from_cdr(data)
                except Exception:  # not a payload the shortcut takes: the general path decides
                    pass
                else:
                    try:
                        publish(msg, stamp_ns=stamp or source_ns or time.time_ns())
                    except Exception as exc:
                        route.convert_errors += 1
                        self._warn(route, route.convert_errors, "not convertible", exc)
                        return
                    route.forwarded += 1
                    return
            try:
                ros = types.deserialize(data, name)
            except CdrError as exc:
                route.malformed += 1
                self._warn(route, route.malformed, "malformed", exc)
                return
            try:
                msg, stamp = conv.to_ark(ros)
                publish_stamped(pub, msg, stamp or source_ns or time.time_ns())
            except Exception as exc:  # a message that decodes but does not convert
                route.convert_errors += 1
                self._warn(route, route.convert_errors, "not convertible", exc)
                return
            route.forwarded += 1

        self.backend.add_reader(route, on_sample)

    def _ark_to_ros(self, route: Route) -> None:
        write = self.backend.add_writer(route)
        types, conv, name = self.types, route.converter, route.ros_type

        def on_message(msg: Any, info: MessageInfo) -> None:
            try:
                data = types.serialize(conv.to_ros(msg, info.stamp_ns, types), name)
            except Exception as exc:
                route.convert_errors += 1
                self._warn(route, route.convert_errors, "not convertible", exc)
                return
            try:
                write(data)
            except Exception as exc:  # the middleware refused (closing, out of resources)
                route.send_errors += 1
                self._warn(route, route.send_errors, "not sent", exc)
                return
            route.forwarded += 1

        depth = _ark_queue(route)
        self.node.subscriber(route.ark_topic, route.converter.ark_schema, on_message, queue=depth)

    @staticmethod
    def _warn(route: Route, count: int, what: str, exc: BaseException) -> None:
        route.last_error = f"{type(exc).__name__}: {exc}"
        if count <= 10 or count % 1000 == 0:
            log.warning("%r: message %s: %s (%d so far; the bridge keeps running)", route, what, exc, count)

    # -- running ----------------------------------------------------------------------------
    def start(self) -> "Bridge":
        """Run both sides in background threads; returns self."""
        self.backend.start()
        self.node.start()
        return self

    def spin(self, duration: float | None = None, on_tick: Callable[[], Any] | None = None) -> None:
        """Run until ``duration`` passes, SIGINT/SIGTERM, or :meth:`shutdown` (blocks)."""
        self.backend.start()
        tick = None if on_tick is None else self.node.timer(1.0, on_tick)
        try:
            self.node.spin(duration)
        finally:
            if tick is not None:
                tick.cancel()

    def stats(self) -> dict[str, Any]:
        """Per-route counters: forwarded, malformed, convert_errors, hash_mismatch, incompatible_qos, send_errors."""
        return {"backend": self.backend_name, "routes": [r.stats() for r in self.routes],
                "backend_errors": getattr(self.backend, "errors", 0)}

    def shutdown(self) -> None:
        """Leave the Ark graph, then close the ROS side."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.node.shutdown()
        self.backend.close()

    def __enter__(self) -> "Bridge":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


__all__ = ["BackendUnavailable", "Bridge", "make_backend", "publish_stamped", "rclpy_available",
           "select_backend"]
