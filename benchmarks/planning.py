"""Ark's joint-space RRT-Connect against OMPL's RRTConnect on the same Panda planning problems.

    python benchmarks/planning.py                 # full run (about 80 s of CPU; 4 min wall at load 10 on 2 cores)
    python benchmarks/planning.py --quick         # fewer seeds (about 20 s of CPU)
    python benchmarks/planning.py --json out.json # also write every number as JSON

Problems (Panda on the Ark table, base at x = -0.6, gripper pointing down; start and goal from
IK, so both are valid): ``wall`` moves from one side of a 30 cm tall wall to the other;
``wall+shelf`` does the same with a plate 48 cm above the table that narrows the way over the
wall; ``clutter`` draws random start/goal pairs (seeded) among a wall, a shelf and a pillar.
Every planner gets the same scene object, so the same state checker and the same motion
validator (edges sampled so no point of the arm moves more than the 2 cm margin between checks),
the same step (0.3 rad) and the same budget (``--budget`` s of wall time, default 10); Ark's
planner is seeded per run (seed = run index), OMPL's random stream is seeded once per process
(its seed is process-wide). The two planners alternate which goes first.

Columns: success rate; planning time median and 90th percentile (wall, includes collision
checking, which dominates); collision checks (median); joint-space path length (rad, median over
successes) as returned and after Ark's shortcutting (the same post-processing for both);
``invalid``: returned paths that an independent checker (own pybullet client, zero margin, every
configuration at most 0.005 rad apart per joint) finds colliding; must be 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from ark.control.errors import UnreachableTarget  # noqa: E402
from ark.control.ik import solve_ik  # noqa: E402
from ark.control.kinematics import panda_chain  # noqa: E402
from ark.planning.collision import PlanningScene  # noqa: E402
from ark.planning.errors import NoPathFound  # noqa: E402
from ark.planning.ompl_backend import OMPLPlanner, ompl_available  # noqa: E402
from ark.planning.rrt import RRTConnect  # noqa: E402
from ark.planning.smoothing import path_length, shortcut  # noqa: E402

HOME = np.array([0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79])
DOWN = [1.0, 0.0, 0.0, 0.0]
WALL = ([0.15, 0.02, 0.15], [-0.05, 0.0, 0.15])
SHELF = ([0.12, 0.3, 0.01], [0.0, 0.0, 0.48])
PILLAR = ([0.03, 0.03, 0.2], [0.12, -0.15, 0.2])


def build(obstacles, margin: float) -> PlanningScene:
    s = PlanningScene(margin=margin)
    for i, (half, centre) in enumerate(obstacles):
        s.add_box(half, centre, name=f"obstacle{i}")
    return s


def problems(quick: bool) -> list[dict]:
    chain = panda_chain()
    left = solve_ik(chain, [-0.05, -0.2, 0.1], DOWN, q0=HOME).q
    right = solve_ik(chain, [-0.05, 0.2, 0.1], DOWN, q0=HOME).q
    out = [{"name": "wall", "obstacles": [WALL], "pairs": [(left, right)]},
           {"name": "wall+shelf", "obstacles": [WALL, SHELF], "pairs": [(left, right)]}]
    clutter = [WALL, SHELF, PILLAR]
    scene = build(clutter, 0.02)
    rng = np.random.default_rng(1234)
    pairs = []
    while len(pairs) < (3 if quick else 6):
        ends = []
        for _ in range(2):
            try:
                q = solve_ik(chain, rng.uniform([-0.3, -0.3, 0.05], [0.15, 0.3, 0.3]), DOWN, q0=HOME, restarts=2).q
            except UnreachableTarget:
                continue
            if scene.is_valid(q):
                ends.append(q)
        if len(ends) == 2 and not scene.motion_valid(*ends):  # only pairs that need planning
            pairs.append(tuple(ends))
    scene.close()
    out.append({"name": "clutter", "obstacles": clutter, "pairs": pairs})
    return out


def collision_free(checker: PlanningScene, path: np.ndarray, step: float = 0.005) -> bool:
    for a, b in zip(path[:-1], path[1:]):
        k = max(1, int(np.ceil(np.abs(b - a).max() / step)))
        for t in np.linspace(0.0, 1.0, k + 1):
            if not checker.is_valid(a + t * (b - a), margin=0.0):
                return False
    return True


def run_one(make, scene, checker, start, goal) -> dict:
    planner = make()
    t0 = time.perf_counter()
    try:
        path = planner.plan(start, goal)
    except NoPathFound:
        return {"ok": False, "seconds": time.perf_counter() - t0, "checks": planner.stats.checks}
    seconds = time.perf_counter() - t0
    short = shortcut(path, scene, iterations=100, seed=0)
    return {"ok": True, "seconds": seconds, "checks": planner.stats.checks, "length": path_length(path),
            "short": path_length(short), "waypoints": len(path),
            "invalid": int(not collision_free(checker, path)) + int(not collision_free(checker, short))}


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["ok"]]
    times = np.array([r["seconds"] for r in runs])
    med = (lambda k: float(np.median([r[k] for r in ok])) if ok else float("nan"))
    return {"runs": len(runs), "success": len(ok) / len(runs), "t_p50": float(np.median(times)),
            "t_p90": float(np.percentile(times, 90)), "checks": float(np.median([r["checks"] for r in runs])),
            "length": med("length"), "short": med("short"), "invalid": sum(r.get("invalid", 0) for r in ok)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None, help="runs per start/goal pair (default 10, quick 4)")
    ap.add_argument("--budget", type=float, default=10.0, help="seconds per planning call (both planners)")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    seeds = args.seeds or (4 if args.quick else 10)
    have_ompl = ompl_available()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}; OMPL {'available' if have_ompl else 'NOT installed (Ark only)'}")
    results = {}
    for prob in problems(args.quick):
        scene = build(prob["obstacles"], 0.02)
        checker = build(prob["obstacles"], 0.0)
        makers = {"ark RRT-Connect": lambda seed: RRTConnect(scene, step=0.3, max_iterations=10**7,
                                                             time_limit=args.budget, seed=seed)}
        if have_ompl:
            makers["OMPL RRTConnect"] = lambda seed: OMPLPlanner(scene, "RRTConnect", time_limit=args.budget,
                                                                 step=0.3, seed=seed)
        runs = {k: [] for k in makers}
        k = 0
        for start, goal in prob["pairs"]:
            for seed in range(seeds):
                order = list(makers) if k % 2 == 0 else list(makers)[::-1]
                for name in order:
                    runs[name].append(run_one(lambda: makers[name](seed), scene, checker, start, goal))
                k += 1
        for name, rs in runs.items():
            results[(prob["name"], name)] = summarise(rs)
        scene.close(), checker.close()
    print()
    print("| problem | planner | runs | success | plan time p50 / p90 (s) | collision checks p50 | "
          "path length p50 (rad) | after shortcut p50 (rad) | invalid |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (prob, name), r in results.items():
        print(f"| {prob} | {name} | {r['runs']} | {r['success'] * 100:.0f} % | {r['t_p50']:.3f} / {r['t_p90']:.3f} | "
              f"{r['checks']:.0f} | {r['length']:.2f} | {r['short']:.2f} | {r['invalid']} |")
    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{p}/{n}": r for (p, n), r in results.items()}, indent=1))
    # OMPL's nanobind bindings report leaked objects at interpreter exit; skip that noise.
    sys.stdout.flush()
    os._exit(0 if all(r["invalid"] == 0 for r in results.values()) else 1)


if __name__ == "__main__":
    main()
