"""BC-MLP: behaviour cloning with an MLP, single-step (chunk_size 1) or chunked, as a baseline.

Each observation step is encoded (state through an MLP, each camera through the small
ResNet with spatial-softmax pooling), the steps' features are concatenated, and an MLP
regresses ``chunk_size`` normalised actions. Loss: MSE (or L1) over non-padded actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ark.errors import ConfigError
from policies.base import Batch, Policy
from policies.config import ACTION_KEY, PolicyConfig, _positive
from policies.encoders import ImageEncoder, StateMLP


@dataclass
class BCConfig(PolicyConfig):
    """BC-MLP hyperparameters.

    ``chunk_size``: actions predicted per forward pass (1 = classic single-step BC).
    ``n_action_steps``: actions executed per prediction (None = ``chunk_size``).
    ``state_hidden_dims`` / ``state_feature_dim``: the state MLP. ``image_*``: the CNN (channels
    per ResNet stage, BasicBlocks per stage, ``group``/``batch`` norm, ``spatial_softmax``/``avg``
    pooling, keypoints, output features). ``hidden_dims``: the action head. ``loss``: ``mse`` or ``l1``.
    """

    type: ClassVar[str] = "bc"

    n_obs_steps: int = 1
    chunk_size: int = 1
    n_action_steps: int | None = None  # type: ignore[assignment]
    state_hidden_dims: tuple[int, ...] = (128,)
    state_feature_dim: int = 64
    image_channels: tuple[int, ...] = (16, 32, 64)
    image_blocks_per_stage: int = 1
    image_norm: str = "group"
    image_pool: str = "spatial_softmax"
    image_keypoints: int = 32
    image_feature_dim: int = 64
    hidden_dims: tuple[int, ...] = (256, 256)
    dropout: float = 0.0
    loss: str = "mse"
    optimizer_lr: float = 1e-3
    optimizer_weight_decay: float = 1e-6

    def __post_init__(self) -> None:
        if self.n_action_steps is None:
            self.n_action_steps = self.chunk_size
        super().__post_init__()
        _positive(self, "chunk_size")
        if self.n_action_steps > self.chunk_size:
            raise ConfigError(f"n_action_steps: expected <= chunk_size ({self.chunk_size}), got {self.n_action_steps}")
        if self.loss not in ("mse", "l1"):
            raise ConfigError(f"loss: expected 'mse' or 'l1', got {self.loss!r}")

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def chunk_length(self) -> int:
        return self.chunk_size


class BCPolicy(Policy):
    """Behaviour cloning with an MLP head over encoded observation steps."""

    name: ClassVar[str] = "bc"
    config_class: ClassVar[type[PolicyConfig]] = BCConfig
    config: BCConfig

    def __init__(self, config: BCConfig, stats: dict[str, Any] | None = None):
        super().__init__(config, stats)
        per_step = 0
        self.state_encoder = None
        if config.state_keys:
            self.state_encoder = StateMLP(config.state_dim, config.state_hidden_dims, config.state_feature_dim)
            per_step += config.state_feature_dim
        self.image_encoders = nn.ModuleDict()
        for key in config.image_keys:
            self.image_encoders[key.replace(".", "__")] = ImageEncoder(
                config.input_features[key],
                config.image_channels,
                config.image_blocks_per_stage,
                config.image_norm,
                config.image_pool,
                config.image_keypoints,
                config.image_feature_dim,
            )
            per_step += config.image_feature_dim
        layers: list[nn.Module] = []
        dims = [per_step * config.n_obs_steps, *config.hidden_dims]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
        layers.append(nn.Linear(dims[-1], config.chunk_size * config.action_dim))
        self.head = nn.Sequential(*layers)

    def _features(self, obs: Batch) -> torch.Tensor:
        parts = []
        state = self.normalized_state(obs)
        if state is not None:
            parts.append(self.state_encoder(state))
        for key in self.config.image_keys:
            images = obs[key]
            b, t = images.shape[:2]
            feats = self.image_encoders[key.replace(".", "__")](images.flatten(0, 1))
            parts.append(feats.reshape(b, t, -1))
        return torch.cat(parts, dim=-1).flatten(1)  # (B, T_obs * per_step)

    def _normalized_chunk(self, obs: Batch) -> torch.Tensor:
        out = self.head(self._features(obs))
        return out.reshape(out.shape[0], self.config.chunk_size, self.config.action_dim)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        self.validate_batch(batch)
        target = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY])
        pred = self._normalized_chunk(batch)
        err = F.mse_loss(pred, target, reduction="none") if self.config.loss == "mse" else (pred - target).abs()
        mask = self.valid_mask(batch)[..., None]
        loss = (err * mask).sum() / (mask.sum() * err.shape[-1]).clamp_min(1.0)
        return loss, {self.config.loss: float(loss.detach())}

    def _predict(self, obs: Batch, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.normalizer.unnormalize(ACTION_KEY, self._normalized_chunk(obs))
