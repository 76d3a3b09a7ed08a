"""Constrained decoding: a finite-state machine over characters decides which tokens may come next.

A JSON schema (the subset below) or a hand-built grammar compiles to a character NFA
(Thompson construction); its DFA is built lazily while decoding. At each step the allowed
tokens are those whose text keeps the DFA alive; stop tokens are allowed only in an
accepting state. Masks are cached per DFA state, so a second request with the same schema
costs almost nothing.

Schema subset: ``type`` object (every property in ``properties`` is written, in order,
compact JSON), string (``enum``, ``minLength``/``maxLength``, printable ASCII), integer
and number (``minimum``/``maximum`` of small ranges become enums), boolean, null, array
(``items``, ``minItems``/``maxItems``); ``enum``, ``const``, ``anyOf``/``oneOf``.
A schema whose language is empty (an empty enum, contradictory bounds, a required
property without a schema, an enum of the wrong type) is a ConstraintError before any
token is generated.

    c = JsonSchemaConstraint({"type": "object", "properties": {"action": {"enum": ["push", "pick"]}}}, tok)
    text = llm.generate(prompt, constraint=c, max_new_tokens=64)
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from edge.llm.errors import ConstraintError

if TYPE_CHECKING:
    from edge.llm.tokenizer import Tokenizer

PRINTABLE = frozenset(c for c in string.printable if c not in "\t\n\r\x0b\x0c")
STRING_CHARS = PRINTABLE - {'"', "\\"}
DIGITS = frozenset("0123456789")


# -- grammar nodes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GrammarNode:
    """A regular language over characters."""


@dataclass(frozen=True)
class Lit(GrammarNode):
    text: str


@dataclass(frozen=True)
class Chars(GrammarNode):
    chars: frozenset


@dataclass(frozen=True)
class Seq(GrammarNode):
    parts: tuple


@dataclass(frozen=True)
class Alt(GrammarNode):
    options: tuple


@dataclass(frozen=True)
class Repeat(GrammarNode):
    node: GrammarNode
    lo: int
    hi: int


def seq(*parts: GrammarNode) -> GrammarNode:
    return Seq(tuple(parts))


def alt(*options: GrammarNode) -> GrammarNode:
    return Alt(tuple(options))


def choice(words: Sequence[str]) -> GrammarNode:
    """Exactly one of ``words``."""
    return Alt(tuple(Lit(w) for w in words))


# -- JSON schema -> grammar ----------------------------------------------------------------------------
def _json_value_ok(schema: dict, value: Any) -> bool:
    t = schema.get("type")
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "null": lambda v: v is None, "object": lambda v: isinstance(v, dict),
              "array": lambda v: isinstance(v, list)}
    return t is None or (t in checks and checks[t](value))


def schema_to_grammar(schema: Any, where: str = "$") -> GrammarNode:
    """The grammar of compact JSON texts valid under ``schema``; ConstraintError if unsupported or empty."""
    if not isinstance(schema, dict):
        raise ConstraintError(f"schema at {where}: expected an object, got {type(schema).__name__}")
    for key in ("$ref", "not", "allOf", "patternProperties", "if"):
        if key in schema:
            raise ConstraintError(f"schema at {where}: {key!r} is not supported by the finite-state decoder")
    if "const" in schema:
        return Lit(json.dumps(schema["const"], separators=(",", ":")))
    if "enum" in schema:
        values = [v for v in schema["enum"] if _json_value_ok(schema, v)]
        if not values:
            raise ConstraintError(f"schema at {where} cannot be satisfied: its enum has no value of type "
                                  f"{schema.get('type', 'any')}")
        return choice([json.dumps(v, separators=(",", ":")) for v in values])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            if not schema[key]:
                raise ConstraintError(f"schema at {where} cannot be satisfied: empty {key}")
            return Alt(tuple(schema_to_grammar(s, f"{where}/{key}/{i}") for i, s in enumerate(schema[key])))
    t = schema.get("type")
    if isinstance(t, list):
        return Alt(tuple(schema_to_grammar({**schema, "type": x}, where) for x in t))
    if t == "object":
        props = schema.get("properties", {})
        missing = [k for k in schema.get("required", []) if k not in props]
        if missing:
            raise ConstraintError(f"schema at {where} cannot be satisfied here: required propert"
                                  f"{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
                                  "without a schema in 'properties'")
        parts: list[GrammarNode] = [Lit("{")]
        for i, (name, sub) in enumerate(props.items()):
            parts.append(Lit(("," if i else "") + json.dumps(name) + ":"))
            parts.append(schema_to_grammar(sub, f"{where}/{name}"))
        parts.append(Lit("}"))
        return Seq(tuple(parts))
    if t == "string":
        lo, hi = int(schema.get("minLength", 0)), int(schema.get("maxLength", 32))
        if lo > hi:
            raise ConstraintError(f"schema at {where} cannot be satisfied: minLength {lo} > maxLength {hi}")
        return seq(Lit('"'), Repeat(Chars(STRING_CHARS), lo, hi), Lit('"'))
    if t in ("integer", "number"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and hi is not None:
            if lo > hi:
                raise ConstraintError(f"schema at {where} cannot be satisfied: minimum {lo} > maximum {hi}")
            if t == "integer" and hi - lo <= 256:
                return choice([str(v) for v in range(int(lo), int(hi) + 1)])
        whole = alt(Lit("0"), seq(Chars(DIGITS - {"0"}), Repeat(Chars(DIGITS), 0, 8)))
        sign = Repeat(Lit("-"), 0, 0 if lo is not None and lo >= 0 else 1)
        if t == "integer":
            return seq(sign, whole)
        return seq(sign, whole, Repeat(seq(Lit("."), Repeat(Chars(DIGITS), 1, 6)), 0, 1))
    if t == "boolean":
        return choice(["true", "false"])
    if t == "null":
        return Lit("null")
    if t == "array":
        item = schema_to_grammar(schema.get("items", {"type": "string"}), f"{where}/items")
        lo, hi = int(schema.get("minItems", 0)), int(schema.get("maxItems", 8))
        if lo > hi:
            raise ConstraintError(f"schema at {where} cannot be satisfied: minItems {lo} > maxItems {hi}")
        if hi == 0:
            return Lit("[]")
        items = seq(item, Repeat(seq(Lit(","), item), max(0, lo - 1), hi - 1))
        return seq(Lit("["), items if lo > 0 else Repeat(items, 0, 1), Lit("]"))
    raise ConstraintError(f"schema at {where}: type {t!r} is not supported by the finite-state decoder")


# -- NFA and lazy DFA ----------------------------------------------------------------------------------
class Automaton:
    """A character automaton for a grammar: ``start``, ``step(state, char)``, ``accepting(state)``."""

    def __init__(self, grammar: GrammarNode) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[frozenset, int]]] = []
        start, self.final = self._build(grammar)
        self.start = self._closure({start})
        self._steps: dict[tuple[frozenset, str], frozenset] = {}
        if not self._nonempty():
            raise ConstraintError("the schema cannot be satisfied: no text matches it")

    def _new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def _build(self, n: GrammarNode) -> tuple[int, int]:
        s, e = self._new(), self._new()
        if isinstance(n, Lit):
            cur = s
            for ch in n.text:
                nxt = self._new()
                self.edges[cur].append((frozenset(ch), nxt))
                cur = nxt
            self.eps[cur].append(e)
        elif isinstance(n, Chars):
            self.edges[s].append((n.chars, e))
        elif isinstance(n, Seq):
            cur = s
            for part in n.parts:
                a, b = self._build(part)
                self.eps[cur].append(a)
                cur = b
            self.eps[cur].append(e)
        elif isinstance(n, Alt):
            for opt in n.options:
                a, b = self._build(opt)
                self.eps[s].append(a)
                self.eps[b].append(e)
        elif isinstance(n, Repeat):
            cur = s
            for i in range(n.hi):
                a, b = self._build(n.node)
                self.eps[cur].append(a)
                if i >= n.lo:
                    self.eps[cur].append(e)  # optional copies may be skipped
                cur = b
            self.eps[cur].append(e)
            if n.lo > n.hi:
                self.eps[s].clear()
        else:
            raise ConstraintError(f"unknown grammar node {n!r}")
        return s, e

    def _closure(self, states: set[int]) -> frozenset:
        stack, seen = list(states), set(states)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)

    def _nonempty(self) -> bool:
        seen, stack = set(self.start), list(self.start)
        while stack:
            s = stack.pop()
            if s == self.final:
                return True
            for t in self.eps[s] + [t for _, t in self.edges[s]]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return False

    def step(self, state: frozenset, ch: str) -> frozenset:
        key = (state, ch)
        nxt = self._steps.get(key)
        if nxt is None:
            targets = {t for s in state for chars, t in self.edges[s] if ch in chars}
            nxt = self._closure(targets) if targets else frozenset()
            self._steps[key] = nxt
        return nxt

    def walk(self, state: frozenset, text: str) -> frozenset:
        for ch in text:
            state = self.step(state, ch)
            if not state:
                break
        return state

    def accepting(self, state: frozenset) -> bool:
        return self.final in state

    def first_chars(self, state: frozenset) -> set[str]:
        out: set[str] = set()
        for s in state:
            for chars, _ in self.edges[s]:
                out |= chars
        return out

    def matches(self, text: str) -> bool:
        return self.accepting(self.walk(self.start, text))


class _Vocab:
    """Token texts grouped by first character (built once per tokenizer)."""

    def __init__(self, tokenizer: "Tokenizer") -> None:
        self.size = tokenizer.vocab_size
        self.by_first: dict[str, list[tuple[int, str]]] = {}
        for i in range(self.size):
            if i in tokenizer.special_ids:
                continue
            try:
                text = tokenizer.token_bytes(i).decode("utf-8")
            except UnicodeDecodeError:
                continue  # a piece of a multi-byte character: never needed for ASCII JSON
            if text and all(c in PRINTABLE for c in text):
                self.by_first.setdefault(text[0], []).append((i, text))


_VOCABS: dict[int, _Vocab] = {}


class FiniteStateConstraint:
    """Allows only tokens that keep the output inside ``grammar``; stop tokens once it is complete."""

    def __init__(self, grammar: GrammarNode | Automaton, tokenizer: "Tokenizer") -> None:
        self.fsm = grammar if isinstance(grammar, Automaton) else Automaton(grammar)
        self.tokenizer = tokenizer
        key = id(tokenizer)
        if key not in _VOCABS:
            _VOCABS[key] = _Vocab(tokenizer)
        self.vocab = _VOCABS[key]
        self.stop_ids = sorted(tokenizer.stop_ids)
        self._masks: dict[frozenset, torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.state = self.fsm.start
        self.consumed = 0
        self.text = ""

    def _mask(self, state: frozenset) -> torch.Tensor:
        mask = self._masks.get(state)
        if mask is None:
            mask = torch.zeros(self.vocab.size, dtype=torch.bool)
            allowed = []
            for ch in self.fsm.first_chars(state):
                for i, text in self.vocab.by_first.get(ch, ()):
                    if self.fsm.walk(state, text):
                        allowed.append(i)
            if allowed:
                mask[torch.tensor(allowed)] = True
            if self.fsm.accepting(state):
                mask[self.stop_ids] = True
            self._masks[state] = mask
        return mask

    def __call__(self, generated: list[int]) -> torch.Tensor:
        if len(generated) < self.consumed:
            self.reset()  # a new generation
        for tok in generated[self.consumed:]:
            piece = self.tokenizer.token_bytes(tok).decode("utf-8", errors="replace")
            self.state = self.fsm.walk(self.state, piece)
            self.text += piece
        self.consumed = len(generated)
        return self._mask(self.state)

    @property
    def complete(self) -> bool:
        return self.fsm.accepting(self.state)


class JsonSchemaConstraint(FiniteStateConstraint):
    """Decoding constrained to compact JSON valid under ``schema`` (the subset in the module docstring)."""

    _automata: dict[str, Automaton] = {}

    def __init__(self, schema: dict, tokenizer: "Tokenizer") -> None:
        key = json.dumps(schema, sort_keys=True)
        fsm = self._automata.get(key)
        if fsm is None:
            fsm = self._automata[key] = Automaton(schema_to_grammar(schema))
        self.schema = schema
        super().__init__(fsm, tokenizer)
