"""Diffusion Policy, CNN variant (Chi et al., RSS 2023, "Diffusion Policy: Visuomotor Policy Learning
via Action Diffusion").

The policy denoises a ``horizon``-step action sequence with a conditional 1-D temporal U-Net.
Conditioning (FiLM: a per-channel scale and bias in every residual block) is the diffusion
step's sinusoidal embedding concatenated with the observation features of the last
``n_obs_steps`` steps, flattened. Training: DDPM with 100 steps, squared-cosine schedule,
ε-prediction, MSE over non-padded steps. Inference: DDIM (η = 0) with few steps from the EMA
weights; of the predicted sequence, which starts at the oldest observation, the actions
[n_obs_steps − 1, n_obs_steps − 1 + n_action_steps) are executed. States and actions are
min-max normalised to [-1, 1].

Defaults are the paper's CNN-based settings (T_o 2, T_p 16, T_a 8, U-Net dims 256/512/1024,
kernel 5, 8 groups, step embedding 128, AdamW lr 1e-4 with betas (0.95, 0.999) and weight
decay 1e-6, cosine schedule with 500 warm-up steps, EMA power 0.75, 10 DDIM steps as the
paper's real-world runs). The image encoder follows its recipe — ResNet with GroupNorm,
spatial-softmax pooling, a random crop of ~90 % in training and a centre crop at inference,
one encoder per camera — with few channels and no pretrained weights instead of ResNet-18.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ark.errors import ConfigError
from policies.base import Batch, Policy, cosine_with_warmup
from policies.config import ACTION_KEY, PolicyConfig, _positive
from policies.ema import ema_decay, ema_update_
from policies.encoders import ImageEncoder
from policies.noise_scheduler import BETA_SCHEDULES, NoiseScheduler


@dataclass
class DiffusionConfig(PolicyConfig):
    """Diffusion Policy hyperparameters.

    Horizons: ``n_obs_steps`` (T_o), ``horizon`` (T_p, must divide by 2^(len(down_dims)−1)),
    ``n_action_steps`` (T_a ≤ T_p − T_o + 1). U-Net: ``down_dims``, ``kernel_size``,
    ``n_groups``, ``diffusion_step_embed_dim``, ``film_scale`` (FiLM scale and bias, or bias
    only). Diffusion: ``num_train_timesteps``, ``beta_schedule``, ``clip_sample(_range)``,
    ``sampler`` (``ddim`` or ``ddpm``), ``num_inference_steps``. Images: ``image_*`` as in
    BC, ``crop_ratio`` (None: no crop), ``share_image_encoder``. EMA: ``use_ema`` and the
    warm-up parameters. ``lr_warmup_steps`` for the cosine schedule.
    """

    type: ClassVar[str] = "diffusion"

    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    state_normalization: str = "min_max"
    action_normalization: str = "min_max"
    image_channels: tuple[int, ...] = (16, 32, 64)
    image_blocks_per_stage: int = 1
    image_norm: str = "group"
    image_pool: str = "spatial_softmax"
    image_keypoints: int = 32
    image_feature_dim: int = 64
    crop_ratio: float | None = 0.9
    share_image_encoder: bool = False
    down_dims: tuple[int, ...] = (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    film_scale: bool = True
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    sampler: str = "ddim"
    num_inference_steps: int = 10
    use_ema: bool = True
    ema_power: float = 0.75
    ema_inv_gamma: float = 1.0
    ema_min_decay: float = 0.0
    ema_max_decay: float = 0.9999
    ema_update_after_step: int = 0
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.95, 0.999)
    optimizer_weight_decay: float = 1e-6
    lr_warmup_steps: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "horizon", "kernel_size", "n_groups", "num_train_timesteps", "num_inference_steps")
        if not self.down_dims:
            raise ConfigError("down_dims: expected at least one U-Net level")
        factor = 2 ** (len(self.down_dims) - 1)
        if self.horizon % factor:
            raise ConfigError(f"horizon: expected a multiple of {factor} (the U-Net downsamples {len(self.down_dims) - 1}×), got {self.horizon}")
        if self.n_action_steps > self.horizon - self.n_obs_steps + 1:
            raise ConfigError(
                f"n_action_steps: expected <= horizon - n_obs_steps + 1 = {self.horizon - self.n_obs_steps + 1}, got {self.n_action_steps}"
            )
        if any(d % self.n_groups for d in self.down_dims):
            raise ConfigError(f"down_dims: expected multiples of n_groups ({self.n_groups}), got {list(self.down_dims)}")
        if self.sampler not in ("ddim", "ddpm"):
            raise ConfigError(f"sampler: expected 'ddim' or 'ddpm', got {self.sampler!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule: expected one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ConfigError(
                f"num_inference_steps: expected <= num_train_timesteps ({self.num_train_timesteps}), got {self.num_inference_steps}"
            )
        if self.crop_ratio is not None and not 0 < self.crop_ratio <= 1:
            raise ConfigError(f"crop_ratio: expected in (0, 1] or null, got {self.crop_ratio}")

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1 - self.n_obs_steps + self.horizon))

    @property
    def chunk_length(self) -> int:
        return self.n_action_steps

    def make_scheduler(self) -> NoiseScheduler:
        return NoiseScheduler(
            self.num_train_timesteps, self.beta_schedule, clip_sample=self.clip_sample, clip_sample_range=self.clip_sample_range
        )


# ----- the conditional 1-D U-Net ------------------------------------------------------------
class SinusoidalStepEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the (integer) diffusion step: ``(B,)`` -> ``(B, dim)``."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.to(torch.float32)[:, None] * self.freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d (same padding) → GroupNorm → Mish."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int):
        super().__init__(nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2), nn.GroupNorm(n_groups, out_ch), nn.Mish())


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks; between them FiLM from the conditioning vector (scale·h + bias); a 1×1-conv skip when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int, film_scale: bool):
        super().__init__()
        self.block1 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.film_scale = film_scale
        self.cond = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, out_ch * (2 if film_scale else 1)))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        film = self.cond(cond)[..., None]  # (B, C or 2C, 1)
        if self.film_scale:
            scale, bias = film.chunk(2, dim=1)
            h = scale * h + bias
        else:
            h = h + film
        return self.block2(h) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """ε-network: noisy actions ``(B, T, A)``, steps ``(B,)`` and observation features ``(B, G)`` -> ε ``(B, T, A)``.

    Per level going down: two residual blocks, then a stride-2 conv (not after the last);
    two residual blocks in the middle; going up: concatenate the skip, two residual
    blocks, a transposed-conv upsampling; a final Conv1dBlock and a 1×1 conv back to A.
    """

    def __init__(self, action_dim: int, global_cond_dim: int, down_dims: tuple[int, ...], kernel_size: int,
                 n_groups: int, step_embed_dim: int, film_scale: bool):
        super().__init__()
        self.step_encoder = nn.Sequential(
            SinusoidalStepEmbedding(step_embed_dim),
            nn.Linear(step_embed_dim, step_embed_dim * 4),
            nn.Mish(),
            nn.Linear(step_embed_dim * 4, step_embed_dim),
        )
        cond_dim = step_embed_dim + global_cond_dim
        dims = [action_dim, *down_dims]
        levels = list(zip(dims[:-1], dims[1:]))

        def block(i: int, o: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(i, o, cond_dim, kernel_size, n_groups, film_scale)

        self.down = nn.ModuleList()
        for idx, (d_in, d_out) in enumerate(levels):
            last = idx == len(levels) - 1
            self.down.append(nn.ModuleList([
                block(d_in, d_out), block(d_out, d_out),
                nn.Conv1d(d_out, d_out, 3, 2, 1) if not last else nn.Identity(),
            ]))
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for d_in, d_out in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                block(d_out * 2, d_in), block(d_in, d_in),
                nn.ConvTranspose1d(d_in, d_in, 4, 2, 1),
            ]))
        self.final = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups), nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([self.step_encoder(timestep), global_cond], dim=-1)
        x = sample.transpose(1, 2)  # (B, A, T)
        skips = []
        for res1, res2, downsample in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)


# ----- observation encoder and the policy ---------------------------------------------------------
class DiffusionObsEncoder(nn.Module):
    """Per observation step: [features of each camera, normalised state]; the steps flattened -> ``(B, T_o · F)``."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.image_keys = config.image_keys
        self.encoders = nn.ModuleDict()
        n_encoders = 1 if config.share_image_encoder and self.image_keys else len(self.image_keys)
        for i in range(n_encoders):
            shape = config.input_features[self.image_keys[i]]
            crop = None
            if config.crop_ratio is not None and config.crop_ratio < 1:
                crop = (max(1, int(shape[0] * config.crop_ratio)), max(1, int(shape[1] * config.crop_ratio)))
            self.encoders[str(i)] = ImageEncoder(
                shape, config.image_channels, config.image_blocks_per_stage, config.image_norm,
                config.image_pool, config.image_keypoints, config.image_feature_dim, crop,
            )
        self.feature_dim = config.state_dim + config.image_feature_dim * len(self.image_keys)
        self.cond_dim = self.feature_dim * config.n_obs_steps

    def forward(self, state: torch.Tensor | None, obs: Batch) -> torch.Tensor:
        parts = []
        for i, key in enumerate(self.image_keys):
            images = obs[key]
            b, t = images.shape[:2]
            encoder = self.encoders["0" if len(self.encoders) == 1 else str(i)]
            parts.append(encoder(images.flatten(0, 1)).reshape(b, t, -1))
        if state is not None:
            parts.append(state)
        return torch.cat(parts, dim=-1).flatten(1)


