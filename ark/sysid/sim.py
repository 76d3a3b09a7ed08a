"""A torque-controlled Panda in pybullet with joint friction and damping whose true values are known.

    sim = PandaTorqueSim(viscous=[...], coulomb=[...], damping=[...])
    data = sim.run(traj, duration=20.0, model=nominal)     # computed-torque tracking, logs q, qd, qdd, tau
    sim.perturb(seed=1, mass_scale=0.3)                    # scale masses/inertias, redraw friction
    sim.true_parameters()                                  # standard inertial parameters, friction

The arm (7 revolute joints of ``franka_panda/panda.urdf`` from pybullet_data, fixed base,
inertia from the file) runs in its own pybullet client with the default velocity motors
switched off, so only the commanded torque, gravity, the joint *damping* (pybullet's own
``jointDamping``, a viscous torque ``-d qd``) and the joint *friction* (applied with the command:
viscous ``-fv qd`` and Coulomb ``-fc sign(qd)``) act. Link velocity damping, which pybullet
adds by default and which is not a joint-space effect, is set to zero. The fingers are held
closed by their own position motors and move rigidly with the hand.

Logged ``tau`` is the commanded motor torque (what a real robot's current sensing gives);
``qdd`` is the finite difference of consecutive velocities, which is exactly the
acceleration the semi-implicit integrator applied during the step.
"""

from __future__ import annotations

import numpy as np
import pybullet as pb
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from ark.sysid.model import ArmModel, parameters_from_pybullet

ARM = list(range(7))
FINGERS = [9, 10]
DEFAULT_VISCOUS = np.array([0.3, 0.3, 0.25, 0.25, 0.1, 0.1, 0.05])
DEFAULT_COULOMB = np.array([0.8, 0.8, 0.6, 0.6, 0.3, 0.3, 0.2])
DEFAULT_DAMPING = np.array([0.2, 0.2, 0.15, 0.15, 0.05, 0.05, 0.05])


