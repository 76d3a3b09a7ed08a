"""Simulated Clearpath Husky among obstacles with a planar lidar (pybullet).

The backend takes ``twist`` commands ``[v, omega]`` (m/s, rad/s, base frame) and turns them
into wheel speeds of a skid-steer base (effective track width = track width x slip factor),
held with velocity control for ``physics_hz / control_hz`` physics substeps. The lidar casts
``beams`` level rays with ``rayTestBatch`` from ``height`` metres above the base origin.

Scene (reset) and state keys are documented in :mod:`envs.driver`.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pybullet as pb

from envs.backend import RobotBackend, Scene, State
from envs.config import NavigateEnvConfig, resolve_asset
from envs.messages import DriverInfo
from envs.sim.world import BulletWorld

LEFT_WHEELS = [2, 4]
RIGHT_WHEELS = [3, 5]
WHEELS = [2, 3, 4, 5]
CHASSIS = 0
OBSTACLE_COLOR = (0.45, 0.45, 0.5, 1.0)
BOX, CYLINDER = 0, 1
KP_V, KI_V, KP_W, KI_W = 0.5, 2.0, 0.5, 1.0  # body-rate PI gains


class _Quiet:
    """Silence pybullet's C-level stdout while loading the Husky URDF: it warns about links
    without inertia on every load, which a user can do nothing about."""

    def __enter__(self) -> None:
        try:
            self._saved = os.dup(1)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.close(null)
        except OSError:
            self._saved = None

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 1)
            os.close(self._saved)


class HuskySim(RobotBackend):
    """pybullet backend of HuskyNavigate. ``gui=True`` opens a window (when a display exists)."""

    robot = "husky"

    def __init__(self, cfg: NavigateEnvConfig, gui: bool = False) -> None:
        self.cfg = cfg
        self.substeps = cfg.control.substeps
        self.period = 1.0 / cfg.control.control_hz
        self.world = BulletWorld(cfg.control.physics_hz, gui)
        self.c = self.world.client
        lidar = cfg.robot.lidar
        if lidar.fov >= 360.0:
            self.angles = np.linspace(-math.pi, math.pi, lidar.beams, endpoint=False)
        else:
            half = math.radians(lidar.fov) / 2.0
            self.angles = np.linspace(-half, half, lidar.beams) if lidar.beams > 1 else np.zeros(1)
        self.marker_urdf = resolve_asset("goal_marker.urdf", None, "sim_assets")
        self.obstacles: list[int] = []
        self._build()
        c = self.c
        self.joint_names = [c.getJointInfo(self.robot_id, j)[1].decode() for j in WHEELS]
        self.defaults = {
            "color/floor": self.world.color_of(self.floor),
            "color/obstacle": np.asarray(OBSTACLE_COLOR),
            "mass/chassis": np.array([c.getDynamicsInfo(self.robot_id, CHASSIS)[0]]),
            "friction/wheels": np.array([c.getDynamicsInfo(self.robot_id, WHEELS[0])[1]]),
            "friction/obstacles": np.array([0.8]),
        }
        self.steps = 0
        self._color = OBSTACLE_COLOR

    # -- RobotBackend ---------------------------------------------------------------------
    def info(self) -> DriverInfo:
        lidar = self.cfg.robot.lidar
        return DriverInfo(
            robot=self.robot, control_hz=float(self.cfg.control.control_hz), joint_names=self.joint_names,
            cameras={cam.name: [cam.height, cam.width, cam.depth] for cam in self.cfg.cameras},
            state_keys=sorted(self._state()),
            meta={"lidar_beams": lidar.beams, "lidar_range": lidar.range,
                  "lidar_angles": [float(a) for a in self.angles],
                  "max_linear": self.cfg.robot.max_linear, "max_angular": self.cfg.robot.max_angular,
                  "chassis_mass": float(self.defaults["mass/chassis"][0])})

    def reset(self, scene: Scene, seed: int | None = None) -> State:
        c, w = self.c, self.world
        # A fresh world every episode: obstacles differ in number and shape, and removing bodies
        # reorders pybullet's internal object arrays (and so its contact solving), which would
        # make an episode depend on the ones before it. Rebuilding costs about 20 ms.
        self._build()
        values = {**self.defaults, **scene}
        x, y, yaw = (float(v) for v in values.get("base/pose", (0.0, 0.0, 0.0)))
        c.resetBasePositionAndOrientation(self.robot_id, [x, y, 0.0], c.getQuaternionFromEuler([0, 0, yaw]))
        c.resetBaseVelocity(self.robot_id, [0, 0, 0], [0, 0, 0])
        for j in WHEELS:
            c.resetJointState(self.robot_id, j, 0.0, 0.0)
        goal = np.asarray(values.get("goal", (0.0, 0.0, -1.0)), dtype=np.float64)
        c.resetBasePositionAndOrientation(self.marker, [float(goal[0]), float(goal[1]), 0.0], [0, 0, 0, 1])
        w.set_color(self.floor, values["color/floor"])
        self._color = tuple(float(v) for v in values["color/obstacle"])
        friction = float(values["friction/obstacles"][0])
        for row in np.asarray(values.get("obstacles", np.zeros((0, 7))), dtype=np.float64).reshape(-1, 7):
            self.obstacles.append(self._obstacle(row, friction))
        c.changeDynamics(self.robot_id, CHASSIS, mass=float(values["mass/chassis"][0]))
        for j in WHEELS:
            c.changeDynamics(self.robot_id, j, lateralFriction=float(values["friction/wheels"][0]))
        w.set_light(values)
        self._stop_wheels()
        # Let the suspension-less base settle onto the floor before the first observation.
        w.run(self.substeps)
        self.steps = 0
        return self._state()

    def step(self, command: np.ndarray) -> State:
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (2,) or not np.all(np.isfinite(command)):
            raise ValueError(f"twist command must be 2 finite numbers [v, omega], got {command.tolist()}")
        r = self.cfg.robot
        v = float(np.clip(command[0], -r.max_linear, r.max_linear))
        omega = float(np.clip(command[1], -r.max_angular, r.max_angular))
        self._track(v, omega)
        self.world.sync_real_time(self.period)
        self.steps += 1
        return self._state()

    def render(self) -> np.ndarray:
        return self.world.render_view(self.cfg.render, self.robot_id)

    def close(self) -> None:
        self.world.close()

    # -- internals ------------------------------------------------------------------------
    def _build(self) -> None:
        w, cfg = self.world, self.cfg
        w.clear()
        self.obstacles = []
        self.floor = w.load("plane.urdf")
        with _Quiet():
            self.robot_id = w.load(cfg.robot.urdf, (0.0, 0.0, 0.0))
        self.marker = w.load(self.marker_urdf, (0.0, 0.0, -1.0), useFixedBase=True, globalScaling=10.0)
        # Tyres grip less along the axle than along the rolling direction, which is what lets a
        # skid-steer base turn; isotropic friction makes it turn sluggishly.
        for j in WHEELS:
            self.c.changeDynamics(self.robot_id, j, anisotropicFriction=[1.0, cfg.robot.axle_friction_ratio, 1.0])
        for cam in cfg.cameras:
            w.add_camera(cam, self.robot_id, cfg.source)
        self._stop_wheels()

    def _track(self, v: float, omega: float) -> None:
        """Run the substeps under a body-rate controller: wheel speeds from the skid-steer model
        (feedforward) plus PI feedback on the measured forward speed and yaw rate, because a
        skid-steer base turns far less than its wheel speeds alone predict."""
        r, c = self.cfg.robot, self.c
        half_track = r.track_width * r.slip_factor / 2.0
        dt = 1.0 / self.cfg.control.physics_hz
        for _ in range(self.substeps):
            lin, ang = c.getBaseVelocity(self.robot_id)
            _, orn = c.getBasePositionAndOrientation(self.robot_id)
            yaw = c.getEulerFromQuaternion(orn)[2]
            err_v = v - (lin[0] * math.cos(yaw) + lin[1] * math.sin(yaw))
            err_w = omega - ang[2]
            self._int_v = float(np.clip(self._int_v + err_v * dt, -0.5, 0.5))
            self._int_w = float(np.clip(self._int_w + err_w * dt, -1.0, 1.0))
            v_cmd = v + KP_V * err_v + KI_V * self._int_v
            w_cmd = omega + KP_W * err_w + KI_W * self._int_w
            left = (v_cmd - w_cmd * half_track) / r.wheel_radius
            right = (v_cmd + w_cmd * half_track) / r.wheel_radius
            c.setJointMotorControlArray(self.robot_id, WHEELS, pb.VELOCITY_CONTROL,
                                        targetVelocities=[left, right, left, right], forces=[r.wheel_force] * 4)
            c.stepSimulation()

    def _stop_wheels(self) -> None:
        self._int_v = self._int_w = 0.0
        self.c.setJointMotorControlArray(self.robot_id, WHEELS, pb.VELOCITY_CONTROL, targetVelocities=[0.0] * 4,
                                         forces=[self.cfg.robot.wheel_force] * 4)

    def _obstacle(self, row: np.ndarray, friction: float) -> int:
        kind, x, y, yaw, sx, sy, h = (float(v) for v in row)
        c = self.c
        if int(kind) == CYLINDER:
            col = c.createCollisionShape(pb.GEOM_CYLINDER, radius=sx / 2.0, height=h)
            vis = c.createVisualShape(pb.GEOM_CYLINDER, radius=sx / 2.0, length=h, rgbaColor=self._color)
        else:
            half = [sx / 2.0, sy / 2.0, h / 2.0]
            col = c.createCollisionShape(pb.GEOM_BOX, halfExtents=half)
            vis = c.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=self._color)
        body = c.createMultiBody(0.0, col, vis, [x, y, h / 2.0], c.getQuaternionFromEuler([0.0, 0.0, yaw]))
        c.changeDynamics(body, -1, lateralFriction=friction)
        return body

    def lidar(self, pos, yaw: float) -> np.ndarray:
        """Ranges (m) of the level scan from the base at ``pos`` heading ``yaw``; ``range`` where nothing is hit."""
        cfg = self.cfg.robot.lidar
        origin = np.array([pos[0], pos[1], pos[2] + cfg.height])
        a = self.angles + yaw
        ends = np.stack([origin[0] + cfg.range * np.cos(a), origin[1] + cfg.range * np.sin(a),
                         np.full_like(a, origin[2])], axis=1)
        starts = np.broadcast_to(origin, ends.shape)
        hits = self.c.rayTestBatch(starts.tolist(), ends.tolist())
        return np.array([h[2] for h in hits], dtype=np.float32) * np.float32(cfg.range)

    def _state(self) -> State:
        c = self.c
        pos, orn = c.getBasePositionAndOrientation(self.robot_id)
        lin, ang = c.getBaseVelocity(self.robot_id)
        yaw = c.getEulerFromQuaternion(orn)[2]
        wheels = c.getJointStates(self.robot_id, WHEELS)
        collision = any(c.getContactPoints(self.robot_id, body) for body in self.obstacles)
        s: State = {
            "base/pose": np.array([*pos, *orn]),
            "base/velocity": np.array([*lin, *ang]),
            "joint/position": np.array([j[0] for j in wheels]),
            "joint/velocity": np.array([j[1] for j in wheels]),
            "lidar": self.lidar(pos, yaw),
            "collision": np.array([1.0 if collision else 0.0]),
            "time": np.array([self.steps / self.cfg.control.control_hz]),
        }
        s.update(self.world.camera_state())
        return s
