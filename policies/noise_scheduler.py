"""Diffusion noise schedule with DDPM training and DDPM / DDIM sampling steps (ε-prediction).

Follows Ho et al. 2020 (DDPM) and Song et al. 2021 (DDIM, η = 0), with the conventions
Diffusion Policy uses through ``diffusers``: a squared-cosine β schedule (Nichol & Dhariwal
2021, β capped at 0.999), the predicted clean sample clipped to [-1, 1], "leading" spacing
of the inference timesteps, ᾱ = 1 before the first step, and the "fixed_small" DDPM
posterior variance.

The sampling steps use only arithmetic and ``.clip`` on their array arguments with Python
float coefficients, so the same code steps torch tensors (the PyTorch policy) and numpy
arrays (the ONNX Runtime runner, which has no torch) identically.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

Array = TypeVar("Array")  # torch.Tensor or np.ndarray

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")


def squared_cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """β_t from ᾱ(t) = cos²((t/T + s) / (1 + s) · π/2), s = 0.008: β_t = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), max_beta)."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array(
        [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)],
        dtype=np.float64,
    )


class NoiseScheduler:
    """The forward (noising) process and the reverse steps of a discrete diffusion model.

    ``alphas_cumprod[t]`` = ᾱ_t = ∏_{s≤t} (1 − β_s) for t = 0 … T−1.
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_schedule: str = "squaredcos_cap_v2",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ):
        if beta_schedule == "squaredcos_cap_v2":
            betas = squared_cosine_betas(num_train_timesteps)
        elif beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
        else:
            raise ValueError(f"unknown beta schedule {beta_schedule!r}; expected one of {BETA_SCHEDULES}")
        self.num_train_timesteps = num_train_timesteps
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range

    # ----- training -------------------------------------------------------------------------
    def add_noise(self, x0: Any, noise: Any, timesteps: Any) -> Any:
        """x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε for per-sample ``timesteps`` (B,) — torch tensors or numpy arrays."""
        if isinstance(x0, np.ndarray):
            ac = self.alphas_cumprod[np.asarray(timesteps)].astype(x0.dtype)
        else:
            import torch

            ac = torch.as_tensor(self.alphas_cumprod, dtype=x0.dtype, device=x0.device)[timesteps]
        ac = ac.reshape(ac.shape + (1,) * (x0.ndim - 1))
        return ac**0.5 * x0 + (1 - ac) ** 0.5 * noise

    # ----- sampling -------------------------------------------------------------------------
    def timesteps(self, num_inference_steps: int) -> list[int]:
        """Inference timesteps, descending, evenly spaced from 0 ("leading" spacing): 100 / 10 → 90, 80, …, 0."""
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {self.num_train_timesteps}], got {num_inference_steps}")
        ratio = self.num_train_timesteps // num_inference_steps
        return [i * ratio for i in range(num_inference_steps)][::-1]

    def previous_timestep(self, t: int, num_inference_steps: int) -> int:
        return t - self.num_train_timesteps // num_inference_steps

    def _alpha_cumprod(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0

    def predict_x0(self, eps: Array, t: int, x: Array) -> Array:
        """Clean sample implied by ε at step t: (x − √(1 − ᾱ_t) ε) / √ᾱ_t, clipped to the sample range."""
        ac = self._alpha_cumprod(t)
        x0 = (x - math.sqrt(1 - ac) * eps) * (1.0 / math.sqrt(ac))
        if self.clip_sample:
            x0 = x0.clip(-self.clip_sample_range, self.clip_sample_range)
        return x0

    def ddim_step(self, eps: Array, t: int, x: Array, prev_t: int) -> Array:
        """Deterministic DDIM step (η = 0) from t to prev_t: √ᾱ_prev · x̂0 + √(1 − ᾱ_prev) · ε."""
        ac_prev = self._alpha_cumprod(prev_t)
        return math.sqrt(ac_prev) * self.predict_x0(eps, t, x) + math.sqrt(1 - ac_prev) * eps

    def ddpm_step(self, eps: Array, t: int, x: Array, prev_t: int, noise: Array | None = None) -> Array:
        """Ancestral DDPM step from t to prev_t: posterior mean of q(x_prev | x_t, x̂0) plus σ·noise ("fixed_small" σ²).

        ``noise`` (standard normal, x's shape) is required when t > 0.
        """
        ac_t, ac_prev = self._alpha_cumprod(t), self._alpha_cumprod(prev_t)
        alpha_t = ac_t / ac_prev
        beta_t = 1 - alpha_t
        x0 = self.predict_x0(eps, t, x)
        mean = (math.sqrt(ac_prev) * beta_t / (1 - ac_t)) * x0 + (math.sqrt(alpha_t) * (1 - ac_prev) / (1 - ac_t)) * x
        if t == 0:
            return mean
        if noise is None:
            raise ValueError("ddpm_step needs noise for t > 0")
        variance = max((1 - ac_prev) / (1 - ac_t) * beta_t, 1e-20)
        return mean + math.sqrt(variance) * noise

    def step(self, sampler: str, eps: Array, t: int, x: Array, num_inference_steps: int, noise: Array | None = None) -> Array:
        """One reverse step of ``sampler`` (``ddim`` or ``ddpm``) on the ``num_inference_steps`` grid."""
        prev_t = self.previous_timestep(t, num_inference_steps)
        if sampler == "ddim":
            return self.ddim_step(eps, t, x, prev_t)
        if sampler == "ddpm":
            return self.ddpm_step(eps, t, x, prev_t, noise)
        raise ValueError(f"unknown sampler {sampler!r}; expected 'ddim' or 'ddpm'")
