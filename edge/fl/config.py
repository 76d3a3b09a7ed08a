"""FL configuration files (``configs/fl/*.yaml``): one scenario for ``simulate``, ``server`` and ``client``.

A file holds :class:`~edge.fl.simulation.SimConfig` keys at the top level and, for the
networked runner, a ``network:`` section of :class:`FleetConfig` keys::

    task: digits
    clients: 8
    alpha: 0.5
    strategy: fedavg
    rounds: 10
    network: {clients_per_round: 4, min_updates: 2, round_timeout_s: 20}

A bad key or value fails at load time naming the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edge.fl.errors import FLConfigError
from edge.fl.simulation import SimConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs" / "fl"


def resolve_config_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as given, else a name in ``configs/fl/`` (``digits`` -> ``configs/fl/digits.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.is_file():
            return cand
    raise FLConfigError(f"no FL config {str(path)!r} (neither a file nor a name in {CONFIG_DIR})")


def read_config(path: str | os.PathLike[str] | None) -> tuple[dict[str, Any], str]:
    if path is None:
        return {}, "defaults"
    from ark.config import read_yaml

    p = resolve_config_path(path)
    data = read_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FLConfigError(f"{p}: expected a mapping at the top level")
    return data, str(p)


def load_sim_config(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> SimConfig:
    """The SimConfig of a file (its ``network`` section ignored) with ``overrides`` on top."""
    data, source = read_config(path)
    data = {k: v for k, v in data.items() if k != "network"}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return SimConfig.from_dict(data, source)


@dataclass
class FleetConfig:
    """A networked run: the scenario's data/strategy keys plus how the server runs rounds.

    ``clients_per_round``: updates that close a round. ``min_updates``: fewest updates a round
    may close with at its ``round_timeout_s``. ``max_norm``: absolute bound on update norms.
    ``prefix``: the services' name prefix.
    """

    task: str = "digits"
    hidden: int = 32
    clients: int = 8
    alpha: float = 0.5
    seed: int = 0
    strategy: str = "fedavg"
    strategy_args: dict[str, Any] = field(default_factory=dict)
    rounds: int = 10
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    compression: dict[str, Any] = field(default_factory=dict)
    clients_per_round: int = 4
    min_updates: int = 1
    round_timeout_s: float = 30.0
    max_norm: float | None = None
    prefix: str = "/fl"

    def build(self) -> tuple[Any, list[np.ndarray]]:
        """The task and every client's partition (identical in every process of the fleet)."""
        from edge.fl.partition import dirichlet_partition
        from edge.fl.tasks import load_task

        task = load_task(self.task, self.seed, self.hidden)
        return task, dirichlet_partition(task.y_train, self.clients, self.alpha, self.seed)


def load_fleet_config(path: str | os.PathLike[str] | None = None,
                      overrides: Mapping[str, Any] | None = None) -> FleetConfig:
    """The FleetConfig of a file (top-level shared keys + its ``network`` section) with ``overrides``."""
    data, source = read_config(path)
    names = {f.name for f in fields(FleetConfig)}
    sim_only = set(SimConfig.__dataclass_fields__) - names
    merged: dict[str, Any] = {}
    for k, v in data.items():
        if k == "network":
            if not isinstance(v, dict):
                raise FLConfigError(f"{source}: key 'network': expected a mapping")
            for nk in v:
                if nk not in names:
                    raise FLConfigError(f"{source}: unknown key 'network.{nk}' (expected one of {', '.join(sorted(names))})")
            merged.update(v)
        elif k in names:
            merged[k] = v
        elif k not in sim_only:
            raise FLConfigError(f"{source}: unknown key {k!r}")
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        fc = FleetConfig(**merged)
    except TypeError as exc:
        raise FLConfigError(f"{source}: {exc}") from None
    for key in ("clients", "rounds", "local_steps", "batch_size", "clients_per_round", "min_updates"):
        v = getattr(fc, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise FLConfigError(f"{source}: key {key!r}: expected a positive integer, got {v!r}")
    return fc
