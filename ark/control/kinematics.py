"""Forward kinematics and geometric Jacobians of a serial chain, read from a URDF with numpy.

A small own implementation (no simulator needed), cross-checked against pybullet's model
(:class:`ark.control.model.ArmModel`) in the tests. Frames: world, metres; quaternions
``(x, y, z, w)``; Jacobian rows are ``[linear (3); angular (3)]`` of the tip link's frame origin.

    chain = KinematicChain("franka_panda/panda.urdf", tip="panda_grasptarget", base_position=(-0.6, 0, 0))
    T = chain.fk(q)               # 4x4 pose of the tip
    J = chain.jacobian(q)         # 6 x n
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from ark.control.errors import ShapeError
from ark.errors import ConfigError


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF's fixed-axis roll-pitch-yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about unit ``axis`` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def quat_to_matrix(q) -> np.ndarray:
    """3x3 rotation of quaternion ``(x, y, z, w)`` (normalised first)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Quaternion ``(x, y, z, w)`` with w >= 0 of a 3x3 rotation matrix."""
    m = R
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def rotation_error(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame, rad) rotating ``R`` onto ``R_target``."""
    E = R_target @ R.T
    cos = float(np.clip((np.trace(E) - 1.0) / 2.0, -1.0, 1.0))
    angle = math.acos(cos)
    v = np.array([E[2, 1] - E[1, 2], E[0, 2] - E[2, 0], E[1, 0] - E[0, 1]])
    if angle < 1e-9:
        return 0.5 * v
    if math.pi - angle < 1e-6:  # 180 degrees: axis from the symmetric part
        B = (E + np.eye(3)) / 2.0
        axis = B[:, int(np.argmax(np.diag(B)))]
        return angle * axis / np.linalg.norm(axis)
    return angle / (2.0 * math.sin(angle)) * v


