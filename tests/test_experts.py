"""Scripted experts: each solves its task on seeded episodes and is deterministic."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from envs.experts import expert_for, run_episode

# Seeds 100.. are disjoint from the 0..99 used for the published 100-episode figures.
EPISODES = {"ark/PandaReach-v0": 10, "ark/PandaPush-v0": 10, "ark/PandaPickPlace-v0": 10, "ark/HuskyNavigate-v0": 10}


@pytest.mark.parametrize("env_id", list(EPISODES))
def test_expert_solves_its_task(env_id):
    env = gym.make(env_id)
    expert = expert_for(env)
    results = [run_episode(env, expert, seed) for seed in range(100, 100 + EPISODES[env_id])]
    env.close()
    successes = sum(r["success"] for r in results)
    assert successes >= 9, f"{env_id}: {successes}/10, failed seeds {[r['seed'] for r in results if not r['success']]}"
    # Success ends the episode early (terminate_on_success), well before the time limit.
    assert np.mean([r["steps"] for r in results]) < gym.spec(env_id).max_episode_steps / 2


def test_expert_is_deterministic_and_works_with_cameras():
    env = gym.make("ark/PandaPush-v0", cameras=[{"name": "front", "width": 16, "height": 16}])
    expert = expert_for(env)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=5)
        expert.reset()
        actions = []
        for _ in range(20):
            actions.append(expert(obs))
            obs, *_ = env.step(actions[-1])
        runs.append(np.array(actions))
    assert np.array_equal(runs[0], runs[1])
    assert runs[0].dtype == np.float32 and np.all(np.abs(runs[0]) <= 1.0)
    env.close()


def test_evaluator_command_line():
    out = subprocess.run([sys.executable, "-m", "envs.experts", "--env", "ark/PandaReach-v0", "--episodes", "3",
                          "--no-progress"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ark/PandaReach-v0: 3/3 successful (100.0 %)" in out.stdout
    out = subprocess.run([sys.executable, "-m", "envs.experts", "--env", "ark/Nope-v0"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr
