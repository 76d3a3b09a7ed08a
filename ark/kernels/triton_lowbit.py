"""Weight-only low-bit matmul in Triton: the CUDA kernels of ``ark::int8_matmul`` and ``ark::q4_matmul``.

``y = x @ Wᵀ`` with W kept in its packed form in GPU memory and dequantised in registers, so a
decode step reads 4 (or 8) bits per weight instead of 16. Two shapes of the problem:

* GEMV (batch ≤ 4 rows of x): memory-bound. Each program owns ``BLOCK_N`` output channels and
  one slice of K (split-K, so that even a 576-wide projection fills the GPU); it multiplies
  dequantised weights by x elementwise in fp32 and reduces. The split-K partial sums go to an
  fp32 buffer that a small second kernel adds up and casts.
* GEMM (more rows): a tiled ``tl.dot`` in the input's dtype with fp32 accumulation; each weight
  tile is dequantised once per ``BLOCK_M`` rows of x.

4-bit groups use GGUF's nibble order (byte j of a group holds weight j and weight j + g/2), so
instead of interleaving nibbles the kernels multiply the low-nibble plane by the first half of
each group of x and the high-nibble plane by the second half: two half-width dots, no shuffle.
Under the interpreter, bf16 operands are widened to fp32 (no bf16 arithmetic there).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ark.kernels.triton_bf16 import round_to


@triton.jit
def _q4_gemv(X, QS, S, Z, P, M, N, K_HALF, chunk,
             stride_xm, stride_qn, stride_sn, stride_pk, stride_pm,
             offset, HALF: tl.constexpr, HAS_ZERO: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_N], tl.float32)
    lo = pid_k * chunk
    hi = tl.minimum(lo + chunk, K_HALF)
    for c0 in range(lo, hi, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)  # byte index along the row
        c_mask = offs_c < hi
        grp = offs_c // HALF
        k_lo = grp * (2 * HALF) + offs_c % HALF
        x_lo = tl.load(X + m * stride_xm + k_lo, mask=c_mask, other=0.0).to(tl.float32)
        x_hi = tl.load(X + m * stride_xm + k_lo + HALF, mask=c_mask, other=0.0).to(tl.float32)
        wmask = n_mask[:, None] & c_mask[None, :]
        byte = tl.load(QS + offs_n[:, None] * stride_qn + offs_c[None, :], mask=wmask, other=0).to(tl.int32)
        s = tl.load(S + offs_n[:, None] * stride_sn + grp[None, :], mask=wmask, other=0.0).to(tl.float32)
        q_lo = (byte & 0xF).to(tl.float32) - offset
        q_hi = (byte >> 4).to(tl.float32) - offset
        part = q_lo * x_lo[None, :] + q_hi * x_hi[None, :]
        if HAS_ZERO:
            z = tl.load(Z + offs_n[:, None] * stride_sn + grp[None, :], mask=wmask, other=0.0).to(tl.float32)
            # Each byte contributes z * (x_lo + x_hi): the zero point times the group's sum of x.
            acc += tl.sum(s * part + z * (x_lo + x_hi)[None, :], 1)
        else:
            acc += tl.sum(s * part, 1)
    tl.store(P + pid_k * stride_pk + m * stride_pm + offs_n, acc, mask=n_mask)


@triton.jit
def _q4_gemm(X, QS, S, Z, Y, M, N, K_HALF,
             stride_xm, stride_qn, stride_sn, stride_ym,
             offset, HALF: tl.constexpr, HAS_ZERO: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, EMULATE_BF16: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for c0 in range(0, K_HALF, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_mask = offs_c < K_HALF
        grp = offs_c // HALF
        k_lo = grp * (2 * HALF) + offs_c % HALF
        xmask = m_mask[:, None] & c_mask[None, :]
        x_lo = tl.load(X + offs_m[:, None] * stride_xm + k_lo[None, :], mask=xmask, other=0.0)
        x_hi = tl.load(X + offs_m[:, None] * stride_xm + k_lo[None, :] + HALF, mask=xmask, other=0.0)
        wmask = c_mask[:, None] & n_mask[None, :]  # weight tiles are [BLOCK_C, BLOCK_N] (Wᵀ)
        byte = tl.load(QS + offs_n[None, :] * stride_qn + offs_c[:, None], mask=wmask, other=0).to(tl.int32)
        s = tl.load(S + offs_n[None, :] * stride_sn + grp[:, None], mask=wmask, other=0.0).to(tl.float32)
        w_lo = ((byte & 0xF).to(tl.float32) - offset) * s
        w_hi = ((byte >> 4).to(tl.float32) - offset) * s
        if HAS_ZERO:
            z = tl.load(Z + offs_n[None, :] * stride_sn + grp[:, None], mask=wmask, other=0.0).to(tl.float32)
            w_lo += z
            w_hi += z
        if UPCAST:
            x_lo = x_lo.to(tl.float32)
            x_hi = x_hi.to(tl.float32)
            w_lo = round_to(w_lo, X.dtype.element_ty, EMULATE_BF16).to(tl.float32)
            w_hi = round_to(w_hi, X.dtype.element_ty, EMULATE_BF16).to(tl.float32)
        else:
            w_lo = w_lo.to(X.dtype.element_ty)
            w_hi = w_hi.to(X.dtype.element_ty)
        acc = tl.dot(x_lo, w_lo, acc, input_precision=PRECISION)
        acc = tl.dot(x_hi, w_hi, acc, input_precision=PRECISION)
    ymask = m_mask[:, None] & n_mask[None, :]
    tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], round_to(acc, Y.dtype.element_ty, EMULATE_BF16), mask=ymask)


@triton.jit
def _i8_gemv(X, Q, S, P, M, N, K, chunk,
             stride_xm, stride_qn, stride_sn, stride_pk, stride_pm,
             GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_N], tl.float32)
    lo = pid_k * chunk
    hi = tl.minimum(lo + chunk, K)
    for k0 in range(lo, hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < hi
        x = tl.load(X + m * stride_xm + offs_k, mask=k_mask, other=0.0).to(tl.float32)
        wmask = n_mask[:, None] & k_mask[None, :]
        q = tl.load(Q + offs_n[:, None] * stride_qn + offs_k[None, :], mask=wmask, other=0).to(tl.float32)
        if GROUP > 0:
            s = tl.load(S + offs_n[:, None] * stride_sn + (offs_k // GROUP)[None, :], mask=wmask, other=0.0)
            acc += tl.sum(q * s.to(tl.float32) * x[None, :], 1)
        else:
            acc += tl.sum(q * x[None, :], 1)
    if GROUP == 0:  # per-channel: one scale per output, applied once after the reduction
        acc = acc * tl.load(S + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(P + pid_k * stride_pk + m * stride_pm + offs_n, acc, mask=n_mask)


@triton.jit
def _i8_gemm(X, Q, S, Y, M, N, K,
             stride_xm, stride_qn, stride_sn, stride_ym,
             GROUP: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, EMULATE_BF16: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        x = tl.load(X + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        wmask = k_mask[:, None] & n_mask[None, :]
        q = tl.load(Q + offs_n[None, :] * stride_qn + offs_k[:, None], mask=wmask, other=0)
        if GROUP > 0:
            s = tl.load(S + offs_n[None, :] * stride_sn + (offs_k // GROUP)[:, None], mask=wmask, other=0.0)
            w = q.to(tl.float32) * s.to(tl.float32)
        else:
            w = q.to(tl.float32)  # int8 values are exact in fp16/bf16
        if UPCAST:
            x = x.to(tl.float32)
            w = round_to(w, X.dtype.element_ty, EMULATE_BF16).to(tl.float32)
        else:
            w = w.to(X.dtype.element_ty)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    if GROUP == 0:
        acc = acc * tl.load(S + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    ymask = m_mask[:, None] & n_mask[None, :]
    tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], round_to(acc, Y.dtype.element_ty, EMULATE_BF16), mask=ymask)


@triton.jit
def _sum_splits(P, Y, total, splits, EMULATE_BF16: tl.constexpr, BLOCK: tl.constexpr):
    """Y = sum of the split-K partials P [splits, total], cast to Y's dtype: one launch, not two."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(0, splits):
        acc += tl.load(P + i * total + offs, mask=mask, other=0.0)
    tl.store(Y + offs, round_to(acc, Y.dtype.element_ty, EMULATE_BF16), mask=mask)


