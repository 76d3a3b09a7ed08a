"""Simulated Franka Panda on a table with an optional object and a goal marker (pybullet).

The backend takes ``ee_target`` commands — a Cartesian end-effector target ``[x, y, z]`` and a
gripper width, metres, world frame — turns the target into joint targets with pybullet's
null-space inverse kinematics (gripper pointing down), and holds them with position control
for ``physics_hz / control_hz`` physics substeps.

Scene (reset) and state keys are documented in :mod:`envs.driver`.
"""

from __future__ import annotations

import numpy as np
import pybullet as pb

from envs.backend import RobotBackend, Scene, State
from envs.config import ArmEnvConfig
from envs.messages import DriverInfo
from envs.sim.world import BulletWorld

ARM_JOINTS = list(range(7))
FINGER_JOINTS = [9, 10]
MOVABLE = ARM_JOINTS + FINGER_JOINTS
EE_LINK = 11  # panda_grasptarget: between the finger tips
DOWN = (1.0, 0.0, 0.0, 0.0)  # gripper pointing at the table


class PandaSim(RobotBackend):
    """pybullet backend of the Panda tasks. ``gui=True`` opens a window (when a display exists)."""

    robot = "panda"

    def __init__(self, cfg: ArmEnvConfig, gui: bool = False) -> None:
        self.cfg = cfg
        self.substeps = cfg.control.substeps
        self.period = 1.0 / cfg.control.control_hz
        self.world = w = BulletWorld(cfg.control.physics_hz, gui)
        c = self.c = w.client
        self.floor = w.load("plane.urdf", (0.0, 0.0, -0.4))
        self.table = w.load(cfg.resolve("table.urdf", "table"), useFixedBase=True)
        self.robot_id = w.load(cfg.robot.urdf, cfg.robot.base_position, useFixedBase=True,
                               flags=pb.URDF_USE_INERTIA_FROM_FILE)
        self.has_object = cfg.task.name != "reach"
        self.object = w.load(cfg.task.object.urdf, (0.0, 0.0, 0.5)) if self.has_object else None
        self.marker = w.load(cfg.resolve("goal_marker.urdf", "goal marker"), (0.0, 0.0, -1.0), useFixedBase=True)
        self.joint_names = [c.getJointInfo(self.robot_id, j)[1].decode() for j in MOVABLE]
        info = [c.getJointInfo(self.robot_id, j) for j in MOVABLE]
        self.lower = [i[8] for i in info]
        self.upper = [i[9] for i in info]
        self.ranges = [u - l for l, u in zip(self.lower, self.upper)]
        self.forces = [i[10] for i in info[:7]]
        self.rest = list(cfg.robot.home_joints) + [0.0, 0.0]
        # Position gain 0.1 tracks a 5 cm-per-step target without overshoot (higher gains build up
        # joint speed and overshoot by several centimetres); the fingers grip with a bounded force.
        self.gains = [0.1] * 7
        for j, q in zip(MOVABLE, self.rest):
            c.resetJointState(self.robot_id, j, q)
        # Finger-pad friction and a hard position constraint keep grasped objects from sliding.
        for j in FINGER_JOINTS:
            c.changeDynamics(self.robot_id, j, lateralFriction=cfg.robot.finger_friction, spinningFriction=0.001)
        self._hold(self.rest[:7], 0.0)
        self.defaults = {
            "color/table": w.color_of(self.table),
            "friction/fingers": np.array([cfg.robot.finger_friction]),
        }
        self.object_half_height = 0.0
        if self.has_object:
            lo, hi = c.getAABB(self.object)
            self.object_half_height = (hi[2] - lo[2]) / 2.0
            dyn = c.getDynamicsInfo(self.object, -1)
            self.defaults.update({"color/object": np.asarray(cfg.task.object.color, dtype=np.float64),
                                  "mass/object": np.array([dyn[0]]), "friction/object": np.array([dyn[1]])})
        for cam in cfg.cameras:
            w.add_camera(cam, self.robot_id, cfg.source)
        c.stepSimulation()
        self._saved = c.saveState()
        self.steps = 0

    # -- RobotBackend ---------------------------------------------------------------------
    def info(self) -> DriverInfo:
        return DriverInfo(
            robot=self.robot, control_hz=float(self.cfg.control.control_hz), joint_names=self.joint_names,
            cameras={cam.name: [cam.height, cam.width, cam.depth] for cam in self.cfg.cameras},
            state_keys=sorted(self._state()),
            meta={"object_half_height": self.object_half_height,
                  "max_gripper_width": self.cfg.robot.max_gripper_width,
                  "workspace_low": list(self.cfg.robot.workspace.low),
                  "workspace_high": list(self.cfg.robot.workspace.high)})

    def reset(self, scene: Scene, seed: int | None = None) -> State:
        c, w = self.c, self.world
        # Back to the state saved after loading: the same physics state (contacts included) every
        # episode, so an episode depends on its scene and actions only, never on earlier episodes.
        c.restoreState(self._saved)
        self._hold(self.rest[:7], 0.0)
        values = {**self.defaults, **scene}
        goal = np.asarray(values.get("goal", (0.0, 0.0, -1.0)), dtype=np.float64)
        c.resetBasePositionAndOrientation(self.marker, goal.tolist(), [0, 0, 0, 1])
        w.set_color(self.table, values["color/table"])
        for j in FINGER_JOINTS:
            c.changeDynamics(self.robot_id, j, lateralFriction=float(values["friction/fingers"][0]))
        if self.has_object:
            x, y, yaw = (float(v) for v in values.get("object/pose", (0.0, 0.0, 0.0)))
            c.resetBasePositionAndOrientation(self.object, [x, y, self.object_half_height],
                                              c.getQuaternionFromEuler([0.0, 0.0, yaw]))
            c.resetBaseVelocity(self.object, [0, 0, 0], [0, 0, 0])
            w.set_color(self.object, values["color/object"])
            c.changeDynamics(self.object, -1, mass=float(values["mass/object"][0]),
                             lateralFriction=float(values["friction/object"][0]))
        w.set_light(values)
        self.steps = 0
        return self._state()

    def step(self, command: np.ndarray) -> State:
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (4,) or not np.all(np.isfinite(command)):
            raise ValueError(f"ee_target command must be 4 finite numbers [x, y, z, width], got {command.tolist()}")
        ws = self.cfg.robot.workspace
        target = np.clip(command[:3], ws.low, ws.high)
        width = float(np.clip(command[3], 0.0, self.cfg.robot.max_gripper_width))
        q = self.c.calculateInverseKinematics(
            self.robot_id, EE_LINK, target.tolist(), DOWN, lowerLimits=self.lower, upperLimits=self.upper,
            jointRanges=self.ranges, restPoses=self.rest, maxNumIterations=self.cfg.robot.ik_iterations,
            residualThreshold=1e-5)
        self._hold(list(q[:7]), width)
        self.world.run(self.substeps)
        self.world.sync_real_time(self.period)
        self.steps += 1
        return self._state()

    def render(self) -> np.ndarray:
        return self.world.render_view(self.cfg.render, self.robot_id)

    def close(self) -> None:
        self.world.close()

    # -- internals ------------------------------------------------------------------------
    def _hold(self, arm: list[float], width: float) -> None:
        c = self.c
        c.setJointMotorControlArray(self.robot_id, ARM_JOINTS, pb.POSITION_CONTROL, targetPositions=arm,
                                    forces=self.forces, positionGains=self.gains)
        half = width / 2.0
        c.setJointMotorControlArray(self.robot_id, FINGER_JOINTS, pb.POSITION_CONTROL, targetPositions=[half, half],
                                    forces=[self.cfg.robot.gripper_force] * 2)

    def _state(self) -> State:
        c = self.c
        joints = c.getJointStates(self.robot_id, MOVABLE)
        ee = c.getLinkState(self.robot_id, EE_LINK, computeLinkVelocity=1, computeForwardKinematics=1)
        s: State = {
            "joint/position": np.array([j[0] for j in joints]),
            "joint/velocity": np.array([j[1] for j in joints]),
            "ee/pose": np.array([*ee[4], *ee[5]]),
            "ee/velocity": np.array([*ee[6], *ee[7]]),
            "gripper/width": np.array([joints[7][0] + joints[8][0]]),
            "time": np.array([self.steps / self.cfg.control.control_hz]),
        }
        if self.has_object:
            pos, orn = c.getBasePositionAndOrientation(self.object)
            lin, ang = c.getBaseVelocity(self.object)
            s["object/pose"] = np.array([*pos, *orn])
            s["object/velocity"] = np.array([*lin, *ang])
        s.update(self.world.camera_state())
        return s
