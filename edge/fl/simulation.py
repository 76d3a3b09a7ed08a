"""Simulate a fleet in one process: many clients, non-IID data, participation patterns, device speeds.

    from edge.fl.simulation import SimConfig, simulate
    result = simulate(SimConfig(task="digits", clients=50, alpha=0.1, strategy="scaffold", rounds=30))
    print(result.final_accuracy, result.bytes_up)

Synchronous strategies (:mod:`edge.fl.strategy`) run in rounds: the participants of a round
are trained together, ``chunk`` clients per batched gradient call (:func:`train_clients`), and
each update goes through compression (if configured), validation and ``strategy.accept`` as it
is produced. Event-driven strategies (:mod:`edge.fl.asynchronous`) run on a simulated clock:
each client's update arrives ``steps * seconds_per_step`` after it was dispatched, and the
strategy decides when to aggregate. Results are deterministic for a given seed, and a client's
update depends only on (seed, round, client), never on how clients are batched — so the Ray
runner (:mod:`edge.fl.ray_runner`) reproduces this one.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge.fl.asynchronous import AsyncStrategy, FedAsync, FedBuff, FedCompass, SyncFedAvg
from edge.fl.client import ClientUpdate, local_sgd
from edge.fl.compression import Compressor, compression_config
from edge.fl.errors import FLConfigError
from edge.fl.partition import Participation, device_speeds, dirichlet_partition
from edge.fl.strategy import FedAU, FedAvgM, FedAvgServerM, FedProx, Scaffold, ScaffoldM, Strategy
from edge.fl.tasks import ClassificationTask, load_task
from edge.fl.validation import UpdateValidator

SYNC_STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": Strategy, "fedprox": FedProx, "fedavgm": FedAvgM, "fedavg_server_m": FedAvgServerM,
    "scaffold": Scaffold, "scaffold_m": ScaffoldM, "fedau": FedAU,
}
ASYNC_STRATEGIES: dict[str, type[AsyncStrategy]] = {
    "fedcompass": FedCompass, "fedasync": FedAsync, "fedbuff": FedBuff, "fedavg_sync": SyncFedAvg,
}
STRATEGIES = (*SYNC_STRATEGIES, *ASYNC_STRATEGIES)


def client_name(i: int) -> str:
    return f"client-{i:04d}"


def make_strategy(name: str, params: np.ndarray, clients: Sequence[str] | None, *, lr: float, local_steps: int = 10,
                  **kw: Any) -> Strategy | AsyncStrategy:
    """Build strategy ``name`` with keyword arguments ``kw`` (FLConfigError for an unknown name or argument)."""
    try:
        if name in SYNC_STRATEGIES:
            return SYNC_STRATEGIES[name](params, clients=None if clients is None else list(clients), lr=lr, **kw)
        if name in ASYNC_STRATEGIES:
            return ASYNC_STRATEGIES[name](params, lr=lr, local_steps=local_steps, **kw)
    except TypeError as exc:
        raise FLConfigError(f"strategy {name}: {exc}") from None
    raise FLConfigError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")


@dataclass
class SimConfig:
    """A simulated federated run (every field can be set from YAML; see ``configs/fl/``).

    Data: ``task`` (digits, blobs), ``hidden`` units of the MLP, ``clients``, Dirichlet ``alpha``.
    Training: ``strategy`` + ``strategy_args``, ``rounds`` (synchronous) or ``time_budget`` /
    ``max_updates`` (event-driven), ``local_steps``, ``batch_size``, local ``lr``.
    Fleet: ``participation`` (see :class:`~edge.fl.partition.Participation`), ``speed_spread``
    (log-normal sigma of seconds per step), ``compression`` (see
    :class:`~edge.fl.compression.CompressionConfig`; empty = float32). ``chunk``: clients per
    batched gradient call. ``target_accuracy``: the time to reach it is reported.
    """

    task: str = "digits"
    hidden: int = 32
    clients: int = 20
    alpha: float = 0.5
    strategy: str = "fedavg"
    strategy_args: dict[str, Any] = field(default_factory=dict)
    rounds: int = 30
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    participation: dict[str, Any] = field(default_factory=dict)
    compression: dict[str, Any] = field(default_factory=dict)
    speed_spread: float = 1.0
    time_budget: float | None = None
    max_updates: int | None = None
    target_accuracy: float | None = None
    eval_every: int = 1
    chunk: int = 64
    seed: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "SimConfig":
        known = set(cls.__dataclass_fields__)
        for key in data:
            if key not in known:
                raise FLConfigError(f"{source}: unknown key {key!r} (expected one of {', '.join(sorted(known))})")
        try:
            cfg = cls(**dict(data))
        except TypeError as exc:
            raise FLConfigError(f"{source}: {exc}") from None
        cfg.check(source)
        return cfg

    def check(self, source: str = "config") -> None:
        for key in ("clients", "rounds", "local_steps", "batch_size", "chunk", "eval_every"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FLConfigError(f"{source}: key {key!r}: expected a positive integer, got {v!r}")
        if not self.lr > 0:
            raise FLConfigError(f"{source}: key 'lr': expected > 0, got {self.lr}")
        if self.strategy not in STRATEGIES:
            raise FLConfigError(f"{source}: key 'strategy': expected one of {', '.join(STRATEGIES)}, "
                                f"got {self.strategy!r}")
        Participation(**self.participation)
        compression_config(self.compression)


@dataclass
class SimResult:
    """What a run produced: per-evaluation history rows, the final model and totals."""

    config: SimConfig
    history: list[dict[str, float]]
    params: np.ndarray
    bytes_up: int
    updates: int
    rejected: dict[str, int]
    wall_time_s: float
    time_to_target: float | None = None

    @property
    def final_accuracy(self) -> float:
        return self.history[-1]["accuracy"] if self.history else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "history": self.history, "bytes_up": self.bytes_up,
                "updates": self.updates, "rejected": self.rejected, "wall_time_s": self.wall_time_s,
                "final_accuracy": self.final_accuracy, "time_to_target": self.time_to_target}


# ----- local training of many clients at once ------------------------------------------------------
def stack_instructions(ins: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge per-client instructions into one dict for :func:`local_sgd` (per-client arrays stacked)."""
    out: dict[str, Any] = {}
    for key in set().union(*ins) if ins else ():
        values = [i.get(key) for i in ins]
        if any(v is None for v in values):
            raise FLConfigError(f"instruction {key!r} given to some clients of a batch but not others")
        if isinstance(values[0], np.ndarray):
            out[key] = values[0] if all(v is values[0] for v in values) else np.stack(values)
        else:
            out[key] = values[0]
    return out


