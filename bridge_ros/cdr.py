"""The CDR and type layer: ROS 2 message types, CDR (de)serialisation, RIHS01 type hashes.

One :class:`RosTypes` per ROS distribution wraps a ``rosbags`` type store (Humble or Jazzy)
and adds what the bridge needs on top: custom ``.msg``/``.srv`` registration from text,
zero-valued messages, the DDS names ROS 2 uses on the wire, and errors that name the type.
Deserialised arrays of primitives are numpy views over the CDR payload (no copy).

    types = RosTypes("jazzy")
    types.register_msg("my_msgs/msg/Wrench", "float64[3] force\\nfloat64[3] torque")
    data = types.serialize(types.make("my_msgs/msg/Wrench"), "my_msgs/msg/Wrench")
    types.rihs01("my_msgs/msg/Wrench")       # 'RIHS01_…'
    types.dds_type_name("sensor_msgs/msg/Image")  # 'sensor_msgs::msg::dds_::Image_'
"""

from __future__ import annotations

import threading
from struct import error as struct_error
from typing import Any, Iterable

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore

from ark.errors import ArkError, DecodeError

DISTROS: dict[str, Stores] = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
ENCAPSULATION_LE = b"\x00\x01\x00\x00"  # plain CDR, little endian: what every ROS 2 RMW sends

NUMPY_OF = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


class RosTypeError(ArkError):
    """A ROS type is unknown, or a custom definition cannot be parsed or registered."""


class CdrError(DecodeError):
    """A CDR payload does not decode as the type it claims (malformed, truncated, wrong type)."""


def normalize_type(name: str) -> str:
    """``sensor_msgs/Image`` or ``sensor_msgs/msg/Image`` → ``sensor_msgs/msg/Image``."""
    parts = [p for p in name.strip().split("/") if p]
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return "/".join(parts)


def dds_type_name(ros_type: str) -> str:
    """The DDS type name ROS 2 registers for a type: ``pkg/msg/T`` → ``pkg::msg::dds_::T_``."""
    pkg, kind, name = normalize_type(ros_type).split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


def dds_topic_name(ros_topic: str) -> str:
    """The DDS topic of a ROS 2 topic: ``/joint_states`` → ``rt/joint_states``."""
    return "rt/" + ros_topic.lstrip("/")


def ros_topic_name(dds_topic: str) -> str:
    """Inverse of :func:`dds_topic_name`: ``rt/joint_states`` → ``/joint_states``."""
    return "/" + dds_topic[3:] if dds_topic.startswith("rt/") else dds_topic


