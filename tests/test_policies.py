"""Policy interface shared by BC, ACT and Diffusion Policy: learning, stepping, checkpoints, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ark.errors import ArkError, ConfigError
from policies.act import ACTPolicy
from policies.base import Policy
from policies.bc import BCConfig, BCPolicy
from policies.encoders import ImageEncoder, ResNetBackbone, SpatialSoftmax, crop_images, images_to_float
from policies.errors import CheckpointError, FeatureMismatch, NonFiniteObservation, PolicyError, PolicyTypeMismatch
from policies.normalize import Normalizer, compute_stats
from policies.registry import available_policies, make_policy, policy_class
from policy_toys import KINDS, TINY, features, random_observations, tiny_policy, toy_batch, train

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models run fastest on one thread, and the suite shares 2 cores with other work.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registry_names_every_policy():
    assert available_policies() == ["act", "bc", "diffusion"]
    with pytest.raises(PolicyError, match="unknown policy type 'ppo'"):
        policy_class("ppo")


@pytest.mark.parametrize("kind", KINDS)
def test_loss_decreases_on_a_synthetic_imitation_problem(kind):
    policy = tiny_policy(kind, optimizer_lr=1e-3)
    held_out = toy_batch(policy, 64, np.random.default_rng(99))

    def held_out_loss() -> tuple[float, dict[str, float]]:
        torch.manual_seed(5)  # same diffusion noise / CVAE sample before and after
        with torch.no_grad():
            loss, metrics = policy(held_out)
        return float(loss), metrics

    before, before_metrics = held_out_loss()
    train(policy, steps=60)
    after, after_metrics = held_out_loss()
    assert after < 0.6 * before, (before, after)
    if kind == "act":  # not just the KL term: the reconstruction improves too
        assert after_metrics["l1"] < 0.6 * before_metrics["l1"], (before_metrics, after_metrics)


@pytest.mark.parametrize("kind", KINDS)
def test_image_policies_train_their_cnn_and_predict_chunks(kind):
    policy = tiny_policy(kind, images=True)
    batch = toy_batch(policy, 4, np.random.default_rng(0))
    loss, metrics = policy(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and metrics
    loss.backward()
    cnn = [p for n, p in policy.named_parameters() if ("backbone" in n or "encoders" in n) and p.requires_grad]
    assert cnn and all(p.grad is not None for p in cnn)
    assert sum(float(p.grad.abs().sum()) for p in cnn) > 0
    obs = {k: torch.from_numpy(v) for k, v in random_observations(policy, 3, np.random.default_rng(1)).items()}
    chunk = policy.predict_chunk_batch(obs)
    assert chunk.shape == (3, policy.config.chunk_length, 2)
    assert policy.training  # predict ran in eval mode and restored the mode


# Diffusion Policy is left out on purpose: its U-Net convolves over the noised padded steps, so
# their values reach the loss of the real steps (the dataset pads by repeating the last action).
@pytest.mark.parametrize("kind", ["bc", "act"])
def test_padded_actions_do_not_affect_the_loss(kind):
    policy = tiny_policy(kind)
    policy.eval()
    batch = toy_batch(policy, 8, np.random.default_rng(0))
    batch["action_is_pad"][:, -2:] = True
    torch.manual_seed(3)
    loss = policy(batch)[0]
    batch["action"][:, -2:] = 1e3
    torch.manual_seed(3)
    assert torch.allclose(policy(batch)[0], loss)


def test_select_action_executes_n_action_steps_of_each_chunk():
    policy = tiny_policy("bc")  # chunk 4, executes 3
    calls = []

    def fake_predict(history, noise=None):
        calls.append(history)
        return np.arange(8, dtype=np.float32).reshape(4, 2) + 100 * len(calls)

    policy.predict_chunk = fake_predict
    obs = {"observation.state": np.zeros(3), "extra.key": "ignored"}
    actions = [policy.select_action(obs) for _ in range(7)]
    assert len(calls) == 3  # steps 0, 3, 6
    np.testing.assert_array_equal(actions[0], [100, 101])
    np.testing.assert_array_equal(actions[2], [104, 105])
    np.testing.assert_array_equal(actions[3], [200, 201])
    policy.reset()
    policy.select_action(obs)
    assert len(calls) == 4  # reset dropped the queued action


def test_observation_history_starts_filled_with_the_first_observation():
    policy = tiny_policy("diffusion")  # n_obs_steps 2, executes 4 of each chunk
    seen = []
    policy.predict_chunk = lambda history, noise=None: seen.append(history) or np.zeros((4, 2), np.float32)
    for t in range(5):
        policy.select_action({"observation.state": np.full(3, float(t))})
    np.testing.assert_array_equal(seen[0]["observation.state"][:, 0], [0, 0])
    np.testing.assert_array_equal(seen[1]["observation.state"][:, 0], [3, 4])


@pytest.mark.parametrize("kind", KINDS)
def test_select_action_returns_one_float_action(kind):
    policy = tiny_policy(kind, images=True)
    obs = {"observation.state": torch.zeros(3), "observation.rgb": np.zeros((16, 16, 3), np.uint8)}
    action = policy.select_action(obs)
    assert action.shape == (2,) and action.dtype == np.float32


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_outputs(kind, tmp_path):
    policy = tiny_policy(kind, images=True)
    train(policy, steps=2, batch_size=4)  # moves weights and (diffusion) EMA away from init
    policy.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["type"] == kind and meta["version"] == 1 and meta["config"]["input_features"]["observation.rgb"] == [16, 16, 3]
    loaded = Policy.load(tmp_path / "ckpt")
    assert type(loaded) is type(policy) and not loaded.training
    assert loaded.config == policy.config
    assert loaded.normalizer.stats() == policy.normalizer.stats()
    obs = {k: torch.from_numpy(v) for k, v in random_observations(policy, 3, np.random.default_rng(0)).items()}
    noise = torch.randn(3, policy.config.horizon, 2) if kind == "diffusion" else None
    assert torch.equal(policy.predict_chunk_batch(obs, noise), loaded.predict_chunk_batch(obs, noise))
    assert type(policy_class(kind).load(tmp_path / "ckpt")) is type(policy)
    if kind == "diffusion":
        assert int(loaded.ema_step) == 2


def test_checkpoint_of_another_policy_type_is_refused(tmp_path):
    tiny_policy("bc").save(tmp_path / "bc")
    with pytest.raises(PolicyTypeMismatch, match=r"holds a 'bc' policy; expected a 'act' policy"):
        ACTPolicy.load(tmp_path / "bc")


def test_truncated_or_corrupt_checkpoints_give_one_line_errors(tmp_path):
    ckpt = tiny_policy("bc").save(tmp_path / "ckpt")
    weights = (ckpt / "model.safetensors").read_bytes()
    config = (ckpt / "config.json").read_text()

    def load_error() -> str:
        with pytest.raises(CheckpointError) as info:
            Policy.load(ckpt)
        assert "\n" not in str(info.value)
        return str(info.value)

    (ckpt / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    assert "truncated or corrupt" in load_error()
    # Without the checksum, safetensors' own parsing still catches the truncation.
    meta = json.loads(config)
    del meta["sha256"]
    (ckpt / "config.json").write_text(json.dumps(meta))
    assert "truncated or corrupt" in load_error()
    (ckpt / "model.safetensors").write_bytes(weights[:5])
    assert "truncated or corrupt" in load_error()
    # A flipped byte in the data is caught by the checksum.
    (ckpt / "config.json").write_text(config)
    flipped = bytearray(weights)
    flipped[-3] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(flipped))
    assert "SHA-256" in load_error()
    (ckpt / "model.safetensors").write_bytes(weights)
    (ckpt / "config.json").write_text(config[: len(config) // 2])
    assert "config.json: truncated or corrupt JSON" in load_error()
    (ckpt / "config.json").unlink()
    assert "no config.json" in load_error()
    assert "no such checkpoint" in str(pytest.raises(CheckpointError, Policy.load, tmp_path / "missing").value)


def test_checkpoint_whose_config_disagrees_with_its_weights_is_refused(tmp_path):
    ckpt = tiny_policy("bc").save(tmp_path / "ckpt")
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"]["hidden_dims"] = [64, 64, 64]
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match its config.json"):
        Policy.load(ckpt)
    meta["config"]["hidden_dims"] = "wide"
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"config.json: key 'hidden_dims': expected"):
        Policy.load(ckpt)


def test_dataset_features_that_do_not_match_the_config_are_named():
    policy = tiny_policy("act", images=True)
    good = {"observation.state": (3,), "observation.rgb": (16, 16, 3), "action": (2,), "episode_index": ()}
    policy.validate_features(good)
    with pytest.raises(FeatureMismatch, match=r"dataset feature 'observation.state': expected shape \[3\], got \[7\]"):
        policy.validate_features({**good, "observation.state": (7,)})
    with pytest.raises(FeatureMismatch, match="dataset has no feature 'observation.rgb'"):
        policy.validate_features({k: v for k, v in good.items() if k != "observation.rgb"})


def test_batches_that_do_not_match_the_config_are_named():
    policy = tiny_policy("diffusion")
    batch = toy_batch(policy, 4, np.random.default_rng(0))
    with pytest.raises(FeatureMismatch, match=r"batch 'action': expected shape \(B, 8, 2\), got \(4, 4, 2\)"):
        policy({**batch, "action": batch["action"][:, :4]})
    with pytest.raises(FeatureMismatch, match=r"batch 'observation.state': expected shape \(B, 2, 3\)"):
        policy({**batch, "observation.state": batch["observation.state"][:, :1]})
    with pytest.raises(FeatureMismatch, match="batch has no 'observation.state'"):
        policy({k: v for k, v in batch.items() if k != "observation.state"})


def test_nans_in_observations_are_refused():
    policy = tiny_policy("bc", images=True)
    obs = {"observation.state": np.array([0.0, np.nan, 0.0]), "observation.rgb": np.zeros((16, 16, 3), np.uint8)}
    with pytest.raises(NonFiniteObservation, match="observation 'observation.state' contains NaN"):
        policy.select_action(obs)
    obs["observation.state"] = np.zeros(4)
    with pytest.raises(FeatureMismatch, match=r"observation 'observation.state': expected shape \(3\), got \(4\)"):
        policy.select_action(obs)
    obs["observation.state"] = np.zeros(3)
    obs["observation.rgb"] = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(FeatureMismatch, match="expected a uint8 image"):
        policy.select_action(obs)
    with pytest.raises(FeatureMismatch, match="observation has no 'observation.rgb'"):
        policy.select_action({"observation.state": np.zeros(3)})
    batch = toy_batch(policy, 2, np.random.default_rng(0))
    batch["observation.state"][0, 0, 1] = float("inf")
    with pytest.raises(NonFiniteObservation, match="batch 'observation.state' contains NaN or inf"):
        policy(batch)


def test_policy_errors_are_ark_errors():
    for exc in (CheckpointError, PolicyTypeMismatch, FeatureMismatch, NonFiniteObservation):
        assert issubclass(exc, ArkError)


def test_config_values_are_checked_when_loaded():
    inputs, outputs = features()
    with pytest.raises(ConfigError, match="unknown key 'chunk'"):
        make_policy("bc", inputs, outputs, chunk=3)
    with pytest.raises(ConfigError, match="key 'chunk_size': expected int"):
        make_policy("bc", inputs, outputs, chunk_size="3")
    with pytest.raises(ConfigError, match="horizon: expected a multiple of 4"):
        make_policy("diffusion", inputs, outputs, horizon=10)
    with pytest.raises(ConfigError, match="n_obs_steps: ACT conditions on the current observation only"):
        make_policy("act", inputs, outputs, n_obs_steps=2)
    with pytest.raises(ConfigError, match=r"input feature 'observation.depth': expected \[D\] \(state\) or \[H, W, 3\]"):
        make_policy("bc", {"observation.depth": [8, 8, 1]}, outputs)
    assert BCConfig.from_dict(BCConfig(input_features=inputs, output_features=outputs).to_dict()).hidden_dims == (256, 256)


def test_optimizer_settings_come_from_the_config():
    act = tiny_policy("act", images=True, optimizer_lr=3e-4, optimizer_lr_backbone=3e-5, optimizer_weight_decay=1e-4)
    opt = act.make_optimizer()
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(g["lr"] for g in opt.param_groups) == [3e-5, 3e-4]
    backbone = {id(p) for p in act.backbone.parameters()}
    assert {id(p) for p in opt.param_groups[1]["params"]} == backbone
    dp = tiny_policy("diffusion", lr_warmup_steps=10)
    opt = dp.make_optimizer()
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in dp.model.parameters()}  # never the EMA copy
    assert opt.defaults["betas"] == (0.95, 0.999) and opt.defaults["weight_decay"] == 1e-6
    sched = dp.make_lr_scheduler(opt, num_training_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0 and lrs[5] == pytest.approx(0.5e-4) and lrs[10] == pytest.approx(1e-4)
    assert lrs[60] == pytest.approx(0.5e-4) and lrs[-1] < 1e-6


# ----- building blocks ------------------------------------------------------------------------------------
def test_normalizer_modes_round_trip_and_hit_their_ranges():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (500, 3)).astype(np.float32)
    x[:, 2] = 7.0  # a constant dimension must not divide by zero
    stats = compute_stats({"a": x, "b": x})
    norm = Normalizer({"a": (3, "mean_std"), "b": (3, "min_max")}, stats)
    t = torch.from_numpy(x)
    za, zb = norm.normalize("a", t), norm.normalize("b", t)
    assert torch.allclose(za[:, :2].mean(0), torch.zeros(2), atol=1e-5) and torch.allclose(za[:, :2].std(0), torch.ones(2), atol=1e-2)
    assert torch.allclose(zb[:, :2].min(0).values, -torch.ones(2)) and torch.allclose(zb[:, :2].max(0).values, torch.ones(2))
    assert torch.all(torch.isfinite(za)) and torch.all(zb[:, 2] == 0)
    assert torch.allclose(norm.unnormalize("a", za), t, atol=1e-5) and torch.allclose(norm.unnormalize("b", zb), t, atol=1e-5)
    assert {k for k, _ in norm.named_buffers()} >= {"a__mean", "b__max"}
    with pytest.raises(FeatureMismatch, match="statistic 'mean' of 'a': expected 3 values, got 2"):
        norm.set_stats({"a": {"mean": [0, 0], "std": [1, 1]}, "b": stats["b"]})
    with pytest.raises(FeatureMismatch, match="no entry for 'b'"):
        norm.set_stats({"a": stats["a"]})


def test_image_encoder_pieces():
    images = torch.randint(0, 256, (2, 16, 20, 3), dtype=torch.uint8)
    x = images_to_float(images)
    assert x.shape == (2, 3, 16, 20) and x.min() >= -1 and x.max() <= 1
    assert crop_images(x, (12, 14), random=True).shape == (2, 3, 12, 14)
    assert torch.equal(crop_images(x, (12, 14), random=False), x[:, :, 2:14, 3:17])
    backbone = ResNetBackbone((8, 16, 32), blocks_per_stage=2)
    assert backbone(x).shape == (2, 32, 2, 3) and backbone.output_shape(16, 20) == (32, 2, 3)
    keypoints = SpatialSoftmax(32, 2, 3, num_keypoints=5)(backbone(x))
    assert keypoints.shape == (2, 10) and keypoints.abs().max() <= 1
    enc = ImageEncoder((16, 20, 3), (8, 16), pool="avg", feature_dim=12, crop=(14, 18))
    assert enc(images).shape == (2, 12)


def test_tiny_configs_are_used():
    # Guards the suite's speed: a default-size model slipping into these tests would be noticed here.
    for kind in KINDS:
        n = sum(p.numel() for p in tiny_policy(kind, images=True).parameters())
        assert n < 500_000, (kind, n)
    assert set(TINY) == set(KINDS)
    assert isinstance(tiny_policy("bc"), BCPolicy)
