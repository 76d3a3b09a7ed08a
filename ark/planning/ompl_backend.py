"""OMPL planners behind Ark's planner interface (optional extra: ``pip install ompl``).

    from ark.planning.ompl_backend import OMPLPlanner, ompl_available
    if ompl_available():
        path = OMPLPlanner(scene, planner="RRTConnect", time_limit=5.0, seed=0).plan(q_start, q_goal)

Same contract as :class:`~ark.planning.rrt.RRTConnect`: ``plan(start, goal)`` returns ``(N, n)``
waypoints or raises ``InvalidRequest`` / ``StateInCollision`` / ``NoPathFound``. OMPL checks
states with ``scene.is_valid`` and edges with ``scene.motion_valid`` (a Python motion validator),
so its paths carry the same swept-motion guarantee as Ark's own planner, and the result is
re-validated before it is returned. The budget is ``time_limit`` seconds (OMPL's termination
condition). OMPL's random seed is process-wide: ``seed`` is applied once, before its first
planner is created, so repeated runs in one process continue one random stream.
"""

from __future__ import annotations

import time

import numpy as np

from ark.planning.errors import NoPathFound, PlanningError
from ark.planning.rrt import PlanStats, check_request

_seeded = False


def ompl_available() -> bool:
    """Whether the ``ompl`` Python package imports here."""
    try:
        import ompl.base  # noqa: F401
        import ompl.geometric  # noqa: F401
    except Exception:
        return False
    return True


class OMPLPlanner:
    """An OMPL geometric planner (RRTConnect by default) over ``scene``; see the module docstring."""

    def __init__(self, scene, planner: str = "RRTConnect", time_limit: float = 5.0, step: float = 0.3,
                 seed: int = 0) -> None:
        if not ompl_available():
            raise PlanningError("the OMPL backend needs the optional package 'ompl' (pip install ompl)")
        from ompl import geometric as og
        if not hasattr(og, planner):
            raise PlanningError(f"OMPL has no geometric planner {planner!r}")
        self.scene = scene
        self.planner_name = planner
        self.name = f"OMPL {planner}"
        self.time_limit = float(time_limit)
        self.step = float(step)
        self.seed = seed
        self.stats = PlanStats()

    def plan(self, start, goal) -> np.ndarray:
        """A collision-free joint path ``(N, n)`` from ``start`` to ``goal``."""
        global _seeded
        from ompl import base as ob, geometric as og, util as ou

        scene = self.scene
        t0 = time.perf_counter()
        checks0 = scene.checks
        qs = check_request(scene, start, "start")
        qg = check_request(scene, goal, "goal")
        if not _seeded:
            ou.setLogLevel(ou.LOG_ERROR)
            ou.RNG.setSeed(int(self.seed) + 1)  # OMPL treats seed 0 as "not set"
            _seeded = True
        n = scene.n
        space = ob.RealVectorStateSpace(n)
        bounds = ob.RealVectorBounds(n)
        for i in range(n):
            bounds.setLow(i, float(scene.lower[i]))
            bounds.setHigh(i, float(scene.upper[i]))
        space.setBounds(bounds)
        setup = og.SimpleSetup(space)
        si = setup.getSpaceInformation()

        def as_array(state) -> np.ndarray:
            return np.array([state[i] for i in range(n)])

        setup.setStateValidityChecker(lambda s: scene.is_valid(as_array(s)))

        class _Motion(ob.MotionValidator):
            def checkMotion(self, a, b) -> bool:  # noqa: N802 (OMPL's name)
                return scene.motion_valid(as_array(a), as_array(b))

        validator = _Motion(si)
        si.setMotionValidator(validator)
        s, g = space.allocState(), space.allocState()
        for i in range(n):
            s[i], g[i] = float(qs[i]), float(qg[i])
        setup.setStartAndGoalStates(s, g)
        planner = getattr(og, self.planner_name)(si)
        if hasattr(planner, "setRange"):
            planner.setRange(self.step)
        setup.setPlanner(planner)
        solved = setup.solve(self.time_limit)
        if not solved or not setup.haveExactSolutionPath():
            self.stats = PlanStats(0, 0, scene.checks - checks0, time.perf_counter() - t0)
            raise NoPathFound(f"no path within budget: {self.name} found no exact solution in {self.time_limit:g} s")
        p = setup.getSolutionPath()
        path = np.array([as_array(p.getState(i)) for i in range(p.getStateCount())])
        path[0], path[-1] = qs, qg
        if not scene.path_valid(path):
            raise NoPathFound(f"{self.name}: the found path failed re-validation; no valid path returned")
        self.stats = PlanStats(0, 0, scene.checks - checks0, time.perf_counter() - t0)
        return path