def _reduce(part: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[splits, M, N] fp32 partials -> [M, N] in ``dtype``."""
    splits, m, n = part.shape
    y = torch.empty(m, n, device=part.device, dtype=dtype)
    block = 1024 if part.is_cuda else 64
    _sum_splits[(triton.cdiv(m * n, block),)](part, y, m * n, splits, EMULATE_BF16=not part.is_cuda and dtype == torch.bfloat16,
                                              BLOCK=block, num_warps=4)
    return y


GEMV_MAX_ROWS = 4  # up to this many rows of x, the weight is streamed once per row (memory-bound GEMV)


def _split_k(n_blocks: int, k_blocks: int, device: torch.device) -> int:
    """Split K so that about two programs per SM exist, never below one block of K per program."""
    if device.type != "cuda":
        return min(2, k_blocks)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(k_blocks, triton.cdiv(2 * sms, n_blocks)))


def _precision(x: torch.Tensor) -> str:
    """fp32 inputs keep IEEE fp32 products (tensor cores would silently round them to TF32)."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def _gemm_blocks(m: int, on_gpu: bool) -> tuple[int, int, int]:
    if not on_gpu:
        return 16, 16, 32
    return (16 if m <= 16 else 32 if m <= 32 else 64), 64, 64


def q4_matmul_fwd(x: torch.Tensor, qs: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                  offset: float) -> torch.Tensor:
    """Launch the 4-bit kernels; arguments as :func:`ark.kernels.reference.q4_matmul` (checked by the caller)."""
    x = x.contiguous()
    m, _ = x.shape
    n, groups, half = qs.shape
    k_half = groups * half
    qs2 = qs.reshape(n, k_half)
    if qs2.stride(-1) != 1:
        qs2 = qs2.contiguous()
    scale = scale.contiguous()
    zero_t = zero.contiguous() if zero is not None else scale  # a dummy pointer when unused
    on_gpu = x.device.type == "cuda"
    if m <= GEMV_MAX_ROWS:
        block_n, block_c = (32, 128) if on_gpu else (16, 16)  # 128-byte row segments: whole cache lines
        n_blocks = triton.cdiv(n, block_n)
        splits = _split_k(n_blocks, triton.cdiv(k_half, block_c), x.device)
        chunk = triton.cdiv(triton.cdiv(k_half, splits), block_c) * block_c
        splits = triton.cdiv(k_half, chunk)
        part = torch.empty(splits, m, n, device=x.device, dtype=torch.float32)
        _q4_gemv[(n_blocks, splits, m)](
            x, qs2, scale, zero_t, part, m, n, k_half, chunk,
            x.stride(0), qs2.stride(0), scale.stride(0), part.stride(0), part.stride(1),
            float(offset), HALF=half, HAS_ZERO=zero is not None, BLOCK_N=block_n, BLOCK_C=block_c,
            num_warps=4)
        return _reduce(part, x.dtype)
    block_m, block_n, block_c = _gemm_blocks(m, on_gpu)
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    _q4_gemm[(triton.cdiv(m, block_m), triton.cdiv(n, block_n))](
        x, qs2, scale, zero_t, y, m, n, k_half,
        x.stride(0), qs2.stride(0), scale.stride(0), y.stride(0),
        float(offset), HALF=half, HAS_ZERO=zero is not None, UPCAST=not on_gpu and x.dtype != torch.float16, PRECISION=_precision(x),
        EMULATE_BF16=not on_gpu and x.dtype == torch.bfloat16,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_C=block_c, num_warps=4, num_stages=3 if on_gpu else 1)
    return y


def int8_matmul_fwd(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Launch the int8 kernels; arguments as :func:`ark.kernels.reference.int8_matmul` (checked by the caller)."""
    x = x.contiguous()
    m, k = x.shape
    n = q.shape[0]
    group = 0 if q.dim() == 2 else q.shape[2]
    q2 = q.reshape(n, k)
    if q2.stride(-1) != 1:
        q2 = q2.contiguous()
    scale = scale.contiguous()
    on_gpu = x.device.type == "cuda"
    sn = scale.stride(0) if scale.dim() == 2 else 1
    if m <= GEMV_MAX_ROWS:
        block_n, block_k = (32, 128) if on_gpu else (16, 32)  # 128 int8 a row: whole cache lines
        n_blocks = triton.cdiv(n, block_n)
        splits = _split_k(n_blocks, triton.cdiv(k, block_k), x.device)
        chunk = triton.cdiv(triton.cdiv(k, splits), block_k) * block_k
        splits = triton.cdiv(k, chunk)
        part = torch.empty(splits, m, n, device=x.device, dtype=torch.float32)
        _i8_gemv[(n_blocks, splits, m)](
            x, q2, scale, part, m, n, k, chunk,
            x.stride(0), q2.stride(0), sn, part.stride(0), part.stride(1),
            GROUP=group, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
        return _reduce(part, x.dtype)
    block_m, block_n, block_k = _gemm_blocks(m, on_gpu)
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    _i8_gemm[(triton.cdiv(m, block_m), triton.cdiv(n, block_n))](
        x, q2, scale, y, m, n, k, x.stride(0), q2.stride(0), sn, y.stride(0),
        GROUP=group, UPCAST=not on_gpu and x.dtype != torch.float16, PRECISION=_precision(x),
        EMULATE_BF16=not on_gpu and x.dtype == torch.bfloat16,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, num_stages=3 if on_gpu else 1)
    return y
