"""Checking observations before they reach a model: presence, shape, dtype and finiteness (numpy only).

Shared by the PyTorch policies and the ONNX Runtime runner so both reject bad input with the
same one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from policies.errors import FeatureMismatch, NonFiniteObservation


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_array(key: str, value: Any, shape: Sequence[int], image: bool, what: str = "observation") -> np.ndarray:
    """``value`` as a numpy array of ``shape``: uint8 for images, float32 (and finite) otherwise."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.shape != tuple(shape):
        raise FeatureMismatch(f"{what} '{key}': expected shape {_fmt(shape)}, got {_fmt(arr.shape)}")
    if image:
        if arr.dtype != np.uint8:
            raise FeatureMismatch(f"{what} '{key}': expected a uint8 image, got dtype {arr.dtype}")
        return arr
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise NonFiniteObservation(f"{what} '{key}' contains NaN or inf")
    return arr


def check_observations(
    obs: Mapping[str, Any],
    features: Mapping[str, Sequence[int]],
    leading: Sequence[int] = (),
    what: str = "observation",
) -> dict[str, np.ndarray]:
    """Every feature of ``features`` from ``obs``, checked, with shape ``(*leading, *feature_shape)``.

    A 3-D feature ``[H, W, 3]`` is an image (uint8); others are float. Extra keys are ignored.
    """
    out = {}
    for key, shape in features.items():
        if key not in obs:
            raise FeatureMismatch(f"{what} has no '{key}' (the policy needs {sorted(features)})")
        out[key] = check_array(key, obs[key], (*leading, *shape), image=len(shape) == 3, what=what)
    return out
