"""The bridge's YAML mapping: which topics cross between Ark and ROS 2, as what type, how.

    backend: auto            # auto (rclpy where it imports, else dds) | dds | rclpy
    distro: humble           # humble | jazzy: the type definitions and hashes to use
    domain_id: 0             # ROS_DOMAIN_ID
    node_name: ark_ros_bridge
    custom_types:            # optional: ROS type name -> .msg text
      my_msgs/msg/Wrench: |
        float64[3] force
        float64[3] torque
    topics:
      - ark: /joints                     # the Ark topic
        ros: /joint_states               # the ROS 2 topic (default: the Ark topic)
        type: sensor_msgs/msg/JointState
        direction: ark_to_ros            # or ros_to_ark
        qos: default                     # default | sensor_data | latched | {reliability, durability, history, depth}
        ark_type: ark/JointState         # optional; ark/DictArrays bridges any type generically

A bad value fails at load time with a message naming the file, the key and what was
expected (:class:`ark.errors.ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ark.config import read_yaml
from ark.errors import ArkError, ConfigError
from bridge_ros.cdr import DISTROS, RosTypes, normalize_type
from bridge_ros.convert import Converter, converter_for
from bridge_ros.qos import QosProfile, parse_qos


def _topic_name(v: str) -> str:
    if not v or any(c.isspace() for c in v):
        raise ValueError("expected a topic name without spaces")
    return v if v.startswith("/") else "/" + v


class TopicMapping(BaseModel):
    """One bridged topic."""

    model_config = ConfigDict(extra="forbid")

    ark: str
    ros: str | None = None
    type: str
    direction: Literal["ark_to_ros", "ros_to_ark"]
    qos: QosProfile = Field(default_factory=QosProfile)
    ark_type: str | None = None

    @field_validator("ark", "ros")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else _topic_name(v)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        norm = normalize_type(v)
        if norm.count("/") != 2:
            raise ValueError("expected a ROS type name such as sensor_msgs/msg/Image")
        return norm

    @field_validator("qos", mode="before")
    @classmethod
    def _qos(cls, v: Any) -> QosProfile:
        return parse_qos(v)

    @property
    def ros_topic(self) -> str:
        return self.ros or self.ark


class BridgeConfig(BaseModel):
    """A whole bridge: backend, distribution, DDS domain, custom types and topics."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "dds", "rclpy"] = "auto"
    distro: Literal["humble", "jazzy"] = "humble"
    domain_id: int = Field(0, ge=0, le=232)
    node_name: str = "ark_ros_bridge"
    dds_config: str | None = Field(None, description="Cyclone DDS XML (or file:// URI); default $CYCLONEDDS_URI")
    custom_types: dict[str, str] = Field(default_factory=dict)
    topics: list[TopicMapping] = Field(default_factory=list)


class Route:
    """A validated mapping with what the bridge needs at run time: its converter and counters."""

    def __init__(self, mapping: TopicMapping, converter: Converter, types: RosTypes) -> None:
        self.mapping = mapping
        self.converter = converter
        self.ros_type = mapping.type
        self.ark_topic = mapping.ark
        self.ros_topic = mapping.ros_topic
        self.direction = mapping.direction
        self.qos = mapping.qos
        self.type_hash = types.rihs01(mapping.type)
        self.forwarded = 0  # messages that crossed
        self.malformed = 0  # received payloads that did not decode (CDR or Ark)
        self.convert_errors = 0  # messages that decoded but could not be converted
        self.hash_mismatch = 0  # samples dropped from writers whose type hash differs
        self.incompatible_qos = 0  # remote endpoints that could not match because of QoS
        self.send_errors = 0  # writes the middleware refused
        self.last_error: str | None = None

    def stats(self) -> dict[str, Any]:
        return {"direction": self.direction, "ark": self.ark_topic, "ros": self.ros_topic, "type": self.ros_type,
                "forwarded": self.forwarded, "malformed": self.malformed, "convert_errors": self.convert_errors,
                "hash_mismatch": self.hash_mismatch, "incompatible_qos": self.incompatible_qos,
                "send_errors": self.send_errors, "last_error": self.last_error}

    def __repr__(self) -> str:
        arrow = "->" if self.direction == "ark_to_ros" else "<-"
        return f"Route(ark {self.ark_topic} {arrow} ros {self.ros_topic} [{self.ros_type}])"


def _format(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ""
    for part in first["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    suffix = "" if first["type"] == "missing" or isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{source}: key '{key or '(top level)'}': {msg}{suffix}"


def parse_bridge_config(data: Any, source: str = "<bridge config>") -> tuple[BridgeConfig, RosTypes, list[Route]]:
    """Validate a mapping: the config, its type store (custom types registered) and one Route per topic.

    Raises ConfigError naming ``source``, the key and what was expected.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        cfg = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None
    types = RosTypes(cfg.distro)
    if cfg.custom_types:
        try:
            types.register_msgs(cfg.custom_types)
        except ArkError as exc:
            raise ConfigError(f"{source}: key 'custom_types': {exc}") from None
    routes: list[Route] = []
    seen: dict[tuple[str, str], int] = {}
    for i, m in enumerate(cfg.topics):
        if not types.has(m.type):
            raise ConfigError(f"{source}: key 'topics[{i}].type': unknown ROS type {m.type!r} for {cfg.distro} "
                              f"(add its .msg under custom_types)")
        try:
            conv = converter_for(m.type, m.ark_type, types)
        except ArkError as exc:
            raise ConfigError(f"{source}: key 'topics[{i}].{'ark_type' if m.ark_type else 'type'}': {exc}") from None
        # The same topic in both directions would feed the bridge its own messages forever.
        for side, name in (("ark", m.ark), ("ros", m.ros_topic)):
            other = seen.get((side, name))
            if other is not None:
                raise ConfigError(f"{source}: key 'topics[{i}].{side}': {side} topic {name} is already bridged by "
                                  f"topics[{other}] (one mapping per topic)")
            seen[(side, name)] = i
        routes.append(Route(m, conv, types))
    return cfg, types, routes


def load_bridge_config(path: str | Path) -> tuple[BridgeConfig, RosTypes, list[Route]]:
    """Read and validate a bridge YAML file (see the module docstring)."""
    return parse_bridge_config(read_yaml(path), str(path))


__all__ = ["BridgeConfig", "Route", "TopicMapping", "load_bridge_config", "parse_bridge_config", "DISTROS"]
