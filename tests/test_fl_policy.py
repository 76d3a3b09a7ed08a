"""Federated training of an Ark BC policy on two robots' datasets with different task variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch  # noqa: F401  (policies need torch: fail loudly if missing)

from edge.fl.policy import PolicyClient, pool_stats, train_federated
from edge.fl.strategy import FedAvg, FedProx
from policies.dataset import Dataset

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3], "names": None},
    "action": {"dtype": "float32", "shape": [2], "names": None},
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread is fastest, and fair to other jobs on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def robot_dataset(path: Path, offset: float, seed: int) -> Dataset:
    """Episodes whose action is a fixed linear map of the state; each robot sees its own region of states."""
    rng = np.random.default_rng(seed)
    ds = Dataset.create(path, FEATURES, fps=10)
    w = np.array([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]], np.float32)
    for _ in range(4):
        s = (rng.normal(size=(30, 3)) * 0.3 + offset).astype(np.float32)
        ds.append_episode({"observation.state": s, "action": s @ w}, success=True)
    return ds


def test_federated_bc_learns_both_robots_variants_and_saves_a_normal_policy(tmp_path: Path) -> None:
    overrides = {"hidden_dims": [32], "state_hidden_dims": [32], "state_feature_dim": 16, "optimizer_lr": 3e-3}
    dsets = [robot_dataset(tmp_path / "a", -1.0, 0), robot_dataset(tmp_path / "b", 1.0, 1)]
    # Pooled statistics equal those of the union of the data, computed from counts and moments only.
    pooled = pool_stats([(d.num_frames, d.stats) for d in dsets])
    union = np.concatenate([d.read("observation.state") for d in dsets])
    np.testing.assert_allclose(pooled["observation.state"]["mean"], union.mean(0), atol=1e-5)
    np.testing.assert_allclose(pooled["observation.state"]["std"], union.std(0), atol=1e-4)

    def run(cls, **kw):
        clients = [PolicyClient(d, "bc", overrides, name=f"robot{i}", batch_size=32, seed=i) for i, d in enumerate(dsets)]
        return clients, train_federated(clients, cls, rounds=6, local_steps=25, seed=0, **kw)

    clients, res = run(FedAvg)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    out = res.policy.save(tmp_path / "fed")
    from policies.base import Policy

    loaded = Policy.load(out)
    for d in dsets:  # one policy serves both robots' variants
        s = d.read("observation.state")[:20]
        pred = np.stack([loaded.predict_chunk({"observation.state": x[None]})[0] for x in s])
        assert np.abs(pred - d.read("action")[:20]).mean() < 0.25
    _, prox = run(FedProx, strategy_args={"prox_mu": 0.01})
    assert prox.history[-1]["loss"] < 0.5 * prox.history[0]["loss"]
