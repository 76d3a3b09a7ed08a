"""cyclonedds ``IdlStruct`` classes of ROS 2 message types, generated from the rosbags type store.

Each class carries the DDS type name ROS 2 uses on the wire (``sensor_msgs::msg::dds_::Image_``),
is ``final`` and serialises as plain CDR, so a topic made with it matches the endpoints of an
unmodified ROS 2 node on Cyclone DDS. The bridge registers its topics with these classes;
its data path reads and writes the CDR bytes directly (see :mod:`bridge_ros.dds`), so the
classes' own Python (de)serialisers (a list of ints for ``uint8[]``) only serve peers and
tests that want objects.

    Image = DdsTypes(RosTypes("humble")).idl_class("sensor_msgs/msg/Image")
    Image.__idl_typename__   # 'sensor_msgs::msg::dds_::Image_'
"""

from __future__ import annotations

import threading
from typing import Any

from cyclonedds.idl import IdlStruct, make_idl_struct
from cyclonedds.idl import types as t
from rosbags.interfaces import Nodetype

from bridge_ros.cdr import RosTypes, dds_type_name

_BASE = {
    "bool": bool, "byte": t.byte, "char": t.uint8, "int8": t.int8, "uint8": t.uint8, "int16": t.int16,
    "uint16": t.uint16, "int32": t.int32, "uint32": t.uint32, "int64": t.int64, "uint64": t.uint64,
    "float32": t.float32, "float64": t.float64,
}


class DdsTypes:
    """Generates (once each) the IdlStruct class of any type in a :class:`RosTypes` store."""

    def __init__(self, types: RosTypes) -> None:
        self.types = types
        self._classes: dict[str, type[IdlStruct]] = {}
        self._lock = threading.RLock()

    def idl_class(self, ros_type: str) -> type[IdlStruct]:
        """The IdlStruct class of ``ros_type`` (and, recursively, of the types it contains)."""
        name = self.types.check(ros_type)
        with self._lock:
            cls = self._classes.get(name)
            if cls is None:
                cls = self._classes[name] = self._generate(name)
            return cls

    def _generate(self, name: str) -> type[IdlStruct]:
        fields: dict[str, Any] = {}
        for fname, desc in self.types.fields(name):
            fields[fname] = self._annotation(desc)
        if not fields:  # ROS gives empty messages one placeholder byte
            fields["structure_needs_at_least_one_member"] = t.uint8
        cls = make_idl_struct(name.replace("/", "__"), dds_type_name(name), fields)
        cls.__ros_type__ = name  # type: ignore[attr-defined]
        return cls

    def _annotation(self, desc: tuple) -> Any:
        kind, args = desc
        if kind == Nodetype.BASE:
            base, bound = args
            if base == "string":
                return t.bounded_str[bound] if bound else str
            return _BASE[base]
        if kind == Nodetype.NAME:
            return self.idl_class(args)
        (subkind, subargs), count = args
        inner = self._annotation((subkind, subargs))
        if kind == Nodetype.ARRAY:
            return t.array[inner, count]
        return t.sequence[inner, count] if count else t.sequence[inner]

    def to_idl(self, msg: Any) -> IdlStruct:
        """The IdlStruct instance holding the same values as a rosbags message object."""
        cls = self.idl_class(msg.__msgtype__)
        values = {}
        for fname, (kind, args) in self.types.fields(msg.__msgtype__):
            value = getattr(msg, fname)
            if kind == Nodetype.NAME:
                value = self.to_idl(value)
            elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                (subkind, subargs), _ = args
                if subkind == Nodetype.NAME:
                    value = [self.to_idl(v) for v in value]
                else:
                    value = value.tolist() if hasattr(value, "tolist") else list(value)
            values[fname] = value
        if not values:
            values["structure_needs_at_least_one_member"] = 0
        return cls(**values)