class RosTypes:
    """The ROS 2 message types of one distribution (``humble`` or ``jazzy``), extensible with custom ones."""

    def __init__(self, distro: str = "humble") -> None:
        if distro not in DISTROS:
            raise RosTypeError(f"unknown ROS distribution {distro!r} (known: {', '.join(DISTROS)})")
        self.distro = distro
        self.store = get_typestore(DISTROS[distro])
        self._lock = threading.Lock()  # rosbags generates (de)serialisers lazily; build each once
        self._hashes: dict[str, str] = {}

    # -- lookup ---------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether ``name`` is a known message type (built in or registered)."""
        return normalize_type(name) in self.store.fielddefs

    def names(self) -> list[str]:
        """All known message type names."""
        return sorted(self.store.fielddefs)

    def check(self, name: str) -> str:
        """The normalised name of a known type; raises RosTypeError naming the unknown one."""
        norm = normalize_type(name)
        if norm not in self.store.fielddefs:
            raise RosTypeError(f"unknown ROS type {name!r} for {self.distro} (register it as a custom .msg)")
        return norm

    def fields(self, name: str) -> list[tuple[str, tuple]]:
        """The ``(field, (nodetype, args))`` definitions of a type, as rosbags parses them."""
        return list(self.store.fielddefs[self.check(name)][1])

    def message_class(self, name: str) -> type:
        """The Python class rosbags generated for a type."""
        return self.store.types[self.check(name)]

    def make(self, type_name: str, /, **values: Any) -> Any:
        """A message of type ``type_name``: zero/empty values, overridden by ``values``."""
        name = self.check(type_name)
        kwargs = {}
        for fname, desc in self.store.fielddefs[name][1]:
            kwargs[fname] = values.pop(fname) if fname in values else self._zero(desc)
        if values:
            raise RosTypeError(f"{name} has no field(s) {', '.join(sorted(values))}")
        return self.store.types[name](**kwargs)

    def _zero(self, desc: tuple) -> Any:
        kind, args = desc
        if kind == Nodetype.BASE:
            base = args[0]
            return "" if base == "string" else False if base == "bool" else 0.0 if base.startswith("float") else 0
        if kind == Nodetype.NAME:
            return self.make(args)
        (subkind, subargs), count = args
        if kind == Nodetype.SEQUENCE:
            count = 0
        if subkind == Nodetype.BASE and subargs[0] in NUMPY_OF:
            return np.zeros(count, dtype=NUMPY_OF[subargs[0]])
        return [self._zero((subkind, subargs)) for _ in range(count)]

    # -- registration ---------------------------------------------------------------------
    def register_msgs(self, definitions: dict[str, str]) -> list[str]:
        """Register custom ``.msg`` definitions ``{type name: text}`` together (they may refer to each other)."""
        typs: dict[str, Any] = {}
        for name, text in definitions.items():
            norm = normalize_type(name)
            if norm.count("/") != 2 or norm.split("/")[1] not in ("msg", "srv"):
                raise RosTypeError(f"custom type name {name!r}: expected pkg/msg/Name")
            try:
                parsed = get_types_from_msg(text, norm)
            except Exception as exc:  # the PEG parser raises several unrelated types
                raise RosTypeError(f"custom type {name}: cannot parse .msg text ({exc})") from None
            # rosbags files a name under pkg/<msg>/…; keep the name we were given (srv parts).
            for key, value in parsed.items():
                typs[norm if key.rsplit("/", 1)[-1] == norm.rsplit("/", 1)[-1] else key] = value
        self._check_references(typs)
        with self._lock:
            try:
                self.store.register(typs)
            except TypesysError as exc:
                raise RosTypeError(f"cannot register {', '.join(typs)}: {exc}") from None
            self._hashes.clear()
        return sorted(typs)

    def register_msg(self, name: str, text: str) -> str:
        """Register one custom ``.msg`` definition; returns its normalised name."""
        return self.register_msgs({name: text})[0]

    def register_srv(self, name: str, text: str) -> tuple[str, str]:
        """Register a ``.srv`` definition as ``pkg/srv/Name_Request`` and ``pkg/srv/Name_Response``."""
        norm = normalize_type(name)
        if norm.count("/") != 2:
            raise RosTypeError(f"service type name {name!r}: expected pkg/srv/Name")
        pkg, _, base = norm.split("/")
        lines = text.splitlines()
        cut = [i for i, line in enumerate(lines) if line.strip() == "---"]
        if len(cut) != 1:
            raise RosTypeError(f"service {name}: expected one '---' line between request and response")
        request, response = "\n".join(lines[:cut[0]]), "\n".join(lines[cut[0] + 1:])
        req, rep = f"{pkg}/srv/{base}_Request", f"{pkg}/srv/{base}_Response"
        self.register_msgs({req: request, rep: response})
        return req, rep

    def _check_references(self, typs: dict[str, Any]) -> None:
        for name, (_, fields) in typs.items():
            for fname, (kind, args) in fields:
                ref = args if kind == Nodetype.NAME else args[0][1] if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) \
                    and args[0][0] == Nodetype.NAME else None
                if ref is not None and ref not in typs and ref not in self.store.fielddefs:
                    raise RosTypeError(f"custom type {name}: field {fname!r} refers to unknown type {ref}")

    # -- CDR ------------------------------------------------------------------------------
    def _msgdef(self, name: str) -> Any:
        cache = self.store.cache
        hit = cache.get(name)
        if hit is None:
            with self._lock:
                hit = self.store.get_msgdef(name)
        return hit

    def serialize(self, msg: Any, name: str) -> memoryview:
        """CDR bytes of a message as ROS 2 sends them: little-endian encapsulation header, payload,
        zero padding to a multiple of 4 bytes (its length in the header's last option bits)."""
        name = normalize_type(name)
        md = self._msgdef(name)
        try:
            size = 4 + md.getsize_cdr(0, msg, self.store)
            pad = -size % 4
            buf = memoryview(bytearray(size + pad))
            buf[:4] = ENCAPSULATION_LE[:3] + bytes([pad])
            end = md.serialize_cdr_le(buf[4:], 0, msg, self.store)
        except (SerdeError, struct_error, ValueError, TypeError, AttributeError, IndexError, OverflowError) as exc:
            raise RosTypeError(f"cannot serialise {name}: {exc}") from None
        if end + 4 != size:
            raise RosTypeError(f"cannot serialise {name}: wrote {end + 4} bytes, expected {size}")
        return buf

    def deserialize(self, data: bytes | memoryview, name: str) -> Any:
        """The message in a CDR payload; raises CdrError when it does not decode as ``name``."""
        name = normalize_type(name)
        self._msgdef(name)
        if not isinstance(data, memoryview):
            data = memoryview(data)  # rosbags slices off the header: on bytes that would copy the payload
        try:
            return self.store.deserialize_cdr(data, name)
        except SerdeError as exc:
            raise CdrError(f"malformed CDR for {name}: {exc}") from None
        except (ValueError, TypeError, IndexError, OverflowError, MemoryError, struct_error) as exc:
            raise CdrError(f"malformed CDR for {name}: {type(exc).__name__}: {exc}") from None

    def warm(self, names: Iterable[str]) -> None:
        """Generate the (de)serialisers of ``names`` now, so the first message is not slow."""
        for name in names:
            self._msgdef(self.check(name))

    # -- definitions and hashes -------------------------------------------------------------
    def rihs01(self, name: str) -> str:
        """The ROS 2 type hash (REP-2011 RIHS01) of a type, as Iron and later send it."""
        name = self.check(name)
        hit = self._hashes.get(name)
        if hit is None:
            hit = self._hashes[name] = self.store.hash_rihs01(name)
        return hit

    def msgdef(self, name: str) -> str:
        """The full ``ros2msg`` definition text (with dependencies), as rosbag2 stores it."""
        return self.store.generate_msgdef(self.check(name), ros_version=2)[0]

    def dds_type_name(self, name: str) -> str:
        return dds_type_name(self.check(name))

