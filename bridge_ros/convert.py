"""Conversions between Ark messages and ROS 2 messages (``rosbags`` message objects).

A :class:`Converter` pairs one ROS 2 type with one Ark schema. ROS → Ark keeps arrays as
numpy views over the received CDR payload wherever the layout allows (images with no row
padding, joint states, scans, point-cloud fields as strided views), so a frame goes from
DDS to the Ark wire without a copy in Python. ROS header stamps become the Ark message's
publisher stamp and back.

The hottest types (``JointState``, ``Image``) also convert straight from CDR bytes
(:attr:`Converter.from_cdr`, on :mod:`bridge_ros.cdr_fast`), skipping the rosbags message
object; the result is the same Ark message, and anything those readers do not take goes
the general way.

Any ROS type without a dedicated converter (custom ``.msg`` types included) can travel as
``ark/DictArrays`` through :func:`generic_converter`: numeric array fields (outside lists)
become named arrays ``"field.sub"``, everything else a JSON-like ``meta`` tree.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from rosbags.interfaces import Nodetype

from ark.errors import ArkError
from ark.messages import (Bool, DictArrays, Float64Array, Image, JointState, LaserScan, Pose, String, Twist,
                          schema_of)
from bridge_ros.cdr import NUMPY_OF, RosTypes, normalize_type
from bridge_ros.cdr_fast import read_image, read_joint_state
from bridge_ros.messages import CameraInfo, CompressedImage, Imu, Odometry, PointCloud, TFMessage, Transform

_LITTLE = sys.byteorder == "little"


class ConvertError(ArkError):
    """A message cannot be converted (unsupported image encoding, inconsistent sizes, …)."""


ToArk = Callable[[Any], "tuple[Any, int | None]"]
ToRos = Callable[[Any, int, RosTypes], Any]
FromCdr = Callable[[Any], "tuple[Any, int | None]"]


@dataclass(frozen=True)
class Converter:
    """How one ROS 2 type maps to one Ark schema, in both directions."""

    ros_type: str
    ark_schema: type
    to_ark: ToArk  # ROS message → (Ark message, stamp ns or None)
    to_ros: ToRos  # (Ark message, stamp ns, type store) → ROS message
    # Optional shortcut: CDR bytes → (Ark message, stamp ns), equal to to_ark(deserialize(bytes)).
    # It may raise on anything it does not take; callers then use the general path.
    from_cdr: FromCdr | None = None

    @property
    def ark_name(self) -> str:
        return schema_of(self.ark_schema).name


CONVERTERS: dict[str, Converter] = {}


def register_converter(conv: Converter) -> Converter:
    """Make ``conv`` the converter of its ROS type (replacing a built-in one)."""
    CONVERTERS[normalize_type(conv.ros_type)] = conv
    return conv


def converter_for(ros_type: str, ark_schema: str | None = None, types: RosTypes | None = None) -> Converter:
    """The converter for ``ros_type`` (to ``ark_schema`` when given; ``ark/DictArrays`` is always possible)."""
    ros_type = normalize_type(ros_type)
    conv = CONVERTERS.get(ros_type)
    if ark_schema in (None, conv.ark_name if conv else None):
        if conv is not None:
            return conv
        if ark_schema is None and types is not None and types.has(ros_type):
            return generic_converter(ros_type)
        raise ConvertError(f"no Ark conversion for ROS type {ros_type} (known: {', '.join(sorted(CONVERTERS))}; "
                           "or set ark_type: ark/DictArrays)")
    if ark_schema == "ark/DictArrays":
        return generic_converter(ros_type)
    want = conv.ark_name if conv else "ark/DictArrays"
    raise ConvertError(f"ROS type {ros_type} converts to {want} or ark/DictArrays, not {ark_schema}")


def default_ros_type(ark_schema: str) -> str | None:
    """The ROS 2 type an Ark schema exports to by default (first converter that produces it)."""
    preferred = {"ark/Pose": "geometry_msgs/msg/PoseStamped"}  # keeps frame_id and stamp
    if ark_schema in preferred:
        return preferred[ark_schema]
    for name, conv in CONVERTERS.items():
        if conv.ark_name == ark_schema:
            return name
    return None


# ----------------------------------------------------------------------------------------
# Shared pieces


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def make_header(types: RosTypes, stamp: int, frame_id: str) -> Any:
    sec, nsec = divmod(int(stamp), 1_000_000_000)
    return types.make("std_msgs/msg/Header", stamp=types.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec),
                      frame_id=frame_id)


def _vec(v: Any) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def _quat(q: Any) -> np.ndarray:
    return np.array([q.x, q.y, q.z, q.w], dtype=np.float64)


def _ros_vec(types: RosTypes, name: str, a: np.ndarray) -> Any:
    x, y, z = (float(v) for v in np.asarray(a, dtype=np.float64).reshape(3))
    return types.make(name, x=x, y=y, z=z)


def _ros_quat(types: RosTypes, a: np.ndarray) -> Any:
    x, y, z, w = (float(v) for v in np.asarray(a, dtype=np.float64).reshape(4))
    return types.make("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


def _f64(a: Any, n: int) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise ConvertError(f"expected {n} values, got {arr.size}")
    return arr


def _native(arr: np.ndarray, big_endian: bool) -> np.ndarray:
    """``arr`` in host byte order (a copy only when the sender's order differs)."""
    if arr.dtype.itemsize > 1 and big_endian == _LITTLE:
        return arr.byteswap()  # a new array: the sender's byte order differs from ours
    return arr


# ----------------------------------------------------------------------------------------
# sensor_msgs/Image

# ROS encoding → (dtype, channels). Ark uses the same names, except depth32f for 32FC1.
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("uint8", 3), "bgr8": ("uint8", 3), "rgba8": ("uint8", 4), "bgra8": ("uint8", 4),
    "mono8": ("uint8", 1), "mono16": ("uint16", 1), "rgb16": ("uint16", 3), "bgr16": ("uint16", 3),
    "rgba16": ("uint16", 4), "bgra16": ("uint16", 4),
    "bayer_rggb8": ("uint8", 1), "bayer_bggr8": ("uint8", 1), "bayer_gbrg8": ("uint8", 1), "bayer_grbg8": ("uint8", 1),
    "bayer_rggb16": ("uint16", 1), "bayer_bggr16": ("uint16", 1), "bayer_gbrg16": ("uint16", 1),
    "bayer_grbg16": ("uint16", 1),
}
_CV_DEPTHS = {"8U": "uint8", "8S": "int8", "16U": "uint16", "16S": "int16", "32S": "int32", "32F": "float32",
              "64F": "float64"}
