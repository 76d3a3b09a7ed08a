"""Record demonstrations from any Gymnasium environment into an Ark dataset, and the ``ark collect`` /
``ark dataset`` commands.

Any registered environment whose observation space is a ``Box`` or a (nested) ``Dict`` of ``Box``
spaces, and whose action space is a ``Box`` (or ``Discrete``/``MultiDiscrete``), can be recorded.
Frames are stored as:

    observation.state          a Box observation
    observation.<key>[.<sub>]  each Box of a Dict observation (``rgb`` images become ``observation.rgb``)
    action                     the action sent to ``env.step``
    reward, done, terminated   what ``env.step`` returned (done = terminated or truncated)

Episode ``k`` is reset with seed ``seed + k``; ``info["is_success"]`` at the last step, when the
environment reports it, is stored per episode.

The policy is named by a dotted path ``module:attr`` to a factory ``f(env) -> policy``, where
``policy(obs) -> action`` (or ``policy.select_action(obs)``) and an optional ``policy.reset()`` is
called at each episode start. ``"random"`` samples the action space. For Ark's own ``ark/`` tasks the
default is the scripted expert, :data:`DEFAULT_EXPERT`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ark.errors import ArkError

log = logging.getLogger(__name__)

DEFAULT_EXPERT = "envs.experts:expert_for"
"""Factory of scripted experts for ``ark/`` environments, imported only when needed."""

ARK_IMAGE_KWARGS: dict[str, Any] = {"cameras": True}
"""Environment kwargs that turn cameras on in Ark's environments (the default ``image_kwargs`` for ``ark/`` ids).
For other environments the default is ``{"render_mode": "rgb_array"}`` and ``env.render()`` frames are
stored as ``observation.rgb`` unless the observation already holds an image."""

RENDER_IMAGE_KWARGS: dict[str, Any] = {"render_mode": "rgb_array"}
IMAGE_KEY = "observation.rgb"


# -- policies ------------------------------------------------------------------------------------
def load_object(path: str) -> Any:
    """Import ``module:attr`` (attr may be dotted) and return the attribute; mistakes raise ArkError."""
    if not isinstance(path, str) or ":" not in path:
        raise ArkError(f"policy {path!r} is not a dotted path of the form module:attr (e.g. envs.experts:expert_for)")
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ArkError(f"cannot import {module_name!r} for policy {path!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ArkError(f"module {module_name!r} has no attribute {attr!r} (policy {path!r})") from None
    return obj


class _RandomPolicy:
    def __init__(self, env):
        self.space = env.action_space

    def __call__(self, obs):
        return self.space.sample()


def make_policy(spec: str | Callable | None, env, env_id: str) -> tuple[Callable[[Any], Any], Callable[[], None]]:
    """Build ``(act, reset)`` from a dotted path, a factory, ``"random"`` or None (the Ark expert)."""
    if spec is None:
        if not env_id.startswith("ark/"):
            raise ArkError(f"no default policy for {env_id}: pass --policy module:attr (a factory f(env) -> policy) "
                           f"or --policy random")
        try:
            factory = load_object(DEFAULT_EXPERT)
        except ArkError as exc:
            raise ArkError(f"no scripted expert for {env_id} ({exc}); pass --policy module:attr") from None
    elif spec == "random":
        factory = _RandomPolicy
    elif isinstance(spec, str):
        factory = load_object(spec)
    else:
        factory = spec
    if not callable(factory):
        raise ArkError(f"policy {spec!r} is not callable; expected a factory f(env) -> policy")
    policy = factory(env)
    if hasattr(policy, "select_action"):
        act = policy.select_action
    elif callable(policy):
        act = policy
    else:
        raise ArkError(f"the policy made by {spec!r} is neither callable nor has select_action(obs)")
    reset = getattr(policy, "reset", None)
    return act, (reset if callable(reset) else (lambda: None))


# -- spaces -> features --------------------------------------------------------------------------
def _box_feature(space, where: str) -> dict:
    from gymnasium import spaces

    if not isinstance(space, spaces.Box):
        raise ArkError(f"{where} is a {type(space).__name__} space; collect records Box and Dict-of-Box observations")
    return {"dtype": np.dtype(space.dtype).name, "shape": list(space.shape), "names": None}


def observation_features(space, prefix: str = "observation") -> dict[str, dict]:
    """Dataset features for an observation space: a Box is ``observation.state``, a Dict is flattened with dots."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        out: dict[str, dict] = {}
        for key, sub in space.spaces.items():
            if "/" in key or "." in key:
                raise ArkError(f"observation key {key!r} contains '/' or '.'; cannot be stored")
            out.update(observation_features(sub, f"{prefix}.{key}") if isinstance(sub, spaces.Dict)
                       else {f"{prefix}.{key}": _box_feature(sub, f"observation[{key!r}]")})
        return out
    return {f"{prefix}.state": _box_feature(space, "the observation space")}


