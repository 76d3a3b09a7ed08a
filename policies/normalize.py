"""Feature normalisation whose statistics live in the model as buffers (so they travel in the checkpoint).

Modes: ``mean_std`` ((x - mean) / std), ``min_max`` (affinely to [-1, 1]) and ``identity``.
Statistics arrive as ``{key: {"min": [...], "max": [...], "mean": [...], "std": [...]}}``
(lists, or arrays) — the format the dataset writes; :func:`compute_stats` makes them from
arrays. A dimension whose std or range is (nearly) zero is left unscaled, only shifted, so a
constant feature never divides by zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from policies.errors import FeatureMismatch

STAT_NAMES = ("min", "max", "mean", "std")
_EPS = 1e-4  # below this a std or a range counts as zero (the reference implementations use 1e-4 too)


def compute_stats(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Per-dimension min, max, mean and std of each array (last axis = feature dimension)."""
    out = {}
    for key, arr in arrays.items():
        flat = np.asarray(arr, dtype=np.float64).reshape(-1, np.shape(arr)[-1])
        out[key] = {
            "min": flat.min(0).tolist(),
            "max": flat.max(0).tolist(),
            "mean": flat.mean(0).tolist(),
            "std": flat.std(0).tolist(),
        }
    return out


def _buffer_name(key: str) -> str:
    # Buffer names may not contain "."; feature keys do ("observation.state").
    return key.replace(".", "__")


class Normalizer(nn.Module):
    """Normalises and un-normalises named 1-D features with per-feature modes.

    ``features``: key -> (dimension, mode). Missing statistics default to the identity
    transform (mean 0, std 1, min -1, max 1) so a policy can be built before its data is
    known; :meth:`set_stats` (or loading a checkpoint) fills them in.
    """

    def __init__(self, features: Mapping[str, tuple[int, str]], stats: Mapping[str, Any] | None = None):
        super().__init__()
        self.modes = {key: mode for key, (_, mode) in features.items()}
        self.dims = {key: dim for key, (dim, _) in features.items()}
        for key, dim in self.dims.items():
            name = _buffer_name(key)
            self.register_buffer(f"{name}__mean", torch.zeros(dim))
            self.register_buffer(f"{name}__std", torch.ones(dim))
            self.register_buffer(f"{name}__min", -torch.ones(dim))
            self.register_buffer(f"{name}__max", torch.ones(dim))
        if stats is not None:
            self.set_stats(stats)

    def set_stats(self, stats: Mapping[str, Any]) -> None:
        """Copy statistics in; every feature whose mode needs statistics must have them, with matching size."""
        for key, dim in self.dims.items():
            mode = self.modes[key]
            if mode == "identity":
                continue
            if key not in stats:
                raise FeatureMismatch(f"normalisation statistics have no entry for '{key}' (mode {mode})")
            needed = ("mean", "std") if mode == "mean_std" else ("min", "max")
            for stat in needed:
                if stat not in stats[key]:
                    raise FeatureMismatch(f"normalisation statistics for '{key}' lack '{stat}' (mode {mode})")
            for stat in STAT_NAMES:
                if stat not in stats[key]:
                    continue
                value = torch.as_tensor(np.asarray(stats[key][stat], dtype=np.float32)).reshape(-1)
                if value.numel() != dim:
                    raise FeatureMismatch(
                        f"normalisation statistic '{stat}' of '{key}': expected {dim} values, got {value.numel()}"
                    )
                if not torch.isfinite(value).all():
                    raise FeatureMismatch(f"normalisation statistic '{stat}' of '{key}' contains NaN or inf")
                getattr(self, f"{_buffer_name(key)}__{stat}").copy_(value)

    def stats(self) -> dict[str, dict[str, list[float]]]:
        """The statistics currently held, in the input format."""
        return {
            key: {s: getattr(self, f"{_buffer_name(key)}__{s}").tolist() for s in STAT_NAMES} for key in self.dims
        }

    def _scale_offset(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, offset) with normalised = x * scale + offset."""
        name = _buffer_name(key)
        mode = self.modes[key]
        if mode == "mean_std":
            mean, std = getattr(self, f"{name}__mean"), getattr(self, f"{name}__std")
            std = torch.where(std < _EPS, torch.ones_like(std), std)
            return 1.0 / std, -mean / std
        if mode == "min_max":
            lo, hi = getattr(self, f"{name}__min"), getattr(self, f"{name}__max")
            span = hi - lo
            # A constant dimension maps to 0 and keeps its unit scale.
            scale = torch.where(span < _EPS, torch.ones_like(span), 2.0 / span.clamp_min(_EPS))
            offset = torch.where(span < _EPS, -(hi + lo) / 2.0, -1.0 - lo * scale)
            return scale, offset
        one = torch.ones(self.dims[key], device=getattr(self, f"{name}__mean").device)
        return one, torch.zeros_like(one)

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Map raw values of ``key`` (any leading dims, last dim = feature) to the normalised space."""
        scale, offset = self._scale_offset(key)
        return x * scale + offset

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        scale, offset = self._scale_offset(key)
        return (x - offset) / scale

    def affine(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) as float32 arrays, for runtimes without torch (the ONNX runner)."""
        scale, offset = self._scale_offset(key)
        return scale.detach().cpu().numpy().astype(np.float32), offset.detach().cpu().numpy().astype(np.float32)