for _depth, _dt in _CV_DEPTHS.items():
    for _c in (1, 2, 3, 4):
        IMAGE_ENCODINGS[f"{_depth}C{_c}"] = (_dt, _c)
_ARK_TO_ROS_ENCODING = {"depth32f": "32FC1", "depth16": "16UC1"}
_ROS_TO_ARK_ENCODING = {"32FC1": "depth32f"}


def _image_to_ark(m: Any) -> tuple[Image, int]:
    return _image(m.encoding, int(m.height), int(m.width), int(m.step), m.data, bool(m.is_bigendian),
                  m.header.frame_id), stamp_ns(m.header)


def _image_from_cdr(data: Any) -> tuple[Image, int]:
    sec, nanosec, frame_id, h, w, enc, big, step, raw = read_image(data)
    return _image(enc, h, w, step, raw, bool(big), frame_id), sec * 1_000_000_000 + nanosec


def _image(enc: str, h: int, w: int, step: int, raw: np.ndarray, big_endian: bool, frame_id: str) -> Image:
    if enc not in IMAGE_ENCODINGS:
        raise ConvertError(f"sensor_msgs/Image: unsupported encoding {enc!r}")
    dtype, ch = IMAGE_ENCODINGS[enc]
    dt = np.dtype(dtype)
    row = w * ch * dt.itemsize
    if step < row or raw.size < h * step - (step - row):
        raise ConvertError(f"sensor_msgs/Image: {raw.size} data bytes too few for {h}x{w} {enc} with step {step}")
    if step == row:
        arr = raw[: h * row].view(dt).reshape(h, w, ch)  # a view over the CDR payload
    else:  # padded rows: a strided view, still no copy
        arr = np.lib.stride_tricks.as_strided(raw, shape=(h, row), strides=(step, 1)).view(dt).reshape(h, w, ch)
    if ch == 1:
        arr = arr.reshape(h, w)
    arr = _native(arr, big_endian)
    return Image(data=arr, encoding=_ROS_TO_ARK_ENCODING.get(enc, enc), frame_id=frame_id)


