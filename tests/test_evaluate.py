"""Evaluation: a trained policy succeeds where an untrained one does not, intervals, video, ONNX, bad input."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from ark.errors import ArkError
from policies.collect import collect
from policies.errors import CheckpointError, FeatureMismatch, NonFiniteObservation
from policies.evaluate import evaluate, wilson_interval
from policies.onnx_export import export_onnx
from policies.registry import make_policy
from policies.train import train

ENV_ID = "ArkTestPointGoal-v0"
STEP = 0.25


class PointGoalEnv(gym.Env):
    """A point on a plane must reach a goal.

    Observation: Box(4) ``[x, y, goal_x, goal_y]`` (or, with ``dict_obs``, ``{"pos", "goal"}``).
    Action: Box(-1, 1, (action_dim,)); the point moves by 0.25 × the first two entries.
    Reward: −distance. Success (and termination): within 0.1 of the goal. ``nan_at`` makes the
    observation of that step NaN. Renders a 24×24 image with the point and goal drawn in.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None, dict_obs=False, action_dim=2, nan_at=None):
        self.render_mode, self.dict_obs, self.nan_at = render_mode, dict_obs, nan_at
        box = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.observation_space = spaces.Dict({"pos": box, "goal": box}) if dict_obs else \
            spaces.Box(-2.0, 2.0, (4,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def _obs(self):
        pos, goal = self.pos.astype(np.float32), self.goal.astype(np.float32)
        if self.nan_at is not None and self.t == self.nan_at:
            pos = np.full(2, np.nan, np.float32)
        return {"pos": pos, "goal": goal} if self.dict_obs else np.concatenate([pos, goal])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + STEP * np.asarray(action, dtype=np.float64)[:2], -2, 2)
        self.t += 1
        dist = float(np.linalg.norm(self.pos - self.goal))
        success = dist < 0.1
        return self._obs(), -dist, success, False, {"is_success": success}

    def render(self):
        img = np.zeros((24, 24, 3), np.uint8)
        for p, channel in ((self.pos, 0), (self.goal, 1)):
            i, j = np.clip(((p + 2) / 4 * 23).astype(int), 0, 23)
            img[i, j, channel] = 255
        return img


def expert(env):
    """Heads straight for the goal."""
    def act(obs):
        pos, goal = (obs["pos"], obs["goal"]) if isinstance(obs, dict) else (obs[:2], obs[2:])
        return np.clip((goal - pos) / STEP, -1, 1).astype(np.float32)
    return act


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=PointGoalEnv, max_episode_steps=25)

