"""QoS profiles of bridged topics, and their forms for DDS, rclpy, Ark and rosbag2.

A profile is what ROS 2 calls a QoS profile, reduced to the policies that decide whether
two endpoints match and what a late joiner gets: reliability, durability, history, depth.
Named presets mirror ROS 2's: ``default`` (reliable, volatile, keep last 10),
``sensor_data`` (best effort, keep last 5) and ``latched`` (reliable, transient local,
keep last 1: a late subscriber still gets the last message, like a latched Ark publisher).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class QosProfile(BaseModel):
    """Reliability, durability, history and depth of one bridged topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reliability: Literal["reliable", "best_effort"] = "reliable"
    durability: Literal["volatile", "transient_local"] = "volatile"
    history: Literal["keep_last", "keep_all"] = "keep_last"
    depth: int = Field(10, ge=1, le=100_000)

    @property
    def latched(self) -> bool:
        return self.durability == "transient_local"

    def to_dds(self) -> Any:
        """The cyclonedds ``Qos`` that rmw_cyclonedds would create for this profile."""
        from cyclonedds.core import Policy, Qos
        from cyclonedds.util import duration

        policies = [
            Policy.Reliability.Reliable(duration(milliseconds=100)) if self.reliability == "reliable"
            else Policy.Reliability.BestEffort,
            Policy.Durability.TransientLocal if self.latched else Policy.Durability.Volatile,
            Policy.History.KeepLast(self.depth) if self.history == "keep_last" else Policy.History.KeepAll,
            # Plain CDR, as every ROS 2 RMW writes it.
            Policy.DataRepresentation(use_cdrv0_representation=True),
        ]
        return Qos(*policies)

    def to_rclpy(self) -> Any:
        """The ``rclpy.qos.QoSProfile`` of this profile (needs ROS 2)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE if self.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if self.latched else DurabilityPolicy.VOLATILE,
            history=HistoryPolicy.KEEP_LAST if self.history == "keep_last" else HistoryPolicy.KEEP_ALL,
            depth=self.depth,
        )

    def to_rosbag2(self) -> Any:
        """The ``rosbags`` Qos recorded as a topic's offered profile in a rosbag2."""
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

        never = QosTime(0, 0)
        return Qos(
            history=QosHistory.KEEP_LAST if self.history == "keep_last" else QosHistory.KEEP_ALL,
            depth=self.depth,
            reliability=QosReliability.RELIABLE if self.reliability == "reliable" else QosReliability.BEST_EFFORT,
            durability=QosDurability.TRANSIENT_LOCAL if self.latched else QosDurability.VOLATILE,
            deadline=never, lifespan=never, liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
            avoid_ros_namespace_conventions=False,
        )


PRESETS: dict[str, QosProfile] = {
    "default": QosProfile(),
    "sensor_data": QosProfile(reliability="best_effort", depth=5),
    "latched": QosProfile(durability="transient_local", depth=1),
    "reliable": QosProfile(),
    "best_effort": QosProfile(reliability="best_effort"),
}


def parse_qos(value: Any) -> QosProfile:
    """A profile from a preset name, a mapping of policies, or a mapping with ``profile:`` plus overrides."""
    if value is None:
        return PRESETS["default"]
    if isinstance(value, QosProfile):
        return value
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(f"unknown QoS preset {value!r} (presets: {', '.join(PRESETS)})")
        return PRESETS[value]
    if isinstance(value, dict):
        value = dict(value)
        base = parse_qos(value.pop("profile", "default"))
        return QosProfile.model_validate({**base.model_dump(), **value})
    raise ValueError(f"expected a preset name ({', '.join(PRESETS)}) or a mapping of policies")
