"""Identification by linear least squares on the regressor form.

The measured motor torque of joint j is ``tau = Y(q, qd, qdd) pi + b_j qd_j + fc_j sign(qd_j)``:
rigid-body dynamics plus viscous friction and damping (one coefficient ``b = fv + d``: both are
torques proportional to the joint velocity, so no data can tell them apart) plus Coulomb
friction. Not every standard parameter in ``pi`` moves the torques — some never (the first
link's inertia about axes other than its joint), some only in fixed combinations — so the
identifiable *base parameters* are ``beta = pi_I + K pi_D``: a set of independent columns
``I`` of ``Y``, found by QR with column pivoting on a random sample of regressors, and the
regression ``K`` of the dependent columns ``D`` on them.

    base = BaseParameters.of(model)                 # once per arm
    fit = identify(model, base, q, qd, qdd, tau)    # least squares (optionally weighted per joint)
    fit.predict(q, qd, qdd)                          # torques of the identified model
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import qr

from ark.errors import ArkError
from ark.sysid.model import ArmModel


class IdentificationError(ArkError):
    """The data cannot identify the parameters (too few samples, wrong shapes, rank-deficient excitation)."""


@dataclass
class BaseParameters:
    """Independent columns ``independent`` of the regressor, and ``K`` with ``beta = pi[I] + K @ pi[D]``."""

    independent: np.ndarray
    dependent: np.ndarray
    K: np.ndarray
    n_params: int

    @property
    def rank(self) -> int:
        return len(self.independent)

    @classmethod
    def of(cls, model: ArmModel, samples: int = 200, seed: int = 0, tol: float = 1e-8) -> "BaseParameters":
        """From QR with column pivoting of the regressor at random joint states."""
        rng = np.random.default_rng(seed)
        n = model.dof
        q = rng.uniform(-np.pi, np.pi, (samples, n))
        qd = rng.uniform(-2.0, 2.0, (samples, n))
        qdd = rng.uniform(-5.0, 5.0, (samples, n))
        W = model.regressor(q, qd, qdd).reshape(-1, model.n_params)
        _, R, perm = qr(W, mode="economic", pivoting=True)
        diag = np.abs(np.diag(R))
        rank = int(np.sum(diag > tol * diag[0]))
        ind, dep = np.sort(perm[:rank]), np.sort(perm[rank:])
        # K from least squares of the dependent columns on the independent ones (exact up to rounding).
        K = np.linalg.lstsq(W[:, ind], W[:, dep], rcond=None)[0]
        K[np.abs(K) < 1e-10] = 0.0
        return cls(ind, dep, K, model.n_params)

    def project(self, pi: np.ndarray) -> np.ndarray:
        """Base parameters ``beta`` of standard parameters ``pi``."""
        pi = np.asarray(pi, dtype=np.float64)
        return pi[self.independent] + self.K @ pi[self.dependent]

    def regressor(self, Y: np.ndarray) -> np.ndarray:
        """The base regressor: the independent columns of ``Y`` (``Y @ pi == Y_b @ beta``)."""
        return Y[..., self.independent]


def friction_regressor(qd: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """``(T, dof, 2 dof)``: per joint a viscous column (qd) and a Coulomb column (sign(qd))."""
    T, n = qd.shape
    F = np.zeros((T, n, 2 * n))
    idx = np.arange(n)
    F[:, idx, idx] = qd
    F[:, idx, n + idx] = np.sign(qd) if eps <= 0 else np.tanh(qd / eps)
    return F


@dataclass
class Identified:
    """An identified model: base parameters, viscous (damping + viscous friction) and Coulomb coefficients."""

    model: ArmModel
    base: BaseParameters
    beta: np.ndarray
    viscous: np.ndarray
    coulomb: np.ndarray
    residual_rms: np.ndarray  # per joint, N m
    condition: float  # of the weighted observation matrix

    def predict(self, q, qd, qdd) -> np.ndarray:
        """Motor torques ``(T, dof)`` the identified model predicts."""
        qd = np.atleast_2d(qd)
        Yb = self.base.regressor(self.model.regressor(q, qd, qdd))
        return Yb @ self.beta + self.viscous * qd + self.coulomb * np.sign(qd)


def identify(model: ArmModel, base: BaseParameters, q, qd, qdd, tau, *, weighted: bool = True,
             min_speed: float = 0.0) -> Identified:
    """Least-squares estimate from samples ``(T, dof)``; ``weighted``: a second pass weights each joint by
    the inverse of its first-pass residual std (joints with large torques do not drown the small ones).
    Samples where any joint moves slower than ``min_speed`` (rad/s) are skipped (Coulomb friction is
    ill-defined at rest)."""
    q, qd, qdd, tau = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (q, qd, qdd, tau))
    n = model.dof
    if not (q.shape == qd.shape == qdd.shape == tau.shape and q.shape[1] == n):
        raise IdentificationError(f"q, qd, qdd, tau must all be (T, {n}), got {q.shape}, {qd.shape}, {qdd.shape}, {tau.shape}")
    keep = np.all(np.abs(qd) >= min_speed, axis=1) & np.all(np.isfinite(tau), axis=1)
    q, qd, qdd, tau = q[keep], qd[keep], qdd[keep], tau[keep]
    unknowns = base.rank + 2 * n
    if len(q) * n < 2 * unknowns:
        raise IdentificationError(f"{len(q)} samples are too few for {unknowns} unknowns (need at least "
                                  f"{-(-2 * unknowns // n)})")
    A = np.concatenate([base.regressor(model.regressor(q, qd, qdd)), friction_regressor(qd)], axis=2)
    w = np.ones(n)
    for _ in range(2 if weighted else 1):
        Aw = (A * w[None, :, None]).reshape(-1, unknowns)
        yw = (tau * w[None, :]).reshape(-1)
        x, *_ = np.linalg.lstsq(Aw, yw, rcond=None)
        resid = tau - np.einsum("tjp,p->tj", A, x)
        std = np.sqrt(np.mean(resid ** 2, axis=0))
        w = 1.0 / np.maximum(std, 1e-6 * max(float(np.max(std)), 1e-12))
    s = np.linalg.svd(Aw, compute_uv=False)
    cond = float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
    if not np.isfinite(cond) or cond > 1e10:
        raise IdentificationError(f"the excitation does not identify the parameters (condition number {cond:.3g})")
    beta, fv, fc = x[:base.rank], x[base.rank:base.rank + n], x[base.rank + n:]
    return Identified(model, base, beta, fv, fc, np.sqrt(np.mean(resid ** 2, axis=0)), cond)
