"""Plain-PyTorch implementations of every kernel op: the CPU kernels, and the references the
Triton kernels are tested against.

Layouts (the same for the Triton kernels):

* prefill attention: q ``[B, Hq, Tq, D]``, k/v ``[B, Hkv, Tk, D]``, out like q. ``causal`` is
  aligned bottom-right (FlashAttention-2 ≥ 2.1): query i sits at position ``Tk - Tq + i``, so a
  chunk of prompt after ``Tk - Tq`` cached positions sees all of them; ``Tq == Tk`` is the
  usual lower triangle.
* decode attention: q ``[B, Hq, D]`` (one new token), contiguous cache ``[B, Hkv, S, D]`` or
  paged cache ``[num_pages, page_size, Hkv, D]`` with ``block_table [B, pages_per_seq]``;
  ``cache_seqlens [B]`` (int32) says how many positions of each sequence are valid.
* low-bit weights ``[N, K]`` (``K`` input features): int8 per output channel (``q [N, K]``,
  ``scale [N]``) or in blocks (``q [N, K/g, g]``, ``scale [N, K/g]``: GGUF Q8_0 is g = 32);
  4-bit groups (``qs [N, K/g, g/2]`` uint8, GGUF nibble order: byte j holds weight j in its
  low nibble and weight j + g/2 in its high one; value ``scale * (q - offset) + zero``:
  GGUF Q4_0 is offset 8 and no zero, Q4_1 and Ark's int4 are offset 0 with a zero).

The low-bit matmuls dequantise a few MB of rows at a time (``CHUNK_ELEMENTS``) so that a large
weight is never float all at once, and the 4-bit one multiplies the two nibble planes by the
matching halves of x without interleaving them (see :func:`q4_matmul`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows are dequantised this many weights at a time: big enough to amortise Python overhead,
# small enough to stay in the L2 cache of a small CPU.
CHUNK_ELEMENTS = 1 << 21
# int8 rows go half as many at a time: in isolation, a 2^21-weight float32 chunk (8 MB) made
# SmolLM2's 49152 x 576 Q8_0 head GEMV take 18-27 ms on one EPYC core and 2^20 took 8-9 ms,
# with bit-identical outputs. In whole-model runs the int8 mode's decode gained (about 11 ->
# 16 tok/s), the gguf mode's change stayed within this shared machine's noise. The 4-bit
# matmul measured fastest at 2^21 (the fused FFN weight fits one chunk), so it keeps that.
INT8_CHUNK_ELEMENTS = 1 << 20


def limit_scratch(elements: int) -> None:
    """Dequantise at most ``elements`` weights at a time from now on, in this process.

    A memory-capped LLM calls it with 2^18. In development runs against the 2^21 default it
    lowered peak RSS by ~60 MiB on a synthetic 4-layer model with 2048-wide layers under a
    64 MB budget and by ~11 MiB on SmolLM2 under 40 MB, without slowing decode; resident
    SmolLM2 decoded within noise at either size."""
    global CHUNK_ELEMENTS, INT8_CHUNK_ELEMENTS
    CHUNK_ELEMENTS = min(CHUNK_ELEMENTS, elements)
    INT8_CHUNK_ELEMENTS = min(INT8_CHUNK_ELEMENTS, elements)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale) v per head, with grouped-query heads and bottom-right causal masking."""
    tq, tk = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if not causal or tq == tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    pos = torch.arange(tk - tq, tk, device=q.device).unsqueeze(1)
    mask = torch.arange(tk, device=q.device).unsqueeze(0) <= pos
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     cache_seqlens: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """One query token per sequence against a contiguous cache; positions ≥ ``cache_seqlens`` are ignored."""
    qq = q.unsqueeze(2)
    gqa = q.shape[1] != k_cache.shape[1]
    if cache_seqlens is None:
        y = F.scaled_dot_product_attention(qq, k_cache, v_cache, scale=scale, enable_gqa=gqa)
    else:
        s = k_cache.shape[2]
        mask = (torch.arange(s, device=q.device).unsqueeze(0) < cache_seqlens.unsqueeze(1)).view(q.shape[0], 1, 1, s)
        y = F.scaled_dot_product_attention(qq, k_cache, v_cache, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return y.squeeze(2)


def gather_pages(pages: torch.Tensor, block_table: torch.Tensor) -> torch.Tensor:
    """A paged cache ``[P, page, H, D]`` as contiguous ``[B, H, pages_per_seq * page, D]`` in table order."""
    b, n = block_table.shape
    _, page, h, d = pages.shape
    return pages[block_table.long()].reshape(b, n * page, h, d).transpose(1, 2)


def paged_decode_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_table: torch.Tensor,
                           cache_seqlens: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Decode attention over a paged cache: gather each sequence's pages, then :func:`decode_attention`."""
    return decode_attention(q, gather_pages(k_pages, block_table), gather_pages(v_pages, block_table),
                            cache_seqlens, scale)


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 ``[N, K]`` of an int8 weight, per channel (``scale [N]``) or in blocks (``scale [N, K/g]``)."""
    return (q.to(torch.float32) * scale.to(torch.float32).unsqueeze(-1)).reshape(q.shape[0], -1)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """GGUF Q4 order: weights 0..g/2-1 are the low nibbles of a group's bytes, weights g/2..g-1 the high ones."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def dequantize_q4(qs: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, offset: float) -> torch.Tensor:
    """float32 ``[N, K]`` of a 4-bit group-wise weight: ``scale * (q - offset) + zero``."""
    q = _nibbles(qs).to(torch.float32)
    if offset:
        q = q - offset
    w = q * scale.to(torch.float32).unsqueeze(-1)
    if zero is not None:
        w = w + zero.to(torch.float32).unsqueeze(-1)
    return w.reshape(q.shape[0], -1)


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x ``[M, K]`` @ Wᵀ for an int8 weight, dequantising ``INT8_CHUNK_ELEMENTS`` weights at a time."""
    n, k = q.shape[0], x.shape[1]
    x32 = x.to(torch.float32)
    step = max(1, INT8_CHUNK_ELEMENTS // k)
    if step >= n:
        return (x32 @ dequantize_int8(q, scale).t()).to(x.dtype)
    out = x32.new_empty(x.shape[0], n)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        out[:, r0:r1] = x32 @ dequantize_int8(q[r0:r1], scale[r0:r1]).t()
    return out.to(x.dtype)


def split_halves(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> ([2, M, K/2]: the first and second half of every group, matching the nibble
    planes; [M, K/group]: each group's sum, which the per-group constant multiplies)."""
    m = x.shape[0]
    g = x.view(m, -1, 2, group // 2)
    halves = g.permute(2, 0, 1, 3).reshape(2, m, -1)
    sums = g.sum(dim=(2, 3))
    return halves, sums


def _q4_rows(halves: torch.Tensor, sums: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None,
             offset: float) -> torch.Tensor:
    """x @ W.T for rows of 4-bit groups with W = d * (q - offset) + m, without assembling W.

    The low and high nibble planes are scaled separately (no concatenation) and multiplied
    by the matching halves of x; the per-group constant (m - offset * d) multiplies the
    group sums of x in one small matmul instead of being added to every weight.
    """
    n = qs.shape[0]
    if halves.shape[1] == 1 and torch.compiler.is_compiling():
        return _q4_matvec_fused(halves, sums, qs, d, m, offset)
    d32 = d.to(torch.float32)
    d3 = d32.unsqueeze(-1)
    const = m.to(torch.float32) if m is not None else None
    if offset:
        const = -offset * d32 if const is None else const - offset * d32
    out = sums @ const.t() if const is not None else None
    for plane, xp in ((qs & 0x0F, halves[0]), (qs >> 4, halves[1])):
        w = plane.to(torch.float32).mul_(d3).view(n, -1)
        out = xp @ w.t() if out is None else out.addmm_(xp, w.t())
    assert out is not None
    return out


def _q4_matvec_fused(halves: torch.Tensor, sums: torch.Tensor, qs: torch.Tensor, d: torch.Tensor,
                     m: torch.Tensor | None, offset: float) -> torch.Tensor:
    """One token's x @ W.T written as a reduction, for torch.compile: Inductor turns it into one
    loop over the 4-bit bytes that never materialises W in float."""
    n, nb, half = qs.shape
    xl = halves[0].view(1, nb, half)
    xh = halves[1].view(1, nb, half)
    dots = ((qs & 0x0F).to(torch.float32) * xl).sum(-1) + ((qs >> 4).to(torch.float32) * xh).sum(-1)  # [n, nb]
    const = m.to(torch.float32) if m is not None else torch.zeros_like(d, dtype=torch.float32)
    if offset:
        const = const - offset * d.to(torch.float32)
    return ((dots * d.to(torch.float32)).sum(-1) + (const * sums.view(1, nb)).sum(-1)).view(1, n)


def q4_matmul(x: torch.Tensor, qs: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
              offset: float) -> torch.Tensor:
    """x ``[M, K]`` @ Wᵀ for a 4-bit group-wise weight, ``CHUNK_ELEMENTS`` weights at a time."""
    n, k = qs.shape[0], x.shape[1]
    group = 2 * qs.shape[2]
    halves, sums = split_halves(x.to(torch.float32), group)
    step = max(1, CHUNK_ELEMENTS // k)
    if step >= n:
        return _q4_rows(halves, sums, qs, scale, zero, offset).to(x.dtype)
    out = halves.new_empty(x.shape[0], n)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        out[:, r0:r1] = _q4_rows(halves, sums, qs[r0:r1], scale[r0:r1], None if zero is None else zero[r0:r1], offset)
    return out.to(x.dtype)
