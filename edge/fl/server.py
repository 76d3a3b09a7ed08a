"""The FL server's logic, independent of transport: hand out tasks, take updates, close rounds, checkpoint.

:class:`FLServer` wraps a synchronous :class:`~edge.fl.strategy.Strategy`. A client asks for
work with :meth:`task_for` and answers with :meth:`submit`; the server decodes (compressed
updates), validates (:class:`~edge.fl.validation.UpdateValidator`), folds the update into the
strategy and **checkpoints before acknowledging**, so an acknowledged update survives a crash.
A round closes when ``clients_per_round`` updates were accepted, or ``round_timeout_s`` after
it opened with at least ``min_updates`` (clients that dropped out are simply not waited for).
Late updates for a closed round are refused as stale; a client that rejoins asks for the
current round. :class:`~edge.fl.nodes.FLServerNode` exposes this over Ark services.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edge.fl.checkpoint import has_state, load_state, save_state
from edge.fl.client import ClientUpdate
from edge.fl.compression import CompressionError, decode
from edge.fl.strategy import Strategy
from edge.fl.validation import UpdateValidator

log = logging.getLogger("edge.fl.server")


class FLServer:
    """Round bookkeeping around a strategy. ``evaluate(params) -> accuracy`` is optional."""

    def __init__(self, strategy: Strategy, *, rounds: int, clients_per_round: int, min_updates: int = 1,
                 round_timeout_s: float = 30.0, local_steps: int = 10, checkpoint: str | os.PathLike[str] | None = None,
                 compression: Mapping[str, Any] | None = None, max_norm: float | None = None,
                 evaluate: Callable[[np.ndarray], float] | None = None, clock: Callable[[], float] = time.monotonic):
        self.strategy = strategy
        self.rounds = int(rounds)
        self.clients_per_round = int(clients_per_round)
        self.min_updates = int(min_updates)
        self.round_timeout_s = float(round_timeout_s)
        self.local_steps = int(local_steps)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.compression = dict(compression or {})
        self.validator = UpdateValidator(strategy.dim, clients=strategy.clients, max_norm=max_norm)
        self.evaluate = evaluate
        self.clock = clock
        self.history: list[dict[str, float]] = []
        self.bytes_up = 0
        self.bytes_down = 0
        self.round_opened = clock()
        self.resumed = False
        if self.checkpoint is not None and has_state(self.checkpoint):
            self._load()

    @property
    def round(self) -> int:
        return self.strategy.round

    @property
    def done(self) -> bool:
        return self.round >= self.rounds

    # -- protocol ---------------------------------------------------------------------------------
    def task_for(self, client_id: str) -> dict[str, Any]:
        """What ``client_id`` should do now: ``{"status": "train" | "wait" | "done" | "refused", ...}``."""
        if self.done:
            return {"status": "done", "round": self.round}
        if self.strategy.clients is not None and client_id not in self.strategy.clients:
            return {"status": "refused", "round": self.round, "reason": f"unknown client {client_id!r}"}
        if self.validator.submitted.get(client_id) == self.round:
            return {"status": "wait", "round": self.round}
        self.bytes_down += self.strategy.params.nbytes
        return {"status": "train", "round": self.round, "params": self.strategy.params,
                "instructions": self.strategy.instructions(client_id), "steps": self.local_steps,
                "want_grad_mean": self.strategy.wants_grad_mean, "compression": self.compression}

    def submit(self, client_id: str, round_: int, *, delta: np.ndarray | None = None, blob: bytes | None = None,
               num_examples: int = 1, steps: int = 1, lr: float = 0.05, nonce: str = "",
               grad_mean: np.ndarray | None = None) -> tuple[bool, str]:
        """Take one update (dense ``delta`` or compressed ``blob``); ``(accepted, reason)``."""
        nbytes = len(blob) if blob is not None else (0 if delta is None else int(np.asarray(delta).nbytes))
        if blob is not None:
            try:
                delta = decode(blob)
            except CompressionError as exc:
                self.validator.rejected["undecodable"] += 1
                log.warning("rejected update from %s: %s", client_id, exc)
                return False, str(exc)
        if delta is None:
            return False, "no update in the submission"
        upd = ClientUpdate(client_id, int(round_), np.asarray(delta), num_examples=int(num_examples), steps=int(steps),
                           lr=float(lr), nonce=nonce, grad_mean=grad_mean, nbytes=nbytes)
        if self.done:
            return False, "training is finished"
        reason = self.validator.admit(upd, self.round)
        if reason is not None:
            return False, reason
        self.strategy.accept(upd)
        self.bytes_up += nbytes
        if len(self.strategy.acc) >= self.clients_per_round:
            self._close_round()
        else:
            self.save()
        return True, "accepted"

    def tick(self) -> bool:
        """Close the round if its time is up (and enough updates arrived); True if a round closed."""
        if self.done or self.clock() - self.round_opened < self.round_timeout_s:
            return False
        if len(self.strategy.acc) >= self.min_updates:
            self._close_round()
            return True
        self.round_opened = self.clock()  # nobody answered: give the fleet another window
        return False

    def _close_round(self) -> None:
        n = len(self.strategy.acc)
        self.strategy.aggregate()
        row: dict[str, float] = {"round": self.round, "updates": n, "bytes_up": self.bytes_up,
                                 "rejected": sum(self.validator.rejected.values())}
        if self.evaluate is not None:
            row["accuracy"] = float(self.evaluate(self.strategy.params))
        self.history.append(row)
        self.round_opened = self.clock()
        self.save()
        log.info("round %d closed with %d updates", self.round, n)

    # -- checkpoint -------------------------------------------------------------------------------
    def save(self) -> None:
        if self.checkpoint is None:
            return
        arrays, meta = self.strategy.state()
        save_state(self.checkpoint, arrays, {"strategy": meta, "validator": self.validator.state(),
                                             "history": self.history, "bytes_up": self.bytes_up,
                                             "bytes_down": self.bytes_down})

    def _load(self) -> None:
        arrays, meta = load_state(self.checkpoint)
        self.strategy.load_state(arrays, meta["strategy"])
        self.validator.load_state(meta["validator"])
        self.history = list(meta["history"])
        self.bytes_up = int(meta["bytes_up"])
        self.bytes_down = int(meta["bytes_down"])
        self.resumed = True
        log.info("resumed from %s at round %d with %d accepted updates pending", self.checkpoint, self.round,
                 len(self.strategy.acc))
