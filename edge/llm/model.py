"""A Llama-family decoder built from a GGUF file's metadata.

RMSNorm, rotary position embeddings with the file's base, grouped-query attention with a
KV cache, SwiGLU feed-forward, and an output head tied to the token embedding when the file
has no ``output.weight``. Batch size is one (an edge device answers one request at a time).

Rotary embeddings rotate *adjacent pairs* (x[2i], x[2i+1]): llama.cpp's converter permutes
the Q and K rows of Hugging Face checkpoints into that order, so GGUF weights need no
un-permuting here (the same convention as gpt-fast and Meta's reference code).

    f = GGUFFile(default_model_path())
    model = Transformer.from_gguf(f, mode="gguf")     # or "float", "int8", "int4"
    model.setup_cache(512)
    logits = model(torch.tensor([1, 2, 3]), start_pos=0)   # [3, vocab]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ark import kernels
from edge.llm.errors import ContextOverflowError, UnsupportedModelError
from edge.llm.quantize import (QuantWeight, W8A8Weight, float_tensor, from_gguf, fuse_rows, held_bytes,
                               quantize_weight)

if TYPE_CHECKING:
    from edge.llm.gguf_reader import GGUFFile

LLAMA_FAMILY = ("llama",)

# What w8a8 mode measures activation ranges on (prose, code, a robot command, JSON), sent as a
# chat turn: short enough to cost a fraction of a second at load, varied enough to meet the
# outlier channels.
CALIBRATION_TEXT = (
    "The robot arm picks up the red cube and places it on the left goal. "
    "def forward(self, x):\n    return self.head(torch.relu(self.body(x)))\n"
    '{"action": "push", "object": "blue cylinder", "target": [0.4, -0.2]}\n'
    "Paris is the capital of France; Berlin is the capital of Germany. 1, 2, 3, 5, 8, 13, 21.\n"
    "What should the robot do next?")


@dataclass
class ModelArgs:
    """Shape of a Llama-family model, read from GGUF metadata (``<arch>.*`` keys)."""

    n_layer: int
    dim: int
    n_head: int
    n_kv_head: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    head_dim: int = 0

    def __post_init__(self) -> None:
        if not self.head_dim:
            self.head_dim = self.dim // self.n_head
        if self.n_head % self.n_kv_head:
            raise UnsupportedModelError(f"{self.n_head} query heads are not a multiple of {self.n_kv_head} KV heads")

    @classmethod
    def from_gguf(cls, f: "GGUFFile") -> "ModelArgs":
        arch = f.get("general.architecture")
        if arch not in LLAMA_FAMILY:
            raise UnsupportedModelError(f"{f.path.name}: architecture {arch!r} is not Llama-family "
                                        f"(supported: {', '.join(LLAMA_FAMILY)})")

        def need(key: str) -> int | float:
            value = f.get(f"{arch}.{key}")
            if value is None:
                raise UnsupportedModelError(f"{f.path.name}: metadata key {arch}.{key} is missing")
            return value

        n_head = int(need("attention.head_count"))
        dim = int(need("embedding_length"))
        head_dim = int(f.get(f"{arch}.attention.key_length") or dim // n_head)
        rope_dim = int(f.get(f"{arch}.rope.dimension_count") or head_dim)
        if rope_dim != head_dim:
            raise UnsupportedModelError(f"{f.path.name}: partial rotary ({rope_dim} of {head_dim} dims) is not supported")
        vocab = f.get(f"{arch}.vocab_size") or len(f.get("tokenizer.ggml.tokens") or ()) or f.tensors["token_embd.weight"].shape[0]
        return cls(
            n_layer=int(need("block_count")),
            dim=dim,
            n_head=n_head,
            n_kv_head=int(f.get(f"{arch}.attention.head_count_kv") or n_head),
            ffn_dim=int(need("feed_forward_length")),
            vocab_size=int(vocab),
            context_length=int(need("context_length")),
            rope_base=float(f.get(f"{arch}.rope.freq_base") or 10000.0),
            norm_eps=float(f.get(f"{arch}.attention.layer_norm_rms_epsilon") or 1e-5),
            head_dim=head_dim,
        )


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", weight.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps) * weight in one call instead of five (about 20 -> 17 us a
        # call for one token; same outputs as the explicit formula in our checks).
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class KVCache(nn.Module):
    """Keys and values of past positions, [1, n_kv_head, max_seq_len, head_dim] each."""

    def __init__(self, max_seq_len: int, n_kv_head: int, head_dim: int) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        shape = (1, n_kv_head, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape), persistent=False)
        self.register_buffer("v", torch.zeros(shape), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


def rope_tables(head_dim: int, base: float, length: int, freq_factors: torch.Tensor | None = None) -> torch.Tensor:
    """cos/sin of every position and pair, [length, head_dim // 2, 2]."""
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if freq_factors is not None:
        freqs = freqs / freq_factors.to(torch.float64)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), freqs)
    return torch.stack((angles.cos(), angles.sin()), dim=-1).to(torch.float32)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x [1, T, H, D] by table [T, D/2, 2]."""
    xp = x.reshape(*x.shape[:-1], -1, 2)
    if not torch.compiler.is_compiling() and x.dtype == torch.float32:
        # Eager: each pair as one complex number times (cos + i sin) -- the same products and
        # sums as below (the outputs matched the real form bit for bit in our checks, and the
        # gguf greedy tokens did not change), in one kernel instead of about ten: 40 -> 11 us a
        # call on one core, paid once per layer per token. Traced code keeps the real form,
        # which Inductor fuses anyway.
        rot = torch.view_as_complex(xp) * torch.view_as_complex(table).unsqueeze(1)
        return torch.view_as_real(rot).flatten(-2)
    t = table.unsqueeze(1)  # [T, 1, D/2, 2] broadcasts over heads
    cos, sin = t[..., 0], t[..., 1]
    out = torch.stack((xp[..., 0] * cos - xp[..., 1] * sin, xp[..., 1] * cos + xp[..., 0] * sin), dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    """Grouped-query attention; ``n_head``/``n_kv_head`` are this module's share (all of them unless sharded).

    Q, K and V are one fused weight (``wqkv``, as in gpt-fast): one dequantising matmul instead of three.
    The attention itself is ``ark.kernels``' prefill and decode ops (Triton on a GPU, SDPA on a CPU).
    """

    def __init__(self, wq: QuantWeight, wk: QuantWeight, wv: QuantWeight, wo: QuantWeight, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.n_head = wq.out_features // head_dim
        self.n_kv_head = wk.out_features // head_dim
        self.wqkv = fuse_rows([wq, wk, wv])
        self.wo = wo
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, rope: torch.Tensor, start: int) -> torch.Tensor:
        _, t, _ = x.shape
        hd = self.head_dim
        qkv = self.wqkv(x)
        qk_dim = (self.n_head + self.n_kv_head) * hd
        # Q and K heads sit side by side in the fused output: one rotation over all of them
        # (the same elementwise arithmetic as two calls, half the per-token op launches).
        qk = apply_rope(qkv[..., :qk_dim].view(1, t, self.n_head + self.n_kv_head, hd), rope)
        q, k = (z.transpose(1, 2) for z in qk.split([self.n_head, self.n_kv_head], dim=2))
        v = qkv[..., qk_dim:].reshape(1, t, self.n_kv_head, hd).transpose(1, 2)
        assert self.kv_cache is not None, "call setup_cache() first"
        if isinstance(start, torch.Tensor):  # static-shape decode (torch.compile): whole cache, masked
            cache = self.kv_cache
            cache.k.index_copy_(2, start.view(1), k)
            cache.v.index_copy_(2, start.view(1), v)
            valid = (start + 1).view(1).to(torch.int32)
            y = kernels.decode_attention(q[:, :, 0], cache.k, cache.v, cache_seqlens=valid).unsqueeze(2)
            return self.wo(y.transpose(1, 2).reshape(1, t, self.n_head * hd))
        k, v = self.kv_cache.update(start, k, v)
        if t == 1:
            y = kernels.decode_attention(q[:, :, 0], k, v).unsqueeze(2)
        else:  # a prompt (chunk): causal, and a chunk after earlier positions sees all of them
            y = kernels.attention(q, k, v, causal=True)
        return self.wo(y.transpose(1, 2).reshape(1, t, self.n_head * hd))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), with w1 = ffn_gate, w3 = ffn_up (fused into ``w13``), w2 = ffn_down."""

    def __init__(self, w1: QuantWeight, w3: QuantWeight, w2: QuantWeight) -> None:
        super().__init__()
        self.hidden = w1.out_features
        self.w13 = fuse_rows([w1, w3])
        self.w2 = w2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        return self.w2(F.silu(gate) * up)


