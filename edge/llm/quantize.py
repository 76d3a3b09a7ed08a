"""Weights kept in low-bit form in memory, with matmuls that dequantise on the fly.

Every weight is a small ``nn.Module`` with the same three members:

    w(x)                     x @ W.T, dequantising W block by block (a few MB at a time)
    w.dequantize_rows(rows)  float32 rows of W (a slice or a LongTensor; embeddings use it)
    w.nbytes                 bytes held in memory

Formats (``K`` = input features):

========== ============================== ==================================================
class      bytes per 32 weights            value
========== ============================== ==================================================
Float      128 (float32)                   w
Q8_0       34  (fp16 d, 32 x int8 q)       d * q                          (GGUF block)
Q4_0       18  (fp16 d, 16 bytes of nibbles) d * (q - 8)                  (GGUF block)
Q4_1       20  (fp16 d, fp16 m, nibbles)   d * q + m                      (GGUF block)
Int8       32 + 4/K per row (int8, fp32 s) s_row * q        per-channel, from float
Int8BF16   32 + 2/K per row (int8, bf16 s) s_row * q        per-channel, bf16 activations
W8A8       32 + 16/K per row (packed int8)  s_row * q        per-channel, int8 activations
Int4       16 + 4 per group (fp16 s, z)    s_g * q + z_g    group-wise, from float
========== ============================== ==================================================

GGUF blocks are read straight from the file (``from_gguf``); ``quantize_weight`` turns any
weight into float, int8 (fp32 or bf16 activations) or 4-bit. The dequantising matmuls are the ``ark.kernels`` ops
(``int8_matmul`` for Q8_0 and int8, ``q4_matmul`` for Q4_0, Q4_1 and int4), which take the
buffers below as they are: Triton kernels on a GPU, and on a CPU plain PyTorch that
dequantises only one chunk of rows at a time.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ark import kernels
from edge.llm.errors import UnsupportedQuantError
from edge.llm.memory import empty_bytes

# Rows are dequantised (and re-quantised by quantize_weight) this many weights at a time: big
# enough to amortise Python overhead, small enough to stay in the L2 cache of a small CPU.
CHUNK_ELEMENTS = 1 << 21

MODES = ("gguf", "float", "int8", "int4", "int8bf16", "w8a8")


class QuantWeight(nn.Module):
    """Base class: a [out_features, in_features] weight whose rows are dequantised on demand."""

    out_features: int
    in_features: int

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:
        """The whole weight as float32 (for reference paths and re-quantisation)."""
        return self.dequantize_rows(slice(0, self.out_features))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] @ W.T. The formats override this with an ``ark.kernels`` op; this generic
        route dequantises CHUNK_ELEMENTS weights at a time."""
        n, k = self.out_features, self.in_features
        step = max(1, CHUNK_ELEMENTS // k)
        out = x.new_empty(x.shape[0], n)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            out[:, r0:r1] = x @ self.dequantize_rows(slice(r0, r1)).t()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x.reshape(-1, self.in_features)).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}"


