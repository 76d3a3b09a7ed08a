"""Width control: the widest latent whose predicted capture-to-output delay fits a budget.

Predicted delay of width k = head_ms[k] + latency + 8 * bytes[k] / bandwidth + tail_ms[k].
Link latency and bandwidth are estimated from what the tail reports back per packet
(wire bytes and one-way link delay): with packets of several sizes in the recent window, a
least-squares line through each size's fastest delay (queueing and scheduling only add delay)
gives both, unless the sizes' transmission times differ by less than the delay jitter (then
the link counts as fast and the latency is the fastest delay); with sizes too alike to
separate them, the latency estimate is kept and the fastest packet's delay beyond it is
charged to bandwidth. The estimate is the median of the recent fits.
The head node sends every ``probe_every``-th frame at the widest width so sizes vary.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np


@dataclass
class LinkEstimate:
    """Current estimate of the link: bandwidth (bit/s) and one-way latency (s)."""

    bandwidth_bps: float
    latency_s: float


class WidthController:
    """Chooses a width index from measured link conditions and a latency budget.

    ``packet_bytes[k]``: expected wire bytes of width k; ``compute_ms[k]``: head plus tail time
    of width k; ``budget_ms``: the capture-to-output budget. Until a measurement arrives it
    assumes ``bandwidth_bps`` and ``latency_s``.
    """

    def __init__(self, packet_bytes: list[float], compute_ms: list[float], budget_ms: float, *,
                 bandwidth_bps: float = 1e6, latency_s: float = 0.0, window: int = 32, probe_every: int = 16) -> None:
        if len(packet_bytes) != len(compute_ms) or not packet_bytes:
            raise ValueError("packet_bytes and compute_ms need one entry per width")
        self.packet_bytes = [float(b) for b in packet_bytes]
        self.compute_ms = [float(c) for c in compute_ms]
        self.budget_ms = float(budget_ms)
        self.estimate = LinkEstimate(float(bandwidth_bps), float(latency_s))
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self._fits: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self.probe_every = probe_every
        self.frames = 0
        self.width = len(packet_bytes) - 1

    def predicted_ms(self, k: int) -> float:
        e = self.estimate
        return self.compute_ms[k] + 1000.0 * (e.latency_s + 8.0 * self.packet_bytes[k] / e.bandwidth_bps)

    def choose(self) -> int:
        """The widest width predicted to fit the budget (the narrowest when none does)."""
        fits = [k for k in range(len(self.packet_bytes)) if self.predicted_ms(k) <= self.budget_ms]
        self.width = max(fits) if fits else 0
        return self.width

    def next_width(self) -> int:
        """Width of the next frame: the chosen one, or the widest on a probe frame."""
        self.frames += 1
        if self.probe_every and self.frames % self.probe_every == 0:
            return len(self.packet_bytes) - 1
        return self.choose()

    def observe(self, nbytes: int, delay_s: float) -> LinkEstimate:
        """Take one packet's wire size and one-way link delay; update and return the estimate."""
        if delay_s <= 0 or nbytes <= 0:
            return self.estimate
        self.samples.append((float(nbytes), float(delay_s)))
        raw = self._fit(LinkEstimate(self.estimate.bandwidth_bps, self.estimate.latency_s))
        # The median of the recent fits: one noisy window must not flip the width back and forth.
        self._fits.append((raw.bandwidth_bps, raw.latency_s))
        self.estimate = LinkEstimate(float(np.median([f[0] for f in self._fits])),
                                     float(np.median([f[1] for f in self._fits])))
        return self.estimate

    def _fit(self, e: LinkEstimate) -> LinkEstimate:
        b = np.array([s[0] for s in self.samples])
        d = np.array([s[1] for s in self.samples])
        if len(b) >= 4 and b.max() > 1.1 * b.min():
            # Queueing only adds delay: fit the lower envelope by using each size's fastest sample.
            groups = np.round(b, -1)
            keys = np.unique(groups)
            if len(keys) >= 2:
                x = np.array([b[groups == g].mean() for g in keys]) * 8.0
                y = np.array([d[groups == g].min() for g in keys])
                slope, intercept = np.polyfit(x, y, 1)
                # Jitter: how far the typical delay of the most common size lies above its fastest.
                common = keys[np.argmax([np.sum(groups == g) for g in keys])]
                dc = d[groups == common]
                jitter = float(np.median(dc) - dc.min())
                if slope * (x.max() - x.min()) > jitter and slope > 0:
                    e.bandwidth_bps = 1.0 / slope
                    e.latency_s = max(0.0, float(intercept))
                else:  # transmission time differences are lost in the jitter: the link is fast
                    e.bandwidth_bps = 1e10
                    e.latency_s = float(y.min())
                return e
        # One size only: keep the latency estimate, charge the rest of the fastest delay to bandwidth.
        fastest = int(np.argmin(d))
        extra = float(d[fastest]) - e.latency_s
        if extra > 0:
            e.bandwidth_bps = 8.0 * float(b[fastest]) / extra
        return e
