"""Gymnasium environments on pybullet, scripted experts and robot drivers.

    import gymnasium
    env = gymnasium.make("envs:ark/PandaPush-v0")            # "envs:" imports this package first
    env = gymnasium.make("ark/PandaPush-v0")                 # the same, once envs is imported
    env = gymnasium.make("ark/PandaPush-v0", backend="node", driver="panda_driver")  # over Ark

Importing this package registers the environments (it imports only gymnasium; pybullet loads
on ``gymnasium.make``). Environments: ``ark/PandaReach-v0``, ``ark/PandaPush-v0``,
``ark/PandaPickPlace-v0``, ``ark/HuskyNavigate-v0`` (``envs.registration``). Scripted experts:
``envs.experts``. The driver interface a real robot implements: ``envs.driver``.
"""

from __future__ import annotations

from envs.registration import register_all


def register_envs() -> None:
    """Register Ark's environments with gymnasium (runs on import of this package).

    gymnasium 1.x no longer loads plugin entry points, hence registration on import and the
    ``"envs:ark/<Name>-v0"`` form of ``gymnasium.make``, which imports this package itself.
    """
    register_all()


register_envs()
