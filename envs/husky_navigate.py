"""Drive a Clearpath Husky to a goal among obstacles, sensing them with a planar lidar.

Frame: world, metres, on a flat floor. Each episode the base starts at a random pose, the goal
lies ``randomisation.goal_distance`` metres away in a random direction, and boxes and cylinders
are scattered around the line between them (never on the start or the goal).

**Action** ``Box([-max_linear, -max_angular], [max_linear, max_angular], float32)``, default
``[-1, -1]`` to ``[1, 1]``: forward speed v (m/s) and yaw rate omega (rad/s) set-points of the
base's velocity controller (a skid-steer base reaches them within about half a second).

**Observation** ``Dict`` of float32 vectors (plus images when cameras are configured):

========== ===== ==============================================================
key        shape meaning
========== ===== ==============================================================
base_pose  3     x, y (m) and yaw (rad, in [-pi, pi]) of the base
base_vel   3     forward and leftward speed (m/s) and yaw rate (rad/s), base frame
lidar      N     ranges (m) of ``robot.lidar.beams`` level rays, counter-clockwise
                 from straight behind (-pi) when the field of view is 360 degrees, else
                 from -fov/2 to +fov/2; ``lidar.range`` where nothing is hit
goal_pos   2     goal x, y (world)
goal_rel   2     goal x, y in the base frame (ahead, left)
rgb, depth       images of the configured cameras, as in the Panda tasks
========== ===== ==============================================================

**Reward** (``task.reward_type``): ``dense`` = decrease of the goal distance in the step (m),
minus ``collision_penalty`` while touching an obstacle, plus ``success_bonus`` on success;
``sparse`` = 0 on success, else -1. **Success**: the base within ``task.distance_threshold``
(0.5 m) of the goal. ``info`` has ``is_success``, ``distance`` and ``collision``. The episode
terminates on success (``task.terminate_on_success``) and, if ``task.terminate_on_collision``,
on contact with an obstacle.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from envs.backend import RobotBackend, Scene, State
from envs.config import NavigateEnvConfig
from envs.env import ArkEnv, box, f32


def yaw_of(quat: np.ndarray) -> float:
    x, y, z, w = (float(v) for v in quat)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class HuskyNavigateEnv(ArkEnv):
    """``ark/HuskyNavigate-v0``; see the module docstring."""

    config_model: ClassVar = NavigateEnvConfig
    config_file: ClassVar[str] = "husky_navigate.yaml"
    robot_kind: ClassVar[str] = "husky"
    task_name: ClassVar[str] = "navigate"
    config_defaults: ClassVar[dict] = {"control": {"control_hz": 10},
                                       "render": {"fov": 60, "position": [0.0, -4.5, 5.5], "target": [0.0, 0.0, 0.0],
                                                  "follow": True}}
    cfg: NavigateEnvConfig

    @classmethod
    def sim_backend(cls, cfg: NavigateEnvConfig, gui: bool = False) -> RobotBackend:
        from envs.sim.husky import HuskySim

        return HuskySim(cfg, gui=gui)

    def _action_space(self) -> spaces.Box:
        r = self.cfg.robot
        return spaces.Box(np.array([-r.max_linear, -r.max_angular], np.float32),
                          np.array([r.max_linear, r.max_angular], np.float32), dtype=np.float32)

    def _observation_space(self) -> spaces.Dict:
        lidar = self.cfg.robot.lidar
        s: dict[str, spaces.Space] = {
            "base_pose": spaces.Box(np.array([-np.inf, -np.inf, -math.pi], np.float32),
                                    np.array([np.inf, np.inf, math.pi], np.float32), dtype=np.float32),
            "base_vel": box(3),
            "lidar": box(lidar.beams, 0.0, lidar.range),
            "goal_pos": box(2),
            "goal_rel": box(2),
        }
        s.update(self._camera_spaces())
        return spaces.Dict(s)

    # -- scene ------------------------------------------------------------------------------
    def _sample_scene(self) -> Scene:
        rnd = self.cfg.randomisation
        start_xy = self._uniform(rnd.start.low, rnd.start.high)
        start_yaw = float(self._uniform([rnd.start.yaw[0]], [rnd.start.yaw[1]])[0])
        dist = float(self._uniform([rnd.goal_distance[0]], [rnd.goal_distance[1]])[0])
        bearing = float(self._uniform([-math.pi], [math.pi])[0])
        direction = np.array([math.cos(bearing), math.sin(bearing)])
        goal_xy = start_xy + dist * direction
        normal = np.array([-direction[1], direction[0]])
        o = rnd.obstacles
        count = int(self.np_random.integers(o.count[0], o.count[1] + 1))
        rows: list[list[float]] = []
        for _ in range(count):
            kind = 0.0 if self._pick(o.kinds) == "box" else 1.0
            sx = float(self._uniform([o.size[0]], [o.size[1]])[0])
            sy = float(self._uniform([o.size[0]], [o.size[1]])[0]) if kind == 0.0 else sx
            h = float(self._uniform([o.height[0]], [o.height[1]])[0])
            yaw = float(self._uniform([-math.pi], [math.pi])[0])
            radius = math.hypot(sx, sy) / 2.0
            for _try in range(30):  # rejection sampling; every draw comes from np_random
                t, lateral = self._uniform([0.0, -o.spread], [1.0, o.spread])
                centre = start_xy + t * dist * direction + lateral * normal
                ok = (np.linalg.norm(centre - start_xy) >= o.clearance + radius
                      and np.linalg.norm(centre - goal_xy) >= o.clearance + radius
                      and all(math.hypot(centre[0] - r[1], centre[1] - r[2]) >= radius + math.hypot(r[4], r[5]) / 2 + o.gap
                              for r in rows))
                if ok:
                    rows.append([kind, float(centre[0]), float(centre[1]), yaw, sx, sy, h])
                    break
        scene: Scene = {
            "base/pose": np.array([start_xy[0], start_xy[1], start_yaw]),
            "goal": np.array([goal_xy[0], goal_xy[1], 0.0]),
            "obstacles": np.asarray(rows, dtype=np.float64).reshape(-1, 7),
        }
        scene.update(self._visual_scene(rnd.visual, "color/obstacle", "color/floor"))
        if rnd.dynamics.enabled:
            d = rnd.dynamics
            mass = float(self.driver_info.meta.get("chassis_mass", 33.455))
            scene["mass/chassis"] = mass * self._uniform([d.mass_scale[0]], [d.mass_scale[1]])
            scene["friction/wheels"] = self._uniform([d.wheel_friction[0]], [d.wheel_friction[1]])
            scene["friction/obstacles"] = self._uniform([d.obstacle_friction[0]], [d.obstacle_friction[1]])
        return scene

    # -- step -------------------------------------------------------------------------------
    def _command(self, action: np.ndarray, state: State) -> np.ndarray:
        return np.array([float(action[0]), float(action[1])])

    def _pose(self, state: State) -> tuple[float, float, float]:
        p = state["base/pose"]
        return float(p[0]), float(p[1]), yaw_of(p[3:7])

    def _distance(self, state: State) -> float:
        x, y, _ = self._pose(state)
        g = self._scene["goal"]
        return math.hypot(float(g[0]) - x, float(g[1]) - y)

    def _observation(self, state: State) -> dict[str, np.ndarray]:
        x, y, yaw = self._pose(state)
        c, s = math.cos(yaw), math.sin(yaw)
        vel = state["base/velocity"]
        g = self._scene["goal"]
        dx, dy = float(g[0]) - x, float(g[1]) - y
        lidar = np.asarray(state["lidar"], dtype=np.float32)
        cfg = self.cfg.robot.lidar
        if cfg.noise_std > 0:
            # A beam with no return reads exactly the range; noise on it would draw a ring of phantom
            # hits just inside max range that moves with the robot (and misleads scan matching).
            noisy = np.clip(lidar + self.np_random.normal(0.0, cfg.noise_std, lidar.shape), 0.0, cfg.range)
            lidar = np.where(lidar >= cfg.range, lidar, noisy)
        obs = {
            "base_pose": f32(x, y, yaw),
            "base_vel": f32(c * vel[0] + s * vel[1], -s * vel[0] + c * vel[1], vel[5]),
            "lidar": lidar.astype(np.float32),
            "goal_pos": f32(g[:2]),
            "goal_rel": f32(c * dx + s * dy, -s * dx + c * dy),
        }
        obs.update(self._camera_obs(state))
        return obs

    def _evaluate(self, prev: State, state: State) -> tuple[float, bool, bool, dict[str, Any]]:
        task = self.cfg.task
        d = self._distance(state)
        success = d < task.distance_threshold
        collision = bool(state["collision"][0] > 0.5)
        if task.reward_type == "sparse":
            reward = 0.0 if success else -1.0
        else:
            reward = (self._distance(prev) - d) - task.collision_penalty * collision + task.success_bonus * success
        terminated = (success and task.terminate_on_success) or (collision and task.terminate_on_collision)
        return reward, success, terminated, {"distance": d, "collision": collision}

    def _start_info(self, state: State) -> dict[str, Any]:
        d = self._distance(state)
        return {"is_success": d < self.cfg.task.distance_threshold, "distance": d,
                "collision": bool(state["collision"][0] > 0.5)}
