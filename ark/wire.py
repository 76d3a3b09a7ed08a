"""The wire format: a multipart ZeroMQ message ``[topic, header, buffer...]``.

The header is msgpack: schema name ``s`` and version ``v``, sequence number ``q``, the
publisher's clock stamp ``t`` (ns), publisher id ``p``, the plain fields ``f`` and one
``[field, key, dtype, shape]`` entry in ``a`` per array buffer. Array data is never copied
into the header: buffers go out as views of the numpy arrays and come back as arrays over
the received frames. Nothing here unpickles; every value of a received header is checked
before it is used, and any inconsistency raises :class:`DecodeError`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import msgpack
import numpy as np

from ark.errors import DecodeError, SchemaError
from ark.messages import ALLOWED_DTYPES, SchemaInfo, lookup_schema, schema_of

HEADER_LIMIT = 1 << 20  # a header above 1 MiB is malformed by construction

# Per-dtype lookups computed once (the keys are exactly ALLOWED_DTYPES, so a miss is a refusal).
_ITEMSIZE = {s: np.dtype(s).itemsize for s in ALLOWED_DTYPES}
_NP_DTYPE = {s: np.dtype(s) for s in ALLOWED_DTYPES}
_HEADER_TYPES = (("s", str), ("v", int), ("q", int), ("t", int), ("p", str), ("f", dict), ("a", list))
_tls = threading.local()  # one reusable msgpack Packer per thread (packb builds a new one per call)


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
    if arr.dtype.byteorder != ">":
        try:
            return memoryview(arr).cast("B")  # fast path: C-contiguous, non-empty
        except (TypeError, ValueError):
            pass
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
        dstr = arr.dtype.str.replace(">", "<")
        if dstr not in ALLOWED_DTYPES:
            raise SchemaError(f"{info.name}.{name}: dtype {arr.dtype} cannot be sent")
        arrays.append([name, None, dstr, list(arr.shape)])
        buffers.append(_as_bytes_view(arr))
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
        packer = _tls.packer
    except AttributeError:
        packer = _tls.packer = msgpack.Packer(use_bin_type=True)
    try:
        packed = packer.pack(header)  # same bytes as msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{info.name}: a field value cannot be encoded ({exc})") from None
    return [topic, packed, *buffers]


def _frame_bytes(frame: Any) -> Any:
    return frame.buffer if hasattr(frame, "buffer") else frame


def decode_header(frames: Sequence[Any], max_bytes: int | None = None) -> tuple[dict, list[memoryview], int]:
    """Validate the envelope of a received message: its header dict, buffers and total size."""
    if len(frames) < 2:
        raise DecodeError(f"malformed message: {len(frames)} frame(s), need at least 2")
    bufs = []
    for f in frames:
        try:
            bufs.append(memoryview(f))  # zmq.Frame, bytes, ...: straight to the buffer protocol
        except TypeError:
            bufs.append(memoryview(_frame_bytes(f)))
    total = 0
    for b in bufs:
        total += b.nbytes
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
    get = header.get
    if not (isinstance(get("s"), str) and isinstance(get("v"), int) and isinstance(get("q"), int)
            and isinstance(get("t"), int) and isinstance(get("p"), str) and isinstance(get("f"), dict)
            and isinstance(get("a"), list)):
        for key, tp in _HEADER_TYPES:  # slow path: name the first offending field
            if not isinstance(get(key), tp):
                raise DecodeError(f"malformed header: field {key!r} missing or not {tp.__name__}")
    entries = header["a"]
    if len(entries) != len(bufs) - 2:
        raise DecodeError(f"truncated message: header lists {len(entries)} buffers, got {len(bufs) - 2}")
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and (entry[1] is None or isinstance(entry[1], str)) and isinstance(entry[2], str)
                and isinstance(entry[3], list)):
            raise DecodeError("malformed header: bad array entry")
        shape = entry[3]
        count = 1
        for d in shape:
            if not (isinstance(d, int) and d >= 0):
                raise DecodeError("malformed header: bad array entry")
            count *= d
        itemsize = _ITEMSIZE.get(entry[2])
        if itemsize is None:
            raise DecodeError(f"malformed header: dtype {entry[2]!r} not allowed")
        need = count * itemsize
        buf = bufs[i + 2]
        if need != buf.nbytes:
            raise DecodeError(f"truncated buffer for {entry[0]}: {buf.nbytes} bytes, shape {tuple(shape)} {entry[2]} needs {need}")
    return header, bufs[2:], total


def arrays_from(header: dict, buffers: Sequence[memoryview]) -> list[tuple[str, str | None, np.ndarray]]:
    """Zero-copy arrays over the received buffers, as (field, key, array)."""
    return [
        (name, key, np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape))
        for (name, key, dtype, shape), buf in zip(header["a"], buffers)
    ]


_SPECS: dict[int, tuple[SchemaInfo, dict]] = {}


def _message_info(topic: str, schema: str, version: int, seq: int, stamp_ns: int, source: str,
                  nbytes: int) -> MessageInfo:
    """``MessageInfo(...)``, the same object, minus the frozen dataclass's seven object.__setattr__ calls."""
    info = object.__new__(MessageInfo)
    d = info.__dict__
    d["topic"], d["schema"], d["version"], d["seq"] = topic, schema, version, seq
    d["stamp_ns"], d["source"], d["nbytes"] = stamp_ns, source, nbytes
    return info


def _array_specs(info: SchemaInfo) -> dict:
    """``dict(info.array_fields)``, built once per schema (keyed by identity; the entry keeps it alive)."""
    hit = _SPECS.get(id(info))
    if hit is None or hit[0] is not info:
        hit = _SPECS[id(info)] = (info, dict(info.array_fields))
    return hit[1]


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
    specs = _array_specs(expected)
    for (name, key, dtype, shape), buf in zip(header["a"], buffers):
        # Zero-copy view over the frame; equals np.frombuffer(buf, dtype).reshape(shape) (the
        # size was checked in decode_header) in one call instead of two.
        arr = np.ndarray(shape, _NP_DTYPE[dtype], buf)
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
    try:
        topic = bytes(frames[0]).decode("utf-8", "replace")
    except TypeError:
        topic = bytes(_frame_bytes(frames[0])).decode("utf-8", "replace")
    return msg, _message_info(topic, header["s"], header["v"], header["q"], header["t"], header["p"], total)
