"""Operational-space (task-space impedance) control of an arm's end effector.

    osc = OperationalSpaceController(model, kp_pos=300.0, kp_rot=150.0, q_null=home)
    tau = osc.torque(q, dq, target_pos, target_quat)        # apply with TORQUE_CONTROL

The end effector behaves as a critically damped spring-damper towards the target pose:
``F = Lambda(q) (Kp e - Kd v)`` with the task-space inertia ``Lambda = (J M^-1 J^T)^-1``
(Khatib 1987), ``tau = J^T F + N^T M (k_null (q_null - q) - d_null dq) + h(q, dq)``, where
``N = I - Jbar J`` is the dynamically consistent null-space projector that keeps the redundant
joint posture near ``q_null`` without disturbing the end effector. With ``target_quat=None``
only the position is controlled (3-D task). ``max_force`` bounds the spring force (N) so a far
target gives a smooth approach rather than a jolt.
"""

from __future__ import annotations

import numpy as np

from ark.control.kinematics import as_vector, quat_to_matrix, rotation_error


class OperationalSpaceController:
    """Task-space impedance controller; see the module docstring. ``model``: an :class:`ArmModel`."""

    def __init__(self, model, kp_pos: float = 300.0, kp_rot: float = 150.0, damping_ratio: float = 1.0,
                 kp_null: float = 10.0, q_null=None, max_force: float = 60.0, max_torque: float = 20.0,
                 clip: bool = True) -> None:
        self.model = model
        self.n = int(model.n)
        self.kp_pos, self.kp_rot = float(kp_pos), float(kp_rot)
        self.kd_pos = 2.0 * damping_ratio * np.sqrt(self.kp_pos)
        self.kd_rot = 2.0 * damping_ratio * np.sqrt(self.kp_rot)
        self.kp_null = float(kp_null)
        self.kd_null = 2.0 * np.sqrt(self.kp_null)
        self.q_null = None if q_null is None else as_vector(q_null, self.n, "q_null")
        self.max_force, self.max_torque = float(max_force), float(max_torque)
        self.clip = clip

    def torque(self, q, dq, target_pos, target_quat=None, target_vel=None) -> np.ndarray:
        """Joint torques driving the end effector towards ``target_pos`` (and ``target_quat``, x y z w)."""
        n = self.n
        q, dq = as_vector(q, n, "q"), as_vector(dq, n, "dq")
        p_t = as_vector(target_pos, 3, "OSC target position")
        m = self.model
        T = m.fk(q)
        J_full = m.jacobian(q)
        M = m.mass_matrix(q)
        h = m.bias(q, dq)
        v_full = J_full @ dq
        e_pos = p_t - T[:3, 3]
        v_t = np.zeros(3) if target_vel is None else as_vector(target_vel, 3, "OSC target velocity")
        f_pos = self.kp_pos * e_pos
        norm = np.linalg.norm(f_pos)
        if norm > self.max_force:
            f_pos *= self.max_force / norm
        acc = [f_pos + self.kd_pos * (v_t - v_full[:3])]
        rows = 3
        if target_quat is not None:
            R_t = quat_to_matrix(as_vector(target_quat, 4, "OSC target orientation"))
            f_rot = self.kp_rot * rotation_error(R_t, T[:3, :3])
            norm = np.linalg.norm(f_rot)
            if norm > self.max_torque:
                f_rot *= self.max_torque / norm
            acc.append(f_rot - self.kd_rot * v_full[3:])
            rows = 6
        J = J_full[:rows]
        Minv = np.linalg.inv(M)
        # pinv, not inv: Lambda's inverse is singular at kinematic singularities.
        Lam = np.linalg.pinv(J @ Minv @ J.T, rcond=1e-4)
        F = Lam @ np.concatenate(acc)
        tau = J.T @ F
        if self.q_null is not None and self.kp_null > 0:
            Jbar = Minv @ J.T @ Lam
            N = np.eye(n) - J.T @ Jbar.T
            tau += N @ (M @ (self.kp_null * (self.q_null - q) - self.kd_null * dq))
        tau += h
        if self.clip:
            lim = np.asarray(m.effort_limits, dtype=np.float64)
            tau = np.clip(tau, -lim, lim)
        return tau
