"""ACT: Action Chunking with Transformers (Zhao et al., RSS 2023, "Learning Fine-Grained Bimanual
Manipulation with Low-Cost Hardware").

A conditional VAE. Training: a transformer *CVAE encoder* reads [CLS, joint state, action
chunk] and gives the mean and log-variance of a style latent z (32-d). The *policy* is a
DETR-style transformer encoder–decoder: the encoder reads [z, state, image feature tokens]
(learned positions for the first two, 2-D sinusoidal positions for the CNN feature map), the
decoder turns ``chunk_size`` learned queries into the action chunk. Loss: L1 reconstruction
over non-padded actions + β·KL(q(z|·) ‖ N(0, I)) with β = 10. Inference: z = 0 (the prior
mean) and temporal ensembling of overlapping chunks, w_i = exp(-m·i), m = 0.01.

Defaults are the paper's (Table of hyperparameters: chunk 100 at 50 Hz, 4 encoder and 7
decoder layers, 4 CVAE-encoder layers, d_model 512, 8 heads, feed-forward 3200, dropout 0.1,
AdamW lr 1e-5, weight decay 1e-4) except the image backbone: ResNet-18 pretrained on ImageNet
there, a small ResNet trained from scratch here (no downloaded weights). The reference code
effectively uses only the first of its 7 decoder layers (a known quirk of its DETR port);
``n_decoder_layers`` is 7 as the paper states. For CPU training use a smaller model and a
larger learning rate (e.g. d_model 128–256, 1–2 decoder layers, lr 1e-4) — set them in the
training recipe, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ark import kernels
from ark.errors import ConfigError
from policies.base import PAD_KEY, Batch, Policy
from policies.config import ACTION_KEY, PolicyConfig, _positive
from policies.encoders import ResNetBackbone, images_to_float

PAPER_CHUNK_SIZE = 100
PAPER_CONTROL_HZ = 50.0


def chunk_size_for_rate(control_hz: float, reference_chunk: int = PAPER_CHUNK_SIZE, reference_hz: float = PAPER_CONTROL_HZ) -> int:
    """Chunk size covering the same time span as the paper's 100 steps at 50 Hz (2 s) at ``control_hz``."""
    if control_hz <= 0:
        raise ConfigError(f"control rate: expected > 0 Hz, got {control_hz}")
    return max(1, round(reference_chunk * control_hz / reference_hz))


