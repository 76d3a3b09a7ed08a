"""Ark's Triton kernels against PyTorch's own GPU paths, on whatever NVIDIA GPU is present.

    python benchmarks/kernels.py            # all three tables (a few minutes on an H100)
    python benchmarks/kernels.py --quick    # fewer shapes
    python benchmarks/kernels.py --only decode

* Prefill attention (fp16): TFLOP/s of ``ark.kernels.attention`` and of
  ``scaled_dot_product_attention`` forced to its FlashAttention backend, sequence 512–16k,
  head dim 64 and 128, causal and not (16k tokens per batch, model width 2048).
  Target: ≥ 0.9x SDPA.
* Decode attention (fp16, GQA 32/8 heads, head dim 128): GB/s read from the KV cache by
  ``ark.kernels.decode_attention`` (contiguous) and ``paged_decode_attention`` (64-position
  pages), as a fraction of the device's peak memory bandwidth. Target: ≥ 60 % of peak.
* Weight-only low-bit matmul (fp16 activations): int4 (group 32 and 128), GGUF Q4_0, int8
  per channel and GGUF Q8_0 against fp16 ``torch.matmul`` (cuBLAS), batch 1–64.
  Target: 4-bit GEMV ≥ 2.5x fp16 at batch 1.

Every kernel is first checked against its PyTorch reference on the GPU (the CPU tests run
the kernels interpreted; this is where compiled code is checked), then timed with
``triton.testing.do_bench`` (``--timer cudagraph``: over CUDA-graph replays, so that launch
overhead does not swamp microsecond kernels). Peaks: memory bandwidth from the memory clock and bus width
(as ``triton.testing.get_dram_gbps``), fp16 tensor-core FLOP/s from the SM count and boost
clock (dense, per-SM rate of the architecture; an estimate). Without a CUDA GPU the script
says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

import torch

TARGET_PREFILL = 0.9  # x SDPA (flash backend)
TARGET_DECODE = 0.6  # fraction of peak memory bandwidth
TARGET_GEMV4 = 2.5  # x fp16 torch.matmul at batch 1


def peaks() -> tuple[float, float]:
    """(memory bandwidth in GB/s, dense fp16 tensor-core TFLOP/s) of the current device."""
    from triton.runtime import driver

    dev = torch.cuda.current_device()
    props = driver.active.utils.get_device_properties(dev)
    gbps = props["mem_clock_rate"] * props["mem_bus_width"] * 2 / 1e6 / 8
    # dense fp16 FLOPs per clock per SM: Ampere A100 2048, Hopper 4096; others conservatively 1024
    per_sm = {(8, 0): 2048, (9, 0): 4096}.get(torch.cuda.get_device_capability(dev), 1024)
    tflops = props["multiprocessor_count"] * per_sm * props["sm_clock_rate"] * 1e3 / 1e12
    return gbps, tflops


TIMER = "do_bench"  # or "cudagraph" (--timer)


def bench(fn: Callable[[], object]) -> float:
    """Median milliseconds of ``fn``: ``triton.testing.do_bench`` (warm-up, L2 flushed between
    runs), or with ``--timer cudagraph`` its CUDA-graph variant, which replays ``fn`` from a graph
    as a decode loop would: a 4096x4096 GEMV is microseconds of GPU work, so eager timing partly
    measures Python's launch overhead. Both sides of every comparison are timed alike."""
    import triton.testing

    if TIMER == "cudagraph":
        return float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def check(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """Stop with a message if a compiled kernel disagrees with its reference (relative max error)."""
    err = ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6)).item()
    if not err <= tol:
        raise SystemExit(f"{name}: Triton result differs from the PyTorch reference (relative max error {err:.3g})")


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) for c, w in zip(cells, widths))


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print(_row(header, widths))
    print(_row(["-" * w for w in widths], widths))
    for r in rows:
        print(_row(r, widths))


