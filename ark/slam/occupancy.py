"""Occupancy-grid mapping with log-odds updates along each lidar beam.

The grid covers ``[origin_x, origin_x + width*res) x [origin_y, origin_y + height*res)``;
``log_odds[i, j]`` belongs to the cell of row i (y) and column j (x), the layout of
:class:`ark.planning.grid.OccupancyGrid`. Per scan, each cell a beam passes through gets
one ``free`` update and each cell where a beam ends on an obstacle one ``occupied`` update
(an end cell wins over a pass-through of another beam), so a cell's value does not depend
on how many beams of one scan cross it.
"""

from __future__ import annotations

import math

import numpy as np

from ark.slam.geometry import transform_points


class LogOddsGrid:
    """A log-odds occupancy grid; see the module docstring."""

    def __init__(self, width: int, height: int, resolution: float, origin=(0.0, 0.0), *, l_occupied: float = 0.85,
                 l_free: float = -0.4, clamp: float = 5.0) -> None:
        self.resolution = float(resolution)
        self.origin = (float(origin[0]), float(origin[1]))
        self.log_odds = np.zeros((int(height), int(width)), dtype=np.float32)
        self.l_occupied, self.l_free, self.clamp = float(l_occupied), float(l_free), float(clamp)

    @property
    def shape(self) -> tuple[int, int]:
        return self.log_odds.shape  # type: ignore[return-value]

    def clear(self) -> None:
        self.log_odds[:] = 0.0

    def cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, inside) of world points ``(N, 2)``."""
        col = np.floor((xy[:, 0] - self.origin[0]) / self.resolution).astype(np.int64)
        row = np.floor((xy[:, 1] - self.origin[1]) / self.resolution).astype(np.int64)
        inside = (row >= 0) & (row < self.shape[0]) & (col >= 0) & (col < self.shape[1])
        return row, col, inside

    def insert_scan(self, pose, ranges: np.ndarray, angles: np.ndarray, range_min: float, range_max: float) -> None:
        """Update the grid with one scan taken from sensor ``pose`` (x, y, yaw) in the map frame.

        Beams with no return (at or beyond ``range_max``, or +inf) clear free space up to
        ``range_max``; non-finite or too-short beams are ignored.
        """
        r = np.asarray(ranges, dtype=np.float64)
        r = np.where(r == np.inf, range_max, r)
        valid = np.isfinite(r) & (r >= range_min)
        r = np.where(valid, r, 0.0)
        hit = valid & (r < range_max - 1e-3)
        r = np.minimum(r, range_max)
        res = self.resolution
        step = res * 0.5
        n_max = int(math.ceil(range_max / step))
        t = np.arange(n_max) * step  # sample distances along a beam
        free_len = np.where(hit, r - res, r)  # stop short of the obstacle cell
        mask = valid[:, None] & (t[None, :] < free_len[:, None])
        a = angles[:, None] + float(pose[2])
        xs = float(pose[0]) + t[None, :] * np.cos(a)
        ys = float(pose[1]) + t[None, :] * np.sin(a)
        pts = np.column_stack([xs[mask], ys[mask]])
        w = self.shape[1]
        rows, cols, inside = self.cells(pts)
        free = np.unique(rows[inside] * w + cols[inside])
        ends = transform_points(pose, np.column_stack([r[hit] * np.cos(angles[hit]), r[hit] * np.sin(angles[hit])]))
        rows, cols, inside = self.cells(ends)
        occ = np.unique(rows[inside] * w + cols[inside])
        free = np.setdiff1d(free, occ, assume_unique=True)
        flat = self.log_odds.reshape(-1)
        flat[free] += self.l_free
        flat[occ] += self.l_occupied
        np.clip(flat, -self.clamp, self.clamp, out=flat)

    def probabilities(self) -> np.ndarray:
        """Occupancy probability per cell (0.5 = never observed)."""
        return 1.0 / (1.0 + np.exp(-self.log_odds.astype(np.float64)))

    def occupied(self, threshold: float = 0.65) -> np.ndarray:
        return self.probabilities() >= threshold

    def known(self) -> np.ndarray:
        return self.log_odds != 0.0

    def as_int8(self) -> np.ndarray:
        """ROS-style cells: -1 unknown, else occupancy percent 0..100."""
        out = np.round(self.probabilities() * 100.0).astype(np.int8)
        out[~self.known()] = -1
        return out
