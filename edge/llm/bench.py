"""MELT-style on-device measurements of one loaded model: prefill and decode tokens/s, time to
first token, peak resident memory, and energy where the platform exposes it (Linux RAPL).

    llm = LLM.load(mode="int8")
    r = measure(llm, prompt_tokens=128, new_tokens=128)
    print(r.row())
"""

from __future__ import annotations

import glob
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from edge.llm.generate import LLM, GenerationStats, SamplingParams, generate_tokens
from edge.llm.memory import peak_rss_bytes, rss_bytes
from edge.llm.tokenizer import Tokenizer

BENCH_TEXT = ("A robot arm on a table pushes a red cube toward the left goal, then picks up a blue sphere "
              "and places it on the right goal while a camera streams images to an edge server. ")


@dataclass
class BenchResult:
    """One configuration's numbers; ``None`` where a number is not available."""

    name: str
    prompt_tokens: int
    new_tokens: int
    threads: int
    load_s: float
    ttft_s: float
    prefill_tok_s: float
    decode_tok_s: float
    peak_rss_mb: float  # the process's peak since it started (load included): run one configuration per process
    weights_mb: float
    baseline_rss_mb: float = 0.0  # resident before the model was loaded (Python, torch, tokenizers)
    energy_j: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_prompt(tokenizer: Tokenizer, n: int) -> list[int]:
    """Exactly ``n`` token ids of plain English text (repeated as needed)."""
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(BENCH_TEXT)
    return ids[:n]


class _Rapl:
    """Package energy counters (microjoules) where /sys/class/powercap exposes them; absent in most VMs."""

    def __init__(self) -> None:
        self.files = sorted(glob.glob("/sys/class/powercap/intel-rapl:[0-9]*/energy_uj"))

    def read(self) -> float | None:
        if not self.files:
            return None
        try:
            return sum(int(open(f).read()) for f in self.files) / 1e6
        except OSError:
            return None


def measure(llm: LLM, prompt_tokens: int = 128, new_tokens: int = 128, name: str = "", load_s: float = 0.0,
            warmup: bool = True, baseline_rss: int = 0) -> BenchResult:
    """Generate ``new_tokens`` (ignoring end-of-text) after a ``prompt_tokens`` prompt, and time it."""
    ids = bench_prompt(llm.tokenizer, prompt_tokens)
    params = SamplingParams(max_new_tokens=new_tokens)
    warmup_s = 0.0
    if warmup:  # first calls allocate caches, pick kernels (and compile); not what a user sees per request
        t0 = time.perf_counter()
        for _ in generate_tokens(llm.model, ids[:8], SamplingParams(max_new_tokens=2), set()):
            pass
        warmup_s = time.perf_counter() - t0
    rapl = _Rapl()
    e0 = rapl.read()
    stats = GenerationStats()
    for _ in generate_tokens(llm.model, ids, params, set(), stats=stats):
        pass
    e1 = rapl.read()
    weights = getattr(llm.model, "weight_bytes", None) or llm.model.nbytes
    extra: dict[str, Any] = {"warmup_s": warmup_s}
    if hasattr(llm.model, "streamer"):
        extra["stream"] = llm.model.streamer.stats()
    if hasattr(llm.model, "comm"):
        c = llm.model.comm.stats()
        total = stats.prefill_s + stats.decode_s
        extra["allreduce"] = {**c, "share": c["allreduce_s"] / total if total > 0 else 0.0}
    return BenchResult(
        name=name or llm.description, prompt_tokens=len(ids), new_tokens=stats.new_tokens,
        threads=torch.get_num_threads(), load_s=load_s, ttft_s=stats.ttft_s, prefill_tok_s=stats.prefill_tok_s,
        decode_tok_s=stats.decode_tok_s, peak_rss_mb=max(peak_rss_bytes(), rss_bytes()) / 2**20,
        weights_mb=weights / 2**20, baseline_rss_mb=baseline_rss / 2**20, energy_j=None if e0 is None or e1 is None else e1 - e0, extra=extra)


def timed_load(**kwargs: Any) -> tuple[LLM, float, int]:
    """``LLM.load(**kwargs)``, the seconds it took, and the resident memory just before it."""
    import edge.llm.tokenizer  # noqa: F401  (imports that every configuration pays belong to the baseline)
    import tokenizers  # noqa: F401

    before = rss_bytes()
    t0 = time.perf_counter()
    llm = LLM.load(**kwargs)
    return llm, time.perf_counter() - t0, before
