"""Run an exported policy with ONNX Runtime — numpy and onnxruntime only, no torch — behind the policy interface.

``OnnxPolicy(dir)`` reads what :func:`policies.onnx_export.export_onnx` wrote and offers
``reset``, ``select_action``, ``predict_chunk`` and ``predict_chunk_batch`` with the same
semantics (history, chunk queue, temporal ensembling, input checks) as the PyTorch policy.
For Diffusion Policy it runs the observation encoder once and then the denoising loop,
stepping with the same scheduler code as PyTorch; ``num_inference_steps`` and ``sampler``
may be changed at construction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.chunking import ActionChunker
from policies.errors import CheckpointError, PolicyError
from policies.noise_scheduler import NoiseScheduler
from policies.observations import check_observations

ONNX_FORMAT = "ark-onnx-policy"
ONNX_VERSION = 1
ONNX_META_FILE = "onnx_policy.json"


class OnnxPolicy:
    """An exported policy under ONNX Runtime.

    ``providers``: ONNX Runtime execution providers (default: CPU). ``num_inference_steps`` /
    ``sampler``: override the exported Diffusion Policy's sampling. ``seed``: of the numpy
    generator that draws the initial noise when none is given.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
        threads: int | None = None,
    ):
        import onnxruntime as ort

        path = Path(directory)
        meta_path = path / ONNX_META_FILE
        if not meta_path.is_file():
            raise CheckpointError(f"{path}: not an exported ONNX policy (no {ONNX_META_FILE})")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{meta_path}: truncated or corrupt JSON ({exc})") from None
        if meta.get("format") != ONNX_FORMAT or not isinstance(meta.get("version"), int) or meta["version"] > ONNX_VERSION:
            raise CheckpointError(f"{meta_path}: not an ONNX policy export this Ark can read")
        self.meta = meta
        self.type: str = meta["type"]
        self.input_features = {k: tuple(v) for k, v in meta["input_features"].items()}
        self.n_obs_steps: int = meta["n_obs_steps"]
        self.action_dim: int = meta["action_dim"]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.sessions = {}
        for name, file in meta["graphs"].items():
            try:
                self.sessions[name] = ort.InferenceSession(
                    str(path / file), options, providers=list(providers or ["CPUExecutionProvider"])
                )
            except Exception as exc:  # onnxruntime raises its own exception types for bad files
                raise CheckpointError(f"{path / file} is missing, truncated or corrupt ({str(exc).splitlines()[0]})") from None
        self._rng = np.random.default_rng(seed)
        if self.type == "diffusion":
            d = meta["diffusion"]
            self.horizon: int = d["horizon"]
            self.num_inference_steps = int(num_inference_steps or d["num_inference_steps"])
            self.sampler = sampler or d["sampler"]
            if self.sampler not in ("ddim", "ddpm"):
                raise PolicyError(f"sampler: expected 'ddim' or 'ddpm', got {self.sampler!r}")
            self.scheduler = NoiseScheduler(
                d["num_train_timesteps"], d["beta_schedule"], clip_sample=d["clip_sample"], clip_sample_range=d["clip_sample_range"]
            )
            self.scheduler.timesteps(self.num_inference_steps)  # validates the step count
            self._action_scale = np.asarray(d["action_scale"], dtype=np.float32)
            self._action_offset = np.asarray(d["action_offset"], dtype=np.float32)
        self._chunker = ActionChunker(self.n_obs_steps, meta["n_action_steps"], meta["temporal_ensemble_coeff"])

    @property
    def chunk_length(self) -> int:
        return int(self.meta["chunk_length"])

    def reset(self) -> None:
        """Forget the observation history and queued actions."""
        self._chunker.reset()

    def select_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The action to execute now, ``float32 (A,)``, for one un-batched observation (as ``Policy.select_action``)."""
        return self._chunker.step(check_observations(obs, self.input_features), self.predict_chunk)

    def predict_chunk(self, obs_history: Mapping[str, Any], noise: Any = None) -> np.ndarray:
        """Actions ``(chunk_length, A)`` for one history ``(n_obs_steps, ...)``; ``noise`` ``(horizon, A)`` for diffusion."""
        history = check_observations(obs_history, self.input_features, (self.n_obs_steps,), "observation history")
        batch = {k: v[None] for k, v in history.items()}
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float32)[None]
        return self.predict_chunk_batch(batch, noise)[0]

    def predict_chunk_batch(self, obs: Mapping[str, np.ndarray], noise: np.ndarray | None = None) -> np.ndarray:
        """Batched chunks ``(B, chunk_length, A)`` from observations ``(B, n_obs_steps, ...)``."""
        feeds = {}
        for key, shape in self.input_features.items():
            dtype = np.uint8 if len(shape) == 3 else np.float32
            feeds[key] = np.ascontiguousarray(obs[key], dtype=dtype)
        if self.type != "diffusion":
            return self.sessions["policy"].run(None, feeds)[0]
        cond = self.sessions["obs_encoder"].run(None, feeds)[0]
        b = cond.shape[0]
        if noise is None:
            x = self._rng.standard_normal((b, self.horizon, self.action_dim), dtype=np.float32)
        else:
            x = np.ascontiguousarray(noise, dtype=np.float32)
            if x.shape != (b, self.horizon, self.action_dim):
                raise PolicyError(f"noise: expected shape ({b}, {self.horizon}, {self.action_dim}), got {x.shape}")
        denoiser = self.sessions["denoiser"]
        for t in self.scheduler.timesteps(self.num_inference_steps):
            eps = denoiser.run(None, {"sample": x, "timestep": np.full((b,), t, dtype=np.int64), "global_cond": cond})[0]
            step_noise = self._rng.standard_normal(x.shape, dtype=np.float32) if self.sampler == "ddpm" else None
            x = self.scheduler.step(self.sampler, eps, t, x, self.num_inference_steps, step_noise)
        actions = (x - self._action_offset) / self._action_scale
        start = self.n_obs_steps - 1
        return actions[:, start : start + self.meta["n_action_steps"]].astype(np.float32)
