"""Checks a server runs on every client update before folding it in.

:class:`UpdateValidator` refuses, with a one-line reason, updates that have the wrong shape,
NaN/Inf values, an enormous norm, come from an unknown client, repeat a client's submission
for the round (duplicate), reuse a nonce seen before (replay), or start from a model version
older than the staleness the strategy accepts. Refusals are logged and counted; the round
goes on with the other clients. Its memory (nonces, who submitted in the open round, recent
norms) is checkpointed with the server.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from typing import Any, Iterable, Mapping

import numpy as np

from edge.fl.client import ClientUpdate

log = logging.getLogger("edge.fl.validation")


class UpdateValidator:
    """Validates :class:`~edge.fl.client.ClientUpdate` objects against the model and the round.

    ``dim``: the model's parameter count. ``clients``: known client ids (None accepts any id).
    ``max_norm``: an absolute bound on ``|delta|``. ``norm_factor``: also refuse norms above
    this multiple of the median of the last accepted norms (once ``min_history`` are known).
    ``max_staleness``: how many model versions behind an update may start (0 for synchronous
    rounds). ``remember``: how many nonces are kept for replay detection.
    """

    def __init__(self, dim: int, *, clients: Iterable[str] | None = None, max_norm: float | None = None,
                 norm_factor: float | None = 10.0, min_history: int = 3, max_staleness: int = 0,
                 remember: int = 100_000) -> None:
        self.dim = int(dim)
        self.clients = set(clients) if clients is not None else None
        self.max_norm = max_norm
        self.norm_factor = norm_factor
        self.min_history = min_history
        self.max_staleness = int(max_staleness)
        self.nonces: deque[str] = deque(maxlen=remember)
        self._nonce_set: set[str] = set()
        self.submitted: dict[str, int] = {}   # client -> round of its accepted submission in the open window
        self.norms: deque[float] = deque(maxlen=50)
        self.rejected: Counter[str] = Counter()
        self.accepted = 0

    def check(self, update: ClientUpdate, current_round: int) -> str | None:
        """The reason to refuse ``update`` at ``current_round``, or None if it is acceptable."""
        cid = update.client_id
        if self.clients is not None and cid not in self.clients:
            return f"unknown client {cid!r}"
        if update.nonce and update.nonce in self._nonce_set:
            return f"replayed submission (nonce {update.nonce} already seen)"
        if update.round > current_round:
            return f"round {update.round} is in the future (current round {current_round})"
        if current_round - update.round > self.max_staleness:
            return f"stale round {update.round} (current round {current_round}, max staleness {self.max_staleness})"
        if self.max_staleness == 0 and self.submitted.get(cid) == current_round:
            return f"duplicate submission from {cid} for round {current_round}"
        delta = update.delta
        if not isinstance(delta, np.ndarray) or delta.ndim != 1 or delta.size != self.dim:
            shape = getattr(delta, "shape", type(delta).__name__)
            return f"wrong shape {shape} (expected ({self.dim},))"
        if not np.issubdtype(delta.dtype, np.floating):
            return f"wrong dtype {delta.dtype} (expected floats)"
        norm = float(np.linalg.norm(delta.astype(np.float64)))
        if not np.isfinite(norm):
            return "non-finite values (NaN or Inf)"
        if update.grad_mean is not None and (update.grad_mean.shape != delta.shape
                                             or not np.isfinite(update.grad_mean).all()):
            return "bad grad_mean (wrong shape or non-finite)"
        if self.max_norm is not None and norm > self.max_norm:
            return f"norm {norm:.3g} exceeds the bound {self.max_norm:.3g}"
        if self.norm_factor is not None and len(self.norms) >= self.min_history:
            bound = self.norm_factor * float(np.median(self.norms))
            if norm > bound:
                return f"norm {norm:.3g} exceeds {self.norm_factor:g}x the median of recent updates ({bound:.3g})"
        if update.num_examples < 0 or update.steps < 0:
            return "negative example or step count"
        return None

    def admit(self, update: ClientUpdate, current_round: int) -> str | None:
        """``check`` and, if it passes, remember the update (nonce, submitter, norm); log refusals."""
        reason = self.check(update, current_round)
        if reason is not None:
            self.rejected[reason.split(" (")[0].split(" from ")[0]] += 1
            log.warning("rejected update from %s (round %d): %s", update.client_id, update.round, reason)
            return reason
        if update.nonce:
            if len(self.nonces) == self.nonces.maxlen:
                self._nonce_set.discard(self.nonces[0])
            self.nonces.append(update.nonce)
            self._nonce_set.add(update.nonce)
        self.submitted[update.client_id] = current_round
        self.norms.append(float(np.linalg.norm(update.delta.astype(np.float64))))
        self.accepted += 1
        return None

    def state(self) -> dict[str, Any]:
        return {"nonces": list(self.nonces), "submitted": self.submitted, "norms": list(self.norms),
                "rejected": dict(self.rejected), "accepted": self.accepted}

    def load_state(self, meta: Mapping[str, Any]) -> None:
        self.nonces.clear()
        self.nonces.extend(meta["nonces"])
        self._nonce_set = set(self.nonces)
        self.submitted = {k: int(v) for k, v in meta["submitted"].items()}
        self.norms.clear()
        self.norms.extend(meta["norms"])
        self.rejected = Counter(meta["rejected"])
        self.accepted = int(meta["accepted"])