class FloatWeight(QuantWeight):
    """A float32 weight: the reference path."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.to(torch.float32).contiguous())

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        return self.weight[rows]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class GGUFBlockWeight(QuantWeight):
    """A GGUF block type read straight from the file's bytes and kept at the file's size.

    The blocks are split once into contiguous planes (fp16 scales [rows, blocks], quants
    [rows, blocks, ...]): strided views into the interleaved blocks would save that copy but
    make every dequantisation several times slower.
    """

    ggml_type = ""
    block_bytes = 0

    def __init__(self, raw: np.ndarray, shape: tuple[int, int]) -> None:
        super().__init__()
        self.out_features, self.in_features = shape
        self._raw = np.ascontiguousarray(raw).reshape(shape[0], -1, self.block_bytes)
        self.register_buffer("d", self._plane(0, 2).view(torch.float16)[..., 0])

    def _plane(self, start: int, stop: int) -> torch.Tensor:
        src = self._raw[..., start:stop]
        dst = empty_bytes(src.size).reshape(src.shape)
        np.copyto(dst, src)
        return torch.from_numpy(dst)


class Q8_0Weight(GGUFBlockWeight):
    """GGUF Q8_0: blocks of 32 int8 with one fp16 scale."""

    ggml_type, block_bytes = "Q8_0", 34

    def __init__(self, raw: np.ndarray, shape: tuple[int, int]) -> None:
        super().__init__(raw, shape)
        self.register_buffer("qs", self._plane(2, 34).view(torch.int8))
        del self._raw

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        q = self.qs[rows]
        return (q.to(torch.float32) * self.d[rows].to(torch.float32).unsqueeze(-1)).reshape(q.shape[0], -1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.int8_matmul(x, self.qs, self.d)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """GGUF Q4 order: weights 0..15 are the low nibbles of bytes 0..15, weights 16..31 the high ones."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


