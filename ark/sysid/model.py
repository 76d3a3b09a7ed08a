"""Rigid-body dynamics of a serial arm in regressor form: ``tau = Y(q, qd, qdd) @ pi``.

``pi`` stacks ten *standard inertial parameters* per link, expressed in the link's own frame
(the URDF link frame, whose origin is on the joint axis)::

    [Ixx, Ixy, Ixz, Iyy, Iyz, Izz, m*cx, m*cy, m*cz, m]

with the inertia tensor taken about the link frame's origin (not the centre of mass). The
torques are linear in these, so :meth:`ArmModel.regressor` computes ``Y`` numerically with a
recursive Newton–Euler pass per sample: forward, the velocity, acceleration (gravity enters
as an upward base acceleration) of every link; backward, each link's wrench written as a
6 x 10 matrix times its parameters, propagated to the joints it hangs from. No symbolic
algebra, exact to floating point. :func:`parameters_from_pybullet` reads the simulator's
ground truth in the same convention, lumping rigidly attached child links (hand, fingers)
into the last moving link.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARAMS_PER_LINK = 10
PARAM_NAMES = ("Ixx", "Ixy", "Ixz", "Iyy", "Iyz", "Izz", "mx", "my", "mz", "m")


def skew(v: np.ndarray) -> np.ndarray:
    """Batched cross-product matrices: ``(..., 3) -> (..., 3, 3)``."""
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                     np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _inertia_map(v: np.ndarray) -> np.ndarray:
    """``L(v)`` with ``I @ v = L(v) @ [Ixx, Ixy, Ixz, Iyy, Iyz, Izz]``: ``(..., 3) -> (..., 3, 6)``."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = np.zeros_like(x)
    return np.stack([np.stack([x, y, z, o, o, o], -1),
                     np.stack([o, x, o, y, z, o], -1),
                     np.stack([o, o, x, o, y, z], -1)], -2)


