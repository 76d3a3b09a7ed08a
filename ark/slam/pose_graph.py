"""2-D pose-graph optimisation: nodes are poses (x, y, yaw), edges measured relative poses.

Each edge ``(i, j, z, sigma)`` says "pose j seen from pose i is z", with standard deviations
``sigma = (s_xy, s_xy, s_yaw)``. :meth:`PoseGraph.optimize` minimises the sum of squared
whitened errors ``(between(x_i, x_j) - z) / sigma`` with ``scipy.optimize.least_squares``
(trust-region reflective, analytic sparse Jacobian) while holding node 0 fixed. Loop-closure
edges use a robust (Cauchy) weight, so one wrong closure cannot bend the whole trajectory;
:meth:`prune` then drops closures whose error stays large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix

from ark.slam.geometry import wrap_angle


@dataclass
class Edge:
    i: int
    j: int
    z: np.ndarray  # (dx, dy, dyaw): pose j in the frame of pose i
    sigma: np.ndarray  # standard deviations of z
    loop: bool = False


class PoseGraph:
    """Nodes and relative-pose edges; see the module docstring."""

    def __init__(self) -> None:
        self.nodes: list[np.ndarray] = []
        self.edges: list[Edge] = []

    def add_node(self, pose) -> int:
        self.nodes.append(np.asarray(pose, dtype=np.float64).copy())
        return len(self.nodes) - 1

    def add_edge(self, i: int, j: int, z, sigma, loop: bool = False) -> None:
        self.edges.append(Edge(i, j, np.asarray(z, dtype=np.float64), np.asarray(sigma, dtype=np.float64), loop))

    @property
    def loop_closures(self) -> int:
        return sum(e.loop for e in self.edges)

    def poses(self) -> np.ndarray:
        return np.array(self.nodes).reshape(-1, 3)

    def _errors(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Whitened residuals (E, 3) and the Jacobian blocks d r / d x_i, d r / d x_j (E, 3, 3)."""
        ei = np.array([e.i for e in self.edges])
        ej = np.array([e.j for e in self.edges])
        z = np.array([e.z for e in self.edges])
        s = np.array([e.sigma for e in self.edges])
        xi, xj = x[ei], x[ej]
        c, sn = np.cos(xi[:, 2]), np.sin(xi[:, 2])
        dx, dy = xj[:, 0] - xi[:, 0], xj[:, 1] - xi[:, 1]
        pred = np.column_stack([c * dx + sn * dy, -sn * dx + c * dy, wrap_angle(xj[:, 2] - xi[:, 2])])
        err = pred - z
        err[:, 2] = wrap_angle(err[:, 2])
        n = len(self.edges)
        Ji = np.zeros((n, 3, 3))
        Jj = np.zeros((n, 3, 3))
        Ji[:, 0, 0], Ji[:, 0, 1], Ji[:, 0, 2] = -c, -sn, -sn * dx + c * dy
        Ji[:, 1, 0], Ji[:, 1, 1], Ji[:, 1, 2] = sn, -c, -c * dx - sn * dy
        Ji[:, 2, 2] = -1.0
        Jj[:, 0, 0], Jj[:, 0, 1] = c, sn
        Jj[:, 1, 0], Jj[:, 1, 1] = -sn, c
        Jj[:, 2, 2] = 1.0
        return err / s, Ji / s[:, :, None], Jj / s[:, :, None], np.stack([ei, ej], axis=1)

    def optimize(self, max_iterations: int = 50, robust_scale: float = 3.0, passes: int = 3) -> dict:
        """Optimise all nodes but the first in place; returns a summary (cost before/after, evaluations).

        Loop closures get Cauchy weights by iteratively reweighted least squares: the weights
        are computed from the current estimate, held fixed for one ``least_squares`` solve
        (so the analytic Jacobian is exact), and recomputed ``passes`` times.
        """
        n = len(self.nodes)
        if n < 2 or not self.edges:
            return {"cost_before": 0.0, "cost_after": 0.0, "iterations": 0}
        loop = np.array([e.loop for e in self.edges])
        m = len(self.edges)
        e_rows = np.arange(m)[:, None, None] * 3 + np.arange(3)[None, :, None]
        x0 = self.poses()

        def unpack(v: np.ndarray) -> np.ndarray:
            x = x0.copy()
            x[1:] = v.reshape(-1, 3)
            return x

        def cauchy(x: np.ndarray) -> np.ndarray:
            r = self._errors(x)[0]
            w = np.ones(m)
            w[loop] = 1.0 / np.sqrt(1.0 + np.sum(r[loop] ** 2, axis=1) / robust_scale ** 2)
            return w

        before = 0.5 * float(np.sum((self._errors(x0)[0] * cauchy(x0)[:, None]) ** 2))
        evaluations, cost = 0, before
        for _ in range(max(1, passes)):
            w = cauchy(x0)

            def fun(v: np.ndarray) -> np.ndarray:
                return (self._errors(unpack(v))[0] * w[:, None]).ravel()

            def jac(v: np.ndarray):
                _, Ji, Jj, ij = self._errors(unpack(v))
                rows, cols, vals = [], [], []
                for J, node in ((Ji * w[:, None, None], ij[:, 0]), (Jj * w[:, None, None], ij[:, 1])):
                    keep = node > 0  # node 0 is fixed: no column
                    cidx = (node[:, None, None] - 1) * 3 + np.arange(3)[None, None, :]
                    rows.append(np.broadcast_to(e_rows, J.shape)[keep].ravel())
                    cols.append(np.broadcast_to(cidx, J.shape)[keep].ravel())
                    vals.append(J[keep].ravel())
                return coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                  shape=(m * 3, (n - 1) * 3)).tocsr()

            sol = least_squares(fun, x0[1:].ravel(), jac=jac, method="trf", max_nfev=max_iterations,
                                tr_solver="lsmr")
            x0 = unpack(sol.x)
            x0[:, 2] = wrap_angle(x0[:, 2])
            evaluations += int(sol.nfev)
            cost = float(sol.cost)
            if not loop.any():
                break
        self.nodes = [p.copy() for p in x0]
        return {"cost_before": before, "cost_after": cost, "iterations": evaluations}

    def edge_errors(self) -> np.ndarray:
        """Whitened error norm of every edge at the current estimate."""
        r, _, _, _ = self._errors(self.poses())
        return np.linalg.norm(r, axis=1)

    def prune(self, threshold: float = 5.0) -> int:
        """Remove loop closures whose whitened error exceeds ``threshold``; returns how many."""
        errs = self.edge_errors()
        bad = [k for k, e in enumerate(self.edges) if e.loop and errs[k] > threshold]
        for k in reversed(bad):
            del self.edges[k]
        return len(bad)
