"""Environment configuration: robot, task, cameras, randomisation and control rate.

Each environment reads ``configs/envs/<task>.yaml`` (or the file given as ``config=``), then
applies constructor keyword arguments on top (nested mappings merge, lists replace), then
validates the result with the pydantic models below. A bad file, key or value fails here,
at load time, with :class:`ark.errors.ConfigError` naming the file, the key path and what
was expected::

    configs/envs/panda_push.yaml: key 'randomisation.object.low': expected 2 numbers, got [0.1]

Asset paths (URDFs) are resolved at load time too, in this order: absolute path, relative
to the config file, Ark's ``sim_assets/`` folder, pybullet_data.

Cameras may be written in full or refer to a preset of the file's ``camera_presets``
section by name (``cameras: [front]``, or ``{name: front, width: 64, depth: true}`` to
override some fields of the preset); ``cameras: true`` means the first preset, ``false`` none.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ark.config import read_yaml
from ark.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("ARK_ENV_CONFIGS", REPO_ROOT / "configs" / "envs"))
SIM_ASSETS = Path(os.environ.get("ARK_SIM_ASSETS", REPO_ROOT / "sim_assets"))


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"expected [low, high] with low <= high, got [{v[0]}, {v[1]}]")
    return v


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
Vec2 = tuple[float, float]
Vec3 = tuple[float, float, float]
def _unit(v: tuple[float, ...]) -> tuple[float, ...]:
    if not all(0.0 <= c <= 1.0 for c in v):
        raise ValueError(f"colour channels must lie in [0, 1], got {list(v)}")
    return v


RGBA = Annotated[tuple[float, float, float, float], AfterValidator(_unit)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BoxRegion(Strict):
    """An axis-aligned region ``low <= p <= high`` sampled uniformly (world frame, metres)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @model_validator(mode="after")
    def _check(self) -> "BoxRegion":
        if len(self.low) != len(self.high):
            raise ValueError(f"low and high must have the same length, got {len(self.low)} and {len(self.high)}")
        if any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"expected low <= high in every coordinate, got low={list(self.low)} high={list(self.high)}")
        return self


def _region(dims: int):
    def check(v: BoxRegion) -> BoxRegion:
        if len(v.low) != dims:
            raise ValueError(f"expected low/high of {dims} numbers, got {len(v.low)}")
        return v
    return AfterValidator(check)


class PlanarPoseRange(Strict):
    """Where an object starts: x, y uniform in ``[low, high]``, yaw (rad) uniform in ``yaw``."""

    low: Vec2
    high: Vec2
    yaw: Range = (0.0, 0.0)

    @model_validator(mode="after")
    def _check(self) -> "PlanarPoseRange":
        if any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"expected low <= high in every coordinate, got low={list(self.low)} high={list(self.high)}")
        return self


# -- cameras ------------------------------------------------------------------------------


class CameraConfig(Strict):
    """A pinhole camera. ``position``/``target``/``up`` are in the frame of ``mount``: ``world``
    or the name of a robot link (then the camera moves with it). ``fov`` is vertical, degrees."""

    name: Name
    width: int = Field(96, gt=0, le=4096)
    height: int = Field(96, gt=0, le=4096)
    fov: float = Field(60.0, gt=0, lt=180)
    position: Vec3
    target: Vec3
    up: Vec3 = (0.0, 0.0, 1.0)
    mount: str = "world"
    near: float = Field(0.01, gt=0)
    far: float = Field(5.0, gt=0)
    depth: bool = False

    @model_validator(mode="after")
    def _check(self) -> "CameraConfig":
        if self.far <= self.near:
            raise ValueError(f"expected far > near, got near={self.near} far={self.far}")
        if self.position == self.target:
            raise ValueError("position and target must differ")
        return self


