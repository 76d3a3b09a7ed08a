"""Checkpoints of federated state: named numpy arrays in safetensors plus a JSON document.

``save_state(dir, arrays, meta)`` writes the arrays to a new file named by their SHA-256
(``state-<sha>.safetensors``), then replaces ``state.json``, which names that file, and only
then deletes the previous arrays file. Each write goes through a temporary file, fsync and a
rename, so a crash at any point leaves a matching pair: the previous checkpoint until the JSON
is replaced, the new one after. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from edge.fl.errors import CheckpointError, FLConfigError

TENSORS = "state.safetensors"
META = "state.json"
FORMAT = "ark-fl-state"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _tensor_name(sha: str) -> str:
    return f"state-{sha[:16]}.safetensors"


def save_state(directory: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and the JSON-able ``meta`` to ``directory`` (created if needed); return it."""
    from safetensors.numpy import save

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}) if arrays else save({"_": np.zeros(0, np.uint8)})
    sha = hashlib.sha256(blob).hexdigest()
    name = _tensor_name(sha)
    _atomic_write(out / name, blob)
    doc = {"format": FORMAT, "sha256": sha, "tensors": name, "meta": meta}
    _atomic_write(out / META, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    for old in out.glob("state*.safetensors"):  # previous arrays: no longer named by the JSON
        if old.name != name:
            old.unlink(missing_ok=True)
    return out


def _tensors_file(d: Path) -> Path:
    try:
        doc = json.loads((d / META).read_text())
    except (OSError, ValueError):
        return d / TENSORS
    return d / str(doc.get("tensors", TENSORS)) if isinstance(doc, dict) else d / TENSORS


def has_state(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a complete checkpoint."""
    d = Path(directory)
    return (d / META).is_file() and _tensors_file(d).is_file()


def load_state(directory: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_state`; CheckpointError (one line) if it is missing or corrupt."""
    from safetensors.numpy import load

    d = Path(directory)
    try:
        doc = json.loads((d / META).read_text())
        name = str(doc.get("tensors", TENSORS)) if isinstance(doc, dict) else TENSORS
        if Path(name).name != name:
            raise ValueError(f"arrays file {name!r} is not a plain file name")
        tensors = d / name
        blob = tensors.read_bytes()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the FL checkpoint in {d}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{d / META} is not an Ark FL checkpoint (format {doc.get('format')!r})")
    if hashlib.sha256(blob).hexdigest() != doc.get("sha256"):
        raise CheckpointError(f"{tensors} does not match its {META} (edited or damaged file)")
    arrays = {k: v for k, v in load(blob).items() if k != "_"}
    return arrays, doc["meta"]


class Checkpointable:
    """A strategy whose whole state is ``state()``: arrays and a JSON-able dict, saved together
    by :func:`save_state`. Subclasses add their own through the three ``_extra`` hooks."""

    name: ClassVar[str] = ""

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _check_strategy(self, meta: Mapping[str, Any]) -> None:
        if meta.get("strategy") != self.name:
            raise FLConfigError(f"checkpoint holds strategy {meta.get('strategy')!r}, not {self.name!r}")

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _extra_meta(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        pass

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Checkpoint to ``directory`` (safetensors + JSON)."""
        save_state(directory, *self.state())

    def restore(self, directory: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by :meth:`save` into this strategy."""
        self.load_state(*load_state(directory))
