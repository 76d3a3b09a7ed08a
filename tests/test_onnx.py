"""ONNX export and the ONNX Runtime runner: parity with PyTorch for every policy type, same stepping, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies.base import Policy
from policies.errors import CheckpointError, NonFiniteObservation, PolicyError
from policies.onnx_export import export_onnx
from policies.onnx_runner import OnnxPolicy
from policy_toys import KINDS, random_observations, tiny_policy, train

TOLERANCE = 1e-4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models run fastest on one thread, and the suite shares 2 cores with other work.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each policy type with state and image inputs, briefly trained, and its ONNX export."""
    out = {}
    for kind in KINDS:
        policy = tiny_policy(kind, images=True)
        train(policy, steps=2, batch_size=4)
        policy.eval()
        out[kind] = (policy, export_onnx(policy, tmp_path_factory.mktemp(kind)))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_matches_pytorch_on_random_inputs(kind, exported):
    policy, directory = exported[kind]
    runner = OnnxPolicy(directory)
    rng = np.random.default_rng(7)
    obs = random_observations(policy, 5, rng)  # exported with batch 1: the batch axis is dynamic
    noise = rng.standard_normal((5, policy.config.horizon, 2)).astype(np.float32) if kind == "diffusion" else None
    expected = policy.predict_chunk_batch({k: torch.from_numpy(v) for k, v in obs.items()},
                                          None if noise is None else torch.from_numpy(noise)).numpy()
    got = runner.predict_chunk_batch(obs, noise)
    assert got.shape == expected.shape == (5, policy.config.chunk_length, 2)
    assert np.abs(got - expected).max() <= TOLERANCE
    single = {k: v[0] for k, v in obs.items()}
    one = runner.predict_chunk(single, None if noise is None else noise[0])
    assert np.abs(one - policy.predict_chunk(single, None if noise is None else noise[0])).max() <= TOLERANCE


@pytest.mark.parametrize("kind", ["bc", "act"])
def test_runner_steps_an_episode_like_the_policy(kind, exported):
    policy, directory = exported[kind]
    runner = OnnxPolicy(directory)
    rng = np.random.default_rng(3)
    for p in (policy, runner):
        p.reset()
    for _ in range(6):
        obs = {"observation.state": rng.uniform(-1, 1, 3), "observation.rgb": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)}
        assert np.abs(runner.select_action(obs) - policy.select_action(obs)).max() <= TOLERANCE


def test_diffusion_step_count_is_chosen_at_run_time(exported, tmp_path):
    policy, directory = exported["diffusion"]
    meta = json.loads((directory / "onnx_policy.json").read_text())
    assert set(meta["graphs"]) == {"obs_encoder", "denoiser"} and meta["diffusion"]["num_inference_steps"] == 4
    rng = np.random.default_rng(0)
    obs = random_observations(policy, 2, rng)
    noise = rng.standard_normal((2, 8, 2)).astype(np.float32)
    policy.config.num_inference_steps = 10
    try:
        expected = policy.predict_chunk_batch({k: torch.from_numpy(v) for k, v in obs.items()}, torch.from_numpy(noise)).numpy()
    finally:
        policy.config.num_inference_steps = 4
    got = OnnxPolicy(directory, num_inference_steps=10).predict_chunk_batch(obs, noise)
    assert np.abs(got - expected).max() <= TOLERANCE
    runner = OnnxPolicy(directory, seed=1)
    action = runner.select_action({"observation.state": np.zeros(3), "observation.rgb": np.zeros((16, 16, 3), np.uint8)})
    assert action.shape == (2,) and np.isfinite(action).all()


def test_graphs_use_opset_17_or_newer(exported):
    import onnx
    for _, directory in exported.values():
        for path in directory.glob("*.onnx"):
            opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
            assert opsets.get("", opsets.get("ai.onnx", 0)) >= 17


def test_checkpoint_round_trip_then_export(tmp_path):
    policy = tiny_policy("act")
    policy.save(tmp_path / "ckpt")
    runner = OnnxPolicy(export_onnx(Policy.load(tmp_path / "ckpt"), tmp_path / "onnx"))
    obs = {"observation.state": np.linspace(-1, 1, 3, dtype=np.float32)[None]}
    assert np.abs(runner.predict_chunk(obs) - policy.predict_chunk(obs)).max() <= TOLERANCE


def test_runner_bad_input(exported, tmp_path):
    policy, directory = exported["bc"]
    runner = OnnxPolicy(directory)
    with pytest.raises(NonFiniteObservation, match="observation 'observation.state' contains NaN"):
        runner.select_action({"observation.state": np.array([np.nan, 0, 0]), "observation.rgb": np.zeros((16, 16, 3), np.uint8)})
    with pytest.raises(CheckpointError, match="not an exported ONNX policy"):
        OnnxPolicy(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "onnx_policy.json").write_text((directory / "onnx_policy.json").read_text())
    (broken / "policy.onnx").write_bytes((directory / "policy.onnx").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        OnnxPolicy(broken)
    with pytest.raises(PolicyError, match="opset 13 is too old"):
        export_onnx(policy, tmp_path / "old", opset=13)
