"""The one base class of Ark's policies: stepping, batch checks, optimiser, save and load.

A policy maps an observation history to an action chunk. Subclasses (``bc.py``, ``act.py``,
``diffusion.py``) implement :meth:`Policy.forward` (the training loss) and
:meth:`Policy._predict` (a chunk from a batch of observations); everything a user or a
training loop touches lives here:

- ``select_action(obs)``: one un-batched observation in (dict of arrays, images uint8
  ``(H, W, 3)``), one action out (``float32 (A,)``); keeps the history and chunk queue (or
  temporal ensemble) between calls until ``reset()``.
- ``predict_chunk(history)``: arrays ``(n_obs_steps, ...)`` in, actions ``(chunk_length, A)``
  starting at the current step out; ``predict_chunk_batch`` is the batched torch version.
- ``forward(batch) -> (loss, metrics)`` on the dataset's batch format (see ``validate_batch``).
- ``save(dir)`` / ``Policy.load(dir)``: ``model.safetensors`` (weights, normalisation
  statistics, EMA state) + ``config.json`` (type, format version, every hyperparameter,
  checksum). Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policies.chunking import ActionChunker
from policies.config import ACTION_KEY, PolicyConfig
from policies.errors import CheckpointError, FeatureMismatch, NonFiniteObservation, PolicyError, PolicyTypeMismatch
from policies.normalize import Normalizer
from policies.observations import check_observations

CHECKPOINT_FORMAT = "ark-policy"
CHECKPOINT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PAD_KEY = "action_is_pad"

Batch = Mapping[str, torch.Tensor]


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _fmt(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class Policy(nn.Module):
    """Base class: subclasses set ``name`` and ``config_class`` and implement ``forward`` and ``_predict``."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, config: PolicyConfig, stats: Mapping[str, Any] | None = None):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.require_features()
        self.config = config
        features = {k: (config.input_features[k][0], config.state_normalization) for k in config.state_keys}
        features[ACTION_KEY] = (config.action_dim, config.action_normalization)
        self.normalizer = Normalizer(features, stats)
        # Only ACT ensembles chunks; its config field is the m in w_i = exp(-m·i).
        ensemble = getattr(config, "temporal_ensemble_coeff", None)
        self._chunker = ActionChunker(config.n_obs_steps, config.n_action_steps, ensemble)

    # ----- what subclasses implement ----------------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:  # pragma: no cover - abstract
        """Training loss on a batch, and scalar metrics to log."""
        raise NotImplementedError

    def _predict(self, obs: Batch, noise: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        """Un-normalised actions ``(B, chunk_length, A)`` from raw observations ``(B, n_obs_steps, ...)``."""
        raise NotImplementedError

    # ----- inference ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device

    def reset(self) -> None:
        """Forget the observation history and queued actions (call at the start of every episode)."""
        self._chunker.reset()

    def select_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The action to execute now, ``float32 (A,)``, for one un-batched observation.

        Predicts a new chunk when the queue is empty (or every step with temporal ensembling)
        from the last ``n_obs_steps`` observations. Keys beyond the config's input features
        are ignored.
        """
        step_obs = check_observations(obs, self.config.input_features)
        return self._chunker.step(step_obs, self.predict_chunk)

    def predict_chunk(self, obs_history: Mapping[str, Any], noise: Any = None) -> np.ndarray:
        """Actions ``float32 (chunk_length, A)`` from the current step on, for one un-batched history.

        ``obs_history[key]`` has shape ``(n_obs_steps, *feature_shape)``, oldest first. ``noise``
        (Diffusion Policy only): the initial sample ``(horizon, A)``, for reproducible output.
        """
        history = check_observations(obs_history, self.config.input_features, (self.config.n_obs_steps,), "observation history")
        batch = {k: torch.from_numpy(np.ascontiguousarray(v))[None].to(self.device) for k, v in history.items()}
        if noise is not None:
            noise = torch.as_tensor(np.asarray(noise, dtype=np.float32))[None].to(self.device)
        return self.predict_chunk_batch(batch, noise)[0].cpu().numpy()

    def predict_chunk_batch(self, obs: Batch, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Batched :meth:`predict_chunk`: tensors ``(B, n_obs_steps, ...)`` in, ``(B, chunk_length, A)`` out.

        Runs in eval mode without gradients and restores the previous mode afterwards.
        """
        self._validate(obs, with_action=False)
        with self._eval_mode():
            return self._predict(obs, noise)

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    # ----- training -------------------------------------------------------------------------
    def validate_features(self, features: Mapping[str, Any]) -> None:
        """Check a dataset's per-step features against the config; name the first mismatch.

        ``features``: ``{key: shape}`` or ``{key: obj with .shape}`` (e.g. ``Dataset.features``).
        """
        wanted = {**self.config.input_features, **self.config.output_features}
        for key, shape in wanted.items():
            if key not in features:
                raise FeatureMismatch(f"dataset has no feature '{key}' (the policy expects shape {list(shape)})")
            got = _shape(getattr(features[key], "shape", features[key]))
            if got != tuple(shape):
                raise FeatureMismatch(f"dataset feature '{key}': expected shape {list(shape)}, got {list(got)}")

    def validate_batch(self, batch: Batch) -> None:
        """Check a training batch against the config.

        Expected: each input feature ``(B, n_obs_steps, *shape)`` (images uint8 ``(B, T, H, W, 3)``),
        ``action`` float ``(B, len(action_delta_indices), A)``, optional ``action_is_pad`` bool
        ``(B, T_act)``; float values finite.
        """
        self._validate(batch, with_action=True)

    def _validate(self, batch: Batch, with_action: bool) -> None:
        cfg = self.config
        expected = {k: (cfg.n_obs_steps, *s) for k, s in cfg.input_features.items()}
        if with_action:
            expected[ACTION_KEY] = (len(cfg.action_delta_indices), cfg.action_dim)
        batch_size = None
        for key, shape in expected.items():
            if key not in batch:
                raise FeatureMismatch(f"batch has no '{key}' (expected shape (B, {', '.join(map(str, shape))}))")
            got = tuple(batch[key].shape)
            batch_size = got[0] if batch_size is None else batch_size
            if got[1:] != shape or got[0] != batch_size:
                raise FeatureMismatch(f"batch '{key}': expected shape (B, {', '.join(map(str, shape))}), got {_fmt(got)}")
            x = batch[key]
            if key in cfg.image_keys:
                if x.dtype != torch.uint8:
                    raise FeatureMismatch(f"batch '{key}': expected uint8 images, got {x.dtype}")
            elif not bool(torch.isfinite(x).all()):
                if key == ACTION_KEY:
                    raise PolicyError(f"batch '{key}' contains NaN or inf")
                raise NonFiniteObservation(f"batch '{key}' contains NaN or inf")
        if with_action and PAD_KEY in batch:
            got = tuple(batch[PAD_KEY].shape)
            if got != (batch_size, expected[ACTION_KEY][0]):
                raise FeatureMismatch(f"batch '{PAD_KEY}': expected shape (B, {expected[ACTION_KEY][0]}), got {_fmt(got)}")

    def normalized_state(self, obs: Batch) -> torch.Tensor | None:
        """The state keys normalised and concatenated: ``(B, T, state_dim)``, or None without state features."""
        keys = self.config.state_keys
        if not keys:
            return None
        return torch.cat([self.normalizer.normalize(k, obs[k].to(torch.float32)) for k in keys], dim=-1)

    @staticmethod
    def valid_mask(batch: Batch) -> torch.Tensor:
        """``(B, T_act)`` float mask, 1 where the action is real, 0 where it is padding past the episode end."""
        action = batch[ACTION_KEY]
        if PAD_KEY not in batch:
            return torch.ones(action.shape[:2], device=action.device)
        return (~batch[PAD_KEY].to(torch.bool)).to(action.dtype)

    def optim_param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser (trainable parameters only; subclasses may split learning rates)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW with the config's learning rate, betas, eps and weight decay."""
        cfg = self.config
        return torch.optim.AdamW(
            self.optim_param_groups(),
            lr=cfg.optimizer_lr,
            betas=tuple(cfg.optimizer_betas),
            eps=cfg.optimizer_eps,
            weight_decay=cfg.optimizer_weight_decay,
        )

    def make_lr_scheduler(self, optimizer: torch.optim.Optimizer, num_training_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """Learning-rate schedule to step once per optimiser step; constant unless a subclass says otherwise."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def after_optimizer_step(self) -> None:
        """Call after every ``optimizer.step()`` (Diffusion Policy updates its EMA weights here)."""

    def set_stats(self, stats: Mapping[str, Any]) -> None:
        """Load normalisation statistics ``{key: {"min","max","mean","std": lists}}``."""
        self.normalizer.set_stats(stats)

    # ----- checkpoints -------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` to ``directory`` (created if needed); return it.

        The weights are written first and ``config.json`` (with the weights' SHA-256) last, each
        through a temporary file and a rename, so an interrupted save never looks complete.
        """
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        tmp = out / (MODEL_FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": CHECKPOINT_FORMAT, "policy_type": self.name})
        os.replace(tmp, out / MODEL_FILE)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "type": self.name,
            "config": self.config.to_dict(),
            "sha256": {MODEL_FILE: _sha256(out / MODEL_FILE)},
        }
        tmp = out / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, out / CONFIG_FILE)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> Policy:
        """Rebuild a saved policy (in eval mode) from ``directory``; ``Policy.load`` dispatches on the saved type.

        Raises CheckpointError for a missing, truncated or corrupt checkpoint and
        PolicyTypeMismatch when ``cls`` is a specific policy class and the checkpoint is another type.
        """
        path = Path(directory)
        meta = read_checkpoint_meta(path)
        kind = meta["type"]
        if cls.name and kind != cls.name:
            raise PolicyTypeMismatch(f"{path} holds a '{kind}' policy; expected a '{cls.name}' policy")
        from policies.registry import policy_class

        try:
            target = policy_class(kind)
        except PolicyError:
            raise CheckpointError(f"{path / CONFIG_FILE}: unknown policy type '{kind}'") from None
        config = target.config_class.from_dict(meta["config"], source=str(path / CONFIG_FILE))
        tensors = _read_tensors(path, meta, kind)
        policy = target(config)
        expected = policy.state_dict()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            what = f"lacks tensor '{missing[0]}'" if missing else f"has unexpected tensor '{extra[0]}'"
            raise CheckpointError(f"{path / MODEL_FILE} {what} (it does not match its config.json)")
        for key, value in tensors.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise CheckpointError(
                    f"{path / MODEL_FILE}: tensor '{key}' has shape {list(value.shape)}, "
                    f"its config.json implies {list(expected[key].shape)}"
                )
        policy.load_state_dict(tensors, strict=True)
        return policy.to(device).eval()


def read_versioned_json(path: Path, fmt: str, max_version: int, what: str) -> dict[str, Any]:
    """A JSON document with ``"format": fmt`` and an integer ``version`` <= ``max_version``;
    CheckpointError naming ``path`` when it is corrupt, of another format or too new."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{path}: not an Ark {what} (no \"format\": \"{fmt}\")")
    version = meta.get("version")
    if not isinstance(version, int) or version > max_version:
        raise CheckpointError(f"{path}: {what} format version {version!r}; this Ark reads versions up to {max_version}")
    return meta


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """Parse and check ``config.json`` of a checkpoint directory (format, version, type present)."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: not a policy checkpoint (no {CONFIG_FILE})")
    meta = read_versioned_json(cfg_path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "policy checkpoint")
    for key in ("type", "config"):
        if key not in meta:
            raise CheckpointError(f"{cfg_path}: missing key '{key}'")
    return meta


def _read_tensors(path: Path, meta: Mapping[str, Any], kind: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise CheckpointError(f"{path}: checkpoint has no {MODEL_FILE}")
    expected_hash = meta.get("sha256", {}).get(MODEL_FILE)
    if expected_hash is not None and _sha256(model_path) != expected_hash:
        raise CheckpointError(f"{model_path} is truncated or corrupt (its SHA-256 does not match config.json)")
    try:
        with safe_open(str(model_path), framework="pt") as f:
            file_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{model_path} is truncated or corrupt ({str(exc).splitlines()[0]})") from None
    if file_meta.get("policy_type", kind) != kind:
        raise PolicyTypeMismatch(
            f"{model_path} holds '{file_meta['policy_type']}' weights but {CONFIG_FILE} says '{kind}'"
        )
    return tensors


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cosine_with_warmup(warmup_steps: int, total_steps: int) -> Any:
    """LR multiplier: linear warm-up over ``warmup_steps``, then a half cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return factor
