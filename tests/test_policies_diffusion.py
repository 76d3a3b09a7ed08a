"""Diffusion Policy specifics: paper defaults, the noise scheduler, EMA, horizons, and a toy distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies.diffusion import DiffusionConfig, DiffusionPolicy
from policies.ema import ema_decay, ema_update_
from policies.noise_scheduler import NoiseScheduler, squared_cosine_betas
from policies.registry import make_policy
from policy_toys import features, tiny_policy, toy_batch, train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models run fastest on one thread, and the suite shares 2 cores with other work.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_defaults_are_the_papers():
    inputs, outputs = features()
    cfg = DiffusionConfig(input_features=inputs, output_features=outputs)
    assert (cfg.n_obs_steps, cfg.horizon, cfg.n_action_steps) == (2, 16, 8)
    assert (cfg.num_train_timesteps, cfg.beta_schedule, cfg.sampler) == (100, "squaredcos_cap_v2", "ddim")
    assert 8 <= cfg.num_inference_steps <= 16
    assert (cfg.down_dims, cfg.kernel_size, cfg.n_groups, cfg.diffusion_step_embed_dim) == ((256, 512, 1024), 5, 8, 128)
    assert (cfg.state_normalization, cfg.action_normalization) == ("min_max", "min_max")
    assert (cfg.optimizer_lr, cfg.optimizer_betas, cfg.optimizer_weight_decay, cfg.lr_warmup_steps) == (1e-4, (0.95, 0.999), 1e-6, 500)
    assert (cfg.use_ema, cfg.ema_power, cfg.ema_max_decay) == (True, 0.75, 0.9999)
    # The predicted sequence starts at the oldest observation; the chunk executed starts now.
    assert cfg.action_delta_indices == list(range(-1, 15)) and cfg.observation_delta_indices == [-1, 0]


def test_squared_cosine_schedule():
    s = NoiseScheduler(100)
    assert np.all(s.betas > 0) and np.all(s.betas <= 0.999)
    assert np.all(np.diff(s.alphas_cumprod) < 0)  # strictly decreasing: every step adds noise
    assert s.alphas_cumprod[0] > 0.999 and s.alphas_cumprod[-1] < 1e-3

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    # Uncapped steps reproduce ᾱ(t/T) / ᾱ(0) exactly.
    assert s.alphas_cumprod[49] == pytest.approx(alpha_bar(0.5) / alpha_bar(0.0), rel=1e-9)
    assert squared_cosine_betas(10).max() <= 0.999
    assert np.all(np.diff(NoiseScheduler(100, "linear").alphas_cumprod) < 0)


def test_inference_timesteps_use_leading_spacing():
    s = NoiseScheduler(100)
    assert s.timesteps(10) == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert s.timesteps(8) == [84, 72, 60, 48, 36, 24, 12, 0]
    assert s.timesteps(100) == list(range(99, -1, -1))
    with pytest.raises(ValueError):
        s.timesteps(101)


def test_add_noise_and_steps_are_consistent():
    s = NoiseScheduler(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 16, 2, generator=g) * 1.6 - 0.8  # inside the clip range
    eps = torch.randn(4, 16, 2, generator=g)
    t, prev = 60, 50
    xt = s.add_noise(x0, eps, torch.full((4,), t))
    # Given the true ε, the implied clean sample is x0 and a DDIM step lands on the forward process at prev.
    assert torch.allclose(s.predict_x0(eps, t, xt), x0, atol=1e-5)
    assert torch.allclose(s.ddim_step(eps, t, xt, prev), s.add_noise(x0, eps, torch.full((4,), prev)), atol=1e-5)
    # The last DDIM step (ᾱ_prev = 1) returns the clean sample.
    x_1 = s.add_noise(x0, eps, torch.full((4,), 5))
    assert torch.allclose(s.ddim_step(eps, 5, x_1, -5), x0, atol=1e-5)
    # DDPM's mean is the posterior mean of q(x_prev | x_t, x0).
    ac_t, ac_p = s.alphas_cumprod[t], s.alphas_cumprod[prev]
    a_t = ac_t / ac_p
    expected = (math.sqrt(ac_p) * (1 - a_t) / (1 - ac_t)) * x0 + (math.sqrt(a_t) * (1 - ac_p) / (1 - ac_t)) * xt
    assert torch.allclose(s.ddpm_step(eps, t, xt, prev, noise=torch.zeros_like(xt)), expected, atol=1e-5)
    assert torch.allclose(s.ddpm_step(eps, 0, s.add_noise(x0, eps, torch.zeros(4, dtype=torch.long)), -1), x0, atol=1e-5)
    # numpy arrays step exactly like tensors (the ONNX runner relies on it)
    np.testing.assert_allclose(s.ddim_step(eps.numpy(), t, xt.numpy(), prev), s.ddim_step(eps, t, xt, prev).numpy(), atol=1e-6)
    np.testing.assert_allclose(s.add_noise(x0.numpy(), eps.numpy(), np.full(4, t)), xt.numpy(), atol=1e-6)


def test_predicted_clean_sample_is_clipped():
    s = NoiseScheduler(100)
    x = torch.full((1, 4, 1), 50.0)
    assert s.predict_x0(torch.zeros_like(x), 10, x).max() == 1.0
    assert NoiseScheduler(100, clip_sample=False).predict_x0(torch.zeros_like(x), 10, x).max() > 1.0


def test_ema_warmup_and_update():
    assert ema_decay(0) == 0.0 and ema_decay(1) == 0.0
    assert ema_decay(10) == pytest.approx(1 - 10 ** -0.75)
    assert ema_decay(10_000) == pytest.approx(0.999, abs=2e-4)
    assert ema_decay(10**9) == 0.9999
    model, avg = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        avg.weight.fill_(0.0)
    ema_update_(avg, model, 0.75)
    assert torch.allclose(avg.weight, torch.full((2, 2), 0.25))


def test_inference_uses_the_ema_weights():
    policy = tiny_policy("diffusion")
    train(policy, steps=3, batch_size=4)
    assert int(policy.ema_step) == 3
    obs = {"observation.state": torch.zeros(2, 2, 3)}
    noise = torch.randn(2, 8, 2)
    before = policy.predict_chunk_batch(obs, noise)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(1.0)  # the trained weights change, the average does not
    assert torch.equal(policy.predict_chunk_batch(obs, noise), before)
    assert not any(p.requires_grad for p in policy.ema_model.parameters())


def test_executed_chunk_starts_at_the_current_step():
    policy = tiny_policy("diffusion", n_obs_steps=3, horizon=8, n_action_steps=5)
    obs = {"observation.state": torch.zeros(1, 3, 3)}
    noise = torch.randn(1, 8, 2)
    with torch.no_grad():
        full = policy.normalizer.unnormalize("action", policy.sample(policy.encode_observations(policy.inference_model, obs), noise))
    assert torch.allclose(policy.predict_chunk_batch(obs, noise), full[:, 2:7])


def test_ddim_learns_a_bimodal_action_distribution():
    """Half the demonstrations go to +0.5, half to -0.5: a regressor would average to 0, diffusion keeps both modes."""
    torch.manual_seed(0)
    stats = {"observation.state": {"min": [-1.0], "max": [1.0]}, "action": {"min": [-1.0], "max": [1.0]}}
    policy: DiffusionPolicy = make_policy(
        "diffusion", {"observation.state": [1]}, {"action": [1]}, stats, n_obs_steps=1, horizon=4, n_action_steps=4,
        down_dims=(32,), n_groups=8, diffusion_step_embed_dim=32, optimizer_lr=1e-3, optimizer_weight_decay=0.0,
        use_ema=False, num_inference_steps=10,
    )
    opt = policy.make_optimizer()
    batch_size = 64
    for _ in range(200):
        sign = torch.where(torch.rand(batch_size) < 0.5, -1.0, 1.0)
        batch = {"observation.state": torch.zeros(batch_size, 1, 1), "action": (0.5 * sign)[:, None, None].repeat(1, 4, 1)}
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    samples = policy.predict_chunk_batch({"observation.state": torch.zeros(400, 1, 1)}).numpy().reshape(-1)
    near_a_mode = np.minimum(np.abs(samples - 0.5), np.abs(samples + 0.5)) < 0.15
    assert near_a_mode.mean() > 0.8
    assert 0.25 < (samples > 0).mean() < 0.75
    assert (np.abs(samples) < 0.2).mean() < 0.1  # not the average of the modes


def test_ddpm_sampler_also_runs():
    policy = tiny_policy("diffusion", sampler="ddpm", num_inference_steps=100)
    obs = {"observation.state": torch.zeros(2, 2, 3)}
    chunk = policy.predict_chunk_batch(obs)
    assert chunk.shape == (2, 4, 2) and torch.isfinite(chunk).all()
    batch = toy_batch(policy, 2, np.random.default_rng(0))
    assert torch.isfinite(policy(batch)[0])
