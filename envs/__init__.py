"""Gymnasium environments on pybullet, scripted experts and robot drivers."""


def register_envs() -> None:
    """Register Ark's environments with gymnasium (called through the gymnasium.envs entry point)."""
    try:
        from envs.registration import register_all
    except ImportError:  # environments not installed yet (pybullet extra missing)
        return
    register_all()