class _InputRanges:
    """Forward pre-hooks recording the largest |input| per channel of a module's weights (the
    ``only`` attribute names, or every QuantWeight inside it); ``convert`` swaps those weights
    for ``W8A8Weight``s smoothed with what was recorded."""

    def __init__(self, root: nn.Module, only: list[str] | None = None) -> None:
        self.root = root
        names = only or [n for n, m in root.named_modules() if isinstance(m, QuantWeight)]
        self.weights = {n: root.get_submodule(n) for n in names}
        self.absmax: dict[str, torch.Tensor] = {}

    def _hook(self, name: str) -> Callable:
        def record(_mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            a = inputs[0].reshape(-1, inputs[0].shape[-1]).abs().amax(0)
            self.absmax[name] = torch.maximum(self.absmax[name], a) if name in self.absmax else a
        return record

    def __enter__(self) -> "_InputRanges":
        self.handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.weights.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()

    def convert(self, root: nn.Module, alpha: float) -> None:
        for name in [n for n in self.weights if n in self.absmax]:
            mod = self.weights.pop(name)  # the file-format weight is freed as soon as it is replaced
            parent, _, attr = name.rpartition(".")
            setattr(root.get_submodule(parent) if parent else root, attr, W8A8Weight.from_weight(mod, self.absmax[name], alpha))
            del mod


class TransformerBlock(nn.Module):
    def __init__(self, attention: Attention, feed_forward: FeedForward, attention_norm: RMSNorm, ffn_norm: RMSNorm) -> None:
        super().__init__()
        self.attention, self.feed_forward = attention, feed_forward
        self.attention_norm, self.ffn_norm = attention_norm, ffn_norm

    def forward(self, x: torch.Tensor, rope: torch.Tensor, start: int) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rope, start)
        return h + self.feed_forward(self.ffn_norm(h))


