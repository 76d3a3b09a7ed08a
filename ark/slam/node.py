"""``SlamNode``: lidar SLAM as an Ark node.

Subscribes to ``ark/LaserScan`` on ``scan_topic`` and to odometry as ``ark/Pose`` (any fixed
frame, e.g. ``odom``; yaw from the quaternion) on ``odom_topic``; publishes the base's map-frame
pose as ``ark/Pose`` (``frame_id="map"``) on ``pose_topic`` after every scan, and the occupancy
map as ``ark/OccupancyGrid`` on ``map_topic`` (latched) at ``map_hz`` whenever it changed. A scan
is paired with the latest odometry received before it. Launch file entry::

    - name: slam
      node: ark.slam.node:SlamNode
      params: {scan_topic: /scan, odom_topic: /odom, initial_pose: [0, 0, 0], slam: {resolution: 0.05}}

A malformed scan or odometry message is dropped, counted in ``rejected`` and logged in one
line; the node keeps running. A bad parameter raises :class:`ark.ConfigError` at construction.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import field
from typing import Any

import numpy as np

from ark.config import ArkConfig
from ark.errors import ArkError, ConfigError
from ark.messages import LaserScan, Pose, array, message
from ark.node import Node
from ark.slam.errors import OdometryError
from ark.slam.slam import LidarSlam, SlamConfig

log = logging.getLogger("ark.slam")

PARAMS = {"scan_topic": "/scan", "odom_topic": "/odom", "pose_topic": "/slam/pose", "map_topic": "/slam/map",
          "map_hz": 1.0, "initial_pose": [0.0, 0.0, 0.0], "slam": {}}


@message("ark/OccupancyGrid")
class OccupancyGridMsg:
    """A 2-D occupancy map: ``data[row, col]`` is -1 (unknown) or 0..100 (percent occupied); cell (0, 0)
    has its corner at ``origin`` (x, y, yaw) in ``frame_id``; rows go along +y, columns along +x."""

    data: np.ndarray = array("int8", (None, None))
    resolution: float = 0.05
    origin: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    frame_id: str = "map"


def yaw_from_quaternion(q) -> float:
    x, y, z, w = (float(v) for v in q)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def pose_message(pose, frame_id: str = "map") -> Pose:
    """A planar pose (x, y, yaw) as an ``ark/Pose``."""
    x, y, yaw = (float(v) for v in pose)
    return Pose(position=np.array([x, y, 0.0]), orientation=np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]),
                frame_id=frame_id)


def planar_pose(msg: Pose) -> np.ndarray:
    """(x, y, yaw) of an ``ark/Pose``; raises :class:`OdometryError` on a non-finite pose or non-unit quaternion."""
    p, q = np.asarray(msg.position, dtype=np.float64), np.asarray(msg.orientation, dtype=np.float64)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise OdometryError("odometry pose has non-finite values")
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > 1e-3:
        raise OdometryError(f"odometry orientation must be a unit quaternion (x, y, z, w), its norm is {n:.4g}")
    return np.array([p[0], p[1], yaw_from_quaternion(q)])


class SlamNode(Node):
    """Runs :class:`~ark.slam.LidarSlam` on scans and odometry from channels; see the module docstring."""

    def __init__(self, name: str = "slam", *, config: ArkConfig | None = None, params: dict[str, Any] | None = None) -> None:
        unknown = set(params or {}) - set(PARAMS)
        if unknown:
            raise ConfigError(f"SlamNode {name}: unknown parameter(s) {', '.join(sorted(unknown))} "
                              f"(expected: {', '.join(PARAMS)})")
        merged = {**PARAMS, **(params or {})}
        if not (isinstance(merged["map_hz"], (int, float)) and merged["map_hz"] > 0):
            raise ConfigError(f"SlamNode {name}: parameter 'map_hz' must be a number > 0, got {merged['map_hz']!r}")
        try:
            init = np.asarray(merged["initial_pose"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            init = np.zeros(0)
        if init.shape != (3,) or not np.all(np.isfinite(init)):
            raise ConfigError(f"SlamNode {name}: parameter 'initial_pose' must be 3 finite numbers (x, y, yaw), "
                              f"got {merged['initial_pose']!r}")
        slam_cfg = SlamConfig.load(merged["slam"] if merged["slam"] is not None else {})
        super().__init__(name, config=config, params=merged)
        self.slam = LidarSlam(slam_cfg, initial_pose=init)
        self.rejected = 0
        self.processed = 0
        self.last_error = ""
        self._odom: np.ndarray | None = None
        self._lock = threading.Lock()
        self._published: tuple[int, int] | None = None
        self.pose_pub = self.publisher(merged["pose_topic"], Pose)
        self.map_pub = self.publisher(merged["map_topic"], OccupancyGridMsg, latched=True)
        self.subscriber(merged["odom_topic"], Pose, self._on_odom, queue=100)
        self.subscriber(merged["scan_topic"], LaserScan, self._on_scan, queue=10)
        self.timer(float(merged["map_hz"]), self.publish_map)

    def _reject(self, what: str, exc: Exception) -> None:
        self.rejected += 1
        self.last_error = f"{what}: {exc}"
        log.warning("node %s: dropped %s (%d dropped so far)", self.name, self.last_error, self.rejected)

    def _on_odom(self, msg: Pose) -> None:
        try:
            self._odom = planar_pose(msg)
        except ArkError as exc:
            self._reject("odometry", exc)

    def _on_scan(self, msg: LaserScan) -> None:
        try:
            with self._lock:
                pose = self.slam.update(msg, self._odom)
        except ArkError as exc:
            self._reject("scan", exc)
            return
        self.processed += 1
        self.pose_pub.publish(pose_message(pose))

    def map_message(self) -> OccupancyGridMsg:
        with self._lock:
            grid = self.slam.grid
            return OccupancyGridMsg(data=grid.as_int8(), resolution=grid.resolution,
                                    origin=[grid.origin[0], grid.origin[1], 0.0], frame_id="map")

    def publish_map(self) -> None:
        """Publish the map if keyframes were added or moved since the last time."""
        key = (self.slam.keyframes, self.slam.loop_closures)
        if key == self._published:
            return
        self._published = key
        self.map_pub.publish(self.map_message())
