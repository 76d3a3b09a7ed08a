"""The Husky maps a room it has never seen with lidar SLAM, then drives back to where it started.

    python -m ark.examples.navigate_home [--seed 0] [--explore-steps 900]

Headless, in ``ark/HuskyNavigate-v0`` laid out as a walled 9 m x 7 m room with five obstacles
(:mod:`ark.slam.husky_sim`). The robot knows nothing of the room: it starts its map frame where
it stands, builds the map with :class:`ark.slam.LidarSlam` from the lidar and wheel odometry, and
explores by frontiers (the nearest reachable edge between seen-free and unseen space, planned with
:class:`ark.planning.grid.AStarPlanner` and followed with :class:`ark.control.diff_drive.PurePursuit`
on the SLAM pose). Then it plans home — the map frame's origin — on the finished map (unseen
cells count as blocked) and drives there. It prints the SLAM trajectory error against the
simulator's ground truth and whether it got home (within 0.3 m, measured by the simulator).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_edt, label

from ark.control.diff_drive import PurePursuit
from ark.planning.errors import PlanningError, StateInCollision
from ark.planning.grid import AStarPlanner, OccupancyGrid
from ark.slam import LidarSlam, SlamConfig, absolute_trajectory_error
from ark.slam.geometry import compose, inverse
from ark.slam.husky_sim import laser_scan, reset_room, room_env, wheel_angles, wheel_odometry

ROBOT_RADIUS = 0.65  # m: the Husky is 0.99 m x 0.67 m and turns in place: its half-diagonal and a margin
HOME_TOLERANCE = 0.3  # m
START = np.array([-2.6, -0.2, 0.4])  # world pose, unknown to the robot


def planning_grid(slam: LidarSlam, unknown_free: bool, cell: float = 0.1) -> OccupancyGrid:
    """The SLAM map coarsened to ``cell`` metres (a coarse cell is blocked if any fine cell is)."""
    prob = slam.occupancy()
    k = max(1, int(round(cell / slam.grid.resolution)))
    h, w = (prob.shape[0] // k) * k, (prob.shape[1] // k) * k
    blocks = prob[:h, :w].reshape(h // k, k, w // k, k)
    occupied = (blocks >= 0.65).any(axis=(1, 3))
    if not unknown_free:
        occupied |= (blocks == 0.5).all(axis=(1, 3))
    return OccupancyGrid(occupied, slam.grid.resolution * k, slam.grid.origin)


def frontier_goals(slam: LidarSlam, pose: np.ndarray, min_cells: int = 8, min_distance: float = 1.0) -> list[np.ndarray]:
    """Per frontier cluster (seen-free cells next to unseen ones), its cell with the most room around
    it (at least ROBOT_RADIUS from anything occupied); nearest first."""
    prob = slam.occupancy()
    res, (ox, oy) = slam.grid.resolution, slam.grid.origin
    free, unknown = prob < 0.35, prob == 0.5
    clearance = distance_transform_edt(prob < 0.65) * res
    frontier = free & binary_dilation(unknown)
    labels, n = label(frontier, structure=np.ones((3, 3)))
    goals = []
    for i in range(1, n + 1):
        rows, cols = np.nonzero(labels == i)
        room = clearance[rows, cols]
        if len(rows) < min_cells or room.max() < ROBOT_RADIUS:
            continue
        j = int(np.argmax(room))
        goal = np.array([ox + (cols[j] + 0.5) * res, oy + (rows[j] + 0.5) * res])
        if np.hypot(*(goal - pose[:2])) >= min_distance:
            goals.append(goal)
    return sorted(goals, key=lambda g: float(np.hypot(*(g - pose[:2]))))


def plan(slam: LidarSlam, pose: np.ndarray, goal: np.ndarray, unknown_free: bool) -> tuple[np.ndarray | None, bool]:
    """(path on the current map or None, whether it keeps the full robot radius). A smaller radius is
    only used to get out of a tight spot (a start inside an obstacle's full margin); the caller then
    follows it for a few steps only and replans."""
    grid = planning_grid(slam, unknown_free)
    for radius in (ROBOT_RADIUS, 0.5, 0.4):
        try:
            path = AStarPlanner(grid, robot_radius=radius, max_expansions=60_000).plan(pose[:2], goal)
            return path, radius == ROBOT_RADIUS
        except StateInCollision:
            continue
        except PlanningError:
            return None, False
    return None, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--explore-steps", type=int, default=900, help="control steps (10 Hz) spent exploring at most")
    ap.add_argument("--home-steps", type=int, default=900, help="control steps allowed for the way home")
    ap.add_argument("--plot", help="write the map and both trajectories to this PNG (needs matplotlib)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    env = room_env(beams=360, noise_std=0.01)
    try:
        obs, _ = reset_room(env, start=START, seed=args.seed)
        start_world = np.asarray(obs["base_pose"], dtype=np.float64)  # for evaluation only
        odo = wheel_odometry(env)
        slam = LidarSlam(SlamConfig(map_size=(16.0, 16.0)), initial_pose=(0.0, 0.0, 0.0))
        pp = PurePursuit(lookahead=0.5, max_linear=0.5, max_angular=1.0, goal_tolerance=0.3)
        est, truth, collisions = [], [], 0
        pose = slam.update(laser_scan(obs["lidar"], env), odo.update(*wheel_angles(env)))

        def step(action) -> np.ndarray:
            nonlocal obs, collisions
            obs, _, _, _, info = env.step(np.asarray(action, dtype=np.float32))
            collisions += bool(info["collision"])
            p = slam.update(laser_scan(obs["lidar"], env), odo.update(*wheel_angles(env)))
            est.append(p)
            truth.append(np.asarray(obs["base_pose"], dtype=np.float64))
            return p

        # Look around once, then explore frontier by frontier.
        for _ in range(63):
            pose = step((0.0, 1.0))
        steps, legs, failed = 0, 0, []
        while steps < args.explore_steps:
            goals = [g for g in frontier_goals(slam, pose) if all(np.hypot(*(g - f)) > 0.5 for f in failed)]
            path, full = None, False
            for goal in goals[:4]:
                path, full = plan(slam, pose, goal, unknown_free=True)
                if path is not None:
                    break
                failed.append(goal)
            if path is None:
                break  # nothing left to explore (or nothing reachable)
            pp.set_path(path)
            legs += 1
            for _ in range(40 if full else 10):  # replan every 4 s: the map changes as the robot moves
                pose = step(pp.command(pose))
                steps += 1
                if pp.done:
                    break
        explored = time.monotonic() - t0
        print(f"explored: {legs} planned legs toward frontiers, {len(est)} steps, {slam.keyframes} keyframes, "
              f"{slam.loop_closures} loop closures ({explored:.0f} s)")

        home = np.zeros(2)
        at_home = False
        pp = PurePursuit(lookahead=0.5, max_linear=0.5, max_angular=1.0, goal_tolerance=0.1)
        for _ in range(max(1, args.home_steps // 50)):
            path, full = plan(slam, pose, home, unknown_free=False)
            if path is None:
                print("no path home on the map", file=sys.stderr)
                break
            pp.set_path(path)
            for _ in range(50 if full else 10):
                pose = step(pp.command(pose))
                if pp.done:
                    break
            if pp.done and np.hypot(*pose[:2]) <= HOME_TOLERANCE:
                at_home = True
                break
        for _ in range(5):  # let the base come to rest
            pose = step((0.0, 0.0))
    finally:
        env.close()

    est_world = np.array([compose(start_world, p) for p in est])
    ate = absolute_trajectory_error(est_world, np.array(truth), align=False)
    final = np.array(truth[-1])
    home_error = float(np.hypot(*(final[:2] - start_world[:2])))
    got_home = home_error <= HOME_TOLERANCE
    rel = compose(inverse(start_world), final)
    print(f"SLAM ATE RMSE {ate['ate_rmse']:.3f} m (max {ate['ate_max']:.3f} m) over {len(est)} poses")
    print(f"back at start: {'yes' if got_home else 'no'} — true distance to start {home_error:.2f} m, "
          f"heading change {math.degrees(rel[2]):.0f} deg; robot's belief {'home' if at_home else 'not home'}; "
          f"{collisions} steps in contact ({time.monotonic() - t0:.0f} s)")
    if args.plot:
        from ark.viz.plots import PlotUnavailable, trajectories

        g = slam.grid
        h, w = g.shape
        truth_map = np.array([compose(inverse(start_world), t) for t in truth])  # truth in the robot's map frame
        try:
            trajectories({"truth": truth_map, "SLAM": np.array(est)}, args.plot, occupancy=g.probabilities(),
                         extent=(g.origin[0], g.origin[0] + w * g.resolution, g.origin[1], g.origin[1] + h * g.resolution),
                         title="navigate home: map frame")
        except PlotUnavailable as exc:
            print(exc, file=sys.stderr)
    return 0 if got_home else 1


if __name__ == "__main__":
    sys.exit(main())
