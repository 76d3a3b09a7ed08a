"""Hand-written CDR readers for the bridge's hot types: ``sensor_msgs/JointState`` and ``Image``.

rosbags' generated deserialisers build a Python object per nested message and look each
nested type up per call; for the types a robot streams at high rate that is most of the
bridge's decoding time. These readers walk the same plain-CDR layout with ``struct`` and
return the fields as a tuple, arrays as numpy views over the payload (an image's pixels are
never copied). They make exactly the checks rosbags makes (string lengths and terminators,
sequence counts against the bytes left, trailing bytes, strict UTF-8), so a payload they
accept decodes to the same values under rosbags; the tests compare the two.

They read little-endian CDR on a little-endian host only (what every ROS 2 RMW sends on
x86 and ARM); anything else raises :class:`FastPathUnsupported`, and the caller takes the
general rosbags path, which also decides (and words) every rejection.
"""

from __future__ import annotations

import struct
import sys

import numpy as np

_HOST_LITTLE = sys.byteorder == "little"
_U32 = struct.Struct("<I").unpack_from
_STAMP = struct.Struct("<iI").unpack_from  # header.stamp: int32 sec, uint32 nanosec
_F64 = np.dtype("<f8")
_U8 = np.dtype("u1")


class FastPathUnsupported(ValueError):
    """The payload is not one these readers take (byte order, malformed): use the general path."""


def _start(data: bytes | memoryview) -> int:
    """Length of the CDR body after the 4-byte encapsulation header; checks that header."""
    if not _HOST_LITTLE or len(data) < 4 or data[0] != 0 or data[1] != 1:
        raise FastPathUnsupported("not little-endian plain CDR")
    return len(data) - 4


def _string(data: bytes | memoryview, p: int, n: int) -> tuple[str, int]:
    """The CDR string at body offset ``p`` (4-aligned) and the offset after it."""
    size = _U32(data, 4 + p)[0]
    end = p + 4 + size
    if size < 1 or end > n or data[3 + end] != 0:  # length counts the NUL terminator
        raise FastPathUnsupported(f"bad string at offset {p}")
    return bytes(data[8 + p:3 + end]).decode(), end


def _header(data: bytes | memoryview, n: int) -> tuple[int, int, str, int]:
    """``std_msgs/Header`` at the start of the body: (sec, nanosec, frame_id, offset after it)."""
    sec, nanosec = _STAMP(data, 4)
    frame_id, p = _string(data, 8, n)
    return sec, nanosec, frame_id, p


def _end(p: int, data: bytes | memoryview) -> None:
    if p + 7 < len(data):  # rosbags' rule: at most 3 bytes of padding after the message
        raise FastPathUnsupported("trailing bytes after the message")


def read_joint_state(data: bytes | memoryview) -> tuple[int, int, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``sensor_msgs/msg/JointState`` CDR → (stamp sec, nanosec, names, position, velocity, effort)."""
    n = _start(data)
    sec, nanosec, _, p = _header(data, n)  # frame_id is decoded (and checked) but not kept
    p = (p + 3) & -4
    count = _U32(data, 4 + p)[0]
    p += 4
    if p + count * 5 > n:
        raise FastPathUnsupported(f"bad name count {count}")
    names = []
    u32 = _U32
    for _ in range(count):  # _string, inlined: this loop is most of the time
        p = (p + 3) & -4
        end = p + 4 + u32(data, 4 + p)[0]
        if end <= p + 4 or end > n or data[3 + end] != 0:
            raise FastPathUnsupported(f"bad string at offset {p}")
        names.append(bytes(data[8 + p:3 + end]).decode())
        p = end
    arrays = []
    for _ in range(3):
        p = (p + 3) & -4
        size = _U32(data, 4 + p)[0]
        p += 4
        if p + size * 8 > n:
            raise FastPathUnsupported(f"bad array length {size}")
        if size:
            p = (p + 7) & -8
            if p + size * 8 > n:
                raise FastPathUnsupported(f"bad array length {size}")
        arrays.append(np.frombuffer(data, _F64, size, 4 + p))
        p += size * 8
    _end(p, data)
    return sec, nanosec, names, arrays[0], arrays[1], arrays[2]


def read_image(data: bytes | memoryview) -> tuple[int, int, str, int, int, str, int, int, np.ndarray]:
    """``sensor_msgs/msg/Image`` CDR → (stamp sec, nanosec, frame_id, height, width, encoding,
    is_bigendian, step, data as a uint8 view over the payload)."""
    n = _start(data)
    sec, nanosec, frame_id, p = _header(data, n)
    p = (p + 3) & -4
    if p + 8 > n:
        raise FastPathUnsupported("truncated")
    height = _U32(data, 4 + p)[0]
    width = _U32(data, 8 + p)[0]
    encoding, p = _string(data, p + 8, n)
    if p + 1 > n:
        raise FastPathUnsupported("truncated")
    is_bigendian = data[4 + p]
    p = (p + 4) & -4  # one byte, then align to 4
    if p + 8 > n:
        raise FastPathUnsupported("truncated")
    step = _U32(data, 4 + p)[0]
    size = _U32(data, 8 + p)[0]
    p += 8
    if p + size > n:
        raise FastPathUnsupported(f"bad data length {size}")
    pixels = np.frombuffer(data, _U8, size, 4 + p)
    _end(p + size, data)
    return sec, nanosec, frame_id, height, width, encoding, is_bigendian, step, pixels


__all__ = ["FastPathUnsupported", "read_image", "read_joint_state"]