@dataclass
class ACTConfig(PolicyConfig):
    """ACT hyperparameters (defaults from the paper; see the module docstring for the backbone).

    ``chunk_size``: actions per prediction (k; :func:`chunk_size_for_rate` scales it to a
    control rate). ``temporal_ensemble_coeff``: m of the ensemble weights, or None to execute
    ``n_action_steps`` actions of each chunk open-loop. ``n_action_steps``: None = 1 with
    ensembling, ``chunk_size`` without. ``kl_weight``: β. ``use_vae``: False trains a plain
    deterministic transformer (z = 0). ``optimizer_lr_backbone``: learning rate of the CNN.
    """

    type: ClassVar[str] = "act"

    n_obs_steps: int = 1
    chunk_size: int = PAPER_CHUNK_SIZE
    n_action_steps: int | None = None  # type: ignore[assignment]
    temporal_ensemble_coeff: float | None = 0.01
    dim_model: int = 512
    n_heads: int = 8
    dim_feedforward: int = 3200
    feedforward_activation: str = "relu"
    n_encoder_layers: int = 4
    n_decoder_layers: int = 7
    n_vae_encoder_layers: int = 4
    pre_norm: bool = False
    dropout: float = 0.1
    latent_dim: int = 32
    use_vae: bool = True
    kl_weight: float = 10.0
    image_channels: tuple[int, ...] = (16, 32, 64)
    image_blocks_per_stage: int = 2
    image_norm: str = "group"
    optimizer_lr: float = 1e-5
    optimizer_lr_backbone: float = 1e-5
    optimizer_weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.n_action_steps is None:
            self.n_action_steps = 1 if self.temporal_ensemble_coeff is not None else self.chunk_size
        super().__post_init__()
        _positive(self, "chunk_size", "dim_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "latent_dim")
        if self.n_obs_steps != 1:
            raise ConfigError(f"n_obs_steps: ACT conditions on the current observation only, expected 1, got {self.n_obs_steps}")
        if self.n_action_steps > self.chunk_size:
            raise ConfigError(f"n_action_steps: expected <= chunk_size ({self.chunk_size}), got {self.n_action_steps}")
        if self.temporal_ensemble_coeff is not None and self.n_action_steps != 1:
            raise ConfigError(
                f"n_action_steps: temporal ensembling queries the policy every step, expected 1, got {self.n_action_steps}"
            )
        if self.dim_model % self.n_heads:
            raise ConfigError(f"dim_model: expected a multiple of n_heads ({self.n_heads}), got {self.dim_model}")
        if self.feedforward_activation not in _ACTIVATIONS:
            raise ConfigError(f"feedforward_activation: expected one of {sorted(_ACTIVATIONS)}, got {self.feedforward_activation!r}")
        if self.use_vae and self.n_vae_encoder_layers < 1:
            raise ConfigError(f"n_vae_encoder_layers: expected >= 1 with use_vae, got {self.n_vae_encoder_layers}")

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def chunk_length(self) -> int:
        return self.chunk_size


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def sinusoid_table(n_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sinusoidal position table ``(n_positions, dim)`` (Vaswani et al.), used by the CVAE encoder."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)


def sine_position_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2-D sine positions for a ``height`` × ``width`` feature map: ``(height*width, dim)``.

    Half of ``dim`` encodes the row, half the column; coordinates are scaled to (0, 2π].
    """
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = temperature ** (2 * torch.div(torch.arange(half), 2, rounding_mode="floor") / half)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        p = coord[..., None] / dim_t  # (h, w, half)
        return torch.stack([p[..., 0::2].sin(), p[..., 1::2].cos()], dim=-1).flatten(-2)

    return torch.cat([encode(y), encode(x)], dim=-1).reshape(height * width, 2 * half)


class _Attention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (same parameters, same checkpoints) whose inference path runs the
    attention through ``ark.kernels.attention`` (a Triton kernel on a GPU, SDPA on a CPU).

    Training with dropout, masks, attention weights, ``torch.jit`` tracing (ONNX export) and
    ``ARK_KERNELS=off`` take the stock path, which the kernel path reproduces step for step
    (three input projections, heads split the same way, one output projection).
    """

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if ((self.training and self.dropout > 0) or key_padding_mask is not None or attn_mask is not None
                or need_weights or kwargs.get("is_causal") or self.batch_first or not self._qkv_same_embed_dim
                or torch.jit.is_tracing() or kernels.kernel_mode() == "off"):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, **kwargs)
        t, b, e = query.shape
        s, h = key.shape[0], self.num_heads
        d = e // h
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        # (S, B, E) -> (B, H, S, D), the same views F.multi_head_attention_forward takes
        q = F.linear(query, w_q, b_q).view(t, b * h, d).transpose(0, 1).view(b, h, t, d)
        k = F.linear(key, w_k, b_k).view(s, b * h, d).transpose(0, 1).view(b, h, s, d)
        v = F.linear(value, w_v, b_v).view(s, b * h, d).transpose(0, 1).view(b, h, s, d)
        y = kernels.attention(q, k, v).permute(2, 0, 1, 3).contiguous().view(b * t, e)
        return F.linear(y, self.out_proj.weight, self.out_proj.bias).view(t, b, e), None


class _EncoderLayer(nn.Module):
    """DETR encoder layer: positions are added to queries and keys (not values) at every layer."""

    def __init__(self, cfg: ACTConfig):
        super().__init__()
        d = cfg.dim_model
        self.self_attn = _Attention(d, cfg.n_heads, dropout=cfg.dropout)
        self.linear1, self.linear2 = nn.Linear(d, cfg.dim_feedforward), nn.Linear(cfg.dim_feedforward, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout, self.dropout1, self.dropout2 = (nn.Dropout(cfg.dropout) for _ in range(3))
        self.activation = _ACTIVATIONS[cfg.feedforward_activation]
        self.pre_norm = cfg.pre_norm

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h + pos, h + pos, h, key_padding_mask=key_padding_mask, need_weights=False)[0])
            return x + self.dropout2(self._ff(self.norm2(x)))
        q = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(q, q, x, key_padding_mask=key_padding_mask, need_weights=False)[0]))
        return self.norm2(x + self.dropout2(self._ff(x)))


