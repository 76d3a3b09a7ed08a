"""The Triton kernels, run on CPU by Triton's interpreter, against the plain-PyTorch references.

The interpreter needs ``TRITON_INTERPRET=1`` in the environment *before Triton is imported*
(Triton's own library functions are decorated at import time, and they must be interpreter
functions too), and a pytest process that other tests share must not run with it. So the
one ``test_*`` function here starts a fresh pytest on this file with the variable set and
``-o python_functions=check_*``: that child collects the ``check_*`` functions below (the
outer run never does) and must pass them all, none skipped. To see them one by one:

    TRITON_INTERPRET=1 pytest tests/test_kernels_triton.py -o python_functions='check_*'

Accuracy rules: fp32 tight; fp16/bf16 FlashAttention's — the kernel's error against an fp32
reference is at most twice that of PyTorch computing the same thing in the same dtype (plain
matmul/softmax, as FlashAttention's tests do), plus a small absolute floor. bf16 has no
arithmetic in the interpreter; the launchers widen bf16 operands to fp32 right before
``tl.dot`` there (a product of two bf16 values is exact in fp32), so bf16 is tested too.
Shapes are tiny and ragged (not multiples of the tiles), with grouped-query heads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ark.kernels import reference

pytest.importorskip("triton", reason="Triton, the GPU kernel compiler, is not installed (extra [gpu]: Linux x86_64 wheels only)")

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
HALF = [torch.float16, torch.bfloat16]


def test_triton_kernels_match_references_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "python_functions=check_*",
           "-o", "addopts=", str(Path(__file__))]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110, cwd=Path(__file__).parents[1])
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    summary = re.search(r"(\d+) passed", tail)
    assert summary and int(summary.group(1)) >= 30 and "skipped" not in tail and "failed" not in tail, tail


@pytest.fixture(scope="module")
def attn() -> ModuleType:
    assert INTERPRETING, "run through test_triton_kernels_match_references_under_the_interpreter"
    from ark.kernels import triton_attention

    return triton_attention


@pytest.fixture(scope="module")
def decode() -> ModuleType:
    assert INTERPRETING, "run through test_triton_kernels_match_references_under_the_interpreter"
    from ark.kernels import triton_decode

    return triton_decode


@pytest.fixture(scope="module")
def lowbit() -> ModuleType:
    assert INTERPRETING, "run through test_triton_kernels_match_references_under_the_interpreter"
    from ark.kernels import triton_lowbit

    return triton_lowbit


def _err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out.float() - ref).abs().max().item()


def assert_flash_rule(out: torch.Tensor, same_dtype: torch.Tensor, ref32: torch.Tensor) -> None:
    """FlashAttention's rule: error(kernel) <= 2 * error(PyTorch in the same dtype), both against fp32."""
    assert torch.isfinite(out.float()).all()
    kernel, torch_err = _err(out, ref32), _err(same_dtype, ref32)
    assert kernel <= 2 * torch_err + 1e-5, f"kernel error {kernel:.3g} > 2 x PyTorch's {torch_err:.3g}"


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q kᵀ / √d) v with plain PyTorch ops in q's dtype (softmax itself in fp32, as torch does)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        tq, tk = q.shape[-2], k.shape[-2]
        keep = torch.arange(tk)[None] <= torch.arange(tk - tq, tk)[:, None]
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s.float(), -1).to(q.dtype) @ v


def check_the_kernels_really_are_interpreted(attn: ModuleType, decode: ModuleType, lowbit: ModuleType) -> None:
    from triton.runtime.interpreter import InterpretedFunction

    for kernel in (attn._attn_fwd, decode._decode_split, decode._decode_merge, lowbit._q4_gemv, lowbit._q4_gemm,
                   lowbit._i8_gemv, lowbit._i8_gemm):
        assert isinstance(kernel, InterpretedFunction)


