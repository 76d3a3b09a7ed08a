"""Small classification tasks for federated simulation, with a model vectorised over clients.

``load_task("digits")`` is scikit-learn's bundled 8x8 digits (1797 images, no download);
``load_task("blobs")`` is a generated 10-class Gaussian mixture that needs nothing beyond
numpy (tests use it). The model is a one-hidden-layer MLP in plain numpy whose parameters are
one flat float32 vector; :meth:`ClassificationTask.grads` takes a *stack* of parameter
vectors ``(C, P)`` and a batch per client ``(C, B, D)`` and returns every client's gradient
in a few batched matmuls, which is what lets the simulator train many clients at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.fl.errors import FLConfigError

TASKS = ("digits", "blobs")


@dataclass
class ClassificationTask:
    """A train/test split and an MLP ``D -> hidden -> K`` (ReLU, softmax cross-entropy)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    hidden: int = 32

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        d, h, k = self.input_dim, self.hidden, self.num_classes
        return [(d, h), (h,), (h, k), (k,)] if h else [(d, k), (k,)]

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes))

    def init_params(self, seed: int = 0) -> np.ndarray:
        """He-initialised weights, zero biases, flattened (float32)."""
        rng = np.random.default_rng(seed)
        parts = []
        for s in self.shapes:
            parts.append(np.zeros(s, np.float32) if len(s) == 1 else
                         (rng.normal(size=s) * np.sqrt(2.0 / s[0])).astype(np.float32))
        return np.concatenate([p.ravel() for p in parts])

    def _unflatten(self, params: np.ndarray) -> list[np.ndarray]:
        c = params.shape[0]
        out, off = [], 0
        for s in self.shapes:
            n = int(np.prod(s))
            out.append(params[:, off:off + n].reshape(c, *s))
            off += n
        return out

    def _forward(self, params: np.ndarray, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        ws = self._unflatten(params)
        if self.hidden:
            w1, b1, w2, b2 = ws
            pre = np.matmul(x, w1) + b1[:, None, :]
            h = np.maximum(pre, 0)
            logits = np.matmul(h, w2) + b2[:, None, :]
            return [w1, b1, w2, b2, h, pre], logits
        w, b = ws
        return [w, b], np.matmul(x, w) + b[:, None, :]

    def grads(self, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of each client's mean cross-entropy: params ``(C, P)``, x ``(C, B, D)``, y ``(C, B)``."""
        cache, logits = self._forward(params, x)
        logits = logits - logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=-1, keepdims=True)
        c, b = y.shape
        p[np.arange(c)[:, None], np.arange(b)[None, :], y] -= 1.0
        g_logits = p / b
        xt = np.swapaxes(x, 1, 2)
        if self.hidden:
            w1, b1, w2, b2, h, pre = cache
            g_w2 = np.matmul(np.swapaxes(h, 1, 2), g_logits)
            g_b2 = g_logits.sum(axis=1)
            g_h = np.matmul(g_logits, np.swapaxes(w2, 1, 2)) * (pre > 0)
            g_w1 = np.matmul(xt, g_h)
            g_b1 = g_h.sum(axis=1)
            parts = [g_w1, g_b1, g_w2, g_b2]
        else:
            parts = [np.matmul(xt, g_logits), g_logits.sum(axis=1)]
        return np.concatenate([g.reshape(c, -1) for g in parts], axis=1).astype(np.float32)

    def accuracy(self, params: np.ndarray, split: str = "test") -> float:
        """Fraction of ``split`` (``test`` or ``train``) classified correctly by one parameter vector."""
        x, y = (self.x_test, self.y_test) if split == "test" else (self.x_train, self.y_train)
        _, logits = self._forward(np.asarray(params, np.float32)[None], x[None].astype(np.float32))
        return float((logits[0].argmax(-1) == y).mean())


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def load_task(name: str, seed: int = 0, hidden: int = 32) -> ClassificationTask:
    """The task ``name`` (``digits`` or ``blobs``) with a seeded 80/20 train/test split."""
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise FLConfigError("task 'digits' needs scikit-learn (pip install scikit-learn)") from None
        d = load_digits()
        x = (d.data / 16.0).astype(np.float32)
        y = d.target.astype(np.int64)
        return ClassificationTask("digits", *_split(x, y, 0.2, seed), num_classes=10, hidden=hidden)
    if name == "blobs":
        rng = np.random.default_rng(1234)  # the task itself is fixed; ``seed`` only picks the split
        k, dim, per = 10, 16, 120
        centres = rng.normal(scale=1.6, size=(k, dim))
        x = (centres[:, None, :] + rng.normal(size=(k, per, dim))).reshape(-1, dim).astype(np.float32)
        y = np.repeat(np.arange(k), per).astype(np.int64)
        return ClassificationTask("blobs", *_split(x, y, 0.2, seed), num_classes=k, hidden=hidden)
    raise FLConfigError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")
