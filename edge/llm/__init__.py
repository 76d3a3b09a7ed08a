"""On-device Llama-family LLM runtime."""
