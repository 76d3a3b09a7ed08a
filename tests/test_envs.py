"""Ark's Gymnasium environments on the sim backend: API conformance, seeding, vectorisation,
cameras, randomisation and configuration errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers ark/ environments)
from ark.errors import ArkError, ConfigError
from envs.husky_navigate import HuskyNavigateEnv
from envs.panda_tasks import PandaPickPlaceEnv, PandaPushEnv, PandaReachEnv

ENV_IDS = ["ark/PandaReach-v0", "ark/PandaPush-v0", "ark/PandaPickPlace-v0", "ark/HuskyNavigate-v0"]
SMALL_CAM = {"name": "front", "width": 32, "height": 24, "depth": True}


def make(env_id: str, **kw) -> gym.Env:
    return gym.make(env_id, **kw)


def test_registration_needs_only_gymnasium_and_the_module_prefix():
    code = textwrap.dedent("""
        import sys, gymnasium
        env = gymnasium.make("envs:ark/PandaPush-v0")      # fresh interpreter, nothing imported first
        obs, info = env.reset(seed=0)
        assert env.spec.max_episode_steps == 150 and "object_pos" in obs
        import envs.registration
        assert {"ark/PandaReach-v0", "ark/PandaPush-v0", "ark/PandaPickPlace-v0",
                "ark/HuskyNavigate-v0"} <= set(gymnasium.registry)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # Registration itself is import-cheap: no physics engine until an env is made.
    code = "import sys, envs; assert 'pybullet' not in sys.modules and 'ark.node' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("cameras", [False, True], ids=["state", "camera"])
def test_check_env_passes(env_id, cameras):
    env = make(env_id, render_mode="rgb_array", cameras=[SMALL_CAM] if cameras else [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test, except:
        warnings.filterwarnings("ignore", message=".*infinity.*")  # low-dim entries are unbounded
        warnings.filterwarnings("ignore", message=".*needs a display.*")  # check_env tries render_mode="human"
        check_env(env.unwrapped)
    env.close()


def _rollout(env: gym.Env, seed: int, steps: int = 15) -> list:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32))
        out.append((obs, reward, term, info))
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(a, b))


@pytest.mark.parametrize("env_id", ["ark/PandaPickPlace-v0", "ark/HuskyNavigate-v0"])
def test_equal_seeds_give_equal_episodes_whatever_came_before(env_id):
    a, b = make(env_id), make(env_id)
    first = _rollout(a, seed=7)
    _rollout(b, seed=3)                           # b has history, a is fresh
    assert _same(first, _rollout(b, seed=7))
    assert _same(first, _rollout(a, seed=7))
    assert not _same(first[0], _rollout(a, seed=8)[0])  # another seed, another scene
    a.close(), b.close()


def test_vector_envs_sync_and_async():
    for vec_cls in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv):
        venv = vec_cls([lambda: gym.make("ark/PandaPush-v0", cameras=[SMALL_CAM])] * 2)
        obs, info = venv.reset(seed=[1, 2])
        assert obs["rgb"].shape == (2, 24, 32, 3) and obs["object_pos"].shape == (2, 3)
        assert not np.allclose(obs["object_pos"][0], obs["object_pos"][1])  # each env its own seed
        for _ in range(3):
            obs, reward, term, trunc, info = venv.step(venv.action_space.sample())
        assert reward.shape == (2,) and obs["depth"].dtype == np.float32
        venv.close()
    venv = gym.vector.AsyncVectorEnv([lambda: gym.make("ark/HuskyNavigate-v0")] * 2)
    obs, _ = venv.reset(seed=0)
    obs, *_ = venv.step(np.zeros((2, 2), np.float32))
    assert obs["lidar"].shape == (2, 64)
    venv.close()


