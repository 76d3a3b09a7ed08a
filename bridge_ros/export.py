"""Export an Ark MCAP recording (``ark record``) to a rosbag2 that ROS 2 tools read.

Each recorded topic whose Ark schema has a ROS 2 counterpart becomes a rosbag2 topic of
that type (``ark/Image`` → ``sensor_msgs/msg/Image``, ``ark/Pose`` → ``geometry_msgs/msg/PoseStamped``,
…; see :data:`bridge_ros.convert.CONVERTERS`), its messages CDR-serialised with the
recorded publisher stamp in their header and the recorder's receive time as the bag
timestamp. Topics without a counterpart are skipped and reported, unless ``types`` names a
ROS type for them (``ark/DictArrays`` topics may name any type). Storage is MCAP (ROS 2's
default since Iron) or sqlite3; ``distro`` picks the type definitions and the bag format
version (Humble: 8, Jazzy: 9).

    stats = export_rosbag2("run.mcap", "run_bag", storage="mcap", distro="humble")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgpack
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from ark.errors import ArkError, DecodeError, SchemaError
from ark.messages import lookup_schema
from ark.record import RecordingError, iter_recording, recording_channels
from ark.wire import decode
from bridge_ros.cdr import RosTypes
from bridge_ros.convert import Converter, converter_for, default_ros_type
from bridge_ros.qos import PRESETS

log = logging.getLogger("bridge_ros.export")

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = {"humble": 8, "jazzy": 9}


class ExportError(ArkError):
    """A recording cannot be exported (bad arguments, output exists, unwritable)."""


@dataclass
class ExportStats:
    """What an export wrote."""

    output: str
    messages: int = 0
    topics: dict[str, tuple[str, int]] = field(default_factory=dict)  # topic -> (ROS type, messages)
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why
    skipped_messages: int = 0  # messages of exported topics that did not convert


def export_rosbag2(recording: str | Path, output: str | Path, *, storage: str = "mcap", distro: str = "humble",
                   topics: list[str] | None = None, types: dict[str, str] | None = None,
                   progress: Callable[[int], None] | None = None) -> ExportStats:
    """Write the topics of an Ark recording to a new rosbag2 directory ``output``; see the module docstring."""
    if storage not in STORAGES:
        raise ExportError(f"unknown rosbag2 storage {storage!r} (mcap or sqlite3)")
    if distro not in BAG_VERSION:
        raise ExportError(f"unknown ROS distribution {distro!r} ({', '.join(BAG_VERSION)})")
    output = Path(output)
    if output.exists():
        raise ExportError(f"{output} exists already; name a new directory for the rosbag2")
    channels = recording_channels(recording)
    if topics is not None:
        missing = sorted(set(topics) - set(channels))
        if missing:
            raise ExportError(f"{recording}: no topic(s) {', '.join(missing)} (recorded: {', '.join(sorted(channels))})")
        channels = {t: s for t, s in channels.items() if t in topics}
    rtypes = RosTypes(distro)
    stats = ExportStats(str(output))
    plans: dict[str, tuple[Converter, str]] = {}
    for topic, (schema, _version) in sorted(channels.items()):
        ros_type = (types or {}).get(topic) or default_ros_type(schema)
        if ros_type is None:
            stats.skipped_topics[topic] = f"no ROS 2 type for {schema}"
            continue
        try:
            conv = converter_for(ros_type, schema, rtypes)
        except ArkError as exc:
            stats.skipped_topics[topic] = str(exc)
            continue
        plans[topic] = (conv, rtypes.check(ros_type))
    for topic, why in stats.skipped_topics.items():
        log.warning("export: skipping %s: %s", topic, why)

    writer = Writer(output, version=BAG_VERSION[distro], storage_plugin=STORAGES[storage])
    try:
        writer.open()
    except (WriterError, OSError) as exc:
        raise ExportError(f"cannot create {output}: {exc}") from None
    done = False
    try:
        connections = {
            topic: writer.add_connection(topic, name, typestore=rtypes.store,
                                         offered_qos_profiles=[PRESETS["default"].to_rosbag2()])
            for topic, (_, name) in plans.items()
        }
        counts = {topic: 0 for topic in plans}
        for m in iter_recording(recording, topics=list(plans) or None):
            plan = plans.get(m.topic)
            if plan is None:
                continue
            conv, name = plan
            try:
                frames = [b"", msgpack.packb(m.header, use_bin_type=True), *m.buffers]
                msg, _ = decode(frames, lookup_schema(m.schema))
                data = rtypes.serialize(conv.to_ros(msg, m.publish_time_ns, rtypes), name)
            except (DecodeError, SchemaError, ArkError, ValueError, TypeError) as exc:
                stats.skipped_messages += 1
                if stats.skipped_messages <= 10:
                    log.warning("export: %s: skipped a message: %s", m.topic, exc)
                continue
            writer.write(connections[m.topic], m.log_time_ns, data)
            counts[m.topic] += 1
            stats.messages += 1
            if progress is not None:
                progress(stats.messages)
        done = True
    except RecordingError:
        raise
    except (WriterError, OSError) as exc:
        raise ExportError(f"cannot write {output}: {exc}") from None
    finally:
        if done:
            writer.close()
        else:
            writer.abort()
    stats.topics = {topic: (plans[topic][1], counts[topic]) for topic in plans}
    return stats
