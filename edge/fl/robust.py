"""Robust aggregation of client deltas: coordinate-wise median and trimmed mean.

Both ignore example counts (a Byzantine client could lie about them) and need every update
of the round at once, so a strategy with ``robust=...`` buffers the round's deltas instead of
folding them into a running sum.
"""

from __future__ import annotations

import numpy as np

ROBUST_MODES = ("median", "trimmed_mean")


def coordinate_median(deltas: np.ndarray) -> np.ndarray:
    """Per-coordinate median of ``deltas`` ``(n, P)``."""
    return np.median(deltas, axis=0).astype(np.float32)


def trimmed_mean(deltas: np.ndarray, trim: float = 0.1) -> np.ndarray:
    """Per-coordinate mean after dropping the ``trim`` fraction of largest and of smallest values.

    At least one value per side is dropped when ``trim > 0`` and there are three or more updates,
    so a single extreme client never reaches the mean.
    """
    n = deltas.shape[0]
    k = int(np.floor(trim * n))
    if trim > 0 and n >= 3:
        k = max(k, 1)
    k = min(k, (n - 1) // 2)
    if k == 0:
        return deltas.mean(axis=0).astype(np.float32)
    part = np.partition(deltas, (k, n - k - 1), axis=0)
    return part[k:n - k].mean(axis=0).astype(np.float32)


def robust_aggregate(deltas: np.ndarray, mode: str, trim: float = 0.1) -> np.ndarray:
    """Apply the robust rule ``mode`` (``median`` or ``trimmed_mean``) to stacked deltas."""
    if mode == "median":
        return coordinate_median(deltas)
    if mode == "trimmed_mean":
        return trimmed_mean(deltas, trim)
    raise ValueError(f"robust aggregation must be one of {ROBUST_MODES}, got {mode!r}")
