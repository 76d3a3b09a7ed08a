"""The configuration every policy shares, and its JSON round trip.

A policy's config is a dataclass that lives beside the model (``ACTConfig`` in ``act.py``,
…) and derives from :class:`PolicyConfig`. It records the features the policy was built for
(per-step shapes, no batch or time dimension), the observation and action horizons, the
normalisation modes and the optimiser settings, so a checkpoint's ``config.json`` rebuilds
the exact model. Feature conventions:

- a 1-D feature ``[D]`` is a state vector (all 1-D input features are concatenated, in the
  order given, into the policy's state);
- a 3-D feature ``[H, W, 3]`` is an RGB image delivered as ``uint8`` channels-last;
- ``output_features`` holds exactly one 1-D feature, the action (``"action"``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ark.errors import ConfigError

ACTION_KEY = "action"
NORMALIZATION_MODES = ("mean_std", "min_max", "identity")


@dataclass
class PolicyConfig:
    """Fields common to all policies. Subclasses add their architecture and override defaults.

    ``n_obs_steps``: observations the policy sees per prediction (the current one and those
    before it). ``n_action_steps``: actions executed from one predicted chunk before predicting
    again. ``state_normalization`` / ``action_normalization``: ``mean_std``, ``min_max`` (to
    [-1, 1]) or ``identity``. Images are always mapped from [0, 255] to [-1, 1].
    """

    type: ClassVar[str] = ""

    input_features: dict[str, tuple[int, ...]] = field(default_factory=dict)
    output_features: dict[str, tuple[int, ...]] = field(default_factory=dict)
    n_obs_steps: int = 1
    n_action_steps: int = 1
    state_normalization: str = "mean_std"
    action_normalization: str = "mean_std"
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.999)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self.input_features = {str(k): tuple(int(d) for d in v) for k, v in self.input_features.items()}
        self.output_features = {str(k): tuple(int(d) for d in v) for k, v in self.output_features.items()}
        for key, shape in self.input_features.items():
            if len(shape) not in (1, 3) or (len(shape) == 3 and shape[2] != 3) or min(shape) <= 0:
                raise ConfigError(
                    f"input feature '{key}': expected [D] (state) or [H, W, 3] (RGB image), got {list(shape)}"
                )
        if self.input_features and not (self.state_keys or self.image_keys):
            raise ConfigError("input_features: expected at least one state or image feature")
        if self.output_features and (
            list(self.output_features) != [ACTION_KEY] or len(self.output_features[ACTION_KEY]) != 1
        ):
            raise ConfigError(
                f"output_features: expected {{'{ACTION_KEY}': [A]}}, got {dict(self.output_features)}"
            )
        for name in ("state_normalization", "action_normalization"):
            if getattr(self, name) not in NORMALIZATION_MODES:
                raise ConfigError(f"{name}: expected one of {NORMALIZATION_MODES}, got {getattr(self, name)!r}")
        _positive(self, "n_obs_steps", "n_action_steps")
        if self.optimizer_lr <= 0:
            raise ConfigError(f"optimizer_lr: expected > 0, got {self.optimizer_lr}")

    # ----- features -------------------------------------------------------------------
    @property
    def state_keys(self) -> list[str]:
        """1-D input features, concatenated in this order into the state vector."""
        return [k for k, s in self.input_features.items() if len(s) == 1]

    @property
    def image_keys(self) -> list[str]:
        """RGB image input features ([H, W, 3], uint8)."""
        return [k for k, s in self.input_features.items() if len(s) == 3]

    @property
    def state_dim(self) -> int:
        return sum(self.input_features[k][0] for k in self.state_keys)

    @property
    def action_dim(self) -> int:
        return self.output_features[ACTION_KEY][0]

    # ----- what the dataset must deliver ------------------------------------------------
    @property
    def observation_delta_indices(self) -> list[int]:
        """Frame offsets of the observations in one sample, relative to the current step."""
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        """Frame offsets of the actions in one training sample (its ``action`` tensor's T_act)."""
        raise NotImplementedError

    @property
    def chunk_length(self) -> int:
        """Number of actions ``predict_chunk`` returns (starting at the current step)."""
        raise NotImplementedError

    def require_features(self) -> None:
        """Raise ConfigError unless input and output features are set (a model needs them)."""
        if not self.input_features:
            raise ConfigError("input_features: empty; a policy needs at least one observation feature")
        if not self.output_features:
            raise ConfigError(f"output_features: empty; expected {{'{ACTION_KEY}': [A]}}")

    # ----- JSON -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<config>") -> PolicyConfig:
        """Build a config from a dict, naming ``source`` and the key for any bad value."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown key '{unknown[0]}' for a {cls.type or cls.__name__} policy config")
        kwargs = {}
        for key, value in data.items():
            try:
                kwargs[key] = _coerce(value, hints[key])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: key '{key}': expected {_hint_name(hints[key])}, got {value!r}") from exc
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: expected >= 1, got {getattr(cfg, name)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any) -> Any:
    """Check/convert a JSON value against a type hint (the few kinds configs use)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                pass
        raise TypeError
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint}")
