"""Joint-space RRT-Connect (Kuffner & LaValle 2000) against a :class:`~ark.planning.collision.PlanningScene`.

    planner = RRTConnect(scene, seed=0, max_iterations=5000)
    path = planner.plan(q_start, q_goal)          # (N, n) waypoints; every edge passed motion_valid
    path = shortcut(path, scene, seed=0)          # ark.planning.smoothing

Two trees grow from the start and the goal; each iteration extends one towards a random sample
(``step`` radians at a time, Euclidean in joint space) and then greedily connects the other to
the new node. The budget is ``max_iterations`` (deterministic for a seed) and, optionally,
``time_limit`` seconds; when it runs out :class:`~ark.planning.errors.NoPathFound` says so.
Every returned edge was checked with ``scene.motion_valid``, and the whole path is re-checked
before it is returned, so a colliding path is never returned. Bad requests raise
:class:`~ark.planning.errors.InvalidRequest` (shape, non-finite, outside the joint limits) or
:class:`~ark.planning.errors.StateInCollision` (naming what collides).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ark.planning.errors import InvalidRequest, NoPathFound, StateInCollision


@dataclass
class PlanStats:
    """What the last ``plan`` call did: iterations, tree sizes, collision checks, seconds."""

    iterations: int = 0
    nodes: int = 0
    checks: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def check_request(scene, q, what: str) -> np.ndarray:
    """``q`` as a valid joint vector of ``scene``, else a one-line InvalidRequest / StateInCollision."""
    a = np.asarray(q, dtype=np.float64)
    if a.shape != (scene.n,):
        raise InvalidRequest(f"{what} must have shape ({scene.n},) (one value per joint), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidRequest(f"{what} must be finite, got {a.tolist()}")
    bad = np.nonzero((a < scene.lower - 1e-9) | (a > scene.upper + 1e-9))[0]
    if bad.size:
        i = int(bad[0])
        raise InvalidRequest(f"{what}: joint {scene.names[i]} = {a[i]:.4f} is outside its limits "
                             f"[{scene.lower[i]:.4f}, {scene.upper[i]:.4f}]")
    if not scene.is_valid(a):
        hits = scene.collisions(a)
        raise StateInCollision(f"{what} is in collision (margin {scene.margin:.3f} m): {', '.join(hits[:4]) or 'unknown'}")
    return a


class _Tree:
    def __init__(self, root: np.ndarray, capacity: int) -> None:
        self.q = np.empty((capacity, root.shape[0]))
        self.q[0] = root
        self.parent = np.full(capacity, -1, dtype=np.int64)
        self.size = 1

    def nearest(self, x: np.ndarray) -> int:
        d = self.q[: self.size] - x
        return int(np.argmin(np.einsum("ij,ij->i", d, d)))

    def add(self, x: np.ndarray, parent: int) -> int:
        if self.size == len(self.q):
            self.q = np.concatenate([self.q, np.empty_like(self.q)])
            self.parent = np.concatenate([self.parent, np.full(len(self.parent), -1, dtype=np.int64)])
        self.q[self.size] = x
        self.parent[self.size] = parent
        self.size += 1
        return self.size - 1

    def branch(self, i: int) -> list[np.ndarray]:
        out = []
        while i >= 0:
            out.append(self.q[i].copy())
            i = int(self.parent[i])
        return out  # node .. root


class RRTConnect:
    """Bidirectional RRT with greedy connection; see the module docstring."""

    name = "ark RRT-Connect"

    def __init__(self, scene, step: float = 0.3, max_iterations: int = 5000, time_limit: float | None = None,
                 seed: int = 0) -> None:
        if not step > 0:
            raise InvalidRequest(f"RRT step must be > 0 rad, got {step}")
        self.scene = scene
        self.step = float(step)
        self.max_iterations = int(max_iterations)
        self.time_limit = time_limit
        self.seed = seed
        self.stats = PlanStats()

    def _extend(self, tree: _Tree, target: np.ndarray) -> tuple[str, int]:
        """One step from the nearest node towards ``target``: (reached|advanced|trapped, node index)."""
        i = tree.nearest(target)
        q = tree.q[i]
        d = target - q
        dist = float(np.linalg.norm(d))
        reached = dist <= self.step
        new = target.copy() if reached else q + d * (self.step / dist)
        if not self.scene.is_valid(new) or not self.scene.motion_valid(q, new):
            return "trapped", i
        j = tree.add(new, i)
        return ("reached" if reached else "advanced"), j

    def _connect(self, tree: _Tree, target: np.ndarray) -> tuple[str, int]:
        while True:
            status, j = self._extend(tree, target)
            if status != "advanced":
                return status, j

    def plan(self, start, goal) -> np.ndarray:
        """A collision-free joint path ``(N, n)`` from ``start`` to ``goal``; see the module docstring."""
        scene = self.scene
        checks0 = scene.checks
        t0 = time.perf_counter()
        qs = check_request(scene, start, "start")
        qg = check_request(scene, goal, "goal")
        self.stats = PlanStats()
        rng = np.random.default_rng(self.seed)
        if scene.motion_valid(qs, qg):
            return self._finish(np.array([qs, qg]), t0, checks0, 0, 2)
        a, b = _Tree(qs, 1024), _Tree(qg, 1024)
        start_tree = a
        it = 0
        lo, hi = scene.lower, scene.upper
        for it in range(1, self.max_iterations + 1):
            if self.time_limit is not None and time.perf_counter() - t0 > self.time_limit:
                break
            sample = rng.uniform(lo, hi)
            status, j = self._extend(a, sample)
            if status != "trapped":
                status2, k = self._connect(b, a.q[j])
                if status2 == "reached":
                    # a's node j and b's node k are the same configuration: join the branches there.
                    js, kg = (j, k) if start_tree is a else (k, j)
                    goal_tree = b if start_tree is a else a
                    path = start_tree.branch(js)[::-1] + goal_tree.branch(kg)[1:]
                    return self._finish(np.array(path), t0, checks0, it, a.size + b.size)
            a, b = b, a
        self.stats = PlanStats(it, a.size + b.size, scene.checks - checks0, time.perf_counter() - t0)
        budget = f"{self.max_iterations} iterations" if it >= self.max_iterations else f"{self.time_limit:g} s"
        raise NoPathFound(f"no path within budget: {self.name} spent {budget} ({a.size + b.size} tree nodes) "
                          f"without connecting start and goal")

    def _finish(self, path: np.ndarray, t0: float, checks0: int, iterations: int, nodes: int) -> np.ndarray:
        if not self.scene.path_valid(path):  # defence in depth: never hand out a colliding path
            raise NoPathFound(f"{self.name}: the found path failed re-validation; no valid path returned")
        self.stats = PlanStats(iterations, nodes, self.scene.checks - checks0, time.perf_counter() - t0)
        return path
