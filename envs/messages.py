"""Ark message schemas of the driver interface (see :mod:`envs.driver` for who sends what).

State travels as a dictionary of named arrays whose keys are documented in
:mod:`envs.driver`; images are ``uint8`` and ``float32`` buffers inside it, so a step
reply is one message with no per-field encoding work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ark.messages import array, message


@message("envs/DriverInfo", version=1)
@dataclass
class DriverInfo:
    """What a driver drives: robot kind, control rate, joint names, cameras and state keys.

    ``cameras`` maps a camera name to ``[height, width, has_depth]``; ``meta`` holds robot facts a
    task needs (for example ``object_half_height`` in metres)."""

    robot: str = ""
    control_hz: float = 0.0
    joint_names: list[str] = field(default_factory=list)
    cameras: dict = field(default_factory=dict)
    state_keys: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@message("envs/ResetRequest", version=1)
@dataclass
class ResetRequest:
    """Start an episode. ``seed`` is the env's reset seed (-1: none), for the driver's logs;
    ``scene`` holds the sampled episode layout (keys in :mod:`envs.driver`); ``options`` is free
    for driver-specific extensions (Ark's environments send it empty)."""

    seed: int = -1
    scene: dict[str, np.ndarray] = field(default_factory=dict)
    options: dict = field(default_factory=dict)


@message("envs/Command", version=1)
@dataclass
class Command:
    """One control command. ``kind`` ``ee_target``: ``data`` = [x, y, z, gripper_width] (m, world
    frame); ``kind`` ``twist``: ``data`` = [v (m/s), omega (rad/s)] in the base frame."""

    kind: str = ""
    data: np.ndarray = array("float64", (None,))


@message("envs/RobotState", version=1)
@dataclass
class RobotState:
    """Robot and world state after a reset or a step. ``session`` identifies the driver process
    (it changes when a driver restarts); ``step`` counts steps since the last reset."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    session: str = ""
    episode: int = 0
    step: int = 0
