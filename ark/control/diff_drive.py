"""Pure-pursuit path following for a differential-drive (or skid-steer) base.

API (stable; ``ark.examples.navigate_home`` uses it)::

    from ark.control.diff_drive import PurePursuit

    pp = PurePursuit(lookahead=0.6, max_linear=0.8, max_angular=1.0, goal_tolerance=0.25)
    pp.set_path(path)                         # (N, 2) world waypoints, e.g. AStarPlanner.plan(...)
    v, omega = pp.command((x, y, yaw))        # each control tick; (0, 0) once pp.done
    pp.done                                   # True once within goal_tolerance of the last waypoint

The follower projects the base onto the path (progress never moves backwards), takes the point
``lookahead`` metres further along the path and steers on the circular arc through it
(curvature ``2 sin(alpha) / L``). When that point is more than ``turn_in_place`` radians off the
heading it turns on the spot first (what a skid-steer base does best); the speed ramps down
within ``slow_radius`` of the goal. Frames: world, metres; yaw in radians; the command is the
``[v, omega]`` action of ``ark/HuskyNavigate-v0``.
"""

from __future__ import annotations

import math

import numpy as np

from ark.control.errors import ControlError, ShapeError


def wrap_angle(a: float) -> float:
    """``a`` wrapped to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


class PurePursuit:
    """Pure-pursuit controller producing ``(v, omega)`` from the base pose; see the module docstring."""

    def __init__(self, lookahead: float = 0.6, max_linear: float = 0.8, max_angular: float = 1.0,
                 goal_tolerance: float = 0.25, slow_radius: float = 0.8, turn_in_place: float = 1.0,
                 min_linear: float = 0.1) -> None:
        for name, value in (("lookahead", lookahead), ("max_linear", max_linear), ("max_angular", max_angular),
                            ("goal_tolerance", goal_tolerance)):
            if not (value > 0 and math.isfinite(value)):
                raise ControlError(f"PurePursuit: {name} must be a positive number, got {value}")
        self.lookahead = float(lookahead)
        self.max_linear = float(max_linear)
        self.max_angular = float(max_angular)
        self.goal_tolerance = float(goal_tolerance)
        self.slow_radius = float(slow_radius)
        self.turn_in_place = float(turn_in_place)
        self.min_linear = float(min_linear)
        self.path = np.zeros((0, 2))
        self._cum = np.zeros(0)
        self._progress = 0.0
        self.done = True

    def set_path(self, path) -> None:
        """Follow ``path`` (``(N, 2)`` world waypoints, N >= 1) from its start."""
        p = np.asarray(path, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 1 or not np.all(np.isfinite(p)):
            raise ShapeError(f"path must be an (N, 2) array of finite waypoints with N >= 1, got shape {p.shape}")
        keep = np.concatenate([[True], np.linalg.norm(np.diff(p, axis=0), axis=1) > 1e-9])
        self.path = p[keep]
        seg = np.linalg.norm(np.diff(self.path, axis=0), axis=1)
        self._cum = np.concatenate([[0.0], np.cumsum(seg)])
        self._progress = 0.0
        self.done = False

    @property
    def length(self) -> float:
        return float(self._cum[-1]) if len(self._cum) else 0.0

    def _point_at(self, s: float) -> np.ndarray:
        s = min(max(s, 0.0), self.length)
        i = int(np.searchsorted(self._cum, s, side="right")) - 1
        i = min(max(i, 0), len(self.path) - 2)
        if len(self.path) == 1:
            return self.path[0].copy()
        seg = self._cum[i + 1] - self._cum[i]
        t = (s - self._cum[i]) / seg if seg > 0 else 0.0
        return self.path[i] + t * (self.path[i + 1] - self.path[i])

    def _project(self, xy: np.ndarray) -> float:
        """Arc length of the closest path point at or ahead of the current progress (within a window)."""
        best_s, best_d = self._progress, math.inf
        for i in range(len(self.path) - 1):
            if self._cum[i + 1] < self._progress:
                continue
            if self._cum[i] > self._progress + 2.0 * self.lookahead + 1.0:
                break  # never jump to a far part of the path that passes near the base
            a, b = self.path[i], self.path[i + 1]
            ab = b - a
            t = float(np.clip(np.dot(xy - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
            d = float(np.linalg.norm(a + t * ab - xy))
            s = self._cum[i] + t * (self._cum[i + 1] - self._cum[i])
            if d < best_d and s >= self._progress:
                best_s, best_d = s, d
        return best_s

    def command(self, pose) -> tuple[float, float]:
        """``(v, omega)`` for base ``pose = (x, y, yaw)``; ``(0.0, 0.0)`` when done or without a path."""
        p = np.asarray(pose, dtype=np.float64).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ShapeError(f"pose must be 3 finite numbers (x, y, yaw), got {np.asarray(pose).tolist()}")
        if self.done or len(self.path) == 0:
            return 0.0, 0.0
        xy, yaw = p[:2], float(p[2])
        goal = self.path[-1]
        to_goal = float(np.linalg.norm(goal - xy))
        if to_goal <= self.goal_tolerance:
            self.done = True
            return 0.0, 0.0
        self._progress = self._project(xy)
        target = self._point_at(self._progress + self.lookahead)
        if self.length - self._progress <= self.lookahead:
            target = goal
        dx, dy = target - xy
        alpha = wrap_angle(math.atan2(dy, dx) - yaw)
        if abs(alpha) > self.turn_in_place:
            return 0.0, float(np.clip(2.0 * alpha, -self.max_angular, self.max_angular))
        dist = max(math.hypot(dx, dy), 1e-6)
        curvature = 2.0 * math.sin(alpha) / dist
        v = self.max_linear * min(1.0, to_goal / self.slow_radius) if self.slow_radius > 0 else self.max_linear
        v = max(v, self.min_linear)
        # Keep the arc's yaw rate within bounds by slowing down rather than cutting the turn.
        if abs(v * curvature) > self.max_angular:
            v = self.max_angular / abs(curvature)
        return float(v), float(np.clip(v * curvature, -self.max_angular, self.max_angular))
