"""The base class of Ark's Gymnasium environments: configuration, backend, episode loop.

A subclass is a *task*: it samples an episode's scene, turns actions into backend commands and
raw state into observations, rewards and success. Everything robot-facing goes through a
:class:`envs.backend.RobotBackend`, chosen by ``backend=``:

* ``"sim"`` (default): pybullet in this process (a window with ``render_mode="human"``);
* ``"node"``: a driver node named by ``driver=`` over Ark services (see :mod:`envs.driver`).

Randomness comes from ``self.np_random`` only, seeded by ``reset(seed=...)``; the backend is
deterministic given the scene and the commands, so equal seeds and actions give equal episodes
on either backend.

Constructor arguments shared by every environment:

* ``render_mode``: ``None``, ``"rgb_array"`` or ``"human"``.
* ``config``: a YAML path or a mapping replacing ``configs/envs/<task>.yaml``.
* any top-level config section (``robot``, ``task``, ``cameras``, ``randomisation``, ``control``,
  ``render``) to merge over the file, and the shortcuts ``reward_type``, ``distance_threshold``
  and ``terminate_on_success`` (keys of ``task``).
* ``backend``, ``driver``, ``driver_timeout`` (seconds a driver may take to answer a call,
  default 5), ``driver_connect_timeout`` (seconds to wait for the driver to appear, default 10),
  ``ark_config`` (an :class:`ark.ArkConfig` for the node backend's graph).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ark.config import ArkConfig
from ark.errors import ArkError, ConfigError
from envs.backend import RobotBackend, Scene, State
from envs.config import EnvConfig, load_env_config, merge
from envs.errors import DriverError

TASK_SHORTCUTS = ("reward_type", "distance_threshold", "terminate_on_success")
SECTIONS = ("robot", "task", "cameras", "camera_presets", "randomisation", "control", "render")


class ArkEnv(gym.Env[dict, np.ndarray]):
    """Base of Ark's environments; see the module docstring for the constructor arguments."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 20}
    config_model: ClassVar[type[EnvConfig]]
    config_file: ClassVar[str]
    robot_kind: ClassVar[str]
    task_name: ClassVar[str]
    config_defaults: ClassVar[dict[str, Any]] = {}  # under the YAML file: the task's own defaults

    def __init__(self, render_mode: str | None = None, *, config: str | dict | None = None, backend: str = "sim",
                 driver: str | None = None, driver_timeout: float = 5.0, driver_connect_timeout: float = 10.0,
                 ark_config: ArkConfig | None = None, **overrides: Any) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.cfg = self.load_config(config, overrides)
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "render_fps": self.cfg.control.control_hz}
        if backend == "sim":
            if driver is not None:
                raise ConfigError(f"driver={driver!r} needs backend='node'")
            self.backend: RobotBackend = self.sim_backend(self.cfg, gui=render_mode == "human")
        elif backend == "node":
            if not driver:
                raise ConfigError("backend='node' needs driver='<driver node name>' (start one with "
                                  "`python -m envs.driver --env <env id> --name <name>`)")
            if render_mode == "human":
                raise ConfigError("render_mode='human' shows the local simulator; with backend='node' use 'rgb_array'")
            from envs.node_backend import NodeBackend

            self.backend = NodeBackend(driver, ark_config=ark_config, timeout=driver_timeout,
                                       connect_timeout=driver_connect_timeout)
        else:
            raise ConfigError(f"backend must be 'sim' or 'node', got {backend!r}")
        self.backend_kind = backend
        try:
            self.driver_info = self.backend.info()
            self._check_driver()
        except BaseException:
            self.backend.close()
            raise
        self.camera_keys = self._camera_keys()
        self.observation_space = self._observation_space()
        self.action_space = self._action_space()
        self._state: State | None = None
        self._scene: Scene = {}
        self._closed = False

    # -- configuration ------------------------------------------------------------------
    @classmethod
    def load_config(cls, config: str | dict | None = None, overrides: dict[str, Any] | None = None) -> EnvConfig:
        """The validated configuration of this environment (file or mapping, then overrides)."""
        merged: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            if key in TASK_SHORTCUTS:
                merged.setdefault("task", {})[key] = value
            elif key in SECTIONS:
                if key == "task" and isinstance(value, dict):
                    merged["task"] = {**value, **merged.get("task", {})}
                else:
                    merged[key] = value
            else:
                raise ConfigError(f"{cls.__name__}: unknown keyword argument {key!r} (expected one of: render_mode, "
                                  f"config, backend, driver, driver_timeout, driver_connect_timeout, ark_config, "
                                  f"{', '.join(SECTIONS + TASK_SHORTCUTS)})")
        cfg = load_env_config(cls.config_model, config, cls.config_file, merged, list(overrides or {}),
                              defaults=merge(cls.config_defaults, {"task": {"name": cls.task_name}}))
        if cfg.task.name != cls.task_name:
            raise ConfigError(f"{cfg.source}: key 'task.name': {cls.__name__} needs {cls.task_name!r}, "
                              f"got {cfg.task.name!r}")
        return cfg

    @classmethod
    def sim_backend(cls, cfg: EnvConfig, gui: bool = False) -> RobotBackend:
        """The pybullet backend of this task (also what the pybullet driver node wraps)."""
        raise NotImplementedError

    def _check_driver(self) -> None:
        info = self.driver_info
        name = f"driver {getattr(self.backend, 'driver', 'sim')!r}"
        if info.robot != self.robot_kind:
            raise DriverError(f"{name} drives a {info.robot!r} robot, but {type(self).__name__} needs {self.robot_kind!r}")
        for cam in self.cfg.cameras:
            have = info.cameras.get(cam.name)
            if have is None:
                raise DriverError(f"{name} has no camera {cam.name!r} (it has: {', '.join(info.cameras) or 'none'}; "
                                  f"start it with --camera {cam.name})")
            if list(have) != [cam.height, cam.width, cam.depth]:
                raise DriverError(f"{name} camera {cam.name!r} is {have[0]}x{have[1]} depth={have[2]}, the config asks "
                                  f"for {cam.height}x{cam.width} depth={cam.depth}")

    # -- spaces -------------------------------------------------------------------------
    def _camera_keys(self) -> list[tuple[str, str, str]]:
        """(state key, observation key, kind) for every image: the first camera gives ``rgb``/``depth``,
        the others ``rgb_<name>``/``depth_<name>``."""
        keys = []
        for i, cam in enumerate(self.cfg.cameras):
            suffix = "" if i == 0 else f"_{cam.name}"
            keys.append((f"camera/{cam.name}/rgb", f"rgb{suffix}", "rgb"))
            if cam.depth:
                keys.append((f"camera/{cam.name}/depth", f"depth{suffix}", "depth"))
        return keys

    def _camera_spaces(self) -> dict[str, spaces.Space]:
        out: dict[str, spaces.Space] = {}
        cams = {c.name: c for c in self.cfg.cameras}
        for state_key, obs_key, kind in self.camera_keys:
            cam = cams[state_key.split("/")[1]]
            if kind == "rgb":
                out[obs_key] = spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8)
            else:
                out[obs_key] = spaces.Box(0.0, cam.far, (cam.height, cam.width), np.float32)
        return out

    def _camera_obs(self, state: State) -> dict[str, np.ndarray]:
        return {obs_key: state[state_key] for state_key, obs_key, _ in self.camera_keys}

    def _observation_space(self) -> spaces.Dict:
        raise NotImplementedError

    def _action_space(self) -> spaces.Box:
        raise NotImplementedError

    # -- task hooks ---------------------------------------------------------------------
    def _sample_scene(self) -> Scene:
        """The episode's layout, drawn from ``self.np_random`` (keys in :mod:`envs.driver`)."""
        raise NotImplementedError

    def _command(self, action: np.ndarray, state: State) -> np.ndarray:
        raise NotImplementedError

    def _observation(self, state: State) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _evaluate(self, prev: State, state: State) -> tuple[float, bool, bool, dict[str, Any]]:
        """(reward, success, terminated, extra info) of the transition prev -> state."""
        raise NotImplementedError

    def _start_info(self, state: State) -> dict[str, Any]:
        raise NotImplementedError

    # -- gymnasium API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode. ``options["scene"]`` may fix scene entries (e.g. ``{"goal": [x, y, z]}``)."""
        super().reset(seed=seed)
        scene = self._sample_scene()
        fixed = (options or {}).get("scene") or {}
        for key, value in fixed.items():
            if key not in scene:
                raise ArkError(f"reset(options={{'scene': ...}}): unknown scene key {key!r} (keys: {', '.join(sorted(scene))})")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != scene[key].shape:
                raise ArkError(f"reset(options={{'scene': ...}}): {key!r} needs shape {scene[key].shape}, got {value.shape}")
            scene[key] = value
        state = self.backend.reset(scene, seed)
        self._scene, self._state = scene, state
        return self._observation(state), self._start_info(state)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self._state is None:
            raise ArkError(f"{type(self).__name__}.step() before reset()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ArkError(f"{type(self).__name__}: action must have shape {self.action_space.shape}, got {a.shape}")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        prev = self._state
        state = self.backend.step(self._command(a, prev))
        self._state = state
        reward, success, terminated, extra = self._evaluate(prev, state)
        info = {"is_success": bool(success), **extra}
        return self._observation(state), float(reward), bool(terminated), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.backend.render()
        if self.render_mode is None:
            gym.logger.warn(f"{type(self).__name__}.render() without a render_mode; pass render_mode='rgb_array' "
                            "to gymnasium.make")
        return None

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self.backend.close()

    # -- helpers for tasks --------------------------------------------------------------
    def _uniform(self, low, high) -> np.ndarray:
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        return low + (high - low) * self.np_random.random(low.shape)

    def _pick(self, choices: list) -> Any:
        return choices[int(self.np_random.integers(len(choices)))]

    def _visual_scene(self, visual, object_key: str, surface_key: str) -> Scene:
        """Colour and lighting entries of the scene when visual randomisation is on."""
        if not visual.enabled:
            return {}
        light = visual.lighting
        return {
            object_key: np.asarray(self._pick(visual.object_colors), dtype=np.float64),
            surface_key: np.asarray(self._pick(visual.surface_colors), dtype=np.float64),
            "light/direction": self._uniform(light.direction.low, light.direction.high),
            "light/color": self._uniform(light.color.low, light.color.high),
            "light/ambient": self._uniform([light.ambient[0]], [light.ambient[1]]),
            "light/diffuse": self._uniform([light.diffuse[0]], [light.diffuse[1]]),
        }


def f32(*parts: Any) -> np.ndarray:
    """Concatenate numbers/arrays into one float32 vector (observations are float32)."""
    if len(parts) == 1:  # the common case, on every step: one copy, no concatenate
        return np.array(parts[0], dtype=np.float32, ndmin=1).reshape(-1)
    return np.concatenate([np.atleast_1d(np.asarray(p, dtype=np.float64)) for p in parts]).astype(np.float32)


def box(n: int, low: float = -np.inf, high: float = np.inf) -> spaces.Box:
    return spaces.Box(low, high, (n,), np.float32)
