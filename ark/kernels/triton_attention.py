"""Prefill attention forward in Triton (FlashAttention-2 style), the CUDA kernel of ``ark::attention``.

One program owns ``BLOCK_M`` query rows of one (batch, query head) and streams the keys and
values of its KV head in ``BLOCK_N`` blocks, keeping the running row maximum, the running
denominator and the output accumulator in fp32 registers (online softmax in base 2: the scale
is folded with log2(e) so every exponential is one ``exp2``). Grouped-query attention costs
nothing extra: query head h reads KV head ``h // (Hq / Hkv)``. Causal masking is aligned
bottom-right; the key loop is split into the blocks wholly visible to every row (no mask) and
the blocks on the diagonal (masked), so most blocks pay for no mask at all.

Importing this module needs Triton; :mod:`ark.kernels.ops` imports it only when a CUDA
tensor reaches the op. Under ``TRITON_INTERPRET=1`` the same launcher runs on CPU tensors
(the tests do that); bf16 operands are then widened to fp32 before ``tl.dot`` because the
interpreter has no bf16 arithmetic (a bf16 product is exact in fp32, so the result is the same).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ark.kernels.triton_bf16 import round_to

LOG2E = 1.4426950408889634


@triton.jit
def online_softmax_step(s, v, m_i, l_i, acc, UPCAST: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """Fold one block of keys into the running row max ``m_i``, sum ``l_i`` and output ``acc``
    of FlashAttention's online softmax; ``s`` holds the block's masked scores in log2 units.
    Shared by the prefill and the split-KV decode kernels."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row that has seen no visible key yet keeps m = -inf; subtracting 0 instead avoids inf - inf.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    p = round_to(p, v.dtype, EMULATE_BF16)
    if UPCAST:
        p = p.to(tl.float32)
        v = v.to(tl.float32)
    return tl.dot(p, v, acc), l_i, m_new


@triton.jit
def _attn_block(acc, l_i, m_i, q, qk_scale, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, lo, hi, n_keys, diag,
                BLOCK_N: tl.constexpr, MASKED: tl.constexpr, EVEN_N: tl.constexpr, UPCAST: tl.constexpr,
                EMULATE_BF16: tl.constexpr):
    """Fold key blocks [lo, hi) into the running (acc, l_i, m_i); ``diag`` = Tk - Tq for the causal mask."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[None, :] * stride_kn + offs_d[:, None]
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :]
        if EVEN_N:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            k = tl.load(k_ptrs, mask=offs_n[None, :] < n_keys, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < n_keys, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, k) * qk_scale  # scale * log2(e), applied in fp32
        if MASKED:
            keep = (offs_n[None, :] <= offs_m[:, None] + diag) & (offs_n[None, :] < n_keys)
            s = tl.where(keep, s, float("-inf"))
        elif not EVEN_N:
            s = tl.where(offs_n[None, :] < n_keys, s, float("-inf"))
        acc, l_i, m_i = online_softmax_step(s, v, m_i, l_i, acc, UPCAST, EMULATE_BF16)
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, sm_scale,
              stride_qb, stride_qh, stride_qm,
              stride_kb, stride_kh, stride_kn,
              stride_vb, stride_vh, stride_vn,
              stride_ob, stride_oh, stride_om,
              n_q_heads, group, n_queries, n_keys,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr, EVEN_N: tl.constexpr, UPCAST: tl.constexpr,
              EMULATE_BF16: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_q_heads
    h = bh % n_q_heads
    kvh = h // group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=offs_m[:, None] < n_queries, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    # The scale is applied to the fp32 scores rather than folded into q: rounding a scaled q back
    # to fp16 would add an error of its own.
    qk_scale = sm_scale * 1.4426950408889634
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        diag = n_keys - n_queries
        # Keys < full_hi are visible to every row of this block; keys up to hi to some of them.
        full_hi = tl.maximum(start_m * BLOCK_M + diag + 1, 0)
        full_hi = (full_hi // BLOCK_N) * BLOCK_N
        full_hi = tl.minimum(full_hi, (n_keys // BLOCK_N) * BLOCK_N)
        hi = tl.minimum((start_m + 1) * BLOCK_M + diag, n_keys)
        acc, l_i, m_i = _attn_block(acc, l_i, m_i, q, qk_scale, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
                                    0, full_hi, n_keys, diag, BLOCK_N, False, True, UPCAST, EMULATE_BF16)
        acc, l_i, m_i = _attn_block(acc, l_i, m_i, q, qk_scale, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
                                    full_hi, hi, n_keys, diag, BLOCK_N, True, False, UPCAST, EMULATE_BF16)
    else:
        acc, l_i, m_i = _attn_block(acc, l_i, m_i, q, qk_scale, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
                                    0, n_keys, n_keys, 0, BLOCK_N, False, EVEN_N, UPCAST, EMULATE_BF16)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, round_to(out, O.dtype.element_ty, EMULATE_BF16), mask=offs_m[:, None] < n_queries)


def _blocks(head_dim: int, n_queries: int, on_gpu: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): FlashAttention-2's usual tiles on a GPU, small ones
    under the interpreter (whose cost grows with tile size, not with the number of programs)."""
    if not on_gpu:
        return 16, 16, 4, 1
    if head_dim <= 64:
        return (128, 64, 4, 3) if n_queries > 64 else (64, 64, 4, 3)
    return (128, 64, 8, 3) if n_queries > 64 else (64, 64, 4, 2)


def attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                  scale: float | None = None) -> torch.Tensor:
    """Launch the kernel; arguments as :func:`ark.kernels.reference.attention` (checked by the caller)."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    # The kernel assumes unit stride along the head dimension.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    sm_scale = scale if scale is not None else d ** -0.5
    on_gpu = q.device.type == "cuda"
    block_m, block_n, warps, stages = _blocks(d, tq, on_gpu)
    grid = (triton.cdiv(tq, block_m), b * hq)
    _attn_fwd[grid](
        q, k, v, o, sm_scale,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        hq, hq // hkv, tq, tk,
        HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal, EVEN_N=tk % block_n == 0,
        UPCAST=(q.dtype == torch.bfloat16 or q.dtype == torch.float32) and not on_gpu,
        EMULATE_BF16=q.dtype == torch.bfloat16 and not on_gpu,
        num_warps=warps, num_stages=stages,
    )
    return o
