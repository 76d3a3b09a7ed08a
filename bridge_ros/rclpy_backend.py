"""The rclpy backend: the bridge's ROS 2 side through ROS 2's own client library.

Used automatically where ``import rclpy`` works (a Jetson with ROS 2 sourced, say), so the
bridge joins the graph through whatever RMW that installation is configured with (Fast DDS,
Cyclone DDS, Zenoh) and appears in ``ros2 node list``. Subscriptions are raw, publishers are
fed serialised messages: the payloads are the same CDR bytes the DDS backend handles, so
conversion is shared. Types must exist in the ROS installation (custom types registered
only from ``.msg`` text work with the DDS backend alone). The RMW checks type hashes itself;
incompatible QoS is counted through rclpy's QoS events.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from bridge_ros.cdr import RosTypes
from bridge_ros.config import BridgeConfig, Route

log = logging.getLogger("bridge_ros.rclpy")


def _event_callbacks(name: str) -> Any:
    """rclpy's QoS event callback holder (``rclpy.event_handler`` since Iron, ``rclpy.qos_event`` on Humble)."""
    try:
        from rclpy import event_handler as module
    except ImportError:
        from rclpy import qos_event as module  # type: ignore[no-redef]
    return getattr(module, name)


class RclpyBackend:
    """rclpy endpoints for a bridge's routes; see the module docstring."""

    name = "rclpy"

    def __init__(self, config: BridgeConfig, types: RosTypes) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.config = config
        self.types = types
        self.errors = 0
        self._rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context, domain_id=config.domain_id)
        self.node = rclpy.create_node(config.node_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._keep: list[Any] = []

    def _message_type(self, route: Route) -> type:
        from rosidl_runtime_py.utilities import get_message

        from bridge_ros.bridge import BackendUnavailable

        try:
            return get_message(route.ros_type)
        except (AttributeError, ModuleNotFoundError, ValueError) as exc:
            raise BackendUnavailable(f"backend rclpy: {route.ros_type} is not installed in this ROS 2 environment "
                                     f"({exc}); build its package or use backend: dds") from None

    def _on_incompatible(self, route: Route, peer: str) -> Callable[[Any], None]:
        def callback(event: Any) -> None:
            route.incompatible_qos += 1
            log.warning("%s: a ROS %s with incompatible QoS cannot match (%s)", route.ros_topic, peer,
                        getattr(event, "last_policy_kind", "?"))

        return callback

    def add_reader(self, route: Route, on_sample: Callable[[bytes, int], None]) -> None:
        events = _event_callbacks("SubscriptionEventCallbacks")(incompatible_qos=self._on_incompatible(route, "publisher"))
        sub = self.node.create_subscription(self._message_type(route), route.ros_topic,
                                            lambda data: on_sample(data, 0), route.qos.to_rclpy(), raw=True,
                                            event_callbacks=events)
        self._keep.append(sub)

    def add_writer(self, route: Route) -> Callable[[bytes | memoryview], None]:
        events = _event_callbacks("PublisherEventCallbacks")(incompatible_qos=self._on_incompatible(route, "subscription"))
        pub = self.node.create_publisher(self._message_type(route), route.ros_topic, route.qos.to_rclpy(),
                                         event_callbacks=events)
        self._keep.append(pub)
        return lambda data: pub.publish(bytes(data))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bridge-rclpy", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception as exc:  # a callback's failure must not end the bridge
                self.errors += 1
                log.exception("rclpy executor: %s (continuing)", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        try:
            self.executor.shutdown()
            self.node.destroy_node()
        finally:
            if self.context.ok():
                self._rclpy.shutdown(context=self.context)
