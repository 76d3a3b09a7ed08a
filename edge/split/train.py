"""Training: teacher on full frames, head-network distillation, sandwich-rule fine-tuning with
quantised latents, latent-range calibration and the frame filter; then validation metrics.

Stages (each with a progress bar; Ctrl-C stops cleanly between steps):

1. **teacher**: stem + task tail on the frames that hold an object (cross-entropy for shape
   and colour, L1 for position).
2. **distill** (head-network distillation): the student's head and decoder learn to
   reproduce the frozen teacher's split-point features (MSE); the task tail starts as a
   copy of the teacher's, and the head's convolutions as the teacher's stem when they have
   the same sizes. Every step trains the widest, the narrowest and one random
   middle width (the sandwich rule) from one pass through the shared head layers.
3. **finetune**: the whole student on the task, sandwich rule again; the widest width
   learns from labels, the others from labels and the widest's outputs (in-place
   distillation); latents pass through straight-through n-bit quantisation with n drawn
   from ``train.bits``. Per-channel latent ranges are calibrated (per width and bit depth,
   the clipping quantile with the least quantisation error) before and after this stage.
4. **filter**: the frame filter on all frames (object present or not).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from edge.split import checkpoint, dataset
from edge.split.config import SplitConfig
from edge.split.dataset import Split
from edge.split.errors import SplitError
from edge.split.models import BIT_DEPTHS, Student, Teacher, fake_quantise, preprocess

POSITION_TOLERANCE_M = 0.02  # a frame counts as correct when shape and colour are right and position within 2 cm


# -- metrics ------------------------------------------------------------------------------
def task_metrics(out: dict[str, np.ndarray], split: Split) -> dict[str, float]:
    """Accuracy numbers of task outputs on the object frames of ``split``.

    ``accuracy``: shape and colour right and position within 2 cm (the headline number);
    ``shape_acc``, ``colour_acc``; ``position_mae_cm``: mean absolute x/y error in cm.
    """
    shape_ok = out["shape"].argmax(1) == split.shape
    colour_ok = out["colour"].argmax(1) == split.colour
    xy = dataset.denormalise_position(out["position"])
    err = np.linalg.norm(xy - split.position, axis=1)
    return {"accuracy": float(np.mean(shape_ok & colour_ok & (err <= POSITION_TOLERANCE_M))),
            "shape_acc": float(shape_ok.mean()), "colour_acc": float(colour_ok.mean()),
            "position_mae_cm": float(np.abs(xy - split.position).mean() * 100)}


@torch.no_grad()
def predict(fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Run ``fn`` over uint8 frames in batches; numpy outputs."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), batch):
        for k, v in fn(preprocess(images[i:i + batch])).items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def _task_loss(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
    return (F.cross_entropy(out["shape"], y["shape"]) + F.cross_entropy(out["colour"], y["colour"])
            + 4.0 * F.l1_loss(out["position"], y["position"]))


def _soft_loss(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> torch.Tensor:
    kl = sum(F.kl_div(F.log_softmax(out[k], 1), F.softmax(ref[k].detach(), 1), reduction="batchmean")
             for k in ("shape", "colour"))
    return kl + 4.0 * F.l1_loss(out["position"], ref["position"].detach())


def _labels(split: Split, idx: np.ndarray) -> dict[str, torch.Tensor]:
    return {"shape": torch.as_tensor(split.shape[idx]), "colour": torch.as_tensor(split.colour[idx]),
            "position": torch.as_tensor(dataset.normalise_position(split.position[idx]))}


def _batches(n: int, batch: int, epochs: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n - min(batch, n) + 1, min(batch, n)):  # drop the ragged last batch (BN)
            yield order[i:i + batch]


def _steps(n: int, batch: int, epochs: int) -> int:
    return epochs * (n // min(batch, n)) if n else 0


def sandwich(k_max: int, rng: random.Random) -> list[int]:
    """Widths trained in one step: widest, narrowest and one random width between them."""
    ks = [k_max, 0] if k_max > 0 else [0]
    if k_max > 1:
        ks.append(rng.randint(1, k_max - 1))
    return ks


class _Bar:
    def __init__(self, total: int, desc: str, progress: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=progress)

    def step(self, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _update(opt: torch.optim.Optimizer, sched: Any, bar: "_Bar", loss: torch.Tensor) -> None:
    """One optimiser step on ``loss`` (and the schedule's, if any), reported to the progress bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    bar.step(loss.item())


# -- stages -------------------------------------------------------------------------------
def train_teacher(cfg: SplitConfig, train: Split, progress: bool = True) -> Teacher:
    """Stage 1: the teacher on the object frames of ``train``."""
    t = cfg.train
    teacher = Teacher(cfg.model)
    opt = torch.optim.AdamW(teacher.parameters(), lr=t.lr, weight_decay=1e-4)
    total = _steps(len(train), t.batch, t.teacher_epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, t.lr, total_steps=max(total, 1))
    rng = np.random.default_rng(t.seed)
    bar = _Bar(total, "teacher", progress)
    teacher.train()
    for idx in _batches(len(train), t.batch, t.teacher_epochs, rng):
        loss = _task_loss(teacher(preprocess(train.images[idx])), _labels(train, idx))
        _update(opt, sched, bar, loss)
    bar.close()
    return teacher.eval()


def distill(cfg: SplitConfig, teacher: Teacher, train: Split, progress: bool = True) -> Student:
    """Stage 2: head-network distillation of the student against the teacher's split-point features."""
    t = cfg.train
    student = Student(cfg.model)
    student.tail.task.load_state_dict(teacher.tail.state_dict())
    if tuple(cfg.model.head_channels) == tuple(cfg.model.teacher_channels):
        student.head.body.load_state_dict(teacher.stem.state_dict())  # same layers: start from the teacher's
    params = [*student.head.parameters(), *student.tail.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=1e-4)
    total = _steps(len(train), t.batch, t.distill_epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, t.lr, total_steps=max(total, 1))
    rng, prng = np.random.default_rng(t.seed + 1), random.Random(t.seed + 1)
    k_max = len(student.head.channels) - 1
    bar = _Bar(total, "distill", progress)
    student.train()
    for idx in _batches(len(train), t.batch, t.distill_epochs, rng):
        x = preprocess(train.images[idx])
        with torch.no_grad():
            target = teacher.features(x)
        ks = sandwich(k_max, prng)
        zs = student.head.latent_all(x, ks)
        loss = sum(F.mse_loss(student.tail.decoder(z, k), target) for z, k in zip(zs, ks)) / len(ks)
        _update(opt, sched, bar, loss)
    bar.close()
    return student.eval()


@torch.no_grad()
def calibrate(student: Student, images: np.ndarray, limit: int = 2000) -> None:
    """Set each width's and bit depth's per-channel latent ranges over ``images``.

    Per channel, the range is the [q, 1-q] quantile interval whose quantisation error
    (mean squared, at that bit depth) is smallest among a few q: 2-bit codes clip much
    harder than 8-bit ones.
    """
    student.eval()
    x = preprocess(images[:limit])
    ks = list(range(len(student.head.channels)))
    qs = torch.tensor([0.0005, 0.002, 0.01, 0.03, 0.06, 0.1, 0.15])
    for k, z in zip(ks, student.head.latent_all(x, ks)):
        flat = z.permute(1, 0, 2, 3).flatten(1)  # (C, N)
        sample = flat[:, torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(0))[:20000]]
        los = torch.quantile(sample, qs, dim=1)  # (Q, C)
        his = torch.maximum(torch.quantile(sample, 1 - qs, dim=1), los + 1e-3)
        for b, bits in enumerate(BIT_DEPTHS):
            levels = (1 << bits) - 1
            scale = (his - los) / levels
            q = torch.clamp(torch.round((sample[None] - los[..., None]) / scale[..., None]), 0, levels)
            err = ((q * scale[..., None] + los[..., None] - sample[None]) ** 2).mean(-1)  # (Q, C)
            best = err.argmin(0)
            c = torch.arange(flat.shape[0])
            student.ranges.lo[k, b, :len(c)] = los[best, c]
            student.ranges.hi[k, b, :len(c)] = his[best, c]