def _image_to_ros(a: Image, stamp: int, types: RosTypes) -> Any:
    arr = np.asarray(a.data)
    enc = _ARK_TO_ROS_ENCODING.get(a.encoding, a.encoding)
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    if enc in IMAGE_ENCODINGS:
        dtype, want_ch = IMAGE_ENCODINGS[enc]
        if arr.dtype != np.dtype(dtype) or ch != want_ch:
            raise ConvertError(f"ark/Image: encoding {a.encoding} needs {dtype} with {want_ch} channel(s), "
                               f"got {arr.dtype} with {ch}")
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return types.make("sensor_msgs/msg/Image", header=make_header(types, stamp, a.frame_id), height=h, width=w,
                      encoding=enc, is_bigendian=0, step=w * ch * arr.dtype.itemsize,
                      data=arr.reshape(-1).view(np.uint8))


# ----------------------------------------------------------------------------------------
# sensor_msgs: CompressedImage, CameraInfo, JointState, LaserScan, PointCloud2, Imu


def _compressed_to_ark(m: Any) -> tuple[CompressedImage, int]:
    return CompressedImage(data=m.data, format=m.format, frame_id=m.header.frame_id), stamp_ns(m.header)


def _compressed_to_ros(a: CompressedImage, stamp: int, types: RosTypes) -> Any:
    return types.make("sensor_msgs/msg/CompressedImage", header=make_header(types, stamp, a.frame_id),
                      format=a.format, data=np.ascontiguousarray(a.data, dtype=np.uint8).reshape(-1))


def _camera_info_to_ark(m: Any) -> tuple[CameraInfo, int]:
    roi = m.roi
    return CameraInfo(width=int(m.width), height=int(m.height), distortion_model=m.distortion_model, d=m.d,
                      k=m.k.reshape(3, 3), r=m.r.reshape(3, 3), p=m.p.reshape(3, 4), binning_x=int(m.binning_x),
                      binning_y=int(m.binning_y),
                      roi=[int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width)],
                      roi_do_rectify=bool(roi.do_rectify), frame_id=m.header.frame_id), stamp_ns(m.header)


def _camera_info_to_ros(a: CameraInfo, stamp: int, types: RosTypes) -> Any:
    if len(a.roi) != 4:
        raise ConvertError(f"ros/CameraInfo.roi: expected [x_offset, y_offset, height, width], got {a.roi}")
    x, y, h, w = (int(v) for v in a.roi)
    roi = types.make("sensor_msgs/msg/RegionOfInterest", x_offset=x, y_offset=y, height=h, width=w,
                     do_rectify=bool(a.roi_do_rectify))
    return types.make("sensor_msgs/msg/CameraInfo", header=make_header(types, stamp, a.frame_id), height=int(a.height),
                      width=int(a.width), distortion_model=a.distortion_model,
                      d=np.ascontiguousarray(a.d, dtype=np.float64).reshape(-1), k=_f64(a.k, 9), r=_f64(a.r, 9),
                      p=_f64(a.p, 12), binning_x=int(a.binning_x), binning_y=int(a.binning_y), roi=roi)


