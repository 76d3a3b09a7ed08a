"""Export a policy to ONNX (opset 17) for ONNX Runtime; :mod:`policies.onnx_runner` runs the result.

What is exported:

- BC and ACT: one graph, ``policy.onnx``, from raw observations (state float32
  ``(B, n_obs_steps, D)``, images uint8 ``(B, n_obs_steps, H, W, 3)``, one input per feature,
  named by its key) to the un-normalised action chunk ``(B, chunk_length, A)``.
  Normalisation is inside the graph.
- Diffusion Policy: two graphs from the EMA weights — ``obs_encoder.onnx`` (observations ->
  ``global_cond``) and ``denoiser.onnx`` (``sample`` ``(B, horizon, A)``, ``timestep`` int64
  ``(B,)``, ``global_cond`` -> ε) — and the DDIM loop runs in the runner, in numpy, with the
  same scheduler code the PyTorch policy uses. Why not unroll the loop into one graph: the
  step count (and the sampler) stays a run-time choice on the device, the graph is
  ``num_inference_steps`` times smaller, the observation encoder runs once per chunk rather
  than once per step, and the initial noise is an explicit input for reproducibility.
  The loop's per-step cost in Python is a few microseconds against a denoiser call.

``onnx_policy.json`` beside the graphs carries what the runner needs (type, features,
horizons, ensembling, scheduler settings, action un-normalisation for Diffusion Policy).

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it ships with torch and
needs no further package, while the dynamo exporter, torch's default since 2.9, needs
``onnxscript``. Both write the same operators for these models.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policies.base import Policy
from policies.config import ACTION_KEY
from policies.errors import PolicyError
from policies.onnx_runner import ONNX_FORMAT, ONNX_META_FILE, ONNX_VERSION

DEFAULT_OPSET = 17


class _ChunkGraph(nn.Module):
    """Raw observations (positional, in feature order) -> un-normalised action chunk."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy
        self.keys = list(policy.config.input_features)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.policy._predict(dict(zip(self.keys, inputs)))


class _ObsEncoderGraph(nn.Module):
    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy
        self.keys = list(policy.config.input_features)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.policy.encode_observations(self.policy.inference_model, dict(zip(self.keys, inputs)))


class _DenoiserGraph(nn.Module):
    def __init__(self, policy: Policy):
        super().__init__()
        self.unet = policy.inference_model.unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, global_cond)


def example_observations(policy: Policy, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Zero observations of the right shapes and dtypes, ``(batch_size, n_obs_steps, ...)``."""
    cfg = policy.config
    out = {}
    for key, shape in cfg.input_features.items():
        dtype = torch.uint8 if key in cfg.image_keys else torch.float32
        out[key] = torch.zeros(batch_size, cfg.n_obs_steps, *shape, dtype=dtype)
    return out


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str], opset: int) -> None:
    dynamic = {name: {0: "batch"} for name in [*inputs, *outputs]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
            opset_version=opset, dynamo=False, do_constant_folding=True,
        )


def export_onnx(policy: Policy, directory: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> Path:
    """Write ``policy``'s ONNX graph(s) and ``onnx_policy.json`` to ``directory``; return the directory."""
    if opset < 17:
        raise PolicyError(f"ONNX opset {opset} is too old; Ark exports with opset >= 17")
    if importlib.util.find_spec("onnx") is None:  # torch's exporter serialises through it
        raise PolicyError("ONNX export needs the 'onnx' package: pip install 'ark-robotics[learn]'")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = policy.config
    keys = list(cfg.input_features)
    device = policy.device
    was_training = policy.training
    policy.cpu().eval()
    meta: dict[str, Any] = {
        "format": ONNX_FORMAT,
        "version": ONNX_VERSION,
        "type": policy.name,
        "opset": opset,
        "input_features": {k: list(v) for k, v in cfg.input_features.items()},
        "action_dim": cfg.action_dim,
        "n_obs_steps": cfg.n_obs_steps,
        "n_action_steps": cfg.n_action_steps,
        "chunk_length": cfg.chunk_length,
        "temporal_ensemble_coeff": getattr(cfg, "temporal_ensemble_coeff", None),
    }
    try:
        example = tuple(example_observations(policy).values())
        with torch.no_grad():
            if policy.name == "diffusion":
                _export(_ObsEncoderGraph(policy), example, out / "obs_encoder.onnx", keys, ["global_cond"], opset)
                cond = policy.encode_observations(policy.inference_model, dict(zip(keys, example)))
                sample = torch.zeros(1, cfg.horizon, cfg.action_dim)
                step = torch.zeros(1, dtype=torch.int64)
                _export(_DenoiserGraph(policy), (sample, step, cond), out / "denoiser.onnx",
                        ["sample", "timestep", "global_cond"], ["epsilon"], opset)
                scale, offset = policy.normalizer.affine(ACTION_KEY)
                meta["graphs"] = {"obs_encoder": "obs_encoder.onnx", "denoiser": "denoiser.onnx"}
                meta["diffusion"] = {
                    "horizon": cfg.horizon,
                    "num_train_timesteps": cfg.num_train_timesteps,
                    "beta_schedule": cfg.beta_schedule,
                    "clip_sample": cfg.clip_sample,
                    "clip_sample_range": cfg.clip_sample_range,
                    "sampler": cfg.sampler,
                    "num_inference_steps": cfg.num_inference_steps,
                    "action_scale": scale.tolist(),
                    "action_offset": offset.tolist(),
                }
            else:
                _export(_ChunkGraph(policy), example, out / "policy.onnx", keys, [ACTION_KEY], opset)
                meta["graphs"] = {"policy": "policy.onnx"}
    finally:
        policy.to(device).train(was_training)
    (out / ONNX_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out
