"""Synchronous federated strategies over flat parameter vectors: FedAvg, FedProx, FedAvg-M, SCAFFOLD(-M), FedAU.

A strategy is a small class that owns the global parameters ``params`` (float32 ``(P,)``)
and every piece of server state (momentum, control variates, participation history, the
round number, and the round's partial aggregate). A round is::

    ins = strategy.instructions(client_id)    # how the client should train (see edge.fl.client)
    strategy.accept(update)                    # fold one ClientUpdate in, as soon as it arrives
    strategy.aggregate()                       # close the round: new params, round += 1

``accept`` folds each delta into a running weighted sum (O(P) memory whatever the number of
clients); with ``robust="median"`` or ``"trimmed_mean"`` the round's deltas are buffered
instead. ``state()`` / ``load_state()`` (and ``save(dir)`` / ``load(dir)``) cover everything,
including a half-finished round, so a server that crashes resumes without losing accepted
updates. Validation of updates (shape, finiteness, norm, replays) is the server's job: see
:mod:`edge.fl.validation`.

References: FedAvg (McMahan et al. 2017); FedProx (Li et al. 2020); FedAvg-M and SCAFFOLD-M
with client momentum (Cheng, Huang, Wu, Yuan, "Momentum Benefits Non-IID Federated Learning
Simply and Provably", ICLR 2024); server momentum (Hsu et al. 2019); SCAFFOLD (Karimireddy et
al. 2020, option II control variates); FedAU (Wang & Ji, "A Lightweight Method for Tackling
Unknown Participation Statistics in Federated Averaging", ICLR 2024).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edge.fl.checkpoint import Checkpointable
from edge.fl.client import ClientUpdate
from edge.fl.errors import FLConfigError
from edge.fl.robust import ROBUST_MODES, robust_aggregate


class RoundAccumulator:
    """The partial aggregate of the current round: weighted running sums, or buffered deltas when robust.

    Named sums (``fold(name, vec, w)``) let a strategy aggregate extra vectors (momentum
    directions, control-variate deltas) the same way. Its state is part of the checkpoint.
    """

    def __init__(self, dim: int, robust: str | None = None) -> None:
        self.dim = dim
        self.robust = robust
        self.sums: dict[str, np.ndarray] = {}
        self.weights: dict[str, float] = {}
        self.buffer: list[np.ndarray] = []
        self.clients: list[str] = []

    def fold(self, name: str, vec: np.ndarray, weight: float) -> None:
        """Add ``weight * vec`` to the running sum ``name``."""
        acc = self.sums.get(name)
        if acc is None:
            acc = self.sums[name] = np.zeros(self.dim, np.float64 if self.dim <= 1 << 22 else np.float32)
        if weight == 1.0:
            acc += vec
        else:
            acc += np.float32(weight) * vec if acc.dtype == np.float32 else weight * vec
        self.weights[name] = self.weights.get(name, 0.0) + float(weight)

    def add_delta(self, client_id: str, delta: np.ndarray, weight: float) -> None:
        """Fold (or, when robust, buffer) one client's delta."""
        self.clients.append(client_id)
        if self.robust:
            self.buffer.append(np.asarray(delta, np.float32).copy())
        else:
            self.fold("delta", delta, weight)

    def mean(self, name: str) -> np.ndarray | None:
        """Weighted mean of the sum ``name`` (None when nothing was folded)."""
        if name not in self.sums or self.weights.get(name, 0.0) <= 0:
            return None
        return (self.sums[name] / self.weights[name]).astype(np.float32)

    def mean_delta(self, trim: float) -> np.ndarray | None:
        if self.robust:
            return robust_aggregate(np.stack(self.buffer), self.robust, trim) if self.buffer else None
        return self.mean("delta")

    def __len__(self) -> int:
        return len(self.clients)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"acc.sum.{k}": v for k, v in self.sums.items()}
        if self.buffer:
            arrays["acc.buffer"] = np.stack(self.buffer)
        return arrays, {"weights": self.weights, "clients": self.clients, "robust": self.robust}

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.sums = {k[len("acc.sum."):]: np.array(v) for k, v in arrays.items() if k.startswith("acc.sum.")}
        self.buffer = list(np.array(arrays["acc.buffer"])) if "acc.buffer" in arrays else []
        self.weights = {k: float(v) for k, v in meta["weights"].items()}
        self.clients = list(meta["clients"])