def _joint_state_to_ark(m: Any) -> tuple[JointState, int]:
    return JointState(name=list(m.name), position=m.position, velocity=m.velocity, effort=m.effort), stamp_ns(m.header)


def _joint_state_from_cdr(data: Any) -> tuple[JointState, int]:
    sec, nanosec, names, position, velocity, effort = read_joint_state(data)
    return JointState(name=names, position=position, velocity=velocity, effort=effort), sec * 1_000_000_000 + nanosec


def _joint_state_to_ros(a: JointState, stamp: int, types: RosTypes) -> Any:
    return types.make("sensor_msgs/msg/JointState", header=make_header(types, stamp, ""), name=list(a.name),
                      position=np.asarray(a.position, np.float64), velocity=np.asarray(a.velocity, np.float64),
                      effort=np.asarray(a.effort, np.float64))


def _scan_to_ark(m: Any) -> tuple[LaserScan, int]:
    return LaserScan(ranges=m.ranges, angle_min=float(m.angle_min), angle_max=float(m.angle_max),
                     angle_increment=float(m.angle_increment), range_min=float(m.range_min),
                     range_max=float(m.range_max), frame_id=m.header.frame_id), stamp_ns(m.header)


def _scan_to_ros(a: LaserScan, stamp: int, types: RosTypes) -> Any:
    return types.make("sensor_msgs/msg/LaserScan", header=make_header(types, stamp, a.frame_id),
                      angle_min=a.angle_min, angle_max=a.angle_max, angle_increment=a.angle_increment,
                      range_min=a.range_min, range_max=a.range_max, ranges=np.asarray(a.ranges, np.float32),
                      intensities=np.zeros(0, np.float32))


_POINT_DTYPES = {1: "int8", 2: "uint8", 3: "int16", 4: "uint16", 5: "int32", 6: "uint32", 7: "float32", 8: "float64"}
_POINT_CODES = {np.dtype(v): k for k, v in _POINT_DTYPES.items()}


def _cloud_to_ark(m: Any) -> tuple[PointCloud, int]:
    h, w, step, row_step = int(m.height), int(m.width), int(m.point_step), int(m.row_step)
    raw = m.data
    if h and w and raw.size < (h - 1) * row_step + w * step:
        raise ConvertError(f"sensor_msgs/PointCloud2: {raw.size} data bytes too few for {h}x{w} points")
    fields: dict[str, np.ndarray] = {}
    for f in m.fields:
        if f.datatype not in _POINT_DTYPES:
            raise ConvertError(f"sensor_msgs/PointCloud2: field {f.name!r} has unknown datatype {f.datatype}")
        dt = np.dtype(_POINT_DTYPES[f.datatype]).newbyteorder(">" if m.is_bigendian else "<")
        count = max(int(f.count), 1)
        if int(f.offset) + count * dt.itemsize > step:
            raise ConvertError(f"sensor_msgs/PointCloud2: field {f.name!r} lies outside point_step {step}")
        shape: tuple[int, ...] = (h, w) if h > 1 else (w,)
        strides: tuple[int, ...] = (row_step, step) if h > 1 else (step,)
        if count > 1:
            shape, strides = shape + (count,), strides + (dt.itemsize,)
        # A strided view straight over the payload (numpy allows the unaligned offset).
        arr = np.ndarray(shape, dt, buffer=raw, offset=int(f.offset), strides=strides) if h * w else np.zeros(shape, dt)
        fields[f.name] = arr if dt.isnative else arr.astype(dt.newbyteorder("="))
    return PointCloud(fields=fields, is_dense=bool(m.is_dense), frame_id=m.header.frame_id), stamp_ns(m.header)


