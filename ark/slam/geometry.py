"""Planar rigid-body poses (x, y, yaw) and lidar scans as point sets.

A pose ``p = (x, y, yaw)`` maps points of its own frame into the parent frame:
``parent = R(yaw) @ local + (x, y)``. ``compose(a, b)`` is "b expressed in a's parent",
``between(a, b)`` the pose of b in a's frame, so ``compose(a, between(a, b)) == b``.
"""

from __future__ import annotations

import math

import numpy as np


def wrap_angle(a):
    """Angle(s) wrapped to [-pi, pi)."""
    return (np.asarray(a) + math.pi) % (2.0 * math.pi) - math.pi


def compose(a, b) -> np.ndarray:
    """The pose ``a ∘ b``: b (given in a's frame) expressed in a's parent frame."""
    ax, ay, at = (float(v) for v in a)
    bx, by, bt = (float(v) for v in b)
    c, s = math.cos(at), math.sin(at)
    return np.array([ax + c * bx - s * by, ay + s * bx + c * by, float(wrap_angle(at + bt))])


def inverse(a) -> np.ndarray:
    """The pose whose composition with ``a`` is the identity."""
    ax, ay, at = (float(v) for v in a)
    c, s = math.cos(at), math.sin(at)
    return np.array([-c * ax - s * ay, s * ax - c * ay, float(wrap_angle(-at))])


def between(a, b) -> np.ndarray:
    """The pose of ``b`` in the frame of ``a`` (both given in the same parent frame)."""
    return compose(inverse(a), b)


def transform_points(pose, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points of the pose's frame expressed in its parent frame."""
    x, y, t = (float(v) for v in pose)
    c, s = math.cos(t), math.sin(t)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([c * p[:, 0] - s * p[:, 1] + x, s * p[:, 0] + c * p[:, 1] + y])


def scan_points(ranges: np.ndarray, angles: np.ndarray, range_min: float, range_max: float) -> np.ndarray:
    """Points ``(M, 2)`` in the sensor frame of the beams that hit something (``range_min <= r < range_max``;
    readings at or beyond ``range_max`` and non-finite ones are "no return")."""
    r = np.asarray(ranges, dtype=np.float64)
    ok = np.isfinite(r) & (r >= range_min) & (r < range_max - 1e-3)
    return np.column_stack([r[ok] * np.cos(angles[ok]), r[ok] * np.sin(angles[ok])])
