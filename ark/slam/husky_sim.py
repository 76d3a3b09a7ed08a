"""SLAM data from ``ark/HuskyNavigate-v0``: a walled room scene, lidar scans, wheel odometry, ground truth.

    env = room_env(beams=360, noise_std=0.01)
    log = drive(env, ROOM_TOUR, seed=0)          # dict of arrays: scans, odometry, ground truth
    scan = laser_scan(log["lidar"][k], env)      # an ark.LaserScan

The room is HuskyNavigate's obstacle rows (``[kind, x, y, yaw, size_x, size_y, height]``) with
four long boxes as walls. HuskyNavigate samples a random layout; :func:`room_env` makes it sample
exactly as many rows as the room has and :func:`drive` replaces them through
``reset(options={"scene": ...})``, the environment's public way to fix a scene.

Wheel angles are read from the pybullet backend's state (the environment does not observe
them); odometry is integrated from them with the configured wheel radius and the effective
(slip-scaled) track width, as the base's own controller models it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ark.messages import LaserScan
from ark.slam.odometry import WheelOdometry

WALL_HEIGHT = 1.0

# A 9 m x 7 m room with a few boxes and cylinders inside, and a tour of it: two laps of an
# ellipse around the middle box (loop closures on the second), ending back at the start.
ROOM_SIZE = (9.0, 7.0)
ROOM_INTERIOR = np.array([
    [0, 2.6, 1.8, 0.4, 0.8, 0.5, 0.8],
    [1, -2.5, -1.7, 0.0, 0.6, 0.6, 0.8],
    [0, -2.8, 1.8, 0.0, 0.5, 0.9, 0.8],
    [1, 2.8, -1.8, 0.0, 0.5, 0.5, 0.8],
    [0, 0.0, 0.0, 0.8, 1.0, 0.6, 0.8],
])
_LAP = np.array([[1.7 * math.sin(a), -1.45 * math.cos(a)] for a in np.linspace(0.0, 2 * math.pi, 13)[1:]])
ROOM_TOUR = np.concatenate([_LAP, _LAP])
ROOM_START = np.array([0.0, -1.45, 0.0])


# A ring corridor 2.5 m wide around a 9 m x 5 m block inside a 14 m x 10 m hall, with boxes
# along the outer wall so that a corridor is not featureless; a lap is about 40 m, longer than
# the lidar sees, so drift accumulates until the loop closes.
RING_SIZE = (14.0, 10.0)
RING_INTERIOR = np.array([
    [0, 0.0, 0.0, 0.0, 9.0, 5.0, 1.0],
    [0, -3.0, -4.8, 0.0, 0.8, 0.4, 0.8],
    [0, 2.5, -4.8, 0.0, 0.4, 0.4, 0.8],
    [1, 6.7, -1.5, 0.0, 0.5, 0.5, 0.8],
    [0, 6.8, 2.0, 0.0, 0.4, 1.0, 0.8],
    [0, 1.0, 4.8, 0.0, 1.2, 0.4, 0.8],
    [1, -4.0, 4.7, 0.0, 0.5, 0.5, 0.8],
    [0, -6.8, 0.5, 0.0, 0.4, 0.8, 0.8],
])
_RING_LAP = np.array([[0.0, -3.75], [4.0, -3.75], [5.4, -3.4], [5.75, -2.0], [5.75, 2.0], [5.4, 3.4], [4.0, 3.75],
                      [-4.0, 3.75], [-5.4, 3.4], [-5.75, 2.0], [-5.75, -2.0], [-5.4, -3.4], [-4.0, -3.75]])
RING_TOUR = np.concatenate([_RING_LAP[1:], _RING_LAP, _RING_LAP[:2]])
RING_START = np.array([-1.0, -3.75, 0.0])


def room_obstacles(size=ROOM_SIZE, interior: np.ndarray = ROOM_INTERIOR, thickness: float = 0.2) -> np.ndarray:
    """Obstacle rows of a rectangular room centred on the origin (inner size ``size``) plus ``interior`` rows."""
    w, h = (float(v) for v in size)
    t = float(thickness)
    walls = np.array([
        [0, 0.0, (h + t) / 2, 0.0, w + 2 * t, t, WALL_HEIGHT],
        [0, 0.0, -(h + t) / 2, 0.0, w + 2 * t, t, WALL_HEIGHT],
        [0, (w + t) / 2, 0.0, 0.0, t, h, WALL_HEIGHT],
        [0, -(w + t) / 2, 0.0, 0.0, t, h, WALL_HEIGHT],
    ])
    return np.concatenate([walls, np.asarray(interior, dtype=np.float64).reshape(-1, 7)])


def ring_obstacles() -> np.ndarray:
    """Obstacle rows of the ring-corridor hall (see ``RING_TOUR``)."""
    return room_obstacles(RING_SIZE, RING_INTERIOR)


def room_env(obstacles: np.ndarray | None = None, *, beams: int = 360, noise_std: float = 0.01,
             lidar_range: float = 5.0, **kwargs: Any):
    """``ark/HuskyNavigate-v0`` configured for a room of ``len(obstacles)`` rows (see the module docstring)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ark/ environments)

    n = len(room_obstacles() if obstacles is None else obstacles)
    return gym.make("ark/HuskyNavigate-v0", robot={"lidar": {"beams": beams, "noise_std": noise_std,
                                                             "range": lidar_range}},
                    randomisation={"obstacles": {"count": [n, n], "clearance": 0.0, "gap": 0.0, "spread": 4.0}},
                    task={"terminate_on_success": False}, **kwargs)


