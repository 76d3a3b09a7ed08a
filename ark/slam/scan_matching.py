"""Scan matching: align a scan (points in the robot frame) to a reference point set.

Two matchers that complement each other:

* :func:`icp` — point-to-line ICP (Censi's PL-ICP linearised, Huber-weighted) against a
  reference with per-point normals; precise (millimetres on walls) but only from a good
  initial guess (about 0.3 m / 10 degrees).
* :func:`correlative_match` — an exhaustive search over a window of poses scored on a
  likelihood field of the reference (Olson's correlative matching); coarse (one grid step)
  but finds the right basin from far away. Loop closures use it before ICP.

Both return a :class:`MatchResult` whose ``pose`` maps scan points into the reference frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree

from ark.slam.geometry import transform_points, wrap_angle


@dataclass
class MatchResult:
    """Outcome of a scan match: the pose of the scan in the reference frame and its quality."""

    pose: np.ndarray  # (x, y, yaw)
    rmse: float  # m, over inlier correspondences
    inliers: float  # fraction of scan points with a reference point within the final gate
    iterations: int
    converged: bool

    def good(self, min_inliers: float, max_rmse: float) -> bool:
        return self.converged and self.inliers >= min_inliers and self.rmse <= max_rmse


class Reference:
    """A reference point set prepared for matching: KD-tree and unit normals (PCA of neighbours)."""

    def __init__(self, points: np.ndarray, neighbours: int = 6) -> None:
        self.points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        self.tree = cKDTree(self.points) if len(self.points) else None
        self.normals = np.zeros_like(self.points)
        if len(self.points) >= 3:
            k = min(neighbours, len(self.points))
            _, idx = self.tree.query(self.points, k=k)
            nb = self.points[idx]  # (N, k, 2)
            d = nb - nb.mean(axis=1, keepdims=True)
            cov = np.einsum("nki,nkj->nij", d, d)
            _, vecs = np.linalg.eigh(cov)
            self.normals = vecs[:, :, 0]  # eigenvector of the smallest eigenvalue


def icp(scan: np.ndarray, ref: Reference, init, *, max_iterations: int = 30, gate: float = 0.5,
        final_gate: float = 0.15, huber: float = 0.05, tolerance: float = 3e-4) -> MatchResult:
    """Align ``scan`` ``(N, 2)`` to ``ref`` starting from pose ``init``; point-to-line metric.

    The correspondence gate shrinks from ``gate`` to ``final_gate`` metres over the iterations,
    so a rough start still converges while the final fit ignores outliers.
    """
    pose = np.asarray(init, dtype=np.float64).copy()
    scan = np.asarray(scan, dtype=np.float64).reshape(-1, 2)
    if ref.tree is None or len(scan) < 3 or len(ref.points) < 3:
        return MatchResult(pose, math.inf, 0.0, 0, False)
    converged = False
    it = 0
    for it in range(1, max_iterations + 1):
        g = max(final_gate, gate * 0.5 ** (it - 1))
        p = transform_points(pose, scan)
        dist, idx = ref.tree.query(p, distance_upper_bound=g)
        ok = np.isfinite(dist)
        if ok.sum() < 3:
            return MatchResult(pose, math.inf, float(ok.mean()), it, False)
        pp, q, n = p[ok], ref.points[idx[ok]], ref.normals[idx[ok]]
        r = np.einsum("ij,ij->i", n, pp - q)  # signed point-to-line distance
        # Rotation about the current scan origin (pose x, y): d(R p)/dyaw = perp(p - t).
        rel = pp - pose[:2]
        J = np.column_stack([n[:, 0], n[:, 1], n[:, 0] * -rel[:, 1] + n[:, 1] * rel[:, 0]])
        w = np.where(np.abs(r) <= huber, 1.0, huber / np.maximum(np.abs(r), 1e-12))
        H = (J * w[:, None]).T @ J + 1e-9 * np.eye(3)
        delta = -np.linalg.solve(H, (J * w[:, None]).T @ r)
        # Apply: rotate about the scan origin, then translate.
        pose[0] += delta[0]
        pose[1] += delta[1]
        pose[2] = float(wrap_angle(pose[2] + delta[2]))
        if np.linalg.norm(delta[:2]) < tolerance and abs(delta[2]) < tolerance and g <= final_gate:
            converged = True
            break
    p = transform_points(pose, scan)
    dist, idx = ref.tree.query(p, distance_upper_bound=final_gate)
    ok = np.isfinite(dist)
    if ok.sum() < 3:
        return MatchResult(pose, math.inf, float(ok.mean()), it, False)
    r = np.einsum("ij,ij->i", ref.normals[idx[ok]], p[ok] - ref.points[idx[ok]])
    rmse = float(np.sqrt(np.mean(r ** 2)))
    # Reaching the iteration cap with a tight fit is as good as a converged step size.
    return MatchResult(pose, rmse, float(ok.mean()), it, converged or rmse < final_gate / 3)


class LikelihoodField:
    """Distance-to-nearest-reference-point on a grid, turned into a per-point score in [0, 1]."""

    def __init__(self, points: np.ndarray, resolution: float = 0.05, margin: float = 1.0, sigma: float = 0.1) -> None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        self.resolution = resolution
        lo = pts.min(axis=0) - margin if len(pts) else np.zeros(2)
        hi = pts.max(axis=0) + margin if len(pts) else np.ones(2)
        self.origin = lo
        shape = np.ceil((hi - lo) / resolution).astype(int) + 1
        occ = np.ones(tuple(shape), dtype=bool)  # True = free (distance_transform measures to False cells)
        if len(pts):
            ij = np.floor((pts - lo) / resolution).astype(int)
            occ[ij[:, 0], ij[:, 1]] = False
        dist = distance_transform_edt(occ) * resolution
        self.score = np.exp(-0.5 * (dist / sigma) ** 2)

    def evaluate(self, points: np.ndarray) -> np.ndarray:
        """Mean score of each candidate's points; ``points`` is ``(..., N, 2)``."""
        ij = np.floor((points - self.origin) / self.resolution).astype(int)
        inside = ((ij[..., 0] >= 0) & (ij[..., 0] < self.score.shape[0])
                  & (ij[..., 1] >= 0) & (ij[..., 1] < self.score.shape[1]))
        ij0 = np.clip(ij[..., 0], 0, self.score.shape[0] - 1)
        ij1 = np.clip(ij[..., 1], 0, self.score.shape[1] - 1)
        return np.where(inside, self.score[ij0, ij1], 0.0).mean(axis=-1)


