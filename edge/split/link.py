"""An emulated network link between two Ark topics: bandwidth, latency and loss.

``LinkEmulator`` subscribes to ``in_topic`` (any schema, without decoding) and republishes
each message unchanged on ``out_topic`` after the time the link would take: messages leave
one after another at ``bandwidth_bps`` (a FIFO, so a burst queues), each arriving
``latency_ms`` after its last bit left; with probability ``loss`` a message is dropped
(seeded, so reproducible). A message is sized as it travels on the wire (Ark header and
buffers). Delivery runs on its own thread, so timing does not depend on the node's executor.

    link = LinkEmulator("link", params={"in_topic": "/split/latent", "out_topic": "/split/latent_rx",
                                        "schema": "split/Latent", "bandwidth_bps": 5e6, "latency_ms": 2})
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Any

import numpy as np

from ark.config import ArkConfig
from ark.messages import lookup_schema
from ark.node import Node
from ark.wire import MessageInfo


class LinkEmulator(Node):
    """See the module docstring. Parameters: ``in_topic``, ``out_topic``, ``schema`` (name),
    ``bandwidth_bps`` (default 5e6), ``latency_ms`` (0), ``loss`` (0), ``seed`` (0), ``queue`` (1000)."""

    def __init__(self, name: str = "link", *, config: ArkConfig | None = None, params: dict[str, Any] | None = None) -> None:
        super().__init__(name, config=config, params=params)
        info = lookup_schema(str(self.param("schema", "split/Latent")))
        self.bandwidth_bps = float(self.param("bandwidth_bps", 5e6))
        self.latency_s = float(self.param("latency_ms", 0.0)) / 1000.0
        self.loss = float(self.param("loss", 0.0))
        self._rng = np.random.default_rng(int(self.param("seed", 0)))
        self.sent = self.lost = self.bytes = 0
        self._free_at = 0.0
        self._heap: list[tuple[float, int, Any, int]] = []
        self._n = 0
        self._cv = threading.Condition()
        self._running = True
        self.pub = self.publisher(str(self.param("out_topic")), (info.name, info.version))
        self.subscriber(str(self.param("in_topic")), None, self._on_message, queue=int(self.param("queue", 1000)))
        self._delivery = threading.Thread(target=self._deliver, name=f"ark-link-{name}", daemon=True)
        self._delivery.start()

    def set_link(self, bandwidth_bps: float | None = None, latency_ms: float | None = None, loss: float | None = None) -> None:
        """Change the link's conditions for the following messages."""
        if bandwidth_bps is not None:
            self.bandwidth_bps = float(bandwidth_bps)
        if latency_ms is not None:
            self.latency_s = float(latency_ms) / 1000.0
        if loss is not None:
            self.loss = float(loss)

    def _on_message(self, msg: Any, info: MessageInfo) -> None:
        if self.loss and self._rng.random() < self.loss:
            self.lost += 1
            return
        now = time.monotonic()
        start = max(now, self._free_at)
        self._free_at = start + 8.0 * info.nbytes / self.bandwidth_bps
        with self._cv:
            self._n += 1
            heapq.heappush(self._heap, (self._free_at + self.latency_s, self._n, msg, info.stamp_ns))
            self._cv.notify()
        self.bytes += info.nbytes

    def _deliver(self) -> None:
        while self._running:
            with self._cv:
                if not self._heap:
                    self._cv.wait(0.1)
                    continue
                due = self._heap[0][0] - time.monotonic()
                if due > 0:
                    self._cv.wait(due)
                    continue
                _, _, msg, stamp = heapq.heappop(self._heap)
            try:
                self.pub.publish_raw(msg.header, msg.buffers, stamp_ns=stamp)
                self.sent += 1
            except Exception:  # closing: the socket went away under us
                if self._running:
                    raise

    def shutdown(self) -> None:
        self._running = False
        with self._cv:
            self._cv.notify()
        self._delivery.join(timeout=1)
        super().shutdown()
