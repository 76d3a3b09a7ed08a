"""Joint-space planning against a pybullet scene: RRT-Connect, shortcutting, time parameterisation,
the OMPL backend, and the promise that no colliding path is ever returned."""

from __future__ import annotations

import numpy as np
import pytest

from ark.control.ik import solve_ik
from ark.control.kinematics import panda_chain
from ark.planning.collision import PlanningScene
from ark.planning.errors import InvalidRequest, NoPathFound, StateInCollision
from ark.planning.ompl_backend import OMPLPlanner
from ark.planning.rrt import RRTConnect
from ark.planning.smoothing import path_length, shortcut
from ark.planning.timing import time_parameterize

HOME = np.array([0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79])
DOWN = [1.0, 0.0, 0.0, 0.0]
WALL = ([0.15, 0.02, 0.15], [-0.05, 0.0, 0.15])  # half extents, centre: a wall across the table
SHELF = ([0.1, 0.25, 0.01], [-0.1, 0.0, 0.33])    # a plate above the work area


def _scene(margin: float, clutter: bool = False) -> PlanningScene:
    s = PlanningScene(margin=margin)
    s.add_box(*WALL, name="wall")
    if clutter:
        s.add_box(*SHELF, name="shelf")
    return s


@pytest.fixture(scope="module")
def scene():
    s = _scene(0.02)
    yield s
    s.close()


@pytest.fixture(scope="module")
def checker():
    """An independent validity checker: its own pybullet client, zero margin, fine sampling."""
    s = _scene(0.0)
    yield s
    s.close()


def _collision_free(checker: PlanningScene, path: np.ndarray, max_joint_step: float = 0.005) -> bool:
    """Every configuration along every edge, no joint moving more than ``max_joint_step`` rad between
    samples, is collision-free at zero margin (independent of the planner's own edge checks)."""
    for a, b in zip(path[:-1], path[1:]):
        k = max(1, int(np.ceil(np.abs(b - a).max() / max_joint_step)))
        for t in np.linspace(0.0, 1.0, k + 1):
            if not checker.is_valid(a + t * (b - a), margin=0.0):
                return False
    return True


@pytest.fixture(scope="module")
def problem():
    chain = panda_chain()
    left = solve_ik(chain, [-0.05, -0.2, 0.1], DOWN, q0=HOME).q
    right = solve_ik(chain, [-0.05, 0.2, 0.1], DOWN, q0=HOME).q
    return left, right


def test_rrt_connect_plans_around_the_wall_and_the_path_is_collision_free(scene, checker, problem):
    start, goal = problem
    assert not scene.motion_valid(start, goal)  # the straight joint-space move hits the wall
    assert not _collision_free(checker, np.array([start, goal]))  # and the independent checker sees it
    lengths = []
    for seed in range(3):
        planner = RRTConnect(scene, seed=seed)
        path = planner.plan(start, goal)
        assert np.array_equal(path[0], start) and np.array_equal(path[-1], goal)
        assert _collision_free(checker, path)
        short = shortcut(path, scene, iterations=60, seed=seed)
        assert np.array_equal(short[0], start) and np.array_equal(short[-1], goal)
        assert path_length(short) <= path_length(path)
        assert _collision_free(checker, short)
        lengths.append((path_length(path), path_length(short)))
    # Shortcutting matters: on average it removes a good part of the detour.
    assert np.mean([b / a for a, b in lengths]) < 0.8
    # Same seed, same path.
    assert np.array_equal(RRTConnect(scene, seed=1).plan(start, goal), RRTConnect(scene, seed=1).plan(start, goal))


