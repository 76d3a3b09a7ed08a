"""Ark's 2-D lidar SLAM against odometry alone, on the simulated Husky (``ark/HuskyNavigate-v0``).

    python benchmarks/slam.py                    # both scenes (about 2 minutes on a 2-core machine)
    python benchmarks/slam.py --quick            # the room only (about 30 s)
    python benchmarks/slam.py --json out.json --plots plots/   # also every number as JSON, and PNGs

Scenes (obstacle rows laid out through ``reset(options={"scene": ...})``, see
:mod:`ark.slam.husky_sim`): **room**, 9 m x 7 m with five obstacles, two laps of an ellipse
(the lidar sees most of the room from anywhere); **ring**, a 2.5 m wide corridor around a
9 m x 5 m block in a 14 m x 10 m hall, 2.2 laps of about 40 m, lidar range cut to 4 m so
that drift builds up until the loop closes. The base is driven through fixed waypoints by a
go-to-point law on the true pose (a teleoperator); lidar 360 beams with 1 cm noise; odometry
is wheel odometry (wheel angles, configured radius and effective track) with extra Gaussian
noise of ``--odometry-noise`` times each step's distance and turn.

Methods, all fed the same scans and odometry: **odometry** (the baseline: the wheel-odometry
pose; map = scans inserted at it), **scan matching** (Ark's front end, ``loop_closure=False``),
**SLAM** (front end + pose graph with loop closures). Metrics: ATE RMSE / max and final
position error (m) against the simulator's true pose, no alignment (every method starts at
the true start pose); map *precision* (occupied cells within 0.1 m of a true obstacle),
*recall* (cells of the map built from the same scans at the true poses that the map has
within 0.1 m), *mean error* (mean distance of occupied cells to the nearest obstacle, m);
CPU ms per scan.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)  # benchmarks/envs.py would otherwise shadow the envs package

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from ark.slam import LidarSlam, SlamConfig, absolute_trajectory_error, map_accuracy  # noqa: E402
from ark.slam.geometry import compose  # noqa: E402
from ark.slam.husky_sim import (RING_START, RING_TOUR, ROOM_START, ROOM_TOUR, drive, laser_scan,  # noqa: E402
                                ring_obstacles, room_env, room_obstacles)
from ark.slam.occupancy import LogOddsGrid  # noqa: E402
from ark.slam.slam import scan_angles  # noqa: E402

SCENES = {
    "room": dict(obstacles=room_obstacles, tour=ROOM_TOUR, start=ROOM_START, lidar_range=5.0,
                 map_size=(12.0, 10.0), map_origin=(-6.0, -5.0)),
    "ring": dict(obstacles=ring_obstacles, tour=RING_TOUR, start=RING_START, lidar_range=4.0,
                 map_size=(16.0, 12.0), map_origin=(-8.0, -6.0)),
}


def map_at(poses: np.ndarray, scans: list, like: LogOddsGrid, every: int = 3) -> LogOddsGrid:
    """A map built from every ``every``-th scan at the given poses, on the same grid as ``like``."""
    g = LogOddsGrid(like.shape[1], like.shape[0], like.resolution, like.origin)
    for k in range(0, len(scans), every):
        s = scans[k]
        r = np.where(s.ranges >= s.range_max - 0.05, np.inf, s.ranges)
        g.insert_scan(poses[k], r, scan_angles(s), s.range_min, s.range_max - 0.05)
    return g


def run_scene(name: str, odometry_noise: float, seed: int) -> tuple[list[dict], dict]:
    sc = SCENES[name]
    obstacles = sc["obstacles"]()
    env = room_env(obstacles, beams=360, noise_std=0.01, lidar_range=sc["lidar_range"])
    try:
        log = drive(env, sc["tour"], start=sc["start"], obstacles=obstacles, seed=seed, odometry_noise=odometry_noise,
                    max_speed=0.6, max_steps=6000)
        scans = [laser_scan(r, env) for r in log["lidar"]]
    finally:
        env.close()
    if not log["reached"] or log["collisions"].any():
        raise SystemExit(f"{name}: the scripted drive did not finish cleanly (reached={bool(log['reached'])}, "
                         f"collisions={int(log['collisions'].sum())})")
    gt = log["ground_truth"]
    odom_world = np.array([compose(gt[0], o) for o in log["odometry"]])
    rows, extra = [], {"ground_truth": gt, "odometry": odom_world}
    template = LidarSlam(SlamConfig(map_size=sc["map_size"], map_origin=sc["map_origin"]), initial_pose=gt[0])._grid
    oracle = map_at(gt, scans, template).occupied()
    for method in ("odometry", "scan matching", "SLAM"):
        t0 = time.process_time()
        if method == "odometry":
            traj, grid, info = odom_world, map_at(odom_world, scans, template), ""
        else:
            cfg = SlamConfig(map_size=sc["map_size"], map_origin=sc["map_origin"], loop_closure=method == "SLAM")
            slam = LidarSlam(cfg, initial_pose=gt[0])
            for scan, odom in zip(scans, log["odometry"]):
                slam.update(scan, odom)
            traj, grid = slam.trajectory(), slam.grid
            info = f"{slam.keyframes} keyframes, {slam.loop_closures} loop closures"
            extra[method] = traj
            extra[f"{method} map"] = grid
        cpu_ms = (time.process_time() - t0) * 1000.0 / len(scans)
        ate = absolute_trajectory_error(traj, gt, align=False)
        acc = map_accuracy(grid.occupied(), grid.resolution, grid.origin, obstacles, reference=oracle)
        rows.append({"scene": name, "method": method, "scans": len(scans), "ate_rmse": ate["ate_rmse"],
                     "ate_max": ate["ate_max"], "final_error": ate["final_error"], "precision": acc["precision"],
                     "recall": acc["recall"], "map_error": acc["mean_error"], "cpu_ms_per_scan": cpu_ms, "info": info})
        print(f"  {name:5s} {method:14s} ATE {ate['ate_rmse']:.3f} m  map precision {acc['precision']:.3f}  "
              f"{cpu_ms:.1f} ms/scan {info}", flush=True)
    extra["template"] = template
    return rows, extra


def markdown(rows: list[dict]) -> str:
    out = ["| scene | method | ATE RMSE m | ATE max m | final error m | map precision | map recall | map error m "
           "| CPU ms/scan |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['scene']} ({r['scans']} scans) | {r['method']} | {r['ate_rmse']:.3f} | {r['ate_max']:.3f} | "
                   f"{r['final_error']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['map_error']:.3f} | "
                   f"{r['cpu_ms_per_scan']:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the room scene only")
    ap.add_argument("--odometry-noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plots", type=Path, help="folder for PNGs (needs matplotlib)")
    args = ap.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    rows: list[dict] = []
    for name in (["room"] if args.quick else ["room", "ring"]):
        scene_rows, extra = run_scene(name, args.odometry_noise, args.seed)
        rows += scene_rows
        if args.plots:
            from ark.viz.plots import PlotUnavailable, trajectories

            g = extra["SLAM map"]
            h, w = g.shape
            try:
                p = trajectories({"truth": extra["ground_truth"], "odometry": extra["odometry"], "SLAM": extra["SLAM"]},
                                 args.plots / f"slam_{name}.png", occupancy=g.probabilities(),
                                 extent=(g.origin[0], g.origin[0] + w * g.resolution, g.origin[1],
                                         g.origin[1] + h * g.resolution), title=f"SLAM, {name} scene")
                print(f"  wrote {p}")
            except PlotUnavailable as exc:
                print(f"  no plot: {exc}")
    if args.plots:
        from ark.viz.plots import PlotUnavailable, benchmark_bars

        try:
            png = benchmark_bars(rows, "ate_rmse", args.plots / "slam_ate.png", label="method", group="scene",
                                 ylabel="ATE RMSE (m)", log_y=True)
            print(f"  wrote {png}")
        except PlotUnavailable as exc:
            print(f"  no plot: {exc}")
    print(f"load after: {os.getloadavg()[0]:.1f}\n")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
