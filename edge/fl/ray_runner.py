"""Run the fleet simulation on Ray: the same clients, rounds and results, trained by Ray workers.

    from edge.fl.ray_runner import simulate_on_ray
    result = simulate_on_ray(SimConfig(clients=2000, ...), workers=8)              # local Ray
    result = simulate_on_ray(cfg, workers=64, address="ray://head:10001")         # a cluster

Each worker is a Ray actor that builds the task and the partitions itself from the config
(deterministic, so no dataset is shipped), and trains the clients it is handed with the same
:func:`~edge.fl.simulation.train_clients` as the in-process simulator. The strategy, the
compression and the validation stay in the driver. Because a client's update depends only on
(seed, round, client), the result equals :func:`edge.fl.simulation.simulate`'s.

Ray is an optional extra (``pip install ark-robotics[fl-ray]``). Note: Ray serialises task
arguments and results with pickle internally. That is acceptable here only because every
process involved is one of the user's own Ray workers, started by this code; nothing from
the network or from another party is unpickled. The networked runner (``edge.fl.nodes``)
never pickles.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge.fl.errors import FLError
from edge.fl.simulation import SimConfig, SimResult, simulate


def _ray():
    try:
        import ray
    except ImportError:
        raise FLError("the Ray runner needs Ray: pip install 'ray>=2.9' (the fl-ray extra)") from None
    return ray


class _Worker:
    """A Ray actor body: holds the fleet's data and trains the clients it is handed."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from edge.fl.simulation import build_fleet

        self.cfg = SimConfig(**cfg)
        self.task, self.parts = build_fleet(self.cfg)

    def train(self, ids: list[int], x0: np.ndarray, ins: list[dict[str, Any]], steps: np.ndarray, round_: int,
              want: bool) -> tuple[np.ndarray, np.ndarray | None]:
        from edge.fl.simulation import LocalTrainer

        return LocalTrainer(self.task, self.parts, self.cfg, want)(ids, x0, ins, steps, round_)


class RayTrainer:
    """A trainer for :func:`~edge.fl.simulation.simulate` that spreads each call's clients over Ray actors."""

    def __init__(self, cfg: SimConfig, want_grad_mean: bool, *, workers: int = 2, address: str | None = None,
                 init_kwargs: Mapping[str, Any] | None = None) -> None:
        ray = _ray()
        self.ray = ray
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address is None:
                kw["num_cpus"] = workers
            kw.update(init_kwargs or {})
            ray.init(address=address, **kw)
        actor = ray.remote(num_cpus=1)(_Worker)
        plain = {k: v for k, v in asdict(cfg).items()}
        self.actors = [actor.remote(plain) for _ in range(workers)]
        self.want = want_grad_mean

    def __call__(self, ids: Sequence[int], x0: np.ndarray, ins: Sequence[Mapping[str, Any]], steps: Any,
                 round_: int) -> tuple[np.ndarray, np.ndarray | None]:
        ids = list(ids)
        steps_arr = np.broadcast_to(np.asarray(steps, np.int64), (len(ids),))
        x_ref = self.ray.put(np.asarray(x0, np.float32))
        bounds = np.linspace(0, len(ids), len(self.actors) + 1).astype(int)
        futures = []
        for a, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if hi > lo:
                x = x_ref if np.ndim(x0) == 1 else np.asarray(x0)[lo:hi]
                futures.append(self.actors[a].train.remote(ids[lo:hi], x, [dict(i) for i in ins[lo:hi]],
                                                           np.array(steps_arr[lo:hi]), round_, self.want))
        results = self.ray.get(futures)
        deltas = np.concatenate([r[0] for r in results])
        grads = np.concatenate([r[1] for r in results]) if self.want else None
        return deltas, grads

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.owns_ray:
            self.ray.shutdown()


def simulate_on_ray(cfg: SimConfig, *, workers: int = 2, address: str | None = None,
                    progress: Callable[[dict[str, float]], None] | None = None,
                    init_kwargs: Mapping[str, Any] | None = None) -> SimResult:
    """:func:`edge.fl.simulation.simulate` with clients trained by ``workers`` Ray actors (local Ray by default)."""

    def factory(task: Any, parts: Any, cfg_: SimConfig, want: bool) -> RayTrainer:
        return RayTrainer(cfg_, want, workers=workers, address=address, init_kwargs=init_kwargs)

    return simulate(cfg, trainer_factory=factory, progress=progress)
