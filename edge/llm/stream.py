"""Memory-capped inference: stream layer weights from disk through a sliding window (TPI-LLM).

The token embedding/head and the norms stay resident; the blocks do not. A window of ``w``
blocks is held at a time: while block ``i`` computes, a prefetch thread reads block
``i + w - 1`` from the GGUF file (``os.preadv`` releases the GIL, so reading overlaps the
matmuls). After block ``i`` runs it is dropped and its memory goes back to the OS. The
window wraps around: the first blocks of the next token load while the last ones compute.

``w`` follows from the budget: (budget - resident weights) // bytes of one block, at
least 2 (one computing, one loading); a smaller budget is a MemoryBudgetError.

    model = load_streaming(GGUFFile(path), "48MB")
    model.streamer.stats()    # window, loads, seconds loading, seconds the compute waited
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from edge.llm.errors import MemoryBudgetError
from edge.llm.memory import format_size, parse_size
from edge.llm.model import ModelArgs, Transformer, TransformerBlock, build_block

if TYPE_CHECKING:
    from edge.llm.gguf_reader import GGUFFile


class LayerStreamer:
    """Supplies block ``i`` on demand from a window of blocks loaded ahead by one thread."""

    def __init__(self, f: "GGUFFile", args: ModelArgs, window: int, mode: str = "gguf", group_size: int = 32) -> None:
        self.f, self.args, self.mode, self.group_size = f, args, mode, group_size
        self.window = max(1, min(window, args.n_layer))
        self.resident = self.window >= args.n_layer  # everything fits: load once, never drop
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ark-llm-prefetch")
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self.loads = 0
        self.load_s = 0.0
        self.wait_s = 0.0

    def _load(self, i: int) -> TransformerBlock:
        t0 = time.perf_counter()
        blk = build_block(self.f, i, self.args, self.mode, self.group_size)
        dt = time.perf_counter() - t0
        with self._lock:
            self.loads += 1
            self.load_s += dt
        return blk

    def _schedule(self, i: int) -> None:
        i %= self.args.n_layer
        if i not in self._pending:
            self._pending[i] = self._pool.submit(self._load, i)

    def get(self, i: int) -> TransformerBlock:
        """Block ``i``, waiting for its load if the prefetcher is behind; keeps the window full."""
        for j in range(i, i + self.window):
            self._schedule(j)
        t0 = time.perf_counter()
        blk = self._pending[i].result()
        self.wait_s += time.perf_counter() - t0
        return blk

    def done(self, i: int) -> None:
        """Block ``i`` has run: drop it and start loading the block that enters the window."""
        if self.resident:
            return
        self._pending.pop(i, None)
        self._schedule(i + self.window)

    def stats(self) -> dict[str, float]:
        return {"window": self.window, "loads": self.loads, "load_s": self.load_s, "wait_s": self.wait_s,
                "overlap": 1.0 - self.wait_s / self.load_s if self.load_s > 0 else 0.0}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


def load_streaming(f: "GGUFFile", max_memory: int | str, mode: str = "gguf", group_size: int = 32) -> Transformer:
    """A model whose blocks are streamed from ``f`` so that weights stay within ``max_memory`` bytes."""
    budget = parse_size(max_memory)
    model = Transformer.from_gguf(f, mode=mode, group_size=group_size, load_layers=False)
    resident = model.nbytes
    probe = build_block(f, 0, model.args, mode, group_size)
    per_block = (sum(b.numel() * b.element_size() for b in probe.buffers())
                 + sum(m.nbytes for m in probe.modules() if getattr(m, "row_access", True) is False))  # w8a8's packed weights
    del probe
    window = (budget - resident) // per_block if budget > resident else 0
    if window < 2:
        raise MemoryBudgetError(
            f"--max-memory {format_size(budget)} is too small: resident weights take {format_size(resident)} "
            f"and streaming needs two blocks of {format_size(per_block)} (at least "
            f"{format_size(resident + 2 * per_block)})")
    streamer = LayerStreamer(f, model.args, int(window), mode, group_size)
    model.streamer = streamer  # type: ignore[attr-defined]
    model.layer_source = streamer.get
    model.layer_done = streamer.done
    model.close = streamer.close  # type: ignore[attr-defined]
    model.budget = budget  # type: ignore[attr-defined]
    model.weight_bytes = resident + streamer.window * per_block  # type: ignore[attr-defined]
    return model
