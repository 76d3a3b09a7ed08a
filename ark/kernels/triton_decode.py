"""Decode attention in Triton (flash-decoding): the CUDA kernels of ``ark::decode_attention`` and
``ark::paged_decode_attention``.

A decode step has one query per head, so one program per head would leave most of a GPU idle
and read the cache at a fraction of the memory bandwidth. The cache of each sequence is cut
into ``num_splits`` slices; program (split, KV head, batch) reads its slice once for all the
query heads that share the KV head (grouped-query attention, padded to 16 rows for ``tl.dot``),
and writes an unnormalised partial output with its log-sum-exp. A second, tiny kernel merges
the partials of a head: ``o = Σ exp(lse_i - lse_max) o_i / Σ exp(lse_i - lse_max)``.

The two cache layouts differ only in how a key's address is found: contiguous
``[B, Hkv, S, D]`` (row ``n`` of sequence ``b``), or paged ``[pages, page_size, Hkv, D]``
(row ``n % page_size`` of page ``block_table[b, n // page_size]``), so one kernel serves both.
Under the interpreter, bf16 operands are widened to fp32 before ``tl.dot`` (no bf16 arithmetic there).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ark.kernels.triton_attention import online_softmax_step
from ark.kernels.triton_bf16 import round_to


@triton.jit
def _decode_split(Q, K, V, SeqLens, BlockTable, PartO, PartLse, sm_scale,
                  stride_qb, stride_qh,
                  stride_kpage, stride_kh, stride_kn,
                  stride_vpage, stride_vh, stride_vn,
                  stride_btb, stride_pb, stride_ph, stride_ps,
                  group, split_len, max_len,
                  HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr,
                  PAGED: tl.constexpr, HAS_LENS: tl.constexpr, UPCAST: tl.constexpr,
                  EMULATE_BF16: tl.constexpr):
    split = tl.program_id(0)
    kvh = tl.program_id(1)
    b = tl.program_id(2)
    if HAS_LENS:
        seq_len = tl.load(SeqLens + b)
    else:
        seq_len = max_len
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    heads = kvh * group + offs_g
    g_mask = offs_g < group
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=g_mask[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    lo = split * split_len
    hi = tl.minimum(lo + split_len, seq_len)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hi
        if PAGED:
            page = tl.load(BlockTable + b * stride_btb + offs_n // PAGE, mask=n_mask, other=0).to(tl.int64)
            row = offs_n % PAGE
            k_off = page * stride_kpage + row * stride_kn
            v_off = page * stride_vpage + row * stride_vn
        else:
            k_off = b * stride_kpage + offs_n * stride_kn
            v_off = b * stride_vpage + offs_n * stride_vn
        k = tl.load(K + kvh * stride_kh + k_off[None, :] + offs_d[:, None], mask=n_mask[None, :], other=0.0)
        v = tl.load(V + kvh * stride_vh + v_off[:, None] + offs_d[None, :], mask=n_mask[:, None], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, k) * qk_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        acc, l_i, m_i = online_softmax_step(s, v, m_i, l_i, acc, UPCAST, EMULATE_BF16)
    # Normalise the partial here: the merge then needs only the log-sum-exp (base 2) of each split.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log2(l_safe))
    base = b * stride_pb + heads * stride_ph + split * stride_ps
    tl.store(PartO + base[:, None] * HEAD_DIM + offs_d[None, :], out, mask=g_mask[:, None])
    tl.store(PartLse + base, lse, mask=g_mask)


@triton.jit
def _decode_merge(PartO, PartLse, O, stride_ob, stride_oh, n_heads, num_splits,
                  HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, EMULATE_BF16: tl.constexpr):
    h = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    row = (b * n_heads + h) * num_splits
    s_mask = offs_s < num_splits
    lse = tl.load(PartLse + row + offs_s, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp2(lse - m_safe)
    parts = tl.load(PartO + (row + offs_s[:, None]) * HEAD_DIM + offs_d[None, :], mask=s_mask[:, None], other=0.0)
    total = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, round_to(out, O.dtype.element_ty, EMULATE_BF16))


def _num_splits(batch_heads: int, max_len: int, block_n: int, device: torch.device) -> int:
    """Enough splits to give every SM about two programs, no split shorter than a few key blocks."""
    if device.type != "cuda":
        return max(1, min(4, triton.cdiv(max_len, 2 * block_n)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = triton.cdiv(2 * sms, max(batch_heads, 1))
    return max(1, min(want, triton.cdiv(max_len, 4 * block_n), 64))


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_strides: tuple[int, int, int],
            v_strides: tuple[int, int, int], n_kv_heads: int, max_len: int, cache_seqlens: torch.Tensor | None,
            block_table: torch.Tensor | None, page: int, scale: float | None) -> torch.Tensor:
    b, hq, d = q.shape
    q = q if q.stride(-1) == 1 else q.contiguous()
    group = hq // n_kv_heads
    on_gpu = q.device.type == "cuda"
    block_n = 64 if on_gpu else 16
    block_g = max(16, triton.next_power_of_2(group))
    splits = _num_splits(b * n_kv_heads, max_len, block_n, q.device)
    split_len = triton.cdiv(triton.cdiv(max_len, splits), block_n) * block_n
    splits = triton.cdiv(max_len, split_len) if max_len else 1
    part_o = torch.empty(b, hq, splits, d, device=q.device, dtype=torch.float32)
    part_lse = torch.empty(b, hq, splits, device=q.device, dtype=torch.float32)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    emulate = not on_gpu and q.dtype == torch.bfloat16
    lens = cache_seqlens if cache_seqlens is not None else part_lse  # a dummy pointer when unused
    table = block_table if block_table is not None else part_lse
    sm_scale = scale if scale is not None else d ** -0.5
    _decode_split[(splits, n_kv_heads, b)](
        q, k, v, lens, table, part_o, part_lse, sm_scale,
        q.stride(0), q.stride(1), *k_strides, *v_strides,
        table.stride(0) if block_table is not None else 0, hq * splits, splits, 1,
        group, split_len, max_len,
        HEAD_DIM=d, BLOCK_G=block_g, BLOCK_N=block_n, PAGE=page, PAGED=block_table is not None,
        HAS_LENS=cache_seqlens is not None, UPCAST=not on_gpu and q.dtype != torch.float16, EMULATE_BF16=emulate,
        num_warps=4, num_stages=2 if on_gpu else 1,
    )
    _decode_merge[(hq, b)](part_o, part_lse, o, o.stride(0), o.stride(1), hq, splits,
                           HEAD_DIM=d, BLOCK_S=triton.next_power_of_2(splits), EMULATE_BF16=emulate, num_warps=4 if d > 64 else 2)
    return o


def decode_attention_fwd(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                         cache_seqlens: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Contiguous cache ``[B, Hkv, S, D]``; arguments as :func:`ark.kernels.reference.decode_attention`."""
    k_cache = k_cache if k_cache.stride(-1) == 1 else k_cache.contiguous()
    v_cache = v_cache if v_cache.stride(-1) == 1 else v_cache.contiguous()
    ks = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2))
    vs = (v_cache.stride(0), v_cache.stride(1), v_cache.stride(2))
    return _launch(q, k_cache, v_cache, ks, vs, k_cache.shape[1], k_cache.shape[2], cache_seqlens, None, 1, scale)


def paged_decode_attention_fwd(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_table: torch.Tensor,
                               cache_seqlens: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Paged cache ``[pages, page_size, Hkv, D]``; arguments as :func:`ark.kernels.reference.paged_decode_attention`."""
    k_pages = k_pages if k_pages.stride(-1) == 1 else k_pages.contiguous()
    v_pages = v_pages if v_pages.stride(-1) == 1 else v_pages.contiguous()
    ks = (k_pages.stride(0), k_pages.stride(2), k_pages.stride(1))
    vs = (v_pages.stride(0), v_pages.stride(2), v_pages.stride(1))
    max_len = block_table.shape[1] * k_pages.shape[1]
    return _launch(q, k_pages, v_pages, ks, vs, k_pages.shape[2], max_len, cache_seqlens, block_table.contiguous(),
                   k_pages.shape[1], scale)
