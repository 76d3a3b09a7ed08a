"""The one exception the kernel ops raise for arguments a caller got wrong."""

from __future__ import annotations

from ark.errors import ArkError


class KernelArgumentError(ArkError, ValueError):
    """A kernel op got a tensor of the wrong shape, dtype or device; the message names the argument."""
