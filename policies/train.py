"""Train a policy on an Ark dataset: ``train("act", "data/push", "runs/push-act", steps=20000)``.

One function, :func:`train`, runs the whole job: it resolves a *recipe* (policy overrides and
batch/optimiser settings; the CPU presets of :data:`PRESETS` by default, or a YAML file of
``configs/train/``), builds the policy from the dataset's features and statistics, checks that
the two match, and runs AdamW on random (observation history, action chunk) windows with a
progress bar (loss, steps/s, ETA). It writes, under ``out``::

    config.json, model.safetensors   the final policy (``Policy.load(out)``)
    train.json                       what was trained on what: type, data, recipe, seed, fps
    metrics.csv                      step, loss, each metric, lr, grad_norm, steps_per_s, wall_time_s
    checkpoints/step-N/              policy + optimiser + LR schedule + RNG + sampler state
    last -> checkpoints/step-N       the newest complete checkpoint
    tensorboard/                     the same scalars, only when ``tensorboard`` is installed

Running the same command again resumes from ``last``: the model, optimiser, schedule and every
random generator (torch, numpy, Python, the window sampler) are restored, so an interrupted and
resumed run ends with the same weights as an uninterrupted one. Checkpoints are safetensors
plus JSON; nothing is pickled. Ctrl-C finishes the current step, saves a checkpoint and raises
:class:`TrainingInterrupted` (a KeyboardInterrupt); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ark.config import read_yaml
from ark.errors import ArkError, ConfigError
from policies.base import PAD_KEY, Policy, cosine_with_warmup, read_versioned_json
from policies.config import ACTION_KEY
from policies.errors import CheckpointError, FeatureMismatch, PolicyError, PolicyTypeMismatch

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPE_DIR = REPO_ROOT / "configs" / "train"
RUN_FILE = "train.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LAST_LINK = "last"
STATE_JSON = "train_state.json"
STATE_TENSORS = "train_state.safetensors"
RUN_FORMAT = "ark-train-run"
STATE_FORMAT = "ark-train-state"
STATE_VERSION = 1

# Small models that train in minutes on a 2-core CPU (see configs/train/<type>.yaml, which
# mirror these). The papers' sizes are the policy configs' own defaults (``base: null``).
PRESETS: dict[str, dict[str, Any]] = {
    "bc": {
        "policy": {"chunk_size": 8, "hidden_dims": [256, 256], "optimizer_lr": 1e-3},
        "train": {"steps": 5000, "batch_size": 64, "checkpoint_every": 1000, "grad_clip_norm": 10.0},
    },
    "act": {
        # chunk_size is scaled to the dataset's rate (2 s of actions, as the paper's 100 at 50 Hz)
        # unless set here. One decoder layer, as the reference code effectively uses. d_model 128
        # trains ~3x faster than 256 on 2 cores (the CVAE encoder and decoder run over every
        # action of the chunk, so their cost grows with chunk_size x d_model^2).
        "policy": {"dim_model": 128, "n_heads": 4, "dim_feedforward": 512, "n_encoder_layers": 2,
                   "n_decoder_layers": 1, "n_vae_encoder_layers": 1, "dropout": 0.1,
                   "optimizer_lr": 3e-4, "optimizer_lr_backbone": 3e-4},
        "train": {"steps": 10000, "batch_size": 64, "checkpoint_every": 1000, "grad_clip_norm": 10.0},
    },
    "diffusion": {
        "policy": {"down_dims": [64, 128, 256], "diffusion_step_embed_dim": 64, "lr_warmup_steps": 200,
                   "num_inference_steps": 10},
        "train": {"steps": 10000, "batch_size": 64, "checkpoint_every": 1000, "grad_clip_norm": 10.0},
    },
}


class TrainingError(PolicyError):
    """Training cannot start or continue (bad data, a run of another kind in ``out``, a diverged loss)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; a checkpoint of the last complete step was saved (``checkpoint``)."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"interrupted at step {step}")
        self.step = step
        self.checkpoint = checkpoint