def block_tensor_names(i: int) -> dict[str, str]:
    """GGUF tensor names of block ``i`` by role."""
    p = f"blk.{i}."
    return {"attn_norm": p + "attn_norm.weight", "wq": p + "attn_q.weight", "wk": p + "attn_k.weight",
            "wv": p + "attn_v.weight", "wo": p + "attn_output.weight", "ffn_norm": p + "ffn_norm.weight",
            "w1": p + "ffn_gate.weight", "w3": p + "ffn_up.weight", "w2": p + "ffn_down.weight"}


def build_block(f: "GGUFFile", i: int, args: ModelArgs, mode: str = "gguf", group_size: int = 32,
                read: Callable[[str], object] | None = None) -> TransformerBlock:
    """Block ``i`` with its weights read from ``f`` (or ``read(name)``) and stored in ``mode``."""
    names = block_tensor_names(i)
    read = read or f.read
    for name in names.values():
        if name not in f.tensors:
            raise UnsupportedModelError(f"{f.path.name}: tensor {name} is missing (not a Llama-family layout)")

    def w(role: str) -> QuantWeight:
        info = f.check_type(names[role])
        # w8a8 without calibration (a streamed or tensor-parallel block): the down projection's
        # input (silu(gate) * up) has outlier channels that one int8 scale per token crushes
        # (greedy tokens diverged within 0-2 tokens on most prompts), so it keeps bf16
        # activations. Transformer.from_gguf calibrates instead (from_gguf_w8a8).
        role_mode = "int8bf16" if mode == "w8a8" and role == "w2" else mode
        return quantize_weight(from_gguf(info.ggml_type, read(names[role]), info.shape), role_mode, group_size)

    def norm(role: str) -> RMSNorm:
        info = f.check_type(names[role])
        return RMSNorm(float_tensor(info.ggml_type, read(names[role])), args.norm_eps)

    attn = Attention(w("wq"), w("wk"), w("wv"), w("wo"), args.head_dim)
    return TransformerBlock(attn, FeedForward(w("w1"), w("w3"), w("w2")), norm("attn_norm"), norm("ffn_norm"))


