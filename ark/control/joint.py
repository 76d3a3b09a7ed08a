"""Joint-space torque controllers: PD (optionally with gravity compensation) and computed torque.

    pd = JointPD(kp=[...], kd=[...], gravity=model.gravity)     # tau = Kp e + Kd de + g(q)
    ct = ComputedTorque(model, kp=100.0, kd=20.0)               # tau = M(q)(ddq_d + Kp e + Kd de) + h(q, dq)
    tau = ct.torque(q, dq, q_des, dq_des, ddq_des)

Computed torque linearises the arm so each joint's error obeys ``e'' + Kd e' + Kp e = 0``
(critically damped with ``kd = 2 sqrt(kp)``); PD is model-free apart from the optional gravity
term. Torques are clipped to ``effort_limits`` when given. Gains are scalars or per-joint vectors.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ark.control.errors import ControlError
from ark.control.kinematics import as_vector


def _gains(value, n: int, what: str) -> np.ndarray:
    g = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy() if np.ndim(value) == 0 else \
        as_vector(value, n, what)
    if np.any(g < 0):
        raise ControlError(f"{what} must be >= 0, got {g.tolist()}")
    return g


class JointPD:
    """``tau = Kp (q_des - q) + Kd (dq_des - dq) [+ g(q)]``, clipped to ``effort_limits``."""

    def __init__(self, kp, kd, n: int | None = None, gravity: Callable[[np.ndarray], np.ndarray] | None = None,
                 effort_limits=None) -> None:
        n = n if n is not None else int(np.size(kp))
        self.n = n
        self.kp, self.kd = _gains(kp, n, "kp"), _gains(kd, n, "kd")
        self.gravity = gravity
        self.effort_limits = None if effort_limits is None else as_vector(effort_limits, n, "effort limits")

    def torque(self, q, dq, q_des, dq_des=None) -> np.ndarray:
        n = self.n
        q, dq, q_des = as_vector(q, n, "q"), as_vector(dq, n, "dq"), as_vector(q_des, n, "q_des")
        dq_des = np.zeros(n) if dq_des is None else as_vector(dq_des, n, "dq_des")
        tau = self.kp * (q_des - q) + self.kd * (dq_des - dq)
        if self.gravity is not None:
            tau = tau + self.gravity(q)
        return tau if self.effort_limits is None else np.clip(tau, -self.effort_limits, self.effort_limits)


class ComputedTorque:
    """``tau = M(q) (ddq_des + Kp e + Kd de) + h(q, dq)`` with a model exposing ``mass_matrix`` and ``bias``
    (:class:`ark.control.model.ArmModel`); clipped to the model's effort limits. A desired position
    outside the joint limits raises JointLimitError."""

    def __init__(self, model, kp=100.0, kd=None, clip: bool = True) -> None:
        self.model = model
        self.n = n = int(model.n)
        self.kp = _gains(kp, n, "kp")
        self.kd = 2.0 * np.sqrt(self.kp) if kd is None else _gains(kd, n, "kd")
        self.clip = clip

    def torque(self, q, dq, q_des, dq_des=None, ddq_des=None) -> np.ndarray:
        n = self.n
        q, dq, q_des = as_vector(q, n, "q"), as_vector(dq, n, "dq"), as_vector(q_des, n, "q_des")
        dq_des = np.zeros(n) if dq_des is None else as_vector(dq_des, n, "dq_des")
        ddq_des = np.zeros(n) if ddq_des is None else as_vector(ddq_des, n, "ddq_des")
        chain = getattr(self.model, "chain", None)
        if chain is not None:
            chain.check_limits(q_des, "desired joint positions", tol=1e-6)
        a = ddq_des + self.kp * (q_des - q) + self.kd * (dq_des - dq)
        tau = self.model.mass_matrix(q) @ a + self.model.bias(q, dq)
        if self.clip:
            lim = np.asarray(self.model.effort_limits, dtype=np.float64)
            tau = np.clip(tau, -lim, lim)
        return tau
