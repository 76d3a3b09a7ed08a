"""``ControllerNode``: turns end-effector targets into joint commands at a fixed rate.

Subscribes to ``/ee_target`` (:class:`~ark.messages.Pose`, world frame; an all-zero orientation
means "position only", any other is normalised and tracked too) and ``/joint_states``
(:class:`~ark.messages.JointState` of the arm), and publishes ``/joint_command``
(:class:`~ark.messages.JointState`: position targets, and the velocity that reaches them in one
period) every ``1 / rate`` seconds once both have arrived. Each new target is solved by
damped-least-squares IK seeded with the measured joints; the command then moves towards that
solution no faster than ``speed_scale`` times each joint's URDF velocity limit, so a far target
becomes a smooth motion. A target IK cannot reach is counted (``unreachable``), logged once and
ignored: the arm holds its last command.

Parameters (launch YAML or ``params=``): ``rate`` (Hz, 50), ``urdf`` (franka_panda/panda.urdf),
``tip`` (panda_grasptarget), ``base_position`` ([-0.6, 0, 0]), ``speed_scale`` (0.5),
``target_topic``, ``state_topic``, ``command_topic``.

    python -m ark.runner ark.control.node:ControllerNode --name controller --params '{"rate": 100}'
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ark.config import ArkConfig
from ark.control.errors import ControlError, UnreachableTarget
from ark.control.ik import solve_ik
from ark.control.kinematics import KinematicChain
from ark.messages import JointState, Pose
from ark.node import Node

log = logging.getLogger("ark.control.node")


class ControllerNode(Node):
    """End-effector targets in, joint commands out at a fixed rate; see the module docstring."""

    def __init__(self, name: str = "controller", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(name, config=config, params=params)
        self.chain = KinematicChain(str(self.param("urdf", "franka_panda/panda.urdf")),
                                    str(self.param("tip", "panda_grasptarget")),
                                    tuple(self.param("base_position", [-0.6, 0.0, 0.0])))
        self.rate = float(self.param("rate", 50.0))
        self.speed_scale = float(self.param("speed_scale", 0.5))
        self.q: np.ndarray | None = None
        self.target: tuple[np.ndarray, np.ndarray | None] | None = None
        self.goal_q: np.ndarray | None = None
        self.command: np.ndarray | None = None
        self.unreachable = 0
        self.commands_sent = 0
        self.last_error = ""
        self.pub = self.publisher(str(self.param("command_topic", "/joint_command")), JointState)
        self.subscriber(str(self.param("state_topic", "/joint_states")), JointState, self._on_state, latest_only=True)
        self.subscriber(str(self.param("target_topic", "/ee_target")), Pose, self._on_target, latest_only=True)
        self.timer(self.rate, self.tick)

    def _on_state(self, msg: JointState) -> None:
        pos = np.asarray(msg.position, dtype=np.float64)
        if msg.name:
            index = {n: i for i, n in enumerate(msg.name)}
            if all(n in index for n in self.chain.names):
                pos = np.array([pos[index[n]] for n in self.chain.names])
        if pos.shape[0] < self.chain.n:
            log.warning("%s: joint state with %d positions, expected %d; dropped", self.name, pos.shape[0], self.chain.n)
            return
        self.q = pos[: self.chain.n]

    def _on_target(self, msg: Pose) -> None:
        quat = np.asarray(msg.orientation, dtype=np.float64)
        quat = None if not np.any(quat) else quat
        self.target = (np.asarray(msg.position, dtype=np.float64), quat)
        self.goal_q = None  # solve on the next tick, seeded with the joints measured then

    def tick(self) -> None:
        if self.q is None or self.target is None:
            return
        if self.goal_q is None:
            pos, quat = self.target
            seed = self.command if self.command is not None else self.q
            try:
                self.goal_q = solve_ik(self.chain, pos, quat, q0=np.clip(seed, self.chain.lower, self.chain.upper),
                                       restarts=3).q
            except (UnreachableTarget, ControlError) as exc:
                self.unreachable += 1
                self.last_error = str(exc)
                log.warning("%s: %s", self.name, exc)
                self.target = None
                return
        current = self.command if self.command is not None else self.q
        dt = 1.0 / self.rate
        step = np.clip(self.goal_q - current, -self.speed_scale * self.chain.velocity_limits * dt,
                       self.speed_scale * self.chain.velocity_limits * dt)
        self.command = current + step
        self.pub.publish(JointState(name=list(self.chain.names), position=self.command.copy(),
                                    velocity=step / dt, effort=np.zeros(0)))
        self.commands_sent += 1