def _cloud_to_ros(a: PointCloud, stamp: int, types: RosTypes) -> Any:
    arrays = {k: np.asarray(v) for k, v in a.fields.items()}
    if not arrays:
        raise ConvertError("ros/PointCloud: no fields")
    first = next(iter(arrays.values()))
    # Organised (H, W) when every field has the same two leading dimensions; else (N,).
    lead = 2 if all(v.ndim >= 2 and v.shape[:2] == first.shape[:2] for v in arrays.values()) else 1
    points = first.shape[:lead]
    layout, pfields, offset = [], [], 0
    for name, arr in arrays.items():
        code = _POINT_CODES.get(arr.dtype.newbyteorder("="))
        if code is None:
            raise ConvertError(f"ros/PointCloud.fields[{name!r}]: dtype {arr.dtype} has no PointField datatype")
        if arr.ndim < lead or arr.shape[:lead] != points:
            raise ConvertError(f"ros/PointCloud.fields[{name!r}]: shape {arr.shape} does not match {first.shape}")
        count = int(np.prod(arr.shape[lead:], dtype=np.int64))
        dt = arr.dtype.newbyteorder("<")
        layout.append((name, dt, (count,) if count > 1 else ()))
        pfields.append(types.make("sensor_msgs/msg/PointField", name=name, offset=offset, datatype=code, count=count))
        offset += dt.itemsize * count
    h, w = points if lead == 2 else (1, points[0])
    packed = np.empty(h * w, dtype=np.dtype([(n, d, s) for n, d, s in layout]))
    for name, _, shape in layout:
        packed[name] = arrays[name].reshape((h * w,) + shape)
    return types.make("sensor_msgs/msg/PointCloud2", header=make_header(types, stamp, a.frame_id), height=h, width=w,
                      fields=pfields, is_bigendian=False, point_step=offset, row_step=offset * w,
                      data=packed.view(np.uint8).reshape(-1), is_dense=bool(a.is_dense))


def _imu_to_ark(m: Any) -> tuple[Imu, int]:
    return Imu(orientation=_quat(m.orientation), orientation_covariance=m.orientation_covariance.reshape(3, 3),
               angular_velocity=_vec(m.angular_velocity),
               angular_velocity_covariance=m.angular_velocity_covariance.reshape(3, 3),
               linear_acceleration=_vec(m.linear_acceleration),
               linear_acceleration_covariance=m.linear_acceleration_covariance.reshape(3, 3),
               frame_id=m.header.frame_id), stamp_ns(m.header)


def _imu_to_ros(a: Imu, stamp: int, types: RosTypes) -> Any:
    v3 = "geometry_msgs/msg/Vector3"
    return types.make("sensor_msgs/msg/Imu", header=make_header(types, stamp, a.frame_id),
                      orientation=_ros_quat(types, a.orientation), orientation_covariance=_f64(a.orientation_covariance, 9),
                      angular_velocity=_ros_vec(types, v3, a.angular_velocity),
                      angular_velocity_covariance=_f64(a.angular_velocity_covariance, 9),
                      linear_acceleration=_ros_vec(types, v3, a.linear_acceleration),
                      linear_acceleration_covariance=_f64(a.linear_acceleration_covariance, 9))


# ----------------------------------------------------------------------------------------
# geometry_msgs, tf2_msgs, nav_msgs


def _twist_to_ark(m: Any) -> tuple[Twist, None]:
    return Twist(linear=_vec(m.linear), angular=_vec(m.angular)), None


def _twist_to_ros(a: Twist, stamp: int, types: RosTypes) -> Any:
    v3 = "geometry_msgs/msg/Vector3"
    return types.make("geometry_msgs/msg/Twist", linear=_ros_vec(types, v3, a.linear),
                      angular=_ros_vec(types, v3, a.angular))


def _ros_pose(types: RosTypes, position: np.ndarray, orientation: np.ndarray) -> Any:
    return types.make("geometry_msgs/msg/Pose", position=_ros_vec(types, "geometry_msgs/msg/Point", position),
                      orientation=_ros_quat(types, orientation))


def _pose_to_ark(m: Any) -> tuple[Pose, None]:
    return Pose(position=_vec(m.position), orientation=_quat(m.orientation)), None