class _DecoderLayer(nn.Module):
    """DETR decoder layer: self-attention over the queries, cross-attention to the encoder memory, feed-forward."""

    def __init__(self, cfg: ACTConfig):
        super().__init__()
        d = cfg.dim_model
        self.self_attn = _Attention(d, cfg.n_heads, dropout=cfg.dropout)
        self.cross_attn = _Attention(d, cfg.n_heads, dropout=cfg.dropout)
        self.linear1, self.linear2 = nn.Linear(d, cfg.dim_feedforward), nn.Linear(cfg.dim_feedforward, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(cfg.dropout) for _ in range(4))
        self.activation = _ACTIVATIONS[cfg.feedforward_activation]
        self.pre_norm = cfg.pre_norm

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h + query_pos, h + query_pos, h, need_weights=False)[0])
            h = self.norm2(x)
            x = x + self.dropout2(self.cross_attn(h + query_pos, memory + pos, memory, need_weights=False)[0])
            return x + self.dropout3(self._ff(self.norm3(x)))
        q = x + query_pos
        x = self.norm1(x + self.dropout1(self.self_attn(q, q, x, need_weights=False)[0]))
        x = self.norm2(x + self.dropout2(self.cross_attn(x + query_pos, memory + pos, memory, need_weights=False)[0]))
        return self.norm3(x + self.dropout3(self._ff(x)))


class _Encoder(nn.Module):
    def __init__(self, cfg: ACTConfig, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(n_layers))
        self.norm = nn.LayerNorm(cfg.dim_model) if cfg.pre_norm else nn.Identity()

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos, key_padding_mask)
        return self.norm(x)


