"""Ark schemas for ROS 2 types that Ark's runtime has no schema of its own for.

They are ordinary Ark messages (``@ark.message``) named ``ros/<Type>``; the bridge converts
them to and from their ROS 2 counterparts. Stamps are not fields: they travel as the Ark
message's publisher stamp (``MessageInfo.stamp_ns``), as for every Ark message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ark.messages import ArraySpec, array, message


def _fixed(dtype: str, shape: tuple[int, ...], fill: np.ndarray | None = None) -> object:
    """An array field of one exact shape whose default is zeros (or ``fill``)."""
    spec = ArraySpec(np.dtype(dtype), shape)
    return field(default_factory=lambda: np.zeros(shape, dtype) if fill is None else fill.astype(dtype).copy(),
                 metadata={"ark_array": spec})


_IDENTITY_Q = np.array([0.0, 0.0, 0.0, 1.0])


@message("ros/CompressedImage")
@dataclass
class CompressedImage:
    """An encoded image (``format``: jpeg, png, …) as its compressed bytes."""

    data: np.ndarray = array("uint8", (None,))
    format: str = "jpeg"
    frame_id: str = ""


@message("ros/CameraInfo")
@dataclass
class CameraInfo:
    """Camera calibration: intrinsics ``k`` (3×3), rectification ``r`` (3×3), projection ``p`` (3×4), distortion ``d``.

    ``roi`` is ``[x_offset, y_offset, height, width]``.
    """

    width: int = 0
    height: int = 0
    distortion_model: str = ""
    d: np.ndarray = array("float64", (None,))
    k: np.ndarray = _fixed("float64", (3, 3))
    r: np.ndarray = _fixed("float64", (3, 3))
    p: np.ndarray = _fixed("float64", (3, 4))
    binning_x: int = 0
    binning_y: int = 0
    roi: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    roi_do_rectify: bool = False
    frame_id: str = ""


@message("ros/PointCloud")
@dataclass
class PointCloud:
    """A point cloud as one array per point field (``x``, ``y``, ``z``, ``intensity``, ``rgb``, …).

    Each array has shape (N,) for an unorganised cloud or (H, W) for an organised one, with a
    trailing dimension when a field has count > 1. Fields keep their order.
    """

    fields: dict[str, np.ndarray] = field(default_factory=dict)
    is_dense: bool = True
    frame_id: str = ""


@message("ros/Imu")
@dataclass
class Imu:
    """Orientation quaternion (x, y, z, w), angular velocity (rad/s), linear acceleration (m/s²), each with a 3×3 covariance."""

    orientation: np.ndarray = _fixed("float64", (4,), _IDENTITY_Q)
    orientation_covariance: np.ndarray = _fixed("float64", (3, 3))
    angular_velocity: np.ndarray = _fixed("float64", (3,))
    angular_velocity_covariance: np.ndarray = _fixed("float64", (3, 3))
    linear_acceleration: np.ndarray = _fixed("float64", (3,))
    linear_acceleration_covariance: np.ndarray = _fixed("float64", (3, 3))
    frame_id: str = ""


@message("ros/Transform")
@dataclass
class Transform:
    """The pose of ``child_frame_id`` in ``frame_id``: translation (m) and rotation quaternion (x, y, z, w)."""

    translation: np.ndarray = _fixed("float64", (3,))
    rotation: np.ndarray = _fixed("float64", (4,), _IDENTITY_Q)
    frame_id: str = ""
    child_frame_id: str = ""


@message("ros/TFMessage")
@dataclass
class TFMessage:
    """A batch of N transforms (tf2): row i of ``translations`` (N×3) and ``rotations`` (N×4) is ``child_frame_ids[i]`` in ``frame_ids[i]``."""

    translations: np.ndarray = array("float64", (None, 3))
    rotations: np.ndarray = array("float64", (None, 4))
    stamps_ns: np.ndarray = array("int64", (None,))
    frame_ids: list[str] = field(default_factory=list)
    child_frame_ids: list[str] = field(default_factory=list)


@message("ros/Odometry")
@dataclass
class Odometry:
    """Pose of ``child_frame_id`` in ``frame_id`` and its twist in ``child_frame_id``, each with a 6×6 covariance."""

    position: np.ndarray = _fixed("float64", (3,))
    orientation: np.ndarray = _fixed("float64", (4,), _IDENTITY_Q)
    pose_covariance: np.ndarray = _fixed("float64", (6, 6))
    linear: np.ndarray = _fixed("float64", (3,))
    angular: np.ndarray = _fixed("float64", (3,))
    twist_covariance: np.ndarray = _fixed("float64", (6, 6))
    frame_id: str = ""
    child_frame_id: str = ""