class PandaTorqueSim:
    """See the module docstring. ``physics_hz`` is also the torque update and logging rate."""

    def __init__(self, viscous=DEFAULT_VISCOUS, coulomb=DEFAULT_COULOMB, damping=DEFAULT_DAMPING,
                 physics_hz: int = 240, gravity: float = -9.81) -> None:
        self.c = BulletClient(connection_mode=pb.DIRECT)
        self.c.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.c.setGravity(0.0, 0.0, gravity)
        self.c.setTimeStep(1.0 / physics_hz)
        self.dt = 1.0 / physics_hz
        self.robot = self.c.loadURDF("franka_panda/panda.urdf", useFixedBase=True, flags=pb.URDF_USE_INERTIA_FROM_FILE)
        for link in range(-1, self.c.getNumJoints(self.robot)):
            self.c.changeDynamics(self.robot, link, linearDamping=0.0, angularDamping=0.0)
        info = [self.c.getJointInfo(self.robot, j) for j in ARM]
        self.lower = np.array([i[8] for i in info])
        self.upper = np.array([i[9] for i in info])
        self.effort = np.array([i[10] for i in info])
        self.model = ArmModel.from_pybullet(self.c, self.robot, ARM, gravity=(0.0, 0.0, gravity))
        self.viscous = np.asarray(viscous, dtype=np.float64).copy()
        self.coulomb = np.asarray(coulomb, dtype=np.float64).copy()
        self.set_damping(damping)
        self.c.setJointMotorControlArray(self.robot, ARM, pb.VELOCITY_CONTROL, forces=[0.0] * len(ARM))
        self.c.setJointMotorControlArray(self.robot, FINGERS, pb.POSITION_CONTROL, targetPositions=[0.0, 0.0],
                                         forces=[200.0, 200.0])

    def set_damping(self, damping) -> None:
        self.damping = np.asarray(damping, dtype=np.float64).copy()
        for j, d in zip(ARM, self.damping):
            self.c.changeDynamics(self.robot, j, jointDamping=float(d))

    def true_parameters(self) -> dict[str, np.ndarray]:
        """``inertial`` (70 standard parameters), ``viscous``, ``coulomb``, ``damping`` (7 each)."""
        return {"inertial": parameters_from_pybullet(self.c, self.robot, ARM), "viscous": self.viscous.copy(),
                "coulomb": self.coulomb.copy(), "damping": self.damping.copy()}

    def perturb(self, seed: int, mass_scale: float = 0.3, friction_scale: float = 0.5) -> None:
        """Scale every link's mass and inertia and every friction/damping coefficient by factors drawn
        uniformly from ``1 ± scale`` (the centre of mass cannot be moved in pybullet at run time)."""
        rng = np.random.default_rng(seed)
        for link in range(self.c.getNumJoints(self.robot)):
            info = self.c.getDynamicsInfo(self.robot, link)
            f = rng.uniform(1.0 - mass_scale, 1.0 + mass_scale)
            g = rng.uniform(1.0 - mass_scale, 1.0 + mass_scale, 3)
            self.c.changeDynamics(self.robot, link, mass=info[0] * f,
                                  localInertiaDiagonal=[float(v) for v in np.asarray(info[2]) * g])
        n = len(ARM)
        self.viscous = self.viscous * rng.uniform(1 - friction_scale, 1 + friction_scale, n)
        self.coulomb = self.coulomb * rng.uniform(1 - friction_scale, 1 + friction_scale, n)
        self.set_damping(self.damping * rng.uniform(1 - friction_scale, 1 + friction_scale, n))

    def reset(self, q, qd=None) -> None:
        qd = np.zeros(len(ARM)) if qd is None else qd
        for j, a, v in zip(ARM, q, qd):
            self.c.resetJointState(self.robot, j, float(a), float(v))
        for j in FINGERS:
            self.c.resetJointState(self.robot, j, 0.0, 0.0)

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        st = self.c.getJointStates(self.robot, ARM)
        return np.array([s[0] for s in st]), np.array([s[1] for s in st])

    def run(self, trajectory, duration: float, feedforward, kp=None, kd=None, torque_noise: float = 0.0,
            seed: int = 0) -> dict[str, np.ndarray]:
        """Track ``trajectory`` (callable t -> q, qd, qdd) for ``duration`` s with
        ``tau = feedforward(q_ref, qd_ref, qdd_ref) + kp (q_ref - q) + kd (qd_ref - qd)`` (clipped to the
        joint effort limits) and log ``t, q, qd, qdd, tau, q_ref`` (T, 7). ``torque_noise``: std (N m)
        of Gaussian noise added to the *logged* torque, as a current sensor would."""
        kp = np.array([400.0, 400.0, 300.0, 300.0, 100.0, 60.0, 30.0]) if kp is None else np.asarray(kp)
        kd = np.array([40.0, 40.0, 30.0, 30.0, 10.0, 6.0, 3.0]) if kd is None else np.asarray(kd)
        steps = int(round(duration / self.dt))
        t = np.arange(steps + 1) * self.dt
        q_ref, qd_ref, qdd_ref = trajectory(t)
        ff = np.asarray(feedforward(q_ref, qd_ref, qdd_ref), dtype=np.float64)
        self.reset(q_ref[0], qd_ref[0])
        rng = np.random.default_rng(seed)
        Q, QD, TAU = np.zeros((steps + 1, 7)), np.zeros((steps + 1, 7)), np.zeros((steps, 7))
        c, robot = self.c, self.robot
        for k in range(steps + 1):
            q, qd = self.state()
            Q[k], QD[k] = q, qd
            if k == steps:
                break
            tau = np.clip(ff[k] + kp * (q_ref[k] - q) + kd * (qd_ref[k] - qd), -self.effort, self.effort)
            TAU[k] = tau
            applied = tau - self.viscous * qd - self.coulomb * np.sign(qd)
            c.setJointMotorControlArray(robot, ARM, pb.TORQUE_CONTROL, forces=[float(v) for v in applied])
            c.stepSimulation()
        QDD = (QD[1:] - QD[:-1]) / self.dt
        noisy = TAU + rng.normal(0.0, torque_noise, TAU.shape) if torque_noise > 0 else TAU
        return {"t": t[:-1], "q": Q[:-1], "qd": QD[:-1], "qdd": QDD, "tau": noisy, "q_ref": q_ref[:-1],
                "tracking_rmse": np.sqrt(np.mean((Q - q_ref) ** 2, axis=0))}

    def close(self) -> None:
        try:
            self.c.disconnect()
        except pb.error:
            pass
