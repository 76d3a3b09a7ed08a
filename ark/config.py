"""Runtime configuration: where the registry is, how endpoints are bound, limits and security.

Values come from (lowest to highest precedence) the defaults below, a YAML file named by
``ARK_CONFIG``, and the environment variables ``ARK_REGISTRY``, ``ARK_HOST`` and ``ARK_IPC_DIR``. A bad
value fails at load time with the file, the key and what was expected.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ark.errors import ConfigError


def _default_ipc_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"ark-{os.getuid()}"


class SecurityConfig(BaseModel):
    """CurveZMQ settings. With these set, every socket is encrypted and authenticated.

    ``secret_key``: this process's certificate (secret) file, made by ``ark keys``; it is the
    server key of every socket the process binds and the client key of every socket it
    connects. ``authorized_keys``: a directory of public certificates; only peers holding one
    of their secret keys may connect. ``registry_key``: the registry's public certificate
    (defaults to the public half of ``secret_key``, the shared-graph-key setup).
    """

    model_config = ConfigDict(extra="forbid")

    secret_key: Path
    authorized_keys: Path
    registry_key: Path | None = None


class ArkConfig(BaseModel):
    """Settings of one Ark process."""

    model_config = ConfigDict(extra="forbid")

    registry: str = Field("tcp://127.0.0.1:7450", description="registry endpoint (tcp://host:port)")
    host: str = Field("127.0.0.1", description="address this process's tcp endpoints bind to and advertise")
    ipc_dir: Path = Field(default_factory=_default_ipc_dir, description="folder for ipc:// sockets")
    auto_registry: bool = Field(True, description="start an in-process registry when none answers")
    heartbeat_s: float = Field(0.25, gt=0, description="node heartbeat period")
    stale_after_s: float = Field(2.0, gt=0, description="registry forgets a node silent this long")
    request_timeout_s: float = Field(1.0, gt=0, description="timeout of one registry request")
    max_message_bytes: int = Field(256 << 20, gt=0, description="largest message a subscriber accepts")
    security: SecurityConfig | None = None

    @field_validator("registry")
    @classmethod
    def _tcp_registry(cls, v: str) -> str:
        if not (v.startswith("tcp://") and v.rsplit(":", 1)[-1].isdigit()):
            raise ValueError("expected tcp://HOST:PORT")
        return v

    @property
    def registry_port(self) -> int:
        return int(self.registry.rsplit(":", 1)[-1])


def _format(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{source}: key '{key}': {first['msg']}"


def parse(data: Any, source: str = "<config>") -> ArkConfig:
    """Validate a mapping as an ArkConfig; errors name ``source``, the key and the expectation."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return ArkConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None


def read_yaml(path: str | Path) -> Any:
    """Load a YAML file, turning missing files and syntax errors into one-line ConfigErrors."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where} invalid YAML ({getattr(exc, 'problem', None) or exc})") from None


def load(path: str | Path | None = None, **overrides: Any) -> ArkConfig:
    """The effective configuration: defaults, then ``path`` or $ARK_CONFIG, then env, then overrides."""
    path = path or os.environ.get("ARK_CONFIG")
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path:
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data.update(loaded or {})
        source = str(path)
    if "ARK_REGISTRY" in os.environ:
        data["registry"] = os.environ["ARK_REGISTRY"]
        source = f"{source} (+$ARK_REGISTRY)"
    if "ARK_HOST" in os.environ:
        data["host"] = os.environ["ARK_HOST"]
    if "ARK_IPC_DIR" in os.environ:
        data["ipc_dir"] = os.environ["ARK_IPC_DIR"]
    data.update(overrides)
    return parse(data, source)
