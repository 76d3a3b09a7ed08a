"""ACT specifics: paper defaults, temporal ensembling, the CVAE objective, position encodings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies.act import ACTConfig, chunk_size_for_rate, sine_position_2d, sinusoid_table
from policies.chunking import TemporalEnsembler, temporal_ensemble_weights
from policy_toys import features, tiny_policy, toy_batch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models run fastest on one thread, and the suite shares 2 cores with other work.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_defaults_are_the_papers():
    inputs, outputs = features()
    cfg = ACTConfig(input_features=inputs, output_features=outputs)
    assert (cfg.chunk_size, cfg.kl_weight, cfg.latent_dim, cfg.temporal_ensemble_coeff) == (100, 10.0, 32, 0.01)
    assert (cfg.dim_model, cfg.n_heads, cfg.dim_feedforward, cfg.dropout) == (512, 8, 3200, 0.1)
    assert (cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.n_vae_encoder_layers) == (4, 7, 4)
    assert (cfg.optimizer_lr, cfg.optimizer_lr_backbone, cfg.optimizer_weight_decay) == (1e-5, 1e-5, 1e-4)
    assert cfg.n_action_steps == 1 and cfg.action_delta_indices == list(range(100)) and cfg.observation_delta_indices == [0]
    assert ACTConfig(input_features=inputs, output_features=outputs, temporal_ensemble_coeff=None).n_action_steps == 100


def test_chunk_size_scales_with_control_rate():
    assert chunk_size_for_rate(50) == 100
    assert chunk_size_for_rate(10) == 20
    assert chunk_size_for_rate(15) == 30
    assert chunk_size_for_rate(0.1) == 1


def test_temporal_ensemble_weights_favour_the_oldest_prediction():
    w = temporal_ensemble_weights(5, 0.01)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) < 0)
    np.testing.assert_allclose(w[1:] / w[:-1], math.exp(-0.01))


def test_ensembler_averages_every_chunk_that_covers_the_step():
    m, k = 0.5, 3
    ens = TemporalEnsembler(m)
    outputs = []
    for t in range(6):
        outputs.append(float(ens.update(np.full((k, 1), float(t)))[0]))  # chunk predicted at t holds the value t
    # Step t is covered by the chunks of steps max(0, t-k+1) … t, oldest first.
    for t, got in enumerate(outputs):
        values = np.arange(max(0, t - k + 1), t + 1, dtype=float)
        assert got == pytest.approx(float((temporal_ensemble_weights(len(values), m) * values).sum()), abs=1e-6)
    ens.reset()
    assert float(ens.update(np.full((k, 1), 7.0))[0]) == 7.0


def test_ensembling_policy_predicts_every_step_and_smooths():
    policy = tiny_policy("act", temporal_ensemble_coeff=0.01)
    calls = []

    def fake_predict(history, noise=None):
        calls.append(1)
        return np.full((4, 2), float(len(calls)), np.float32)

    policy.predict_chunk = fake_predict
    actions = [policy.select_action({"observation.state": np.zeros(3)}) for _ in range(3)]
    assert len(calls) == 3
    w = temporal_ensemble_weights(3, 0.01)
    assert actions[2][0] == pytest.approx(float(w @ np.array([1.0, 2.0, 3.0])), abs=1e-6)


def test_loss_is_l1_plus_beta_kl_and_inference_uses_z_zero():
    policy = tiny_policy("act", images=True, kl_weight=10.0)
    batch = toy_batch(policy, 4, np.random.default_rng(0))
    loss, metrics = policy(batch)
    assert loss.item() == pytest.approx(metrics["l1"] + 10.0 * metrics["kld"], rel=1e-5)
    assert metrics["kld"] > 0
    policy.train()  # prediction switches to eval mode (no dropout) and z = 0: deterministic
    obs = {k: v for k, v in batch.items() if k.startswith("observation")}
    assert torch.equal(policy.predict_chunk_batch(obs), policy.predict_chunk_batch(obs))
    plain = tiny_policy("act", use_vae=False)
    loss, metrics = plain(toy_batch(plain, 4, np.random.default_rng(0)))
    assert metrics["kld"] == 0 and loss.item() == pytest.approx(metrics["l1"])


def test_cvae_encoder_ignores_padded_actions():
    policy = tiny_policy("act").eval()  # no dropout
    batch = toy_batch(policy, 4, np.random.default_rng(0))
    batch["action_is_pad"][:, 2:] = True
    state = policy._state(batch)
    actions = policy.normalizer.normalize("action", batch["action"])
    mu, logvar = policy._latent_posterior(state, actions, batch["action_is_pad"])
    actions[:, 2:] = 50.0
    mu2, logvar2 = policy._latent_posterior(state, actions, batch["action_is_pad"])
    assert torch.allclose(mu, mu2, atol=1e-6) and torch.allclose(logvar, logvar2, atol=1e-6)


def test_position_encodings():
    table = sinusoid_table(6, 8)
    assert table.shape == (6, 8)
    assert torch.allclose(table[0], torch.tensor([0.0, 1.0] * 4))
    assert table[3, 0] == pytest.approx(math.sin(3.0)) and table[3, 1] == pytest.approx(math.cos(3.0))
    pos = sine_position_2d(3, 4, 16)
    assert pos.shape == (12, 16)
    assert len({tuple(row.tolist()) for row in pos}) == 12  # every cell distinct
    # First half encodes the row: cells in one row share it.
    assert torch.equal(pos[0, :8], pos[3, :8]) and not torch.equal(pos[0, :8], pos[4, :8])
