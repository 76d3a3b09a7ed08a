"""ark.kernels on CPU: the plain-PyTorch kernels against independent maths, the custom-op
registrations (opcheck, torch.export), the routing modes, argument errors, and the
integration into ACT and the LLM runtime (identical outputs with and without the custom ops).

The Triton kernels themselves are tested under Triton's interpreter in test_kernels_triton.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ark import kernels
from ark.kernels import KernelArgumentError, reference


@pytest.fixture(autouse=True)
def auto_mode():
    """Every test starts (and leaves the process) in the default routing mode."""
    previous = kernels.set_kernel_mode("auto")
    yield
    kernels.set_kernel_mode(previous)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None = None,
                    lens: torch.Tensor | None = None) -> torch.Tensor:
    """Attention written out in float64: explicit GQA head mapping, bottom-right causal mask, key lengths."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    tq, tk = q.shape[-2], k.shape[-2]
    keep = torch.ones(q.shape[0], 1, tq, tk, dtype=torch.bool)
    if causal:
        keep &= torch.arange(tk)[None] <= torch.arange(tk - tq, tk)[:, None]
    if lens is not None:
        keep &= (torch.arange(tk)[None] < lens[:, None]).view(-1, 1, 1, tk)
    return torch.softmax(s.masked_fill(~keep, float("-inf")), -1) @ v


def _qkv(b: int, hq: int, hkv: int, tq: int, tk: int, d: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, hq, tq, d, generator=g), torch.randn(b, hkv, tk, d, generator=g),
            torch.randn(b, hkv, tk, d, generator=g))


# -- the CPU kernels -------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 4, 2, 7, 7, 16), (1, 6, 2, 3, 11, 32), (1, 2, 2, 1, 5, 64)])
def test_attention_matches_explicit_softmax(shape: tuple[int, ...], causal: bool) -> None:
    q, k, v = _qkv(*shape)
    out = kernels.attention(q, k, v, causal=causal)
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, causal), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.attention(q, k, v, scale=0.2).double(), naive_attention(q, k, v, False, 0.2),
                               rtol=1e-5, atol=1e-5)


def test_causal_chunk_after_a_cache_sees_every_earlier_position() -> None:
    # 3 queries at positions 8, 9, 10 of 11 keys: rows of the full causal result
    q, k, v = _qkv(1, 2, 2, 11, 11, 16, seed=1)
    full = kernels.attention(q, k, v, causal=True)
    torch.testing.assert_close(kernels.attention(q[:, :, 8:], k, v, causal=True), full[:, :, 8:], rtol=1e-6, atol=1e-6)


def test_decode_attention_contiguous_and_paged_match_explicit_softmax() -> None:
    q, k, v = _qkv(3, 4, 2, 1, 13, 16, seed=2)
    lens = torch.tensor([13, 5, 9], dtype=torch.int32)
    want = naive_attention(q, k, v, False, lens=lens)[:, :, 0]
    torch.testing.assert_close(kernels.decode_attention(q[:, :, 0], k, v, lens).double(), want, rtol=1e-5, atol=1e-5)
    # the same cache in pages of 4 positions, scattered over a pool in reverse order
    page, n_pages = 4, 4
    pool_k = torch.zeros(3 * n_pages, page, 2, 16)
    pool_v = torch.zeros_like(pool_k)
    table = torch.arange(3 * n_pages - 1, -1, -1, dtype=torch.int32).view(3, n_pages)
    pad = torch.nn.functional.pad
    pool_k[table.long().view(-1)] = pad(k, (0, 0, 0, 3)).transpose(1, 2).reshape(-1, page, 2, 16)
    pool_v[table.long().view(-1)] = pad(v, (0, 0, 0, 3)).transpose(1, 2).reshape(-1, page, 2, 16)
    out = kernels.paged_decode_attention(q[:, :, 0], pool_k, pool_v, table, lens)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_block_matmuls_equal_x_times_the_gguf_packages_dequantisation(qtype: str) -> None:
    import gguf  # the llm extra (in dev): its quantiser makes the reference blocks

    from edge.llm.quantize import from_gguf

    x = np.random.default_rng(3).standard_normal((24, 96)).astype(np.float32)
    raw = gguf.quants.quantize(x, getattr(gguf.GGMLQuantizationType, qtype))
    want = torch.from_numpy(gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, qtype)))
    w = from_gguf(qtype, raw, (24, 96))
    inp = torch.randn(5, 96, generator=torch.Generator().manual_seed(4))
    if qtype == "Q8_0":
        out = kernels.int8_matmul(inp, w.qs, w.d)
    else:
        out = kernels.q4_matmul(inp, w.qs, w.d, getattr(w, "m", None), 8.0 if qtype == "Q4_0" else 0.0)
    torch.testing.assert_close(out, inp @ want.t(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_and_int8_matmuls_equal_x_times_the_dequantised_weight(group: int) -> None:
    from edge.llm.quantize import Int4Weight, Int8Weight

    w = torch.randn(40, 256, generator=torch.Generator().manual_seed(5))
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(6))
    i4, i8 = Int4Weight.from_float(w, group), Int8Weight.from_float(w)
    torch.testing.assert_close(kernels.q4_matmul(x, i4.packed, i4.scale, i4.zero), x @ i4.dequantize().t(),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.int8_matmul(x, i8.q, i8.scale), x @ i8.dequantize().t(), rtol=1e-5, atol=1e-5)


def test_low_bit_matmuls_chunk_rows_without_changing_results(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.llm.quantize import Int4Weight, Int8Weight

    w = torch.randn(100, 64, generator=torch.Generator().manual_seed(7))
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(8))
    i4, i8 = Int4Weight.from_float(w, 32), Int8Weight.from_float(w)
    whole = kernels.q4_matmul(x, i4.packed, i4.scale, i4.zero), kernels.int8_matmul(x, i8.q, i8.scale)
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 64 * 7)  # 7 rows a chunk: many uneven chunks
    torch.testing.assert_close(kernels.q4_matmul(x, i4.packed, i4.scale, i4.zero), whole[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.int8_matmul(x, i8.q, i8.scale), whole[1], rtol=1e-5, atol=1e-5)


def test_half_precision_inputs_give_outputs_of_their_dtype() -> None:
    from edge.llm.quantize import Int4Weight

    i4 = Int4Weight.from_float(torch.randn(8, 64), 32)
    x = torch.randn(2, 64)
    for dtype in (torch.float16, torch.bfloat16):
        out = kernels.q4_matmul(x.to(dtype), i4.packed, i4.scale, i4.zero)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), x.to(dtype).float() @ i4.dequantize().t(), rtol=2e-2, atol=2e-2)


