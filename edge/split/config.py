"""The split-DNN recipe: dataset, networks, training and coding, as one validated config.

``configs/split/default.yaml`` is the benchmark recipe, ``configs/split/tiny.yaml`` a recipe
small enough for tests. A bad file, key or value fails at load time with a
:class:`~edge.split.errors.SplitError` naming the file, the key and what was expected::

    configs/split/x.yaml: key 'model.widths': expected increasing fractions in (0, 1], got [0.5, 0.25]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ark.config import read_yaml
from edge.split.errors import SplitError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs" / "split"

#: What the recognition task distinguishes (class index = position in the list).
SHAPES = ("cube", "sphere", "cylinder")
COLOURS = ("red", "green", "blue", "yellow")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Frames rendered from the Panda table scene (see :mod:`edge.split.dataset`)."""

    size: int = Field(64, ge=32, le=256, description="square frame side in pixels (multiple of 16)")
    n_train: int = Field(4000, ge=1)
    n_val: int = Field(600, ge=1)
    n_test: int = Field(1000, ge=1)
    empty_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of frames with no object")
    seed: int = 0

    @field_validator("size")
    @classmethod
    def _mult16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"expected a multiple of 16, got {v}")
        return v


class ModelConfig(_Strict):
    """Network sizes. The split point is after the teacher's stride-8 stage."""

    teacher_channels: tuple[int, int, int] = (16, 32, 64)
    head_channels: tuple[int, int, int] = Field((16, 32, 64), description="head convolutions before the bottleneck; "
                                               "equal to teacher_channels: the head starts from the teacher's stem")
    bottleneck: int = Field(16, ge=1, le=255, description="bottleneck channels at 100 % width")
    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    filter_channels: int = Field(8, ge=1)

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0 < w <= 1 for w in v) or list(v) != sorted(set(v)) or len(v) > 255:
            raise ValueError(f"expected increasing fractions in (0, 1], got {list(v)}")
        return v

    def width_channels(self) -> list[int]:
        """Bottleneck channels of each width (at least 1, rounded)."""
        return [max(1, round(w * self.bottleneck)) for w in self.widths]


class TrainConfig(_Strict):
    """Epochs and optimiser of the four training stages."""

    batch: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    teacher_epochs: int = Field(24, ge=0)
    distill_epochs: int = Field(6, ge=0)
    finetune_epochs: int = Field(10, ge=0)
    filter_epochs: int = Field(4, ge=0)
    bits: tuple[int, ...] = (2, 4, 8)
    threads: int = Field(0, ge=0, description="torch threads (0: torch's default)")
    seed: int = 0

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(b not in (2, 4, 8) for b in v):
            raise ValueError(f"expected bit depths from 2, 4, 8, got {list(v)}")
        return v


class SplitConfig(_Strict):
    """The whole recipe."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _key(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not isinstance(p, int)) or "<root>"


def from_dict(data: dict[str, Any], source: str = "<config>") -> SplitConfig:
    """Validate a mapping; SplitError names ``source``, the key and the expectation."""
    if not isinstance(data, dict):
        raise SplitError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return SplitConfig.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        raise SplitError(f"{source}: key '{_key(tuple(e['loc']))}': {msg}") from None


def load(path: str | Path | None = None, **sections: dict[str, Any]) -> SplitConfig:
    """Read a recipe (a path, or a name in ``configs/split/``; default ``default``), then apply overrides."""
    p = Path(path) if path else CONFIG_DIR / "default.yaml"
    if not p.suffix and not p.exists():
        p = CONFIG_DIR / f"{p}.yaml"
    data = read_yaml(p) or {}
    for name, values in sections.items():
        if values:
            data.setdefault(name, {}).update(values)
    return from_dict(data, str(p))
