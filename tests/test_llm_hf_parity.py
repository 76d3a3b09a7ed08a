"""Greedy parity with a reference decoder: HF transformers loading the same GGUF file.

transformers and accelerate (its GGUF loader needs it) come with the dev install; Ark itself
never depends on them.
"""

from __future__ import annotations

import pytest
import torch

import accelerate  # noqa: E402,F401  (transformers' GGUF loader needs it; fail loudly if the dev install lacks it)
import transformers  # noqa: E402,F401

from edge.llm.generate import LLM  # noqa: E402
from edge.llm.gguf_reader import default_model_path  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about a robot arm that pushes a red cube."}],
]
N_TOKENS = 24


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return tok, model.eval()


@pytest.fixture(scope="module")
def ark() -> LLM:
    return LLM.load()


@pytest.mark.parametrize("messages", PROMPTS, ids=["capital", "robot"])
def test_greedy_tokens_match_transformers(hf, ark: LLM, messages) -> None:
    tok, model = hf
    hf_text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert hf_text == ark.tokenizer.apply_chat_template(messages)
    ids = ark.chat_prompt(messages)
    assert ids == tok(hf_text)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=N_TOKENS, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    want = out[0, len(ids):].tolist()
    assert ark.greedy_ids(ids, N_TOKENS) == want
