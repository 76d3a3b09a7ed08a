"""Federated training of an Ark policy: each robot trains on its own demonstrations, one shared model.

Each robot holds an Ark dataset (``ark collect``) of its own task variant. A
:class:`PolicyClient` wraps it: it builds the same policy as every other robot (same config,
same *pooled* normalisation statistics, see :func:`pool_stats`), loads the global flat
parameter vector, runs local optimiser steps on its windows, and returns ``delta = y - x``.
Any synchronous strategy of :mod:`edge.fl.strategy` aggregates the deltas; its instructions
(FedProx's ``prox_mu``, SCAFFOLD's ``correction``, FedAvg-M's ``momentum``) are applied to the
gradient before the local optimiser (Adam by default; ``optimizer="sgd"`` follows the papers).

    clients = [PolicyClient(f"data/robot{i}", "bc", overrides) for i in range(4)]
    result = train_federated(clients, FedAvg, rounds=30, local_steps=50)
    result.policy.save("runs/fed-bc")            # an ordinary policy folder: ark eval works on it

Only parameters are federated; the normalisation statistics are agreed on once, from every
robot's counts, means and variances (never raw data).
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge.fl.client import ClientUpdate


def pool_stats(parts: Sequence[tuple[int, Mapping[str, Mapping[str, Any]]]]) -> dict[str, dict[str, list[float]]]:
    """Pool per-robot ``(frames, {key: {min, max, mean, std}})`` into the statistics of the union of the data."""
    out: dict[str, dict[str, list[float]]] = {}
    keys = set.intersection(*(set(s) for _, s in parts))
    for key in sorted(keys):
        n = np.array([c for c, _ in parts], np.float64)
        mean = np.stack([np.asarray(s[key]["mean"], np.float64) for _, s in parts])
        std = np.stack([np.asarray(s[key]["std"], np.float64) for _, s in parts])
        mu = (n[:, None] * mean).sum(0) / n.sum()
        second = (n[:, None] * (std ** 2 + mean ** 2)).sum(0) / n.sum()
        out[key] = {"mean": mu.tolist(), "std": np.sqrt(np.maximum(second - mu ** 2, 0)).tolist(),
                    "min": np.min([np.asarray(s[key]["min"]) for _, s in parts], axis=0).tolist(),
                    "max": np.max([np.asarray(s[key]["max"]) for _, s in parts], axis=0).tolist()}
    return out


def build_policy(policy_type: str, features: Mapping[str, Any], stats: Mapping[str, Any],
                 overrides: Mapping[str, Any] | None = None, seed: int = 0) -> Any:
    """A fresh policy of ``policy_type`` for a dataset's ``features`` with the given statistics (seeded init)."""
    import torch

    from policies.config import ACTION_KEY
    from policies.registry import policy_class

    cls = policy_class(policy_type)
    inputs = {k: list(f.shape) for k, f in features.items()
              if k.startswith("observation") and len(f.shape) == 1 and not f.is_image}
    data = {"input_features": inputs, "output_features": {ACTION_KEY: list(features[ACTION_KEY].shape)},
            **dict(overrides or {})}
    torch.manual_seed(seed)
    policy = cls(cls.config_class.from_dict(data, source=f"federated {policy_type}"))
    policy.set_stats(stats)
    return policy


def get_flat(policy: Any) -> np.ndarray:
    """The policy's trainable parameters as one float32 vector."""
    import torch

    return torch.nn.utils.parameters_to_vector([p for p in policy.parameters() if p.requires_grad]).detach().numpy().copy()


def set_flat(policy: Any, flat: np.ndarray) -> None:
    import torch

    torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(flat, np.float32)),
                                        [p for p in policy.parameters() if p.requires_grad])