def as_vector(x, n: int, what: str) -> np.ndarray:
    """``x`` as a float64 vector of length ``n`` with finite entries, else a one-line ShapeError."""
    a = np.asarray(x, dtype=np.float64)
    if a.shape != (n,):
        raise ShapeError(f"{what} must have shape ({n},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ShapeError(f"{what} must be finite, got {a.tolist()}")
    return a


def resolve_urdf(path: str) -> str:
    """An URDF path as given, in sim_assets/ or in pybullet_data (ConfigError if none)."""
    from envs.config import resolve_asset

    return resolve_asset(path, None, "URDF")


@dataclass
class Joint:
    """A joint on the chain from the base to the tip (fixed joints are folded into ``origin``)."""

    name: str
    kind: str              # revolute | continuous | prismatic | fixed
    origin: np.ndarray     # 4x4 parent-link -> joint frame at q = 0
    axis: np.ndarray       # unit axis in the joint frame
    lower: float
    upper: float
    velocity: float
    effort: float


class KinematicChain:
    """The serial chain of an URDF from its root link to ``tip``; see the module docstring."""

    def __init__(self, urdf: str, tip: str, base_position=(0.0, 0.0, 0.0), base_orientation=(0.0, 0.0, 0.0, 1.0)) -> None:
        self.urdf = resolve_urdf(urdf)
        try:
            root = ET.parse(self.urdf).getroot()
        except ET.ParseError as exc:
            raise ConfigError(f"{self.urdf}: not a valid URDF ({exc})") from None
        joints = {}
        for j in root.findall("joint"):
            child = j.find("child").get("link")
            joints[child] = j
        links = [l.get("name") for l in root.findall("link")]
        if tip not in links:
            raise ConfigError(f"{self.urdf}: no link {tip!r} (links: {', '.join(links)})")
        chain = []
        link = tip
        while link in joints:
            chain.append(joints[link])
            link = joints[link].find("parent").get("link")
        chain.reverse()
        self.root_link, self.tip = link, tip
        self.base = np.eye(4)
        self.base[:3, :3] = quat_to_matrix(base_orientation)
        self.base[:3, 3] = np.asarray(base_position, dtype=np.float64)
        self.joints: list[Joint] = []
        pending = np.eye(4)  # fixed transforms accumulated since the last movable joint
        for j in chain:
            o = j.find("origin")
            T = np.eye(4)
            if o is not None:
                T[:3, :3] = rpy_matrix(*[float(v) for v in o.get("rpy", "0 0 0").split()])
                T[:3, 3] = [float(v) for v in o.get("xyz", "0 0 0").split()]
            kind = j.get("type")
            if kind == "fixed":
                pending = pending @ T
                continue
            if kind not in ("revolute", "continuous", "prismatic"):
                raise ConfigError(f"{self.urdf}: joint {j.get('name')!r} of type {kind!r} is not supported")
            a = j.find("axis")
            axis = np.array([float(v) for v in (a.get("xyz") if a is not None else "1 0 0").split()])
            lim = j.find("limit")
            lower = float(lim.get("lower", -math.inf)) if lim is not None and kind != "continuous" else -math.inf
            upper = float(lim.get("upper", math.inf)) if lim is not None and kind != "continuous" else math.inf
            self.joints.append(Joint(j.get("name"), kind, pending @ T, axis / np.linalg.norm(axis), lower, upper,
                                     float(lim.get("velocity", math.inf)) if lim is not None else math.inf,
                                     float(lim.get("effort", math.inf)) if lim is not None else math.inf))
            pending = np.eye(4)
        self.tip_offset = pending
        self.n = len(self.joints)
        self.names = [j.name for j in self.joints]
        self.lower = np.array([j.lower for j in self.joints])
        self.upper = np.array([j.upper for j in self.joints])
        self.velocity_limits = np.array([j.velocity for j in self.joints])
        self.effort_limits = np.array([j.effort for j in self.joints])

    def frames(self, q) -> tuple[list[np.ndarray], np.ndarray]:
        """World 4x4 frames of every joint (at its position ``q``) and of the tip."""
        q = as_vector(q, self.n, "joint positions")
        T = self.base.copy()
        out = []
        for j, qi in zip(self.joints, q):
            T = T @ j.origin
            out.append(T.copy())
            M = np.eye(4)
            if j.kind == "prismatic":
                M[:3, 3] = j.axis * qi
            else:
                M[:3, :3] = axis_angle_matrix(j.axis, qi)
            T = T @ M
        return out, T @ self.tip_offset

    def fk(self, q) -> np.ndarray:
        """4x4 world pose of the tip link at joint positions ``q``."""
        return self.frames(q)[1]

    def fk_pose(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Tip position (3,) and quaternion (x, y, z, w)."""
        T = self.fk(q)
        return T[:3, 3].copy(), matrix_to_quat(T[:3, :3])

    def jacobian(self, q) -> np.ndarray:
        """6 x n geometric Jacobian (world frame) of the tip frame's origin."""
        frames, tip = self.frames(q)
        p = tip[:3, 3]
        J = np.zeros((6, self.n))
        for i, (j, F) in enumerate(zip(self.joints, frames)):
            z = F[:3, :3] @ j.axis
            if j.kind == "prismatic":
                J[:3, i] = z
            else:
                J[:3, i] = np.cross(z, p - F[:3, 3])
                J[3:, i] = z
        return J

    def reach(self) -> float:
        """Upper bound on the distance from the first joint to the tip (sum of link offsets)."""
        return float(sum(np.linalg.norm(j.origin[:3, 3]) for j in self.joints[1:]) + np.linalg.norm(self.tip_offset[:3, 3])
                     + sum(max(abs(j.lower), abs(j.upper)) for j in self.joints if j.kind == "prismatic"))

    def sweep_radii(self, extent: float = 0.0) -> np.ndarray:
        """Per joint, an upper bound on how far (m) any point of the arm beyond it moves per radian (per
        metre for prismatic joints) of that joint: its offset-sum distance to the tip plus ``extent``
        (the size of the hand, fingers and anything held). Used to bound swept motion along an edge."""
        offsets = [np.linalg.norm(j.origin[:3, 3]) for j in self.joints] + [np.linalg.norm(self.tip_offset[:3, 3])]
        radii = []
        for i, j in enumerate(self.joints):
            radii.append(1.0 if j.kind == "prismatic" else float(sum(offsets[i + 1:]) + extent))
        return np.array(radii)

    def check_limits(self, q, what: str = "joint positions", tol: float = 1e-9) -> np.ndarray:
        """``q`` as a vector; JointLimitError naming the first joint outside its limits."""
        from ark.control.errors import JointLimitError

        q = as_vector(q, self.n, what)
        bad = np.nonzero((q < self.lower - tol) | (q > self.upper + tol))[0]
        if bad.size:
            i = int(bad[0])
            raise JointLimitError(f"{what}: joint {self.names[i]} = {q[i]:.4f} is outside its limits "
                                  f"[{self.lower[i]:.4f}, {self.upper[i]:.4f}]")
        return q


def panda_chain(base_position=(-0.6, 0.0, 0.0)) -> KinematicChain:
    """The Panda arm from ``franka_panda/panda.urdf`` up to the point between the finger tips."""
    return KinematicChain("franka_panda/panda.urdf", "panda_grasptarget", base_position)


__all__ = ["KinematicChain", "Joint", "panda_chain", "rpy_matrix", "quat_to_matrix", "matrix_to_quat",
           "rotation_error", "as_vector", "resolve_urdf"]
