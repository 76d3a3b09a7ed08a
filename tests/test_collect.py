"""Recording demonstrations from Gymnasium environments (``collect``) and the ``ark collect`` /
``ark dataset`` commands."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import zarr  # noqa: F401  (a dev dependency: fail loudly if missing)

from ark.errors import ArkError  # noqa: E402
from policies import collect as collect_mod  # noqa: E402
from policies.collect import collect  # noqa: E402
from policies.dataset import Dataset  # noqa: E402

POLICIES = '''
import numpy as np

def pendulum_pd(env):
    """Swing-up-ish PD on the pendulum angle; deterministic in the observation."""
    def act(obs):
        cos, sin, vel = obs
        return np.clip([-2.0 * np.arctan2(sin, cos) - 0.5 * vel], -2.0, 2.0).astype(np.float32)
    return act

class Homing:
    """A policy object with reset() and select_action(), counting its resets."""
    resets = 0
    def __init__(self, env):
        self.gain = 0.3
    def reset(self):
        Homing.resets += 1
    def select_action(self, obs):
        return np.clip(-self.gain * obs["state"], -1, 1)

class Interrupting(Homing):
    """Presses Ctrl-C in the middle of the third episode."""
    def select_action(self, obs):
        if Homing.resets == 3:
            raise KeyboardInterrupt
        return super().select_action(obs)

def expert_for(env):
    return Homing(env)
'''


class TinyImageEnv(gym.Env):
    """Point on a plane: observation {"state": position, "rgb" (with cameras=True): a gradient image centred on it};
    action: a step in [-1, 1]^2; success within 0.5 of the origin."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, cameras: bool = False, render_mode: str | None = None, size: int = 16):
        self.cameras, self.render_mode, self.size = cameras, render_mode, size
        obs = {"state": spaces.Box(-10, 10, (2,), np.float32)}
        if cameras:
            obs["rgb"] = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)

    def _image(self) -> np.ndarray:
        y, x = np.mgrid[0:self.size, 0:self.size]
        img = np.full((self.size, self.size, 3), 100, np.uint8)
        img[..., 0] = np.clip(128 + 8 * (x - self.size / 2 - self.pos[0]), 0, 255)
        img[..., 1] = np.clip(128 + 8 * (y - self.size / 2 - self.pos[1]), 0, 255)
        return img

    def _obs(self) -> dict:
        obs = {"state": self.pos.astype(np.float32)}
        if self.cameras:
            obs["rgb"] = self._image()
        return obs

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-3, 3, 2)
        return self._obs(), {}

    def step(self, action):
        self.pos = self.pos + np.clip(action, -1, 1)
        dist = float(np.linalg.norm(self.pos))
        return self._obs(), -dist, dist < 0.5, False, {"is_success": dist < 0.5}

    def render(self):
        return self._image()


