"""Typed message schemas with numpy fields.

A schema is a dataclass decorated with :func:`message`, which gives it a name and a version.
Fields annotated ``np.ndarray`` travel as raw buffers (zero-copy); ``dict[str, np.ndarray]``
fields travel as one buffer per entry; every other field (str, int, float, bool, lists and
dicts of those) travels inside the msgpack header. Array fields may declare the dtype and
shape they accept with :func:`array`; ``None`` in a shape means "any length".

    @message("my/Wrench", version=1)
    @dataclass
    class Wrench:
        force: np.ndarray = array("float64", (3,))
        torque: np.ndarray = array("float64", (3,))
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ark.errors import SchemaError

# Only plain numeric dtypes cross the wire: object/structured dtypes could smuggle
# arbitrary Python objects, so a header naming any other dtype is rejected.
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str
    for t in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
              "float16", "float32", "float64", "complex64", "complex128")
)

_SCALAR_TYPES = (str, int, float, bool)


@dataclass(frozen=True)
class ArraySpec:
    """What an array field accepts: a dtype (or None for any) and a shape pattern."""

    dtype: np.dtype | None
    shape: tuple[int | None, ...] | None

    def check(self, schema: str, name: str, arr: np.ndarray) -> None:
        if self.dtype is not None and arr.dtype != self.dtype:
            raise SchemaError(f"{schema}.{name}: expected dtype {self.dtype}, got {arr.dtype}")
        if self.shape is not None:
            if arr.ndim != len(self.shape) or any(
                want is not None and want != got for want, got in zip(self.shape, arr.shape)
            ):
                want = "(" + ", ".join("N" if s is None else str(s) for s in self.shape) + ")"
                raise SchemaError(f"{schema}.{name}: expected shape {want}, got {tuple(arr.shape)}")


def array(dtype: str | None = None, shape: tuple[int | None, ...] | None = None) -> Any:
    """Declare an array field with an accepted dtype and shape; its default is an empty array."""
    dt = np.dtype(dtype) if dtype is not None else None
    empty_shape = tuple(0 if s is None else s for s in shape) if shape is not None else (0,)
    return field(
        default_factory=lambda: np.zeros(empty_shape, dtype=dt or np.float64),
        metadata={"ark_array": ArraySpec(dt, tuple(shape) if shape is not None else None)},
    )


@dataclass(frozen=True)
class SchemaInfo:
    """Per-schema layout computed once at registration, so encoding does no introspection."""

    name: str
    version: int
    cls: type
    array_fields: tuple[tuple[str, ArraySpec], ...]
    dict_array_fields: tuple[str, ...]
    plain_fields: tuple[tuple[str, Callable[[Any], bool], str], ...]


_SCHEMAS: dict[str, SchemaInfo] = {}


def _checker(tp: Any) -> tuple[Callable[[Any], bool], str]:
    """A predicate that validates a decoded header value against a field annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return (lambda v: True), "any"
    if tp is float:
        return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "float"
    if tp is int:
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "int"
    if tp in _SCALAR_TYPES:
        return (lambda v: isinstance(v, tp)), tp.__name__
    if origin is list:
        inner, iname = _checker(args[0]) if args else ((lambda v: True), "any")
        return (lambda v: isinstance(v, list) and all(inner(x) for x in v)), f"list[{iname}]"
    if origin is dict or tp is dict:
        return (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v)), "dict"
    if origin is typing.Union:
        parts = [_checker(a) for a in args]
        return (lambda v: any(p(v) for p, _ in parts)), " | ".join(n for _, n in parts)
    if tp is type(None):
        return (lambda v: v is None), "None"
    raise TypeError(f"unsupported message field type {tp!r}")


