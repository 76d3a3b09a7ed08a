"""Checkpoints of federated state: named numpy arrays in safetensors plus a JSON document.

``save_state(dir, arrays, meta)`` writes ``state.safetensors`` and ``state.json`` through
temporary files and renames (the JSON last, carrying the weights' SHA-256), so a crash in
the middle of a save leaves the previous checkpoint readable. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edge.fl.errors import CheckpointError

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


def save_state(directory: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and the JSON-able ``meta`` to ``directory`` (created if needed); return it."""
    from safetensors.numpy import save

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}) if arrays else save({"_": np.zeros(0, np.uint8)})
    _atomic_write(out / TENSORS, blob)
    doc = {"format": FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), "meta": meta}
    _atomic_write(out / META, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return out


def has_state(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a complete checkpoint."""
    return (Path(directory) / META).is_file() and (Path(directory) / TENSORS).is_file()


def load_state(directory: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_state`; CheckpointError (one line) if it is missing or corrupt."""
    from safetensors.numpy import load

    d = Path(directory)
    try:
        doc = json.loads((d / META).read_text())
        blob = (d / TENSORS).read_bytes()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the FL checkpoint in {d}: {exc}") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{d / META} is not an Ark FL checkpoint (format {doc.get('format')!r})")
    if hashlib.sha256(blob).hexdigest() != doc.get("sha256"):
        raise CheckpointError(f"{d / TENSORS} does not match its {META} (interrupted write or edited file)")
    arrays = {k: v for k, v in load(blob).items() if k != "_"}
    return arrays, doc["meta"]
