"""The rclpy backend, where ROS 2 is installed: the same mapping bridges Ark and a real rclpy node."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

import rosbags  # noqa: E402,F401  (the ros extra, part of the dev install)

from bridge_ros.bridge import rclpy_available  # noqa: E402

pytestmark = pytest.mark.skipif(not rclpy_available(), reason="ROS 2 (rclpy) is not installed")


def test_auto_picks_rclpy_and_bridges_both_ways(cfg):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState as RosJointState

    from ark.messages import JointState
    from ark.node import Node
    from bridge_ros.bridge import Bridge
    from bridge_ros.config import parse_bridge_config
    from tests.conftest import wait_until

    domain = 150 + int(uuid.uuid4().int % 50)
    suffix = uuid.uuid4().hex[:6]
    config, types, routes = parse_bridge_config({"backend": "auto", "domain_id": domain, "topics": [
        {"ark": "/in", "ros": f"/js_in_{suffix}", "type": "sensor_msgs/msg/JointState", "direction": "ros_to_ark"},
        {"ark": "/out", "ros": f"/js_out_{suffix}", "type": "sensor_msgs/msg/JointState", "direction": "ark_to_ros"},
    ]})
    bridge = Bridge(config, types, routes, ark_config=cfg).start()
    assert bridge.backend_name == "rclpy"
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("ros_peer", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    heard: list = []
    node.create_subscription(RosJointState, f"/js_out_{suffix}", heard.append, 10)
    pub = node.create_publisher(RosJointState, f"/js_in_{suffix}", 10)
    got: list = []
    ark = Node("ark_side", config=cfg)
    ark.subscriber("/in", JointState, got.append)
    ark_pub = ark.publisher("/out", JointState)
    ark.start()
    try:
        end = time.monotonic() + 10
        i = 0
        while time.monotonic() < end and (len(got) < 3 or len(heard) < 3):
            msg = RosJointState()
            msg.name = ["a"]
            msg.position = [float(i)]
            pub.publish(msg)
            ark_pub.publish(JointState(["b"], np.array([float(i)]), np.zeros(1), np.zeros(1)))
            executor.spin_once(timeout_sec=0.05)
            i += 1
        assert len(got) >= 3 and got[0].name == ["a"]
        assert len(heard) >= 3 and list(heard[0].name) == ["b"]
        assert wait_until(lambda: all(r["forwarded"] >= 3 for r in bridge.stats()["routes"]), timeout=2)
    finally:
        ark.shutdown()
        bridge.shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
