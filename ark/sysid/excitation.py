"""Excitation trajectories: finite Fourier series per joint (Swevers et al.), inside joint limits.

    traj = FourierTrajectory.random(lower, upper, seed=0, period=10.0, harmonics=5, max_velocity=1.5)
    q, qd, qdd = traj(t)                       # (T, dof) each, analytic derivatives

``q_i(t) = q0_i + sum_k a_ik/(w k) sin(w k t) - b_ik/(w k) cos(w k t)`` with ``w = 2 pi / period``:
periodic, so a trajectory can be repeated and averaged. :meth:`FourierTrajectory.random` draws
the coefficients and scales each joint so that it stays within ``margin`` of its limits and
below ``max_velocity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FourierTrajectory:
    q0: np.ndarray  # (dof,)
    a: np.ndarray  # (dof, K)
    b: np.ndarray  # (dof, K)
    period: float

    @property
    def omega(self) -> float:
        return 2.0 * np.pi / self.period

    def __call__(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        k = np.arange(1, self.a.shape[1] + 1)
        wk = self.omega * k  # (K,)
        s, c = np.sin(t[:, None] * wk), np.cos(t[:, None] * wk)  # (T, K)
        q = self.q0 + s @ (self.a / wk).T - c @ (self.b / wk).T
        qd = c @ self.a.T + s @ self.b.T
        qdd = -(s * wk) @ self.a.T + (c * wk) @ self.b.T
        return q, qd, qdd

    @classmethod
    def random(cls, lower, upper, *, seed: int = 0, period: float = 10.0, harmonics: int = 5,
               max_velocity: float = 1.5, margin: float = 0.15) -> "FourierTrajectory":
        """Random coefficients, scaled per joint to stay inside [lower + margin, upper - margin] and below max_velocity."""
        lo, hi = np.asarray(lower, dtype=np.float64) + margin, np.asarray(upper, dtype=np.float64) - margin
        rng = np.random.default_rng(seed)
        n = len(lo)
        a = rng.uniform(-1.0, 1.0, (n, harmonics))
        b = rng.uniform(-1.0, 1.0, (n, harmonics))
        traj = cls((lo + hi) / 2.0, a, b, period)
        t = np.linspace(0.0, period, 2000, endpoint=False)
        q, qd, _ = traj(t)
        half = (hi - lo) / 2.0
        amp = np.max(np.abs(q - traj.q0), axis=0)
        vmax = np.max(np.abs(qd), axis=0)
        scale = np.minimum(half / np.maximum(amp, 1e-9), max_velocity / np.maximum(vmax, 1e-9))
        return cls(traj.q0, a * scale[:, None], b * scale[:, None], period)