def test_random_problems_give_a_valid_path_or_a_clear_no_path():
    """In a cluttered scene, random valid start/goal pairs: every answer is either a path the
    independent checker accepts, or NoPathFound; never a colliding path."""
    scene, checker = _scene(0.02, clutter=True), _scene(0.0, clutter=True)
    rng = np.random.default_rng(7)
    chain = panda_chain()
    outcomes = []
    pairs = 0
    while pairs < 5:
        ends = []
        for _ in range(2):
            target = rng.uniform([-0.3, -0.3, 0.05], [0.15, 0.3, 0.3])
            try:
                q = solve_ik(chain, target, DOWN, q0=HOME, restarts=2).q
            except Exception:
                continue
            if scene.is_valid(q):
                ends.append(q)
        if len(ends) < 2:
            continue
        pairs += 1
        try:
            path = RRTConnect(scene, seed=pairs, max_iterations=400).plan(*ends)
        except NoPathFound as exc:
            assert "no path within budget" in str(exc)
            outcomes.append("none")
            continue
        assert _collision_free(checker, shortcut(path, scene, iterations=30, seed=0))
        outcomes.append("path")
    assert outcomes.count("path") >= 3
    scene.close(), checker.close()


def test_planner_reports_budget_collisions_and_bad_requests(scene, problem):
    start, goal = problem
    with pytest.raises(NoPathFound, match=r"no path within budget: ark RRT-Connect spent 2 iterations"):
        RRTConnect(scene, seed=0, max_iterations=2).plan(start, goal)
    inside = solve_ik(panda_chain(), [-0.05, 0.0, 0.15], DOWN, q0=HOME).q  # tip inside the wall
    with pytest.raises(StateInCollision, match=r"goal is in collision \(margin 0.020 m\): .*panda_.* - wall"):
        RRTConnect(scene).plan(start, inside)
    bad = start.copy()
    bad[3] = 0.5
    with pytest.raises(InvalidRequest, match=r"start: joint panda_joint4 = 0.5000 is outside its limits"):
        RRTConnect(scene).plan(bad, goal)
    with pytest.raises(InvalidRequest, match=r"start must have shape \(7,\) \(one value per joint\), got \(3,\)"):
        RRTConnect(scene).plan(start[:3], goal)
    with pytest.raises(InvalidRequest, match="must be finite"):
        RRTConnect(scene).plan(start, np.full(7, np.nan))


def test_time_parameterisation_respects_limits_and_stays_on_the_checked_path(scene, checker, problem):
    path = shortcut(RRTConnect(scene, seed=0).plan(*problem), scene, iterations=60, seed=0)
    vmax = 0.5 * scene.chain.velocity_limits
    amax = np.full(7, 3.0)
    traj = time_parameterize(path, vmax, amax)
    dt = 1e-3
    ts, qs = traj.sample_uniform(dt)
    v = np.array([traj.sample(t)[1] for t in ts])
    a = np.array([traj.sample(t)[2] for t in ts])
    assert np.all(np.abs(v) <= vmax + 1e-9) and np.all(np.abs(a) <= amax + 1e-9)
    # Finite differences agree with the analytic velocity (the profile is continuous, not jumping).
    assert np.abs(np.diff(qs, axis=0) / dt - v[:-1]).max() < 3.0 * dt * amax.max() + 1e-6
    # It passes through every waypoint, at rest, and some joint saturates a limit on every segment.
    for t, q in zip(traj.waypoint_times, path):
        pos, vel, _ = traj.sample(t)
        assert np.allclose(pos, q, atol=1e-9) and np.allclose(vel, 0.0, atol=1e-9)
    assert np.isclose(np.max(np.abs(v) / vmax), 1.0, atol=1e-3) or np.isclose(np.max(np.abs(a) / amax), 1.0)
    assert _collision_free(checker, qs[::20])
    with pytest.raises(InvalidRequest, match="max_velocity must be positive"):
        time_parameterize(path, 0.0, 1.0)


def test_ompl_backend_has_the_same_interface_and_guarantees(scene, checker, problem):
    start, goal = problem
    path = OMPLPlanner(scene, time_limit=10.0, seed=0).plan(start, goal)
    assert np.array_equal(path[0], start) and np.array_equal(path[-1], goal)
    assert _collision_free(checker, path)
    with pytest.raises(NoPathFound, match=r"no path within budget: OMPL RRTConnect found no exact solution in 0.001 s"):
        OMPLPlanner(scene, time_limit=0.001).plan(start, goal)
    with pytest.raises(StateInCollision):
        OMPLPlanner(scene).plan(start, solve_ik(panda_chain(), [-0.05, 0.0, 0.15], DOWN, q0=HOME).q)