# ----- recipes ----------------------------------------------------------------------------------
class TrainSettings(BaseModel):
    """The ``train:`` section of a recipe.

    ``steps``: optimiser steps of the whole run. ``checkpoint_every``: steps between checkpoints
    (null: only at the end). ``keep_checkpoints``: newest checkpoints kept (0: all).
    ``grad_clip_norm``: clip the gradients' global norm (null: no clipping). ``log_every``: steps
    averaged per metrics row. ``num_threads``: torch CPU threads (null: torch's default).
    ``input_keys``: the dataset's observation keys to use (null: every ``observation.*`` vector
    and RGB image). ``cache_mb``: decoded image chunks kept in memory. ``lr_schedule``: ``policy``
    (the policy's own: constant for BC and ACT, cosine with warm-up for Diffusion Policy),
    ``constant``, or ``cosine`` (linear warm-up over ``lr_warmup_steps``, then a half cosine to 0
    at ``steps``), which helps short CPU runs end precise.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(10000, gt=0)
    batch_size: int = Field(64, gt=0)
    checkpoint_every: int | None = Field(1000, gt=0)
    keep_checkpoints: int = Field(3, ge=0)
    grad_clip_norm: float | None = Field(10.0, gt=0)
    log_every: int = Field(10, gt=0)
    num_threads: int | None = Field(None, gt=0)
    input_keys: list[str] | None = None
    cache_mb: float = Field(1024.0, gt=0)
    lr_schedule: Literal["policy", "constant", "cosine"] = "policy"
    lr_warmup_steps: int = Field(0, ge=0)


class Recipe(BaseModel):
    """A training recipe: ``base`` preset (a policy type's entry of PRESETS, or null for the papers'
    defaults), ``policy`` config overrides (architecture, horizons, ``optimizer_*``) merged over the
    base's, and ``train`` settings merged over the base's."""

    model_config = ConfigDict(extra="forbid")

    policy_type: str | None = None
    description: str = ""
    base: str | None = "preset"
    policy: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


def _validation_message(err: ValidationError, source: str, prefix: str = "") -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "") or "(top level)"
    return f"{source}: key '{key}': {first['msg']}"


def load_recipe(policy_type: str, recipe: str | os.PathLike[str] | Mapping[str, Any] | None = None
                ) -> tuple[dict[str, Any], TrainSettings, str]:
    """Resolve a recipe into (policy overrides, train settings, source name).

    ``recipe``: None (the CPU preset of ``policy_type``), a mapping, a YAML path, or the name of a
    file in ``configs/train/`` (``"act"`` → ``configs/train/act.yaml``). Bad keys or values raise
    ConfigError naming the file and the key.
    """
    from policies.registry import policy_class

    policy_class(policy_type)  # unknown type: one line naming the choices
    if recipe is None:
        data: Any = {}
        source = f"<{policy_type} preset>"
    elif isinstance(recipe, Mapping):
        data, source = dict(recipe), "<recipe>"
    else:
        path = Path(recipe)
        if not path.exists() and not path.suffix and (RECIPE_DIR / f"{path}.yaml").is_file():
            path = RECIPE_DIR / f"{path}.yaml"
        data, source = read_yaml(path), str(path)
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        parsed = Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, source)) from None
    if parsed.policy_type is not None and parsed.policy_type != policy_type:
        raise ConfigError(f"{source}: key 'policy_type': this recipe is for '{parsed.policy_type}' policies, "
                          f"not '{policy_type}'")
    if parsed.base == "preset":
        base = PRESETS[policy_type]
    elif parsed.base is None:
        base = {"policy": {}, "train": {}}
    elif parsed.base in PRESETS:
        if parsed.base != policy_type:
            raise ConfigError(f"{source}: key 'base': preset '{parsed.base}' is for another policy type than "
                              f"'{policy_type}'")
        base = PRESETS[parsed.base]
    else:
        raise ConfigError(f"{source}: key 'base': expected 'preset', null or one of {sorted(PRESETS)}, "
                          f"got {parsed.base!r}")
    overrides = {**base["policy"], **parsed.policy}
    try:
        settings = TrainSettings.model_validate({**base["train"], **parsed.train})
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, source, "train")) from None
    return overrides, settings, source


# ----- results ----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` did: the run's folder, its final step and loss, this call's speed."""

    out: Path
    policy_type: str
    step: int                 # optimiser steps done in total (== the run's ``steps`` when complete)
    steps_run: int            # steps done by this call (0 when the run was already complete)
    loss: float | None        # loss of the last step
    loss_avg: float | None    # mean loss of the last logging window
    wall_time_s: float        # this call's training time
    steps_per_s: float        # this call's speed
    resumed_from: int | None  # the checkpoint step this call started from
    checkpoint: Path | None   # the newest checkpoint
    metrics_csv: Path

    @property
    def policy_dir(self) -> Path:
        return self.out

    def summary(self) -> str:
        parts = [f"{self.policy_type}: {self.step} steps"]
        if self.resumed_from:
            parts.append(f"resumed from step {self.resumed_from}")
        if self.steps_run:
            parts.append(f"{self.steps_per_s:.1f} steps/s over {_fmt_duration(self.wall_time_s)}")
        if self.loss_avg is not None:
            parts.append(f"final loss {self.loss_avg:.4g}")
        return ", ".join(parts) + f" -> {self.out}"


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ----- data -------------------------------------------------------------------------------------
def _open_dataset(data: Any):
    from policies.dataset import Dataset

    if isinstance(data, Dataset):
        return data
    return Dataset.open(data, read_only=True)