def flatten_observation(obs: Any, space, prefix: str = "observation") -> dict[str, np.ndarray]:
    """The observation as ``{dataset key: array}``, cast to the space's dtype."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        out: dict[str, np.ndarray] = {}
        for key, sub in space.spaces.items():
            if key not in obs:
                raise ArkError(f"the observation has no key {key!r} although its space declares it")
            out.update(flatten_observation(obs[key], sub, f"{prefix}.{key}"))
        return out
    key = f"{prefix}.state" if prefix == "observation" else prefix
    x = np.asarray(obs, dtype=space.dtype)
    if x.shape != space.shape:
        raise ArkError(f"observation {key} has shape {x.shape}, its space declares {space.shape}")
    return {key: x}


def action_feature(space) -> dict:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return {"dtype": np.dtype(space.dtype).name, "shape": list(space.shape), "names": None}
    if isinstance(space, spaces.Discrete):
        return {"dtype": "int64", "shape": [], "names": None}
    if isinstance(space, spaces.MultiDiscrete):
        return {"dtype": "int64", "shape": list(space.shape), "names": None}
    raise ArkError(f"the action space is {type(space).__name__}; collect records Box (or Discrete) actions")


def _is_image(spec: Mapping) -> bool:
    return spec["dtype"] == "uint8" and len(spec["shape"]) == 3 and spec["shape"][-1] in (1, 3, 4)


def _env_fps(env) -> float | None:
    dt = getattr(env.unwrapped, "dt", None)
    if isinstance(dt, (int, float)) and dt > 0:
        fps = 1.0 / dt
    else:
        fps = env.metadata.get("render_fps")
        if not isinstance(fps, (int, float)) or fps <= 0:
            return None
    return int(round(fps)) if abs(fps - round(fps)) < 1e-6 else round(float(fps), 6)


# -- collection ----------------------------------------------------------------------------------
@dataclass
class CollectResult:
    """What :func:`collect` wrote."""

    path: Path
    episodes: int = 0
    frames: int = 0
    successes: int = 0
    reported: int = 0  # episodes whose env reported info["is_success"]
    interrupted: bool = False

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.reported if self.reported else None


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Hold Ctrl-C while an episode is being committed, then deliver it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if pending:
        raise KeyboardInterrupt


def collect(env_id: str, episodes: int, out: str | Path, policy: str | Callable | None = None, images: bool = False,
            seed: int = 0, env_kwargs: Mapping[str, Any] | None = None, progress: bool = True, *,
            image_kwargs: Mapping[str, Any] | None = None, max_steps: int | None = None, fps: float | None = None,
            append: bool = False, overwrite: bool = False, task: str | None = None) -> CollectResult:
    """Run ``policy`` in ``env_id`` for ``episodes`` episodes and store them in the Ark dataset at ``out``.

    ``images=True`` adds ``image_kwargs`` to the environment's kwargs (default :data:`ARK_IMAGE_KWARGS`
    for ``ark/`` environments, :data:`RENDER_IMAGE_KWARGS` otherwise) and stores the camera image as
    ``observation.rgb``. ``append`` adds to an existing dataset with the same features. Ctrl-C stops
    after keeping every complete episode already written (KeyboardInterrupt is re-raised).
    """
    import gymnasium as gym

    from policies.dataset import Dataset

    if not isinstance(episodes, int) or episodes < 1:
        raise ArkError(f"episodes must be a positive integer, got {episodes!r}")
    if max_steps is not None and max_steps < 1:
        raise ArkError(f"max_steps must be positive, got {max_steps}")
    out = Path(out)
    if out.exists() and not (append or overwrite):
        raise ArkError(f"{out} already exists (pass --append to add episodes, or --overwrite)")
    kwargs = dict(env_kwargs or {})
    use_render = False
    if images:
        extra = dict(image_kwargs) if image_kwargs is not None else (
            dict(ARK_IMAGE_KWARGS) if env_id.startswith("ark/") else dict(RENDER_IMAGE_KWARGS))
        kwargs.update(extra)
    if env_id.startswith("ark/"):
        import envs  # noqa: F401  (registers the ark/ environments on gymnasium 1.x)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise ArkError(f"cannot make environment {env_id!r}: {exc}") from None
    except TypeError as exc:
        raise ArkError(f"environment {env_id!r} rejected its kwargs {sorted(kwargs)}: {exc}") from None
    except ImportError as exc:
        raise ArkError(f"environment {env_id!r} needs a package that is not installed: {exc}") from None
    result = CollectResult(out)
    try:
        obs_space, act_space = env.observation_space, env.action_space
        features = observation_features(obs_space)
        features["action"] = action_feature(act_space)
        if images and not any(_is_image(f) for f in features.values()):
            if getattr(env, "render_mode", None) != "rgb_array":
                raise ArkError(f"images requested but {env_id} observations hold no uint8 image and render_mode is "
                               f"not rgb_array; pass image_kwargs that turn its camera on")
            use_render = True
        features.update(reward={"dtype": "float32", "shape": [], "names": None},
                        done={"dtype": "bool", "shape": [], "names": None},
                        terminated={"dtype": "bool", "shape": [], "names": None})
        if max_steps is None and (env.spec is None or env.spec.max_episode_steps is None):
            raise ArkError(f"{env_id} has no time limit; pass --max-steps so episodes end")
        rate = fps if fps is not None else _env_fps(env)
        if rate is None:
            raise ArkError(f"cannot tell the control rate of {env_id}; pass --fps")
        act, reset_policy = make_policy(policy, env, env_id)
        act_spec = features["action"]
        spec_name = policy if isinstance(policy, str) else (DEFAULT_EXPERT if policy is None else repr(policy))
        info = {"env_id": env_id, "env_kwargs": _jsonable(kwargs), "policy": spec_name, "images": images,
                "image_source": "render" if use_render else "observation", "seed": seed,
                "created_by": "ark collect", "gymnasium": gym.__version__}
        ds = None
        if append and out.exists():
            ds = Dataset.open(out)
            _check_compatible(ds, features, rate, use_render, env_id)
        with EpisodeProgress(progress, env_id, episodes) as bar:
            for k in range(episodes):
                ep_seed = seed + k
                obs, step_info = env.reset(seed=ep_seed)
                act_space.seed(ep_seed)
                reset_policy()
                frames: dict[str, list] = {key: [] for key in features}
                if use_render:
                    frames[IMAGE_KEY] = []
                steps = 0
                while True:
                    for key, x in flatten_observation(obs, obs_space).items():
                        frames[key].append(x)
                    if use_render:
                        frames[IMAGE_KEY].append(np.asarray(env.render(), dtype=np.uint8))
                    action = np.asarray(act(obs), dtype=act_spec["dtype"])
                    if action.shape != tuple(act_spec["shape"]):
                        if action.size != math.prod(act_spec["shape"]):
                            raise ArkError(f"the policy returned an action of shape {action.shape}; "
                                           f"{env_id} expects {tuple(act_spec['shape'])}")
                        action = action.reshape(act_spec["shape"])
                    obs, reward, terminated, truncated, step_info = env.step(action)
                    steps += 1
                    frames["action"].append(action)
                    frames["reward"].append(np.float32(reward))
                    frames["terminated"].append(bool(terminated))
                    frames["done"].append(bool(terminated or truncated or (max_steps is not None and steps >= max_steps)))
                    if frames["done"][-1]:
                        break
                success = step_info.get("is_success") if isinstance(step_info, Mapping) else None
                data = {key: np.stack(v) for key, v in frames.items()}
                with _defer_sigint():
                    if ds is None:
                        feats = dict(features)
                        if use_render:
                            img = data[IMAGE_KEY]
                            feats[IMAGE_KEY] = {"dtype": "uint8", "shape": list(img.shape[1:]), "names": None}
                        ds = Dataset.create(out, feats, rate, tasks=[task or env_id], info=info, overwrite=overwrite)
                    ds.append_episode(data, success=None if success is None else bool(success), seed=ep_seed,
                                      task=task or env_id)
                    result.episodes += 1
                    result.frames += steps
                    if success is not None:
                        result.reported += 1
                        result.successes += int(bool(success))
                bar.advance(result.successes, result.reported)
    except KeyboardInterrupt:
        result.interrupted = True
        log.warning("interrupted: kept %d complete episode(s) in %s", result.episodes, out)
        raise
    finally:
        env.close()
    return result


def _check_compatible(ds, features: Mapping[str, Mapping], fps: float, use_render: bool, env_id: str) -> None:
    from policies.dataset import DatasetError

    have = {k: (f.dtype, tuple(f.shape)) for k, f in ds.features.items()}
    want = {k: (f["dtype"], tuple(f["shape"])) for k, f in features.items()}
    if use_render:
        want[IMAGE_KEY] = have.get(IMAGE_KEY, ("uint8", ()))
    if have != want or ds.fps != fps:
        diff = sorted(set(have) ^ set(want)) or [k for k in have if have[k] != want.get(k)] or ["fps"]
        raise DatasetError(f"cannot append {env_id} episodes to {ds.path}: its features differ (first: {diff[0]!r})")


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


class EpisodeProgress:
    """Episode progress bar with the success rate so far (rich, on stderr), or nothing.

    Shared by ``collect`` and ``policies.evaluate``.
    """

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total
        self._bar = self._task = None

    def __enter__(self) -> "EpisodeProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[success]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, success="success n/a")
        return self

    def advance(self, successes: int, reported: int) -> None:
        """One more episode; ``successes`` of the ``reported`` episodes so far succeeded."""
        if self._bar is not None:
            text = f"success {100 * successes / reported:.0f}% ({successes}/{reported})" if reported else "success n/a"
            self._bar.update(self._task, advance=1, success=text)

    def __exit__(self, *exc) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


# -- command line --------------------------------------------------------------------------------
def cmd_collect(args: argparse.Namespace) -> int:
    from ark.cli import json_object

    from rich.console import Console

    res = collect(args.env, args.episodes, args.out, policy=args.policy, images=args.images, seed=args.seed,
                  env_kwargs=json_object(args.env_kwargs, "--env-kwargs") or {}, progress=not args.no_progress,
                  image_kwargs=json_object(args.image_kwargs, "--image-kwargs"),
                  max_steps=args.max_steps, fps=args.fps, append=args.append, overwrite=args.overwrite)
    rate = "n/a" if res.success_rate is None else f"{100 * res.success_rate:.1f}% ({res.successes}/{res.reported})"
    Console(stderr=True).print(f"wrote {res.episodes} episodes, {res.frames} frames to {res.path}; success {rate}",
                               highlight=False, soft_wrap=True)
    return 0


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Column, Table

    from policies.dataset import Dataset

    ds = Dataset.open(args.path, read_only=True)
    success = ds.episode_success
    known = success[success >= 0]
    summary = {
        "path": str(ds.path), "episodes": ds.num_episodes, "frames": ds.num_frames, "fps": ds.fps,
        "duration_s": ds.num_frames / ds.fps, "success_rate": float(known.mean()) if len(known) else None,
        "tasks": ds.tasks, "info": ds.info,
        "features": {k: {**f.to_json(), "chunk_frames": ds.chunk_frames[k]} for k, f in ds.features.items()},
        "bytes": _dir_bytes(ds.path),
    }
    out = Console()
    if args.json:
        out.print_json(json.dumps(summary))
        return 0
    table = Table("dtype", "shape", "chunk", "on disk")
    table.columns.insert(0, Column("key", no_wrap=True))
    table.add_column("mean", max_width=32)
    stats = ds.stats
    for key, feat in ds.features.items():
        mean = stats.get(key, {}).get("mean")
        shown = "" if mean is None else np.array2string(np.asarray(mean), precision=3, threshold=6, max_line_width=60)
        table.add_row(key, feat.dtype, "x".join(map(str, feat.shape)) or "scalar", str(ds.chunk_frames[key]),
                      _fmt_bytes(_dir_bytes(ds.path / "data" / key)), shown)
    out.print(table)
    rate = "n/a" if summary["success_rate"] is None else f"{100 * summary['success_rate']:.1f}%"
    out.print(f"{ds.num_episodes} episodes, {ds.num_frames} frames at {ds.fps:g} fps "
              f"({summary['duration_s']:.1f} s), success {rate}, {_fmt_bytes(summary['bytes'])} on disk", highlight=False, soft_wrap=True)
    if ds.tasks:
        out.print(f"tasks: {', '.join(ds.tasks)}", highlight=False, soft_wrap=True)
    src = ds.info
    if src.get("env_id"):
        out.print(f"recorded from {src['env_id']} with policy {src.get('policy')}", highlight=False, soft_wrap=True)
    return 0


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from policies.dataset import Dataset, DatasetError

    err = Console(stderr=True)
    ds = Dataset.open(args.path, read_only=not args.repair)
    if args.repair:
        for fixed in ds.repair_metadata():
            err.print(f"repaired {fixed}", highlight=False, soft_wrap=True)
        ds = Dataset.open(args.path, read_only=True)
    rep = ds.validate(raise_error=False)
    for note in rep.notes:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if not rep.ok:
        for problem in rep.problems:
            err.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        raise DatasetError(rep.summary())
    Console().print(rep.summary(), highlight=False, soft_wrap=True)
    return 0


def cmd_dataset_merge(args: argparse.Namespace) -> int:
    from rich.console import Console

    from policies.dataset import merge

    ds = merge(args.paths, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    Console(stderr=True).print(f"wrote {ds.num_episodes} episodes, {ds.num_frames} frames to {ds.path}", highlight=False, soft_wrap=True)
    return 0


def cmd_dataset_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    from policies.lerobot import export_lerobot

    path = export_lerobot(args.path, args.out, vcodec=args.vcodec, crf=args.crf, pix_fmt=args.pix_fmt,
                          robot_type=args.robot_type, overwrite=args.overwrite, progress=not args.no_progress)
    Console(stderr=True).print(f"exported LeRobot v3.0 dataset to {path}", highlight=False, soft_wrap=True)
    return 0


def cmd_dataset_import(args: argparse.Namespace) -> int:
    from rich.console import Console

    from policies.lerobot import import_lerobot

    ds = import_lerobot(args.src, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    Console(stderr=True).print(f"imported {ds.num_episodes} episodes, {ds.num_frames} frames into {ds.path}",
                               highlight=False, soft_wrap=True)
    return 0


def add_collect_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ark collect`` and ``ark dataset info|validate|merge|export|import`` on ``ark``'s subparsers."""
    c = subparsers.add_parser("collect", help="record demonstrations from a Gymnasium environment")
    c.add_argument("--env", required=True, help="registered environment id, e.g. ark/PandaPush-v0 or Pendulum-v1")
    c.add_argument("--episodes", type=int, default=10, help="episodes to record (default 10)")
    c.add_argument("--out", required=True, help="dataset folder to write")
    c.add_argument("--policy", help="module:attr of a factory f(env) -> policy, or 'random' "
                                    f"(default for ark/ envs: {DEFAULT_EXPERT})")
    c.add_argument("--images", action="store_true", help="turn cameras on and store observation.rgb")
    c.add_argument("--seed", type=int, default=0, help="episode k is reset with seed+k (default 0)")
    c.add_argument("--env-kwargs", help='environment kwargs as JSON, e.g. \'{"backend": "sim"}\'')
    c.add_argument("--image-kwargs", help=f"kwargs that turn cameras on (default for ark/ envs: "
                                          f"{json.dumps(ARK_IMAGE_KWARGS)}, else render_mode rgb_array)")
    c.add_argument("--max-steps", type=int, help="end episodes after this many steps")
    c.add_argument("--fps", type=float, help="control rate to record (default: from the environment)")
    c.add_argument("--append", action="store_true", help="add episodes to an existing dataset")
    c.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(fn=cmd_collect)

    d = subparsers.add_parser("dataset", help="inspect, check, merge, export and import datasets")
    ds = d.add_subparsers(dest="sub", required=True)
    i = ds.add_parser("info", help="features, sizes, episodes and success rate")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(fn=cmd_dataset_info)
    v = ds.add_parser("validate", help="check every chunk and the metadata; name damaged files")
    v.add_argument("path")
    v.add_argument("--repair", action="store_true", help="rewrite a damaged metadata copy from the intact one")
    v.set_defaults(fn=cmd_dataset_validate)
    m = ds.add_parser("merge", help="concatenate datasets with the same features")
    m.add_argument("paths", nargs="+")
    m.add_argument("-o", "--out", required=True)
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(fn=cmd_dataset_merge)
    e = ds.add_parser("export", help="write a LeRobot v3.0 dataset (parquet + mp4)")
    e.add_argument("path")
    e.add_argument("out")
    e.add_argument("--vcodec", default="libx264", help="video codec (default libx264; libsvtav1 is LeRobot's)")
    e.add_argument("--crf", type=int, default=None, help="video quality (lower is better; codec default if unset)")
    e.add_argument("--pix-fmt", default="yuv420p")
    e.add_argument("--robot-type", default=None)
    e.add_argument("--overwrite", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(fn=cmd_dataset_export)
    im = ds.add_parser("import", help="read a LeRobot v3.0 dataset into an Ark dataset")
    im.add_argument("src")
    im.add_argument("out")
    im.add_argument("--overwrite", action="store_true")
    im.add_argument("--no-progress", action="store_true")
    im.set_defaults(fn=cmd_dataset_import)
