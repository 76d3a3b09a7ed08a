"""Pick-and-place on the Panda with IK, motion planning and operational-space control.

A cube lies on the table on one side of a wall; the goal is on the other side. The script

1. solves IK for the pre-grasp and pre-place poses (gripper pointing down, 12 cm above),
2. plans collision-free joint paths with RRT-Connect (the cube, once grasped, is carried as an
   attached box that must clear the wall too), shortcuts and time-parameterises them, and tracks
   them with computed-torque control,
3. descends, grasps, lifts and places with operational-space (task-space impedance) control
   along straight Cartesian lines,

all in a headless pybullet simulation at 240 Hz, and prints whether the cube ended at the goal.

    python -m ark.examples.pick_place            # --gui to watch (needs a display), --seed N
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pybullet as pb

from ark.control.ik import solve_ik
from ark.control.joint import ComputedTorque
from ark.control.model import apply_torques, enable_torque_control, panda_model
from ark.control.osc import OperationalSpaceController
from ark.errors import ArkError
from ark.planning.collision import PlanningScene
from ark.planning.rrt import RRTConnect
from ark.planning.smoothing import shortcut
from ark.planning.timing import time_parameterize

HOME = np.array([0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79])
DOWN = np.array([1.0, 0.0, 0.0, 0.0])     # gripper pointing at the table, fingers closing along y
BASE = (-0.6, 0.0, 0.0)
CUBE_HALF = 0.02
PICK = np.array([-0.1, -0.22, CUBE_HALF])
PLACE = np.array([-0.1, 0.22, CUBE_HALF])
WALL = ([0.16, 0.015, 0.08], [-0.1, 0.0, 0.08])    # half extents, centre (m): a 16 cm wall across the table
HOVER = 0.12
FINGERS = [9, 10]
PHYSICS_HZ = 240


class PickPlace:
    """The simulation and the controllers of the example (one pybullet world, headless by default)."""

    def __init__(self, seed: int = 0, gui: bool = False) -> None:
        from envs.sim.world import BulletWorld
        from ark.control.kinematics import resolve_urdf

        self.seed = seed
        self.world = BulletWorld(PHYSICS_HZ, gui)
        w = self.world
        self.c = c = w.client
        w.load("plane.urdf", (0.0, 0.0, -0.4))
        w.load(resolve_urdf("table.urdf"), useFixedBase=True)
        self.robot = w.load(resolve_urdf("franka_panda/panda.urdf"), BASE, useFixedBase=True,
                            flags=pb.URDF_USE_INERTIA_FROM_FILE)
        col = c.createCollisionShape(pb.GEOM_BOX, halfExtents=WALL[0])
        vis = c.createVisualShape(pb.GEOM_BOX, halfExtents=WALL[0], rgbaColor=[0.4, 0.4, 0.5, 1.0])
        self.wall = c.createMultiBody(0.0, col, vis, WALL[1])
        self.cube = w.load(resolve_urdf("cube.urdf"), PICK.tolist())
        self.model = panda_model(BASE)
        self.arm = self.model.joints
        for j, v in zip(self.arm, HOME):
            c.resetJointState(self.robot, j, v)
        for j in FINGERS:
            c.resetJointState(self.robot, j, 0.04)
            c.changeDynamics(self.robot, j, lateralFriction=1.5, spinningFriction=0.001)
        # The real gripper's fingers are coupled (the URDF's mimic joint, which pybullet ignores):
        # without the gear constraint a held cube slides sideways as one finger yields to the other.
        gear = c.createConstraint(self.robot, FINGERS[0], self.robot, FINGERS[1], pb.JOINT_GEAR, [1, 0, 0],
                                  [0, 0, 0], [0, 0, 0])
        c.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=100)
        enable_torque_control(c, self.robot, self.arm)
        self.width = 0.08
        self.ct = ComputedTorque(self.model, kp=400.0)
        self.osc = OperationalSpaceController(self.model, kp_pos=400.0, kp_rot=200.0, q_null=HOME, max_force=80.0)
        self.scene = PlanningScene(base_position=BASE, margin=0.015)
        self.scene.add_box(*WALL, name="wall")
        self.cube_obstacle = self.scene.add_box([CUBE_HALF] * 3, PICK, name="cube")
        self.steps = 0
        self.wall_contacts = 0  # physics steps in which the arm or the cube touched the wall
        self.log: list[str] = []

    # -- low level ------------------------------------------------------------------------
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.c.getJointStates(self.robot, self.arm)
        return np.array([x[0] for x in s]), np.array([x[1] for x in s])

    def step(self, tau: np.ndarray) -> None:
        apply_torques(self.c, self.robot, self.arm, tau)
        half = self.width / 2.0
        self.c.setJointMotorControlArray(self.robot, FINGERS, pb.POSITION_CONTROL, targetPositions=[half, half],
                                         forces=[40.0, 40.0])
        self.c.stepSimulation()
        if self.c.getContactPoints(self.robot, self.wall) or self.c.getContactPoints(self.cube, self.wall):
            self.wall_contacts += 1
        self.world.sync_real_time(1.0 / PHYSICS_HZ)
        self.steps += 1

    def ee(self) -> np.ndarray:
        return self.model.fk(self.state()[0])[:3, 3]

    def cube_position(self) -> np.ndarray:
        return np.asarray(self.c.getBasePositionAndOrientation(self.cube)[0])

    # -- skills ---------------------------------------------------------------------------
    def move_joints(self, goal: np.ndarray, what: str) -> None:
        """Plan from the current joints to ``goal``, shortcut, time-parameterise, track with computed torque."""
        q, _ = self.state()
        t0 = time.perf_counter()
        planner = RRTConnect(self.scene, seed=self.seed, max_iterations=3000)
        path = planner.plan(q, goal)
        path = shortcut(path, self.scene, iterations=80, seed=self.seed)
        plan_s = time.perf_counter() - t0
        traj = time_parameterize(path, 0.6 * self.model.velocity_limits, 3.0)
        self.log.append(f"{what}: planned {len(path)} waypoints in {plan_s:.2f} s ({planner.stats.checks} "
                        f"collision checks), moving for {traj.duration:.1f} s")
        n = int(np.ceil(traj.duration * PHYSICS_HZ))
        for k in range(n + PHYSICS_HZ // 4):  # the trajectory, then a quarter second to settle
            qd, dqd, ddqd = traj.sample(k / PHYSICS_HZ)
            q, dq = self.state()
            self.step(self.ct.torque(q, dq, qd, dqd, ddqd))

    def move_line(self, target: np.ndarray, speed: float = 0.1, settle: float = 0.3) -> None:
        """Move the end effector along a straight line to ``target`` with operational-space control."""
        start = self.ee()
        duration = max(np.linalg.norm(target - start) / speed, 0.1)
        n = int(duration * PHYSICS_HZ)
        for k in range(n + int(settle * PHYSICS_HZ)):
            s = min(1.0, k / n)
            s = 3 * s * s - 2 * s * s * s  # smooth start and stop
            q, dq = self.state()
            self.step(self.osc.torque(q, dq, start + s * (target - start), DOWN))

    def gripper(self, width: float, seconds: float = 0.5) -> None:
        self.width = width
        hold = self.ee()
        for _ in range(int(seconds * PHYSICS_HZ)):
            q, dq = self.state()
            self.step(self.osc.torque(q, dq, hold, DOWN))

    # -- the task -------------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.perf_counter()
        chain = self.model.chain
        pre_pick = solve_ik(chain, PICK + [0, 0, HOVER], DOWN, q0=HOME).q
        pre_place = solve_ik(chain, PLACE + [0, 0, HOVER], DOWN, q0=HOME).q
        self.move_joints(pre_pick, "home -> above the cube")
        self.move_line(PICK)
        self.gripper(0.0)
        self.move_line(PICK + [0, 0, HOVER])
        # Carrying the cube: it is no longer an obstacle but part of the robot, and must clear the wall.
        self.scene.client.removeBody(self.cube_obstacle)
        self.scene.obstacles.remove(self.cube_obstacle)
        self.scene.attach_box([CUBE_HALF + 0.005] * 3)
        q, _ = self.state()
        self.log.append(f"straight joint move above the cube -> above the goal collision-free: "
                        f"{self.scene.motion_valid(q, pre_place)}")
        self.move_joints(pre_place, "above the cube -> above the goal, over the wall")
        self.move_line(PLACE + [0, 0, 0.005])
        self.gripper(0.08)
        self.scene.detach()
        self.move_line(PLACE + [0, 0, HOVER])
        for _ in range(PHYSICS_HZ // 2):  # let the cube settle
            q, dq = self.state()
            self.step(self.osc.torque(q, dq, PLACE + [0, 0, HOVER], DOWN))
        error = float(np.linalg.norm(self.cube_position() - PLACE))
        return {"success": error < 0.02 and self.wall_contacts == 0, "cube_error": error,
                "wall_contacts": self.wall_contacts, "sim_seconds": self.steps / PHYSICS_HZ,
                "wall_seconds": time.perf_counter() - t0, "log": self.log}

    def close(self) -> None:
        self.scene.close()
        self.model.close()
        self.world.close()


def run(seed: int = 0, gui: bool = False) -> dict:
    """Run the example once; returns ``success``, ``cube_error`` (m), sim and wall seconds and a log."""
    task = PickPlace(seed, gui)
    try:
        return task.run()
    finally:
        task.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="planner seed (default 0)")
    parser.add_argument("--gui", action="store_true", help="open a pybullet window (needs a display)")
    args = parser.parse_args(argv)
    try:
        result = run(args.seed, args.gui)
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in result["log"]:
        print(line)
    print(f"{'success' if result['success'] else 'FAILURE'}: cube {result['cube_error'] * 100:.1f} cm from the goal, "
          f"{result['wall_contacts']} steps touching the wall, "
          f"after {result['sim_seconds']:.1f} s simulated ({result['wall_seconds']:.1f} s wall)")
    return 0 if result["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
