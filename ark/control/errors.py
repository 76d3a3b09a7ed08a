"""Errors a user of the controllers can cause; each carries a one-line message."""

from __future__ import annotations

from ark.errors import ArkError


class ControlError(ArkError):
    """A controller was configured or called wrongly (base class)."""


class ShapeError(ControlError, ValueError):
    """An array argument has the wrong shape or holds non-finite numbers."""


class JointLimitError(ControlError, ValueError):
    """A joint configuration lies outside the robot's joint limits."""


class UnreachableTarget(ControlError):
    """Inverse kinematics found no joint configuration within limits reaching the target."""
