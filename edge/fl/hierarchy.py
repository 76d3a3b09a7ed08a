"""Hierarchical aggregation in the style of LIFL: edge aggregators fold updates as they arrive.

An :class:`EdgeAggregator` keeps a running weighted sum of the updates of its clients (O(P)
memory, no buffering) and forwards one :class:`Partial` to the root, which combines partials
into the weighted mean. :class:`SharedMemoryAggregators` runs several aggregators as separate
processes on one host: client updates land in a shared-memory pool, each aggregator folds its
share of the pool into its own shared-memory slot, and the root adds the slots. Arrays never
travel through sockets or pickle; the only messages are one-line text commands on the
workers' stdin/stdout.

    python -m edge.fl.hierarchy --worker ...   (started by SharedMemoryAggregators; not by hand)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Sequence

import numpy as np


@dataclass
class Partial:
    """A partial aggregate: ``sum`` of ``weight_i * delta_i``, the total ``weight`` and ``count`` of updates."""

    sum: np.ndarray
    weight: float
    count: int
    clients: list[str] = field(default_factory=list)


class EdgeAggregator:
    """Folds updates into a running sum as they arrive; ``partial()`` is what it forwards to the root."""

    def __init__(self, dim: int, name: str = "edge") -> None:
        self.name = name
        self.sum = np.zeros(dim, np.float32)
        self.weight = 0.0
        self.count = 0
        self.clients: list[str] = []
        self._tmp = np.empty(dim, np.float32)

    def fold(self, delta: np.ndarray, weight: float = 1.0, client_id: str | None = None) -> None:
        if weight == 1.0:
            self.sum += delta
        else:
            np.multiply(delta, np.float32(weight), out=self._tmp)
            self.sum += self._tmp
        self.weight += float(weight)
        self.count += 1
        if client_id is not None:
            self.clients.append(client_id)

    def partial(self) -> Partial:
        return Partial(self.sum, self.weight, self.count, list(self.clients))

    def reset(self) -> None:
        self.sum[:] = 0
        self.weight = 0.0
        self.count = 0
        self.clients = []


def combine(partials: Sequence[Partial]) -> np.ndarray | None:
    """The root's step: the weighted mean of all updates behind ``partials`` (None if there were none)."""
    weight = sum(p.weight for p in partials)
    if weight <= 0:
        return None
    total = np.zeros_like(partials[0].sum)
    for p in partials:
        total += p.sum
    return total / np.float32(weight)


def hierarchical_mean(deltas: np.ndarray, weights: np.ndarray, fanout: int) -> np.ndarray | None:
    """In one process: ``fanout`` edge aggregators each fold a contiguous share, the root combines."""
    dim = deltas.shape[1]
    edges = [EdgeAggregator(dim, f"edge-{i}") for i in range(fanout)]
    for k in range(deltas.shape[0]):
        edges[k * fanout // deltas.shape[0]].fold(deltas[k], float(weights[k]))
    return combine([e.partial() for e in edges])


class SharedMemoryAggregators:
    """``n`` co-located aggregator processes sharing an update pool and their result slots through shared memory.

    ``pool`` (``capacity x dim`` float32) is where arriving updates are written (``put``);
    ``aggregate(count)`` has every worker fold its share of the first ``count`` updates into its
    slot and returns the weighted mean combined from the slots. Use as a context manager.
    """

    def __init__(self, n: int, dim: int, capacity: int) -> None:
        self.n, self.dim, self.capacity = n, dim, capacity
        self._shm_pool = shared_memory.SharedMemory(create=True, size=capacity * dim * 4)
        self._shm_weights = shared_memory.SharedMemory(create=True, size=capacity * 8)
        self._shm_slots = shared_memory.SharedMemory(create=True, size=n * dim * 4)
        self.pool = np.ndarray((capacity, dim), np.float32, self._shm_pool.buf)
        self.weights = np.ndarray((capacity,), np.float64, self._shm_weights.buf)
        self.slots = np.ndarray((n, dim), np.float32, self._shm_slots.buf)
        self.workers = []
        self.last_root_s = 0.0
        for i in range(n):
            cmd = [sys.executable, "-m", "edge.fl.hierarchy", "--worker", "--pool", self._shm_pool.name,
                   "--weights", self._shm_weights.name, "--slots", self._shm_slots.name, "--slot", str(i),
                   "--n", str(n), "--dim", str(dim), "--capacity", str(capacity)]
            self.workers.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                                 bufsize=1))
        for w in self.workers:
            if w.stdout.readline().strip() != "ready":
                self.close()
                raise RuntimeError("a shared-memory aggregator failed to start")

    def put(self, index: int, delta: np.ndarray, weight: float = 1.0) -> None:
        """An update arrives: write it into the pool (where a network receiver would place it)."""
        self.pool[index] = delta
        self.weights[index] = weight

    def aggregate(self, count: int) -> np.ndarray | None:
        """Fold updates ``0..count`` (split evenly over the workers) and return their weighted mean."""
        bounds = np.linspace(0, count, self.n + 1).astype(int)
        for i, w in enumerate(self.workers):
            w.stdin.write(f"fold {bounds[i]} {bounds[i + 1]}\n")
            w.stdin.flush()
        weight = 0.0
        for w in self.workers:
            reply = w.stdout.readline().split()
            if not reply or reply[0] != "ok":
                raise RuntimeError(f"a shared-memory aggregator failed: {' '.join(reply) or 'it exited'}")
            weight += float(reply[1])
        if weight <= 0:
            return None
        t = time.perf_counter()
        out = self.slots.sum(axis=0) / np.float32(weight)
        self.last_root_s = time.perf_counter() - t  # the root's own work: adding n partials, not every update
        return out

    def close(self) -> None:
        for w in self.workers:
            try:
                w.stdin.write("quit\n")
                w.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
        for w in self.workers:
            try:
                w.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.kill()
        self.workers = []
        del self.pool, self.weights, self.slots
        for shm in (self._shm_pool, self._shm_weights, self._shm_slots):
            shm.close()
            shm.unlink()

    def __enter__(self) -> "SharedMemoryAggregators":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open an existing block without letting this process's resource tracker unlink it at exit
    (the parent owns the blocks; Python < 3.13 has no ``track=False``)."""
    shm = shared_memory.SharedMemory(name=name)
    try:
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except Exception:
        pass
    return shm


def _worker(args: argparse.Namespace) -> int:
    pool_shm, w_shm, slot_shm = (_attach(args.pool), _attach(args.weights), _attach(args.slots))
    pool = np.ndarray((args.capacity, args.dim), np.float32, pool_shm.buf)
    weights = np.ndarray((args.capacity,), np.float64, w_shm.buf)
    slot = np.ndarray((args.n, args.dim), np.float32, slot_shm.buf)[args.slot]
    agg = EdgeAggregator(args.dim)
    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        if parts[0] == "fold":
            a, b = int(parts[1]), int(parts[2])
            agg.reset()
            for k in range(a, b):
                agg.fold(pool[k], float(weights[k]))
            slot[:] = agg.sum
            print(f"ok {agg.weight!r} {agg.count}", flush=True)
    del pool, weights, slot
    for shm in (pool_shm, w_shm, slot_shm):
        shm.close()
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m edge.fl.hierarchy")
    p.add_argument("--worker", action="store_true", required=True)
    for name in ("pool", "weights", "slots"):
        p.add_argument(f"--{name}", required=True)
    for name in ("slot", "n", "dim", "capacity"):
        p.add_argument(f"--{name}", type=int, required=True)
    sys.exit(_worker(p.parse_args()))