class _Decoder(nn.Module):
    def __init__(self, cfg: ACTConfig):
        super().__init__()
        self.layers = nn.ModuleList(_DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.norm = nn.LayerNorm(cfg.dim_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, pos, query_pos)
        return self.norm(x)


class ACTPolicy(Policy):
    """Action Chunking with Transformers. Sequences inside are (S, B, d), as in the reference code."""

    name: ClassVar[str] = "act"
    config_class: ClassVar[type[PolicyConfig]] = ACTConfig
    config: ACTConfig

    def __init__(self, config: ACTConfig, stats: dict[str, Any] | None = None):
        super().__init__(config, stats)
        d, k, a = config.dim_model, config.chunk_size, config.action_dim
        has_state = bool(config.state_keys)

        # CVAE encoder: [CLS, state, a_1..a_k] -> (mu, logvar) of z. Used in training only.
        if config.use_vae:
            self.vae_cls = nn.Embedding(1, d)
            self.vae_state_proj = nn.Linear(config.state_dim, d) if has_state else None
            self.vae_action_proj = nn.Linear(a, d)
            self.vae_encoder = _Encoder(config, config.n_vae_encoder_layers)
            self.vae_latent_proj = nn.Linear(d, 2 * config.latent_dim)
            n_vae_tokens = 1 + int(has_state) + k
            self.register_buffer("vae_pos", sinusoid_table(n_vae_tokens, d)[:, None], persistent=False)

        # Policy: encoder over [z, state, image tokens], decoder with k learned queries.
        self.latent_proj = nn.Linear(config.latent_dim, d)
        self.state_proj = nn.Linear(config.state_dim, d) if has_state else None
        self.pos_1d = nn.Embedding(1 + int(has_state), d)
        self.backbone = None
        if config.image_keys:
            self.backbone = ResNetBackbone(config.image_channels, config.image_blocks_per_stage, config.image_norm)
            self.image_proj = nn.Conv2d(self.backbone.out_channels, d, 1)
            for key in config.image_keys:
                h, w = config.input_features[key][:2]
                _, fh, fw = self.backbone.output_shape(h, w)
                self.register_buffer(_pos_name(key), sine_position_2d(fh, fw, d)[:, None], persistent=False)
        self.encoder = _Encoder(config, config.n_encoder_layers)
        self.decoder = _Decoder(config)
        self.queries = nn.Embedding(k, d)
        self.action_head = nn.Linear(d, a)
        for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # ----- model ---------------------------------------------------------------------------
    def _latent_posterior(self, state: torch.Tensor | None, actions: torch.Tensor, is_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = actions.shape[0]
        tokens = [self.vae_cls.weight[None].expand(b, -1, -1)]
        if self.vae_state_proj is not None:
            tokens.append(self.vae_state_proj(state)[:, None])
        tokens.append(self.vae_action_proj(actions))
        x = torch.cat(tokens, dim=1).transpose(0, 1)  # (S, B, d)
        n_fixed = x.shape[0] - actions.shape[1]
        mask = torch.cat([torch.zeros(b, n_fixed, dtype=torch.bool, device=x.device), is_pad], dim=1)
        cls = self.vae_encoder(x, self.vae_pos, key_padding_mask=mask)[0]
        mu, logvar = self.vae_latent_proj(cls).chunk(2, dim=-1)
        return mu, logvar

    def _decode(self, obs: Batch, state: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """Normalised action chunk ``(B, k, A)`` from the observation and latent z."""
        tokens = [self.latent_proj(z)]
        if self.state_proj is not None:
            tokens.append(self.state_proj(state))
        x = torch.stack(tokens, dim=0)  # (n_1d, B, d)
        pos = [self.pos_1d.weight[:, None]]
        xs = [x]
        for key in self.config.image_keys:
            fmap = self.image_proj(self.backbone(images_to_float(obs[key][:, 0])))  # (B, d, h, w)
            xs.append(fmap.flatten(2).permute(2, 0, 1))
            pos.append(getattr(self, _pos_name(key)))
        memory_pos = torch.cat(pos, dim=0)
        memory = self.encoder(torch.cat(xs, dim=0), memory_pos)
        query_pos = self.queries.weight[:, None]
        target = torch.zeros(query_pos.shape[0], x.shape[1], self.config.dim_model, device=x.device)
        out = self.decoder(target, memory, memory_pos, query_pos)
        return self.action_head(out.transpose(0, 1))

    def _state(self, obs: Batch) -> torch.Tensor | None:
        state = self.normalized_state(obs)
        return None if state is None else state[:, 0]

    # ----- Policy interface ----------------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        self.validate_batch(batch)
        state = self._state(batch)
        actions = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY])
        b = actions.shape[0]
        if self.config.use_vae:
            is_pad = batch[PAD_KEY].to(torch.bool) if PAD_KEY in batch else torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
            mu, logvar = self._latent_posterior(state, actions, is_pad)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            kld = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()
        else:
            z = torch.zeros(b, self.config.latent_dim, device=actions.device)
            kld = torch.zeros((), device=actions.device)
        pred = self._decode(batch, state, z)
        mask = self.valid_mask(batch)[..., None]
        l1 = ((pred - actions).abs() * mask).sum() / (mask.sum() * actions.shape[-1]).clamp_min(1.0)
        loss = l1 + self.config.kl_weight * kld
        return loss, {"l1": float(l1.detach()), "kld": float(kld.detach())}

    def _predict(self, obs: Batch, noise: torch.Tensor | None = None) -> torch.Tensor:
        state = self._state(obs)
        b = next(iter(obs.values())).shape[0]
        z = torch.zeros(b, self.config.latent_dim, device=self.device)  # the prior's mean
        return self.normalizer.unnormalize(ACTION_KEY, self._decode(obs, state, z))

    def optim_param_groups(self) -> list[dict[str, Any]]:
        """The CNN backbone at ``optimizer_lr_backbone``, everything else at ``optimizer_lr``."""
        backbone = {id(p) for p in self.backbone.parameters()} if self.backbone is not None else set()
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone]
        groups = [{"params": rest}]
        if backbone:
            groups.append({"params": list(self.backbone.parameters()), "lr": self.config.optimizer_lr_backbone})
        return groups


def _pos_name(key: str) -> str:
    return "image_pos__" + key.replace(".", "__")
