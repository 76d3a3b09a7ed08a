"""Drive a Panda task from a sentence: the LLM turns it into a typed goal, the goal picks the
task and places its goal region, and the task's scripted expert carries it out in pybullet.

    python -m edge.llm.demo "push the red cube to the left goal"
    python -m edge.llm.demo "pick up the cube and place it at the back" --render demo.png

The scene has one cube; a goal that names another object or colour is carried out on the
cube and said so. Targets are points on the table in the task's goal region (left = +y,
front = +x, seen from the robot base).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import numpy as np

from edge.llm.node import Goal

ENV_FOR_ACTION = {"push": "ark/PandaPush-v0", "pick_place": "ark/PandaPickPlace-v0", "reach": "ark/PandaReach-v0"}
TARGET_XY = {"left goal": (-0.05, 0.12), "right goal": (-0.05, -0.12), "center": (-0.05, 0.0),
             "front": (0.08, 0.0), "back": (-0.18, 0.0)}


def goal_position(goal: Goal, env: Any) -> np.ndarray:
    """Where on the table ``goal.target`` is, at the height the task expects its goal."""
    x, y = TARGET_XY.get(goal.target, TARGET_XY["center"])
    lift = getattr(env.unwrapped, "object_half_height", 0.0) if goal.action == "pick_place" else 0.0
    z = 0.15 if goal.action == "reach" else lift
    return np.array([x, y, z])


def run(goal: Goal, seed: int = 0, render: str | None = None) -> dict[str, Any]:
    """Carry out ``goal`` with the task's scripted expert; returns success, steps and the goal position."""
    import gymnasium as gym

    from envs.experts import expert_for

    env = gym.make(ENV_FOR_ACTION.get(goal.action, "ark/PandaPush-v0"), render_mode="rgb_array" if render else None)
    try:
        pos = goal_position(goal, env)
        obs, info = env.reset(seed=seed, options={"scene": {"goal": pos}})
        expert = expert_for(env)
        expert.reset(seed)
        steps, success = 0, bool(info.get("is_success", False))
        while True:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            steps += 1
            success = success or bool(info.get("is_success", False))
            if terminated or truncated:
                break
        if render:
            import cv2  # opencv-python-headless, from the learn extra

            cv2.imwrite(render, env.render()[..., ::-1])
        return {"env": env.spec.id if env.spec else "", "goal_position": pos.tolist(), "success": success, "steps": steps}
    finally:
        env.close()


def main(argv: Sequence[str] | None = None) -> int:
    from ark.errors import ArkError
    from edge.llm.generate import LLM
    from edge.llm.node import parse_goal

    p = argparse.ArgumentParser(prog="python -m edge.llm.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("instruction")
    p.add_argument("--scene", default="a table with one cube", help="scene description shown to the model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--render", metavar="PNG", help="save the last frame")
    a = p.parse_args(argv)
    try:
        with LLM.load() as llm:
            goal = parse_goal(llm, a.instruction, a.scene)
        print(f"goal: {goal.text}")
        if goal.object != "cube":
            print(f"note: the scene has only a cube; moving the cube (the instruction named a {goal.color} {goal.object})")
        result = run(goal, a.seed, a.render)
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{result['env']}: goal at {np.round(result['goal_position'], 3).tolist()}, "
          f"{'success' if result['success'] else 'failure'} after {result['steps']} steps")
    return 0 if result["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
