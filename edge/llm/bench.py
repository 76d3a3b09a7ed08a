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


# Held-out text for the quality column (not the w8a8 calibration text): mean next-token loss
# over it shows what a lossy weight mode costs against the file's own weights.
QUALITY_TEXT = (
    "Imitation learning trains a policy from demonstrations. A person or a scripted expert "
    "performs the task many times while the robot records its camera images, joint angles and "
    "the commands it was given. A neural network then learns to predict the next command from "
    "what the robot sees. Small models run on the robot itself; larger ones run on an edge "
    "server that receives compressed features over the network. When the policy fails, the "
    "operator adds demonstrations of the situations where it went wrong and trains again.\n\n"
    "def clamp(value, low, high):\n    return max(low, min(high, value))\n\n"
    "The battery lasted 47 minutes; the arm moved 1,284 times and dropped the cup twice.")


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
    nll: float | None = None  # mean next-token loss (nats) over QUALITY_TEXT; lower is better
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
            warmup: bool = True, baseline_rss: int = 0, quality: bool = True) -> BenchResult:
    """Generate ``new_tokens`` (ignoring end-of-text) after a ``prompt_tokens`` prompt, and time it;
    then (``quality``) the mean next-token loss over ``QUALITY_TEXT``."""
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
    peak = max(peak_rss_bytes(), rss_bytes())  # before the quality pass, whose logits are not a user's
    nll = quality_nll(llm) if quality else None
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
        decode_tok_s=stats.decode_tok_s, peak_rss_mb=peak / 2**20, nll=nll,
        weights_mb=weights / 2**20, baseline_rss_mb=baseline_rss / 2**20, energy_j=None if e0 is None or e1 is None else e1 - e0, extra=extra)


@torch.inference_mode()
def quality_nll(llm: LLM, text: str = QUALITY_TEXT, chunk: int = 64) -> float:
    """Mean next-token negative log-likelihood (nats) of ``text`` under the model, ``chunk``
    positions at a time (the logits of a whole long text would be tens of MB)."""
    ids = llm.tokenizer.encode(text)
    llm.model.setup_cache(len(ids))
    total = 0.0
    for start in range(0, len(ids) - 1, chunk):
        piece = ids[start:start + chunk]
        logits = llm.model(torch.tensor(piece), start, last_only=False)
        targets = torch.tensor(ids[start + 1:start + 1 + len(piece)])
        total += float(torch.nn.functional.cross_entropy(logits[:len(targets)], targets, reduction="sum"))
    return total / (len(ids) - 1)


def timed_load(**kwargs: Any) -> tuple[LLM, float, int]:
    """``LLM.load(**kwargs)``, the seconds it took, and the resident memory just before it."""
    import edge.llm.tokenizer  # noqa: F401  (imports that every configuration pays belong to the baseline)
    import tokenizers  # noqa: F401

    before = rss_bytes()
    t0 = time.perf_counter()
    llm = LLM.load(**kwargs)
    return llm, time.perf_counter() - t0, before
