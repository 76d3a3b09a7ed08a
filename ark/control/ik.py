"""Damped-least-squares inverse kinematics with joint limits.

    from ark.control.ik import solve_ik
    from ark.control.kinematics import panda_chain

    chain = panda_chain()
    res = solve_ik(chain, target_pos=[0.0, 0.1, 0.2], target_quat=[1, 0, 0, 0], q0=home)
    res.q, res.position_error, res.rotation_error

Each iteration takes the step ``dq = J^T (J J^T + lambda^2 I)^-1 e`` towards the pose error
``e = [dp; w * dtheta]`` (``w`` weighs radians against metres), adds a null-space pull towards
``rest`` and clips to the joint limits; joints pinned at a limit and pushing outward are frozen
for the step so the others take over. When a start does not converge it restarts from seeded
random configurations (reproducible). A target farther than the arm's reach, or one no start
converges to within tolerance, raises :class:`~ark.control.errors.UnreachableTarget` with the
remaining error. Works with any model exposing ``fk``, ``jacobian``, ``lower``, ``upper``,
``n`` (``KinematicChain`` or ``ArmModel``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ark.control.errors import JointLimitError, ShapeError, UnreachableTarget
from ark.control.kinematics import as_vector, quat_to_matrix, rotation_error


@dataclass
class IKResult:
    """A solution: joint positions, remaining errors (m, rad) and iterations used (all starts)."""

    q: np.ndarray
    position_error: float
    rotation_error: float
    iterations: int


def _pose_error(model, q, p_t, R_t, rot_weight):
    T = model.fk(q)
    dp = p_t - T[:3, 3]
    if R_t is None:
        return dp, dp, 0.0
    dr = rotation_error(R_t, T[:3, :3])
    return np.concatenate([dp, rot_weight * dr]), dp, float(np.linalg.norm(dr))


def solve_ik(model, target_pos, target_quat=None, q0=None, *, rest=None, pos_tol: float = 1e-4,
             rot_tol: float = 1e-3, max_iterations: int = 150, restarts: int = 10, damping: float = 0.02,
             rot_weight: float = 0.5, nullspace_gain: float = 0.1, max_step: float = 0.3, seed: int = 0) -> IKResult:
    """Joint positions within limits that put the tip at ``target_pos`` (and ``target_quat``, x y z w, when
    given); see the module docstring. Raises UnreachableTarget, ShapeError (bad shapes, non-finite) or
    JointLimitError (``q0`` outside the joint limits)."""
    p_t = as_vector(target_pos, 3, "IK target position")
    R_t = None
    if target_quat is not None:
        qt = as_vector(target_quat, 4, "IK target orientation (quaternion x, y, z, w)")
        if np.linalg.norm(qt) < 1e-9:
            raise ShapeError("IK target orientation is the zero quaternion")
        R_t = quat_to_matrix(qt)
    lo, hi = np.asarray(model.lower, dtype=np.float64), np.asarray(model.upper, dtype=np.float64)
    n = int(model.n)
    mid = np.where(np.isfinite(lo) & np.isfinite(hi), (lo + hi) / 2.0, 0.0)
    if q0 is not None:
        start = as_vector(q0, n, "IK initial joint positions")
        bad = np.nonzero((start < lo - 1e-6) | (start > hi + 1e-6))[0]
        if bad.size:
            i = int(bad[0])
            name = model.names[i] if hasattr(model, "names") else f"#{i}"
            raise JointLimitError(f"IK initial joint positions: joint {name} = {start[i]:.4f} is outside its limits "
                                  f"[{lo[i]:.4f}, {hi[i]:.4f}]")
        start = np.clip(start, lo, hi)
    else:
        start = mid
    rest_q = as_vector(rest, n, "IK rest joint positions") if rest is not None else start.copy()
    chain = getattr(model, "chain", model)
    if hasattr(chain, "reach") and hasattr(chain, "frames"):
        shoulder = chain.frames(np.clip(np.zeros(n), lo, hi))[0][min(1, n - 1)][:3, 3]
        dist = float(np.linalg.norm(p_t - shoulder))
        if dist > chain.reach() + 1e-6:
            raise UnreachableTarget(f"IK target {np.round(p_t, 3).tolist()} is out of reach: {dist:.3f} m from the "
                                    f"shoulder, the arm reaches at most {chain.reach():.3f} m")
    rng = np.random.default_rng(seed)
    sample_lo, sample_hi = np.where(np.isfinite(lo), lo, -np.pi), np.where(np.isfinite(hi), hi, np.pi)
    dim = 3 if R_t is None else 6
    total = 0
    best = None
    for attempt in range(restarts + 1):
        q = start.copy() if attempt == 0 else rng.uniform(sample_lo, sample_hi)
        for _ in range(max_iterations):
            total += 1
            e, dp, rot_err = _pose_error(model, q, p_t, R_t, rot_weight)
            pos_err = float(np.linalg.norm(dp))
            if best is None or pos_err + rot_err < best.position_error + best.rotation_error:
                best = IKResult(q.copy(), pos_err, rot_err, total)
            if pos_err <= pos_tol and rot_err <= rot_tol:
                return IKResult(q, pos_err, rot_err, total)
            J = model.jacobian(q)[:dim].copy()
            if R_t is not None:
                J[3:] *= rot_weight
            # Freeze joints at a limit whose unconstrained step would push them further out.
            free = np.ones(n, dtype=bool)
            for _pass in range(2):
                Jf = J * free
                dq = Jf.T @ np.linalg.solve(Jf @ Jf.T + damping ** 2 * np.eye(dim), e)
                pinned = ((q <= lo + 1e-9) & (dq < 0)) | ((q >= hi - 1e-9) & (dq > 0))
                if not np.any(pinned & free):
                    break
                free &= ~pinned
            Jf = J * free
            pinv = Jf.T @ np.linalg.inv(Jf @ Jf.T + damping ** 2 * np.eye(dim))
            # The damped pseudo-inverse's null space is not exact: fade the rest pull out near the
            # target, or it would hold the solution a fraction of a millimetre away from it.
            fade = min(1.0, (pos_err + rot_err) / 0.02)
            dq = dq + (np.eye(n) - pinv @ Jf) @ (fade * nullspace_gain * (rest_q - q) * free)
            norm = float(np.linalg.norm(dq))
            if norm > max_step:
                dq *= max_step / norm
            q = np.clip(q + dq, lo, hi)
    assert best is not None
    what = "position" if R_t is None else "pose"
    raise UnreachableTarget(f"IK found no {what} within joint limits for target {np.round(p_t, 3).tolist()}: best "
                            f"remaining error {best.position_error * 1000:.1f} mm, {np.degrees(best.rotation_error):.1f} deg "
                            f"after {restarts + 1} starts")
