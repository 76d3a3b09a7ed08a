"""What a client does in a round: local SGD from the global model, corrected as its strategy asks.

A strategy tells each client *how* to train through an instructions dict (see
:meth:`edge.fl.strategy.Strategy.instructions`); :func:`local_sgd` applies them. It runs on a
stack of clients at once — parameters ``(C, P)``, one row per client — so the simulator can
train hundreds of clients with one batched gradient call per step; a robot passes ``C = 1``.

Instruction keys (all optional):

- ``lr`` (float): local step size (default 0.05).
- ``prox_mu`` (float): FedProx, adds ``mu (y - x)`` to every gradient.
- ``correction`` (``(P,)`` or ``(C, P)``): SCAFFOLD's ``c - c_i``, added to every gradient.
- ``momentum`` (``(P,)``) and ``beta`` (float): FedAvg-M / SCAFFOLD-M (Cheng et al. 2024); the
  step direction is ``beta * g + (1 - beta) * momentum`` where ``g`` is the (corrected) gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

GradFn = Callable[[np.ndarray, int], np.ndarray]
"""``grad_fn(params (C, P), step) -> gradients (C, P)``: each row the gradient of that client's loss."""


@dataclass
class ClientUpdate:
    """One client's result for one round: ``delta = y_K - x`` and what the server needs to weigh it.

    ``round`` is the model version the client started from; ``nonce`` makes each submission
    unique, so the server can refuse a replay; ``grad_mean`` (SCAFFOLD) is the mean raw
    gradient over the local steps; ``nbytes`` is what the update cost on the wire.
    """

    client_id: str
    round: int
    delta: np.ndarray
    num_examples: int = 1
    steps: int = 1
    lr: float = 0.05
    nonce: str = ""
    grad_mean: np.ndarray | None = None
    nbytes: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


def local_sgd(grad_fn: GradFn, x0: np.ndarray, steps: np.ndarray | int, instructions: Mapping[str, Any] | None = None,
              *, want_grad_mean: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Run local steps on every row of ``x0`` ``(C, P)``; return ``(delta (C, P), grad_mean or None)``.

    ``steps`` is one count or one per client (clients with fewer steps stop early; FedCompass
    gives each client its own). The rows never interact: row ``c`` of the result depends
    only on row ``c`` of ``x0`` and of the gradients.
    """
    ins = dict(instructions or {})
    x0 = np.asarray(x0, dtype=np.float32)
    if x0.ndim == 1:
        x0 = x0[None]
    C = x0.shape[0]
    steps_arr = np.broadcast_to(np.asarray(steps, dtype=np.int64), (C,))
    lr = np.float32(ins.get("lr", 0.05))
    mu = float(ins.get("prox_mu", 0.0))
    corr = ins.get("correction")
    mom = ins.get("momentum")
    beta = np.float32(ins.get("beta", 1.0))
    y = x0.copy()
    gsum = np.zeros_like(y) if want_grad_mean else None
    for k in range(int(steps_arr.max(initial=0))):
        active = (k < steps_arr)
        g = np.asarray(grad_fn(y, k), dtype=np.float32)
        if gsum is not None:
            gsum += g * active[:, None]
        d = g
        if mu:
            d = d + np.float32(mu) * (y - x0)
        if corr is not None:
            d = d + corr
        if mom is not None:
            d = beta * d + (1 - beta) * mom
        if active.all():
            y -= lr * d
        else:
            y -= (lr * active[:, None]) * d
    grad_mean = None if gsum is None else gsum / np.maximum(steps_arr, 1)[:, None]
    return y - x0, grad_mean