def reset_room(env, obstacles: np.ndarray | None = None, start=ROOM_START, seed: int = 0):
    """Reset ``env`` into the room, base at ``start`` (x, y, yaw), goal far away (never reached)."""
    rows = room_obstacles() if obstacles is None else np.asarray(obstacles, dtype=np.float64)
    return env.reset(seed=seed, options={"scene": {"obstacles": rows, "base/pose": np.asarray(start, dtype=np.float64),
                                                   "goal": np.array([100.0, 100.0, 0.0])}})


def laser_scan(ranges: np.ndarray, env) -> LaserScan:
    """The env's lidar observation as an :class:`ark.LaserScan` (counter-clockwise from the first beam)."""
    meta = env.unwrapped.driver_info.meta
    angles = np.asarray(meta["lidar_angles"], dtype=np.float64)
    inc = float(angles[1] - angles[0]) if len(angles) > 1 else 0.0
    return LaserScan(ranges=np.asarray(ranges, dtype=np.float32), angle_min=float(angles[0]),
                     angle_max=float(angles[-1]), angle_increment=inc, range_min=0.05,
                     range_max=float(meta["lidar_range"]), frame_id="base_link")


def wheel_angles(env) -> tuple[float, float]:
    """Mean (left, right) accumulated wheel angle (rad) of the simulated Husky.

    Reads the backend's last state (``joint/position``, wheels in order front-left, front-right,
    rear-left, rear-right); a proper hook would be a ``wheel_angles`` observation of the env.
    """
    q = np.asarray(env.unwrapped._state["joint/position"], dtype=np.float64)
    return float((q[0] + q[2]) / 2.0), float((q[1] + q[3]) / 2.0)


def wheel_odometry(env, initial_pose=(0.0, 0.0, 0.0)) -> WheelOdometry:
    """A :class:`WheelOdometry` with the env's wheel radius and effective track width."""
    r = env.unwrapped.cfg.robot
    return WheelOdometry(r.wheel_radius, r.track_width * r.slip_factor, initial_pose)


def _goto(pose: np.ndarray, target: np.ndarray, max_v: float) -> np.ndarray:
    """A simple go-to-point steering law for data collection (turn toward the target, then drive)."""
    dx, dy = target[0] - pose[0], target[1] - pose[1]
    err = (math.atan2(dy, dx) - pose[2] + math.pi) % (2 * math.pi) - math.pi
    w = float(np.clip(1.5 * err, -1.0, 1.0))
    v = max_v * max(0.0, math.cos(err)) ** 4 * min(1.0, math.hypot(dx, dy) / 0.5)
    return np.array([v, w])


def drive(env, waypoints: np.ndarray, *, start=ROOM_START, obstacles: np.ndarray | None = None, seed: int = 0,
          max_speed: float = 0.5, max_steps: int = 3000, odometry_noise: float = 0.0,
          reach: float = 0.3) -> dict[str, np.ndarray]:
    """Drive the base through ``waypoints`` (steering on the ground-truth pose, as a teleoperator would)
    and log every step: ``lidar`` (N, beams), ``odometry`` (N, 3), ``ground_truth`` (N, 3),
    ``collisions`` (N,). ``odometry_noise`` scales extra Gaussian noise on each odometry increment
    (fraction of the distance and turn of the step), drawn from ``seed``."""
    from ark.slam.geometry import between, compose

    obs, _ = reset_room(env, obstacles, start, seed)
    rng = np.random.default_rng(seed)
    odo = wheel_odometry(env, (0.0, 0.0, 0.0))
    odo.update(*wheel_angles(env))
    noisy = np.zeros(3)
    prev_raw = odo.pose.copy()
    lidar, odom, gt, coll = [], [], [], []
    k = 0
    for _ in range(max_steps):
        lidar.append(obs["lidar"].copy())
        odom.append(noisy.copy())
        gt.append(np.asarray(obs["base_pose"], dtype=np.float64))
        pose = gt[-1]
        if np.hypot(*(waypoints[k] - pose[:2])) < reach:
            k += 1
            if k == len(waypoints):
                break
        obs, _, _, _, info = env.step(_goto(pose, waypoints[k], max_speed))
        coll.append(bool(info["collision"]))
        raw = odo.update(*wheel_angles(env))
        inc = between(prev_raw, raw)
        prev_raw = raw
        if odometry_noise > 0:
            dist, turn = math.hypot(inc[0], inc[1]), abs(inc[2])
            inc = inc + rng.normal(0.0, 1.0, 3) * odometry_noise * np.array([dist, dist, dist + turn])
        noisy = compose(noisy, inc)
    return {"lidar": np.array(lidar, dtype=np.float32), "odometry": np.array(odom), "ground_truth": np.array(gt),
            "collisions": np.array(coll + [False])[: len(lidar)], "reached": np.array(k >= len(waypoints))}
