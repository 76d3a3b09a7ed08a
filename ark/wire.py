"""The wire format: a multipart ZeroMQ message ``[topic, header, buffer...]``.

The header is msgpack: schema name ``s`` and version ``v``, sequence number ``q``, the
publisher's clock stamp ``t`` (ns), publisher id ``p``, the plain fields ``f`` and one
``[field, key, dtype, shape]`` entry in ``a`` per array buffer. Array data is never copied
into the header: buffers go out as views of the numpy arrays and come back as arrays over
the received frames. Nothing here unpickles; every value of a received header is checked
before it is used, and any inconsistency raises :class:`DecodeError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import msgpack
import numpy as np

from ark.errors import DecodeError, SchemaError
from ark.messages import ALLOWED_DTYPES, SchemaInfo, lookup_schema, schema_of

HEADER_LIMIT = 1 << 20  # a header above 1 MiB is malformed by construction


@dataclass(frozen=True)
class MessageInfo:
    """Metadata that arrived with a message."""

    topic: str
    schema: str
    version: int
    seq: int
    stamp_ns: int
    source: str
    nbytes: int


def _as_bytes_view(arr: np.ndarray) -> memoryview:
    """A flat byte view of a C-contiguous little-endian array (no copy when already so)."""
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1).view(np.uint8))


def encode(topic: bytes, msg: Any, seq: int, stamp_ns: int, source: str, extra: dict | None = None) -> list:
    """Frames for ``msg`` on ``topic``; raises SchemaError if the message breaks its schema."""
    info = schema_of(msg)
    arrays: list[list] = []
    buffers: list[memoryview] = []
    for name, spec in info.array_fields:
        arr = getattr(msg, name)
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr, dtype=spec.dtype)
        spec.check(info.name, name, arr)
        if arr.dtype.str.replace(">", "<") not in ALLOWED_DTYPES:
            raise SchemaError(f"{info.name}.{name}: dtype {arr.dtype} cannot be sent")
        view = _as_bytes_view(arr)
        arrays.append([name, None, arr.dtype.str.replace(">", "<"), list(arr.shape)])
        buffers.append(view)
    for name in info.dict_array_fields:
        mapping = getattr(msg, name)
        if not isinstance(mapping, dict):
            raise SchemaError(f"{info.name}.{name}: expected a dict of arrays, got {type(mapping).__name__}")
        for key, arr in mapping.items():
            arr = np.asarray(arr)
            if not isinstance(key, str) or arr.dtype.str.replace(">", "<") not in ALLOWED_DTYPES:
                raise SchemaError(f"{info.name}.{name}[{key!r}]: needs a str key and a numeric array, got {arr.dtype}")
            arrays.append([name, key, arr.dtype.str.replace(">", "<"), list(arr.shape)])
            buffers.append(_as_bytes_view(arr))
    fields = {}
    for name, check, tname in info.plain_fields:
        value = getattr(msg, name)
        if isinstance(value, np.generic):
            value = value.item()
        if not check(value):
            raise SchemaError(f"{info.name}.{name}: expected {tname}, got {type(value).__name__}")
        fields[name] = value
    header = {"s": info.name, "v": info.version, "q": seq, "t": stamp_ns, "p": source, "f": fields, "a": arrays}
    if extra:
        header.update(extra)
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{info.name}: a field value cannot be encoded ({exc})") from None
    return [topic, packed, *buffers]


def _frame_bytes(frame: Any) -> Any:
    return frame.buffer if hasattr(frame, "buffer") else frame


def decode_header(frames: Sequence[Any], max_bytes: int | None = None) -> tuple[dict, list[memoryview], int]:
    """Validate the envelope of a received message: its header dict, buffers and total size."""
    if len(frames) < 2:
        raise DecodeError(f"malformed message: {len(frames)} frame(s), need at least 2")
    bufs = [memoryview(_frame_bytes(f)) for f in frames]
    total = sum(b.nbytes for b in bufs)
    if max_bytes is not None and total > max_bytes:
        raise DecodeError(f"oversized message: {total} bytes > limit {max_bytes}")
    if bufs[1].nbytes > HEADER_LIMIT:
        raise DecodeError(f"malformed header: {bufs[1].nbytes} bytes")
    try:
        header = msgpack.unpackb(bufs[1], raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"malformed header: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise DecodeError("malformed header: not a map")
    for key, tp in (("s", str), ("v", int), ("q", int), ("t", int), ("p", str), ("f", dict), ("a", list)):
        if not isinstance(header.get(key), tp):
            raise DecodeError(f"malformed header: field {key!r} missing or not {tp.__name__}")
    if len(header["a"]) != len(bufs) - 2:
        raise DecodeError(f"truncated message: header lists {len(header['a'])} buffers, got {len(bufs) - 2}")
    for entry, buf in zip(header["a"], bufs[2:]):
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and (entry[1] is None or isinstance(entry[1], str)) and isinstance(entry[2], str)
                and isinstance(entry[3], list) and all(isinstance(d, int) and d >= 0 for d in entry[3])):
            raise DecodeError("malformed header: bad array entry")
        if entry[2] not in ALLOWED_DTYPES:
            raise DecodeError(f"malformed header: dtype {entry[2]!r} not allowed")
        need = math.prod(entry[3]) * np.dtype(entry[2]).itemsize
        if need != buf.nbytes:
            raise DecodeError(f"truncated buffer for {entry[0]}: {buf.nbytes} bytes, shape {tuple(entry[3])} {entry[2]} needs {need}")
    return header, bufs[2:], total


def arrays_from(header: dict, buffers: Sequence[memoryview]) -> list[tuple[str, str | None, np.ndarray]]:
    """Zero-copy arrays over the received buffers (read-only), as (field, key, array)."""
    return [
        (name, key, np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape))
        for (name, key, dtype, shape), buf in zip(header["a"], buffers)
    ]


def decode(frames: Sequence[Any], expected: SchemaInfo | None = None, max_bytes: int | None = None) -> tuple[Any, MessageInfo]:
    """Decode a received message, checking it against ``expected`` (or its own schema name)."""
    header, buffers, total = decode_header(frames, max_bytes)
    if expected is None:
        try:
            expected = lookup_schema(header["s"])
        except SchemaError:
            raise DecodeError(f"unknown schema {header['s']!r}") from None
    if header["s"] != expected.name or header["v"] != expected.version:
        raise DecodeError(f"schema mismatch: got {header['s']} v{header['v']}, expected {expected.name} v{expected.version}")
    kwargs: dict[str, Any] = {}
    fields = header["f"]
    for name, check, tname in expected.plain_fields:
        if name not in fields:
            raise DecodeError(f"{expected.name}: field {name!r} missing")
        if not check(fields[name]):
            raise DecodeError(f"{expected.name}.{name}: expected {tname}, got {type(fields[name]).__name__}")
        kwargs[name] = fields[name]
    for name in expected.dict_array_fields:
        kwargs[name] = {}
    specs = dict(expected.array_fields)
    for name, key, arr in arrays_from(header, buffers):
        if key is None and name in specs:
            try:
                specs[name].check(expected.name, name, arr)
            except SchemaError as exc:
                raise DecodeError(str(exc)) from None
            kwargs[name] = arr
        elif key is not None and name in kwargs and isinstance(kwargs[name], dict):
            kwargs[name][key] = arr
        else:
            raise DecodeError(f"{expected.name}: unexpected array field {name!r}")
    missing = [n for n, _ in expected.array_fields if n not in kwargs]
    if missing:
        raise DecodeError(f"{expected.name}: array field(s) {', '.join(missing)} missing")
    try:
        msg = expected.cls(**kwargs)
    except (SchemaError, TypeError, ValueError) as exc:
        raise DecodeError(f"{expected.name}: {exc}") from None
    topic = bytes(_frame_bytes(frames[0])).decode("utf-8", "replace")
    return msg, MessageInfo(topic, header["s"], header["v"], header["q"], header["t"], header["p"], total)
