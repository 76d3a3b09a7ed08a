"""pybullet's model of an arm in its own physics client: FK, Jacobians and rigid-body dynamics.

:class:`ArmModel` loads the URDF into a private ``BulletClient`` (DIRECT, no gravity-free
tricks: gravity is -9.81 z like the simulated scenes), so querying it never disturbs a running
simulation. Joint vectors hold the arm joints on the chain to ``tip`` only; other movable joints
(the Panda's fingers) stay at ``extra_positions``.

    model = ArmModel("franka_panda/panda.urdf", tip="panda_grasptarget", base_position=(-0.6, 0, 0))
    pos, quat = model.fk_pose(q); J = model.jacobian(q)            # 6 x n, [linear; angular]
    M = model.mass_matrix(q); h = model.bias(q, dq)                # tau = M ddq + h
"""

from __future__ import annotations

import numpy as np
import pybullet as pb
from pybullet_utils.bullet_client import BulletClient

from ark.control.kinematics import KinematicChain, as_vector, quat_to_matrix


class ArmModel:
    """A robot arm's kinematics and dynamics from pybullet; see the module docstring."""

    def __init__(self, urdf: str, tip: str, base_position=(0.0, 0.0, 0.0), base_orientation=(0.0, 0.0, 0.0, 1.0),
                 extra_positions: dict[str, float] | None = None) -> None:
        self.chain = KinematicChain(urdf, tip, base_position, base_orientation)
        self.client = c = BulletClient(connection_mode=pb.DIRECT)
        c.setGravity(0, 0, -9.81)
        self.body = c.loadURDF(self.chain.urdf, list(base_position), list(base_orientation), useFixedBase=True,
                               flags=pb.URDF_USE_INERTIA_FROM_FILE)
        names = {c.getJointInfo(self.body, j)[1].decode(): j for j in range(c.getNumJoints(self.body))}
        link_names = {c.getJointInfo(self.body, j)[12].decode(): j for j in range(c.getNumJoints(self.body))}
        self.movable = [j for j in range(c.getNumJoints(self.body)) if c.getJointInfo(self.body, j)[2] != pb.JOINT_FIXED]
        self.joints = [names[n] for n in self.chain.names]          # pybullet indices of the arm joints
        self.cols = [self.movable.index(j) for j in self.joints]     # their columns among movable joints
        self.tip_link = link_names[tip]
        self.n = self.chain.n
        self.names = self.chain.names
        self.lower, self.upper = self.chain.lower, self.chain.upper
        self.velocity_limits, self.effort_limits = self.chain.velocity_limits, self.chain.effort_limits
        extra = extra_positions or {}
        self._full = np.zeros(len(self.movable))
        for j in self.movable:
            name = c.getJointInfo(self.body, j)[1].decode()
            if name in extra:
                self._full[self.movable.index(j)] = float(extra[name])
        st = c.getLinkState(self.body, self.tip_link)
        # calculateJacobian's local point is in the link's inertial frame: the link frame's origin there.
        R_inertial = quat_to_matrix(st[3])
        self._tip_local = (-(R_inertial.T @ np.asarray(st[2]))).tolist()

    def _full_vector(self, q: np.ndarray) -> list[float]:
        full = self._full.copy()
        full[self.cols] = q
        return full.tolist()

    def _set(self, q: np.ndarray) -> None:
        c = self.client
        full = self._full_vector(q)
        for j, v in zip(self.movable, full):
            c.resetJointState(self.body, j, v)

    def fk(self, q) -> np.ndarray:
        """4x4 world pose of the tip link."""
        q = as_vector(q, self.n, "joint positions")
        self._set(q)
        st = self.client.getLinkState(self.body, self.tip_link, computeForwardKinematics=1)
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(st[5])
        T[:3, 3] = st[4]
        return T

    def fk_pose(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Tip position (3,) and quaternion (x, y, z, w) as pybullet reports them."""
        q = as_vector(q, self.n, "joint positions")
        self._set(q)
        st = self.client.getLinkState(self.body, self.tip_link, computeForwardKinematics=1)
        return np.asarray(st[4]), np.asarray(st[5])

    def jacobian(self, q) -> np.ndarray:
        """6 x n geometric Jacobian (world frame) of the tip frame's origin, arm joints only."""
        q = as_vector(q, self.n, "joint positions")
        self._set(q)
        zero = [0.0] * len(self.movable)
        lin, ang = self.client.calculateJacobian(self.body, self.tip_link, self._tip_local, self._full_vector(q), zero, zero)
        return np.vstack([np.asarray(lin)[:, self.cols], np.asarray(ang)[:, self.cols]])

    def mass_matrix(self, q) -> np.ndarray:
        """n x n joint-space inertia matrix M(q) of the arm joints."""
        q = as_vector(q, self.n, "joint positions")
        M = np.asarray(self.client.calculateMassMatrix(self.body, self._full_vector(q)))
        return M[np.ix_(self.cols, self.cols)]

    def inverse_dynamics(self, q, dq, ddq) -> np.ndarray:
        """Joint torques ``M(q) ddq + C(q, dq) dq + g(q)`` of the arm joints."""
        q = as_vector(q, self.n, "joint positions")
        dq = as_vector(dq, self.n, "joint velocities")
        ddq = as_vector(ddq, self.n, "joint accelerations")
        zero = np.zeros(len(self.movable))
        v, a = zero.copy(), zero.copy()
        v[self.cols], a[self.cols] = dq, ddq
        tau = self.client.calculateInverseDynamics(self.body, self._full_vector(q), v.tolist(), a.tolist())
        return np.asarray(tau)[self.cols]

    def bias(self, q, dq) -> np.ndarray:
        """Coriolis, centrifugal and gravity torques ``h(q, dq)``."""
        return self.inverse_dynamics(q, dq, np.zeros(self.n))

    def gravity(self, q) -> np.ndarray:
        """Gravity torques ``g(q)``."""
        return self.inverse_dynamics(q, np.zeros(self.n), np.zeros(self.n))

    def close(self) -> None:
        try:
            self.client.disconnect()
        except pb.error:
            pass


def panda_model(base_position=(-0.6, 0.0, 0.0)) -> ArmModel:
    """The Panda arm of the Ark scenes (base at x = -0.6 on the table), tip between the finger tips."""
    return ArmModel("franka_panda/panda.urdf", "panda_grasptarget", base_position)


def enable_torque_control(client, body: int, joints: list[int]) -> None:
    """Switch ``joints`` of a simulated body to pure torque control: pybullet's default velocity motors
    hold every joint still with a large force, which would fight any torque controller."""
    client.setJointMotorControlArray(body, joints, pb.VELOCITY_CONTROL, forces=[0.0] * len(joints))


def apply_torques(client, body: int, joints: list[int], tau) -> None:
    """Command joint torques for the next physics step."""
    client.setJointMotorControlArray(body, joints, pb.TORQUE_CONTROL, forces=[float(t) for t in tau])
