"""Collision checking of an arm's joint configurations and motions against a pybullet scene.

:class:`PlanningScene` owns a private pybullet client (DIRECT) holding the robot, moved
kinematically, and static obstacles (boxes, URDFs such as the Ark table). It answers:

- ``is_valid(q)``: within joint limits, at least ``margin`` metres from every obstacle, no
  self-collision between links that are not neighbours in the kinematic tree; an attached
  object (``attach_box``, e.g. a grasped cube) is checked against the obstacles too.
- ``motion_valid(q0, q1)``: the straight joint-space edge is valid. Samples are spaced so that
  no point of the arm (or of an attached object within ``extent`` of the tip) moves more than
  ``margin`` between two samples (bounded by per-joint sweep radii: offsets to the tip plus
  ``extent``, 0.15 m by default, which covers the Panda's hand and link meshes), so a valid answer
  with ``margin > 0`` means the whole edge keeps at least ``margin / 2`` from every obstacle, not
  just its samples.

    scene = PlanningScene()                       # Panda at x = -0.6 on the Ark table
    scene.add_box([0.02, 0.2, 0.15], [-0.05, 0.0, 0.15])
    scene.is_valid(q), scene.motion_valid(q0, q1), scene.collisions(q)
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pybullet as pb
from pybullet_utils.bullet_client import BulletClient

from ark.control.kinematics import KinematicChain, as_vector, resolve_urdf
from ark.planning.errors import InvalidRequest


class PlanningScene:
    """A robot and static obstacles in a private pybullet client; see the module docstring."""

    def __init__(self, urdf: str = "franka_panda/panda.urdf", tip: str = "panda_grasptarget",
                 base_position=(-0.6, 0.0, 0.0), base_orientation=(0.0, 0.0, 0.0, 1.0), table: bool = True,
                 margin: float = 0.01, fixed_joints: dict[str, float] | None = None, extent: float = 0.15) -> None:
        if not margin >= 0:
            raise InvalidRequest(f"collision margin must be >= 0 m, got {margin}")
        self.chain = KinematicChain(urdf, tip, base_position, base_orientation)
        self.n, self.names = self.chain.n, self.chain.names
        self.lower, self.upper = self.chain.lower.copy(), self.chain.upper.copy()
        self.margin = float(margin)
        self.extent = float(extent)
        self.client = c = BulletClient(connection_mode=pb.DIRECT)
        self.robot = c.loadURDF(self.chain.urdf, list(base_position), list(base_orientation), useFixedBase=True)
        nj = c.getNumJoints(self.robot)
        info = [c.getJointInfo(self.robot, j) for j in range(nj)]
        by_name = {i[1].decode(): i[0] for i in info}
        self.joint_ids = [by_name[n] for n in self.names]
        self.link_names = {-1: c.getBodyInfo(self.robot)[0].decode(), **{i[0]: i[12].decode() for i in info}}
        fixed = {"panda_finger_joint1": 0.04, "panda_finger_joint2": 0.04} if fixed_joints is None else fixed_joints
        for name, value in fixed.items():
            if name in by_name:
                c.resetJointState(self.robot, by_name[name], value)
        self.tip_link = next(j for j, n in self.link_names.items() if n == tip)
        self.obstacles: list[int] = []
        self.obstacle_names: dict[int, str] = {}
        if table:
            self.add_urdf("table.urdf", name="table")
        self.attached: int | None = None
        self._attach_offset = np.eye(4)
        self._self_pairs = self._collision_pairs(info)
        self.checks = 0  # configurations checked (for benchmarks)

    # -- scene ------------------------------------------------------------------------------
    def add_box(self, half_extents, position, orientation=(0.0, 0.0, 0.0, 1.0), name: str | None = None) -> int:
        """A static box obstacle (half extents and position in metres, world frame)."""
        c = self.client
        col = c.createCollisionShape(pb.GEOM_BOX, halfExtents=list(map(float, half_extents)))
        body = c.createMultiBody(0.0, col, -1, list(map(float, position)), list(map(float, orientation)))
        self.obstacles.append(body)
        self.obstacle_names[body] = name or f"box{len(self.obstacles)}"
        return body

    def add_urdf(self, path: str, position=(0.0, 0.0, 0.0), orientation=(0.0, 0.0, 0.0, 1.0), name: str | None = None) -> int:
        """A static obstacle from an URDF (sim_assets/, pybullet_data or a path)."""
        body = self.client.loadURDF(resolve_urdf(path), list(position), list(orientation), useFixedBase=True)
        self.obstacles.append(body)
        self.obstacle_names[body] = name or path
        return body

    def attach_box(self, half_extents, offset=(0.0, 0.0, 0.0)) -> None:
        """Carry a box (e.g. a grasped cube) at ``offset`` in the tip frame; checked against obstacles."""
        self.detach()
        c = self.client
        col = c.createCollisionShape(pb.GEOM_BOX, halfExtents=list(map(float, half_extents)))
        self.attached = c.createMultiBody(0.0, col, -1, [0, 0, -5])
        self._attach_offset = np.eye(4)
        self._attach_offset[:3, 3] = offset
        # The swept-motion bound must cover the held object's farthest corner from the tip.
        self.extent = max(self.extent, float(np.linalg.norm(offset) + np.linalg.norm(half_extents)))

    def detach(self) -> None:
        if self.attached is not None:
            self.client.removeBody(self.attached)
            self.attached = None

    def _collision_pairs(self, info) -> list[tuple[int, int]]:
        """Link pairs checked for self-collision: links with collision shapes whose rigid groups (links
        joined by fixed joints) are neither the same nor parent and child, nor grandparents."""
        c = self.client
        parent = {i[0]: i[16] for i in info}
        is_fixed = {i[0]: i[2] == pb.JOINT_FIXED for i in info}

        def group(link: int) -> int:
            while link >= 0 and is_fixed[link]:
                link = parent[link]
            return link

        def group_parent(g: int) -> int:
            return group(parent[g]) if g >= 0 else -2

        shaped = [l for l in [-1, *parent] if c.getCollisionShapeData(self.robot, l)]
        pairs = []
        for a, b in itertools.combinations(shaped, 2):
            ga, gb = group(a), group(b)
            near = {ga, group_parent(ga), group_parent(group_parent(ga)) if ga >= 0 else -2}
            near_b = {gb, group_parent(gb), group_parent(group_parent(gb)) if gb >= 0 else -2}
            if gb in near or ga in near_b:
                continue
            pairs.append((a, b))
        self._shaped = sorted({l for pair in pairs for l in pair})
        return pairs

    # -- queries ----------------------------------------------------------------------------
    def set_config(self, q: np.ndarray) -> None:
        c = self.client
        c.resetJointStatesMultiDof(self.robot, self.joint_ids, [[float(v)] for v in q])
        if self.attached is not None:
            st = c.getLinkState(self.robot, self.tip_link, computeForwardKinematics=1)
            T = np.eye(4)
            T[:3, :3] = np.asarray(c.getMatrixFromQuaternion(st[5])).reshape(3, 3)
            T[:3, 3] = st[4]
            W = T @ self._attach_offset
            c.resetBasePositionAndOrientation(self.attached, W[:3, 3].tolist(), st[5])

    def within_limits(self, q) -> bool:
        q = np.asarray(q, dtype=np.float64)
        return bool(np.all(q >= self.lower - 1e-9) and np.all(q <= self.upper + 1e-9))

    def is_valid(self, q, margin: float | None = None) -> bool:
        """Within limits and collision-free with ``margin`` (default: the scene's) from every obstacle."""
        q = np.asarray(q, dtype=np.float64)
        if not self.within_limits(q):
            return False
        self.checks += 1
        m = self.margin if margin is None else margin
        self.set_config(q)
        c = self.client
        for body in self.obstacles:
            # The base link stands on the table by design and cannot move away: ignore its contacts.
            if any(p[3] != -1 for p in c.getClosestPoints(self.robot, body, m)):
                return False
            if self.attached is not None and c.getClosestPoints(self.attached, body, m):
                return False
        return not self._self_colliding()

    def _self_colliding(self) -> bool:
        c = self.client
        # Broad phase on the links' bounding boxes; exact distances only where boxes overlap.
        boxes = {l: c.getAABB(self.robot, l) for l in self._shaped}
        for a, b in self._self_pairs:
            (la, ha), (lb, hb) = boxes[a], boxes[b]
            if la[0] > hb[0] or lb[0] > ha[0] or la[1] > hb[1] or lb[1] > ha[1] or la[2] > hb[2] or lb[2] > ha[2]:
                continue
            if c.getClosestPoints(self.robot, self.robot, 0.0, a, b):
                return True
        return False

    def collisions(self, q, margin: float | None = None) -> list[str]:
        """What ``q`` collides with, as ``"link - obstacle"`` strings (empty when valid)."""
        q = as_vector(q, self.n, "joint positions")
        m = self.margin if margin is None else margin
        self.set_config(q)
        c = self.client
        out = []
        for body in self.obstacles:
            links = sorted({p[3] for p in c.getClosestPoints(self.robot, body, m) if p[3] != -1})
            out += [f"{self.link_names[l]} - {self.obstacle_names[body]}" for l in links]
            if self.attached is not None and c.getClosestPoints(self.attached, body, m):
                out.append(f"attached object - {self.obstacle_names[body]}")
        for a, b in self._self_pairs:
            if c.getClosestPoints(self.robot, self.robot, 0.0, a, b):
                out.append(f"{self.link_names[a]} - {self.link_names[b]} (self)")
        return out

    def edge_steps(self, q0: np.ndarray, q1: np.ndarray, margin: float | None = None) -> int:
        """Number of intervals an edge is split into so no point moves more than ``margin`` per interval."""
        m = self.margin if margin is None else margin
        radii = self.chain.sweep_radii(self.extent)
        sweep = float(np.sum(radii * np.abs(np.asarray(q1) - np.asarray(q0))))
        return max(1, int(math.ceil(sweep / max(m, 1e-3))))

    def motion_valid(self, q0, q1, margin: float | None = None) -> bool:
        """Whether the straight joint-space edge q0 -> q1 is valid (q0 assumed valid); see the module docstring."""
        q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
        steps = self.edge_steps(q0, q1, margin)
        # Bisection order: a colliding edge is usually rejected after a few checks.
        order = _bisection_order(steps)
        for k in order:
            if not self.is_valid(q0 + (q1 - q0) * (k / steps), margin):
                return False
        return True

    def path_valid(self, path, margin: float | None = None) -> bool:
        path = np.asarray(path, dtype=np.float64)
        return self.is_valid(path[0], margin) and all(self.motion_valid(a, b, margin) for a, b in zip(path[:-1], path[1:]))

    def close(self) -> None:
        try:
            self.client.disconnect()
        except pb.error:
            pass


def _bisection_order(steps: int) -> list[int]:
    """Indices 1..steps ordered coarse to fine (end first, then midpoints)."""
    out, seen = [steps], {0, steps}
    queue = [(0, steps)]
    while queue:
        nxt = []
        for a, b in queue:
            if b - a > 1:
                m = (a + b) // 2
                if m not in seen:
                    seen.add(m)
                    out.append(m)
                nxt += [(a, m), (m, b)]
        queue = nxt
    return out