# (batch, q heads, kv heads, queries, keys, head dim): GQA, ragged lengths that are not
# multiples of the 16-wide interpreter tiles, more keys than queries (a prompt chunk after a cache).
ATTN_SHAPES = [(1, 4, 2, 19, 37, 64), (2, 2, 2, 32, 32, 128), (1, 3, 1, 1, 20, 64)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", ATTN_SHAPES)
def check_prefill_attention_fp32_matches_reference(attn: ModuleType, shape: tuple[int, ...], causal: bool) -> None:
    b, hq, hkv, tq, tk, d = shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for h, t in ((hq, tq), (hkv, tk), (hkv, tk)))
    out = attn.attention_fwd(q, k, v, causal)
    torch.testing.assert_close(out, reference.attention(q, k, v, causal), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", ATTN_SHAPES[:2])
def check_prefill_attention_half_within_flash_rule(attn: ModuleType, shape: tuple[int, ...], causal: bool,
                                                  dtype: torch.dtype) -> None:
    b, hq, hkv, tq, tk, d = shape
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, h, t, d, generator=g).to(dtype) for h, t in ((hq, tq), (hkv, tk), (hkv, tk)))
    out = attn.attention_fwd(q, k, v, causal)
    assert out.dtype == dtype and out.shape == q.shape
    ref32 = reference.attention(q.float(), k.float(), v.float(), causal)
    assert_flash_rule(out, math_attention(q, k, v, causal), ref32)


def check_prefill_attention_honours_scale_and_strided_inputs(attn: ModuleType) -> None:
    g = torch.Generator().manual_seed(2)
    # [B, T, H, D] storage seen as [B, H, T, D]: the layout a QKV projection produces
    q = torch.randn(1, 24, 2, 64, generator=g).transpose(1, 2)
    k = torch.randn(1, 24, 2, 64, generator=g).transpose(1, 2)
    v = torch.randn(1, 24, 2, 64, generator=g).transpose(1, 2)
    out = attn.attention_fwd(q, k, v, True, 0.3)
    torch.testing.assert_close(out, reference.attention(q, k, v, True, 0.3), rtol=1e-5, atol=2e-6)


def _cache(b: int, hkv: int, s: int, d: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, hkv, s, d, generator=g).to(dtype) for _ in range(2))