def finetune(cfg: SplitConfig, student: Student, train: Split, progress: bool = True) -> Student:
    """Stage 3: the student on the task, sandwich rule, in-place distillation, n-bit latents."""
    t = cfg.train
    params = [*student.head.parameters(), *student.tail.parameters()]
    lr = t.lr / 2
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    total = _steps(len(train), t.batch, t.finetune_epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(total, 1))
    rng, prng = np.random.default_rng(t.seed + 2), random.Random(t.seed + 2)
    k_max = len(student.head.channels) - 1
    bar = _Bar(total, "finetune", progress)
    student.train()
    for idx in _batches(len(train), t.batch, t.finetune_epochs, rng):
        x, y = preprocess(train.images[idx]), _labels(train, idx)
        ks = sandwich(k_max, prng)
        loss = torch.zeros(())
        ref = None
        for z, k in zip(student.head.latent_all(x, ks), ks):
            bits = prng.choice(t.bits)
            z = fake_quantise(z, *student.ranges.of(k, bits), bits)
            out = student.tail(z, k)
            if ref is None:  # the widest width: labels only
                ref = out
                loss = loss + _task_loss(out, y)
            else:
                loss = loss + 0.5 * _task_loss(out, y) + 0.5 * _soft_loss(out, ref)
        loss = loss / len(ks)
        _update(opt, sched, bar, loss)
    bar.close()
    return student.eval()


