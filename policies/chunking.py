"""Turning predicted action chunks into one action per control step (numpy only, no torch).

Shared by the PyTorch policies and the ONNX Runtime runner, so both step identically:

- an observation history of the last ``n_obs_steps`` observations (right after ``reset`` the
  first observation fills it, as Diffusion Policy and LeRobot do);
- either an action queue — predict a chunk, execute its first ``n_action_steps`` actions,
  predict again — or ACT's temporal ensembling: predict every step and average, for the
  current step, every earlier chunk that covers it with weights w_i = exp(-m·i), where
  i = 0 is the oldest prediction (Zhao et al. 2023, §3.3).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

import numpy as np


def temporal_ensemble_weights(n: int, m: float) -> np.ndarray:
    """Normalised weights exp(-m·i), i = 0 … n-1, index 0 = the oldest prediction."""
    w = np.exp(-m * np.arange(n, dtype=np.float64))
    return w / w.sum()


class TemporalEnsembler:
    """Weighted average, per step, of all chunks predicted so far that cover that step."""

    def __init__(self, m: float):
        self.m = float(m)
        self.reset()

    def reset(self) -> None:
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (step it was predicted at, chunk), oldest first
        self._step = 0

    def update(self, chunk: np.ndarray) -> np.ndarray:
        """Add the chunk predicted at the current step; return the ensembled action for it and advance."""
        self._chunks.append((self._step, np.asarray(chunk, dtype=np.float64)))
        while self._chunks and self._step - self._chunks[0][0] >= len(self._chunks[0][1]):
            self._chunks.popleft()  # chunks that no longer reach the current step
        candidates = np.stack([c[self._step - start] for start, c in self._chunks])
        weights = temporal_ensemble_weights(len(candidates), self.m)
        self._step += 1
        return (weights[:, None] * candidates).sum(0).astype(np.float32)


class ActionChunker:
    """Observation history plus action queue (or temporal ensembler) for one episode.

    ``step(obs, predict)`` appends the observation, calls ``predict(history)`` when a new
    chunk is needed — ``history`` maps each key to an array ``(n_obs_steps, ...)``, oldest
    first, and ``predict`` returns ``(T, A)`` actions starting at the current step — and
    returns the action to execute now.
    """

    def __init__(self, n_obs_steps: int, n_action_steps: int, ensemble_coeff: float | None = None):
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.ensembler = TemporalEnsembler(ensemble_coeff) if ensemble_coeff is not None else None
        self.reset()

    def reset(self) -> None:
        self._history: dict[str, deque[np.ndarray]] = {}
        self._queue: deque[np.ndarray] = deque()
        if self.ensembler is not None:
            self.ensembler.reset()

    def push(self, obs: Mapping[str, np.ndarray]) -> None:
        for key, value in obs.items():
            if key not in self._history:
                self._history[key] = deque([value] * self.n_obs_steps, maxlen=self.n_obs_steps)
            else:
                self._history[key].append(value)

    def history(self) -> dict[str, np.ndarray]:
        return {key: np.stack(list(values)) for key, values in self._history.items()}

    def step(self, obs: Mapping[str, np.ndarray], predict: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
        self.push(obs)
        if self.ensembler is not None:
            return self.ensembler.update(predict(self.history()))
        if not self._queue:
            chunk = np.asarray(predict(self.history()), dtype=np.float32)
            self._queue.extend(chunk[: self.n_action_steps])
        return self._queue.popleft()