def _pose_to_ros(a: Pose, stamp: int, types: RosTypes) -> Any:
    return _ros_pose(types, a.position, a.orientation)


def _pose_stamped_to_ark(m: Any) -> tuple[Pose, int]:
    p = m.pose
    return Pose(position=_vec(p.position), orientation=_quat(p.orientation), frame_id=m.header.frame_id), \
        stamp_ns(m.header)


def _pose_stamped_to_ros(a: Pose, stamp: int, types: RosTypes) -> Any:
    return types.make("geometry_msgs/msg/PoseStamped", header=make_header(types, stamp, a.frame_id),
                      pose=_ros_pose(types, a.position, a.orientation))


def _ros_transform(types: RosTypes, translation: np.ndarray, rotation: np.ndarray) -> Any:
    return types.make("geometry_msgs/msg/Transform",
                      translation=_ros_vec(types, "geometry_msgs/msg/Vector3", translation),
                      rotation=_ros_quat(types, rotation))


def _transform_to_ark(m: Any) -> tuple[Transform, int]:
    t = m.transform
    return Transform(translation=_vec(t.translation), rotation=_quat(t.rotation), frame_id=m.header.frame_id,
                     child_frame_id=m.child_frame_id), stamp_ns(m.header)


def _transform_to_ros(a: Transform, stamp: int, types: RosTypes) -> Any:
    return types.make("geometry_msgs/msg/TransformStamped", header=make_header(types, stamp, a.frame_id),
                      child_frame_id=a.child_frame_id, transform=_ros_transform(types, a.translation, a.rotation))


def _tf_to_ark(m: Any) -> tuple[TFMessage, int | None]:
    ts = m.transforms
    n = len(ts)
    translations = np.empty((n, 3))
    rotations = np.empty((n, 4))
    stamps = np.empty(n, np.int64)
    for i, t in enumerate(ts):
        translations[i] = _vec(t.transform.translation)
        rotations[i] = _quat(t.transform.rotation)
        stamps[i] = stamp_ns(t.header)
    msg = TFMessage(translations=translations, rotations=rotations, stamps_ns=stamps,
                    frame_ids=[t.header.frame_id for t in ts], child_frame_ids=[t.child_frame_id for t in ts])
    return msg, int(stamps.max()) if n else None


def _tf_to_ros(a: TFMessage, stamp: int, types: RosTypes) -> Any:
    n = len(a.frame_ids)
    if not (len(a.child_frame_ids) == n and len(a.translations) == n and len(a.rotations) == n):
        raise ConvertError(f"ros/TFMessage: {n} frame_ids but {len(a.child_frame_ids)} child_frame_ids, "
                           f"{len(a.translations)} translations, {len(a.rotations)} rotations")
    stamps = a.stamps_ns if len(a.stamps_ns) == n else np.full(n, stamp, np.int64)
    transforms = [types.make("geometry_msgs/msg/TransformStamped",
                             header=make_header(types, int(stamps[i]), a.frame_ids[i]),
                             child_frame_id=a.child_frame_ids[i],
                             transform=_ros_transform(types, a.translations[i], a.rotations[i])) for i in range(n)]
    return types.make("tf2_msgs/msg/TFMessage", transforms=transforms)


def _odom_to_ark(m: Any) -> tuple[Odometry, int]:
    pose, twist = m.pose, m.twist
    return Odometry(position=_vec(pose.pose.position), orientation=_quat(pose.pose.orientation),
                    pose_covariance=pose.covariance.reshape(6, 6), linear=_vec(twist.twist.linear),
                    angular=_vec(twist.twist.angular), twist_covariance=twist.covariance.reshape(6, 6),
                    frame_id=m.header.frame_id, child_frame_id=m.child_frame_id), stamp_ns(m.header)


