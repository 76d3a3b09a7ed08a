"""GGUF reading, block formats, tokenizer and chat template, and bad input files.

Tiny Llama files are written here with the ``gguf`` package (random weights, a 300-token
byte-level vocabulary), so every quantisation type and broken file is tested without
depending on what the shipped model happens to use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gguf  # noqa: E402  (dev dependency: fail loudly when missing)
import tokenizers  # noqa: F401,E402

from ark.errors import ArkError  # noqa: E402
from edge.llm.errors import GGUFError, UnsupportedModelError, UnsupportedQuantError  # noqa: E402
from edge.llm.gguf_reader import GGUFFile, default_model_path  # noqa: E402
from edge.llm.model import ModelArgs, Transformer  # noqa: E402
from edge.llm.quantize import Int4Weight, Int8Weight, from_gguf, gguf_slice  # noqa: E402
from edge.llm.tokenizer import Tokenizer, byte_decoder, render_chatml  # noqa: E402

Q = gguf.GGMLQuantizationType


def _byte_vocab() -> tuple[list[str], list[int], list[str]]:
    """<|endoftext|>, <|im_start|>, <|im_end|>, the 256 byte symbols, and a few merges."""
    chars = sorted(byte_decoder(), key=lambda c: byte_decoder()[c])
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + chars
    merges = ["Ġ t", "h e", "Ġt he"]
    tokens += ["Ġt", "he", "Ġthe"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    return tokens, types, merges


def write_tiny_llama(path: Path, *, wtype: str = "Q8_0", arch: str = "llama", dim: int = 64, n_layer: int = 2,
                     n_head: int = 4, n_kv_head: int = 2, ffn: int = 128, tied: bool = True, seed: int = 0) -> Path:
    """A small random Llama GGUF whose 2-D weights are stored as ``wtype``."""
    rng = np.random.default_rng(seed)
    tokens, types, merges = _byte_vocab()
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(n_layer)
    w.add_uint32(f"{arch}.context_length", 128)
    w.add_uint32(f"{arch}.embedding_length", dim)
    w.add_uint32(f"{arch}.feed_forward_length", ffn)
    w.add_uint32(f"{arch}.attention.head_count", n_head)
    w.add_uint32(f"{arch}.attention.head_count_kv", n_kv_head)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_string("tokenizer.ggml.pre", "smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_chat_template("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}"
                        "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")

    def mat(name: str, rows: int, cols: int) -> None:
        x = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        if wtype in ("F32", "F16"):
            w.add_tensor(name, x.astype(np.float16 if wtype == "F16" else np.float32))
        else:
            qt = getattr(Q, wtype)
            w.add_tensor(name, gguf.quants.quantize(x, qt), raw_dtype=qt)

    def vec(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", vocab, dim)
    if not tied:
        mat("output.weight", vocab, dim)
    vec("output_norm.weight", dim)
    hd = dim // n_head
    for i in range(n_layer):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", dim)
        vec(p + "ffn_norm.weight", dim)
        mat(p + "attn_q.weight", n_head * hd, dim)
        mat(p + "attn_k.weight", n_kv_head * hd, dim)
        mat(p + "attn_v.weight", n_kv_head * hd, dim)
        mat(p + "attn_output.weight", dim, n_head * hd)
        mat(p + "ffn_gate.weight", ffn, dim)
        mat(p + "ffn_up.weight", ffn, dim)
        mat(p + "ffn_down.weight", dim, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- block formats ----------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_blocks_dequantise_like_the_gguf_package(qtype: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((48, 96)).astype(np.float32)
    raw = gguf.quants.quantize(x, getattr(Q, qtype))
    want = gguf.quants.dequantize(raw, getattr(Q, qtype))
    w = from_gguf(qtype, raw, (48, 96))
    np.testing.assert_array_equal(w.dequantize().numpy(), want)
    # the dequantising matmul equals x @ W.T with the dequantised weight, also across row chunks
    inp = torch.randn(3, 96)
    torch.testing.assert_close(w(inp), inp @ torch.from_numpy(want).t(), rtol=1e-5, atol=1e-5)
    rows = torch.tensor([5, 0, 47])
    np.testing.assert_array_equal(w.dequantize_rows(rows).numpy(), want[[5, 0, 47]])
    assert w.nbytes < x.nbytes / 3  # stays low-bit in memory


def test_chunked_matmul_matches_on_a_wide_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    import ark.kernels.reference as ref

    monkeypatch.setattr(ref, "CHUNK_ELEMENTS", 64 * 7)  # forces many uneven row chunks in the forward
    x = np.random.default_rng(2).standard_normal((100, 64)).astype(np.float32)
    raw = gguf.quants.quantize(x, Q.Q4_1)
    w = from_gguf("Q4_1", raw, (100, 64))
    inp = torch.randn(1, 5, 64)
    torch.testing.assert_close(w(inp), inp @ w.dequantize().t(), rtol=1e-5, atol=1e-5)


def test_int8_and_int4_quantisation_error_is_small() -> None:
    w = torch.randn(64, 256)
    i8, i4 = Int8Weight.from_float(w), Int4Weight.from_float(w, group_size=32)
    assert (i8.dequantize() - w).abs().max() <= w.abs().amax(1).max() / 127 * 0.51
    rel4 = (i4.dequantize() - w).norm() / w.norm()
    assert rel4 < 0.12
    assert i8.nbytes < w.numel() * 1.1 and i4.nbytes < w.numel() * 0.65
    with pytest.raises(UnsupportedQuantError):
        Int4Weight.from_float(torch.randn(4, 48), group_size=32)


def test_int8bf16_weight_matches_its_dequantised_matmul_within_bf16_rounding() -> None:
    from edge.llm.quantize import FloatWeight, Int8BF16Weight, quantize_weight

    w = torch.randn(96, 256)
    i8 = Int8BF16Weight.from_float(w)
    assert (i8.dequantize() - w).abs().max() <= w.abs().amax(1).max() / 127 * 0.51 * 1.01  # bf16 scale
    assert i8.nbytes < w.numel() * 1.1
    for rows in (1, 40):  # one token (the int8pack kernel) and a prompt chunk (dequantised bf16 rows)
        x = torch.randn(rows, 256)
        want = x @ i8.dequantize().t()
        got = i8(x)
        assert got.dtype == torch.float32 and got.shape == (rows, 96)
        assert ((got - want).norm() / want.norm()) < 1e-2  # activations rounded to bf16: ~2^-9 relative
    fused = quantize_weight(FloatWeight(w), "int8bf16")
    assert isinstance(fused, Int8BF16Weight)
    torch.testing.assert_close(fused.dequantize(), i8.dequantize())


def test_w8a8_weight_quantises_each_token_on_its_own_and_smooths_outlier_channels() -> None:
    from edge.llm.quantize import FloatWeight, W8A8Weight, quantize_weight

    torch.manual_seed(0)
    w = torch.randn(96, 256) * 0.05
    q = W8A8Weight.from_float(w)
    assert q.nbytes < w.numel() * 1.1
    assert ((q.dequantize() - w).norm() / w.norm()) < 0.01
    x = torch.randn(2, 256)
    x[1] *= 1000.0  # one token a thousand times louder must not flatten the other to zero
    got, want = q(x), x @ w.t()
    assert got.shape == (2, 96) and got.dtype == torch.float32
    for row in range(2):
        assert ((got[row] - want[row]).norm() / want[row].norm()) < 0.03  # 8-bit weights and activations
    torch.testing.assert_close(q(x[:1]), got[:1], rtol=1e-5, atol=1e-5)  # decode (one row) = prompt rows

    # An outlier input channel (as LLM activations have) ruins one 8-bit scale per token ...
    x = torch.randn(64, 256)
    x[:, 7] *= 200.0
    want = x @ w.t()
    plain = (q(x) - want).norm() / want.norm()
    # ... and SmoothQuant factors from the channel's measured range move it into the weights.
    smooth = W8A8Weight.from_float(w, act_absmax=x.abs().amax(0), alpha=0.6)
    smoothed = (smooth(x) - want).norm() / want.norm()
    assert smoothed < plain / 2, (float(plain), float(smoothed))
    assert ((smooth.dequantize() - w).norm() / w.norm()) < 0.1  # dequantize undoes the smoothing

    fused = quantize_weight(FloatWeight(w), "w8a8")
    assert isinstance(fused, W8A8Weight)
    torch.testing.assert_close(fused.dequantize(), q.dequantize())
    with pytest.raises(UnsupportedQuantError, match="CPU"):
        q.matmul(torch.empty(1, 256, device="meta"))


def test_gguf_slice_cuts_rows_and_block_columns() -> None:
    x = np.random.default_rng(3).standard_normal((8, 128)).astype(np.float32)
    raw = gguf.quants.quantize(x, Q.Q4_1)
    full = from_gguf("Q4_1", raw, (8, 128)).dequantize()
    part, shape = gguf_slice(raw, "Q4_1", (8, 128), rows=slice(2, 6), cols=slice(32, 96))
    assert shape == (4, 64)
    torch.testing.assert_close(from_gguf("Q4_1", part, shape).dequantize(), full[2:6, 32:96])
    with pytest.raises(UnsupportedQuantError, match="block"):
        gguf_slice(raw, "Q4_1", (8, 128), cols=slice(0, 40))


# -- tiny files -----------------------------------------------------------------------------
@pytest.mark.parametrize("wtype", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"])
def test_tiny_llama_builds_and_quantised_path_matches_float_path(tmp_path: Path, wtype: str) -> None:
    f = GGUFFile(write_tiny_llama(tmp_path / "tiny.gguf", wtype=wtype, tied=wtype != "Q4_0"))
    args = ModelArgs.from_gguf(f)
    assert (args.n_layer, args.dim, args.n_head, args.n_kv_head, args.head_dim) == (2, 64, 4, 2, 16)
    native, ref = Transformer.from_gguf(f, mode="gguf"), Transformer.from_gguf(f, mode="float")
    if wtype.startswith("Q"):
        assert native.nbytes < ref.nbytes / 2
    ids = torch.tensor([5, 70, 200, 9, 33])
    for m in (native, ref):
        m.setup_cache(32)
    torch.testing.assert_close(native(ids, 0, last_only=False), ref(ids, 0, last_only=False), rtol=1e-4, atol=1e-4)


def test_incremental_decode_equals_full_forward(tmp_path: Path) -> None:
    """KV cache: prompt then one token at a time gives the logits of one full pass."""
    f = GGUFFile(write_tiny_llama(tmp_path / "tiny.gguf", wtype="F32"))
    m = Transformer.from_gguf(f)
    m.setup_cache(32)
    ids = [7, 90, 13, 250, 44, 61]
    full = m(torch.tensor(ids), 0, last_only=False)
    m.setup_cache(32)
    m(torch.tensor(ids[:2]), 0)
    m(torch.tensor(ids[2:4]), 2)  # a chunk after earlier positions uses the explicit mask
    steps = [m(torch.tensor([t]), 4 + i)[-1] for i, t in enumerate(ids[4:])]
    torch.testing.assert_close(torch.stack(steps), full[4:], rtol=1e-4, atol=1e-4)


def test_tokenizer_from_tiny_file(tmp_path: Path) -> None:
    tok = Tokenizer.from_gguf(GGUFFile(write_tiny_llama(tmp_path / "tiny.gguf")))
    ids = tok.encode("<|im_start|>the 42")
    assert ids[0] == 1  # control token matched whole
    assert tok.tokens[ids[1]] == "t" and "Ġthe" not in [tok.tokens[i] for i in ids]
    assert [tok.tokens[i] for i in ids[-3:]] == ["Ġ", "4", "2"]  # digits split one by one
    assert tok.decode(ids) == "the 42"
    assert tok.token_bytes(ids[-1]) == b"2"
    assert tok.stop_ids == {0, 2}


# -- bad input ----------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert isinstance(exc, ArkError) and msg and "\n" not in msg
    return msg


def test_not_a_gguf_file(tmp_path: Path) -> None:
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(GGUFError) as e:
        GGUFFile(p)
    assert "not a GGUF file" in _one_line(e.value)
    with pytest.raises(GGUFError, match="no such GGUF file"):
        GGUFFile(tmp_path / "missing.gguf")


def test_truncated_gguf_file(tmp_path: Path) -> None:
    p = write_tiny_llama(tmp_path / "tiny.gguf")
    data = p.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(GGUFError) as e:
        GGUFFile(cut)
    assert "truncated" in _one_line(e.value) or "not a readable" in str(e.value)
    head = tmp_path / "head.gguf"
    head.write_bytes(data[:200])  # cut inside the metadata
    with pytest.raises(GGUFError):
        GGUFFile(head)


def test_non_llama_architecture(tmp_path: Path) -> None:
    f = GGUFFile(write_tiny_llama(tmp_path / "gpt2.gguf", arch="gpt2"))
    with pytest.raises(UnsupportedModelError) as e:
        Transformer.from_gguf(f)
    assert "not Llama-family" in _one_line(e.value)


def test_unsupported_quant_type(tmp_path: Path) -> None:
    f = GGUFFile(write_tiny_llama(tmp_path / "q5.gguf", wtype="Q5_0"))
    with pytest.raises(UnsupportedQuantError) as e:
        Transformer.from_gguf(f)
    assert "Q5_0" in _one_line(e.value)


def test_unknown_mode(tmp_path: Path) -> None:
    f = GGUFFile(write_tiny_llama(tmp_path / "tiny.gguf"))
    with pytest.raises(UnsupportedQuantError, match="unknown weight mode"):
        Transformer.from_gguf(f, mode="int3")


# -- the shipped model's file (metadata only: fast) -----------------------------------------------
def test_smollm2_metadata_and_template() -> None:
    f = GGUFFile(default_model_path())
    a = ModelArgs.from_gguf(f)
    assert (a.n_layer, a.dim, a.n_head, a.n_kv_head, a.ffn_dim, a.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert a.rope_base == 100000.0
    assert "output.weight" not in f.tensors  # tied embeddings
    tok = Tokenizer.from_gguf(f)
    msgs = [{"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(msgs)
    assert text == render_chatml(msgs)  # the file's Jinja template and the built-in ChatML agree
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok.encode(text)
    assert ids[0] == 1 and ids[-3:] == [520, 9531, 198]
    # digits are split one by one, as llama.cpp and SmolLM2's own tokenizer.json do
    assert tok.encode("Hello world 12345 it's") == [19556, 905, 216, 33, 34, 35, 36, 37, 357, 506]