# -- registration, routing, errors -------------------------------------------------------------
def _op_cases() -> dict[str, tuple]:
    q, k, v = _qkv(1, 4, 2, 5, 9, 16, seed=9)
    lens = torch.tensor([7], dtype=torch.int32)
    pages = torch.randn(4, 4, 2, 16)
    table = torch.tensor([[2, 0, 3]], dtype=torch.int32)
    qs = torch.randint(0, 256, (6, 2, 16), dtype=torch.uint8)
    scale, zero = torch.rand(6, 2).half(), torch.rand(6, 2).half()
    x = torch.randn(3, 64)
    return {
        "attention": (q, k, v, True, None),
        "decode_attention": (q[:, :, 0], k, v, lens, 0.5),
        "paged_decode_attention": (q[:, :, 0], pages, pages.clone(), table, torch.tensor([10], dtype=torch.int32), None),
        "int8_matmul": (x, torch.randint(-127, 128, (6, 64), dtype=torch.int8), torch.rand(6)),
        "q4_matmul": (x, qs, scale, zero, 0.0),
    }


@pytest.mark.parametrize("name", list(_op_cases()))
def test_custom_op_registration_passes_opcheck(name: str) -> None:
    # schema, fake (meta) kernel, autograd registration and AOT dispatch, as torch.compile/export need them
    op = getattr(torch.ops.ark, name).default
    torch.library.opcheck(op, _op_cases()[name])


class _OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_modes_route_cpu_calls_directly_or_through_the_custom_op() -> None:
    q, k, v = _qkv(1, 2, 2, 4, 4, 16)
    results = {}
    for mode in kernels.MODES:
        with kernels.use_kernel_mode(mode), _OpLog() as log:
            results[mode] = kernels.attention(q, k, v, causal=True)
        assert any(n.startswith("ark.attention") for n in log.names) == (mode == "ops"), (mode, log.names)
    assert torch.equal(results["auto"], results["ops"]) and torch.equal(results["auto"], results["off"])
    with pytest.raises(KernelArgumentError, match="mode"):
        kernels.set_kernel_mode("fast")


