"""Evaluate a policy in a Gymnasium environment: success rate with a 95 % interval, episode length, return, video.

    result = evaluate("runs/push-dp", "ark/PandaPush-v0", episodes=50, video="push.mp4")
    print(result.summary())

The policy is a training run or checkpoint folder (``Policy.load``), a folder exported with
``ark export`` (run by ONNX Runtime), or a policy object with ``reset()`` and
``select_action(obs)``. Any registered environment works when its spaces match the policy:
observation keys follow the dataset's naming (``ark collect``) — a ``Box`` observation is
``observation.state``, a ``Dict`` observation's entry ``key`` is ``observation.<key>`` — and the
action space must be a ``Box`` of the policy's action shape. A policy that needs
``observation.rgb`` in an environment whose observations hold no image gets ``env.render()``
frames, as ``ark collect --images`` records them.

Episode ``k`` is reset with seed ``seed + k``. An episode succeeds when the environment reports
``info["is_success"]`` true at any step (environments that never report it give no success
rate). Actions are clipped to the action space's bounds.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ark.errors import ArkError
from policies.errors import FeatureMismatch, NonFiniteObservation, PolicyError
from policies.collect import EpisodeProgress

IMAGE_KEY = "observation.rgb"
ARK_IMAGE_KWARGS: dict[str, Any] = {"cameras": True}
_DRIVER_ONLY_KWARGS = ("render_mode", "backend", "driver", "ark_config", "driver_timeout", "driver_connect_timeout")


# ----- statistics -------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EpisodeRecord:
    """One evaluation episode."""

    episode: int
    seed: int
    length: int
    ret: float
    success: bool | None  # None when the environment never reported ``is_success``
    terminated: bool
    truncated: bool
    wall_time_s: float


@dataclass
class EvalResult:
    """Per-episode records and their summary (``success_rate`` is None when no episode reported success)."""

    env_id: str
    policy: str
    episodes: list[EpisodeRecord] = field(default_factory=list)
    video: Path | None = None
    wall_time_s: float = 0.0

    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def successes(self) -> int:
        return sum(1 for e in self.episodes if e.success)

    @property
    def reported(self) -> int:
        return sum(1 for e in self.episodes if e.success is not None)

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.reported if self.reported else None

    @property
    def success_ci(self) -> tuple[float, float] | None:
        """95 % Wilson interval of the success rate."""
        return wilson_interval(self.successes, self.reported) if self.reported else None

    @property
    def mean_length(self) -> float:
        return float(np.mean([e.length for e in self.episodes])) if self.episodes else 0.0

    @property
    def mean_return(self) -> float:
        return float(np.mean([e.ret for e in self.episodes])) if self.episodes else 0.0

    def summary(self) -> str:
        """One line: success rate with its interval, mean length and return."""
        parts = [f"{self.env_id}, {self.n} episodes"]
        if self.success_rate is not None:
            lo, hi = self.success_ci
            parts.append(f"success {100 * self.success_rate:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%, "
                         f"{self.successes}/{self.reported})")
        parts.append(f"mean length {self.mean_length:.1f}")
        parts.append(f"mean return {self.mean_return:.3g}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        ci = self.success_ci
        return {"env_id": self.env_id, "policy": self.policy, "episodes": self.n, "success_rate": self.success_rate,
                "success_ci95": list(ci) if ci else None, "mean_length": self.mean_length,
                "mean_return": self.mean_return, "video": str(self.video) if self.video else None,
                "wall_time_s": self.wall_time_s, "per_episode": [asdict(e) for e in self.episodes]}


# ----- policies ---------------------------------------------------------------------------------
def load_policy(policy: Any, device: str = "cpu") -> Any:
    """A policy object from a checkpoint / run folder (PyTorch) or an ``ark export`` folder (ONNX Runtime).

    Objects with ``select_action`` pass through unchanged.
    """
    if hasattr(policy, "select_action"):
        return policy
    path = Path(policy)
    from policies.onnx_runner import ONNX_META_FILE

    if (path / ONNX_META_FILE).is_file():
        from policies.onnx_runner import OnnxPolicy

        return OnnxPolicy(path)
    from policies.base import Policy

    return Policy.load(path, device=device)


def policy_spec(policy: Any) -> tuple[dict[str, tuple[int, ...]], int]:
    """(input features, action dimension) of a PyTorch or ONNX policy."""
    cfg = getattr(policy, "config", None)
    if cfg is not None:
        return dict(cfg.input_features), int(cfg.action_dim)
    if hasattr(policy, "input_features") and hasattr(policy, "action_dim"):
        return dict(policy.input_features), int(policy.action_dim)
    raise PolicyError(f"{type(policy).__name__} does not say which observations it takes "
                      f"(expected .config or .input_features and .action_dim)")


def _policy_name(policy: Any) -> str:
    if isinstance(policy, (str, os.PathLike)):
        return str(policy)
    return getattr(policy, "name", None) or getattr(policy, "type", None) or type(policy).__name__


# ----- environments -----------------------------------------------------------------------------
class ObservationAdapter:
    """Turns an environment's observation into the policy's ``{dataset key: array}`` dict, checked."""

    def __init__(self, env: Any, env_id: str, input_features: Mapping[str, tuple[int, ...]]):
        from policies.collect import observation_features

        self.env = env
        self.space = env.observation_space
        try:
            have = observation_features(self.space)
        except ArkError as exc:
            raise FeatureMismatch(f"{env_id}: {exc}") from None
        self.from_render = False
        for key, shape in input_features.items():
            if key not in have:
                if key == IMAGE_KEY and getattr(env, "render_mode", None) == "rgb_array":
                    self.from_render = True  # as `ark collect --images` records env.render() frames
                    continue
                raise FeatureMismatch(f"{env_id} observations have no '{key}' (the policy needs {list(shape)}; "
                                      f"the environment gives {', '.join(have) or 'nothing'})")
            got = tuple(have[key]["shape"])
            if got != tuple(shape):
                raise FeatureMismatch(f"{env_id} observation '{key}' has shape {list(got)}, the policy expects "
                                      f"{list(shape)}")
        self.keys = list(input_features)

    def __call__(self, obs: Any) -> dict[str, np.ndarray]:
        from policies.collect import flatten_observation

        flat = flatten_observation(obs, self.space)
        if self.from_render:
            flat[IMAGE_KEY] = np.asarray(self.env.render(), dtype=np.uint8)
        for key in self.keys:
            value = flat.get(key)
            if value is not None and value.dtype.kind == "f" and not np.isfinite(value).all():
                raise NonFiniteObservation(f"observation '{key}' from the environment contains NaN or inf")
        return flat


def check_action_space(env: Any, env_id: str, action_dim: int) -> None:
    """FeatureMismatch unless the env's action space is a Box of shape ``(action_dim,)``."""
    from gymnasium import spaces

    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise FeatureMismatch(f"{env_id} has a {type(space).__name__} action space; the policy outputs "
                              f"continuous actions of shape ({action_dim},)")
    if tuple(space.shape) != (action_dim,):
        raise FeatureMismatch(f"{env_id} action space has shape {tuple(space.shape)}, the policy outputs "
                              f"({action_dim},)")