class RenderConfig(Strict):
    """The viewpoint of ``render()`` in ``rgb_array`` mode: world frame, or with ``follow`` offsets
    from the robot base's position (the view travels with a mobile robot, without turning)."""

    width: int = Field(480, gt=0, le=4096)
    height: int = Field(360, gt=0, le=4096)
    fov: float = Field(50.0, gt=0, lt=180)
    position: Vec3 = (0.7, -0.7, 0.6)
    target: Vec3 = (-0.15, 0.0, 0.05)
    up: Vec3 = (0.0, 0.0, 1.0)
    follow: bool = False


class ControlConfig(Strict):
    """Physics runs at ``physics_hz``; each env step holds one command for ``physics_hz / control_hz``
    physics substeps (the action repeat)."""

    physics_hz: int = Field(240, gt=0)
    control_hz: float = Field(20.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "ControlConfig":
        ratio = self.physics_hz / self.control_hz
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(f"physics_hz ({self.physics_hz}) must be a whole multiple of control_hz ({self.control_hz})")
        return self

    @property
    def substeps(self) -> int:
        """Physics steps per env step (the action repeat)."""
        return int(round(self.physics_hz / self.control_hz))


# -- robots -------------------------------------------------------------------------------


class PandaConfig(Strict):
    """Franka Panda on the table. Actions move the end effector by at most ``max_ee_step``
    metres per axis and step, inside ``workspace``; the gripper opens to ``max_gripper_width``."""

    kind: Literal["panda"] = "panda"
    urdf: str = "franka_panda/panda.urdf"
    base_position: Vec3 = (-0.6, 0.0, 0.0)
    home_joints: tuple[float, float, float, float, float, float, float] = (0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79)
    max_ee_step: float = Field(0.05, gt=0, le=0.2)
    max_gripper_width: float = Field(0.08, gt=0, le=0.08)
    workspace: Annotated[BoxRegion, _region(3)] = BoxRegion(low=(-0.4, -0.35, 0.0), high=(0.2, 0.35, 0.4))
    gripper_force: float = Field(40.0, gt=0)
    finger_friction: float = Field(1.5, ge=0)
    ik_iterations: int = Field(20, ge=1, le=500)


class LidarConfig(Strict):
    """A planar scanner: ``beams`` rays spread over ``fov`` degrees (centred ahead), ``range`` metres,
    scan plane ``height`` metres above the base origin, optional Gaussian range noise."""

    beams: int = Field(64, ge=1, le=4096)
    range: float = Field(5.0, gt=0)
    fov: float = Field(360.0, gt=0, le=360)
    height: float = Field(0.45, gt=0)
    noise_std: float = Field(0.0, ge=0)


class HuskyConfig(Strict):
    """Clearpath Husky, a skid-steer base driven by (v, omega) commands up to ``max_linear`` m/s and
    ``max_angular`` rad/s."""

    kind: Literal["husky"] = "husky"
    urdf: str = "husky/husky.urdf"
    max_linear: float = Field(1.0, gt=0, le=3.0)
    max_angular: float = Field(1.0, gt=0, le=6.0)
    wheel_radius: float = Field(0.17775, gt=0)
    track_width: float = Field(0.5708, gt=0)
    slip_factor: float = Field(1.3, ge=1.0, description="effective track width / track width (skid steering)")
    axle_friction_ratio: float = Field(0.1, gt=0, le=1.0, description="tyre friction along the axle / rolling")
    wheel_force: float = Field(60.0, gt=0)
    lidar: LidarConfig = LidarConfig()


# -- randomisation ------------------------------------------------------------------------


class LightingRandomisation(Strict):
    """Light of the camera renderer: direction, colour and shading coefficients, each sampled uniformly."""

    direction: Annotated[BoxRegion, _region(3)] = BoxRegion(low=(-1.0, -1.0, 1.0), high=(1.0, 1.0, 2.0))
    color: Annotated[BoxRegion, _region(3)] = BoxRegion(low=(0.8, 0.8, 0.8), high=(1.0, 1.0, 1.0))
    ambient: Range = (0.5, 0.7)
    diffuse: Range = (0.4, 0.6)


class VisualRandomisation(Strict):
    """Colours drawn from palettes (RGBA in [0, 1]) and lighting, re-sampled at every reset."""

    enabled: bool = False
    object_colors: list[RGBA] = Field(default_factory=lambda: [(0.9, 0.1, 0.1, 1.0), (0.1, 0.6, 0.9, 1.0),
                                                               (0.2, 0.8, 0.2, 1.0), (0.95, 0.8, 0.1, 1.0)],
                                      min_length=1)
    surface_colors: list[RGBA] = Field(default_factory=lambda: [(0.55, 0.5, 0.45, 1.0), (0.8, 0.8, 0.8, 1.0),
                                                                (0.35, 0.35, 0.4, 1.0)], min_length=1)
    lighting: LightingRandomisation = LightingRandomisation()


class ArmDynamics(Strict):
    """Object mass (kg) and lateral friction of the object and of the finger pads, re-sampled at every reset."""

    enabled: bool = False
    object_mass: Range = (0.05, 0.3)
    object_friction: Range = (0.6, 1.2)
    finger_friction: Range = (1.0, 2.0)


class BaseDynamics(Strict):
    """Chassis mass scale and lateral friction of the wheels and obstacles, re-sampled at every reset."""

    enabled: bool = False
    mass_scale: Range = (0.8, 1.2)
    wheel_friction: Range = (0.8, 1.2)
    obstacle_friction: Range = (0.5, 1.0)


class ArmRandomisation(Strict):
    """Start pose of the object, goal region, and optional visual / dynamics randomisation."""

    object: PlanarPoseRange = PlanarPoseRange(low=(-0.2, -0.15), high=(0.1, 0.15), yaw=(-0.785, 0.785))
    goal: Annotated[BoxRegion, _region(3)] = BoxRegion(low=(-0.2, -0.15, 0.0), high=(0.1, 0.15, 0.0))
    min_goal_distance: float = Field(0.1, ge=0, description="goal at least this far from the object's start")
    visual: VisualRandomisation = VisualRandomisation()
    dynamics: ArmDynamics = ArmDynamics()


class ObstacleRandomisation(Strict):
    """Obstacles scattered around the straight line from start to goal."""

    count: tuple[int, int] = (3, 6)
    kinds: list[Literal["box", "cylinder"]] = Field(default_factory=lambda: ["box", "cylinder"], min_length=1)
    size: Range = (0.3, 0.8)
    height: Range = (0.6, 1.0)
    clearance: float = Field(1.1, ge=0, description="free radius around the start and the goal (m)")
    gap: float = Field(1.2, ge=0, description="minimum free space between obstacles (m): the base fits through")
    spread: float = Field(2.0, ge=0, description="lateral spread around the start-goal line (m)")

    @field_validator("count")
    @classmethod
    def _count(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] <= v[1] <= 32:
            raise ValueError(f"expected [low, high] with 0 <= low <= high <= 32, got {list(v)}")
        return v


class NavigateRandomisation(Strict):
    """Start pose, goal distance, obstacles and optional visual / dynamics randomisation."""

    start: PlanarPoseRange = PlanarPoseRange(low=(-0.5, -0.5), high=(0.5, 0.5), yaw=(-3.1416, 3.1416))
    goal_distance: Range = (3.5, 5.0)
    obstacles: ObstacleRandomisation = ObstacleRandomisation()
    visual: VisualRandomisation = VisualRandomisation()
    dynamics: BaseDynamics = BaseDynamics()


# -- tasks --------------------------------------------------------------------------------


class ObjectConfig(Strict):
    """The manipulated object: a URDF (single rigid body) and its colour when not randomised."""

    urdf: str = "cube.urdf"
    color: RGBA = (0.9, 0.1, 0.1, 1.0)


class ArmTaskConfig(Strict):
    """Reward, success and termination of the arm tasks.

    ``reward_type``: ``dense`` is minus the goal distance (plus ``reach_weight`` times minus the
    gripper-object distance for object tasks), ``sparse`` is 0 on success and -1 otherwise.
    Success: the end effector (reach) or the object (push, pick-place) within ``distance_threshold``
    metres of the goal. ``block_gripper`` holds the fingers closed and ignores action[3]."""

    name: Literal["reach", "push", "pick_place"]
    reward_type: Literal["dense", "sparse"] = "dense"
    distance_threshold: float = Field(0.05, gt=0)
    terminate_on_success: bool = True
    block_gripper: bool = False
    reach_weight: float = Field(0.0, ge=0)
    object: ObjectConfig = ObjectConfig()


class NavigateTaskConfig(Strict):
    """Reward, success and termination of navigation. Dense reward: the decrease of the goal distance
    in this step (m) minus ``collision_penalty`` while touching an obstacle; sparse: 0 on success,
    -1 otherwise. Success: base within ``distance_threshold`` m of the goal (x, y)."""

    name: Literal["navigate"] = "navigate"
    reward_type: Literal["dense", "sparse"] = "dense"
    distance_threshold: float = Field(0.5, gt=0)
    terminate_on_success: bool = True
    terminate_on_collision: bool = False
    collision_penalty: float = Field(0.1, ge=0)
    success_bonus: float = Field(1.0, ge=0)


# -- whole environments -------------------------------------------------------------------


class EnvConfig(Strict):
    """What every environment has: cameras, the render view and the control rate."""

    camera_presets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cameras: list[CameraConfig] = Field(default_factory=list)
    render: RenderConfig = RenderConfig()
    control: ControlConfig = ControlConfig()
    source: str = Field("<defaults>", exclude=True, description="where this config came from (for messages)")
    base_dir: str | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _expand_presets(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "cameras" not in data:
            return data
        presets = data.get("camera_presets") or {}
        if not isinstance(presets, dict):
            return data  # reported by field validation
        cams = data["cameras"]
        if cams is True:  # "cameras on": the first preset, the task's default camera
            if not presets:
                raise ValueError("@cameras: true needs a camera preset (camera_presets is empty)")
            cams = [next(iter(presets))]
        elif cams is False or cams is None:
            cams = []
        if not isinstance(cams, list):
            return data
        out = []
        for i, cam in enumerate(cams):
            if isinstance(cam, str):
                cam = {"name": cam}
            if isinstance(cam, dict) and cam.get("name") in presets and isinstance(presets[cam["name"]], dict):
                cam = {**presets[cam["name"]], **cam}
            elif isinstance(cam, dict) and "position" not in cam and isinstance(cam.get("name"), str):
                known = ", ".join(sorted(presets)) or "none"
                raise ValueError(f"@cameras[{i}]: camera {cam['name']!r} is not a preset (presets: {known}); "
                                 f"give position and target")
            out.append(cam)
        return {**data, "cameras": out}

    @model_validator(mode="after")
    def _unique_cameras(self) -> "EnvConfig":
        names = [c.name for c in self.cameras]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"@cameras: camera names must be unique, repeated: {', '.join(sorted(dup))}")
        return self

    def resolve(self, path: str, key: str) -> str:
        """The file an asset path names (see the module docstring); ConfigError naming ``key`` if none."""
        return resolve_asset(path, self.base_dir, f"{self.source}: key '{key}'")


class ArmEnvConfig(EnvConfig):
    """Configuration of PandaReach, PandaPush and PandaPickPlace."""

    robot: PandaConfig = PandaConfig()
    task: ArmTaskConfig
    randomisation: ArmRandomisation = ArmRandomisation()


class NavigateEnvConfig(EnvConfig):
    """Configuration of HuskyNavigate."""

    robot: HuskyConfig = HuskyConfig()
    task: NavigateTaskConfig = NavigateTaskConfig()
    randomisation: NavigateRandomisation = NavigateRandomisation()


# -- loading ------------------------------------------------------------------------------


def resolve_asset(path: str, base_dir: str | None, where: str) -> str:
    """Find an asset file: absolute, relative to ``base_dir``, in sim_assets/, in pybullet_data."""
    import pybullet_data

    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [
        *([Path(base_dir) / p] if base_dir else []), SIM_ASSETS / p, Path(pybullet_data.getDataPath()) / p]
    for c in candidates:
        if c.is_file():
            return str(c)
    raise ConfigError(f"{where}: no file {path!r} (looked in {', '.join(str(c.parent) for c in candidates)})")


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _explain(err: dict) -> tuple[str, str]:
    """(key path, expectation) of one pydantic error, in words a config author understands."""
    loc = tuple(err["loc"])
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if msg.startswith("@"):  # a model validator that names its own key: "@cameras[0]: ..."
        key, _, msg = msg[1:].partition(": ")
        return key, msg
    if err["type"] == "extra_forbidden":
        return _key(loc), "unknown key"
    if err["type"] == "missing":
        return _key(loc), "required key is missing"
    if err["type"] in ("too_short", "too_long") and "ctx" in err and "actual_length" in err["ctx"]:
        want = err["ctx"].get("min_length") if err["type"] == "too_short" else err["ctx"].get("max_length")
        return _key(loc), f"expected {want} item(s), got {err['ctx']['actual_length']}"
    got = err.get("input")
    if isinstance(got, (dict,)) or got is None or err["type"].startswith(("tuple", "list")):
        return _key(loc), msg
    return _key(loc), f"{msg} (got {got!r})"


def _unknown_hint(model: type[BaseModel], loc: tuple) -> str:
    """'expected one of ...' for an unknown key, from the model's fields at ``loc``'s parent."""
    m: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(m, "model_fields", None)
        if not fields or part not in fields:
            return ""
        ann = fields[part].annotation
        args = getattr(ann, "__args__", ())
        m = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if m is None:
            return ""
    fields = getattr(m, "model_fields", None)
    if not fields:
        return ""
    names = [n for n, f in fields.items() if not f.exclude]
    return f"; expected one of: {', '.join(names)}"


def merge(base: dict, over: dict) -> dict:
    """Deep-merge ``over`` into a copy of ``base``: mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def validate(model: type[EnvConfig], data: Any, source: str, base_dir: str | None = None) -> EnvConfig:
    """Validate a mapping as ``model``; ConfigError ``"<source>: key '<path>': <expectation>"``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        cfg = model.model_validate({**data, "source": source, "base_dir": base_dir})
    except ValidationError as exc:
        first = exc.errors()[0]
        key, why = _explain(first)
        if first["type"] == "extra_forbidden":
            why += _unknown_hint(model, tuple(first["loc"]))
        raise ConfigError(f"{source}: key '{key}': {why}") from None
    # Assets must exist now, not at the first reset.
    cfg.robot.urdf = cfg.resolve(cfg.robot.urdf, "robot.urdf")
    if isinstance(cfg, ArmEnvConfig):
        cfg.task.object.urdf = cfg.resolve(cfg.task.object.urdf, "task.object.urdf")
    return cfg


def load_env_config(model: type[EnvConfig], config: str | Path | dict | None, default_file: str,
                    overrides: dict[str, Any] | None = None, names: list[str] | None = None,
                    defaults: dict[str, Any] | None = None) -> EnvConfig:
    """Load ``config`` (a path, a mapping, or None for ``configs/envs/<default_file>``) over
    ``defaults``, merge ``overrides`` (constructor keyword arguments, called ``names`` in
    messages) and validate."""
    base_dir = None
    if isinstance(config, dict):
        data, source = config, "<config dict>"
    else:
        path = Path(config) if config is not None else CONFIG_DIR / default_file
        data = read_yaml(path)
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        data, source, base_dir = data or {}, str(path), str(path.parent)
    if defaults:
        data = merge(defaults, data)
    if overrides:
        data = merge(data, overrides)
        source = f"{source} (+ keyword arguments {', '.join(sorted(names or overrides))})"
    return validate(model, data, source, base_dir)