TINY = "ArkTest/TinyImage-v0"
if TINY not in gym.registry:
    gym.register(TINY, entry_point=TinyImageEnv, max_episode_steps=25)


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A policy module importable as ``ark_test_policies``; returns its name."""
    (tmp_path / "ark_test_policies.py").write_text(textwrap.dedent(POLICIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    sys.modules.pop("ark_test_policies", None)
    mod = importlib.import_module("ark_test_policies")
    mod.Homing.resets = 0
    return "ark_test_policies"


def test_collect_pendulum_with_a_dotted_path_policy(tmp_path: Path, policies: str) -> None:
    res = collect("Pendulum-v1", 2, tmp_path / "pend", policy=f"{policies}:pendulum_pd", seed=7, progress=False)
    assert (res.episodes, res.frames, res.reported, res.success_rate) == (2, 400, 0, None)
    ds = Dataset.open(tmp_path / "pend")
    assert ds.fps == 20  # 1 / env.dt
    assert {k: (f.dtype, f.shape) for k, f in ds.features.items()} == {
        "observation.state": ("float32", (3,)), "action": ("float32", (1,)), "reward": ("float32", ()),
        "done": ("bool", ()), "terminated": ("bool", ())}
    env = gym.make("Pendulum-v1")
    act = __import__(policies).pendulum_pd(env)
    for e, seed in enumerate((7, 8)):
        ep = ds.episode(e)
        assert ds.episode_info(e)["seed"] == seed and ds.episode_info(e)["success"] is None
        first, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(ep["observation.state"][0], first)  # episodes are reproducible from the seed
        np.testing.assert_array_equal(ep["action"], np.stack([act(o) for o in ep["observation.state"]]))
        assert ep["done"].tolist() == [False] * 199 + [True] and not ep["terminated"].any()
        obs = first
        for t in range(3):  # stored rewards are what the environment returned for the stored actions
            obs, reward, *_ = env.step(ep["action"][t])
            assert np.float32(reward) == ep["reward"][t]
    assert ds.info["policy"] == f"{policies}:pendulum_pd" and ds.tasks == ["Pendulum-v1"]


def test_collect_image_env_records_rgb_success_and_policy_resets(tmp_path: Path, policies: str) -> None:
    res = collect(TINY, 3, tmp_path / "tiny", policy=f"{policies}:Homing", images=True,
                  image_kwargs={"cameras": True}, progress=True)
    ds = Dataset.open(tmp_path / "tiny")
    assert ds.features["observation.rgb"].shape == (16, 16, 3) and ds.image_keys == ["observation.rgb"]
    assert __import__(policies).Homing.resets == 3
    assert res.reported == 3 and res.success_rate == ds.episode_success.mean() == 1.0
    ep = ds.episode(0)
    env = TinyImageEnv(cameras=True)
    env.reset(seed=0)
    np.testing.assert_array_equal(ep["observation.rgb"][0], env._image())
    assert ds.info["images"] is True and ds.info["env_kwargs"] == {"cameras": True}
    assert ds.validate().ok

    # Without a camera option the render() frames are stored; appending needs matching features.
    collect(TINY, 1, tmp_path / "render", policy=f"{policies}:Homing", images=True, progress=False)
    rendered = Dataset.open(tmp_path / "render")
    assert rendered.info["image_source"] == "render" and "observation.rgb" in rendered.features
    with pytest.raises(ArkError, match="already exists"):
        collect(TINY, 1, tmp_path / "tiny", policy=f"{policies}:Homing", progress=False)
    with pytest.raises(ArkError, match="features differ"):
        collect(TINY, 1, tmp_path / "tiny", policy=f"{policies}:Homing", append=True, progress=False)
    collect(TINY, 2, tmp_path / "tiny", policy=f"{policies}:Homing", images=True, image_kwargs={"cameras": True},
            append=True, seed=100, progress=False)
    assert Dataset.open(tmp_path / "tiny").num_episodes == 5


def test_ctrl_c_keeps_the_complete_episodes(tmp_path: Path, policies: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        collect(TINY, 5, tmp_path / "int", policy=f"{policies}:Interrupting", progress=False)
    ds = Dataset.open(tmp_path / "int")
    assert ds.num_episodes == 2 and [ds.episode_info(e)["seed"] for e in range(2)] == [0, 1]
    assert ds.validate().ok


@pytest.fixture
def ark_tiny() -> str:
    """TinyImageEnv under the ark/ namespace, for one test only (tests that walk ark/ envs never meet it)."""
    env_id = "ark/ArkTestTiny-v0"
    gym.register(env_id, entry_point=TinyImageEnv, max_episode_steps=25)
    yield env_id
    gym.registry.pop(env_id, None)


def test_default_policy_is_the_lazily_imported_ark_expert(tmp_path: Path, policies: str, ark_tiny: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect_mod, "DEFAULT_EXPERT", "ark_no_such_module_xyz:expert_for")
    with pytest.raises(ArkError, match="no scripted expert for ark/ArkTestTiny-v0") as exc:
        collect(ark_tiny, 1, tmp_path / "a", progress=False)
    assert "\n" not in str(exc.value) and not (tmp_path / "a").exists()
    monkeypatch.setattr(collect_mod, "DEFAULT_EXPERT", f"{policies}:expert_for")
    res = collect(ark_tiny, 1, tmp_path / "b", progress=False)
    assert res.episodes == 1 and Dataset.open(tmp_path / "b").info["policy"] == f"{policies}:expert_for"
    collect(ark_tiny, 1, tmp_path / "c", images=True, progress=False)  # ark/ envs: cameras=True turns images on
    with_images = Dataset.open(tmp_path / "c")
    assert with_images.info["env_kwargs"] == {"cameras": True} and with_images.info["image_source"] == "observation"
    assert with_images.image_keys == ["observation.rgb"]


@pytest.mark.parametrize("env_id, policy, match", [
    ("Pendulum-v1", None, "no default policy for Pendulum-v1"),
    ("Pendulum-v1", "nomodule_xyz:f", "cannot import 'nomodule_xyz'"),
    ("Pendulum-v1", "math:nothing_here", "has no attribute 'nothing_here'"),
    ("Pendulum-v1", "not-a-path", "not a dotted path"),
    ("Blackjack-v1", "random", "Tuple space"),
    ("NoSuchEnv-v0", "random", "cannot make environment"),
])
def test_user_mistakes_raise_one_line_errors(tmp_path: Path, env_id: str, policy, match: str) -> None:
    with pytest.raises(ArkError, match=match) as exc:
        collect(env_id, 1, tmp_path / "x", policy=policy, progress=False)
    assert "\n" not in str(exc.value)


# -- command line ----------------------------------------------------------------------------------
def run_ark(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run ``ark.cli.main`` in-process and capture what it printed."""
    from ark import cli

    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_collect_info_validate_merge_export_import(tmp_path: Path, policies: str, capsys, monkeypatch) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    pol = f"--policy={policies}:Homing"
    common = ["--env", TINY, "--images", "--image-kwargs", '{"cameras": true}', pol, "--no-progress"]
    assert run_ark(["collect", *common, "--episodes", "2", "--out", a], capsys, monkeypatch)[0] == 0
    code, _, err = run_ark(["collect", *common, "--episodes", "1", "--seed", "9", "--out", b], capsys, monkeypatch)
    assert code == 0 and "success 100.0% (1/1)" in err
    code, out, _ = run_ark(["dataset", "info", a], capsys, monkeypatch)
    assert code == 0 and "2 episodes" in out and "success 100.0%" in out
    code, out, _ = run_ark(["dataset", "info", a, "--json"], capsys, monkeypatch)
    summary = json.loads(out)
    assert summary["features"]["observation.rgb"]["shape"] == [16, 16, 3] and summary["frames"] == len(Dataset.open(a)) > 2
    code, out, _ = run_ark(["dataset", "validate", a], capsys, monkeypatch)
    assert code == 0 and "ok (2 episodes)" in out
    m = str(tmp_path / "m")
    assert run_ark(["dataset", "merge", a, b, "-o", m, "--no-progress"], capsys, monkeypatch)[0] == 0
    assert Dataset.open(m).num_episodes == 3
    lr, back = str(tmp_path / "lr"), str(tmp_path / "back")
    assert run_ark(["dataset", "export", m, lr, "--no-progress"], capsys, monkeypatch)[0] == 0
    assert run_ark(["dataset", "import", lr, back, "--no-progress"], capsys, monkeypatch)[0] == 0
    np.testing.assert_array_equal(Dataset.open(back).episode(2)["action"], Dataset.open(m).episode(2)["action"])


def test_cli_errors_are_one_line(tmp_path: Path, policies: str, capsys, monkeypatch) -> None:
    cases = [
        ["collect", "--env", "NoSuchEnv-v0", "--out", str(tmp_path / "x"), "--policy", "random"],
        ["collect", "--env", "Pendulum-v1", "--out", str(tmp_path / "x"), "--env-kwargs", "{bad"],
        ["collect", "--env", "Pendulum-v1", "--out", str(tmp_path / "x")],
        ["dataset", "info", str(tmp_path / "missing")],
        ["dataset", "import", str(tmp_path / "missing"), str(tmp_path / "y")],
    ]
    for argv in cases:
        code, _, err = run_ark(argv, capsys, monkeypatch)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)

    # A damaged dataset: validate lists the problems, then ends with one error line (no traceback).
    collect(TINY, 2, tmp_path / "d", policy=f"{policies}:Homing", images=True, image_kwargs={"cameras": True},
            progress=False)
    chunk = next((tmp_path / "d" / "data" / "observation.rgb" / "c").rglob("0"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(chunk.read_bytes()[:10])
    code, _, err = run_ark(["dataset", "validate", str(tmp_path / "d")], capsys, monkeypatch)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: dataset") and str(chunk) in last and "Traceback" not in err
