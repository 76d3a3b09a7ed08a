"""How a fleet is simulated: non-IID data partitions, who participates each round, how fast each device is.

- :func:`dirichlet_partition`: each class is split over the clients in proportions drawn from
  ``Dirichlet(alpha)`` (small ``alpha``: each client sees few classes).
- :class:`Participation`: ``uniform`` (a fraction of the fleet, uniformly at random),
  ``heterogeneous`` (client ``i`` joins each round with its own probability ``p_i``, which the
  server does not know), ``cyclic`` (the fleet in groups that take turns, like robots charging).
- :func:`device_speeds`: seconds per local step for each client, log-normally spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.fl.errors import FLConfigError


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 2) -> list[np.ndarray]:
    """Indices of ``labels`` for each of ``num_clients`` clients, label-skewed by ``Dirichlet(alpha)``.

    Redrawn (deterministically) until every client holds at least ``min_size`` examples.
    """
    if alpha <= 0:
        raise FLConfigError(f"alpha: expected > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for k in classes:
            idx = rng.permutation(np.flatnonzero(labels == k))
            share = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise FLConfigError(f"cannot give {num_clients} clients {min_size} examples each from {len(labels)} examples")


@dataclass
class Participation:
    """Which clients take part in each round. ``kind``: ``uniform``, ``heterogeneous`` or ``cyclic``.

    ``fraction``: uniform's share of the fleet per round (at least one client). ``p_low``/``p_high``:
    range of heterogeneous probabilities (drawn once per client, hidden from the server).
    ``groups``: how many cyclic groups take turns. ``label_correlated`` (heterogeneous): a client's
    probability rises with the mean label of its data instead of being drawn at random, so
    rare participants hold different data (the case where FedAvg becomes biased and FedAU is not).
    """

    kind: str = "uniform"
    fraction: float = 0.2
    p_low: float = 0.05
    p_high: float = 0.9
    groups: int = 4
    label_correlated: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "heterogeneous", "cyclic", "full"):
            raise FLConfigError(f"participation.kind: expected uniform, heterogeneous, cyclic or full, got {self.kind!r}")
        if not 0 < self.fraction <= 1:
            raise FLConfigError(f"participation.fraction: expected (0, 1], got {self.fraction}")

    def probabilities(self, num_clients: int, seed: int, mean_labels: np.ndarray | None = None) -> np.ndarray:
        """Each client's long-run participation probability (what FedAU estimates without being told)."""
        if self.kind == "heterogeneous":
            if self.label_correlated and mean_labels is not None:
                m = np.asarray(mean_labels, np.float64)
                span = max(m.max() - m.min(), 1e-9)
                return self.p_low + (self.p_high - self.p_low) * (m - m.min()) / span
            return np.random.default_rng(seed + 7).uniform(self.p_low, self.p_high, num_clients)
        if self.kind == "cyclic":
            return np.full(num_clients, 1.0 / self.groups)
        if self.kind == "full":
            return np.ones(num_clients)
        return np.full(num_clients, max(1, round(self.fraction * num_clients)) / num_clients)

    def sample(self, round_: int, num_clients: int, seed: int, mean_labels: np.ndarray | None = None) -> np.ndarray:
        """Sorted indices of the clients taking part in ``round_`` (never empty).

        ``mean_labels``: each client's mean label, for ``label_correlated`` probabilities.
        """
        rng = np.random.default_rng([seed, round_, 11])
        if self.kind == "full":
            return np.arange(num_clients)
        if self.kind == "uniform":
            m = max(1, int(round(self.fraction * num_clients)))
            return np.sort(rng.choice(num_clients, m, replace=False))
        if self.kind == "cyclic":
            group = round_ % self.groups
            members = np.arange(num_clients)[np.arange(num_clients) % self.groups == group]
            m = max(1, int(round(self.fraction * self.groups * len(members))))
            return np.sort(rng.choice(members, min(m, len(members)), replace=False))
        chosen = np.flatnonzero(rng.random(num_clients) < self.probabilities(num_clients, seed, mean_labels))
        return chosen if chosen.size else np.array([int(rng.integers(num_clients))])


def device_speeds(num_clients: int, seed: int = 0, spread: float = 1.0, base: float = 0.01) -> np.ndarray:
    """Seconds per local step for each client: ``base * lognormal(0, spread)`` (spread 1: ~20x fast-to-slow)."""
    return (base * np.random.default_rng([seed, 5]).lognormal(0.0, spread, num_clients)).astype(np.float64)
