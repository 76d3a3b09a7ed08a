"""Checkpoints: ``model.safetensors`` (teacher, student head/ranges/tail, frame filter) and
``model.json`` (recipe, width table, fingerprint, validation metrics).

The fingerprint is the first 8 bytes of a SHA-256 over the student's head, ranges and tail
tensors. Every latent packet carries the head's fingerprint, so a tail from another
checkpoint refuses it instead of decoding garbage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from edge.split.config import SplitConfig, from_dict
from edge.split.errors import SplitError
from edge.split.models import Student, Teacher

WEIGHTS = "model.safetensors"
META = "model.json"


def fingerprint(student: Student) -> bytes:
    """8 bytes identifying the student's weights (head, latent ranges, tail)."""
    h = hashlib.sha256()
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("filter.")}
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.digest()[:8]


@dataclass
class SplitModel:
    """A loaded checkpoint: the recipe, the networks (eval mode) and what training recorded."""

    config: SplitConfig
    teacher: Teacher
    student: Student
    fingerprint: bytes
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        return self.student.head.channels


def save(directory: str | Path, config: SplitConfig, teacher: Teacher, student: Student,
         metrics: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint into ``directory``; returns the directory."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"teacher.{k}": v.detach().contiguous() for k, v in teacher.state_dict().items()}
    tensors.update({f"student.{k}": v.detach().contiguous() for k, v in student.state_dict().items()})
    save_file(tensors, str(d / WEIGHTS))
    meta = {"format": "ark-split/1", "config": config.to_dict(), "channels": student.head.channels,
            "fingerprint": fingerprint(student).hex(), "metrics": metrics or {}}
    (d / META).write_text(json.dumps(meta, indent=2))
    return d


def load(directory: str | Path) -> SplitModel:
    """Read a checkpoint written by :func:`save`; SplitError when missing or inconsistent."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    mp, wp = d / META, d / WEIGHTS
    if not mp.is_file() or not wp.is_file():
        raise SplitError(f"{d}: not a split checkpoint (needs {META} and {WEIGHTS}; train one with `ark split train`)")
    try:
        meta = json.loads(mp.read_text())
    except ValueError as exc:
        raise SplitError(f"{mp}: invalid JSON ({exc})") from None
    if meta.get("format") != "ark-split/1":
        raise SplitError(f"{mp}: unknown format {meta.get('format')!r} (expected 'ark-split/1')")
    cfg = from_dict(meta.get("config", {}), str(mp))
    try:
        tensors = load_file(str(wp))
    except (SafetensorError, OSError) as exc:
        raise SplitError(f"{wp}: unreadable weights ({exc})") from None
    teacher, student = Teacher(cfg.model), Student(cfg.model)
    for prefix, module in (("teacher.", teacher), ("student.", student)):
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise SplitError(f"{wp}: weights do not match the recipe in {META} ({first})") from None
    teacher.eval()
    student.eval()
    fp = fingerprint(student)
    if meta.get("fingerprint") != fp.hex():
        raise SplitError(f"{wp}: weights changed since {META} was written (fingerprint {fp.hex()} != {meta.get('fingerprint')})")
    return SplitModel(cfg, teacher, student, fp, meta.get("metrics", {}))