def make_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> Any:
    """``gymnasium.make`` with one-line ArkErrors for unknown ids, bad kwargs or missing packages."""
    import gymnasium as gym

    if env_id.startswith("ark/"):
        import envs  # noqa: F401  (registers the ark/ environments on gymnasium 1.x)
    kwargs = dict(env_kwargs or {})
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise ArkError(f"cannot make environment {env_id!r}: {exc}") from None
    except TypeError as exc:
        raise ArkError(f"environment {env_id!r} rejected its kwargs {sorted(kwargs)}: {exc}") from None
    except ImportError as exc:
        raise ArkError(f"environment {env_id!r} needs a package that is not installed: {exc}") from None


@contextlib.contextmanager
def eval_env(env_id: str, input_features: Mapping[str, tuple[int, ...]], action_dim: int, *,
             env_kwargs: Mapping[str, Any] | None = None, backend: str | None = None, render: bool = False,
             ark_config: Any = None) -> Iterator[tuple[Any, ObservationAdapter]]:
    """An environment checked against the policy's spaces, and its observation adapter; closed afterwards.

    ``backend`` (Ark environments): ``sim`` runs pybullet in this process; ``node`` drives the
    robot over Ark services — through the driver named by ``env_kwargs["driver"]``, or, when none
    is named, a pybullet driver node started here for the duration.
    """
    kwargs = dict(env_kwargs or {})
    needs_image = any(len(s) == 3 for s in input_features.values())
    driver = None
    if backend is not None:
        if backend not in ("sim", "node"):
            raise ArkError(f"backend must be 'sim' or 'node', got {backend!r}")
        if not env_id.startswith("ark/"):
            raise ArkError(f"backend {backend!r} applies to Ark environments (ark/...), not {env_id}")
        kwargs["backend"] = backend
    if render or (needs_image and not env_id.startswith("ark/")):
        kwargs.setdefault("render_mode", "rgb_array")
    if needs_image and env_id.startswith("ark/") and "cameras" not in kwargs:
        kwargs.update(ARK_IMAGE_KWARGS)
    try:
        if kwargs.get("backend") == "node" and "driver" not in kwargs:
            from envs.driver import PybulletDriverNode

            name = f"eval_driver_{os.getpid()}"
            overrides = {k: v for k, v in kwargs.items() if k not in _DRIVER_ONLY_KWARGS}
            driver = PybulletDriverNode(name, env_id, overrides=overrides, ark_config=ark_config).start()
            kwargs["driver"] = name
            if ark_config is not None:
                kwargs.setdefault("ark_config", ark_config)
        env = make_env(env_id, kwargs)
        try:
            adapter = ObservationAdapter(env, env_id, input_features)
            check_action_space(env, env_id, action_dim)
            yield env, adapter
        finally:
            env.close()
    finally:
        if driver is not None:
            driver.shutdown()