def _search(scan: np.ndarray, field: LikelihoodField, init: np.ndarray, window_xy: float, window_yaw: float,
            step_xy: float, step_yaw: float) -> tuple[np.ndarray, float]:
    offs = np.arange(-window_xy, window_xy + 1e-9, step_xy)
    dx, dy = np.meshgrid(offs, offs, indexing="ij")
    shifts = np.stack([dx.ravel(), dy.ravel()], axis=1)  # (S, 2)
    best = (-1.0, init.copy())
    for dyaw in np.arange(-window_yaw, window_yaw + 1e-9, step_yaw):
        yaw = init[2] + dyaw
        base = transform_points((init[0], init[1], yaw), scan)  # (N, 2)
        scores = field.evaluate(base[None, :, :] + shifts[:, None, :])  # every shift at once
        k = int(np.argmax(scores))
        if scores[k] > best[0]:
            best = (float(scores[k]), np.array([init[0] + shifts[k, 0], init[1] + shifts[k, 1], float(wrap_angle(yaw))]))
    return best[1], best[0]


def correlative_match(scan: np.ndarray, field: LikelihoodField, init, *, window_xy: float = 1.0,
                      window_yaw: float = 0.5, step_xy: float = 0.05, step_yaw: float = 0.025,
                      max_points: int = 180) -> tuple[np.ndarray, float]:
    """Best pose within ``init ± window`` by exhaustive search; returns (pose, mean score in [0, 1]).

    Two levels: the whole window at twice the steps, then the neighbourhood of the best
    candidate at the given steps. Each level rotates the scan once per yaw and scores every
    translation at once by indexing the likelihood field.
    """
    scan = np.asarray(scan, dtype=np.float64).reshape(-1, 2)
    if len(scan) > max_points:
        scan = scan[np.linspace(0, len(scan) - 1, max_points).astype(int)]
    init = np.asarray(init, dtype=np.float64)
    coarse, _ = _search(scan, field, init, window_xy, window_yaw, 2 * step_xy, 2 * step_yaw)
    return _search(scan, field, coarse, 2 * step_xy, 2 * step_yaw, step_xy, step_yaw)
