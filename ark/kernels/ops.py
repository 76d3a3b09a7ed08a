"""The ``ark::*`` torch custom ops and the functions callers use.

Each op is registered with ``torch.library.custom_op``: its default (CPU) kernel is the plain
PyTorch code in :mod:`ark.kernels.reference`, its CUDA kernel launches the Triton kernel (or,
where Triton is not installed or a shape is outside what the kernel handles, the same PyTorch
code), and a fake kernel gives torch.compile / torch.export the output's shape.

Callers use the functions at the bottom (``attention``, ``decode_attention``, …), never the
device: they check the arguments, then route by :func:`kernel_mode`:

``auto`` (default, or ``ARK_KERNELS=auto``)
    CUDA tensors go through the custom op (Triton). CPU tensors call the plain PyTorch code
    directly: that code *is* the op's CPU kernel, and skipping the dispatcher saves about
    10 µs a call (≈ 150 calls per token of a 30-layer LLM), keeps Inductor able to fuse it
    inside ``torch.compile`` (an opaque op would not be), and leaves ONNX export and
    ``torch.jit.trace`` with ordinary aten ops.
``ops``
    Always through ``torch.ops.ark.*``, also on CPU (tests, and torch.export of graphs that
    should carry the ops); still plain ops under ONNX export / jit tracing, which cannot
    serialise a custom op.
``off``
    Never the custom ops: plain PyTorch on every device (a bypass for debugging).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from types import ModuleType
from typing import Iterator

import torch

from ark.kernels import reference
from ark.kernels.errors import KernelArgumentError

MODES = ("auto", "ops", "off")
_mode = os.environ.get("ARK_KERNELS", "auto").strip().lower() or "auto"
if _mode not in MODES:
    raise KernelArgumentError(f"ARK_KERNELS: expected one of {', '.join(MODES)}, got {_mode!r}")

ATTN_HEAD_DIMS = (16, 32, 64, 128)  # head dims the Triton attention kernels are built for
# Attention kernels take fp16/bf16 (tensor cores); fp32 attention on a GPU stays with SDPA, as in
# FlashAttention. The low-bit matmuls take fp32 activations too (with IEEE-fp32 dots).
HALF_DTYPES = (torch.float16, torch.bfloat16)


def triton_available() -> bool:
    """Whether the ``triton`` package is importable (the ``gpu`` extra)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except ValueError:  # a module set to None in sys.modules: deliberately unavailable
        return False


def kernel_mode() -> str:
    """The current routing mode: ``auto``, ``ops`` or ``off`` (see the module docstring)."""
    return _mode


def set_kernel_mode(mode: str) -> str:
    """Set the routing mode; returns the previous one."""
    global _mode
    if mode not in MODES:
        raise KernelArgumentError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    previous, _mode = _mode, mode
    return previous


@contextlib.contextmanager
def use_kernel_mode(mode: str) -> Iterator[None]:
    """``with use_kernel_mode("off"): ...`` routes calls made inside the block by ``mode``."""
    previous = set_kernel_mode(mode)
    try:
        yield
    finally:
        set_kernel_mode(previous)


def _use_op(t: torch.Tensor) -> bool:
    """Whether a call on tensors like ``t`` goes through the custom op (see the module docstring).

    Ordered cheapest first: on the CPU fast path this runs ~150 times per generated token.
    ``torch.onnx.export`` (TorchScript) traces, so ``is_tracing`` covers it; the ONNX check is for
    its other entry points.
    """
    if _mode == "off" or (_mode == "auto" and t.device.type == "cpu"):
        return False
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


@functools.cache
def _triton_module(name: str) -> ModuleType | None:
    """``ark.kernels.<name>`` when Triton is installed, else None (the CUDA ops then run PyTorch)."""
    if not triton_available():
        return None
    return importlib.import_module(f"ark.kernels.{name}")


# ----- custom ops -----------------------------------------------------------------------------

