"""Time parameterisation of joint paths under per-joint velocity and acceleration limits.

    traj = time_parameterize(path, max_velocity=model.velocity_limits * 0.5, max_acceleration=2.0)
    q, dq, ddq = traj.sample(t)          # any t in [0, traj.duration]
    ts, qs = traj.sample_uniform(1 / 240)

Each path segment gets the fastest synchronised trapezoidal (or triangular) velocity profile
that starts and ends at rest and keeps every joint within its limits: all joints follow one
scalar profile ``s(t)`` in [0, 1], so the arm moves along the straight joint-space segment the
planner checked, never off it (which blended profiles would do). Stopping at each waypoint
costs time, which shortcutting keeps small (few waypoints remain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ark.planning.errors import InvalidRequest


@dataclass
class _Segment:
    q0: np.ndarray
    delta: np.ndarray
    t0: float
    ta: float      # acceleration phase duration
    tc: float      # cruise duration
    v: float       # peak speed of s (1/s)
    a: float       # acceleration of s (1/s^2)

    @property
    def duration(self) -> float:
        return 2.0 * self.ta + self.tc

    def s(self, t: float) -> tuple[float, float, float]:
        ta, tc, v, a = self.ta, self.tc, self.v, self.a
        T = self.duration
        t = min(max(t, 0.0), T)
        if t < ta:
            return 0.5 * a * t * t, a * t, a
        if t < ta + tc:
            return 0.5 * a * ta * ta + v * (t - ta), v, 0.0
        r = T - t
        return 1.0 - 0.5 * a * r * r, a * r, -a if r > 0 else 0.0


@dataclass
class Trajectory:
    """A time-parameterised joint path: piecewise trapezoidal segments, each rest to rest."""

    segments: list[_Segment]
    n: int

    @property
    def duration(self) -> float:
        return self.segments[-1].t0 + self.segments[-1].duration if self.segments else 0.0

    @property
    def waypoint_times(self) -> np.ndarray:
        return np.array([0.0] + [s.t0 + s.duration for s in self.segments])

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity and acceleration at time ``t`` (clamped to [0, duration])."""
        if not self.segments:
            raise InvalidRequest("empty trajectory")
        t = min(max(float(t), 0.0), self.duration)
        seg = self.segments[-1]
        for s in self.segments:
            if t < s.t0 + s.duration:
                seg = s
                break
        s, ds, dds = seg.s(t - seg.t0)
        return seg.q0 + s * seg.delta, ds * seg.delta, dds * seg.delta

    def sample_uniform(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Times ``(K,)`` every ``dt`` seconds up to and including the end, and positions ``(K, n)``."""
        ts = np.append(np.arange(0.0, self.duration, dt), self.duration)
        return ts, np.array([self.sample(t)[0] for t in ts])


def _limits(value, n: int, what: str) -> np.ndarray:
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise InvalidRequest(f"{what} must be positive and finite (one value or one per joint), got {v.tolist()}")
    return v


def time_parameterize(path, max_velocity, max_acceleration) -> Trajectory:
    """A rest-to-rest trajectory through every waypoint of ``path`` ``(N, n)``; see the module docstring."""
    p = np.asarray(path, dtype=np.float64)
    if p.ndim != 2 or len(p) < 1 or not np.all(np.isfinite(p)):
        raise InvalidRequest(f"path must be a finite (N, n) array of waypoints, got shape {p.shape}")
    n = p.shape[1]
    vmax = _limits(max_velocity, n, "max_velocity")
    amax = _limits(max_acceleration, n, "max_acceleration")
    segments: list[_Segment] = []
    t = 0.0
    for q0, q1 in zip(p[:-1], p[1:]):
        delta = q1 - q0
        moving = np.abs(delta) > 1e-12
        if not np.any(moving):
            continue
        # Limits of the scalar s in [0, 1]: the tightest joint decides.
        v = float(np.min(vmax[moving] / np.abs(delta[moving])))
        a = float(np.min(amax[moving] / np.abs(delta[moving])))
        if v * v / a >= 1.0:  # triangular: never reaches cruise speed
            ta = math.sqrt(1.0 / a)
            v = a * ta
            tc = 0.0
        else:
            ta = v / a
            tc = (1.0 - v * v / a) / v
        segments.append(_Segment(q0.copy(), delta, t, ta, tc, v, a))
        t += 2.0 * ta + tc
    if not segments:
        segments.append(_Segment(p[0].copy(), np.zeros(n), 0.0, 0.0, 0.0, 0.0, 0.0))
    return Trajectory(segments, n)
