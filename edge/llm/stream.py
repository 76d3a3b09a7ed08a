"""Memory-capped inference: stream layer weights from disk through a sliding window (TPI-LLM).

The norms stay resident, and the token embedding/head too when it fits beside two blocks;
the blocks do not. A window of ``w`` blocks is held at a time: while block ``i`` computes,
a prefetch thread reads block ``i + w - 1`` from the GGUF file (``os.preadv`` releases the
GIL, so reading overlaps the matmuls). After block ``i`` runs it is dropped and its memory
goes back to the OS. The window wraps around: the first blocks of the next token load while
the last ones compute.

``w`` follows from the budget: (budget - resident weights) // bytes of one block; 2 or more
let loading overlap the compute (one block computing, one loading), 1 works without overlap.
When the token table would leave fewer than two blocks (it is ~30 % of SmolLM2 and most of
a small budget), it stays on disk as well (``DiskRows``): a lookup reads the prompt's rows,
the head reads a few MB of rows at a time. Streamed blocks live in memory maps of their own
(``memory.mapped_allocations``), so dropping one gives its memory back to the OS at once. A
budget below the norms plus one block is a MemoryBudgetError.

    model = load_streaming(GGUFFile(path), "48MB")
    model.streamer.stats()    # window, loads, seconds loading, seconds the compute waited
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

from edge.llm.errors import MemoryBudgetError, UnsupportedModelError
from edge.llm.memory import format_size, mapped_allocations, parse_size
from edge.llm.model import ModelArgs, Transformer, TransformerBlock, build_block
from edge.llm.quantize import QuantWeight, from_gguf, held_bytes

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from edge.llm.gguf_reader import GGUFFile


class DiskRows(QuantWeight):
    """A [N, K] weight left in the GGUF file (the token table and tied head under a tight budget).

    ``dequantize_rows`` reads just the rows asked for (the prompt's tokens); a matmul reads
    ``read_bytes`` of rows at a time and multiplies them in the file's format, so only one
    such slice is ever in memory. Reads come from the OS page cache after the first token.
    """

    def __init__(self, f: "GGUFFile", name: str, read_bytes: int = 4 << 20) -> None:
        super().__init__()
        info = f.check_type(name)
        if len(info.shape) != 2:
            raise UnsupportedModelError(f"{f.path.name}: tensor {name} is not a matrix ({info.shape})")
        self.f, self.name, self.ggml_type = f, name, info.ggml_type
        self.out_features, self.in_features = info.shape
        self.step = max(1, read_bytes // (info.nbytes // self.out_features))

    @property
    def nbytes(self) -> int:
        return 0  # nothing resident

    def _rows(self, start: int, stop: int) -> QuantWeight:
        return from_gguf(self.ggml_type, self.f.read_rows(self.name, start, stop), (stop - start, self.in_features))

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        if isinstance(rows, slice):
            start, stop, stride = rows.indices(self.out_features)
            w = self._rows(start, max(start, stop)).dequantize()
            return w if stride == 1 else w[::stride]
        ids = rows.reshape(-1).tolist()
        uniq = sorted(set(ids))
        got = dict(zip(uniq, (self._rows(i, i + 1).dequantize()[0] for i in uniq)))
        return torch.stack([got[i] for i in ids]).reshape(*rows.shape, self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_empty(x.shape[0], self.out_features)
        for r0 in range(0, self.out_features, self.step):
            r1 = min(self.out_features, r0 + self.step)
            out[:, r0:r1] = self._rows(r0, r1).matmul(x)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.ggml_type} on disk"


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
        with mapped_allocations():  # off the heap: blocks come and go every token
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
    args = ModelArgs.from_gguf(f)
    probe = build_block(f, 0, args, mode, group_size)
    per_block = held_bytes(probe)
    del probe
    # The token table (and head) as the file stores them: when they would leave fewer than two
    # blocks of the budget they stay on disk too, decided before anything of them is read.
    table = sum(f.tensors[n].nbytes for n in ("token_embd.weight", "output.weight") if n in f.tensors)
    on_disk = budget < table + 2 * per_block
    model = Transformer.from_gguf(f, mode=mode, group_size=group_size, load_layers=False,
                                  table=(lambda name: DiskRows(f, name)) if on_disk else None)
    resident = model.nbytes
    window = (budget - resident) // per_block if budget > resident else 0
    if window < 1:
        raise MemoryBudgetError(
            f"--max-memory {format_size(budget)} is too small: resident weights take {format_size(resident)} "
            f"and streaming needs one block of {format_size(per_block)} (at least "
            f"{format_size(resident + per_block)}; two blocks, {format_size(resident + 2 * per_block)}, "
            f"let loading overlap the compute)")
    if window < 2:
        log.warning("--max-memory %s holds one block at a time: every block is read while the compute waits "
                    "(%s lets loading overlap the compute)", format_size(budget), format_size(resident + 2 * per_block))
    # Dequantisation scratch counts against memory too: a quarter-million weights at a time
    # (1 MiB of float32) instead of two million (process-wide; see limit_scratch).
    from ark.kernels import reference

    reference.limit_scratch(1 << 18)
    streamer = LayerStreamer(f, model.args, int(window), mode, group_size)
    model.streamer = streamer  # type: ignore[attr-defined]
    model.layer_source = streamer.get
    model.layer_done = streamer.done
    model.close = streamer.close  # type: ignore[attr-defined]
    model.budget = budget  # type: ignore[attr-defined]
    model.weight_bytes = resident + streamer.window * per_block  # type: ignore[attr-defined]
    return model
