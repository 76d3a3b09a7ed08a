"""Errors a SLAM user can cause; each is one line (the CLI prints it without a traceback)."""

from __future__ import annotations

from ark.errors import ArkError


class ScanError(ArkError):
    """A laser scan is malformed (length does not match its angles, NaN ranges, bad limits)."""


class OdometryError(ArkError):
    """An odometry pose is malformed (not 3 finite numbers, or a quaternion that is not unit length)."""