def test_torch_export_carries_the_op_in_ops_mode() -> None:
    class Attn(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return kernels.attention(q, k, v, causal=True)

    q, k, v = _qkv(1, 4, 2, 6, 6, 16, seed=10)
    with kernels.use_kernel_mode("ops"):
        exported = torch.export.export(Attn(), (q, k, v))
    assert "torch.ops.ark.attention" in exported.graph_module.code
    torch.testing.assert_close(exported.module()(q, k, v), kernels.attention(q, k, v, causal=True))


@pytest.mark.parametrize("call,match", [
    (lambda: kernels.attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)), "^q:"),
    (lambda: kernels.attention(torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)), "KV heads"),
    (lambda: kernels.attention(torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8).half(), torch.randn(1, 2, 4, 8)), "dtype"),
    (lambda: kernels.attention(torch.randn(1, 2, 5, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), causal=True),
     "causal"),
    (lambda: kernels.decode_attention(torch.randn(1, 2, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8),
                                      torch.tensor([4])), "^cache_seqlens:"),
    (lambda: kernels.paged_decode_attention(torch.randn(1, 2, 8), torch.randn(3, 4, 2, 8), torch.randn(3, 4, 2, 8),
                                            torch.tensor([[0, 1]]), torch.tensor([4], dtype=torch.int32)), "^block_table:"),
    (lambda: kernels.int8_matmul(torch.randn(2, 64), torch.zeros(4, 64, dtype=torch.uint8), torch.rand(4)), "^q:"),
    (lambda: kernels.q4_matmul(torch.randn(2, 60), torch.zeros(4, 2, 16, dtype=torch.uint8), torch.rand(4, 2)), "^x:"),
    (lambda: kernels.q4_matmul(torch.randn(2, 64), torch.zeros(4, 2, 16, dtype=torch.uint8), torch.rand(4, 3)), "^scale:"),
])
def test_wrong_arguments_raise_one_line_errors_naming_the_argument(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(KernelArgumentError, match=match) as info:
        call()
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_base_install_works_without_triton() -> None:
    # Importing ark.kernels (and the LLM and ACT that use it) must not import Triton; with Triton
    # made unimportable, the ops still run (plain PyTorch) and report Triton as unavailable.
    code = ("import sys; import ark.kernels, edge.llm.model, policies.act; "
            "assert 'triton' not in sys.modules, 'triton was imported'; "
            "sys.modules['triton'] = None; import torch; from ark import kernels; "
            "assert not kernels.triton_available(); kernels.set_kernel_mode('ops'); "
            "q = torch.randn(1, 2, 3, 16); print(kernels.attention(q, q, q, causal=True).shape)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).parents[1])
    assert r.returncode == 0 and "torch.Size([1, 2, 3, 16])" in r.stdout, r.stderr[-2000:]


# -- integration: identical outputs with and without the custom ops ------------------------------
def _modes(fn) -> dict[str, torch.Tensor]:  # noqa: ANN001
    out = {}
    for mode in ("off", "ops", "auto"):
        with kernels.use_kernel_mode(mode):
            out[mode] = fn()
    return out


@pytest.mark.parametrize("wtype,mode", [("Q4_0", "gguf"), ("Q4_1", "gguf"), ("Q8_0", "gguf"), ("F32", "int8"),
                                        ("F32", "int4")])
def test_llm_outputs_are_identical_with_and_without_the_custom_ops(tmp_path: Path, wtype: str, mode: str) -> None:
    from edge.llm.gguf_reader import GGUFFile
    from edge.llm.model import Transformer
    from test_llm_gguf import write_tiny_llama

    model = Transformer.from_gguf(GGUFFile(write_tiny_llama(tmp_path / "t.gguf", wtype=wtype)), mode=mode)

    def run() -> torch.Tensor:
        model.setup_cache(32)
        prompt = model(torch.tensor([5, 70, 200, 9, 33]), 0, last_only=False)  # causal prefill
        chunk = model(torch.tensor([11, 12, 13]), 5, last_only=False)  # a prompt chunk after a cache
        steps = [model(torch.tensor([t]), 8 + i) for i, t in enumerate([40, 41])]  # decode
        with torch.inference_mode():  # the static-shape decode torch.compile traces (run eagerly here)
            static = model.decode_static(torch.tensor([42]), torch.tensor(10))
        return torch.cat([prompt.flatten(), chunk.flatten(), *[s.flatten() for s in steps], static.flatten()])

    out = _modes(run)
    assert torch.equal(out["off"], out["ops"]) and torch.equal(out["off"], out["auto"])


def test_act_outputs_are_identical_to_stock_multihead_attention() -> None:
    from policy_toys import random_observations, tiny_policy

    policy = tiny_policy("act", images=True).eval()
    obs = {k: torch.from_numpy(v) for k, v in random_observations(policy, 3, np.random.default_rng(11)).items()}
    out = _modes(lambda: policy.predict_chunk_batch(obs))
    # "off" is nn.MultiheadAttention's own forward; the others run the projections and ark.kernels.attention
    assert torch.equal(out["off"], out["ops"]) and torch.equal(out["off"], out["auto"])
    with kernels.use_kernel_mode("ops"), _OpLog() as log:
        policy.predict_chunk_batch(obs)
    assert sum(n.startswith("ark.attention") for n in log.names) == 2 + 2 * 2  # 2 encoder, 2 x 2 decoder layers
