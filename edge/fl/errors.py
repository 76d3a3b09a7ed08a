"""Errors of federated learning that a user can cause (bad config, corrupt checkpoint, wrong shapes)."""

from __future__ import annotations

from ark.errors import ArkError


class FLError(ArkError):
    """Base class of federated-learning errors (one line; the CLI prints it and exits 2)."""


class CheckpointError(FLError):
    """A federated checkpoint is missing, truncated or not Ark's."""


class FLConfigError(FLError):
    """A bad value in an FL configuration (file, key and what was expected)."""