# Small enough to train in about a second on one core, big enough to learn the expert.
BC_RECIPE = {"policy": {"chunk_size": 1, "hidden_dims": [64, 64], "state_hidden_dims": [32], "state_feature_dim": 32,
                        "optimizer_lr": 3e-3},
             "train": {"checkpoint_every": None, "log_every": 50}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_trained(root, dict_obs=False):
    """Demonstrations of the expert and a BC policy trained on them; returns the run folder."""
    kwargs = {"dict_obs": True} if dict_obs else {}
    collect(ENV_ID, 40, root / "demos", policy=expert, progress=False, env_kwargs=kwargs)
    train("bc", root / "demos", root / "run", steps=400, batch_size=64, recipe=BC_RECIPE, progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained(tmp_path_factory.mktemp("point"))


def test_trained_policy_succeeds_and_untrained_one_does_not(trained):
    res = evaluate(trained, ENV_ID, 20, seed=100, progress=False)
    assert res.n == 20 and res.reported == 20
    assert res.success_rate >= 0.9, res.summary()
    lo, hi = res.success_ci
    assert lo < res.success_rate <= hi and (lo, hi) == wilson_interval(res.successes, 20)
    assert res.mean_length < 15  # the expert needs about 5 steps; failures would run to the 25-step limit
    assert [e.seed for e in res.episodes] == list(range(100, 120))
    assert "success" in res.summary() and "95% CI" in res.summary()

    untrained = make_policy("bc", {"observation.state": [4]}, {"action": [2]}, hidden_dims=(8,))
    res0 = evaluate(untrained, ENV_ID, 10, seed=100, progress=False)
    assert res0.success_rate <= 0.3 and res0.mean_return < res.mean_return


def test_same_seed_gives_the_same_episodes(trained):
    a = evaluate(trained, ENV_ID, 3, seed=7, progress=False)
    b = evaluate(trained, ENV_ID, 3, seed=7, progress=False)
    assert [(e.length, e.ret) for e in a.episodes] == [(e.length, e.ret) for e in b.episodes]


def test_env_defaults_to_the_training_datas_environment(trained):
    res = evaluate(trained, None, 2, progress=False)
    assert res.env_id == ENV_ID and res.n == 2


def test_wilson_interval_matches_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(9, 10) == pytest.approx((0.59585, 0.98212), abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.40383, 0.59617), abs=1e-4)


def test_video_of_the_first_episodes(trained, tmp_path):
    import av

    res = evaluate(trained, ENV_ID, 3, video=tmp_path / "eval.mp4", video_episodes=2, progress=False)
    assert res.video == tmp_path / "eval.mp4"
    with av.open(str(res.video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == sum(e.length + 1 for e in res.episodes[:2])  # reset frame + one per step
    assert frames[0].shape == (24, 24, 3)


def test_exported_onnx_policy_evaluates_the_same(trained, tmp_path):
    from policies.base import Policy

    onnx_dir = export_onnx(Policy.load(trained), tmp_path / "onnx")
    a = evaluate(trained, ENV_ID, 4, seed=3, progress=False)
    b = evaluate(onnx_dir, ENV_ID, 4, seed=3, progress=False)
    assert [e.success for e in a.episodes] == [e.success for e in b.episodes]
    assert [e.length for e in a.episodes] == [e.length for e in b.episodes]


def test_image_policy_gets_rendered_frames(tmp_path):
    policy = make_policy("bc", {"observation.state": [4], "observation.rgb": [24, 24, 3]}, {"action": [2]},
                         hidden_dims=(8,), image_channels=(4,), image_keypoints=4, image_feature_dim=8)
    res = evaluate(policy, ENV_ID, 1, max_steps=3, progress=False)
    assert res.episodes[0].length == 3 and res.episodes[0].truncated


def test_mismatched_env_spaces_are_named(trained):
    with pytest.raises(FeatureMismatch, match=r"action space has shape \(3,\), the policy outputs \(2,\)"):
        evaluate(trained, ENV_ID, 1, env_kwargs={"action_dim": 3}, progress=False)
    with pytest.raises(FeatureMismatch, match=r"observations have no 'observation.state' .*observation.pos"):
        evaluate(trained, ENV_ID, 1, env_kwargs={"dict_obs": True}, progress=False)
    with pytest.raises(FeatureMismatch, match=r"Pendulum-v1 observation 'observation.state' has shape \[3\], "
                                              r"the policy expects \[4\]"):
        evaluate(trained, "Pendulum-v1", 1, progress=False)


def test_nan_observation_is_reported_with_episode_and_step(trained):
    with pytest.raises(NonFiniteObservation, match=r"episode 0 \(seed 0\) step 2: observation 'observation.state' "
                                                   r"from the environment contains NaN"):
        evaluate(trained, ENV_ID, 1, env_kwargs={"nan_at": 2}, progress=False)


def test_bad_policy_folders_and_arguments(trained, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        evaluate(tmp_path / "nothing", ENV_ID, 1, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("config.json", "model.safetensors"):
        (broken / f).write_bytes((trained / f).read_bytes())
    (broken / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes()[:-64])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        evaluate(broken, ENV_ID, 1, progress=False)
    with pytest.raises(ArkError, match="cannot make environment 'NoSuchEnv-v9'"):
        evaluate(trained, "NoSuchEnv-v9", 1, progress=False)
    with pytest.raises(ArkError, match="episodes must be a positive integer"):
        evaluate(trained, ENV_ID, 0, progress=False)
    with pytest.raises(ArkError, match="backend 'node' applies to Ark environments"):
        evaluate(trained, ENV_ID, 1, backend="node", progress=False)


def test_dict_observations_map_to_dataset_keys(tmp_path):
    run = make_trained(tmp_path, dict_obs=True)
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert sorted(cfg["input_features"]) == ["observation.goal", "observation.pos"]
    res = evaluate(run, ENV_ID, 10, seed=50, progress=False)  # env kwargs default to the data's
    assert res.success_rate >= 0.8, res.summary()


def test_cli_eval_prints_the_result(trained, capsys):
    from test_train import ark

    assert ark("eval", "--policy", str(trained), "--env", ENV_ID, "--episodes", "4", "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "success rate" in printed and "95% interval (Wilson)" in printed and "mean episode length" in printed
    assert ark("eval", "--policy", str(trained), "--episodes", "2", "--seed", "9", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env_id"] == ENV_ID and [e["seed"] for e in result["per_episode"]] == [9, 10]
    assert ark("eval", "--policy", str(trained), "--env", ENV_ID, "--env-kwargs", "{bad") == 2
    assert "--env-kwargs is not valid JSON" in capsys.readouterr().err