@torch.library.custom_op("ark::attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None) -> torch.Tensor:
    # contiguous: the fake kernel promises contiguous strides, and compiled graphs rely on them
    return reference.attention(q, k, v, causal, scale).contiguous()


@_attention_op.register_kernel("cuda")
def _attention_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None) -> torch.Tensor:
    mod = _triton_module("triton_attention")
    # fp32 has no tensor-core path worth a custom kernel (FlashAttention does not take it either).
    if mod is None or q.dtype not in HALF_DTYPES or q.shape[-1] not in ATTN_HEAD_DIMS:
        return reference.attention(q, k, v, causal, scale).contiguous()
    return mod.attention_fwd(q, k, v, causal, scale)


@_attention_op.register_fake
def _attention_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None) -> torch.Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("ark::decode_attention", mutates_args=())
def _decode_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor | None,
               scale: float | None) -> torch.Tensor:
    return reference.decode_attention(q, k_cache, v_cache, cache_seqlens, scale).clone()


@_decode_op.register_kernel("cuda")
def _decode_cuda(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor | None,
                 scale: float | None) -> torch.Tensor:
    mod = _triton_module("triton_decode")
    if mod is None or q.dtype not in HALF_DTYPES or q.shape[-1] not in ATTN_HEAD_DIMS:
        return reference.decode_attention(q, k_cache, v_cache, cache_seqlens, scale).clone()
    return mod.decode_attention_fwd(q, k_cache, v_cache, cache_seqlens, scale)


@_decode_op.register_fake
def _decode_fake(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor | None,
                 scale: float | None) -> torch.Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("ark::paged_decode_attention", mutates_args=())
def _paged_op(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_table: torch.Tensor,
              cache_seqlens: torch.Tensor, scale: float | None) -> torch.Tensor:
    return reference.paged_decode_attention(q, k_pages, v_pages, block_table, cache_seqlens, scale).clone()


@_paged_op.register_kernel("cuda")
def _paged_cuda(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_table: torch.Tensor,
                cache_seqlens: torch.Tensor, scale: float | None) -> torch.Tensor:
    mod = _triton_module("triton_decode")
    if mod is None or q.dtype not in HALF_DTYPES or q.shape[-1] not in ATTN_HEAD_DIMS:
        return reference.paged_decode_attention(q, k_pages, v_pages, block_table, cache_seqlens, scale).clone()
    return mod.paged_decode_attention_fwd(q, k_pages, v_pages, block_table, cache_seqlens, scale)


@_paged_op.register_fake
def _paged_fake(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_table: torch.Tensor,
                cache_seqlens: torch.Tensor, scale: float | None) -> torch.Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("ark::int8_matmul", mutates_args=())