def train_filter(cfg: SplitConfig, student: Student, train: Split, progress: bool = True) -> None:
    """Stage 4: the frame filter on all frames (object present: 1)."""
    t = cfg.train
    f = student.filter
    opt = torch.optim.AdamW(f.parameters(), lr=t.lr * 2, weight_decay=1e-4)
    rng = np.random.default_rng(t.seed + 3)
    bar = _Bar(_steps(len(train), t.batch, t.filter_epochs), "filter", progress)
    f.train()
    for idx in _batches(len(train), t.batch, t.filter_epochs, rng):
        loss = F.binary_cross_entropy_with_logits(f(preprocess(train.images[idx])),
                                                  torch.as_tensor(train.present[idx], dtype=torch.float32))
        _update(opt, None, bar, loss)
    bar.close()
    f.eval()


# -- evaluation -----------------------------------------------------------------------------
def evaluate(teacher: Teacher, student: Student, split: Split, bits: tuple[int, ...] = (2, 4, 8)) -> dict[str, Any]:
    """Teacher and student (each width, float and each bit depth) metrics, and the filter's accuracy."""
    obj = split.objects()
    out: dict[str, Any] = {"teacher": task_metrics(predict(teacher, obj.images), obj), "student": {}}
    for k, c in enumerate(student.head.channels):
        for b in (None, *bits):
            m = task_metrics(predict(lambda x: student(x, k, b), obj.images), obj)
            out["student"][f"w{k}_c{c}_{'float' if b is None else f'{b}bit'}"] = m
    with torch.no_grad():
        p = torch.sigmoid(student.filter(preprocess(split.images))).numpy()
    out["filter_acc"] = float(np.mean((p >= 0.5) == split.present))
    return out


def train(cfg: SplitConfig, data_dir: str | Path, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """All four stages on ``data_dir``; writes the checkpoint to ``out_dir``; returns validation metrics."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    made = dataset.data_config(data_dir)
    if made.size != cfg.data.size:
        raise SplitError(f"{data_dir}: frames are {made.size}x{made.size} but the recipe says data.size: {cfg.data.size}")
    train_all = dataset.read(data_dir, "train")
    val = dataset.read(data_dir, "val")
    train_obj = train_all.objects()
    if len(train_obj) < 2:
        raise SplitError(f"{data_dir}: the training split holds {len(train_obj)} frames with an object; need at least 2")
    t0 = time.perf_counter()
    teacher = train_teacher(cfg, train_obj, progress)
    student = distill(cfg, teacher, train_obj, progress)
    calibrate(student, train_obj.images)
    student = finetune(cfg, student, train_obj, progress)
    calibrate(student, train_obj.images)
    train_filter(cfg, student, train_all, progress)
    metrics = evaluate(teacher, student, val, cfg.train.bits)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    checkpoint.save(out_dir, cfg, teacher, student, metrics)
    return metrics