# ----- video ------------------------------------------------------------------------------------
class VideoWriter:
    """RGB frames to an mp4 with PyAV (libx264, else mpeg4); odd sizes are padded to even."""

    def __init__(self, path: str | os.PathLike[str], fps: float):
        self.path = Path(path)
        self.fps = fps
        self._container = None
        self._stream = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        try:
            import av
        except ImportError:
            raise ArkError("writing videos needs PyAV: pip install 'ark-robotics[data]'") from None
        from fractions import Fraction

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1000)
        for codec in ("libx264", "mpeg4"):
            if codec in av.codecs_available:
                break
        else:
            self._container.close()
            raise ArkError("PyAV has neither libx264 nor mpeg4 to write videos with")
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray | None) -> None:
        if frame is None:
            return
        import av

        img = np.asarray(frame)
        if img.dtype != np.uint8:
            img = np.clip(img * (255 if img.dtype.kind == "f" and img.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        img = img[..., :3]
        if self._container is None:
            self._open(*img.shape[:2])
        h, w = self._stream.height, self._stream.width
        if img.shape[:2] != (h, w):
            padded = np.zeros((h, w, 3), np.uint8)
            hh, ww = min(h, img.shape[0]), min(w, img.shape[1])
            padded[:hh, :ww] = img[:hh, :ww]
            img = padded
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None


def env_fps(env: Any, default: float = 10.0) -> float:
    """The environment's control rate: 1 / ``dt`` or ``metadata["render_fps"]``."""
    dt = getattr(env.unwrapped, "dt", None)
    if isinstance(dt, (int, float)) and dt > 0:
        return 1.0 / dt
    fps = env.metadata.get("render_fps")
    return float(fps) if isinstance(fps, (int, float)) and fps > 0 else default


# ----- the episode loop -------------------------------------------------------------------------
def run_episodes(env: Any, adapter: ObservationAdapter, act: Callable[[dict[str, np.ndarray], int, int], Any],
                 reset: Callable[[int], None], episodes: int, *, seed: int = 0, max_steps: int | None = None,
                 video: VideoWriter | None = None, video_episodes: int = 0, progress: bool = False,
                 label: str = "eval", env_id: str = "") -> list[EpisodeRecord]:
    """Run ``episodes`` episodes: ``reset(k)`` before episode ``k``, ``act(obs, k, t)`` for each step's action.

    ``obs`` is the adapter's ``{dataset key: array}``. Errors a user can cause (NaN
    observations, wrong action shapes) are re-raised naming the episode and step.
    """
    low, high = env.action_space.low, env.action_space.high
    records: list[EpisodeRecord] = []
    if max_steps is None and (env.spec is None or env.spec.max_episode_steps is None):
        raise ArkError(f"{env_id or 'the environment'} has no time limit; pass max_steps so episodes end")
    with EpisodeProgress(progress, label, episodes) as bar:
        for k in range(episodes):
            t0 = time.perf_counter()
            ep_seed = seed + k
            obs, info = env.reset(seed=ep_seed)
            env.action_space.seed(ep_seed)
            reset(k)
            record_video = video is not None and k < video_episodes
            if record_video:
                video.write(env.render())
            ret, steps, success = 0.0, 0, None
            terminated = truncated = False
            while True:
                try:
                    action = act(adapter(obs), k, steps)
                except (NonFiniteObservation, FeatureMismatch) as exc:
                    raise type(exc)(f"{env_id} episode {k} (seed {ep_seed}) step {steps}: {exc}") from None
                action = np.asarray(action, dtype=np.float64).reshape(-1)
                if action.shape != low.shape:
                    raise FeatureMismatch(f"the policy returned an action of shape {action.shape}; {env_id} "
                                          f"expects {low.shape}")
                action = np.clip(action, low, high).astype(env.action_space.dtype)
                obs, reward, terminated, truncated, info = env.step(action)
                steps += 1
                ret += float(reward)
                reported = info.get("is_success") if isinstance(info, Mapping) else None
                if reported is not None:
                    success = bool(success) or bool(reported)
                if record_video:
                    video.write(env.render())
                if terminated or truncated or (max_steps is not None and steps >= max_steps):
                    truncated = truncated or not terminated
                    break
            records.append(EpisodeRecord(k, ep_seed, steps, ret, success, bool(terminated), bool(truncated),
                                         time.perf_counter() - t0))
            bar.advance(sum(1 for r in records if r.success), sum(1 for r in records if r.success is not None))
    return records


def evaluate(
    policy: Any,
    env_id: str | None,
    episodes: int,
    *,
    seed: int = 0,
    video: str | os.PathLike[str] | None = None,
    video_episodes: int = 3,
    env_kwargs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    backend: str | None = None,
    device: str = "cpu",
    ark_config: Any = None,
) -> EvalResult:
    """Run ``policy`` for ``episodes`` seeded episodes of ``env_id``; see the module docstring.

    ``policy``: a run/checkpoint folder, an ``ark export`` folder, or a policy object.
    ``env_id`` None: the environment the training data came from (its run's ``train.json``),
    whose recorded ``env_kwargs`` are also the default. ``video``: an mp4 path; the first
    ``video_episodes`` episodes are rendered into it. ``backend``: ``sim`` / ``node`` for Ark
    environments (see :func:`eval_env`).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ArkError(f"episodes must be a positive integer, got {episodes!r}")
    if max_steps is not None and max_steps < 1:
        raise ArkError(f"max_steps must be positive, got {max_steps}")
    run = _run_info(policy)
    if env_id is None:
        env_id = (run or {}).get("env_id")
        if not env_id:
            raise ArkError("name the environment (--env ID): the policy's training data do not record one")
    if env_kwargs is None and run and run.get("env_id") == env_id and isinstance(run.get("env_kwargs"), dict):
        env_kwargs = {k: v for k, v in run["env_kwargs"].items() if k not in _DRIVER_ONLY_KWARGS}
    if device != "cpu":
        from policies.train import resolve_device

        resolve_device(device)
    pol = load_policy(policy, device=device)
    inputs, action_dim = policy_spec(pol)
    result = EvalResult(env_id=env_id, policy=_policy_name(policy))
    t0 = time.perf_counter()
    with eval_env(env_id, inputs, action_dim, env_kwargs=env_kwargs, backend=backend, render=video is not None,
                  ark_config=ark_config) as (env, adapter):
        writer = VideoWriter(video, env_fps(env)) if video is not None else None
        try:
            result.episodes = run_episodes(
                env, adapter, lambda obs, k, t: pol.select_action(obs), lambda k: pol.reset(), episodes, seed=seed,
                max_steps=max_steps, video=writer, video_episodes=video_episodes, progress=progress,
                label=f"eval {env_id}", env_id=env_id)
        finally:
            if writer is not None:
                writer.close()
                result.video = writer.path if writer.frames else None
    result.wall_time_s = time.perf_counter() - t0
    return result


def _run_info(policy: Any) -> dict[str, Any] | None:
    """The training run's ``train.json`` beside a policy folder (or its parent, for an export inside it)."""
    if hasattr(policy, "select_action"):
        return None
    from policies.train import read_run

    path = Path(policy)
    for folder in (path, path.parent, path.parent.parent):
        try:
            run = read_run(folder)
        except PolicyError:
            run = None
        if run is not None:
            return run
    return None
