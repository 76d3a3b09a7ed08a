"""The policy node: drives an environment over topics as evaluate() does, reports latency, survives bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ark.messages import DictArrays, Empty, Float64Array, Parameter, Result
from ark.node import Node
from conftest import wait_until
from policies.errors import FeatureMismatch
from policies.evaluate import evaluate
from policies.onnx_export import export_onnx
from policies.policy_node import PolicyNode, PolicyNodeError, run_policy_loop
from test_evaluate import ENV_ID, make_trained  # the point-to-goal task and its BC policy


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained(tmp_path_factory.mktemp("point"))


def test_node_drives_the_env_like_in_process_evaluation(trained, cfg):
    node = PolicyNode(config=cfg, policy=trained, rate_hz=500, latency_period_s=0.05).start()
    latency = []
    watcher = Node("watcher", config=cfg).start()
    watcher.subscriber("policy/latency", DictArrays, latency.append)
    env = gym.make(ENV_ID)
    try:
        records = run_policy_loop(env, "policy", 6, seed=100, config=cfg, timeout=5)
    finally:
        env.close()
    direct = evaluate(trained, ENV_ID, 6, seed=100, progress=False)
    assert [(r.length, r.success) for r in records] == [(e.length, e.success) for e in direct.episodes]
    assert sum(r.success for r in records) >= 5
    steps = sum(r.length for r in records)
    stats = node.latency()
    assert node.actions == stats["count"] == steps and node.errors == 0
    assert 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert wait_until(lambda: latency, 3)
    assert {"p50_ms", "p99_ms", "count"} <= set(latency[-1].arrays)
    assert wait_until(lambda: node.params["latency_p99_ms"] is not None, 3)
    assert "policy" in node.stats() and node.stats()["policy"]["actions"] == steps


def test_onnx_export_served_by_a_node_launched_from_params(trained, cfg, tmp_path):
    from policies.base import Policy

    onnx_dir = export_onnx(Policy.load(trained), tmp_path / "onnx")
    # as `ark launch` / `python -m ark.runner policies.policy_node:PolicyNode` builds it; rate 0 = act on arrival
    node = PolicyNode("pilot", config=cfg, params={"policy": str(onnx_dir), "rate_hz": 0}).start()
    assert node.params["input_features"] == {"observation.state": [4]} and node.params["action_dim"] == 2
    env = gym.make(ENV_ID)
    try:
        records = run_policy_loop(env, "pilot", 3, seed=5, config=cfg)
    finally:
        env.close()
    direct = evaluate(trained, ENV_ID, 3, seed=5, progress=False)
    assert [r.length for r in records] == [e.length for e in direct.episodes]


def test_control_rate_comes_from_the_training_run(trained, cfg):
    node = PolicyNode(config=cfg, policy=trained)
    assert node.rate_hz == 10 and node.timers[0].period == pytest.approx(0.1)
    node.shutdown()


def test_bad_observations_are_counted_and_the_node_keeps_going(trained, cfg):
    node = PolicyNode(config=cfg, policy=trained, rate_hz=0).start()
    client = Node("robot", config=cfg).start()
    pub = client.publisher("policy/observation", DictArrays)
    actions = client.subscriber("policy/action", Float64Array, queue=10)
    assert wait_until(lambda: node.subscribers[0].connected and actions.connected, 5)

    def send(state, step):
        pub.publish(DictArrays(arrays={"observation.state": np.asarray(state, np.float32)},
                               meta={"episode": 0, "step": step}))

    assert wait_until(lambda: (send([0.1, 0.2, 0.5, 0.5], 0), node.actions)[1] >= 1, 5)  # links up
    send([np.nan, 0.0, 0.0, 0.0], 1)
    assert wait_until(lambda: node.errors == 1, 5)
    assert "contains NaN" in node.params["last_error"]
    send([0.0, 0.0, 0.0], 2)  # wrong size
    assert wait_until(lambda: node.errors == 2, 5)
    assert "expected shape (4)" in node.params["last_error"]
    send([0.3, 0.2, 0.5, 0.5], 3)
    assert wait_until(lambda: node.actions == 2, 5)
    got = actions.recv(2)
    assert got is not None and got.data.shape == (2,)
    reply = client.call("policy/reset", Empty(), Result)
    assert reply.success and node._last_key is None
    value = client.call("policy/param", Parameter("errors"), Parameter).value
    assert value == 2


def test_loop_checks_spaces_and_names_a_missing_node(trained, cfg):
    node = PolicyNode(config=cfg, policy=trained, rate_hz=0).start()
    env = gym.make(ENV_ID, action_dim=3)
    try:
        with pytest.raises(FeatureMismatch, match=r"action space has shape \(3,\), the policy outputs \(2,\)"):
            run_policy_loop(env, "policy", 1, config=cfg)
        with pytest.raises(PolicyNodeError, match="policy node 'ghost' does not answer"):
            run_policy_loop(env, "ghost", 1, config=cfg, timeout=0.5)
    finally:
        env.close()
        node.shutdown()