def bench_attention(quick: bool, peak_tflops: float) -> list[list[str]]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ark import kernels

    rows = []
    seqs = [512, 2048, 8192] if quick else [512, 1024, 2048, 4096, 8192, 16384]
    for d in (64, 128):
        for causal in (False, True):
            for t in seqs:
                b, h = max(1, 16384 // t), 2048 // d
                q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=torch.float16) for _ in range(3))
                ours = lambda: kernels.attention(q, k, v, causal=causal)  # noqa: E731

                def sdpa() -> torch.Tensor:
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

                check(f"attention d={d} T={t} causal={causal}", ours(), sdpa(), 2e-2)
                flops = 4 * b * h * t * t * d * (0.5 if causal else 1.0)
                ms_ours, ms_sdpa = bench(ours), bench(sdpa)
                tf_ours, tf_sdpa = flops / ms_ours / 1e9, flops / ms_sdpa / 1e9
                ratio = tf_ours / tf_sdpa
                rows.append([str(d), "yes" if causal else "no", str(t), f"{b}x{h}", f"{tf_ours:.0f}", f"{tf_sdpa:.0f}",
                             f"{tf_ours / peak_tflops:.0%}", f"{ratio:.2f}x", "ok" if ratio >= TARGET_PREFILL else "MISS"])
    return rows


def bench_decode(quick: bool, peak_gbps: float) -> list[list[str]]:
    from ark import kernels
    from ark.kernels import reference

    rows = []
    hq, hkv, d, page = 32, 8, 128, 64
    for b in ([1, 16] if quick else [1, 4, 16, 64]):
        for length in ([4096] if quick else [1024, 4096, 16384]):
            if b * length > 2**18:  # keep the cache under ~4 GB
                continue
            k, v = (torch.randn(b, hkv, length, d, device="cuda", dtype=torch.float16) for _ in range(2))
            q = torch.randn(b, hq, d, device="cuda", dtype=torch.float16)
            lens = torch.full((b,), length, device="cuda", dtype=torch.int32)
            n_pages = length // page
            table_ = torch.randperm(b * n_pages, device="cuda", dtype=torch.int64).view(b, n_pages).to(torch.int32)
            kp = torch.empty(b * n_pages, page, hkv, d, device="cuda", dtype=torch.float16)
            vp = torch.empty_like(kp)
            kp[table_.long().view(-1)] = k.transpose(1, 2).reshape(b * n_pages, page, hkv, d)
            vp[table_.long().view(-1)] = v.transpose(1, 2).reshape(b * n_pages, page, hkv, d)
            want = reference.decode_attention(q, k, v, lens)
            contiguous = lambda: kernels.decode_attention(q, k, v, lens)  # noqa: E731
            paged = lambda: kernels.paged_decode_attention(q, kp, vp, table_, lens)  # noqa: E731
            sdpa = lambda: reference.decode_attention(q, k, v)  # noqa: E731  (PyTorch's own, no length mask)
            check(f"decode b={b} L={length}", contiguous(), want, 2e-2)
            check(f"paged decode b={b} L={length}", paged(), want, 2e-2)
            nbytes = 2 * k.numel() * k.element_size() + 2 * q.numel() * q.element_size()
            for name, fn in (("contiguous", contiguous), ("paged", paged), ("torch sdpa", sdpa)):
                gbps = nbytes / bench(fn) / 1e6
                frac = gbps / peak_gbps
                verdict = "" if name == "torch sdpa" else ("ok" if frac >= TARGET_DECODE else "MISS")
                rows.append([name, str(b), str(length), f"{gbps:.0f}", f"{frac:.0%}", verdict])
    return rows