def test_camera_observations_shapes_dtypes_and_content():
    cams = [{"name": "front", "width": 40, "height": 30, "depth": True},
            {"name": "wrist", "width": 24, "height": 20}]
    env = PandaPushEnv(cameras=cams, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (30, 40, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].shape == (30, 40) and obs["depth"].dtype == np.float32
    assert obs["rgb_wrist"].shape == (20, 24, 3) and "depth_wrist" not in obs
    assert env.observation_space.contains(obs)
    assert 0.2 < float(obs["depth"].min()) and float(obs["depth"].max()) <= 5.0  # metric, within near..far
    assert obs["rgb"].std() > 10                      # a scene, not a blank frame
    before = obs["rgb_wrist"].copy()
    for _ in range(4):
        obs, *_ = env.step(np.array([0.0, 0.0, -1.0, 0.0], np.float32))
    assert np.abs(obs["rgb_wrist"].astype(int) - before).mean() > 1  # the wrist camera rides on the hand
    frame = env.render()
    assert frame.shape == (360, 480, 3) and frame.dtype == np.uint8
    env.close()
    husky = HuskyNavigateEnv(cameras=True)  # the config's first camera preset, on the base
    obs, _ = husky.reset(seed=0)
    assert obs["rgb"].shape == (96, 96, 3) and obs["lidar"].shape == (64,) and "depth" not in obs
    husky.close()


def test_randomisation_changes_colours_lighting_mass_and_friction():
    red = [0.3, 0.2, 0.9, 1.0]
    env = PandaPickPlaceEnv(randomisation={
        "visual": {"enabled": True, "object_colors": [red], "surface_colors": [[0.1, 0.9, 0.1, 1.0]]},
        "dynamics": {"enabled": True, "object_mass": [0.5, 0.5], "object_friction": [0.3, 0.4]}})
    env.reset(seed=0)
    sim = env.unwrapped.backend
    c = sim.c
    assert np.allclose(sim.world.color_of(sim.object), red)
    assert np.allclose(sim.world.color_of(sim.table), [0.1, 0.9, 0.1, 1.0])
    mass, friction = c.getDynamicsInfo(sim.object, -1)[:2]
    assert mass == pytest.approx(0.5) and 0.3 <= friction <= 0.4
    light = dict(sim.world.light)
    env.reset(seed=1)
    assert c.getDynamicsInfo(sim.object, -1)[1] != friction and sim.world.light != light  # re-sampled per episode
    env.close()
    plain = PandaPickPlaceEnv()
    plain.reset(seed=0)
    assert plain.unwrapped.backend.c.getDynamicsInfo(plain.unwrapped.backend.object, -1)[0] == pytest.approx(0.1)
    plain.close()
    husky = HuskyNavigateEnv(randomisation={"visual": {"enabled": True, "object_colors": [red]},
                                            "dynamics": {"enabled": True, "mass_scale": [2.0, 2.0]}})
    husky.reset(seed=0)
    sim = husky.backend
    assert sim.obstacles and np.allclose(sim.world.color_of(sim.obstacles[0]), red)
    assert sim.c.getDynamicsInfo(sim.robot_id, 0)[0] == pytest.approx(2 * 33.455, rel=1e-3)
    husky.close()


def test_bad_config_file_names_file_key_and_expectation(tmp_path):
    bad = tmp_path / "push.yaml"
    bad.write_text("task:\n  name: push\n  distance_threshold: -1\n")
    with pytest.raises(ConfigError) as err:
        PandaPushEnv(config=str(bad))
    msg = str(err.value)
    assert str(bad) in msg and "task.distance_threshold" in msg and "greater than 0" in msg and "\n" not in msg
    bad.write_text("task: {name: push}\nrandomisation:\n  objekt: {low: [0, 0], high: [1, 1]}\n")
    with pytest.raises(ConfigError, match=r"key 'randomisation.objekt': unknown key; expected one of: object, goal"):
        PandaPushEnv(config=str(bad))
    bad.write_text("task: {name: push}\nrandomisation: {goal: {low: [0.1, 0, 0], high: [0, 0, 0]}}\n")
    with pytest.raises(ConfigError, match=r"key 'randomisation.goal': .*low <= high"):
        PandaPushEnv(config=str(bad))
    bad.write_text("task: {name: push}\ncameras: [{name: side, width: 0, position: [1, 0, 1], target: [0, 0, 0]}]\n")
    with pytest.raises(ConfigError, match=r"key 'cameras\[0\].width'"):
        PandaPushEnv(config=str(bad))
    bad.write_text("task: {name: push}\nrobot: {urdf: nowhere/robot.urdf}\n")
    with pytest.raises(ConfigError, match=r"key 'robot.urdf': no file 'nowhere/robot.urdf'"):
        PandaPushEnv(config=str(bad))
    bad.write_text("task: {name: push\n")
    with pytest.raises(ConfigError, match=r"push.yaml: line \d+ invalid YAML"):
        PandaPushEnv(config=str(bad))
    with pytest.raises(ConfigError, match=r"key 'task.name': PandaReachEnv needs 'reach', got 'push'"):
        PandaReachEnv(config={"task": {"name": "push"}})
    with pytest.raises(ConfigError, match=r"\(\+ keyword arguments reward_type\): key 'task.reward_type'"):
        gym.make("ark/PandaPush-v0", reward_type="shaped")
    with pytest.raises(ConfigError, match=r"camera 'ceiling' is not a preset \(presets: front, wrist\)"):
        gym.make("ark/PandaPush-v0", cameras=["ceiling"])
    with pytest.raises(ConfigError, match="unknown keyword argument 'colour'"):
        gym.make("ark/PandaPush-v0", colour="red")
    with pytest.raises(ConfigError, match=r"physics_hz \(240\) must be a whole multiple of control_hz \(7"):
        gym.make("ark/HuskyNavigate-v0", control={"control_hz": 7})


def test_rewards_success_and_termination():
    env = gym.make("ark/PandaReach-v0", reward_type="sparse")
    obs, info = env.reset(seed=0)
    rewards, terminated = [], False
    while not terminated:
        action = np.clip((obs["goal_pos"] - obs["ee_pos"]) / 0.05, -1, 1)
        obs, reward, terminated, truncated, info = env.step(np.append(action, 0.0).astype(np.float32))
        rewards.append(reward)
        assert not truncated
    assert info["is_success"] and rewards[-1] == 0.0 and set(rewards[:-1]) <= {-1.0}
    env.close()
    env = gym.make("ark/PandaReach-v0", terminate_on_success=False)
    obs, _ = env.reset(seed=0, options={"scene": {"goal": [0.04, 0.0, 0.2]}})  # the start pose
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert info["is_success"] and not terminated and -0.05 < reward <= 0.0  # dense: minus the distance
    assert np.allclose(obs["goal_pos"], [0.04, 0.0, 0.2])
    for _ in range(49):
        *_, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
    assert truncated  # TimeLimit of the registration
    with pytest.raises(ArkError, match=r"action must have shape \(4,\)"):
        env.step(np.zeros(3, np.float32))
    env.close()


@pytest.mark.parametrize("cls", [PandaReachEnv, PandaPushEnv, PandaPickPlaceEnv, HuskyNavigateEnv])
def test_config_files_document_the_defaults(cls):
    # configs/envs/*.yaml spell out every default; a mapping config starts from the same values.
    from_file = cls.load_config(None, {}).model_dump(exclude={"camera_presets"})
    from_defaults = cls.load_config({}, {}).model_dump(exclude={"camera_presets"})
    assert from_file == from_defaults
