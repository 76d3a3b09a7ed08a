"""The robot backend: the one place where an environment touches a robot.

A task (``envs/panda_tasks.py``, ``envs/husky_navigate.py``) turns actions into commands and
raw state into observations, rewards and success; a :class:`RobotBackend` applies a command
and returns raw state. Two kinds exist:

* ``sim``  (:class:`envs.sim.panda.PandaSim`, :class:`envs.sim.husky.HuskySim`): pybullet in
  this process, one physics client per backend;
* ``node`` (:class:`envs.node_backend.NodeBackend`): the same calls made over Ark services to a
  driver node, which is how a real robot is driven (interface in :mod:`envs.driver`).

State is a ``dict[str, np.ndarray]`` with the keys documented in :mod:`envs.driver`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from envs.messages import DriverInfo

State = dict[str, np.ndarray]
Scene = dict[str, np.ndarray]


class RobotBackend(ABC):
    """Applies commands to a robot (simulated or real) and reports its state."""

    @abstractmethod
    def info(self) -> DriverInfo:
        """Robot kind, control rate, joint names, cameras and state keys."""

    @abstractmethod
    def reset(self, scene: Scene, seed: int | None = None) -> State:
        """Start an episode laid out as ``scene``; return the initial state."""

    @abstractmethod
    def step(self, command: np.ndarray) -> State:
        """Apply ``command`` for one control period; return the state at its end."""

    @abstractmethod
    def render(self) -> np.ndarray:
        """An (H, W, 3) uint8 picture of the scene for ``render_mode="rgb_array"``."""

    def close(self) -> None:
        """Release the robot (disconnect, stop motors). Safe to call twice."""