def rotation_about(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation matrices ``(T, 3, 3)`` about a unit ``axis`` by ``angle`` ``(T,)``."""
    K = skew(np.asarray(axis, dtype=np.float64))
    a = np.asarray(angle, dtype=np.float64)[:, None, None]
    return np.eye(3) + np.sin(a) * K + (1.0 - np.cos(a)) * (K @ K)


@dataclass
class Joint:
    """A revolute joint: the child frame at q = 0 in the parent frame (``rotation``, ``offset``) and its axis
    in the child frame."""

    rotation: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)
    axis: np.ndarray  # (3,), unit


class ArmModel:
    """A fixed-base serial chain of revolute joints; see the module docstring."""

    def __init__(self, joints: list[Joint], gravity=(0.0, 0.0, -9.81), names: list[str] | None = None) -> None:
        self.joints = joints
        self.gravity = np.asarray(gravity, dtype=np.float64)
        self.names = names or [f"joint{i + 1}" for i in range(len(joints))]

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def n_params(self) -> int:
        return PARAMS_PER_LINK * self.dof

    def parameter_names(self) -> list[str]:
        return [f"{n}.{p}" for n in self.names for p in PARAM_NAMES]

    @classmethod
    def from_pybullet(cls, client, body: int, joints: list[int], gravity=(0.0, 0.0, -9.81)) -> "ArmModel":
        """The chain of ``joints`` (revolute, each the child of the previous) of a pybullet body.

        Frames come from the link states at q = 0 (the joints are reset there and restored);
        ``gravity`` is the world's (pybullet cannot be asked for it)."""
        saved = [client.getJointState(body, j)[:2] for j in joints]
        for j in joints:
            client.resetJointState(body, j, 0.0, 0.0)
        frames = []
        for j in joints:
            st = client.getLinkState(body, j, computeForwardKinematics=1)
            frames.append((np.asarray(st[4]), np.array(client.getMatrixFromQuaternion(st[5])).reshape(3, 3)))
        base_pos, base_orn = client.getBasePositionAndOrientation(body)
        base_info = client.getDynamicsInfo(body, -1)  # the base pose is its inertial frame: undo that offset
        inv_pos, inv_orn = client.invertTransform(base_info[3], base_info[4])
        pos, orn = client.multiplyTransforms(base_pos, base_orn, inv_pos, inv_orn)
        parent = (np.asarray(pos), np.array(client.getMatrixFromQuaternion(orn)).reshape(3, 3))
        out = []
        for j, (p, R) in zip(joints, frames):
            info = client.getJointInfo(body, j)
            if info[2] != 0:
                raise ValueError(f"joint {info[1].decode()} is not revolute (type {info[2]})")
            pp, PR = parent
            out.append(Joint(PR.T @ R, PR.T @ (p - pp), np.asarray(info[13], dtype=np.float64)))
            parent = (p, R)
        for j, (q, qd) in zip(joints, saved):
            client.resetJointState(body, j, q, qd)
        base_R = np.array(client.getMatrixFromQuaternion(orn)).reshape(3, 3)
        names = [client.getJointInfo(body, j)[1].decode() for j in joints]
        return cls(out, gravity=base_R.T @ np.asarray(gravity, dtype=np.float64), names=names)

    def regressor(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """``Y`` of shape ``(T, dof, 10 * dof)`` for samples ``(T, dof)`` of q, qd, qdd."""
        q, qd, qdd = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (q, qd, qdd))
        T, n = q.shape
        if n != self.dof or qd.shape != q.shape or qdd.shape != q.shape:
            raise ValueError(f"q, qd, qdd must all be (T, {self.dof}), got {q.shape}, {qd.shape}, {qdd.shape}")
        w = np.zeros((T, 3))
        dw = np.zeros((T, 3))
        a = np.tile(-self.gravity, (T, 1))  # base "acceleration" that produces gravity
        rots, offs, A = [], [], []
        for i, jt in enumerate(self.joints):
            R = jt.rotation[None] @ rotation_about(jt.axis, q[:, i])  # parent -> child orientation
            Rt = np.transpose(R, (0, 2, 1))
            p = jt.offset
            # Acceleration of the child origin, in the parent frame, then rotated into the child frame.
            a_parent = a + np.cross(dw, p) + np.cross(w, np.cross(w, p))
            z = jt.axis
            w_in = np.einsum("tij,tj->ti", Rt, w)
            w = w_in + qd[:, i:i + 1] * z
            dw = np.einsum("tij,tj->ti", Rt, dw) + qdd[:, i:i + 1] * z + np.cross(w_in, qd[:, i:i + 1] * z)
            a = np.einsum("tij,tj->ti", Rt, a_parent)
            # Wrench at the link origin (force f, moment n) = A_i @ pi_i.
            Ai = np.zeros((T, 6, PARAMS_PER_LINK))
            Ai[:, 0:3, 6:9] = skew(dw) + skew(w) @ skew(w)  # f from m*c
            Ai[:, 0:3, 9] = a  # f from m
            Ai[:, 3:6, 0:6] = _inertia_map(dw) + skew(w) @ _inertia_map(w)  # n from I_o
            Ai[:, 3:6, 6:9] = -skew(a)  # n from m*c: (m c) x a
            rots.append(R)
            offs.append(p)
            A.append(Ai)
        Y = np.zeros((T, n, self.n_params))
        # Backward: F_j = sum over links k >= j of X_jk^T-style transport of A_k; tau_j = z_j . n_j.
        for k in range(n):
            f = A[k][:, 0:3, :]
            m = A[k][:, 3:6, :]
            cols = slice(PARAMS_PER_LINK * k, PARAMS_PER_LINK * (k + 1))
            for j in range(k, -1, -1):
                Y[:, j, cols] = np.einsum("i,tip->tp", self.joints[j].axis, m)
                if j == 0:
                    break
                # Express the wrench in frame j-1 (child j's origin sits at offs[j] there).
                R = rots[j]
                f_p = np.einsum("tij,tjp->tip", R, f)
                m_p = np.einsum("tij,tjp->tip", R, m) + np.einsum("ij,tjp->tip", skew(offs[j]), f_p)
                f, m = f_p, m_p
        return Y

    def inverse_dynamics(self, q, qd, qdd, params: np.ndarray) -> np.ndarray:
        """Joint torques ``(T, dof)`` of the rigid body (no friction) for standard parameters ``params``."""
        return self.regressor(q, qd, qdd) @ np.asarray(params, dtype=np.float64)


def link_parameters(mass: float, com: np.ndarray, inertia_com: np.ndarray) -> np.ndarray:
    """The 10 standard parameters of a body: ``inertia_com`` (3x3, about the COM, link axes), ``com`` in the link frame."""
    c = np.asarray(com, dtype=np.float64)
    I_o = np.asarray(inertia_com, dtype=np.float64) + mass * (c @ c * np.eye(3) - np.outer(c, c))
    return np.array([I_o[0, 0], I_o[0, 1], I_o[0, 2], I_o[1, 1], I_o[1, 2], I_o[2, 2], *(mass * c), mass])


def _body_in_frame(client, body: int, link: int, frame_pos, frame_R) -> tuple[float, np.ndarray, np.ndarray]:
    """Mass, COM and COM inertia (frame axes) of pybullet ``link`` in a world frame (frame_pos, frame_R)."""
    info = client.getDynamicsInfo(body, link)
    mass = float(info[0])
    if link == -1:
        pos, orn = client.getBasePositionAndOrientation(body)
    else:
        st = client.getLinkState(body, link, computeForwardKinematics=1)
        pos, orn = st[0], st[1]  # the inertial (COM) frame in the world
    Rc = np.array(client.getMatrixFromQuaternion(orn)).reshape(3, 3)
    R = frame_R.T @ Rc
    inertia = R @ np.diag(info[2]) @ R.T
    return mass, frame_R.T @ (np.asarray(pos) - frame_pos), inertia


def parameters_from_pybullet(client, body: int, joints: list[int]) -> np.ndarray:
    """The simulator's standard parameters ``(10 * len(joints),)`` for the chain of ``joints``.

    Links attached to the last joint's link by fixed or other joints not in ``joints`` (a
    hand, fingers at their current opening) are lumped into it, since they move rigidly with it.
    """
    n_links = client.getNumJoints(body)
    parent_of = {j: client.getJointInfo(body, j)[16] for j in range(n_links)}
    owner = {}
    for link in range(n_links):
        k = link
        while k not in joints and k != -1:
            k = parent_of[k]
        if k != -1:
            owner[link] = joints.index(k)
    out = np.zeros(PARAMS_PER_LINK * len(joints))
    for i, j in enumerate(joints):
        st = client.getLinkState(body, j, computeForwardKinematics=1)
        fpos, fR = np.asarray(st[4]), np.array(client.getMatrixFromQuaternion(st[5])).reshape(3, 3)
        for link, who in owner.items():
            if who != i:
                continue
            m, c, I = _body_in_frame(client, body, link, fpos, fR)
            # Massless links still carry the inertia the simulator gives them (pybullet keeps it).
            out[PARAMS_PER_LINK * i:PARAMS_PER_LINK * (i + 1)] += link_parameters(m, c, I)
    return out
