"""Wheel odometry of a skid-steer (or differential-drive) base from wheel angles.

    odo = WheelOdometry(wheel_radius=0.17775, track_width=0.5708 * 1.3)   # effective track of a skid-steer
    pose = odo.update(left_angle, right_angle)                          # (x, y, yaw) in the odometry frame

Angles are the accumulated wheel rotations (rad), e.g. the mean of the two wheels on each side.
The pose integrates the arc (midpoint heading) of each increment; it drifts, which is why SLAM
corrects it with the lidar.
"""

from __future__ import annotations

import math

import numpy as np

from ark.errors import ArkError


class WheelOdometry:
    """Integrates wheel-angle increments into a planar pose; see the module docstring."""

    def __init__(self, wheel_radius: float, track_width: float, initial_pose=(0.0, 0.0, 0.0)) -> None:
        if not (wheel_radius > 0 and track_width > 0):
            raise ArkError(f"wheel odometry needs wheel_radius > 0 and track_width > 0, got {wheel_radius}, {track_width}")
        self.radius = float(wheel_radius)
        self.track = float(track_width)
        self.pose = np.asarray(initial_pose, dtype=np.float64).copy()
        self._last: tuple[float, float] | None = None

    def update(self, left: float, right: float) -> np.ndarray:
        """Advance with the current accumulated wheel angles (rad); returns the pose (x, y, yaw)."""
        if self._last is None:
            self._last = (float(left), float(right))
            return self.pose.copy()
        dl = (float(left) - self._last[0]) * self.radius
        dr = (float(right) - self._last[1]) * self.radius
        self._last = (float(left), float(right))
        ds, dth = (dl + dr) / 2.0, (dr - dl) / self.track
        mid = self.pose[2] + dth / 2.0
        self.pose[0] += ds * math.cos(mid)
        self.pose[1] += ds * math.sin(mid)
        self.pose[2] = (self.pose[2] + dth + math.pi) % (2.0 * math.pi) - math.pi
        return self.pose.copy()
