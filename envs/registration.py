"""Registers Ark's environments with Gymnasium under the ``ark/`` namespace.

Imports nothing but gymnasium: gymnasium calls this at start-up through the
``gymnasium.envs`` entry point, and environment modules load only on ``gymnasium.make``.
"""

from __future__ import annotations

import gymnasium

# id -> (entry point, max_episode_steps). Steps are env steps at the task's control rate
# (20 Hz for the arm, 10 Hz for the base), long enough for the scripted experts with margin.
ENVS: dict[str, tuple[str, int]] = {
    "ark/PandaReach-v0": ("envs.panda_tasks:PandaReachEnv", 50),
    "ark/PandaPush-v0": ("envs.panda_tasks:PandaPushEnv", 150),
    "ark/PandaPickPlace-v0": ("envs.panda_tasks:PandaPickPlaceEnv", 100),
    "ark/HuskyNavigate-v0": ("envs.husky_navigate:HuskyNavigateEnv", 200),
}


def register_all() -> None:
    """Register every Ark environment (idempotent)."""
    for env_id, (entry_point, steps) in ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=steps)