def _paged(k: torch.Tensor, v: torch.Tensor, page: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The contiguous cache cut into pages, scattered in a shuffled pool with spare pages."""
    b, h, s, d = k.shape
    n = -(-s // page)
    pad = n * page - s
    pool = b * n + 3
    order = torch.randperm(pool, generator=torch.Generator().manual_seed(seed))[: b * n]
    table = order.view(b, n).to(torch.int32)
    k_pages = torch.zeros(pool, page, h, d, dtype=k.dtype)
    v_pages = torch.zeros(pool, page, h, d, dtype=k.dtype)
    for src, dst in ((k, k_pages), (v, v_pages)):
        padded = torch.nn.functional.pad(src, (0, 0, 0, pad)).transpose(1, 2)  # [b, n*page, h, d]
        dst[table.long().view(-1)] = padded.reshape(b * n, page, h, d)
    return k_pages, v_pages, table


DECODE_SHAPES = [(2, 4, 2, 45, 64), (1, 3, 3, 70, 128), (3, 8, 1, 9, 64)]


@pytest.mark.parametrize("shape", DECODE_SHAPES)
def check_decode_attention_fp32_contiguous_and_paged(decode: ModuleType, shape: tuple[int, ...]) -> None:
    b, hq, hkv, s, d = shape
    k, v = _cache(b, hkv, s, d, torch.float32, 3)
    q = torch.randn(b, hq, d, generator=torch.Generator().manual_seed(4))
    lens = torch.tensor([s, *[max(1, s // (i + 2)) for i in range(b - 1)]], dtype=torch.int32)
    want = reference.decode_attention(q, k, v, lens)
    torch.testing.assert_close(decode.decode_attention_fwd(q, k, v, lens), want, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(decode.decode_attention_fwd(q, k, v, None), reference.decode_attention(q, k, v),
                               rtol=1e-5, atol=2e-6)
    k_pages, v_pages, table = _paged(k, v, 8, 5)
    torch.testing.assert_close(reference.paged_decode_attention(q, k_pages, v_pages, table, lens), want,
                               rtol=1e-6, atol=1e-6)  # the paging itself is right
    torch.testing.assert_close(decode.paged_decode_attention_fwd(q, k_pages, v_pages, table, lens), want,
                               rtol=1e-5, atol=2e-6)


def check_decode_attention_uses_several_splits(decode: ModuleType) -> None:
    # 70 keys in 16-key blocks: the interpreter heuristic gives 3 splits, so the merge is exercised
    assert decode._num_splits(3, 70, 16, torch.device("cpu")) > 1


@pytest.mark.parametrize("dtype", HALF)
def check_decode_attention_half_within_flash_rule(decode: ModuleType, dtype: torch.dtype) -> None:
    b, hq, hkv, s, d = 2, 4, 2, 45, 64
    k, v = _cache(b, hkv, s, d, dtype, 6)
    q = torch.randn(b, hq, d, generator=torch.Generator().manual_seed(7)).to(dtype)
    lens = torch.tensor([45, 17], dtype=torch.int32)
    ref32 = reference.decode_attention(q.float(), k.float(), v.float(), lens)
    same = torch.stack([math_attention(q[i:i + 1, :, None], k[i:i + 1, :, :n], v[i:i + 1, :, :n], False)[0, :, 0]
                        for i, n in enumerate(lens.tolist())])
    assert_flash_rule(decode.decode_attention_fwd(q, k, v, lens), same, ref32)
    k_pages, v_pages, table = _paged(k, v, 16, 8)
    assert_flash_rule(decode.paged_decode_attention_fwd(q, k_pages, v_pages, table, lens), same, ref32)


def _q4(n: int, k: int, group: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    qs = torch.randint(0, 256, (n, k // group, group // 2), dtype=torch.uint8, generator=g)
    scale = (torch.rand(n, k // group, generator=g) * 0.05).half()
    zero = (torch.randn(n, k // group, generator=g) * 0.1).half()
    return qs, scale, zero


# rows 1 (GEMV), 5 (GEMM with a ragged 16-row tile); N = 40 is not a multiple of the tiles
@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("group,fmt", [(32, "q4_0"), (32, "q4_1"), (64, "int4"), (128, "int4")])
def check_q4_matmul_fp32_matches_reference(lowbit: ModuleType, rows: int, group: int, fmt: str) -> None:
    qs, scale, zero = _q4(40, 256, group, 9)
    zero_arg, offset = (None, 8.0) if fmt == "q4_0" else (zero, 0.0)
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(10))
    want = x @ reference.dequantize_q4(qs, scale, zero_arg, offset).t()
    torch.testing.assert_close(lowbit.q4_matmul_fwd(x, qs, scale, zero_arg, offset), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("blocked", [False, True])
def check_int8_matmul_fp32_matches_reference(lowbit: ModuleType, rows: int, blocked: bool) -> None:
    g = torch.Generator().manual_seed(11)
    q = torch.randint(-127, 128, (40, 256), dtype=torch.int8, generator=g)
    scale = torch.rand(40, generator=g) * 0.01
    if blocked:  # GGUF Q8_0: blocks of 32 with fp16 scales
        q, scale = q.view(40, 8, 32), (torch.rand(40, 8, generator=g) * 0.01).half()
    x = torch.randn(rows, 256, generator=g)
    want = x @ reference.dequantize_int8(q, scale).t()
    torch.testing.assert_close(lowbit.int8_matmul_fwd(x, q, scale), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("rows", [1, 5])
def check_lowbit_matmul_half_within_flash_rule(lowbit: ModuleType, dtype: torch.dtype, rows: int) -> None:
    qs, scale, zero = _q4(40, 128, 32, 12)
    x = torch.randn(rows, 128, generator=torch.Generator().manual_seed(13)).to(dtype)
    w = reference.dequantize_q4(qs, scale, zero, 0.0)
    ref32 = x.float() @ w.t()
    assert_flash_rule(lowbit.q4_matmul_fwd(x, qs, scale, zero, 0.0), x @ w.to(dtype).t(), ref32)
    q8 = torch.randint(-127, 128, (40, 4, 32), dtype=torch.int8, generator=torch.Generator().manual_seed(14))
    s8 = (torch.rand(40, 4) * 0.01).half()
    w8 = reference.dequantize_int8(q8, s8)
    assert_flash_rule(lowbit.int8_matmul_fwd(x, q8, s8), x @ w8.to(dtype).t(), x.float() @ w8.t())


def check_gemv_split_k_partials_add_up(lowbit: ModuleType) -> None:
    # K = 512 in 16-byte chunks: the interpreter heuristic splits K in two, exercising the partial sum
    qs, scale, zero = _q4(16, 512, 32, 15)
    x = torch.randn(1, 512, generator=torch.Generator().manual_seed(16))
    want = x @ reference.dequantize_q4(qs, scale, zero, 0.0).t()
    assert lowbit._split_k(1, 16, torch.device("cpu")) == 2
    torch.testing.assert_close(lowbit.q4_matmul_fwd(x, qs, scale, zero, 0.0), want, rtol=1e-5, atol=1e-5)
