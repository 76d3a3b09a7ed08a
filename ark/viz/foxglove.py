"""Ark topics in Foxglove: a live tap (WebSocket server) and MCAP export with Foxglove's schemas.

    from ark.viz.foxglove import FoxgloveTap, export_mcap

    tap = FoxgloveTap(["/camera", "/slam/pose", "/scan", "/slam/map"], port=8765,
                      transforms={"/slam/pose": "base_link"}).start()   # open ws://127.0.0.1:8765 in Foxglove
    export_mcap("run.mcap", "run.foxglove.mcap")                        # an Ark recording, Foxglove-readable

Why an export: Ark's own recordings (:mod:`ark.record`) use ``msgpack`` message encoding, which
Foxglove and Rerun do not decode (they list the channels but show no data). The export and the
tap write Foxglove's well-known schemas, protobuf-encoded, which both viewers understand:

================== ================================= ==============================================
Ark schema         Foxglove schema                   notes
================== ================================= ==============================================
``ark/Image``      ``foxglove.RawImage``             rgb8, bgr8, mono8; depth32f as 32FC1
``ark/Pose``       ``foxglove.PoseInFrame``          plus ``foxglove.FrameTransforms`` on ``/tf``
                                                     (``frame_id`` -> child) for ``transforms``
``ark/LaserScan``  ``foxglove.LaserScan``            pose = origin of ``frame_id``
``ark/OccupancyGrid`` ``foxglove.Grid``              one int8 field ``occupancy`` (-1 unknown)
``ark/JointState`` ``foxglove.JointStates``
anything else      JSON (``json`` encoding)          numbers and small arrays, plottable as
                                                     scalars; arrays > 64 values as shape only
================== ================================= ==============================================

The WebSocket server listens on ``host`` (loopback by default). ``foxglove-sdk`` is an optional
dependency (the ``viz`` extra); without it these raise :class:`VizUnavailable` with the install
hint. :func:`export_mcap_json` needs only ``mcap``: JSON messages with Ark's JSON Schemas (arrays
as base64), which Foxglove shows as raw messages and plots but not as images or scans.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ark.config import ArkConfig
from ark.errors import ArkError
from ark.node import Node
from ark.wire import arrays_from

log = logging.getLogger("ark.viz")

JSON_ARRAY_LIMIT = 64  # larger arrays go to JSON as their shape and dtype only
IMAGE_ENCODINGS = {"rgb8": ("rgb8", 3), "bgr8": ("bgr8", 3), "mono8": ("mono8", 1), "rgba8": ("rgba8", 4),
                   "depth32f": ("32FC1", 4), "mono16": ("mono16", 2)}


class VizUnavailable(ArkError):
    """foxglove-sdk is not installed."""


def _foxglove():
    try:
        import foxglove
        import foxglove.channels  # noqa: F401
        import foxglove.messages  # noqa: F401
    except ImportError:
        raise VizUnavailable("the Foxglove tap and export need foxglove-sdk: pip install 'ark-robotics[viz]' "
                             "(or foxglove-sdk)") from None
    return foxglove


def message_values(header: dict, buffers) -> dict[str, Any]:
    """The fields of a wire message (header + buffers) as a dict: plain values and numpy arrays."""
    values: dict[str, Any] = dict(header.get("f", {}))
    for name, key, arr in arrays_from(header, buffers):
        if key is None:
            values[name] = arr
        else:
            values.setdefault(name, {})[key] = arr
    return values


def _stamp(fm, ns: int):
    return fm.Timestamp(sec=int(ns // 1_000_000_000), nsec=int(ns % 1_000_000_000))


def _pose(fm, position, orientation):
    p = [float(v) for v in position]
    q = [float(v) for v in orientation]
    return fm.Pose(position=fm.Vector3(x=p[0], y=p[1], z=p[2]), orientation=fm.Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.size <= JSON_ARRAY_LIMIT:
            return value.tolist()
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def convert(topic: str, schema: str, values: dict[str, Any], stamp_ns: int,
            transforms: dict[str, str] | None = None) -> list[tuple[str, str, Any]]:
    """Foxglove messages for one Ark message: ``[(topic, kind, message)]`` where ``kind`` is a Foxglove
    schema class name (``"RawImage"``, …) or ``"json"`` (then ``message`` is a dict)."""
    fm = _foxglove().messages
    ts = _stamp(fm, stamp_ns)
    frame = str(values.get("frame_id", "") or "")
    if schema == "ark/Image":
        data = np.ascontiguousarray(values["data"])
        enc, size = IMAGE_ENCODINGS.get(values.get("encoding", "rgb8"), (values.get("encoding", "rgb8"), data.itemsize))
        h, w = data.shape[:2]
        channels = data.shape[2] if data.ndim == 3 else 1
        return [(topic, "RawImage", fm.RawImage(timestamp=ts, frame_id=frame, width=w, height=h, encoding=enc,
                                                step=w * channels * data.itemsize, data=data.tobytes()))]
    if schema == "ark/Pose":
        out = [(topic, "PoseInFrame", fm.PoseInFrame(timestamp=ts, frame_id=frame,
                                                     pose=_pose(fm, values["position"], values["orientation"])))]
        if transforms and topic in transforms:
            p, q = values["position"], values["orientation"]
            tf = fm.FrameTransform(timestamp=ts, parent_frame_id=frame or "world", child_frame_id=transforms[topic],
                                   translation=fm.Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                                   rotation=fm.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
            out.append(("/tf", "FrameTransforms", fm.FrameTransforms(transforms=[tf])))
        return out
    if schema == "ark/LaserScan":
        r = np.asarray(values["ranges"], dtype=np.float64)
        return [(topic, "LaserScan", fm.LaserScan(timestamp=ts, frame_id=frame or "base_link",
                                                  pose=_pose(fm, (0, 0, 0), (0, 0, 0, 1)),
                                                  start_angle=float(values["angle_min"]),
                                                  end_angle=float(values["angle_max"]),
                                                  ranges=[float(v) for v in r], intensities=[]))]
    if schema == "ark/OccupancyGrid":
        data = np.ascontiguousarray(values["data"], dtype=np.int8)
        h, w = data.shape
        res = float(values["resolution"])
        ox, oy, oyaw = (float(v) for v in values.get("origin", (0.0, 0.0, 0.0)))
        pose = _pose(fm, (ox, oy, 0.0), (0.0, 0.0, math.sin(oyaw / 2), math.cos(oyaw / 2)))
        field = fm.PackedElementField(name="occupancy", offset=0, type=fm.PackedElementFieldNumericType.Int8)
        return [(topic, "Grid", fm.Grid(timestamp=ts, frame_id=frame or "map", pose=pose, column_count=w,
                                        cell_size=fm.Vector2(x=res, y=res), row_stride=w, cell_stride=1,
                                        fields=[field], data=data.tobytes()))]
    if schema == "ark/JointState":
        names = list(values.get("name", []))
        pos, vel, eff = (np.asarray(values.get(k, np.zeros(0)), dtype=np.float64) for k in ("position", "velocity", "effort"))
        joints = [fm.JointState(name=n, position=float(pos[i]) if i < len(pos) else None,
                                velocity=float(vel[i]) if i < len(vel) else None,
                                effort=float(eff[i]) if i < len(eff) else None) for i, n in enumerate(names)]
        return [(topic, "JointStates", fm.JointStates(timestamp=ts, joints=joints))]
    return [(topic, "json", _jsonable(values))]


class FoxgloveSink:
    """Logs converted messages to Foxglove channels of one ``foxglove.Context`` (created per topic on first use)."""

    def __init__(self, context=None, transforms: dict[str, str] | None = None) -> None:
        fox = _foxglove()
        self.fox = fox
        self.context = context or fox.Context()
        self.transforms = dict(transforms or {})
        self.channels: dict[tuple[str, str], Any] = {}
        self.messages = 0
        self.failed = 0
        self._lock = threading.Lock()

    def _channel(self, topic: str, kind: str):
        key = (topic, kind)
        ch = self.channels.get(key)
        if ch is None:
            if kind == "json":
                ch = self.fox.Channel(topic, schema={"type": "object"}, message_encoding="json", context=self.context)
            else:
                ch = getattr(self.fox.channels, f"{kind}Channel")(topic, context=self.context)
            self.channels[key] = ch
        return ch

    def log(self, topic: str, schema: str, values: dict[str, Any], stamp_ns: int, log_time_ns: int | None = None) -> None:
        """Convert and log one Ark message; a message that does not convert is counted and skipped."""
        try:
            items = convert(topic, schema, values, stamp_ns, self.transforms)
        except (KeyError, TypeError, ValueError) as exc:
            self.failed += 1
            log.warning("foxglove: skipped a %s message on %s (%s)", schema, topic, exc)
            return
        with self._lock:
            for out_topic, kind, msg in items:
                self._channel(out_topic, kind).log(msg, log_time=log_time_ns if log_time_ns is not None else stamp_ns)
            self.messages += 1


class FoxgloveTap(Node):
    """An Ark node that forwards ``topics`` to a Foxglove WebSocket server (and optionally an MCAP file).

    ``port=0`` picks a free port (read ``tap.port``). ``transforms`` maps pose topics to the child
    frame whose transform they define (published on ``/tf``)."""

    def __init__(self, topics: Iterable[str], *, name: str = "foxglove_tap", host: str = "127.0.0.1", port: int = 8765,
                 transforms: dict[str, str] | None = None, mcap_path: str | Path | None = None,
                 config: ArkConfig | None = None) -> None:
        fox = _foxglove()
        topics = list(topics)
        if not topics:
            raise ArkError("FoxgloveTap needs at least one topic")
        super().__init__(name, config=config)
        self.sink = FoxgloveSink(transforms=transforms)
        try:
            self.server = fox.start_server(name="ark", host=host, port=port, context=self.sink.context)
            self.mcap = fox.open_mcap(str(mcap_path), allow_overwrite=True, context=self.sink.context) if mcap_path else None
        except Exception as exc:
            super().shutdown()
            raise ArkError(f"FoxgloveTap: cannot serve on {host}:{port} ({exc})") from None
        for topic in topics:
            self.subscriber(topic, None, self._forward(topic), queue=100)

    @property
    def port(self) -> int:
        return int(self.server.port)

    def _forward(self, topic: str):
        def on_message(msg, info) -> None:
            self.sink.log(topic, msg.header["s"], message_values(msg.header, msg.buffers), info.stamp_ns)

        return on_message

    def shutdown(self) -> None:
        super().shutdown()
        if getattr(self, "mcap", None) is not None:
            self.mcap.close()
            self.mcap = None
        if getattr(self, "server", None) is not None:
            self.server.stop()
            self.server = None


def export_mcap(src: str | Path, dst: str | Path, topics: list[str] | None = None,
                transforms: dict[str, str] | None = None) -> dict[str, int]:
    """Rewrite Ark recording ``src`` as ``dst`` with Foxglove schemas (protobuf); returns messages per topic."""
    from ark.record import iter_recording

    fox = _foxglove()
    sink = FoxgloveSink(transforms=transforms)
    counts: dict[str, int] = {}
    writer = fox.open_mcap(str(dst), allow_overwrite=True, context=sink.context)
    try:
        for m in iter_recording(src, topics):
            sink.log(m.topic, m.schema, message_values(m.header, m.buffers), m.publish_time_ns or m.log_time_ns,
                     log_time_ns=m.log_time_ns)
            counts[m.topic] = counts.get(m.topic, 0) + 1
    finally:
        writer.close()
    return counts


def export_mcap_json(src: str | Path, dst: str | Path, topics: list[str] | None = None) -> dict[str, int]:
    """Rewrite Ark recording ``src`` as ``dst`` with JSON messages and Ark's JSON Schemas (no foxglove-sdk needed)."""
    from mcap.writer import Writer

    from ark.record import iter_recording, json_schema

    counts: dict[str, int] = {}
    schemas: dict[tuple[str, int], int] = {}
    channels: dict[tuple[str, str, int], int] = {}

    def plain(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return {"dtype": v.dtype.str, "shape": list(v.shape), "data": base64.b64encode(v.tobytes()).decode()}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    with open(dst, "wb") as f:
        w = Writer(f)
        w.start(profile="", library="ark")
        for m in iter_recording(src, topics):
            key = (m.topic, m.schema, m.version)
            if key not in channels:
                if (m.schema, m.version) not in schemas:
                    schemas[(m.schema, m.version)] = w.register_schema(m.schema, "jsonschema",
                                                                       json.dumps(json_schema(m.header)).encode())
                channels[key] = w.register_channel(m.topic, "json", schemas[(m.schema, m.version)])
            rec = {"_schema": m.schema, "_version": m.version, "_seq": m.header.get("q", 0),
                   **{k: plain(v) for k, v in message_values(m.header, m.buffers).items()}}
            w.add_message(channels[key], log_time=m.log_time_ns, publish_time=m.publish_time_ns,
                          data=json.dumps(rec).encode())
            counts[m.topic] = counts.get(m.topic, 0) + 1
        w.finish()
    return counts
