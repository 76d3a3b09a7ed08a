"""Errors of the environments' node backend (configuration errors are ark.errors.ConfigError)."""

from __future__ import annotations

from ark.errors import ArkError


class DriverError(ArkError):
    """A robot driver refused a request, restarted mid-episode, or does not fit the environment."""


class DriverTimeout(DriverError):
    """A robot driver did not answer in time: it stalled, died, or was never started."""
