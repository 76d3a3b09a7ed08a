"""Errors a user can cause with policies: wrong checkpoint, mismatched data, bad observations.

Each carries a one-line message naming what is wrong (the key, the expected and the actual
value); the CLI prints it without a traceback.
"""

from __future__ import annotations

from ark.errors import ArkError


class PolicyError(ArkError):
    """Base class for policy errors reported to users as one line."""


class CheckpointError(PolicyError):
    """A checkpoint directory is missing, truncated or corrupt."""


class PolicyTypeMismatch(CheckpointError):
    """A checkpoint holds a different policy type than the one asked for."""


class FeatureMismatch(PolicyError):
    """Data (a batch, a dataset's features, an observation) does not match the policy's config."""


class NonFiniteObservation(PolicyError):
    """An observation contains NaN or infinity."""