def _odom_to_ros(a: Odometry, stamp: int, types: RosTypes) -> Any:
    pose = types.make("geometry_msgs/msg/PoseWithCovariance", pose=_ros_pose(types, a.position, a.orientation),
                      covariance=_f64(a.pose_covariance, 36))
    twist = types.make("geometry_msgs/msg/TwistWithCovariance",
                       twist=_twist_to_ros(Twist(linear=a.linear, angular=a.angular), stamp, types),
                       covariance=_f64(a.twist_covariance, 36))
    return types.make("nav_msgs/msg/Odometry", header=make_header(types, stamp, a.frame_id),
                      child_frame_id=a.child_frame_id, pose=pose, twist=twist)


# ----------------------------------------------------------------------------------------
# std_msgs


def _string_to_ark(m: Any) -> tuple[String, None]:
    return String(data=m.data), None


def _string_to_ros(a: String, stamp: int, types: RosTypes) -> Any:
    return types.make("std_msgs/msg/String", data=a.data)


def _bool_to_ark(m: Any) -> tuple[Bool, None]:
    return Bool(data=bool(m.data)), None


def _bool_to_ros(a: Bool, stamp: int, types: RosTypes) -> Any:
    return types.make("std_msgs/msg/Bool", data=bool(a.data))


def _f64_array_to_ark(m: Any) -> tuple[Float64Array, None]:
    data = m.data[int(m.layout.data_offset):]
    shape = tuple(int(d.size) for d in m.layout.dim)
    if shape and int(np.prod(shape, dtype=np.int64)) == data.size:
        data = data.reshape(shape)
    return Float64Array(data=data), None


def _f64_array_to_ros(a: Float64Array, stamp: int, types: RosTypes) -> Any:
    arr = np.ascontiguousarray(a.data, dtype=np.float64)
    dims, stride = [], int(arr.size)
    for i, size in enumerate(arr.shape):
        dims.append(types.make("std_msgs/msg/MultiArrayDimension", label=f"dim{i}", size=int(size), stride=stride))
        stride = stride // size if size else 0
    layout = types.make("std_msgs/msg/MultiArrayLayout", dim=dims, data_offset=0)
    return types.make("std_msgs/msg/Float64MultiArray", layout=layout, data=arr.reshape(-1))


for _conv in (
    Converter("sensor_msgs/msg/Image", Image, _image_to_ark, _image_to_ros, _image_from_cdr),
    Converter("sensor_msgs/msg/CompressedImage", CompressedImage, _compressed_to_ark, _compressed_to_ros),
    Converter("sensor_msgs/msg/CameraInfo", CameraInfo, _camera_info_to_ark, _camera_info_to_ros),
    Converter("sensor_msgs/msg/JointState", JointState, _joint_state_to_ark, _joint_state_to_ros,
              _joint_state_from_cdr),
    Converter("sensor_msgs/msg/LaserScan", LaserScan, _scan_to_ark, _scan_to_ros),
    Converter("sensor_msgs/msg/PointCloud2", PointCloud, _cloud_to_ark, _cloud_to_ros),
    Converter("sensor_msgs/msg/Imu", Imu, _imu_to_ark, _imu_to_ros),
    Converter("geometry_msgs/msg/Twist", Twist, _twist_to_ark, _twist_to_ros),
    Converter("geometry_msgs/msg/Pose", Pose, _pose_to_ark, _pose_to_ros),
    Converter("geometry_msgs/msg/PoseStamped", Pose, _pose_stamped_to_ark, _pose_stamped_to_ros),
    Converter("geometry_msgs/msg/TransformStamped", Transform, _transform_to_ark, _transform_to_ros),
    Converter("tf2_msgs/msg/TFMessage", TFMessage, _tf_to_ark, _tf_to_ros),
    Converter("nav_msgs/msg/Odometry", Odometry, _odom_to_ark, _odom_to_ros),
    Converter("std_msgs/msg/String", String, _string_to_ark, _string_to_ros),
    Converter("std_msgs/msg/Bool", Bool, _bool_to_ark, _bool_to_ros),
    Converter("std_msgs/msg/Float64MultiArray", Float64Array, _f64_array_to_ark, _f64_array_to_ros),
):
    register_converter(_conv)


