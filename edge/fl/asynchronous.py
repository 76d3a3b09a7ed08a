"""Semi-asynchronous and asynchronous strategies: FedCompass, FedAsync, FedBuff, and timed synchronous FedAvg.

These strategies decide *when* to aggregate and *how much work* each client gets, so their
interface is event-driven rather than round-based. A runner (the simulator, or a server)
calls::

    assignments = strategy.start(clients, now)        # {client_id: num_examples} -> [Assignment]
    assignments = strategy.on_update(update, now)     # a client's result arrived
    deadline = strategy.next_deadline()               # when to call on_deadline, or None
    assignments = strategy.on_deadline(now)

and dispatches each :class:`Assignment` (client, local steps) with the *current* ``params``;
``update.round`` is the model version the client started from, so ``version - update.round``
is its staleness. Stale updates are damped by ``(1 + staleness) ** -staleness_exp``.

**FedCompass** (Li, Ye, Chaudhuri, Ross, "FedCompass: Efficient Cross-Silo Federated Learning
on Heterogeneous Client Devices using a Computing Power Aware Scheduler", ICLR 2024): the
server keeps a moving average of each client's time per local step, and gives each client a
number of local steps within ``[q_min, q_max]`` chosen so that clients in one *arrival group*
finish together; a group is aggregated when all its members arrived or at its deadline
(``expected + lam * (expected - created)``); a member later than that is aggregated on arrival
with its staleness weight and re-assigned. Fast clients do more steps instead of waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from edge.fl.checkpoint import Checkpointable
from edge.fl.client import ClientUpdate
from edge.fl.errors import FLConfigError


@dataclass
class Assignment:
    """Send the current model to ``client`` with ``steps`` local steps."""

    client: str
    steps: int


class AsyncStrategy(Checkpointable):
    """Base of event-driven strategies: params, version, staleness weighting, bookkeeping of who runs what."""

    name: ClassVar[str] = "async"

    def __init__(self, params: np.ndarray, *, lr: float = 0.05, server_lr: float = 1.0, staleness_exp: float = 0.5,
                 local_steps: int = 20) -> None:
        self.params = np.asarray(params, np.float32).ravel().copy()
        self.dim = self.params.size
        self.lr = float(lr)
        self.server_lr = float(server_lr)
        self.staleness_exp = float(staleness_exp)
        self.local_steps = int(local_steps)
        self.version = 0
        self.examples: dict[str, int] = {}
        self.dispatched: dict[str, tuple[float, int]] = {}  # client -> (time, steps)
        self.updates_applied = 0

    # -- helpers ----------------------------------------------------------------------------------
    def instructions(self, client_id: str) -> dict[str, Any]:
        return {"lr": self.lr}

    @property
    def wants_grad_mean(self) -> bool:
        return False

    @property
    def round(self) -> int:
        return self.version

    def staleness_weight(self, update: ClientUpdate) -> float:
        return float((1 + max(self.version - update.round, 0)) ** -self.staleness_exp)

    def share(self, client: str) -> float:
        """``client``'s share of the fleet's examples."""
        total = sum(self.examples.values())
        return self.examples.get(client, 1) / total if total else 1.0

    def _assign(self, client: str, steps: int, now: float) -> Assignment:
        self.dispatched[client] = (now, int(steps))
        return Assignment(client, int(steps))

    def start(self, clients: Mapping[str, int], now: float = 0.0) -> list[Assignment]:
        self.examples = {c: int(n) for c, n in clients.items()}
        return [self._assign(c, self.local_steps, now) for c in self.examples]

    def on_update(self, update: ClientUpdate, now: float) -> list[Assignment]:  # pragma: no cover - abstract
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        return None

    def on_deadline(self, now: float) -> list[Assignment]:
        return []

    # -- checkpoint -------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = {"strategy": self.name, "version": self.version, "examples": self.examples,
                "dispatched": {k: list(v) for k, v in self.dispatched.items()}, "lr": self.lr,
                "server_lr": self.server_lr, "updates_applied": self.updates_applied, "extra": self._extra_meta()}
        return {"params": self.params, **self._extra_arrays()}, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self._check_strategy(meta)
        self.params = np.array(arrays["params"], np.float32)
        self.version = int(meta["version"])
        self.examples = {k: int(v) for k, v in meta["examples"].items()}
        self.dispatched = {k: (float(v[0]), int(v[1])) for k, v in meta["dispatched"].items()}
        self.updates_applied = int(meta["updates_applied"])
        self._load_extra(arrays, meta["extra"])


class FedAsync(AsyncStrategy):
    """FedAsync (Xie et al. 2019): every arriving update is applied at once, ``x += alpha s(tau) delta``."""

    name = "fedasync"

    def __init__(self, params: np.ndarray, *, alpha: float = 0.3, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.alpha = float(alpha)

    def on_update(self, update: ClientUpdate, now: float) -> list[Assignment]:
        self.params += np.float32(self.alpha * self.staleness_weight(update)) * update.delta
        self.version += 1
        self.updates_applied += 1
        return [self._assign(update.client_id, self.local_steps, now)]

    def _extra_meta(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class FedBuff(AsyncStrategy):
    """FedBuff (Nguyen et al. 2022): buffer ``buffer_size`` staleness-weighted deltas, then apply their mean."""

    name = "fedbuff"

    def __init__(self, params: np.ndarray, *, buffer_size: int = 5, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.buffer_size = int(buffer_size)
        self.sum = np.zeros(self.dim, np.float32)
        self.count = 0

    def on_update(self, update: ClientUpdate, now: float) -> list[Assignment]:
        self.sum += np.float32(self.staleness_weight(update)) * update.delta
        self.count += 1
        if self.count >= self.buffer_size:
            self.params += np.float32(self.server_lr / self.count) * self.sum
            self.sum[:] = 0
            self.count = 0
            self.version += 1
        self.updates_applied += 1
        return [self._assign(update.client_id, self.local_steps, now)]

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"buffer_sum": self.sum}

    def _extra_meta(self) -> dict[str, Any]:
        return {"count": self.count}

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.sum = np.array(arrays["buffer_sum"])
        self.count = int(meta["count"])


class SyncFedAvg(AsyncStrategy):
    """Synchronous FedAvg on the event clock: everyone gets ``local_steps``; the round ends when the last arrives."""

    name = "fedavg_sync"

    def __init__(self, params: np.ndarray, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.sum = np.zeros(self.dim, np.float64)
        self.arrived: list[str] = []

    def on_update(self, update: ClientUpdate, now: float) -> list[Assignment]:
        self.sum += self.share(update.client_id) * update.delta
        self.arrived.append(update.client_id)
        self.dispatched.pop(update.client_id, None)
        if self.dispatched:
            return []
        self.params += np.float32(self.server_lr) * self.sum.astype(np.float32)
        self.sum[:] = 0
        self.version += 1
        self.updates_applied += len(self.arrived)
        done, self.arrived = self.arrived, []
        return [self._assign(c, self.local_steps, now) for c in done]

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"round_sum": self.sum}

    def _extra_meta(self) -> dict[str, Any]:
        return {"arrived": self.arrived}

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.sum = np.array(arrays["round_sum"])
        self.arrived = list(meta["arrived"])


class FedCompass(AsyncStrategy):
    """FedCompass: computing-power-aware local steps and arrival groups (see the module docstring).

    ``q_min``/``q_max``: bounds of a client's local steps. ``lam``: a group's deadline is
    ``lam`` times its planned duration after its expected arrival. ``speed_momentum``: weight of
    the old estimate in the moving average of seconds per step.
    """

    name = "fedcompass"

    def __init__(self, params: np.ndarray, *, q_min: int = 5, q_max: int = 40, lam: float = 0.5,
                 speed_momentum: float = 0.5, **kw: Any) -> None:
        super().__init__(params, **kw)
        if not 1 <= q_min <= q_max:
            raise FLConfigError(f"fedcompass: expected 1 <= q_min <= q_max, got q_min={q_min}, q_max={q_max}")
        self.q_min, self.q_max, self.lam = int(q_min), int(q_max), float(lam)
        self.speed_momentum = float(speed_momentum)
        self.speed: dict[str, float] = {}          # seconds per local step (moving average)
        self.groups: dict[int, dict[str, Any]] = {}  # id -> created, expected, deadline, members, arrived
        self.member_of: dict[str, int] = {}
        self.group_sum: dict[int, np.ndarray] = {}
        self._next_group = 0

    def start(self, clients: Mapping[str, int], now: float = 0.0) -> list[Assignment]:
        # No speeds are known yet: everyone runs q_min steps in one probe group whose deadline
        # is fixed when its first member arrives.
        self.examples = {c: int(n) for c, n in clients.items()}
        gid = self._new_group(now, None)
        out = []
        for c in self.examples:
            self._join(c, gid)
            out.append(self._assign(c, self.q_min, now))
        return out

    def _new_group(self, now: float, expected: float | None) -> int:
        gid = self._next_group
        self._next_group += 1
        deadline = None if expected is None else expected + self.lam * (expected - now)
        self.groups[gid] = {"created": now, "expected": expected, "deadline": deadline, "members": [], "arrived": []}
        self.group_sum[gid] = np.zeros(self.dim, np.float64)
        return gid

    def _join(self, client: str, gid: int) -> None:
        self.groups[gid]["members"].append(client)
        self.member_of[client] = gid

    def _observe_speed(self, update: ClientUpdate, now: float) -> None:
        sent = self.dispatched.pop(update.client_id, None)
        if sent is None or sent[1] <= 0:
            return
        per_step = max(now - sent[0], 1e-9) / sent[1]
        old = self.speed.get(update.client_id)
        self.speed[update.client_id] = per_step if old is None else (
            self.speed_momentum * old + (1 - self.speed_momentum) * per_step)

    def _apply(self, delta_sum: np.ndarray) -> None:
        self.params += (np.float32(self.server_lr) * delta_sum).astype(np.float32)
        self.version += 1

    def on_update(self, update: ClientUpdate, now: float) -> list[Assignment]:
        cid = update.client_id
        self._observe_speed(update, now)
        weighted = self.share(cid) * self.staleness_weight(update) * update.delta
        gid = self.member_of.pop(cid, None)
        self.updates_applied += 1
        if gid is None or gid not in self.groups:
            # Late: its group was aggregated at the deadline; apply it alone, then re-assign.
            self._apply(weighted)
            return self._schedule([cid], now)
        g = self.groups[gid]
        self.group_sum[gid] += weighted
        g["arrived"].append(cid)
        if g["expected"] is None and g["deadline"] is None:
            g["deadline"] = now + self.lam * max(now - g["created"], 1e-9)
        if len(g["arrived"]) == len(g["members"]):
            return self._close(gid, now)
        return []

    def _close(self, gid: int, now: float) -> list[Assignment]:
        g = self.groups.pop(gid)
        total = self.group_sum.pop(gid)
        if g["arrived"]:
            self._apply(total)
        for c in g["members"]:
            if c not in g["arrived"]:
                self.member_of.pop(c, None)  # still running: it arrives late
        return self._schedule(list(g["arrived"]), now)

    def _schedule(self, clients: list[str], now: float) -> list[Assignment]:
        """Give each client local steps so that it arrives with an existing group, or start a new group."""
        out = []
        for c in sorted(clients, key=lambda c: self.speed.get(c, math.inf)):
            t = self.speed.get(c)
            if t is None:  # never measured (a rejoining client): probe it alone with q_min steps
                gid = self._new_group(now, None)
                self._join(c, gid)
                out.append(self._assign(c, self.q_min, now))
                continue
            best, best_q = None, -1
            for gid, g in self.groups.items():
                if g["expected"] is None or g["expected"] <= now:
                    continue
                q = int((g["expected"] - now) / t)
                if self.q_min <= q <= self.q_max and q > best_q:
                    best, best_q = gid, q
            if best is None:
                best_q = self.q_max
                best = self._new_group(now, now + self.q_max * t)
            self._join(c, best)
            out.append(self._assign(c, best_q, now))
        return out

    def next_deadline(self) -> float | None:
        ds = [g["deadline"] for g in self.groups.values() if g["deadline"] is not None]
        return min(ds) if ds else None

    def on_deadline(self, now: float) -> list[Assignment]:
        out = []
        for gid in [gid for gid, g in self.groups.items() if g["deadline"] is not None and g["deadline"] <= now]:
            out += self._close(gid, now)
        return out

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {f"group_sum.{k}": v for k, v in self.group_sum.items()}

    def _extra_meta(self) -> dict[str, Any]:
        return {"speed": self.speed, "groups": {str(k): v for k, v in self.groups.items()},
                "member_of": self.member_of, "next_group": self._next_group}

    def _load_extra(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.speed = {k: float(v) for k, v in meta["speed"].items()}
        self.groups = {int(k): dict(v) for k, v in meta["groups"].items()}
        self.member_of = {k: int(v) for k, v in meta["member_of"].items()}
        self._next_group = int(meta["next_group"])
        self.group_sum = {int(k[len("group_sum."):]): np.array(v) for k, v in arrays.items()
                          if k.startswith("group_sum.")}