class Strategy(Checkpointable):
    """FedAvg: the global delta is the example-weighted mean of the clients' deltas.

    ``params``: the initial model, flattened. ``clients``: the fleet's client ids, when known
    (FedAU and SCAFFOLD need the fleet size; the server refuses unknown ids). ``server_lr``:
    the global step on the mean delta. ``lr``: the clients' local step size, sent in the
    instructions. ``robust``: None, ``"median"`` or ``"trimmed_mean"`` (with ``trim``).
    ``weighting``: ``"examples"`` (FedAvg) or ``"uniform"``.
    """

    name: ClassVar[str] = "fedavg"

    def __init__(self, params: np.ndarray, *, clients: Sequence[str] | None = None, server_lr: float = 1.0,
                 lr: float = 0.05, robust: str | None = None, trim: float = 0.1, weighting: str = "examples") -> None:
        if robust is not None and robust not in ROBUST_MODES:
            raise FLConfigError(f"robust: expected one of {', '.join(ROBUST_MODES)} or none, got {robust!r}")
        if weighting not in ("examples", "uniform"):
            raise FLConfigError(f"weighting: expected 'examples' or 'uniform', got {weighting!r}")
        if not 0 <= trim < 0.5:
            raise FLConfigError(f"trim: expected a fraction in [0, 0.5), got {trim}")
        self.params = np.asarray(params, np.float32).ravel().copy()
        self.dim = self.params.size
        self.clients = list(clients) if clients is not None else None
        self.server_lr = float(server_lr)
        self.lr = float(lr)
        self.robust = robust
        self.trim = float(trim)
        self.weighting = weighting
        self.round = 0
        self.acc = RoundAccumulator(self.dim, robust)

    # -- client side ------------------------------------------------------------------------------
    def instructions(self, client_id: str) -> dict[str, Any]:
        """How ``client_id`` trains this round (see :mod:`edge.fl.client` for the keys)."""
        return {"lr": self.lr}

    @property
    def wants_grad_mean(self) -> bool:
        """Whether clients must return their mean gradient (SCAFFOLD)."""
        return False

    # -- server side ------------------------------------------------------------------------------
    def weight(self, update: ClientUpdate) -> float:
        return float(update.num_examples) if self.weighting == "examples" else 1.0

    def accept(self, update: ClientUpdate) -> None:
        """Fold one validated update into the round's aggregate."""
        self.acc.add_delta(update.client_id, update.delta, self.weight(update))
        self._fold_extra(update)

    def _fold_extra(self, update: ClientUpdate) -> None:
        """Subclasses aggregate extra per-client quantities here."""

    def aggregate(self) -> np.ndarray:
        """Close the round: apply the aggregate to ``params``, advance ``round``, return ``params``.

        A round without any accepted update leaves the model as it is (and still advances).
        """
        mean = self.acc.mean_delta(self.trim)
        self._apply(mean)
        self.round += 1
        self.acc = RoundAccumulator(self.dim, self.robust)
        return self.params

    def _apply(self, mean_delta: np.ndarray | None) -> None:
        if mean_delta is not None:
            self.params += np.float32(self.server_lr) * mean_delta

    @property
    def pending(self) -> list[str]:
        """Clients whose updates are folded into the open round."""
        return list(self.acc.clients)

    # -- checkpoint -------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Everything needed to resume: arrays (safetensors) and JSON metadata."""
        arrays, acc_meta = self.acc.state()
        arrays["params"] = self.params
        meta = {"strategy": self.name, "round": self.round, "dim": self.dim, "clients": self.clients,
                "server_lr": self.server_lr, "lr": self.lr, "robust": self.robust, "trim": self.trim,
                "weighting": self.weighting, "acc": acc_meta, "extra": self._extra_meta()}
        arrays.update(self._extra_arrays())
        return arrays, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self._check_strategy(meta)
        if int(meta["dim"]) != self.dim:
            raise FLConfigError(f"checkpoint has {meta['dim']} parameters, the model has {self.dim}")
        self.params = np.array(arrays["params"], np.float32)
        self.round = int(meta["round"])
        self.clients = meta.get("clients")
        self.acc = RoundAccumulator(self.dim, self.robust)
        self.acc.load_state(arrays, meta["acc"])
        self._load_extra(arrays, meta.get("extra", {}))

    def num_clients(self, default: int) -> int:
        return len(self.clients) if self.clients else default


FedAvg = Strategy


