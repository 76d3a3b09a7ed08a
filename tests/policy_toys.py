"""Tiny policies and a synthetic imitation problem shared by the policy and ONNX tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from policies.base import Policy
from policies.normalize import compute_stats
from policies.registry import make_policy

KINDS = ("bc", "act", "diffusion")
STATE_DIM, ACTION_DIM, IMAGE_HW = 3, 2, (16, 16)

# Small enough to train a few dozen steps in about a second on one CPU core.
TINY: dict[str, dict[str, Any]] = {
    "bc": dict(chunk_size=4, n_action_steps=3, hidden_dims=(64, 64), state_hidden_dims=(32,), state_feature_dim=32,
               image_channels=(8, 16), image_keypoints=8, image_feature_dim=16),
    "act": dict(chunk_size=4, dim_model=32, n_heads=4, dim_feedforward=64, n_encoder_layers=2, n_decoder_layers=2,
                n_vae_encoder_layers=1, latent_dim=8, image_channels=(8, 16), image_blocks_per_stage=1),
    "diffusion": dict(horizon=8, n_action_steps=4, down_dims=(16, 32), n_groups=4, diffusion_step_embed_dim=16,
                      image_channels=(8, 16), image_keypoints=8, image_feature_dim=16, num_inference_steps=4),
}

_W = np.random.default_rng(42).standard_normal((STATE_DIM, ACTION_DIM))


def features(images: bool = False) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    inputs = {"observation.state": [STATE_DIM]}
    if images:
        inputs["observation.rgb"] = [*IMAGE_HW, 3]
    return inputs, {"action": [ACTION_DIM]}


def expert(states: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The demonstrator: action at frame offset d from state s is tanh(s·W) + 0.1·d (a smooth, exact target)."""
    return np.tanh(states @ _W)[..., None, :] + 0.1 * offsets[:, None]


def toy_stats() -> dict[str, dict[str, list[float]]]:
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, (2000, STATE_DIM))
    a = expert(s, np.arange(-2, 10))
    return compute_stats({"observation.state": s, "action": a})


def tiny_policy(kind: str, images: bool = False, **overrides: Any) -> Policy:
    torch.manual_seed(0)
    inputs, outputs = features(images)
    return make_policy(kind, inputs, outputs, toy_stats(), **{**TINY[kind], **overrides})


def toy_batch(policy: Policy, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A training batch of the synthetic problem in the dataset's format (current state repeated over the history)."""
    cfg = policy.config
    s = rng.uniform(-1, 1, (batch_size, STATE_DIM)).astype(np.float32)
    offsets = np.asarray(cfg.action_delta_indices, dtype=np.float32)
    batch = {
        "observation.state": torch.from_numpy(np.repeat(s[:, None], cfg.n_obs_steps, axis=1)),
        "action": torch.from_numpy(expert(s, offsets).astype(np.float32)),
        "action_is_pad": torch.zeros(batch_size, len(offsets), dtype=torch.bool),
    }
    for key in cfg.image_keys:
        batch[key] = torch.from_numpy(rng.integers(0, 256, (batch_size, cfg.n_obs_steps, *IMAGE_HW, 3), dtype=np.uint8))
    return batch


def random_observations(policy: Policy, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    cfg = policy.config
    out = {}
    for key, shape in cfg.input_features.items():
        if key in cfg.image_keys:
            out[key] = rng.integers(0, 256, (batch_size, cfg.n_obs_steps, *shape), dtype=np.uint8)
        else:
            out[key] = rng.uniform(-1, 1, (batch_size, cfg.n_obs_steps, *shape)).astype(np.float32)
    return out


def train(policy: Policy, steps: int, batch_size: int = 32, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    opt = policy.make_optimizer()
    policy.train()
    for _ in range(steps):
        loss, _ = policy(toy_batch(policy, batch_size, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy.after_optimizer_step()
