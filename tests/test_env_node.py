"""The node backend: the same environments driven over Ark services by a driver node."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from ark import Node
from envs.driver import PybulletDriverNode
from envs.errors import DriverError, DriverTimeout
from envs.experts import expert_for
from envs.messages import Command, RobotState
from conftest import PYTHON, wait_until

CAM = {"name": "front", "width": 24, "height": 16, "depth": True}


def _trajectory(env: gym.Env, seed: int, actions) -> list:
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for a in actions:
        out.append(env.step(a))
    return out


def _assert_same(a: list, b: list) -> None:
    for x, y in zip(a, b):
        obs_x, obs_y = x[0], y[0]
        assert obs_x.keys() == obs_y.keys()
        for k in obs_x:
            np.testing.assert_allclose(obs_x[k], obs_y[k], rtol=0, atol=1e-9, err_msg=k)
        assert x[1:] == y[1:]  # rewards, terminated, truncated, info (success) identical


@pytest.mark.parametrize("env_id,overrides", [
    ("ark/PandaPickPlace-v0", {"cameras": [CAM], "randomisation": {"visual": {"enabled": True},
                                                                    "dynamics": {"enabled": True}}}),
    ("ark/HuskyNavigate-v0", {"cameras": [CAM]}),
])
def test_sim_and_node_backends_give_the_same_trajectories(cfg, env_id, overrides):
    driver = PybulletDriverNode("sim_driver", env_id, overrides=overrides, ark_config=cfg).start()
    sim = gym.make(env_id, **overrides)
    node = gym.make(env_id, backend="node", driver="sim_driver", ark_config=cfg, driver_timeout=5.0, **overrides)
    # Expert actions: trajectories that touch, grasp and succeed, not only random flailing.
    expert = expert_for(sim)
    obs, _ = sim.reset(seed=11)
    expert.reset()
    actions, terminated = [], False
    while not terminated and len(actions) < 60:
        actions.append(expert(obs))
        obs, _, terminated, *_ = sim.step(actions[-1])
    a, b = _trajectory(sim, 11, actions), _trajectory(node, 11, actions)
    _assert_same(a, b)
    assert any(step[4]["is_success"] for step in a[1:]) or env_id.startswith("ark/Husky")
    node.close(), sim.close(), driver.shutdown()


def test_driver_publishes_topics_and_checks_the_robot_kind(cfg):
    driver = PybulletDriverNode("arm", "ark/PandaPush-v0", overrides={"cameras": [CAM]}, ark_config=cfg).start()
    seen: dict[str, object] = {}
    listener = Node("listener", config=cfg)
    def keep(topic):
        return lambda msg: seen.__setitem__(topic, msg)

    for topic in ("arm/joint_states", "arm/objects/cube", "arm/camera/front/rgb", "arm/camera/front/depth", "arm/state"):
        listener.subscriber(topic, None, keep(topic))
    listener.start()
    env = gym.make("ark/PandaPush-v0", backend="node", driver="arm", ark_config=cfg, cameras=[CAM])
    env.reset(seed=0)
    assert wait_until(lambda: len(seen) == 5 or (env.step(env.action_space.sample()) and False), timeout=5)
    assert seen["arm/camera/front/rgb"].schema == "ark/Image" and seen["arm/state"].schema == "envs/RobotState"
    assert seen["arm/camera/front/depth"].header["a"][0][2:] == ["<f4", [16, 24]]  # float32 depth, 16 x 24
    env.close()
    with pytest.raises(DriverError, match=r"driver 'arm' drives a 'panda' robot, but HuskyNavigateEnv needs 'husky'"):
        gym.make("ark/HuskyNavigate-v0", backend="node", driver="arm", ark_config=cfg)
    with pytest.raises(DriverError, match=r"driver 'arm' has no camera 'wrist' \(it has: front; start it with --camera wrist\)"):
        gym.make("ark/PandaPush-v0", backend="node", driver="arm", ark_config=cfg, cameras=["wrist"])
    listener.shutdown(), driver.shutdown()


def test_free_running_driver_follows_the_command_topic(cfg):
    driver = PybulletDriverNode("base", "ark/HuskyNavigate-v0", ark_config=cfg, rate_hz=50).start()
    client = Node("policy", config=cfg)
    states: list[RobotState] = []
    client.subscriber("base/state", RobotState, states.append)
    cmd = client.publisher("base/command", Command)
    client.start()
    env = gym.make("ark/HuskyNavigate-v0", backend="node", driver="base", ark_config=cfg)
    env.reset(seed=0)
    with pytest.raises(DriverError, match="free-running at 50 Hz; publish commands on base/command"):
        env.step(np.zeros(2, np.float32))
    start = states[-1].arrays["base/pose"][:2].copy() if states else None
    assert wait_until(lambda: len(states) > 5, timeout=5)  # it ticks on its own clock
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and np.linalg.norm(states[-1].arrays["base/velocity"][:2]) < 0.3:
        cmd.publish(Command(kind="twist", data=np.array([0.8, 0.0])))
        time.sleep(0.05)
    assert np.linalg.norm(states[-1].arrays["base/velocity"][:2]) >= 0.3, "the base did not follow the command topic"
    assert start is None or np.linalg.norm(states[-1].arrays["base/pose"][:2] - start) > 0.01
    env.close(), client.shutdown(), driver.shutdown()


@pytest.fixture
def standalone_driver(cfg, env_for):
    """`python -m envs.driver` in its own process; the test process hosts the registry."""
    host = Node("host", config=cfg)  # owns the embedded registry, so killing the driver leaves it up
    proc = subprocess.Popen([PYTHON, "-m", "envs.driver", "--env", "ark/PandaPush-v0", "--name", "panda_driver"],
                            env=env_for, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = ""
    deadline = time.monotonic() + 30
    while "ready" not in ready and time.monotonic() < deadline and proc.poll() is None:
        ready = proc.stdout.readline()
    assert "driver panda_driver ready: panda" in ready, ready
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()
    host.shutdown()


@pytest.mark.parametrize("failure", ["dies", "stalls"])
def test_dead_or_stalled_driver_raises_a_timeout_quickly(cfg, standalone_driver, failure):
    env = gym.make("ark/PandaPush-v0", backend="node", driver="panda_driver", ark_config=cfg, driver_timeout=1.0)
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    os.kill(standalone_driver.pid, signal.SIGKILL if failure == "dies" else signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(DriverTimeout) as err:
        for _ in range(3):  # a dying process may still answer the call in flight
            env.step(env.action_space.sample())
    assert time.monotonic() - start < 4.0
    assert "driver 'panda_driver' did not answer step within 1s" in str(err.value) and "\n" not in str(err.value)
    env.close()


def test_missing_driver_times_out_at_construction(cfg):
    start = time.monotonic()
    with pytest.raises(DriverTimeout, match=r"driver 'ghost' did not answer info within 0.5s \(it is not in the graph"):
        gym.make("ark/PandaReach-v0", backend="node", driver="ghost", ark_config=cfg, driver_connect_timeout=0.5)
    assert time.monotonic() - start < 3.0


def test_driver_restart_mid_episode_is_reported(cfg):
    first = PybulletDriverNode("flaky", "ark/PandaReach-v0", ark_config=cfg).start()
    env = gym.make("ark/PandaReach-v0", backend="node", driver="flaky", ark_config=cfg, driver_timeout=1.0)
    env.reset(seed=0)
    env.step(np.zeros(4, np.float32))
    first.shutdown()
    second = PybulletDriverNode("flaky", "ark/PandaReach-v0", ark_config=cfg).start()
    with pytest.raises(DriverError, match="restarted.*call reset"):
        for _ in range(2):  # the new driver refuses a step (no episode), or an old endpoint times out
            env.step(np.zeros(4, np.float32))
    env.reset(seed=0)  # a new episode on the new driver works
    env.step(np.zeros(4, np.float32))
    env.close(), second.shutdown()
