"""Grid A* for the wheeled base, and pure pursuit following its path in ark/HuskyNavigate-v0."""

from __future__ import annotations

import heapq
import math

import gymnasium
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ark/ environments)
from ark.control.diff_drive import PurePursuit
from ark.control.errors import ShapeError
from ark.planning.errors import InvalidRequest, NoPathFound, StateInCollision
from ark.planning.grid import AStarPlanner, OccupancyGrid, path_length


def _dijkstra_length(occ: np.ndarray, s, g) -> float:
    """Reference: the shortest 8-connected cell-path length (no corner cutting), by Dijkstra."""
    h, w = occ.shape
    dist = {s: 0.0}
    heap = [(0.0, s)]
    while heap:
        d, (r, c) = heapq.heappop(heap)
        if (r, c) == g:
            return d
        if d > dist[(r, c)]:
            continue
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                nr, nc = r + dr, c + dc
                if (dr or dc) and 0 <= nr < h and 0 <= nc < w and not occ[nr, nc]:
                    if dr and dc and (occ[r + dr, c] or occ[r, c + dc]):
                        continue
                    nd = d + math.hypot(dr, dc)
                    if nd < dist.get((nr, nc), math.inf):
                        dist[(nr, nc)] = nd
                        heapq.heappush(heap, (nd, (nr, nc)))
    return math.inf


def _segment_clear(grid: OccupancyGrid, a, b) -> bool:
    """Independent check: sample the world segment every 1/20 cell; no sample in an occupied cell."""
    n = int(np.linalg.norm(np.subtract(b, a)) / grid.resolution * 20) + 2
    for t in np.linspace(0, 1, n):
        cell = grid.world_to_cell(np.asarray(a) + t * (np.asarray(b) - np.asarray(a)))
        if grid.occupied[cell]:
            return False
    return True


def test_astar_is_optimal_on_random_maps_and_its_pruned_path_stays_clear():
    rng = np.random.default_rng(0)
    solved = 0
    for _ in range(12):
        occ = rng.random((30, 40)) < 0.25
        occ[0, 0] = occ[-1, -1] = False
        grid = OccupancyGrid(occ, resolution=0.1, origin=(0.0, 0.0))
        s, g = (0.05, 0.05), (3.95, 2.95)
        ref = _dijkstra_length(occ, (0, 0), (29, 39))
        raw = AStarPlanner(grid, simplify=False)
        if math.isinf(ref):
            with pytest.raises(NoPathFound, match="not connected"):
                raw.plan(s, g)
            continue
        solved += 1
        assert path_length(raw.plan(s, g)) == pytest.approx(ref * 0.1, abs=1e-9)  # cell path length: optimal
        pruned = AStarPlanner(grid).plan(s, g)
        assert np.allclose(pruned[0], s) and np.allclose(pruned[-1], g)
        assert path_length(pruned) <= ref * 0.1 + 1e-9
        for a, b in zip(pruned[:-1], pruned[1:]):
            assert _segment_clear(grid, a, b)
    assert solved >= 4


def test_astar_inflates_obstacles_budgets_and_rejects_bad_requests():
    rows = np.array([[0, 1.5, 0.0, 0.0, 0.6, 2.0, 1.0]])  # a 0.6 x 2 m wall across the straight line
    grid = OccupancyGrid.from_obstacles(rows, bounds=(-1, -2, 4, 2), resolution=0.05)
    planner = AStarPlanner(grid, robot_radius=0.4)
    path = planner.plan((0.0, 0.0), (3.0, 0.0))
    # Every waypoint segment keeps the robot's radius from the wall (checked on the inflated map).
    for a, b in zip(path[:-1], path[1:]):
        assert _segment_clear(planner.inflated, a, b)
    assert np.abs(path[:, 1]).max() > 1.0 + 0.4 - 0.05  # went around the wall's end, not through it
    with pytest.raises(NoPathFound, match="no path within budget: A\\* expanded 10 cells"):
        AStarPlanner(grid, robot_radius=0.4, max_expansions=10).plan((0.0, 0.0), (3.0, 0.0))
    with pytest.raises(StateInCollision, match=r"goal \(1.50, 0.00\) is within 0.40 m of an obstacle"):
        planner.plan((0.0, 0.0), (1.5, 0.0))
    with pytest.raises(InvalidRequest, match=r"start \(9.00, 0.00\) is outside the map \[-1.00, 4.00\]"):
        planner.plan((9.0, 0.0), (3.0, 0.0))
    with pytest.raises(InvalidRequest, match=r"start must be 2 finite numbers"):
        planner.plan((0.0, 0.0, 0.0), (3.0, 0.0))
    with pytest.raises(InvalidRequest, match=r"shape \(N, 7\)"):
        OccupancyGrid.from_obstacles(np.zeros((2, 3)))
    with pytest.raises(InvalidRequest, match="non-empty 2-D"):
        OccupancyGrid(np.zeros(5), 0.1)
    # A SLAM-style probability map: unknown cells free (optimistic) or blocked.
    p = np.full((10, 10), 0.5)
    p[:, 5] = 0.9
    p[0, 5] = 0.5
    assert not OccupancyGrid.from_probabilities(p, 0.1).occupied[0, 5]
    assert OccupancyGrid.from_probabilities(p, 0.1, unknown_free=False).occupied[0, 5]


def test_pure_pursuit_bad_input():
    pp = PurePursuit()
    with pytest.raises(ShapeError, match=r"path must be an \(N, 2\) array"):
        pp.set_path(np.zeros((3, 3)))
    pp.set_path([[0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ShapeError, match="pose must be 3 finite numbers"):
        pp.command((0.0, 0.0))


def test_astar_and_pure_pursuit_drive_the_husky_around_obstacles_to_the_goal():
    env = gymnasium.make("ark/HuskyNavigate-v0")
    try:
        obs, info = env.reset(seed=3)
        scene = env.unwrapped._scene
        start, goal = obs["base_pose"][:2].astype(float), scene["goal"][:2]
        lo = np.minimum(start, goal) - 2.5
        hi = np.maximum(start, goal) + 2.5
        grid = OccupancyGrid.from_obstacles(scene["obstacles"], bounds=(*lo, *hi), resolution=0.1)
        path = AStarPlanner(grid, robot_radius=0.5).plan(start, goal)
        # The straight line is blocked for a 0.5 m-radius base, so the planned path must bend.
        assert not _segment_clear(grid.inflated(0.5), start, goal)
        assert len(path) > 2
        pp = PurePursuit(lookahead=0.6, max_linear=0.8, max_angular=1.0, goal_tolerance=0.3)
        pp.set_path(path)
        collided = False
        for _ in range(200):
            v, w = pp.command(obs["base_pose"].astype(float))
            obs, _, terminated, truncated, info = env.step(np.array([v, w], dtype=np.float32))
            collided |= info["collision"]
            if terminated or truncated:
                break
        assert info["is_success"], f"stopped {info['distance']:.2f} m from the goal"
        assert not collided
    finally:
        env.close()
