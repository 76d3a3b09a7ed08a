"""Franka Panda tasks on a table: reach a point, push a cube to a goal, pick a cube and place it.

Frame: world, metres; the table top is the plane z = 0, the robot base stands at
``robot.base_position`` (default x = -0.6) and the task area is around the origin.

**Action** ``Box(-1, 1, (4,), float32)``: ``action[:3]`` moves the end-effector target by
``action[:3] * robot.max_ee_step`` metres (default 0.05 m per step, i.e. up to 1 m/s at 20 Hz)
from the current end-effector position, clipped to ``robot.workspace``; ``action[3]`` sets the
gripper opening, -1 closed to +1 fully open (``robot.max_gripper_width``, 0.08 m). The gripper
points down. With ``task.block_gripper`` the fingers stay closed and ``action[3]`` is ignored.

**Observation** ``Dict`` of float32 vectors (plus images when cameras are configured):

============== ===== ==========================================================
key            shape meaning
============== ===== ==========================================================
joint_pos      7     arm joint angles (rad)
joint_vel      7     arm joint velocities (rad/s)
gripper_width  1     distance between the fingers (m)
ee_pos         3     end-effector (between the finger tips) position
ee_quat        4     end-effector orientation, quaternion x, y, z, w
ee_vel         3     end-effector linear velocity (m/s)
goal_pos       3     goal position
object_pos     3     cube centre (push, pick-place)
object_quat    4     cube orientation (push, pick-place)
object_vel     6     cube linear and angular velocity (push, pick-place)
rgb            H,W,3 uint8 image of the first camera; ``rgb_<name>`` for others
depth          H,W   float32 metric depth (m) of the first camera, if enabled
============== ===== ==========================================================

**Reward** (``task.reward_type``): ``dense`` = -d (plus ``-reach_weight * |ee - object|`` for the
object tasks), ``sparse`` = 0 on success else -1, where d is the distance from the end effector
(reach) or the cube (push, pick-place) to the goal. **Success** (``info["is_success"]``):
d < ``task.distance_threshold`` (0.05 m). The episode terminates on success when
``task.terminate_on_success`` (default) and is truncated by the TimeLimit of the registration.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from envs.backend import RobotBackend, Scene, State
from envs.config import ArmEnvConfig
from envs.env import ArkEnv, box, f32


class PandaEnv(ArkEnv):
    """Shared machinery of the Panda tasks; see the module docstring."""

    config_model: ClassVar = ArmEnvConfig
    robot_kind: ClassVar[str] = "panda"
    has_object: ClassVar[bool] = True
    cfg: ArmEnvConfig

    @classmethod
    def sim_backend(cls, cfg: ArmEnvConfig, gui: bool = False) -> RobotBackend:
        from envs.sim.panda import PandaSim

        return PandaSim(cfg, gui=gui)

    def _check_driver(self) -> None:
        super()._check_driver()
        meta = self.driver_info.meta
        self.object_half_height = float(meta.get("object_half_height", 0.0))
        self.max_width = float(meta.get("max_gripper_width", self.cfg.robot.max_gripper_width))

    def _action_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (4,), np.float32)

    def _observation_space(self) -> spaces.Dict:
        s: dict[str, spaces.Space] = {
            "joint_pos": box(7), "joint_vel": box(7), "gripper_width": box(1), "ee_pos": box(3),
            "ee_quat": box(4, -1.0, 1.0), "ee_vel": box(3), "goal_pos": box(3),
        }
        if self.has_object:
            s.update(object_pos=box(3), object_quat=box(4, -1.0, 1.0), object_vel=box(6))
        s.update(self._camera_spaces())
        return spaces.Dict(s)

    # -- scene ------------------------------------------------------------------------------
    def _sample_scene(self) -> Scene:
        rnd = self.cfg.randomisation
        scene: Scene = {}
        if self.has_object:
            o = rnd.object
            xy = self._uniform(o.low, o.high)
            yaw = self._uniform([o.yaw[0]], [o.yaw[1]])
            scene["object/pose"] = np.concatenate([xy, yaw])
        for _ in range(100):  # rejection sampling; draws come from np_random, so still reproducible
            goal = self._uniform(rnd.goal.low, rnd.goal.high)
            if self.has_object:
                goal[2] += self.object_half_height  # goal z is the object's lift above the table
                if np.linalg.norm(goal[:2] - scene["object/pose"][:2]) >= rnd.min_goal_distance:
                    break
            else:
                break
        scene["goal"] = goal
        scene.update(self._visual_scene(rnd.visual, "color/object", "color/table"))
        if rnd.dynamics.enabled:
            d = rnd.dynamics
            scene["mass/object"] = self._uniform([d.object_mass[0]], [d.object_mass[1]])
            scene["friction/object"] = self._uniform([d.object_friction[0]], [d.object_friction[1]])
            scene["friction/fingers"] = self._uniform([d.finger_friction[0]], [d.finger_friction[1]])
        if not self.has_object:
            scene.pop("color/object", None)
        return scene

    # -- step -------------------------------------------------------------------------------
    def _command(self, action: np.ndarray, state: State) -> np.ndarray:
        robot = self.cfg.robot
        target = state["ee/pose"][:3] + action[:3] * robot.max_ee_step
        target = np.clip(target, robot.workspace.low, robot.workspace.high)
        width = 0.0 if self.cfg.task.block_gripper else (float(action[3]) + 1.0) / 2.0 * self.max_width
        return np.array([*target, width])

    def _observation(self, state: State) -> dict[str, np.ndarray]:
        q, dq, ee = state["joint/position"], state["joint/velocity"], state["ee/pose"]
        obs = {
            "joint_pos": f32(q[:7]), "joint_vel": f32(dq[:7]), "gripper_width": f32(state["gripper/width"]),
            "ee_pos": f32(ee[:3]), "ee_quat": f32(np.clip(ee[3:], -1.0, 1.0)), "ee_vel": f32(state["ee/velocity"][:3]),
            "goal_pos": f32(self._scene["goal"]),
        }
        if self.has_object:
            pose = state["object/pose"]
            obs.update(object_pos=f32(pose[:3]), object_quat=f32(np.clip(pose[3:], -1.0, 1.0)),
                       object_vel=f32(state["object/velocity"]))
        obs.update(self._camera_obs(state))
        return obs

    def _achieved(self, state: State) -> np.ndarray:
        return state["object/pose"][:3] if self.has_object else state["ee/pose"][:3]

    def _distance(self, state: State) -> float:
        return float(np.linalg.norm(self._achieved(state) - self._scene["goal"]))

    def _evaluate(self, prev: State, state: State) -> tuple[float, bool, bool, dict[str, Any]]:
        task = self.cfg.task
        d = self._distance(state)
        success = d < task.distance_threshold
        if task.reward_type == "sparse":
            reward = 0.0 if success else -1.0
        else:
            reward = -d
            if self.has_object and task.reach_weight > 0:
                reward -= task.reach_weight * float(np.linalg.norm(state["ee/pose"][:3] - state["object/pose"][:3]))
        return reward, success, success and task.terminate_on_success, {"distance": d}

    def _start_info(self, state: State) -> dict[str, Any]:
        d = self._distance(state)
        return {"is_success": d < self.cfg.task.distance_threshold, "distance": d}


class PandaReachEnv(PandaEnv):
    """Move the Panda's end effector to a goal point (``ark/PandaReach-v0``). See the module docstring."""

    config_file = "panda_reach.yaml"
    task_name = "reach"
    config_defaults = {"task": {"block_gripper": True},
                       "randomisation": {"goal": {"low": [-0.25, -0.2, 0.02], "high": [0.15, 0.2, 0.3]},
                                         "min_goal_distance": 0.0}}
    has_object = False


class PandaPushEnv(PandaEnv):
    """Push a cube across the table to a goal region (``ark/PandaPush-v0``). See the module docstring."""

    config_file = "panda_push.yaml"
    task_name = "push"
    config_defaults = {"task": {"block_gripper": True, "reach_weight": 0.5}}


class PandaPickPlaceEnv(PandaEnv):
    """Grasp a cube and place it at a goal on or above the table (``ark/PandaPickPlace-v0``).
    See the module docstring."""

    config_file = "panda_pick_place.yaml"
    task_name = "pick_place"
    config_defaults = {"task": {"reach_weight": 0.5},
                       "randomisation": {"goal": {"low": [-0.2, -0.15, 0.0], "high": [0.1, 0.15, 0.2]}}}
