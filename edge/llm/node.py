"""LLMNode: an Ark service that turns a language command into a typed goal.

    node = LLMNode("llm").start()          # loads SmolLM2 (or pass llm=LLM.load(...))
    client = other_node.client("/llm/goal", GoalRequest, Goal)
    goal = client.call(GoalRequest("push the red cube to the left goal"), timeout=60)
    goal.action, goal.color, goal.object, goal.target   # "push", "red", "cube", "left goal"

Decoding is constrained to ``GOAL_SCHEMA`` (``constrain.py``), so the reply always parses
and every field is one of the listed words; a scene description, when given, is shown to
the model beside the instruction. ``/llm/chat`` answers free text (``ark/String``).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from ark.messages import String, message
from ark.node import Node
from edge.llm.generate import LLM, SamplingParams

log = logging.getLogger("edge.llm.node")

ACTIONS = ["push", "pick_place", "reach"]
COLORS = ["red", "green", "blue", "yellow"]
OBJECTS = ["cube", "sphere", "cylinder"]
TARGETS = ["left goal", "right goal", "center", "front", "back"]

GOAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ACTIONS},
        "color": {"type": "string", "enum": COLORS},
        "object": {"type": "string", "enum": OBJECTS},
        "target": {"type": "string", "enum": TARGETS},
    },
    "required": ["action", "color", "object", "target"],
}

SYSTEM_PROMPT = (
    "You convert a robot instruction into a JSON goal with the fields action "
    f"({', '.join(ACTIONS)}), color, object and target ({', '.join(TARGETS)}).\n"
    'Example: "pick up the blue sphere and put it on the right goal" -> '
    '{"action":"pick_place","color":"blue","object":"sphere","target":"right goal"}'
)


@message("ark/llm/GoalRequest")
@dataclass
class GoalRequest:
    """A language command, and optionally a description of the scene it refers to."""

    instruction: str = ""
    scene: str = ""


@message("ark/llm/Goal")
@dataclass
class Goal:
    """A typed manipulation goal: what to do with which object, and where."""

    action: str = ""
    color: str = ""
    object: str = ""
    target: str = ""
    text: str = ""  # the JSON the model wrote


def goal_messages(instruction: str, scene: str = "") -> list[dict[str, str]]:
    """Chat messages that ask for the goal of ``instruction`` (in ``scene``)."""
    user = instruction if not scene else f"Scene: {scene}\nInstruction: {instruction}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_goal(llm: LLM, instruction: str, scene: str = "", schema: dict[str, Any] = GOAL_SCHEMA) -> Goal:
    """The typed goal of ``instruction``, decoded greedily under ``schema``."""
    value = llm.generate_json(llm.chat_prompt(goal_messages(instruction, scene)), schema,
                              SamplingParams(max_new_tokens=64))
    return Goal(**{k: value[k] for k in ("action", "color", "object", "target") if k in value},
                text=json.dumps(value, separators=(",", ":")))


class LLMNode(Node):
    """Serves ``<prefix>/goal`` (GoalRequest -> Goal) and ``<prefix>/chat`` (String -> String).

    ``llm``: a loaded model to serve (it stays the caller's); otherwise ``LLM.load(**load)``.
    Requests are answered one at a time on the node's executor; callers should allow
    seconds (``client.call(..., timeout=60)``).
    """

    def __init__(self, name: str = "llm", *, llm: LLM | None = None, prefix: str = "/llm",
                 load: dict[str, Any] | None = None, **node_kwargs: Any) -> None:
        super().__init__(name, **node_kwargs)
        self._owns_llm = llm is None  # a model passed in belongs to the caller: shutdown() leaves it open
        self.llm = llm if llm is not None else LLM.load(**(load or {}))
        self._lock = threading.Lock()  # one generation at a time: the model has one KV cache
        self.service(f"{prefix}/goal", GoalRequest, Goal, self._goal)
        self.service(f"{prefix}/chat", String, String, self._chat)

    def _goal(self, req: GoalRequest) -> Goal:
        with self._lock:
            goal = parse_goal(self.llm, req.instruction, req.scene)
        log.info("goal for %r: %s", req.instruction, goal.text)
        return goal

    def _chat(self, req: String) -> String:
        with self._lock:
            return String(self.llm.chat([{"role": "user", "content": req.data}], max_new_tokens=128))

    def shutdown(self) -> None:
        super().shutdown()
        if self._owns_llm:
            self.llm.close()
