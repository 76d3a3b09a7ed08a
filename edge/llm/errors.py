"""Errors a user of the LLM runtime can cause; each is one line, printed by the CLI without a traceback."""

from __future__ import annotations

from ark.errors import ArkError


class LLMError(ArkError):
    """Base class of the LLM runtime's user-facing errors."""


class GGUFError(LLMError):
    """A GGUF file is missing, truncated or not GGUF at all."""


class UnsupportedModelError(LLMError):
    """The GGUF file holds a model this runtime does not build (not Llama-family, missing metadata)."""


class UnsupportedQuantError(LLMError):
    """A tensor uses a quantisation type this runtime cannot read."""


class ContextOverflowError(LLMError):
    """The prompt does not fit the model's (or the cache's) context."""


class ConstraintError(LLMError):
    """A JSON schema or grammar cannot be compiled, or no token sequence can satisfy it."""


class MemoryBudgetError(LLMError):
    """The memory budget is too small for even one streamed layer."""


class TensorParallelError(LLMError):
    """Tensor-parallel setup or exchange failed."""


class PeerTimeoutError(TensorParallelError):
    """A tensor-parallel peer did not answer in time (dead or unreachable)."""
