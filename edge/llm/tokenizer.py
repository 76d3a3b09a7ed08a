"""The tokenizer and chat template stored in a GGUF file.

Byte-level BPE (``tokenizer.ggml.model == "gpt2"``) is rebuilt with the ``tokenizers``
library from the file's tokens and merges. The pre-tokenizer follows
``tokenizer.ggml.pre`` the way llama.cpp does: SmolLM2's ``smollm`` splits every digit on
its own before the GPT-2 regex (as its original ``tokenizer.json`` does). Control tokens
(``<|im_start|>`` …) are special: they are matched whole in text and skipped when decoding
output. The chat template is the file's Jinja template, rendered in a sandbox; without
jinja2 a built-in ChatML renderer stands in.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Sequence

from edge.llm.errors import UnsupportedModelError

if TYPE_CHECKING:
    from edge.llm.gguf_reader import GGUFFile

log = logging.getLogger("edge.llm.tokenizer")

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's pre-tokenizer families (llama-vocab.cpp) for byte-level BPE vocabularies.
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2 = {"gpt2", "gpt-2", "default", "mpt", "olmo", "jais", "trillion"}
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3 = {"llama-bpe", "llama3", "smaug-bpe", "falcon3"}


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode stand-in for each byte, inverted (char -> byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Tokenizer:
    """Encode/decode text and render chat messages for one GGUF model."""

    def __init__(self, tokens: Sequence[str], token_types: Sequence[int] | None, merges: Sequence[str], pre: str,
                 bos_id: int | None, eos_id: int | None, add_bos: bool, chat_template: str | None,
                 eot_id: int | None = None) -> None:
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        self.tokens = list(tokens)
        self.token_types = list(token_types) if token_types is not None else [TOKEN_NORMAL] * len(self.tokens)
        vocab = {tok: i for i, tok in enumerate(self.tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        tk = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre in _DIGITS_THEN_GPT2:
            tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        elif pre in _LLAMA3:
            tk.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        else:
            if pre not in _GPT2:
                log.warning("unknown pre-tokenizer %r: using GPT-2's", pre)
            tk.pre_tokenizer = byte_level
        tk.decoder = decoders.ByteLevel()
        special = [AddedToken(tok, special=True, normalized=False)
                   for tok, ty in zip(self.tokens, self.token_types) if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
        tk.add_special_tokens(special)
        self._tk = tk
        self.special_ids = {i for i, ty in enumerate(self.token_types) if ty == TOKEN_CONTROL}
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.chat_template = chat_template
        # Tokens that end a reply: eos, end-of-turn, and ChatML's <|im_end|> when the template uses it.
        self.stop_ids = {i for i in (eos_id, eot_id) if i is not None}
        for name in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>"):
            if name in vocab and self.token_types[vocab[name]] == TOKEN_CONTROL:
                self.stop_ids.add(vocab[name])

    @classmethod
    def from_gguf(cls, f: "GGUFFile") -> "Tokenizer":
        model = f.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise UnsupportedModelError(f"{f.path.name}: tokenizer model {model!r} is not supported "
                                        "(byte-level BPE, 'gpt2', only)")
        tokens, merges = f.get("tokenizer.ggml.tokens"), f.get("tokenizer.ggml.merges")
        if not tokens or merges is None:
            raise UnsupportedModelError(f"{f.path.name}: tokenizer tokens or merges are missing")
        return cls(tokens, f.get("tokenizer.ggml.token_type"), merges, f.get("tokenizer.ggml.pre", "default"),
                   f.get("tokenizer.ggml.bos_token_id"), f.get("tokenizer.ggml.eos_token_id"),
                   bool(f.get("tokenizer.ggml.add_bos_token", False)), f.get("tokenizer.chat_template"),
                   f.get("tokenizer.ggml.eot_token_id"))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; control tokens written in the text become their ids."""
        ids = self._tk.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self._tk.decode(list(ids), skip_special_tokens=skip_special)

    def token_bytes(self, i: int) -> bytes:
        """The raw bytes a token stands for (control tokens: their text)."""
        tok = self.tokens[i]
        if self.token_types[i] != TOKEN_NORMAL:
            return tok.encode()
        table = byte_decoder()
        return bytes(table[c] for c in tok if c in table)

    def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` ([{"role": ..., "content": ...}]), ready to encode."""
        if self.chat_template:
            try:
                return _render_jinja(self.chat_template, messages, add_generation_prompt,
                                     self.tokens[self.bos_id] if self.bos_id is not None else "",
                                     self.tokens[self.eos_id] if self.eos_id is not None else "")
            except ImportError:
                pass
        return render_chatml(messages, add_generation_prompt)


def render_chatml(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                  default_system: str | None = "You are a helpful AI assistant named SmolLM, trained by Hugging Face") -> str:
    """ChatML, as SmolLM2's template writes it (used when jinja2 is not installed)."""
    out = []
    if messages and messages[0]["role"] != "system" and default_system:
        out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        from edge.llm.errors import LLMError
        raise LLMError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def _render_jinja(template: str, messages: Sequence[dict[str, str]], add_generation_prompt: bool,
                  bos: str, eos: str) -> str:
    return _compiled(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                      bos_token=bos, eos_token=eos)