class DiffusionModel(nn.Module):
    """The trainable part (observation encoder + ε-network); its EMA copy is what inference uses."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.obs_encoder = DiffusionObsEncoder(config)
        self.unet = ConditionalUnet1D(
            config.action_dim, self.obs_encoder.cond_dim, tuple(config.down_dims), config.kernel_size,
            config.n_groups, config.diffusion_step_embed_dim, config.film_scale,
        )


class DiffusionPolicy(Policy):
    """Diffusion Policy with a conditional 1-D U-Net, DDPM training, DDIM/DDPM sampling and EMA weights."""

    name: ClassVar[str] = "diffusion"
    config_class: ClassVar[type[PolicyConfig]] = DiffusionConfig
    config: DiffusionConfig

    def __init__(self, config: DiffusionConfig, stats: dict[str, Any] | None = None):
        super().__init__(config, stats)
        self.scheduler = config.make_scheduler()
        self.model = DiffusionModel(config)
        self.ema_model: DiffusionModel | None = None
        if config.use_ema:
            self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.int64))

    @property
    def inference_model(self) -> DiffusionModel:
        """The EMA weights when EMA is on, else the trained weights."""
        return self.ema_model if self.ema_model is not None else self.model

    def train(self, mode: bool = True) -> DiffusionPolicy:
        super().train(mode)
        if self.ema_model is not None:
            self.ema_model.eval()  # the average is never trained (and must not random-crop)
        return self

    def encode_observations(self, model: DiffusionModel, obs: Batch) -> torch.Tensor:
        """Global conditioning ``(B, n_obs_steps · F)`` from raw observations ``(B, n_obs_steps, ...)``."""
        return model.obs_encoder(self.normalized_state(obs), obs)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        self.validate_batch(batch)
        cond = self.encode_observations(self.model, batch)
        x0 = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY])
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        eps = self.model.unet(self.scheduler.add_noise(x0, noise, t), t, cond)
        mask = self.valid_mask(batch)[..., None]
        loss = (F.mse_loss(eps, noise, reduction="none") * mask).sum() / (mask.sum() * x0.shape[-1]).clamp_min(1.0)
        return loss, {"mse": float(loss.detach())}

    def sample(self, cond: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise from ``noise`` (``(B, horizon, A)``; standard normal if None) to normalised actions."""
        cfg = self.config
        model = self.inference_model
        b = cond.shape[0]
        x = noise.to(cond) if noise is not None else torch.randn(b, cfg.horizon, cfg.action_dim, device=cond.device)
        for t in self.scheduler.timesteps(cfg.num_inference_steps):
            eps = model.unet(x, torch.full((b,), t, dtype=torch.int64, device=x.device), cond)
            step_noise = torch.randn_like(x) if cfg.sampler == "ddpm" else None
            x = self.scheduler.step(cfg.sampler, eps, t, x, cfg.num_inference_steps, step_noise)
        return x

    def _predict(self, obs: Batch, noise: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if noise is not None and tuple(noise.shape[1:]) != (cfg.horizon, cfg.action_dim):
            raise ValueError(f"noise: expected shape (B, {cfg.horizon}, {cfg.action_dim}), got {tuple(noise.shape)}")
        x = self.sample(self.encode_observations(self.inference_model, obs), noise)
        actions = self.normalizer.unnormalize(ACTION_KEY, x)
        start = cfg.n_obs_steps - 1
        return actions[:, start : start + cfg.n_action_steps]

    def after_optimizer_step(self) -> None:
        """Update the EMA weights (call after every optimiser step)."""
        if self.ema_model is None:
            return
        cfg = self.config
        decay = ema_decay(int(self.ema_step), cfg.ema_power, cfg.ema_inv_gamma, cfg.ema_min_decay, cfg.ema_max_decay,
                          cfg.ema_update_after_step)
        ema_update_(self.ema_model, self.model, decay)
        self.ema_step += 1

    def make_lr_scheduler(self, optimizer: torch.optim.Optimizer, num_training_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """Cosine decay to 0 over ``num_training_steps`` after ``lr_warmup_steps`` of linear warm-up (as the paper)."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(self.config.lr_warmup_steps, num_training_steps))