def train_clients(task: ClassificationTask, parts: Sequence[np.ndarray], ids: Sequence[int], x0: np.ndarray,
                  instructions: Sequence[Mapping[str, Any]], steps: np.ndarray | int, round_: int, seed: int,
                  batch_size: int, want_grad_mean: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Local SGD for clients ``ids`` (indices into ``parts``) from ``x0`` ``(P,)`` or ``(C, P)``.

    Minibatches come from a generator seeded by (seed, round, client), so a client's result does
    not depend on which other clients share its batch.
    """
    ids = list(ids)
    c = len(ids)
    steps_arr = np.broadcast_to(np.asarray(steps, np.int64), (c,))
    kmax = int(steps_arr.max(initial=0))
    xb = np.empty((c, kmax, batch_size, task.input_dim), np.float32)
    yb = np.empty((c, kmax, batch_size), np.int64)
    for j, i in enumerate(ids):
        rng = np.random.default_rng([seed, round_, i])
        pick = parts[i][rng.integers(0, len(parts[i]), size=(kmax, batch_size))]
        xb[j] = task.x_train[pick]
        yb[j] = task.y_train[pick]
    x0 = np.broadcast_to(np.asarray(x0, np.float32), (c, task.num_params))
    return local_sgd(lambda y, k: task.grads(y, xb[:, k], yb[:, k]), x0, steps_arr, stack_instructions(instructions),
                     want_grad_mean=want_grad_mean)


Trainer = Callable[[Sequence[int], np.ndarray, Sequence[Mapping[str, Any]], "np.ndarray | int", int],
                   tuple[np.ndarray, "np.ndarray | None"]]


class LocalTrainer:
    """Trains simulated clients in this process, ``chunk`` at a time."""

    def __init__(self, task: ClassificationTask, parts: Sequence[np.ndarray], cfg: SimConfig, want_grad_mean: bool):
        self.task, self.parts, self.cfg, self.want = task, parts, cfg, want_grad_mean

    def __call__(self, ids: Sequence[int], x0: np.ndarray, ins: Sequence[Mapping[str, Any]], steps: Any,
                 round_: int) -> tuple[np.ndarray, np.ndarray | None]:
        deltas, grads = [], []
        steps_arr = np.broadcast_to(np.asarray(steps, np.int64), (len(ids),))
        for a in range(0, len(ids), self.cfg.chunk):
            sl = slice(a, a + self.cfg.chunk)
            x = x0 if x0.ndim == 1 else x0[sl]
            d, g = train_clients(self.task, self.parts, ids[sl], x, ins[sl], steps_arr[sl], round_, self.cfg.seed,
                                 self.cfg.batch_size, self.want)
            deltas.append(d)
            grads.append(g)
        return np.concatenate(deltas), (np.concatenate(grads) if self.want else None)

    def close(self) -> None:
        pass


def build_fleet(cfg: SimConfig) -> tuple[ClassificationTask, list[np.ndarray]]:
    """The task and each client's example indices (Dirichlet label skew)."""
    task = load_task(cfg.task, cfg.seed, cfg.hidden)
    return task, dirichlet_partition(task.y_train, cfg.clients, cfg.alpha, cfg.seed)


# ----- the runs ----------------------------------------------------------------------------------
def simulate(cfg: SimConfig, *, trainer_factory: Callable[..., Any] | None = None,
             progress: Callable[[dict[str, float]], None] | None = None) -> SimResult:
    """Run the simulation ``cfg``; ``progress(row)`` is called after every evaluation.

    ``trainer_factory(task, parts, cfg, want_grad_mean)`` supplies the client trainer
    (default: :class:`LocalTrainer`; the Ray runner passes its own).
    """
    cfg.check()
    task, parts = build_fleet(cfg)
    names = [client_name(i) for i in range(cfg.clients)]
    params = task.init_params(cfg.seed)
    strategy = make_strategy(cfg.strategy, params, names, lr=cfg.lr, local_steps=cfg.local_steps,
                             **cfg.strategy_args)
    comp_cfg = compression_config(cfg.compression)
    compressor = Compressor(comp_cfg) if comp_cfg else None
    factory = trainer_factory or LocalTrainer
    trainer = factory(task, parts, cfg, strategy.wants_grad_mean)
    t0 = time.perf_counter()
    try:
        if isinstance(strategy, AsyncStrategy):
            res = _run_async(cfg, task, parts, names, strategy, compressor, trainer, progress)
        else:
            res = _run_sync(cfg, task, parts, names, strategy, compressor, trainer, progress)
    finally:
        trainer.close()
    res.wall_time_s = time.perf_counter() - t0
    return res


def _receive(compressor: Compressor | None, delta: np.ndarray, cid: str) -> tuple[np.ndarray, int]:
    if compressor is None:
        return delta.astype(np.float32), delta.size * 4
    return compressor.roundtrip(delta, cid)


def _run_sync(cfg: SimConfig, task: ClassificationTask, parts: list[np.ndarray], names: list[str], strategy: Strategy,
              compressor: Compressor | None, trainer: Any, progress: Any) -> SimResult:
    pattern = Participation(**cfg.participation)
    mean_labels = np.array([task.y_train[p].mean() for p in parts])
    validator = UpdateValidator(task.num_params, clients=names)
    history: list[dict[str, float]] = []
    bytes_up = 0
    updates = 0
    for r in range(cfg.rounds):
        ids = [int(i) for i in pattern.sample(r, cfg.clients, cfg.seed, mean_labels)]
        ins = [strategy.instructions(names[i]) for i in ids]
        deltas, grads = trainer(ids, strategy.params, ins, cfg.local_steps, r)
        round_bytes = 0
        for j, i in enumerate(ids):
            delta, nbytes = _receive(compressor, deltas[j], names[i])
            gm = None if grads is None else grads[j]
            if gm is not None:
                nbytes += gm.size * 4
            round_bytes += nbytes
            upd = ClientUpdate(names[i], strategy.round, delta, num_examples=len(parts[i]), steps=cfg.local_steps,
                               lr=float(ins[j].get("lr", cfg.lr)), nonce=f"{names[i]}/{r}", grad_mean=gm, nbytes=nbytes)
            if validator.admit(upd, strategy.round) is None:
                strategy.accept(upd)
                updates += 1
        strategy.aggregate()
        bytes_up += round_bytes
        if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
            row = {"round": r + 1, "accuracy": task.accuracy(strategy.params), "bytes_round": round_bytes,
                   "bytes_up": bytes_up, "participants": len(ids)}
            history.append(row)
            if progress:
                progress(row)
    ttt = None
    if cfg.target_accuracy is not None:
        ttt = next((row["round"] for row in history if row["accuracy"] >= cfg.target_accuracy), None)
    return SimResult(cfg, history, strategy.params.copy(), bytes_up, updates, dict(validator.rejected), 0.0, ttt)


def _run_async(cfg: SimConfig, task: ClassificationTask, parts: list[np.ndarray], names: list[str],
               strategy: AsyncStrategy, compressor: Compressor | None, trainer: Any, progress: Any) -> SimResult:
    """Event loop on a simulated clock: arrivals at ``dispatch + steps * speed * jitter``."""
    speeds = device_speeds(cfg.clients, cfg.seed, cfg.speed_spread)
    index = {n: i for i, n in enumerate(names)}
    jitter_rng = np.random.default_rng([cfg.seed, 99])
    heap: list[tuple[float, int, str, np.ndarray, int, int]] = []
    seq = 0
    dispatches = np.zeros(cfg.clients, np.int64)
    budget = cfg.time_budget if cfg.time_budget is not None else float("inf")
    max_updates = cfg.max_updates if cfg.max_updates is not None else cfg.rounds * cfg.clients

    def dispatch(assignments: list, now: float) -> None:
        nonlocal seq
        if not assignments:
            return
        ids = [index[a.client] for a in assignments]
        steps = np.array([a.steps for a in assignments])
        # Each dispatch of a client gets its own minibatch stream: round = its dispatch count.
        deltas = np.empty((len(ids), task.num_params), np.float32)
        for j, i in enumerate(ids):
            d, _ = trainer([i], strategy.params, [strategy.instructions(names[i])], steps[j:j + 1], int(dispatches[i]))
            deltas[j] = d[0]
            dispatches[i] += 1
        for j, i in enumerate(ids):
            t = now + steps[j] * speeds[i] * jitter_rng.uniform(0.9, 1.1)
            heapq.heappush(heap, (t, seq, names[i], deltas[j], strategy.version, int(steps[j])))
            seq += 1

    history: list[dict[str, float]] = []
    bytes_up, updates = 0, 0
    now = 0.0
    dispatch(strategy.start({n: len(parts[i]) for i, n in enumerate(names)}, now), now)
    last_version = -1
    ttt = None
    while heap and updates < max_updates:
        deadline = strategy.next_deadline()
        if deadline is not None and deadline < heap[0][0]:
            now = deadline
            if now > budget:
                break
            dispatch(strategy.on_deadline(now), now)
        else:
            t, _, cid, delta, version, steps = heapq.heappop(heap)
            now = t
            if now > budget:
                break
            rx, nbytes = _receive(compressor, delta, cid)
            bytes_up += nbytes
            updates += 1
            upd = ClientUpdate(cid, version, rx, num_examples=len(parts[index[cid]]), steps=steps, lr=cfg.lr,
                               nbytes=nbytes)
            dispatch(strategy.on_update(upd, now), now)
        if strategy.version != last_version and strategy.version % cfg.eval_every == 0:
            last_version = strategy.version
            row = {"time": now, "version": strategy.version, "accuracy": task.accuracy(strategy.params),
                   "bytes_up": bytes_up, "updates": updates}
            history.append(row)
            if ttt is None and cfg.target_accuracy is not None and row["accuracy"] >= cfg.target_accuracy:
                ttt = now
            if progress:
                progress(row)
    return SimResult(cfg, history, strategy.params.copy(), bytes_up, updates, {}, 0.0, ttt)
