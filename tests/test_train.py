"""Training: loss goes down, the run folder a user gets, exact resume after Ctrl-C, recipes, bad input."""

from __future__ import annotations

import argparse
import csv
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ark.errors import ArkError, ConfigError
from policies.base import Policy
from policies.dataset import Dataset
from policies.errors import CheckpointError, FeatureMismatch, PolicyTypeMismatch
from policies.cli import add_policy_cli
from policies.train import PRESETS, RECIPE_DIR, TrainingError, TrainingInterrupted, load_recipe, train

KINDS = ("bc", "act", "diffusion")
# Tiny models: a few hundred steps per second on one core.
TINY = {
    "bc": {"policy": {"chunk_size": 4, "n_action_steps": 2, "hidden_dims": [32, 32], "state_hidden_dims": [16],
                      "state_feature_dim": 16},
           "train": {"log_every": 5, "checkpoint_every": 10}},
    "act": {"policy": {"chunk_size": 4, "dim_model": 16, "n_heads": 2, "dim_feedforward": 32, "n_encoder_layers": 1,
                       "n_decoder_layers": 1, "n_vae_encoder_layers": 1, "latent_dim": 4},
            "train": {"log_every": 5, "checkpoint_every": 10}},
    "diffusion": {"policy": {"horizon": 8, "n_action_steps": 4, "down_dims": [8, 16], "n_groups": 4,
                             "diffusion_step_embed_dim": 8, "num_inference_steps": 2, "lr_warmup_steps": 5},
                  "train": {"log_every": 5, "checkpoint_every": 10}},
}
_W = np.random.default_rng(1).standard_normal((3, 2))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_dataset(path: Path, *, state_dim: int = 3, episodes: int = 6, length: int = 20, action_dtype: str = "float32",
                 with_action: bool = True) -> Path:
    """Episodes of random states whose action is a fixed smooth function of the state."""
    features = {"observation.state": {"dtype": "float32", "shape": [state_dim]}}
    if with_action:
        features["action"] = {"dtype": action_dtype, "shape": [2]}
    ds = Dataset.create(path, features, fps=10, info={"env_id": "Toy-v0"})
    rng = np.random.default_rng(0)
    for e in range(episodes):
        s = rng.uniform(-1, 1, (length, state_dim)).astype(np.float32)
        data = {"observation.state": s}
        if with_action:
            data["action"] = np.tanh(s[:, :3] @ _W).astype(action_dtype)
        ds.append_episode(data, success=True, seed=e)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "toy")


def quiet(kind: str, out: Path, data: Path, steps: int, **kw):
    return train(kind, data, out, steps=steps, batch_size=8, recipe=TINY[kind], progress=False, **kw)


def metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_learns_and_leaves_a_loadable_run_folder(data, tmp_path):
    out = tmp_path / "run"
    recipe = {"policy": {**TINY["bc"]["policy"], "chunk_size": 1, "n_action_steps": 1}, "train": TINY["bc"]["train"]}
    res = train("bc", data, out, steps=150, batch_size=32, recipe=recipe, progress=False)
    assert res.step == res.steps_run == 150 and res.resumed_from is None
    rows = metrics(out)
    assert [int(r["step"]) for r in rows] == list(range(5, 151, 5))
    assert {"step", "loss", "mse", "lr", "grad_norm", "steps_per_s", "wall_time_s"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < 0.2 * float(rows[0]["loss"])  # it learned the state -> action map
    policy = Policy.load(out)  # the final policy sits in the run folder itself
    assert policy.name == "bc" and policy.config.input_features == {"observation.state": (3,)}
    state = Dataset.open(data).read("observation.state", 0, 1)[0]
    action = policy.select_action({"observation.state": state})
    assert np.abs(action - np.tanh(state @ _W)).max() < 0.3
    # checkpoints every 10 steps, the newest 3 kept, `last` pointing at the newest
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-130", "step-140", "step-150"]
    assert (out / "last").resolve() == (out / "checkpoints" / "step-150").resolve()
    again = train("bc", data, out, steps=150, batch_size=32, recipe=recipe, progress=False)
    assert again.steps_run == 0 and again.step == 150  # a finished run is not trained again


@pytest.mark.parametrize("kind", KINDS)
def test_resume_after_ctrl_c_ends_exactly_like_an_uninterrupted_run(kind, data, tmp_path):
    straight = quiet(kind, tmp_path / "straight", data, steps=30)

    def press_ctrl_c(step, _metrics):
        if step == 15:
            os.kill(os.getpid(), signal.SIGINT)  # the handler finishes this step, checkpoints, then stops

    with pytest.raises(TrainingInterrupted) as stopped:
        quiet(kind, tmp_path / "resumed", data, steps=30, on_step=press_ctrl_c)
    assert stopped.value.step == 15 and stopped.value.checkpoint.name == "step-15"
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # no final policy yet
    resumed = quiet(kind, tmp_path / "resumed", data, steps=30)
    assert resumed.resumed_from == 15 and resumed.steps_run == 15
    assert resumed.loss == straight.loss
    a, b = Policy.load(tmp_path / "straight").state_dict(), Policy.load(tmp_path / "resumed").state_dict()
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) == 0.0
    losses = lambda out: [(r["step"], r["loss"]) for r in metrics(out)]  # noqa: E731
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_recipe_presets_in_configs_match_the_builtin_ones():
    for kind in KINDS:
        assert yaml.safe_load((RECIPE_DIR / f"{kind}.yaml").read_text())["policy"] == PRESETS[kind]["policy"]
        assert yaml.safe_load((RECIPE_DIR / f"{kind}.yaml").read_text())["train"] == PRESETS[kind]["train"]
        overrides, settings, _ = load_recipe(kind, kind)
        assert overrides == PRESETS[kind]["policy"] and settings.steps == PRESETS[kind]["train"]["steps"]


def test_every_recipe_in_configs_builds_a_policy():
    from policies.registry import make_config

    recipes = sorted(RECIPE_DIR.glob("*.yaml"))
    assert len(recipes) >= 3
    for path in recipes:
        kind = yaml.safe_load(path.read_text())["policy_type"]
        overrides, settings, _ = load_recipe(kind, path)
        if kind == "act":
            overrides.setdefault("chunk_size", 10)  # training scales it to the data's rate when unset
        make_config(kind, {"observation.state": [7]}, {"action": [4]}, **overrides)  # raises on a bad value
        assert settings.steps > 0 and settings.batch_size > 0


def test_recipe_can_replace_the_learning_rate_schedule(data, tmp_path):
    recipe = {"policy": TINY["bc"]["policy"], "train": {**TINY["bc"]["train"], "lr_schedule": "cosine",
                                                        "lr_warmup_steps": 5}}
    train("bc", data, tmp_path / "run", steps=20, batch_size=8, recipe=recipe, progress=False)
    lr = {int(r["step"]): float(r["lr"]) for r in metrics(tmp_path / "run")}
    assert lr[5] == pytest.approx(1e-3) and lr[10] == pytest.approx(0.75e-3) and lr[20] == 0.0


def test_recipe_mistakes_name_the_file_and_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("train:\n  batch_size: -4\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: key 'train\.batch_size': Input should be greater than 0"):
        load_recipe("act", bad)
    bad.write_text("policy_type: diffusion\n")
    with pytest.raises(ConfigError, match="this recipe is for 'diffusion' policies, not 'act'"):
        load_recipe("act", bad)
    bad.write_text("trian: {}\n")
    with pytest.raises(ConfigError, match="key 'trian'"):
        load_recipe("bc", bad)