class FedProx(Strategy):
    """FedAvg whose clients add the proximal term ``mu/2 |y - x|^2`` to their loss (``mu`` = ``prox_mu``)."""

    name = "fedprox"

    def __init__(self, params: np.ndarray, *, prox_mu: float = 0.01, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.prox_mu = float(prox_mu)

    def instructions(self, client_id: str) -> dict[str, Any]:
        return {**super().instructions(client_id), "prox_mu": self.prox_mu}

    def _extra_meta(self) -> dict[str, Any]:
        return {"prox_mu": self.prox_mu}


class ClientMomentum:
    """Client momentum (Cheng et al. 2024) for a strategy: each round's clients get ``momentum``
    and ``beta`` in their instructions; the server folds each client's mean local direction
    ``-delta / (lr * steps)`` and makes the weighted mean the next round's momentum. A mixin
    before the base strategy (every method defers to ``super()``)."""

    def __init__(self, params: np.ndarray, *, beta: float = 0.5, **kw: Any) -> None:
        super().__init__(params, **kw)  # type: ignore[call-arg]
        if not 0 < beta <= 1:
            raise FLConfigError(f"beta: expected 0 < beta <= 1, got {beta}")
        self.beta = float(beta)
        self.momentum: np.ndarray | None = None

    def instructions(self, client_id: str) -> dict[str, Any]:
        ins = super().instructions(client_id)  # type: ignore[misc]
        if self.momentum is not None:
            ins.update(momentum=self.momentum, beta=self.beta)
        return ins

    def _fold_extra(self, update: ClientUpdate) -> None:
        super()._fold_extra(update)  # type: ignore[misc]
        scale = -1.0 / (update.lr * max(update.steps, 1))
        self.acc.fold("direction", update.delta * np.float32(scale), self.weight(update))  # type: ignore[attr-defined]

    def _apply(self, mean_delta: np.ndarray | None) -> None:
        direction = self.acc.mean("direction")  # type: ignore[attr-defined]
        if direction is not None:
            self.momentum = direction
        super()._apply(mean_delta)  # type: ignore[misc]

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        out = super()._extra_arrays()  # type: ignore[misc]
        if self.momentum is not None:
            out["momentum"] = self.momentum
        return out

    def _extra_meta(self) -> dict[str, Any]:
        return {**super()._extra_meta(), "beta": self.beta}  # type: ignore[misc]

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        super()._load_extra(arrays, meta)  # type: ignore[misc]
        self.momentum = np.array(arrays["momentum"]) if "momentum" in arrays else None


class FedAvgM(ClientMomentum, Strategy):
    """FedAvg-M with client momentum (Cheng et al. 2024, Alg. 1).

    Each local step moves along ``beta * g + (1 - beta) * m`` where ``m`` is the round's
    momentum: the mean local direction ``-delta / (lr * steps)`` of the previous round's
    clients. The first round runs plain local SGD.
    """

    name = "fedavgm"


class FedAvgServerM(Strategy):
    """FedAvg with server momentum (Hsu et al. 2019): ``v = beta v + mean_delta``, ``x += server_lr v``."""

    name = "fedavg_server_m"

    def __init__(self, params: np.ndarray, *, server_momentum: float = 0.9, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.server_momentum = float(server_momentum)
        self.velocity = np.zeros(self.dim, np.float32)

    def _apply(self, mean_delta: np.ndarray | None) -> None:
        if mean_delta is not None:
            self.velocity = np.float32(self.server_momentum) * self.velocity + mean_delta
            self.params += np.float32(self.server_lr) * self.velocity

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"velocity": self.velocity}

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.velocity = np.array(arrays["velocity"])


class Scaffold(Strategy):
    """SCAFFOLD: local gradients corrected by ``c - c_i`` (control variates).

    The server keeps every client's ``c_i`` (so clients stay stateless: a robot that is
    re-imaged loses nothing), at the cost of ``P`` floats per client. A client returns its
    mean raw gradient over the local steps, which is SCAFFOLD's option-II ``c_i^+``.
    ``c`` moves by the sum of the participants' ``c_i`` changes divided by the fleet size.
    """

    name = "scaffold"

    def __init__(self, params: np.ndarray, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.c = np.zeros(self.dim, np.float32)
        self.c_i: dict[str, np.ndarray] = {}

    @property
    def wants_grad_mean(self) -> bool:
        return True

    def instructions(self, client_id: str) -> dict[str, Any]:
        ci = self.c_i.get(client_id)
        return {**super().instructions(client_id), "correction": self.c if ci is None else self.c - ci}

    def _fold_extra(self, update: ClientUpdate) -> None:
        if update.grad_mean is None:
            return
        new = np.asarray(update.grad_mean, np.float32)
        old = self.c_i.get(update.client_id)
        self.acc.fold("dc", new if old is None else new - old, 1.0)
        self.c_i[update.client_id] = new.copy()

    def _apply(self, mean_delta: np.ndarray | None) -> None:
        if "dc" in self.acc.sums:
            n = self.num_clients(max(len(self.c_i), 1))
            self.c += (self.acc.sums["dc"] / n).astype(np.float32)
        super()._apply(mean_delta)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        out = {"c": self.c}
        out.update({f"c_i.{k}": v for k, v in self.c_i.items()})
        return out

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.c = np.array(arrays["c"])
        self.c_i = {k[len("c_i."):]: np.array(v) for k, v in arrays.items() if k.startswith("c_i.")}


class ScaffoldM(ClientMomentum, Scaffold):
    """SCAFFOLD-M (Cheng et al. 2024, Alg. 2): SCAFFOLD's corrected gradient mixed with client momentum.

    Step direction ``beta (g - c_i + c) + (1 - beta) m``; ``m`` is the mean local direction of
    the previous round, as in :class:`FedAvgM`.
    """

    name = "scaffold_m"


class FedAU(Strategy):
    """FedAU: each participant's delta weighted by its estimated mean participation interval.

    For every client of the fleet the server counts the rounds since it last took part; when it
    takes part (or the count reaches the cutoff ``K``) the interval, capped at ``K``, is recorded,
    and the weight ``omega_i`` is the mean recorded interval (1 before any). The update is
    ``x += server_lr * sum_{i in round} omega_i delta_i / N``: unbiased for unknown,
    heterogeneous participation probabilities (``E[omega_i] ~ 1/p_i``) without knowing them.
    Needs ``clients`` (the fleet).
    """

    name = "fedau"

    def __init__(self, params: np.ndarray, *, clients: Sequence[str], cutoff: int = 50, **kw: Any) -> None:
        if not clients:
            raise FLConfigError("fedau needs the list of the fleet's clients")
        super().__init__(params, clients=clients, weighting="uniform", **kw)
        self.cutoff = int(cutoff)
        n = len(self.clients)
        self.index = {c: i for i, c in enumerate(self.clients)}
        self.since = np.zeros(n, np.int64)      # rounds since the last participation (or cutoff)
        self.interval_sum = np.zeros(n, np.int64)
        self.interval_count = np.zeros(n, np.int64)

    def omega(self) -> np.ndarray:
        """Current aggregation weights of every client (mean participation interval, 1 before any)."""
        out = np.ones(len(self.clients))
        seen = self.interval_count > 0
        out[seen] = self.interval_sum[seen] / self.interval_count[seen]
        return out

    def _end_round_intervals(self, participants: Sequence[str]) -> None:
        took_part = np.zeros(len(self.clients), bool)
        for c in participants:
            if c in self.index:
                took_part[self.index[c]] = True
        self.since += 1
        done = took_part | (self.since >= self.cutoff)
        self.interval_sum[done] += np.minimum(self.since[done], self.cutoff)
        self.interval_count[done] += 1
        self.since[done] = 0

    def accept(self, update: ClientUpdate) -> None:
        # omega_i is known on arrival: the participation that arrives now closes client i's
        # current interval, so its delta is folded in with that weight right away.
        i = self.index[update.client_id]
        interval = min(int(self.since[i]) + 1, self.cutoff)
        omega_i = (self.interval_sum[i] + interval) / (self.interval_count[i] + 1)
        self.acc.add_delta(update.client_id, update.delta, float(omega_i))

    def aggregate(self) -> np.ndarray:
        self._end_round_intervals(self.acc.clients)
        if self.robust:
            mean = self.acc.mean_delta(self.trim)
            if mean is not None:
                self.params += np.float32(self.server_lr) * mean
        elif "delta" in self.acc.sums:
            self.params += (np.float32(self.server_lr) * self.acc.sums["delta"] / len(self.clients)).astype(np.float32)
        self.round += 1
        self.acc = RoundAccumulator(self.dim, self.robust)
        return self.params

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"since": self.since, "interval_sum": self.interval_sum, "interval_count": self.interval_count}

    def _extra_meta(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff}

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.since = np.array(arrays["since"])
        self.interval_sum = np.array(arrays["interval_sum"])
        self.interval_count = np.array(arrays["interval_count"])
        self.index = {c: i for i, c in enumerate(self.clients)}