class Q4_0Weight(GGUFBlockWeight):
    """GGUF Q4_0: blocks of 32 unsigned nibbles with one fp16 scale; value d * (q - 8)."""

    ggml_type, block_bytes = "Q4_0", 18

    def __init__(self, raw: np.ndarray, shape: tuple[int, int]) -> None:
        super().__init__(raw, shape)
        self.register_buffer("qs", self._plane(2, 18))
        del self._raw

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        q = _nibbles(self.qs[rows]).to(torch.float32) - 8.0
        return (q * self.d[rows].to(torch.float32).unsqueeze(-1)).reshape(q.shape[0], -1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.q4_matmul(x, self.qs, self.d, None, 8.0)


class Q4_1Weight(GGUFBlockWeight):
    """GGUF Q4_1: blocks of 32 unsigned nibbles with fp16 scale d and minimum m; value d * q + m."""

    ggml_type, block_bytes = "Q4_1", 20

    def __init__(self, raw: np.ndarray, shape: tuple[int, int]) -> None:
        super().__init__(raw, shape)
        self.register_buffer("m", self._plane(2, 4).view(torch.float16)[..., 0])
        self.register_buffer("qs", self._plane(4, 20))
        del self._raw

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        q = _nibbles(self.qs[rows]).to(torch.float32)
        d = self.d[rows].to(torch.float32).unsqueeze(-1)
        m = self.m[rows].to(torch.float32).unsqueeze(-1)
        return (q * d + m).reshape(q.shape[0], -1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.q4_matmul(x, self.qs, self.d, self.m, 0.0)


class Int8Weight(QuantWeight):
    """Symmetric int8 with one float32 scale per output channel (row)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.register_buffer("q", q.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.to(torch.float32).contiguous())

    @classmethod
    def from_float(cls, w: torch.Tensor) -> "Int8Weight":
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp(-127, 127)
        return cls(q, scale)

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        return self.q[rows].to(torch.float32) * self.scale[rows].unsqueeze(-1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.int8_matmul(x, self.q, self.scale)


class Int8BF16Weight(QuantWeight):
    """Symmetric int8 per output channel with a bfloat16 scale, multiplied with bfloat16 activations.

    The fast CPU decode format (lossy twice over: 8-bit weights, and activations rounded to
    bf16 at each matmul's input, accumulation in fp32). One-token decode is memory-bound, and
    ``aten._weight_int8pack_mm`` (an AVX-512 bf16/VNNI kernel in PyTorch's CPU build) reads the
    int8 bytes directly: about 4x less traffic than float32 and no float copy of W per token,
    where the block formats dequantise every weight on every token. That kernel only takes
    per-channel scales, hence this layout rather than GGUF's 32-wide blocks.
    """

    # Above this many rows of x (a prompt chunk), _weight_int8pack_mm is slower than
    # dequantising a chunk of rows to bf16 and using the bf16 GEMM (measured on AVX-512 bf16:
    # 7.2 ms vs 3.5 ms for a 128 x 576 x 3072 product; 0.19 vs 1.5 ms for one row).
    GEMV_MAX_ROWS = 16

    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.register_buffer("q", q.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.to(torch.bfloat16).contiguous())

    @classmethod
    def from_float(cls, w: torch.Tensor) -> "Int8BF16Weight":
        # Round the scale to bf16 first and quantise against that rounded scale, so q * scale
        # is the best int8 grid for the scale the kernel actually uses.
        scale = (w.abs().amax(dim=1).clamp(min=1e-12) / 127.0).to(torch.bfloat16).to(torch.float32)
        q = torch.round(w / scale[:, None]).clamp(-127, 127)
        return cls(q, scale)

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        return self.q[rows].to(torch.float32) * self.scale[rows].to(torch.float32).unsqueeze(-1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # the bf16 int8 kernel is a CPU one; elsewhere the int8 op serves
            return kernels.int8_matmul(x, self.q, self.scale.to(torch.float32))
        xb = x.to(torch.bfloat16)
        if x.shape[0] <= self.GEMV_MAX_ROWS:
            return torch.ops.aten._weight_int8pack_mm(xb, self.q, self.scale).to(x.dtype)
        n = self.out_features
        step = max(1, CHUNK_ELEMENTS // self.in_features)
        out = x.new_empty(x.shape[0], n)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            w = self.q[r0:r1].to(torch.bfloat16) * self.scale[r0:r1].unsqueeze(-1)
            out[:, r0:r1] = xb @ w.t()
        return out


class W8A8Weight(QuantWeight):
    """Int8 weights per output channel times int8 activations quantised per token on the fly.

    The fastest CPU decode here: FBGEMM's dynamic quantised linear (``quantized::linear_dynamic``,
    PyTorch's x86 int8 GEMM with VNNI) reads the packed int8 weights once and does integer dot
    products, which is what llama.cpp does too (it rounds activations to 8 bits per 32-block).
    Measured for SmolLM2-135M's 121 weight matrices on one core, out of cache: 8 ms a token,
    against 18 ms for ``_weight_int8pack_mm`` with bf16 activations and ~60 ms for dequantising
    GGUF blocks.

    One activation scale per token is crushed by LLMs' outlier channels, so the weight may carry
    SmoothQuant factors (Xiao et al. 2023): ``from_float(w, act_absmax)`` moves part of each
    input channel's range from the activations into the weight's column (W diag(s), x / s with
    s = amax(|x|)^a / amax(|W|)^(1-a)); ``Transformer.from_gguf(mode="w8a8")`` measures
    ``act_absmax`` on a short built-in calibration text.

    The weights live in FBGEMM's packed form (an opaque object, not a buffer): ``nbytes`` counts
    them, ``dequantize_rows`` unpacks (slow: for load-time fusion and checks only), and the
    module is CPU-only. Needs a PyTorch build whose quantised engine is x86/FBGEMM.
    """

    row_access = False  # dequantize_rows unpacks the whole matrix: no embedding lookups from it

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, inv_smooth: torch.Tensor | None = None) -> None:
        super().__init__()
        engines = torch.backends.quantized.supported_engines
        if not {"x86", "fbgemm"} & set(engines):
            raise UnsupportedQuantError(f"w8a8 needs PyTorch's x86/FBGEMM quantised engine; this build has {engines}")
        self.out_features, self.in_features = q.shape
        with warnings.catch_warnings():  # quantised tensors are deprecated in favour of torchao, not gone in the pinned torch
            warnings.simplefilter("ignore")
            wq = torch._make_per_channel_quantized_tensor(q.to(torch.int8).contiguous(), scale.to(torch.float64),
                                                          torch.zeros(q.shape[0], dtype=torch.int64), 0)
            self._packed = torch.ops.quantized.linear_prepack(wq, None)
        self.inv_smooth = None if inv_smooth is None else inv_smooth.to(torch.float32).contiguous()
        # Packed int8 weights, plus FBGEMM's per-row scale, zero point and column offset.
        self._nbytes = q.numel() + 16 * q.shape[0] + (0 if inv_smooth is None else 4 * q.shape[1])

    @classmethod
    def from_float(cls, w: torch.Tensor, act_absmax: torch.Tensor | None = None, alpha: float = 0.5) -> "W8A8Weight":
        """Quantise ``w``; with ``act_absmax`` (per input channel, from calibration) smooth first."""
        return cls.from_weight(FloatWeight(w), act_absmax, alpha)

    @classmethod
    def from_weight(cls, w: QuantWeight, act_absmax: torch.Tensor | None = None, alpha: float = 0.5) -> "W8A8Weight":
        """``from_float(w.dequantize(), ...)`` a few MB of rows at a time (a float copy of SmolLM2's
        head alone would be 113 MB, and its temporaries several times that)."""
        n, k = w.out_features, w.in_features
        step = max(1, CHUNK_ELEMENTS // k)
        chunks = [slice(r, min(r + step, n)) for r in range(0, n, step)]
        s = None
        if act_absmax is not None:
            w_absmax = torch.stack([w.dequantize_rows(c).abs().amax(dim=0) for c in chunks]).amax(dim=0)
            s = act_absmax.clamp(min=1e-5) ** alpha / w_absmax.clamp(min=1e-5) ** (1 - alpha)
        q, scale = torch.empty(n, k, dtype=torch.int8), torch.empty(n)
        for c in chunks:
            rows = w.dequantize_rows(c) if s is None else w.dequantize_rows(c) * s
            scale[c] = rows.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            q[c] = torch.round(rows / scale[c, None]).clamp(-127, 127)
        return cls(q, scale, None if s is None else 1.0 / s)

    @classmethod
    def fuse(cls, weights: list["W8A8Weight"]) -> "QuantWeight":
        if any(w.inv_smooth is not None for w in weights):
            return StackedWeight(list(weights))  # each has its own smoothing of the shared input
        parts = [w._unpack() for w in weights]
        return cls(torch.cat([q for q, _ in parts]), torch.cat([s for _, s in parts]))

    def _unpack(self) -> tuple[torch.Tensor, torch.Tensor]:
        wq, _ = torch.ops.quantized.linear_unpack(self._packed)
        return wq.int_repr(), wq.q_per_channel_scales().to(torch.float32)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        q, scale = self._unpack()
        w = q[rows].to(torch.float32) * scale[rows].unsqueeze(-1)
        return w if self.inv_smooth is None else w * self.inv_smooth

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise UnsupportedQuantError("w8a8 weights are FBGEMM's CPU format; use int8 or gguf on a GPU")
        x = x.to(torch.float32)
        x = x * self.inv_smooth if self.inv_smooth is not None else x.contiguous()
        # reduce_range keeps AVX2's 16-bit intermediate sums from saturating (7-bit activations)
        # on CPUs without VNNI; with VNNI the full 8 bits are safe.
        if x.shape[0] == 1:
            return torch.ops.quantized.linear_dynamic(x, self._packed, not _cpu_has_vnni())
        # FBGEMM picks one activation scale for the whole [M, K] input; scaling every row to the
        # same range first makes that one scale per token, as in decode (W (x / a) a = W x).
        a = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        return torch.ops.quantized.linear_dynamic(x / a, self._packed, not _cpu_has_vnni()) * a


@functools.lru_cache(maxsize=None)
def _cpu_has_vnni() -> bool:
    """Whether FBGEMM's int8 kernels take full 8-bit activations without 16-bit saturation
    (read once, at the first w8a8 matmul)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False  # unknown: 7-bit activations are safe on every x86 CPU
    return "avx512_vnni" in flags or "avx_vnni" in flags


class Int4Weight(QuantWeight):
    """Asymmetric 4-bit, group-wise along the input dimension: value s_g * q + z_g, two weights a byte.

    Packed like GGUF's Q4 blocks: byte j of a group holds weight j (low nibble) and weight
    j + group_size/2 (high nibble), so the same ``q4_matmul`` op serves both.
    """

    def __init__(self, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> None:
        super().__init__()
        self.out_features = packed.shape[0]
        self.in_features = packed.shape[1] * packed.shape[2] * 2
        self.group_size = group_size
        self.register_buffer("packed", packed.contiguous())  # [N, K/g, g/2] uint8
        self.register_buffer("scale", scale.to(torch.float16).contiguous())  # [N, K/g]
        self.register_buffer("zero", zero.to(torch.float16).contiguous())

    @classmethod
    def from_float(cls, w: torch.Tensor, group_size: int = 32) -> "Int4Weight":
        n, k = w.shape
        if k % group_size or group_size % 2:
            raise UnsupportedQuantError(f"int4: in_features {k} is not a multiple of group size {group_size}")
        g = w.to(torch.float32).reshape(n, k // group_size, group_size)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = ((hi - lo) / 15.0).to(torch.float16)
        zero = lo.to(torch.float16)
        s = scale.to(torch.float32).clamp(min=1e-8).unsqueeze(-1)
        q = torch.round((g - zero.to(torch.float32).unsqueeze(-1)) / s).clamp(0, 15).to(torch.uint8)
        half = group_size // 2
        packed = q[..., :half] | (q[..., half:] << 4)
        return cls(packed, scale, zero, group_size)

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        q = _nibbles(self.packed[rows]).to(torch.float32)
        w = q * self.scale[rows].to(torch.float32).unsqueeze(-1) + self.zero[rows].to(torch.float32).unsqueeze(-1)
        return w.reshape(q.shape[0], -1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.q4_matmul(x, self.packed, self.scale, self.zero, 0.0)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, group_size={self.group_size}"


def held_bytes(module: nn.Module) -> int:
    """Bytes of weights ``module`` holds in memory: its buffers (tied ones counted once, KV
    caches excluded) plus weights kept outside buffers (w8a8's packed form)."""
    seen, total = set(), 0
    for name, buf in module.named_buffers():
        if "kv_cache" in name or name.startswith("caches") or id(buf) in seen:
            continue
        seen.add(id(buf))
        total += buf.numel() * buf.element_size()
    for mod in module.modules():
        if getattr(mod, "row_access", True) is False and id(mod) not in seen:
            seen.add(id(mod))
            total += mod.nbytes
    return total


GGUF_WEIGHTS: dict[str, type[GGUFBlockWeight]] = {"Q8_0": Q8_0Weight, "Q4_0": Q4_0Weight, "Q4_1": Q4_1Weight}


class StackedWeight(QuantWeight):
    """Weights of different formats answering as one: their outputs side by side."""

    def __init__(self, parts: list[QuantWeight]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.out_features = sum(p.out_features for p in parts)
        self.in_features = parts[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def dequantize_rows(self, rows: slice | torch.Tensor) -> torch.Tensor:
        return torch.cat([p.dequantize() for p in self.parts])[rows]


def fuse_rows(weights: list[QuantWeight]) -> QuantWeight:
    """One weight whose rows are ``weights``' rows in order (fused QKV / gate+up: fewer, bigger matmuls).

    Weights of one class concatenate their buffers; mixed formats fall back to StackedWeight.
    """
    first = weights[0]
    same = all(type(w) is type(first) and w.in_features == first.in_features
               and getattr(w, "group_size", None) == getattr(first, "group_size", None) for w in weights)
    if len(weights) == 1:
        return first
    if same and hasattr(first, "fuse"):
        return first.fuse(weights)
    if not same or isinstance(first, StackedWeight):
        return StackedWeight(weights)
    fused = type(first).__new__(type(first))
    nn.Module.__init__(fused)
    for key, value in vars(first).items():
        if not key.startswith("_"):
            setattr(fused, key, value)
    for name in first._buffers:
        parts = [w._buffers[name] for w in weights]
        shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        nbytes = parts[0].element_size() * int(np.prod(shape))
        out = torch.from_numpy(empty_bytes(nbytes)).view(parts[0].dtype).reshape(shape)
        fused.register_buffer(name, torch.cat(parts, out=out))
    fused.out_features = sum(w.out_features for w in weights)
    return fused


def from_gguf(ggml_type: str, raw: np.ndarray, shape: tuple[int, ...]) -> QuantWeight:
    """A weight module over a tensor's bytes as read from a GGUF file (block types stay quantised)."""
    if len(shape) != 2:
        raise UnsupportedQuantError(f"expected a 2-D weight, got shape {shape}")
    if ggml_type in GGUF_WEIGHTS:
        return GGUF_WEIGHTS[ggml_type](raw, (int(shape[0]), int(shape[1])))
    return FloatWeight(float_tensor(ggml_type, raw))


def float_tensor(ggml_type: str, raw: np.ndarray) -> torch.Tensor:
    """A float32 tensor from an F32/F16/BF16 array as read from a GGUF file."""
    if ggml_type == "F32":
        return torch.from_numpy(np.array(raw, dtype=np.float32))
    if ggml_type == "F16":
        return torch.from_numpy(raw.astype(np.float32))
    if ggml_type == "BF16":
        return (torch.from_numpy(raw.astype(np.int32)) << 16).view(torch.float32)
    raise UnsupportedQuantError(f"expected a float tensor, got {ggml_type}")


def quantize_weight(w: QuantWeight, mode: str, group_size: int = 32) -> QuantWeight:
    """``w`` in another in-memory format: ``gguf`` (as read), ``float``, ``int8`` or ``int4``."""
    if mode == "gguf":
        return w
    if mode == "float":
        return w if isinstance(w, FloatWeight) else FloatWeight(w.dequantize())
    if mode in ("int8", "int4", "int8bf16", "w8a8"):
        quant = {"int8": Int8Weight.from_float, "int8bf16": Int8BF16Weight.from_float, "w8a8": W8A8Weight.from_float,
                 "int4": lambda x: Int4Weight.from_float(x, group_size)}[mode]
        # Row chunks: the float copy of a 49k-row embedding alone would be 113 MB (and its temporaries more).
        step = max(1, CHUNK_ELEMENTS // w.in_features)
        return fuse_rows([quant(w.dequantize_rows(slice(r, min(r + step, w.out_features))))
                          for r in range(0, w.out_features, step)])
    raise UnsupportedQuantError(f"unknown weight mode {mode!r}; choose one of {', '.join(MODES)}")


def gguf_slice(raw: np.ndarray, ggml_type: str, shape: tuple[int, int], rows: slice = slice(None),
               cols: slice = slice(None)) -> tuple[np.ndarray, tuple[int, int]]:
    """Cut a sub-matrix out of a GGUF tensor's bytes without dequantising (tensor parallelism).

    Column bounds must fall on block boundaries (32 for the block types).
    """
    from edge.llm.gguf_reader import SUPPORTED_TYPES

    n, k = shape
    block, nbytes = SUPPORTED_TYPES[ggml_type]
    r0, r1, _ = rows.indices(n)
    c0, c1, _ = cols.indices(k)
    if c0 % block or c1 % block:
        raise UnsupportedQuantError(f"column split {c0}:{c1} is not on {ggml_type}'s {block}-wide blocks")
    if block == 1:
        full = raw.reshape(n, k)
        return np.ascontiguousarray(full[r0:r1, c0:c1]), (r1 - r0, c1 - c0)
    b = raw.reshape(n, k // block, nbytes)
    return np.ascontiguousarray(b[r0:r1, c0 // block:c1 // block]).reshape(r1 - r0, -1), (r1 - r0, c1 - c0)