def _int8_op(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return reference.int8_matmul(x, q, scale)


@_int8_op.register_kernel("cuda")
def _int8_cuda(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    mod = _triton_module("triton_lowbit")
    return reference.int8_matmul(x, q, scale) if mod is None else mod.int8_matmul_fwd(x, q, scale)


@_int8_op.register_fake
def _int8_fake(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], q.shape[0])


@torch.library.custom_op("ark::q4_matmul", mutates_args=())
def _q4_op(x: torch.Tensor, qs: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, offset: float) -> torch.Tensor:
    return reference.q4_matmul(x, qs, scale, zero, offset)


@_q4_op.register_kernel("cuda")
def _q4_cuda(x: torch.Tensor, qs: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, offset: float) -> torch.Tensor:
    mod = _triton_module("triton_lowbit")
    return reference.q4_matmul(x, qs, scale, zero, offset) if mod is None else mod.q4_matmul_fwd(x, qs, scale, zero, offset)


@_q4_op.register_fake
def _q4_fake(x: torch.Tensor, qs: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, offset: float) -> torch.Tensor:
    return x.new_empty(x.shape[0], qs.shape[0])


# ----- argument checks ------------------------------------------------------------------------

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    if q.dim() != 4:
        raise KernelArgumentError(f"q: expected [batch, heads, seq, head_dim], got shape {tuple(q.shape)}")
    if not (k.dim() == 4 and k.shape == v.shape):
        raise KernelArgumentError(f"k, v: expected equal [batch, kv_heads, seq, head_dim] shapes, "
                                  f"got {tuple(k.shape)} and {tuple(v.shape)}")
    if not (q.dtype in FLOAT_DTYPES and k.dtype == q.dtype and v.dtype == q.dtype):
        raise KernelArgumentError(f"q, k, v: expected one float dtype (float32/float16/bfloat16), got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (k.shape[0] == q.shape[0] and k.shape[3] == q.shape[3]):
        raise KernelArgumentError(f"k: batch and head_dim must match q's {tuple(q.shape)}, got {tuple(k.shape)}")
    if not (q.shape[1] % k.shape[1] == 0):
        raise KernelArgumentError(f"k: {k.shape[1]} KV heads do not divide q's {q.shape[1]} heads")
    if causal and q.shape[2] > k.shape[2]:
        raise KernelArgumentError(f"q: causal attention needs no more queries ({q.shape[2]}) than keys ({k.shape[2]})")


def _check_decode_q(q: torch.Tensor, kv_heads: int, head_dim: int, dtype: torch.dtype) -> None:
    if q.dim() != 3:
        raise KernelArgumentError(f"q: expected [batch, heads, head_dim] (one token per sequence), got shape {tuple(q.shape)}")
    if not (q.dtype in FLOAT_DTYPES and q.dtype == dtype):
        raise KernelArgumentError(f"q: expected the cache's float dtype {dtype}, got {q.dtype}")
    if q.shape[2] != head_dim:
        raise KernelArgumentError(f"q: head_dim {q.shape[2]} differs from the cache's {head_dim}")
    if not (q.shape[1] % kv_heads == 0):
        raise KernelArgumentError(f"q: {q.shape[1]} heads are not a multiple of the cache's {kv_heads} KV heads")


def _check_seqlens(cache_seqlens: torch.Tensor, batch: int) -> None:
    if not (cache_seqlens.dim() == 1 and cache_seqlens.shape[0] == batch and cache_seqlens.dtype == torch.int32):
        raise KernelArgumentError(f"cache_seqlens: expected int32 [{batch}], got {cache_seqlens.dtype} {tuple(cache_seqlens.shape)}")


def _check_matmul_x(x: torch.Tensor, k: int) -> None:
    if not (x.dim() == 2 and x.shape[1] == k):
        raise KernelArgumentError(f"x: expected [rows, {k}], got shape {tuple(x.shape)}")
    if not (x.dtype in FLOAT_DTYPES):
        raise KernelArgumentError(f"x: expected float32/float16/bfloat16, got {x.dtype}")


# ----- what callers use -----------------------------------------------------------------------

def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """Prefill attention: q ``[B, Hq, Tq, D]``, k/v ``[B, Hkv, Tk, D]`` (Hkv divides Hq) -> ``[B, Hq, Tq, D]``.

    ``causal`` masks bottom-right aligned (query i is position ``Tk - Tq + i``); ``scale``
    defaults to ``D ** -0.5``.
    """
    _check_attention(q, k, v, causal)
    if _use_op(q):
        return torch.ops.ark.attention(q, k, v, causal, scale)
    return reference.attention(q, k, v, causal, scale)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     cache_seqlens: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """One new token per sequence, q ``[B, Hq, D]``, against a cache ``[B, Hkv, S, D]`` -> ``[B, Hq, D]``.

    ``cache_seqlens`` (int32 ``[B]``) counts each sequence's valid positions; None means all S.
    """
    if not (k_cache.dim() == 4 and k_cache.shape == v_cache.shape and k_cache.dtype == v_cache.dtype):
        raise KernelArgumentError(f"k_cache, v_cache: expected equal [batch, kv_heads, seq, head_dim] caches, "
                                  f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    _check_decode_q(q, k_cache.shape[1], k_cache.shape[3], k_cache.dtype)
    if q.shape[0] != k_cache.shape[0]:
        raise KernelArgumentError(f"q: batch {q.shape[0]} differs from the cache's {k_cache.shape[0]}")
    if cache_seqlens is not None:
        _check_seqlens(cache_seqlens, q.shape[0])
    if _use_op(q):
        return torch.ops.ark.decode_attention(q, k_cache, v_cache, cache_seqlens, scale)
    return reference.decode_attention(q, k_cache, v_cache, cache_seqlens, scale)


def paged_decode_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_table: torch.Tensor,
                           cache_seqlens: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Decode attention over a paged cache ``[pages, page_size, Hkv, D]``; ``block_table`` (int32
    ``[B, pages_per_seq]``) lists each sequence's pages in order -> ``[B, Hq, D]``."""
    if not (k_pages.dim() == 4 and k_pages.shape == v_pages.shape and k_pages.dtype == v_pages.dtype):
        raise KernelArgumentError(f"k_pages, v_pages: expected equal [pages, page_size, kv_heads, head_dim] caches, "
                                  f"got {tuple(k_pages.shape)} and {tuple(v_pages.shape)}")
    _check_decode_q(q, k_pages.shape[2], k_pages.shape[3], k_pages.dtype)
    if not (block_table.dim() == 2 and block_table.shape[0] == q.shape[0] and block_table.dtype == torch.int32):
        raise KernelArgumentError(f"block_table: expected int32 [{q.shape[0]}, pages_per_seq], got {block_table.dtype} {tuple(block_table.shape)}")
    _check_seqlens(cache_seqlens, q.shape[0])
    if _use_op(q):
        return torch.ops.ark.paged_decode_attention(q, k_pages, v_pages, block_table, cache_seqlens, scale)
    return reference.paged_decode_attention(q, k_pages, v_pages, block_table, cache_seqlens, scale)


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x ``[M, K]`` @ Wᵀ for int8 W: per channel (q ``[N, K]``, scale ``[N]``) or in blocks of g
    (q ``[N, K/g, g]``, scale ``[N, K/g]``; GGUF Q8_0 is g = 32) -> ``[M, N]`` in x's dtype."""
    if not (q.dtype == torch.int8 and q.dim() in (2, 3)):
        raise KernelArgumentError(f"q: expected int8 [N, K] or [N, K/g, g], got {q.dtype} {tuple(q.shape)}")
    if not (scale.shape == q.shape[:-1]):
        raise KernelArgumentError(f"scale: expected shape {tuple(q.shape[:-1])}, got {tuple(scale.shape)}")
    k = q.shape[1] if q.dim() == 2 else q.shape[1] * q.shape[2]
    _check_matmul_x(x, k)
    if _use_op(x):
        return torch.ops.ark.int8_matmul(x, q, scale)
    return reference.int8_matmul(x, q, scale)


def q4_matmul(x: torch.Tensor, qs: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None,
              offset: float = 0.0) -> torch.Tensor:
    """x ``[M, K]`` @ Wᵀ for 4-bit groups of g weights (qs uint8 ``[N, K/g, g/2]`` in GGUF nibble
    order, scale/zero ``[N, K/g]``; W = scale * (q - offset) + zero) -> ``[M, N]`` in x's dtype.

    GGUF Q4_0 is ``offset=8`` without zero, Q4_1 and Ark's int4 are ``offset=0`` with a zero.
    """
    if qs.dtype != torch.uint8 or qs.dim() != 3:
        raise KernelArgumentError(f"qs: expected uint8 [N, K/g, g/2], got {qs.dtype} {tuple(qs.shape)}")
    groups = qs.shape[:2]
    if scale.shape != groups:
        raise KernelArgumentError(f"scale: expected shape {tuple(groups)}, got {tuple(scale.shape)}")
    if zero is not None and zero.shape != groups:
        raise KernelArgumentError(f"zero: expected shape {tuple(groups)}, got {tuple(zero.shape)}")
    _check_matmul_x(x, groups[1] * qs.shape[2] * 2)
    if _use_op(x):
        return torch.ops.ark.q4_matmul(x, qs, scale, zero, float(offset))
    return reference.q4_matmul(x, qs, scale, zero, offset)