def dataset_inputs(ds: Any, keys: list[str] | None = None) -> dict[str, list[int]]:
    """Input features a policy can use from ``ds``: every ``observation.*`` vector and RGB image, or ``keys``."""
    features = ds.features
    if keys is not None:
        out = {}
        for key in keys:
            if key not in features:
                raise FeatureMismatch(f"input key '{key}' is not in the dataset {ds.path} "
                                      f"(it has {', '.join(features)})")
            out[key] = list(features[key].shape)
        return out
    out = {}
    for key, feat in features.items():
        if not key.startswith("observation"):
            continue
        if len(feat.shape) == 1 and not feat.is_image:
            out[key] = list(feat.shape)
        elif feat.is_image and feat.shape[-1] == 3:
            out[key] = list(feat.shape)
        else:
            log.warning("not using %s (shape %s): policies take vectors [D] and RGB images [H, W, 3]",
                        key, list(feat.shape))
    if not out:
        raise FeatureMismatch(f"dataset {ds.path} has no observation.* vector or RGB image to learn from "
                              f"(features: {', '.join(features)})")
    return out


def check_dataset(policy: Policy, ds: Any) -> None:
    """Raise FeatureMismatch (one line) unless ``ds`` delivers what ``policy`` needs, with usable dtypes."""
    policy.validate_features(ds.features)
    cfg = policy.config
    for key in cfg.input_features:
        feat = ds.features[key]
        if key in cfg.image_keys and feat.dtype != "uint8":
            raise FeatureMismatch(f"dataset feature '{key}': expected uint8 images, got {feat.dtype}")
        if key not in cfg.image_keys and np.dtype(feat.dtype).kind not in "fiub":
            raise FeatureMismatch(f"dataset feature '{key}': expected numbers, got {feat.dtype}")
    if np.dtype(ds.features[ACTION_KEY].dtype).kind != "f":
        raise FeatureMismatch(f"dataset feature '{ACTION_KEY}': expected continuous (float) actions, "
                              f"got {ds.features[ACTION_KEY].dtype}")
    if ds.num_frames == 0:
        raise FeatureMismatch(f"dataset {ds.path} has no frames")


def _fingerprint(ds: Any) -> dict[str, Any]:
    return {"num_episodes": ds.num_episodes, "num_frames": ds.num_frames, "fps": ds.fps,
            "features": {k: [f.dtype, list(f.shape)] for k, f in ds.features.items()}}


def _make_sampler(policy: Policy, ds: Any, settings: TrainSettings):
    from policies.dataset import WindowSampler

    cfg = policy.config
    keys = [*cfg.input_features, ACTION_KEY]
    image_bytes = sum(ds.features[k].frame_bytes for k in cfg.image_keys) * ds.num_frames
    in_memory = image_bytes <= settings.cache_mb * 2**20
    return WindowSampler(ds, obs_horizon=cfg.n_obs_steps, action_horizon=len(cfg.action_delta_indices),
                         action_start=cfg.action_delta_indices[0], keys=keys, cache_mb=settings.cache_mb,
                         in_memory=in_memory)