def message(name: str, version: int = 1) -> Callable[[type], type]:
    """Register a dataclass as a message schema under ``name`` with ``version``."""

    def wrap(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            cls = dataclass(cls)
        hints = typing.get_type_hints(cls)
        arrays, dict_arrays, plain = [], [], []
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if tp is np.ndarray:
                arrays.append((f.name, f.metadata.get("ark_array", ArraySpec(None, None))))
            elif typing.get_origin(tp) is dict and typing.get_args(tp)[1:] == (np.ndarray,):
                dict_arrays.append(f.name)
            else:
                check, tname = _checker(tp)
                plain.append((f.name, check, tname))
        existing = _SCHEMAS.get(name)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise SchemaError(f"schema name {name!r} is already registered by {existing.cls.__qualname__}")
        info = SchemaInfo(name, version, cls, tuple(arrays), tuple(dict_arrays), tuple(plain))
        _SCHEMAS[name] = info
        cls.__ark_schema__ = info  # type: ignore[attr-defined]
        return cls

    return wrap


def schema_of(obj_or_cls: Any) -> SchemaInfo:
    """The registered schema of a message instance or class."""
    info = getattr(obj_or_cls, "__ark_schema__", None)
    if info is None:
        raise SchemaError(f"{obj_or_cls!r} is not a registered Ark message (use @ark.message)")
    return info


def lookup_schema(name: str) -> SchemaInfo:
    """The schema registered under ``name``; raises SchemaError when unknown."""
    try:
        return _SCHEMAS[name]
    except KeyError:
        raise SchemaError(f"unknown schema {name!r} (known: {', '.join(sorted(_SCHEMAS))})") from None


def schema_names() -> list[str]:
    """Names of all registered schemas."""
    return sorted(_SCHEMAS)


def to_jsonable(msg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a message (arrays become nested lists) for echo and tests."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, dict) and any(isinstance(x, np.ndarray) for x in v.values()):
            v = {k: x.tolist() for k, x in v.items()}
        out[f.name] = v
    return out


def from_jsonable(schema: str | type, values: dict[str, Any]) -> Any:
    """Build a message from plain values (lists become arrays with the declared dtype)."""
    info = lookup_schema(schema) if isinstance(schema, str) else schema_of(schema)
    if not isinstance(values, dict):
        raise SchemaError(f"{info.name}: expected a mapping of field values, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(info.cls)}
    unknown = set(values) - known
    if unknown:
        raise SchemaError(f"{info.name}: unknown field(s) {', '.join(sorted(unknown))}; fields are {', '.join(sorted(known))}")
    kwargs = dict(values)
    for name, spec in info.array_fields:
        if name in kwargs:
            kwargs[name] = np.asarray(kwargs[name], dtype=spec.dtype)
    for name in info.dict_array_fields:
        if name in kwargs:
            kwargs[name] = {k: np.asarray(v) for k, v in kwargs[name].items()}
    try:
        return info.cls(**kwargs)
    except TypeError as exc:
        raise SchemaError(f"{info.name}: {exc}") from None


# --------------------------------------------------------------------------------------
# Standard schemas


@message("ark/Empty")
@dataclass
class Empty:
    """No payload; used for triggers and services without arguments."""


@message("ark/String")
@dataclass
class String:
    """A text string."""

    data: str = ""


@message("ark/Bool")
@dataclass
class Bool:
    """A boolean flag."""

    data: bool = False


@message("ark/Result")
@dataclass
class Result:
    """A service outcome: success flag and a human-readable message."""

    success: bool = True
    message: str = ""


@message("ark/Float64Array")
@dataclass
class Float64Array:
    """An n-dimensional float64 array."""

    data: np.ndarray = array("float64")


@message("ark/NDArray")
@dataclass
class NDArray:
    """An n-dimensional array of any numeric dtype."""

    data: np.ndarray = array()


@message("ark/Image")
@dataclass
class Image:
    """A camera image, HxWxC (or HxW for depth/mono). ``encoding``: rgb8, bgr8, mono8, depth32f, …"""

    data: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.uint8),
                             metadata={"ark_array": ArraySpec(None, None)})
    encoding: str = "rgb8"
    frame_id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.data, np.ndarray) and self.data.ndim not in (2, 3):
            raise SchemaError(f"ark/Image.data: expected shape (H, W) or (H, W, C), got {tuple(self.data.shape)}")


@message("ark/JointState")
@dataclass
class JointState:
    """Joint names with positions (rad or m), velocities and efforts, each of length len(name) or 0."""

    name: list[str] = field(default_factory=list)
    position: np.ndarray = array("float64", (None,))
    velocity: np.ndarray = array("float64", (None,))
    effort: np.ndarray = array("float64", (None,))


@message("ark/Pose")
@dataclass
class Pose:
    """A position (x, y, z) and orientation quaternion (x, y, z, w) in ``frame_id``."""

    position: np.ndarray = field(default_factory=lambda: np.zeros(3), metadata={"ark_array": ArraySpec(np.dtype("float64"), (3,))})
    orientation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]), metadata={"ark_array": ArraySpec(np.dtype("float64"), (4,))})
    frame_id: str = ""


@message("ark/Twist")
@dataclass
class Twist:
    """Linear (m/s) and angular (rad/s) velocity, each a 3-vector."""

    linear: np.ndarray = array("float64", (3,))
    angular: np.ndarray = array("float64", (3,))


@message("ark/LaserScan")
@dataclass
class LaserScan:
    """A planar range scan: ranges[i] is at angle_min + i*angle_increment (rad)."""

    ranges: np.ndarray = array("float32", (None,))
    angle_min: float = 0.0
    angle_max: float = 0.0
    angle_increment: float = 0.0
    range_min: float = 0.0
    range_max: float = 0.0
    frame_id: str = ""


@message("ark/DictArrays")
@dataclass
class DictArrays:
    """A free-form dictionary of named arrays plus JSON-like metadata."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@message("ark/Parameter")
@dataclass
class Parameter:
    """A node parameter request/reply: name and a JSON-like value (None to read)."""

    name: str = ""
    value: Any = None
