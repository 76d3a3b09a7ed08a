"""Errors of the split-DNN encoders. Each carries a one-line message a user can act on."""

from __future__ import annotations

from ark.errors import ArkError


class SplitError(ArkError):
    """A split-DNN operation failed because of user input (config, checkpoint, data, arguments)."""


class PacketError(SplitError):
    """An encoded latent packet is malformed: bad magic, shape, bit depth, width, checksum or size."""


class FingerprintMismatch(PacketError):
    """A packet was produced by a head from another checkpoint than the receiving tail's."""
