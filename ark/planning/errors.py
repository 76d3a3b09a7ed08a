"""Errors a user of the planners can cause or must handle; each carries a one-line message."""

from __future__ import annotations

from ark.errors import ArkError


class PlanningError(ArkError):
    """A planning request is malformed or cannot be planned (base class)."""


class InvalidRequest(PlanningError, ValueError):
    """Bad input: wrong shape, non-finite numbers, a state outside the joint limits or the map."""


class StateInCollision(PlanningError):
    """The start or the goal of a request collides (with the scene, an obstacle or the robot itself)."""


class NoPathFound(PlanningError):
    """The planner found no path within its budget (iterations, expansions or seconds)."""