def bench_lowbit(quick: bool, peak_gbps: float) -> list[list[str]]:
    from ark import kernels
    from ark.kernels import reference

    rows = []
    shapes = [(4096, 4096)] if quick else [(4096, 4096), (11008, 4096), (4096, 11008)]
    batches = [1, 16, 64] if quick else [1, 2, 4, 8, 16, 32, 64]
    gen = torch.Generator(device="cuda").manual_seed(0)
    for n, k in shapes:
        w16 = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=gen) * 0.02
        formats: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, int]] = {}
        for g in (32, 128):
            qs = torch.randint(0, 256, (n, k // g, g // 2), device="cuda", dtype=torch.uint8, generator=gen)
            s = (torch.rand(n, k // g, device="cuda", generator=gen) * 0.01).half()
            z = (torch.randn(n, k // g, device="cuda", generator=gen) * 0.01).half()
            formats[f"int4 g{g}"] = ((lambda x, qs=qs, s=s, z=z: kernels.q4_matmul(x, qs, s, z)),
                                     reference.dequantize_q4(qs, s, z, 0.0), qs.numel() + 4 * s.numel())
            if g == 32:
                formats["Q4_0"] = ((lambda x, qs=qs, s=s: kernels.q4_matmul(x, qs, s, None, 8.0)),
                                   reference.dequantize_q4(qs, s, None, 8.0), qs.numel() + 2 * s.numel())
        q8 = torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8, generator=gen)
        sc = torch.rand(n, device="cuda", generator=gen) * 1e-3
        formats["int8"] = ((lambda x: kernels.int8_matmul(x, q8, sc)), reference.dequantize_int8(q8, sc), q8.numel() + 4 * n)
        qb, sb = q8.view(n, k // 32, 32), (torch.rand(n, k // 32, device="cuda", generator=gen) * 1e-3).half()
        formats["Q8_0"] = ((lambda x: kernels.int8_matmul(x, qb, sb)), reference.dequantize_int8(qb, sb),
                           q8.numel() + 2 * sb.numel())
        for m in batches:
            x = torch.randn(m, k, device="cuda", dtype=torch.float16, generator=gen)
            ms16 = bench(lambda: torch.matmul(x, w16.t()))
            rows.append([f"{n}x{k}", str(m), "fp16 matmul", f"{ms16 * 1e3:.1f}",
                         f"{2 * n * k / ms16 / 1e6:.0f}", f"{2 * n * k / ms16 / 1e6 / peak_gbps:.0%}", "1.00x", ""])
            for name, (fn, w_deq, nbytes) in formats.items():
                check(f"{name} {n}x{k} batch {m}", fn(x), (x.float() @ w_deq.t()), 2e-2)
                ms = bench(lambda fn=fn: fn(x))
                speedup = ms16 / ms
                verdict = ""
                if m == 1 and name.startswith(("int4", "Q4")):
                    verdict = "ok" if speedup >= TARGET_GEMV4 else "MISS"
                rows.append([f"{n}x{k}", str(m), name, f"{ms * 1e3:.1f}", f"{nbytes / ms / 1e6:.0f}",
                             f"{nbytes / ms / 1e6 / peak_gbps:.0%}", f"{speedup:.2f}x", verdict])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--only", choices=("attention", "decode", "lowbit"), help="run one table")
    parser.add_argument("--timer", choices=("do_bench", "cudagraph"), default="do_bench",
                        help="eager do_bench (default) or CUDA-graph replays (kernel time without launch overhead)")
    args = parser.parse_args(argv)
    global TIMER
    TIMER = args.timer
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py: no CUDA GPU is available here, so there is nothing to measure "
              "(the kernels are tested on CPU under TRITON_INTERPRET=1 by tests/test_kernels_triton.py).")
        return 0
    from ark import kernels

    if not kernels.triton_available():
        print("benchmarks/kernels.py: Triton is not installed; pip install -e '.[gpu]'", file=sys.stderr)
        return 1
    gbps, tflops = peaks()
    name = torch.cuda.get_device_name()
    print(f"device: {name} — peak memory bandwidth {gbps:.0f} GB/s, dense fp16 tensor cores ~{tflops:.0f} TFLOP/s (est.)")
    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}, timer {TIMER}")
    if args.only in (None, "attention"):
        table(f"Prefill attention, fp16 (target: >= {TARGET_PREFILL}x SDPA flash)",
              ["head dim", "causal", "seq", "batch x heads", "ark TFLOP/s", "sdpa TFLOP/s", "ark / peak", "ark / sdpa", ""],
              bench_attention(args.quick, tflops))
    if args.only in (None, "decode"):
        table(f"Decode attention, fp16, 32 q / 8 kv heads, head dim 128 (target: >= {TARGET_DECODE:.0%} of peak bandwidth)",
              ["kernel", "batch", "cache len", "GB/s", "of peak", ""], bench_decode(args.quick, gbps))
    if args.only in (None, "lowbit"):
        table(f"Weight-only low-bit matmul, fp16 activations (target: 4-bit GEMV >= {TARGET_GEMV4}x fp16 at batch 1)",
              ["N x K", "batch", "weights", "us", "weight GB/s", "of peak", "vs fp16", ""], bench_lowbit(args.quick, gbps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