def _to_batch(arrays: Mapping[str, np.ndarray], policy: Policy, device: torch.device) -> dict[str, torch.Tensor]:
    cfg = policy.config
    out = {}
    for key in [*cfg.input_features, ACTION_KEY]:
        x = arrays[key]
        if key not in cfg.image_keys and x.dtype != np.float32:
            x = x.astype(np.float32)
        out[key] = torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)
    out[PAD_KEY] = torch.from_numpy(arrays[f"{ACTION_KEY}_is_pad"]).to(device, non_blocking=True)
    return out


# ----- devices, threads, seeds ------------------------------------------------------------------
def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; ArkError when CUDA is asked for but missing."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ArkError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ArkError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ArkError(f"device {device!r}: CUDA is not available ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ArkError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----- checkpoints ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON")


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split an optimiser's state_dict into JSON (hyperparameters, scalars) and tensors."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        scalars[str(idx)] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[str(idx)][name] = _jsonable(value)
    groups = [{k: _jsonable(v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"param_groups": groups, "state": scalars}, tensors


def _load_optimizer_state(opt: torch.optim.Optimizer, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                          where: Path) -> None:
    state: dict[int, dict[str, Any]] = {}
    for idx, scalars in meta["state"].items():
        state[int(idx)] = dict(scalars)
    for key, value in tensors.items():
        if not key.startswith("optimizer."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        why = str(exc).splitlines()[0]
        raise CheckpointError(f"{where}: optimiser state does not fit this policy ({why})") from None


def _rng_state(sampler_rng: np.random.Generator,
               device: torch.device) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "sampler": _jsonable(sampler_rng.bit_generator.state),
    }
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return meta, tensors


def _restore_rng(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], sampler_rng: np.random.Generator,
                 device: torch.device) -> None:
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    sampler_rng.bit_generator.state = meta["sampler"]
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = out / CHECKPOINT_DIR
    found = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit():
                found.append((int(p.name[5:]), p))
    return sorted(found)


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The checkpoint ``out/last`` points to (the newest complete one), or None."""
    out = Path(out)
    last = out / LAST_LINK
    if last.is_symlink() or last.exists():
        target = last.resolve() if last.is_symlink() else out / last.read_text().strip()
        if not target.is_dir():
            raise CheckpointError(f"{last} points to {target}, which does not exist; remove {last} to resume from "
                                  f"an older checkpoint, or train with --no-resume")
        return target
    return None


def _point_last(out: Path, target: Path) -> None:
    rel = os.path.relpath(target, out)
    tmp = out / f".{LAST_LINK}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(rel, tmp)
    except OSError:  # no symlinks here (some Windows setups): a one-line text file instead
        tmp.write_text(rel + "\n")
    os.replace(tmp, out / LAST_LINK)


def save_checkpoint(out: Path, step: int, policy: Policy, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler, sampler_rng: np.random.Generator,
                    device: torch.device, extra: Mapping[str, Any], keep: int) -> Path:
    """Write ``out/checkpoints/step-N`` (atomically: a temporary folder renamed) and point ``out/last`` at it."""
    from safetensors.torch import save_file

    root = out / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    policy.save(tmp)
    opt_meta, tensors = _optimizer_state(opt)
    rng_meta, rng_tensors = _rng_state(sampler_rng, device)
    tensors.update(rng_tensors)
    save_file(tensors, str(tmp / STATE_TENSORS), metadata={"format": STATE_FORMAT})
    meta = {
        "format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "policy_type": policy.name,
        "optimizer": opt_meta, "scheduler": _jsonable(sched.state_dict()), "rng": rng_meta,
        "sha256": {STATE_TENSORS: _sha256(tmp / STATE_TENSORS)}, **_jsonable(dict(extra)),
    }
    (tmp / STATE_JSON).write_text(json.dumps(meta) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point_last(out, final)
    if keep:
        for _, old in _checkpoints(out)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def read_training_state(ckpt: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON and tensors of a checkpoint's training state; CheckpointError when missing or damaged."""
    from safetensors import SafetensorError, safe_open

    meta_path, tensor_path = ckpt / STATE_JSON, ckpt / STATE_TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise CheckpointError(f"{ckpt}: not a training checkpoint (no {STATE_JSON} / {STATE_TENSORS})")
    meta = read_versioned_json(meta_path, STATE_FORMAT, STATE_VERSION, "training state")
    if meta.get("sha256", {}).get(STATE_TENSORS) != _sha256(tensor_path):
        raise CheckpointError(f"{tensor_path} is truncated or corrupt (its SHA-256 does not match {STATE_JSON})")
    try:
        with safe_open(str(tensor_path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{tensor_path} is truncated or corrupt ({str(exc).splitlines()[0]})") from None
    return meta, tensors


# ----- metrics ----------------------------------------------------------------------------------
class _Metrics:
    """metrics.csv (one row per logging window), plus TensorBoard when it is installed."""

    def __init__(self, out: Path, resume_step: int | None):
        self.path = out / METRICS_FILE
        self.columns: list[str] | None = None
        self._rows: list[list[str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.columns = rows[0]
                self._rows = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= resume_step]
        elif self.path.exists():
            self.path.unlink()
        self._file = None
        self._writer = None
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package
        except ImportError:
            pass
        else:
            self._tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step)

    def log(self, row: Mapping[str, float | int]) -> None:
        if self.columns is None:
            self.columns = list(row)
        if self._writer is None:
            # Rewrite what is kept (on resume: rows up to the checkpoint), then append.
            self._file = open(self.path, "w", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(self.columns)
            self._writer.writerows(self._rows)
        self._writer.writerow([_fmt_value(row.get(c, "")) for c in self.columns])
        self._file.flush()
        if self._tb is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class _Progress:
    """A rich progress bar on stderr with loss, steps/s and ETA (or nothing)."""

    def __init__(self, enabled: bool, label: str, total: int, done: int):
        self.enabled = enabled
        self._bar = None
        self._task = None
        self._args = (label, total, done)

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            label, total, done = self._args
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} steps/s"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(label, total=total, completed=done, loss="-", rate="-")
        return self

    def update(self, step: int, loss: float | None = None, rate: float | None = None) -> None:
        if self._bar is not None:
            fields = {}
            if loss is not None:
                fields["loss"] = f"{loss:.4g}"
            if rate is not None:
                fields["rate"] = f"{rate:.1f}"
            self._bar.update(self._task, completed=step, **fields)

    def __exit__(self, *exc: Any) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


class _StopFlag:
    """First Ctrl-C: stop after the current step (and checkpoint); second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this step and saving a checkpoint (press again to stop at once)")

    def __exit__(self, *exc: Any) -> bool:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# ----- the run folder ---------------------------------------------------------------------------
def _read_run(out: Path) -> dict[str, Any] | None:
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt JSON ({exc})") from None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path}: not an Ark training run")
    return run


def read_run(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``train.json`` of a run folder (policy type, data, fps, env id, ...), or None when there is none."""
    return _read_run(Path(directory))


def _clear_run(out: Path) -> None:
    """Remove what a previous run wrote in ``out`` (for ``resume=False``); nothing else."""
    for name in (CHECKPOINT_DIR, "tensorboard"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in (LAST_LINK, METRICS_FILE, RUN_FILE, "config.json", "model.safetensors"):
        p = out / name
        if p.is_symlink() or p.is_file():
            p.unlink()


# ----- training ---------------------------------------------------------------------------------
def train(
    policy_type: str,
    data: Any,
    out: str | os.PathLike[str],
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    recipe: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress: bool = True,
    num_threads: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a ``policy_type`` policy (``bc``, ``act``, ``diffusion``) on the dataset ``data`` into ``out``.

    ``steps``, ``batch_size``, ``checkpoint_every`` and ``num_threads`` override the recipe's
    ``train`` settings (see :func:`load_recipe`; default: the type's CPU preset). ``resume``:
    continue from ``out/last`` when it exists (False: delete the previous run's files in ``out``
    and start over). ``on_step(step, metrics)`` is called after every optimiser step. Raises
    FeatureMismatch when the data do not fit the policy, PolicyTypeMismatch when ``out`` holds a
    run of another type, TrainingInterrupted (a KeyboardInterrupt) after Ctrl-C.
    """
    from policies.registry import policy_class

    overrides, settings, source = load_recipe(policy_type, recipe)
    if steps is not None:
        settings.steps = _positive_int(steps, "steps")
    if batch_size is not None:
        settings.batch_size = _positive_int(batch_size, "batch_size")
    if checkpoint_every is not None:
        settings.checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every")
    if num_threads is not None:
        settings.num_threads = _positive_int(num_threads, "num_threads")
    dev = resolve_device(device)
    ds = _open_dataset(data)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArkError(f"{out} exists and is not a folder")
    if out.resolve() == Path(ds.path).resolve():
        raise ArkError(f"--out {out} is the dataset folder; choose another")

    previous = _read_run(out)
    if previous is not None and resume and previous.get("policy_type") != policy_type:
        raise PolicyTypeMismatch(f"{out} holds a '{previous.get('policy_type')}' training run, not '{policy_type}'; "
                                 f"choose another --out (or pass --no-resume to overwrite it)")
    if not resume and out.is_dir():
        _clear_run(out)
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None and previous is not None and previous.get("dataset") != _fingerprint(ds):
        was = previous.get("dataset", {})
        raise TrainingError(f"the dataset {ds.path} changed since the run in {out} started "
                            f"({was.get('num_frames')} frames then, {ds.num_frames} now); "
                            f"pass --no-resume to start over, or use another --out")

    old_threads = torch.get_num_threads()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    try:
        return _run(policy_type, policy_class(policy_type), ds, out, dev, seed, overrides, settings, source, ckpt,
                    progress, on_step)
    finally:
        torch.set_num_threads(old_threads)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArkError(f"{name} must be a positive integer, got {value!r}")
    return value


def _build_policy(cls: type[Policy], policy_type: str, ds: Any, overrides: dict[str, Any], settings: TrainSettings,
                  source: str) -> Policy:
    overrides = dict(overrides)
    inputs = dataset_inputs(ds, settings.input_keys)
    if ACTION_KEY not in ds.features:
        raise FeatureMismatch(f"dataset {ds.path} has no '{ACTION_KEY}' feature")
    data = {"input_features": inputs, "output_features": {ACTION_KEY: list(ds.features[ACTION_KEY].shape)}}
    if policy_type == "act" and "chunk_size" not in overrides:
        from policies.act import chunk_size_for_rate

        overrides["chunk_size"] = chunk_size_for_rate(ds.fps)
    data.update(overrides)
    config = cls.config_class.from_dict(data, source=f"{source}: policy")
    stats = {k: v for k, v in ds.stats.items()}
    policy = cls(config)
    check_dataset(policy, ds)
    missing = [k for k in (*config.state_keys, ACTION_KEY) if k not in stats]
    if missing:
        raise FeatureMismatch(f"dataset {ds.path} has no normalisation statistics for '{missing[0]}' "
                              f"(recompute them with Dataset.compute_stats)")
    policy.set_stats(stats)
    return policy


def make_lr_scheduler(policy: Policy, opt: torch.optim.Optimizer,
                      settings: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule the recipe asks for (``train.lr_schedule``), stepped once per optimiser step."""
    if settings.lr_schedule == "policy":
        return policy.make_lr_scheduler(opt, settings.steps)
    if settings.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(settings.lr_warmup_steps, settings.steps))


def _run(policy_type: str, cls: type[Policy], ds: Any, out: Path, dev: torch.device, seed: int,
         overrides: dict[str, Any], settings: TrainSettings, source: str, ckpt: Path | None, progress: bool,
         on_step: Callable[[int, dict[str, float]], None] | None) -> TrainResult:
    seed_everything(seed)
    sampler_rng = np.random.default_rng(seed)
    start = 0
    state_meta: dict[str, Any] | None = None
    if ckpt is not None:
        policy = cls.load(ckpt)  # PolicyTypeMismatch / CheckpointError name the folder
        check_dataset(policy, ds)
        state_meta, state_tensors = read_training_state(ckpt)
        start = int(state_meta["step"])
    else:
        policy = _build_policy(cls, policy_type, ds, overrides, settings, source)
    policy.to(dev).train()
    sampler = _make_sampler(policy, ds, settings)
    opt = policy.make_optimizer()
    sched = make_lr_scheduler(policy, opt, settings)
    wall_before = 0.0
    if state_meta is not None:
        _load_optimizer_state(opt, state_meta["optimizer"], state_tensors, ckpt)
        sched.load_state_dict(state_meta["scheduler"])
        _restore_rng(state_meta["rng"], state_tensors, sampler_rng, dev)
        wall_before = float(state_meta.get("wall_time_s", 0.0))
        log.info("resuming %s from %s (step %d)", policy_type, ckpt, start)

    out.mkdir(parents=True, exist_ok=True)
    previous_overrides = ((_read_run(out) or {}).get("policy_overrides")) if ckpt is not None else None
    run = {"format": RUN_FORMAT, "policy_type": policy_type, "data": str(Path(ds.path).resolve()),
           "dataset": _fingerprint(ds), "fps": ds.fps, "env_id": ds.info.get("env_id"),
           "env_kwargs": ds.info.get("env_kwargs"), "seed": seed, "device": str(dev), "recipe": source,
           "policy_overrides": _jsonable(overrides) if ckpt is None else previous_overrides,
           "train": settings.model_dump(),
           "input_features": {k: list(v) for k, v in policy.config.input_features.items()}}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")

    total = settings.steps
    metrics = _Metrics(out, start if ckpt is not None else None)
    extra = {"seed": seed, "total_steps": total, "batch_size": settings.batch_size, "dataset": _fingerprint(ds)}
    step = start
    last_loss: float | None = None
    window: dict[str, list[float]] = {}
    window_start = time.perf_counter()
    window_step = step
    loss_avg: float | None = None
    rate = 0.0
    t0 = time.perf_counter()
    newest = ckpt
    params = [p for p in policy.parameters() if p.requires_grad]

    def checkpoint() -> Path:
        extra["wall_time_s"] = wall_before + time.perf_counter() - t0
        extra["last_loss"] = last_loss
        return save_checkpoint(out, step, policy, opt, sched, sampler_rng, dev, extra, settings.keep_checkpoints)

    try:
        with _StopFlag() as stop, _Progress(progress, f"train {policy_type}", total, start) as bar:
            while step < total:
                batch = _to_batch(sampler.sample(settings.batch_size, sampler_rng), policy, dev)
                loss, info = policy(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = None
                if settings.grad_clip_norm is not None:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.grad_clip_norm))
                opt.step()
                sched.step()
                policy.after_optimizer_step()
                step += 1
                last_loss = float(loss.detach())
                if not math.isfinite(last_loss):
                    raise TrainingError(f"the loss became {last_loss} at step {step}; lower optimizer_lr or set "
                                        f"train.grad_clip_norm in the recipe (last checkpoint: {newest})")
                row = {"loss": last_loss, **{k: float(v) for k, v in info.items()}}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                for key, value in row.items():
                    window.setdefault(key, []).append(value)
                if on_step is not None:
                    on_step(step, row)
                if step % settings.log_every == 0 or step == total or stop.requested:
                    now = time.perf_counter()
                    rate = (step - window_step) / max(now - window_start, 1e-9)
                    means = {k: float(np.mean(v)) for k, v in window.items()}
                    loss_avg = means["loss"]
                    metrics.log({"step": step, **means, "lr": float(opt.param_groups[0]["lr"]),
                                 "steps_per_s": rate, "wall_time_s": wall_before + now - t0})
                    window, window_start, window_step = {}, now, step
                    bar.update(step, loss_avg, rate)
                else:
                    bar.update(step)
                if stop.requested:
                    newest = checkpoint()
                    raise TrainingInterrupted(step, newest)
                if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < total:
                    newest = checkpoint()
            if step > start or newest is None:
                newest = checkpoint()
        policy.save(out)
    finally:
        metrics.close()
    elapsed = time.perf_counter() - t0
    steps_run = step - start
    return TrainResult(out=out, policy_type=policy_type, step=step, steps_run=steps_run, loss=last_loss,
                       loss_avg=loss_avg if loss_avg is not None else (state_meta or {}).get("last_loss"),
                       wall_time_s=elapsed, steps_per_s=steps_run / elapsed if steps_run else 0.0,
                       resumed_from=start if ckpt is not None else None, checkpoint=newest,
                       metrics_csv=out / METRICS_FILE)