class PolicyClient:
    """One robot: its dataset, its copy of the policy, and local training from a global vector.

    ``data``: an Ark dataset path (or Dataset). ``stats``: the pooled statistics (set later with
    :meth:`set_stats` when they are not known yet). ``optimizer``: ``adam`` or ``sgd``.
    """

    def __init__(self, data: Any, policy_type: str = "bc", overrides: Mapping[str, Any] | None = None, *,
                 name: str | None = None, stats: Mapping[str, Any] | None = None, batch_size: int = 64,
                 optimizer: str = "adam", seed: int = 0) -> None:
        from policies.dataset import Dataset

        self.ds = data if isinstance(data, Dataset) else Dataset.open(data, read_only=True)
        self.name = name or os.path.basename(str(self.ds.path))
        self.policy_type = policy_type
        self.overrides = dict(overrides or {})
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.seed = seed
        self.rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])  # not hash(): salted per process
        self.policy = build_policy(policy_type, self.ds.features, stats or self.ds.stats, self.overrides, seed)
        from policies.dataset import WindowSampler

        cfg = self.policy.config
        self.keys = [*cfg.input_features, "action"]
        self.sampler = WindowSampler(self.ds, obs_horizon=cfg.n_obs_steps, action_horizon=len(cfg.action_delta_indices),
                                     action_start=cfg.action_delta_indices[0], keys=self.keys, in_memory=True)

    @property
    def num_examples(self) -> int:
        return int(self.ds.num_frames)

    def local_stats(self) -> tuple[int, dict[str, Any]]:
        """What this robot contributes to the pooled statistics: its frame count and per-feature stats."""
        return self.num_examples, {k: {n: np.asarray(v).tolist() for n, v in s.items()} for k, s in self.ds.stats.items()}

    def set_stats(self, stats: Mapping[str, Any]) -> None:
        self.policy.set_stats(stats)

    def _batch(self) -> dict[str, Any]:
        import torch

        arrays = self.sampler.sample(self.batch_size, self.rng)
        out = {k: torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.float32)) for k in self.keys}
        out["action_is_pad"] = torch.from_numpy(arrays["action_is_pad"])
        return out

    def train(self, flat: np.ndarray, instructions: Mapping[str, Any], steps: int,
              want_grad_mean: bool = False) -> tuple[np.ndarray, np.ndarray | None, float]:
        """Local steps from ``flat``; returns ``(delta, grad_mean or None, mean loss)``."""
        import torch

        set_flat(self.policy, flat)
        self.policy.train()
        params = [p for p in self.policy.parameters() if p.requires_grad]
        lr = float(instructions.get("lr", self.policy.config.optimizer_lr))
        opt = (torch.optim.Adam(params, lr=lr) if self.optimizer == "adam" else torch.optim.SGD(params, lr=lr))
        x0 = torch.from_numpy(np.asarray(flat, np.float32))
        mu = float(instructions.get("prox_mu", 0.0))
        corr = instructions.get("correction")
        corr = None if corr is None else torch.from_numpy(np.asarray(corr, np.float32))
        mom = instructions.get("momentum")
        mom = None if mom is None else torch.from_numpy(np.asarray(mom, np.float32))
        beta = float(instructions.get("beta", 1.0))
        gsum = torch.zeros_like(x0) if want_grad_mean else None
        losses = []
        for _ in range(steps):
            loss, _ = self.policy(self._batch())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            g = torch.nn.utils.parameters_to_vector([p.grad for p in params])
            if gsum is not None:
                gsum += g
            if mu or corr is not None or mom is not None:
                y = torch.nn.utils.parameters_to_vector(params).detach()
                d = g + mu * (y - x0) if mu else g
                if corr is not None:
                    d = d + corr
                if mom is not None:
                    d = beta * d + (1 - beta) * mom
                torch.nn.utils.vector_to_parameters(d, [p.grad for p in params])
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            losses.append(float(loss.detach()))
        delta = get_flat(self.policy) - np.asarray(flat, np.float32)
        grad_mean = None if gsum is None else (gsum / max(steps, 1)).numpy()
        return delta, grad_mean, float(np.mean(losses)) if losses else float("nan")


@dataclass
class FederatedResult:
    """The trained policy (with pooled statistics), the final flat vector and per-round history."""

    policy: Any
    params: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0


def train_federated(clients: Sequence[PolicyClient], strategy_factory: Callable[..., Any], *, rounds: int,
                    local_steps: int, lr: float | None = None, participation: float = 1.0, seed: int = 0,
                    strategy_args: Mapping[str, Any] | None = None,
                    progress: Callable[[dict[str, float]], None] | None = None) -> FederatedResult:
    """Federated training over ``clients`` with a synchronous strategy class (e.g. FedAvg, FedProx, ScaffoldM)."""
    stats = pool_stats([c.local_stats() for c in clients])
    for c in clients:
        c.set_stats(stats)
    x0 = get_flat(clients[0].policy)
    for c in clients[1:]:
        set_flat(c.policy, x0)
    names = [c.name for c in clients]
    lr = lr if lr is not None else float(clients[0].policy.config.optimizer_lr)
    strategy = strategy_factory(x0, clients=names, lr=lr, **dict(strategy_args or {}))
    rng = np.random.default_rng(seed)
    history = []
    t0 = time.perf_counter()
    for r in range(rounds):
        m = max(1, int(round(participation * len(clients))))
        chosen = sorted(rng.choice(len(clients), m, replace=False)) if m < len(clients) else range(len(clients))
        losses = []
        for i in chosen:
            c = clients[i]
            ins = strategy.instructions(c.name)
            delta, gm, loss = c.train(strategy.params, ins, local_steps, strategy.wants_grad_mean)
            losses.append(loss)
            strategy.accept(ClientUpdate(c.name, strategy.round, delta, num_examples=c.num_examples, steps=local_steps,
                                         lr=float(ins.get("lr", lr)), grad_mean=gm))
        strategy.aggregate()
        row = {"round": r + 1, "loss": float(np.mean(losses)), "bytes_up": (r + 1) * m * x0.nbytes}
        history.append(row)
        if progress:
            progress(row)
    policy = clients[0].policy
    set_flat(policy, strategy.params)
    policy.eval()
    return FederatedResult(policy, strategy.params.copy(), history, time.perf_counter() - t0)
