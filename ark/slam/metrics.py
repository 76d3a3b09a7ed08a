"""How good a SLAM run is: trajectory error against ground truth, map error against the true layout.

* :func:`absolute_trajectory_error` — RMSE of position error (m) over all poses, optionally after
  the rigid 2-D alignment that best fits the estimate to the truth (the usual ATE), plus the
  yaw RMSE.
* :func:`map_accuracy` — compares the occupied cells of a map with the true obstacles
  (HuskyNavigate rows ``[kind, x, y, yaw, size_x, size_y, height]``): *precision* (occupied
  cells within ``tolerance`` of a true obstacle), *recall* (cells of the reference surface —
  by default the map built from the same scans at the true poses — matched within
  ``tolerance`` by an occupied cell) and the mean distance of occupied cells to the nearest
  obstacle.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import distance_transform_edt

from ark.slam.geometry import wrap_angle


def align_2d(est: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (2x2) and translation t minimising sum |R est_xy + t - gt_xy|^2 (Umeyama, no scale)."""
    a, b = est[:, :2], gt[:, :2]
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    u, _, vt = np.linalg.svd((b - mb).T @ (a - ma))
    d = np.sign(np.linalg.det(u @ vt))
    R = u @ np.diag([1.0, d]) @ vt
    return R, mb - R @ ma


def absolute_trajectory_error(est, gt, align: bool = True) -> dict[str, float]:
    """``{"ate_rmse", "ate_max", "yaw_rmse", "final_error"}`` of poses ``(N, 3)`` against truth ``(N, 3)``."""
    est, gt = np.asarray(est, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if est.shape != gt.shape or est.ndim != 2 or est.shape[1] != 3:
        raise ValueError(f"trajectories must both be (N, 3), got {est.shape} and {gt.shape}")
    xy, yaw = est[:, :2], est[:, 2]
    if align and len(est) >= 2:
        R, t = align_2d(est, gt)
        xy = est[:, :2] @ R.T + t
        yaw = est[:, 2] + math.atan2(R[1, 0], R[0, 0])
    err = np.linalg.norm(xy - gt[:, :2], axis=1)
    dyaw = wrap_angle(yaw - gt[:, 2])
    return {"ate_rmse": float(np.sqrt(np.mean(err ** 2))), "ate_max": float(err.max()),
            "yaw_rmse": float(np.sqrt(np.mean(dyaw ** 2))), "final_error": float(err[-1])}


def rasterize_obstacles(rows: np.ndarray, shape: tuple[int, int], resolution: float, origin) -> np.ndarray:
    """Boolean grid (row = y, col = x) whose cells have their centre inside an obstacle."""
    ys = origin[1] + (np.arange(shape[0]) + 0.5) * resolution
    xs = origin[0] + (np.arange(shape[1]) + 0.5) * resolution
    gx, gy = np.meshgrid(xs, ys)
    occ = np.zeros(shape, dtype=bool)
    for kind, x, y, yaw, sx, sy, _h in np.asarray(rows, dtype=np.float64).reshape(-1, 7):
        dx, dy = gx - x, gy - y
        if int(kind) == 1:
            occ |= dx * dx + dy * dy <= (sx / 2.0 + resolution / 2) ** 2
        else:
            c, s = math.cos(yaw), math.sin(yaw)
            u, v = c * dx + s * dy, -s * dx + c * dy
            occ |= (np.abs(u) <= sx / 2.0 + resolution / 2) & (np.abs(v) <= sy / 2.0 + resolution / 2)
    return occ


def map_accuracy(occupied: np.ndarray, resolution: float, origin, obstacles: np.ndarray,
                 reference: np.ndarray | None = None, tolerance: float = 0.1) -> dict[str, float]:
    """``{"precision", "recall", "mean_error", "occupied_cells"}`` of a boolean map (see the module docstring).

    ``reference``: the boolean map the recall is measured against (cells that should be found);
    defaults to the boundary cells of the true obstacles.
    """
    occupied = np.asarray(occupied, dtype=bool)
    truth = rasterize_obstacles(obstacles, occupied.shape, resolution, origin)
    to_truth = distance_transform_edt(~truth) * resolution
    n = int(occupied.sum())
    precision = float((to_truth[occupied] <= tolerance).mean()) if n else 0.0
    mean_error = float(to_truth[occupied].mean()) if n else math.inf
    if reference is None:
        from scipy.ndimage import binary_erosion

        reference = truth & ~binary_erosion(truth)
    to_map = distance_transform_edt(~occupied) * resolution if n else np.full(occupied.shape, np.inf)
    ref = np.asarray(reference, dtype=bool)
    recall = float((to_map[ref] <= tolerance).mean()) if ref.any() else 0.0
    return {"precision": precision, "recall": recall, "mean_error": mean_error, "occupied_cells": n}
