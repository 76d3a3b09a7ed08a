"""Messages and the wire format, including everything a hostile or broken peer can send."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from ark.errors import DecodeError, SchemaError
from ark.messages import (DictArrays, Float64Array, Image, JointState, NDArray, Pose, String, Twist, from_jsonable,
                          lookup_schema, to_jsonable)
from ark.wire import decode, encode


def roundtrip(msg, expected=None):
    frames = [bytes(f) for f in encode(b"/t", msg, 7, 123, "src")]
    return decode(frames, expected)


def test_roundtrip_preserves_fields_and_metadata():
    img = Image(np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), "bgr8", "cam0")
    out, info = roundtrip(img, lookup_schema("ark/Image"))
    assert np.array_equal(out.data, img.data) and out.encoding == "bgr8" and out.frame_id == "cam0"
    assert (info.topic, info.seq, info.stamp_ns, info.source, info.schema) == ("/t", 7, 123, "src", "ark/Image")
    js, _ = roundtrip(JointState(["a", "b"], np.array([1.0, 2.0]), np.zeros(2), np.zeros(2)))
    assert js.name == ["a", "b"] and js.position.tolist() == [1.0, 2.0]
    d, _ = roundtrip(DictArrays({"x": np.arange(3, dtype=np.int16), "y": np.eye(2)}, {"k": [1, "two"]}))
    assert d.arrays["x"].dtype == np.int16 and d.arrays["y"].shape == (2, 2) and d.meta == {"k": [1, "two"]}
    p, _ = roundtrip(Pose())
    assert p.orientation.tolist() == [0, 0, 0, 1]


def test_received_arrays_are_zero_copy_views():
    src = np.arange(10.0)
    frames = encode(b"/t", Float64Array(src), 1, 0, "s")
    assert np.shares_memory(np.frombuffer(frames[2], np.float64), src)  # sent without a copy
    out, _ = decode(frames)
    assert np.shares_memory(out.data, src)  # and decoded as a view of the frame


def test_encode_rejects_wrong_shape_and_dtype():
    with pytest.raises(SchemaError, match="expected shape"):
        encode(b"/t", Twist(np.zeros(4), np.zeros(3)), 1, 0, "s")
    with pytest.raises(SchemaError, match="expected dtype"):
        encode(b"/t", Float64Array(np.zeros(3, np.float32)), 1, 0, "s")
    with pytest.raises(SchemaError, match="expected str"):
        encode(b"/t", String(5), 1, 0, "s")
    with pytest.raises(SchemaError, match="cannot be sent"):
        encode(b"/t", NDArray(np.array([object()], dtype=object)), 1, 0, "s")


def _good():
    return [bytes(f) for f in encode(b"/t", Float64Array(np.arange(4.0)), 1, 0, "s")]


def _with_header(**changes):
    frames = _good()
    header = msgpack.unpackb(frames[1])
    header.update(changes)
    frames[1] = msgpack.packb(header)
    return frames


@pytest.mark.parametrize(
    "frames, message",
    [
        ([b"/t"], "need at least 2"),
        ([b"/t", b"\xc1garbage"], "malformed header"),
        ([b"/t", msgpack.packb([1, 2, 3])], "not a map"),
        ([b"/t", msgpack.packb({"s": "ark/Float64Array"})], "missing"),
        (_good()[:2], "truncated message"),
        (_good()[:2] + [_good()[2][:-8]], "truncated buffer"),
        (_with_header(a=[["data", None, "|O", [4]]]), "not allowed"),
        (_with_header(a=[["data", None, "<f8", [5]]]), "truncated buffer"),
        (_with_header(a=[["data", None, "<f8", [-4]]]), "bad array entry"),
        (_with_header(s="ark/Nope"), "unknown schema"),
        (_with_header(v=99), "schema mismatch"),
        (_with_header(a=[["data", None, "<i8", [4]]]), "expected dtype"),
        (_with_header(a=[["other", None, "<f8", [4]]]), "unexpected array field"),
    ],
)
def test_malformed_frames_raise_decode_error(frames, message):
    with pytest.raises(DecodeError, match=message):
        decode(frames)


def test_wrong_plain_field_type_and_oversize_are_rejected():
    frames = [bytes(f) for f in encode(b"/t", String("hi"), 1, 0, "s")]
    h = msgpack.unpackb(frames[1])
    h["f"]["data"] = 12
    with pytest.raises(DecodeError, match="expected str"):
        decode([frames[0], msgpack.packb(h)])
    with pytest.raises(DecodeError, match="oversized"):
        decode(_good(), max_bytes=10)
    with pytest.raises(DecodeError, match="schema mismatch"):
        decode(frames, lookup_schema("ark/Image"))


def test_json_helpers_roundtrip_and_name_bad_fields():
    msg = from_jsonable("ark/Twist", {"linear": [1, 0, 0]})
    assert msg.linear.dtype == np.float64 and to_jsonable(msg)["linear"] == [1.0, 0.0, 0.0]
    with pytest.raises(SchemaError, match="unknown field"):
        from_jsonable("ark/Twist", {"speed": 1})
    with pytest.raises(SchemaError, match="unknown schema"):
        from_jsonable("ark/Nope", {})


def test_custom_schema_with_declared_array():
    from dataclasses import dataclass

    from ark.messages import array, message

    @message("test/Wrench", version=2)
    @dataclass
    class Wrench:
        force: np.ndarray = array("float64", (3,))
        label: str = ""

    out, info = roundtrip(Wrench(np.ones(3), "w"))
    assert isinstance(out, Wrench) and info.version == 2 and out.force.tolist() == [1, 1, 1]