# ----------------------------------------------------------------------------------------
# Any type ⇄ ark/DictArrays


def _field_names(m: Any) -> list[str]:
    """The message fields of a rosbags object: its constants and ``__msgtype__`` are dataclass
    fields too (with defaults), while every message field is a required argument."""
    return [f.name for f in dataclasses.fields(m) if f.default is dataclasses.MISSING]


def _plain(value: Any) -> Any:
    """A JSON-like form of a ROS value (nested messages as dicts, arrays as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__msgtype__"):
        return {name: _plain(getattr(value, name)) for name in _field_names(value)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def generic_converter(ros_type: str) -> Converter:
    """A converter between ``ros_type`` (any known type) and ``ark/DictArrays``."""
    ros_type = normalize_type(ros_type)

    def to_ark(m: Any) -> tuple[DictArrays, int | None]:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        _split(m, "", arrays, meta)
        header = getattr(m, "header", None)
        stamp = stamp_ns(header) if header is not None and hasattr(header, "stamp") else None
        return DictArrays(arrays=arrays, meta=meta), stamp

    def to_ros(a: DictArrays, stamp: int, types: RosTypes) -> Any:
        used: set[str] = set()
        msg = _build(types, ros_type, "", a.arrays, a.meta, stamp, used)
        extra = set(a.arrays) - used
        if extra:
            raise ConvertError(f"ark/DictArrays -> {ros_type}: no numeric array field(s) {', '.join(sorted(extra))}")
        return msg

    return Converter(ros_type, DictArrays, to_ark, to_ros)


def _split(m: Any, prefix: str, arrays: dict, meta: dict) -> None:
    for name in _field_names(m):
        value = getattr(m, name)
        if isinstance(value, np.ndarray):
            arrays[prefix + name] = value
        elif hasattr(value, "__msgtype__"):
            sub: dict[str, Any] = {}
            _split(value, f"{prefix}{name}.", arrays, sub)
            meta[name] = sub
        else:
            meta[name] = _plain(value)


def _build(types: RosTypes, name: str, prefix: str, arrays: dict, meta: Any, stamp: int, used: set) -> Any:
    """A ``name`` message from DictArrays parts; every array and meta key must name one of its fields."""
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ConvertError(f"ark/DictArrays -> {name}: meta{'.' + prefix.rstrip('.') if prefix else ''} "
                           f"must be a mapping, got {type(meta).__name__}")
    fields = types.fields(name)
    unknown = set(meta) - {f for f, _ in fields}
    if unknown:
        raise ConvertError(f"ark/DictArrays -> {name}: no field(s) {', '.join(sorted(prefix + k for k in unknown))}")
    values: dict[str, Any] = {}
    for fname, (kind, args) in fields:
        path = prefix + fname
        if kind == Nodetype.NAME:
            if args == "std_msgs/msg/Header" and fname not in meta:
                values[fname] = make_header(types, stamp, "")
            else:
                values[fname] = _build(types, args, path + ".", arrays, meta.get(fname), stamp, used)
        elif kind == Nodetype.BASE:
            if fname in meta:
                values[fname] = meta[fname]
        else:
            (subkind, subargs), count = args
            if subkind == Nodetype.NAME:
                values[fname] = [_build(types, subargs, "", {}, item, stamp, set()) for item in meta.get(fname, [])]
            elif subargs[0] == "string":
                if fname in meta:
                    values[fname] = list(meta[fname])
            else:
                src = arrays.get(path, meta.get(fname))
                if path in arrays:
                    used.add(path)
                if src is not None:
                    arr = np.asarray(src, dtype=NUMPY_OF[subargs[0]]).reshape(-1)
                    if kind == Nodetype.ARRAY and arr.size != count:
                        raise ConvertError(f"{name}.{fname}: expected {count} values, got {arr.size}")
                    values[fname] = arr
    return types.make(name, **values)