def test_unknown_policy_key_in_recipe_is_named(data, tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'dim_modle' for a act policy config"):
        train("act", data, tmp_path / "x", steps=2, recipe={"policy": {"dim_modle": 8}}, progress=False)


@pytest.mark.parametrize("case, error, message", [
    ("input_features", FeatureMismatch, r"dataset feature 'observation.state': expected shape \[5\], got \[3\]"),
    ("input_keys", FeatureMismatch, r"input key 'observation.wrist' is not in the dataset"),
    ("int_actions", FeatureMismatch, r"'action': expected continuous \(float\) actions, got int64"),
    ("no_action", FeatureMismatch, r"has no 'action' feature"),
])
def test_data_that_do_not_fit_the_policy_fail_before_training(case, error, message, data, tmp_path):
    recipe = {"policy": dict(TINY["bc"]["policy"])}
    path = data
    if case == "input_features":
        recipe["policy"]["input_features"] = {"observation.state": [5]}
    elif case == "input_keys":
        recipe["train"] = {"input_keys": ["observation.wrist"]}
    elif case == "int_actions":
        path = make_dataset(tmp_path / "int", action_dtype="int64", episodes=1)
    else:
        path = make_dataset(tmp_path / "noact", with_action=False, episodes=1)
    with pytest.raises(error, match=message):
        train("bc", path, tmp_path / "run", steps=5, recipe=recipe, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_on_changed_data_or_another_policy_type_is_refused(data, tmp_path):
    out = tmp_path / "run"
    quiet("bc", out, data, steps=10)
    with pytest.raises(PolicyTypeMismatch, match=r"holds a 'bc' training run, not 'act'"):
        quiet("act", out, data, steps=10)
    other = make_dataset(tmp_path / "other", state_dim=4, episodes=2)
    with pytest.raises(TrainingError, match=r"changed since the run .* started \(120 frames then, 40 now\)"):
        quiet("bc", out, other, steps=20)
    # --no-resume starts over, on the new data
    res = quiet("bc", out, other, steps=10, resume=False)
    assert res.resumed_from is None and Policy.load(out).config.input_features["observation.state"] == (4,)


def test_truncated_checkpoints_are_reported_not_loaded(data, tmp_path):
    out = tmp_path / "run"
    quiet("act", out, data, steps=10)
    state = out / "last" / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"train_state\.safetensors is truncated or corrupt"):
        quiet("act", out, data, steps=20)
    model = out / "checkpoints" / "step-10" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or corrupt"):
        quiet("act", out, data, steps=20)


def test_cuda_request_without_cuda_is_one_clear_error(data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    with pytest.raises(ArkError, match=r"device 'cuda': CUDA is not available .*use --device cpu"):
        train("bc", data, tmp_path / "run", steps=2, device="cuda", progress=False)
    with pytest.raises(ArkError, match=r"device 'tpu'"):
        train("bc", data, tmp_path / "run", steps=2, device="tpu", progress=False)


def ark(*argv: str) -> int:
    """``ark <argv>`` in this process, as ark.cli.main runs it: ArkError -> one line on stderr, exit 2."""
    parser = argparse.ArgumentParser(prog="ark")
    add_policy_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ArkError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        return 2


def test_cli_train_export_and_user_errors(data, tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"policy_type": "act", **TINY["act"]}))
    out = tmp_path / "run"
    assert ark("train", "--policy", "act", "--data", str(data), "--out", str(out), "--steps", "10",
               "--batch-size", "4", "--recipe", str(recipe), "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "trained act: 10 steps" in printed and str(out) in printed and "metrics.csv" in printed
    assert ark("export", "--policy", str(out)) == 0
    printed = capsys.readouterr().out
    assert "policy.onnx" in printed and "onnx_policy.json" in printed
    assert "parity: max |ONNX - PyTorch| = " in printed and "(ok, tolerance 0.0001)" in printed
    assert (out / "onnx" / "policy.onnx").is_file()

    assert ark("train", "--policy", "act", "--data", str(tmp_path / "nope"), "--out", str(out)) == 2
    assert capsys.readouterr().err.strip() == f"error: no dataset at {tmp_path / 'nope'}"
    assert ark("export", "--policy", str(out), "--format", "tflite") == 2
    assert "only 'onnx' is supported" in capsys.readouterr().err
    assert ark("export", "--policy", str(tmp_path)) == 2
    assert "not a policy checkpoint (no config.json)" in capsys.readouterr().err