class Transformer(nn.Module):
    """The decoder. ``forward(tokens, start_pos)`` -> logits of the given positions (or the last)."""

    def __init__(self, args: ModelArgs, tok_embeddings: QuantWeight, layers: list[TransformerBlock | None],
                 norm: RMSNorm, output: QuantWeight, rope_freq_factors: torch.Tensor | None = None) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = tok_embeddings
        self.layers = nn.ModuleList([m if m is not None else nn.Identity() for m in layers])
        self.norm = norm
        self.output = output
        self.rope_freq_factors = rope_freq_factors
        self.rope = torch.empty(0)
        self.max_seq_len = 0
        # Set by stream.LayerStreamer: supplies layer i's block when weights are not resident.
        self.layer_source: Callable[[int], TransformerBlock] | None = None
        self.layer_done: Callable[[int], None] | None = None
        self.caches: list[KVCache] = []

    @classmethod
    def from_gguf(cls, f: "GGUFFile", mode: str = "gguf", group_size: int = 32, load_layers: bool = True,
                  table: Callable[[str], QuantWeight] | None = None) -> "Transformer":
        """Build the model from a GGUF file; ``load_layers=False`` leaves blocks to a streamer, and
        ``table(name)`` supplies the token table and head instead of reading them (``stream.DiskRows``)."""
        if mode == "w8a8" and load_layers:
            from edge.llm.tokenizer import Tokenizer

            tok = Tokenizer.from_gguf(f)
            # As a chat turn: the template's system prompt is in every chat the model will see.
            ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": CALIBRATION_TEXT}]))
            return cls.from_gguf_w8a8(f, ids, group_size=group_size)
        args = ModelArgs.from_gguf(f)
        if "token_embd.weight" not in f.tensors:
            raise UnsupportedModelError(f"{f.path.name}: tensor token_embd.weight is missing")
        # 4-bit embeddings and head cost a small model its answers (SmolLM2 at int4 stops naming
        # Paris): like llama.cpp's Q4 files, int4 mode keeps them at 8 bits.
        head_mode = "int8" if mode == "int4" else mode
        if table is not None:
            emb = table("token_embd.weight")
            output = table("output.weight") if "output.weight" in f.tensors else emb
            norm, factors = cls._norm_and_rope(f, args)
            return cls(args, emb, [None] * args.n_layer, norm, output, factors)
        info = f.check_type("token_embd.weight")
        file_emb = from_gguf(info.ggml_type, f.read(info.name), info.shape)
        emb = quantize_weight(file_emb, head_mode, group_size)
        if "output.weight" in f.tensors:
            oinfo = f.check_type("output.weight")
            output = quantize_weight(from_gguf(oinfo.ggml_type, f.read(oinfo.name), oinfo.shape), head_mode, group_size)
        else:
            output = emb  # tied embeddings: one copy serves lookup and head
        if not getattr(emb, "row_access", True):
            # A packed format (w8a8) cannot hand out single rows: lookups read the file's copy
            # (a tied head then holds the table twice, ~30 MB more for SmolLM2).
            emb = file_emb
        norm, factors = cls._norm_and_rope(f, args)
        layers = [build_block(f, i, args, mode, group_size) if load_layers else None for i in range(args.n_layer)]
        return cls(args, emb, layers, norm, output, factors)

    @staticmethod
    def _norm_and_rope(f: "GGUFFile", args: ModelArgs) -> tuple[RMSNorm, torch.Tensor | None]:
        """The final norm and the optional rotary frequency factors."""
        ninfo = f.check_type("output_norm.weight")
        norm = RMSNorm(float_tensor(ninfo.ggml_type, f.read(ninfo.name)), args.norm_eps)
        factors = None
        if "rope_freqs.weight" in f.tensors:
            finfo = f.check_type("rope_freqs.weight")
            factors = float_tensor(finfo.ggml_type, f.read(finfo.name))
        return norm, factors

    @classmethod
    @torch.inference_mode()
    def from_gguf_w8a8(cls, f: "GGUFFile", ids: list[int], alpha: float = 0.6, group_size: int = 32) -> "Transformer":
        """The model with every matmul weight (not the embedding lookups) as ``W8A8Weight``,
        SmoothQuant factors taken from the largest |activation| per input channel over ``ids``.

        Block by block: block i is read in the file's format, runs the calibration hidden states
        with hooks on its weights, and is converted before block i + 1 is read, so at most one
        block exists twice (loading the whole file-format model first peaked 160 MB higher).

        alpha 0.6 was chosen on SmolLM2-135M by next-token loss over three texts against the
        file's weights: -0.035 to +0.015 nats (alpha 0.5: up to +0.05; 0.7: a wrong answer to
        the France question; no smoothing: +0.05). ``ark llm bench --mode w8a8`` reports the
        loss on a held-out text: 4.139 nats against the file weights' 4.137.
        """
        model = cls.from_gguf(f, "gguf", group_size, load_layers=False)
        if not ids:
            raise UnsupportedModelError("w8a8 calibration needs at least one token")
        a, t = model.args, len(ids)
        rope = rope_tables(a.head_dim, a.rope_base, t, model.rope_freq_factors)
        x = model.embed(torch.tensor(ids))
        for i in range(a.n_layer):
            blk = build_block(f, i, a, "gguf", group_size)
            blk.attention.kv_cache = KVCache(t, blk.attention.n_kv_head, a.head_dim)
            with _InputRanges(blk) as ranges:
                x = blk(x, rope, 0)
            blk.attention.kv_cache = None
            ranges.convert(blk, alpha)
            model.layers[i] = blk
        with _InputRanges(model, only=["output"]) as ranges:
            model.head(x)
        ranges.convert(model, alpha)  # a tied head gets its own int8 copy; lookups keep the file's rows
        return model

    def setup_cache(self, max_seq_len: int) -> None:
        """Allocate (or re-allocate) KV caches for ``max_seq_len`` positions; forgets past positions."""
        max_seq_len = max(max_seq_len, getattr(self, "static_cache_len", 0))
        if max_seq_len > self.args.context_length:
            raise ContextOverflowError(f"{max_seq_len} positions exceed the model's context of {self.args.context_length}")
        a = self.args
        kv_heads = [blk.attention.n_kv_head if isinstance(blk, TransformerBlock) else a.n_kv_head for blk in self.layers]
        self.caches = [KVCache(max_seq_len, h, a.head_dim) for h in kv_heads]
        for blk, cache in zip(self.layers, self.caches):
            if isinstance(blk, TransformerBlock):
                blk.attention.kv_cache = cache
        self.rope = rope_tables(a.head_dim, a.rope_base, max_seq_len, self.rope_freq_factors)
        self.max_seq_len = max_seq_len

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok_embeddings.dequantize_rows(tokens).unsqueeze(0)

    def forward_layers(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Run every block over hidden states x [1, T, dim] at positions start..start+T-1."""
        t = x.shape[1]
        if start + t > self.max_seq_len:
            raise ContextOverflowError(f"position {start + t} exceeds the KV cache of {self.max_seq_len} "
                                       f"(model context {self.args.context_length})")
        rope = self.rope[start:start + t]
        for i, blk in enumerate(self.layers):
            if self.layer_source is not None:
                blk = self.layer_source(i)
                blk.attention.kv_cache = self.caches[i]
            x = blk(x, rope, start)
            if self.layer_done is not None:
                blk = None  # a streamed block is released before the next one is awaited
                self.layer_done(i)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(x))

    def decode_static(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits after one token at position ``pos`` (a 0-d tensor): shapes never change with the
        position, so ``torch.compile`` traces it once (gpt-fast's decode_one_token)."""
        x = self.embed(token)
        rope = self.rope.index_select(0, pos.view(1))  # a 0-d index would read the position's value
        for blk in self.layers:
            x = blk(x, rope, pos)
        return self.head(x)[0, -1]

    def compile_decode(self, cache_len: int = 1024) -> None:
        """Decode through ``torch.compile`` (Inductor fuses the dequantising matmuls' elementwise
        work). The first token pays the compilation (about 90 s for SmolLM2 on 2 cores); the
        KV cache is fixed at ``cache_len`` positions so that the graph never recompiles."""
        if self.layer_source is not None:
            raise UnsupportedModelError("torch.compile decoding needs resident layers (not --max-memory)")
        if any(isinstance(m, W8A8Weight) for m in self.modules()):
            # FBGEMM's packed weights are opaque to the tracer; w8a8 is the fast eager path already.
            raise UnsupportedModelError("torch.compile decoding does not take w8a8 weights; use --mode w8a8 "
                                        "without --compile, or --compile with gguf/float/int8/int4")
        self.static_cache_len = min(cache_len, self.args.context_length)
        self.decode_fn = torch.compile(self.decode_static, dynamic=False, fullgraph=True)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, start_pos: int = 0, last_only: bool = True) -> torch.Tensor:
        x = self.forward_layers(self.embed(tokens), start_pos)
        if last_only:
            x = x[:, -1:]
        return self.head(x)[0]

    @property
    def nbytes(self) -> int:
        """Bytes of weights held in memory (tied weights counted once; KV caches excluded)."""
        return held_bytes(self)
