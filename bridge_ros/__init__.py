"""ROS 2 interoperability without a ROS installation: CDR types, live bridge, rosbag2 export.

Layers (each a module):

- ``cdr``: ROS 2 types of Humble or Jazzy (``rosbags`` type store), CDR (de)serialisation
  with numpy views, RIHS01 type hashes, custom ``.msg``/``.srv`` registration from text,
  ROS 2 DDS names (``rt/…`` topics, ``pkg::msg::dds_::Type_`` types).
- ``convert`` (+ ``messages``): Ark ⇄ ROS 2 message conversions.
- ``dds_types``: cyclonedds ``IdlStruct`` classes generated from the type store.
- ``config`` / ``qos``: the YAML mapping (topic, type, direction, QoS) validated at load.
- ``bridge`` with backends ``dds`` (Cyclone DDS, no ROS needed) and ``rclpy_backend``
  (used automatically where ``import rclpy`` works).
- ``export``: Ark MCAP recordings → rosbag2 (MCAP or sqlite3).
- ``cli``: ``ark ros bridge CONFIG`` and ``ark ros export RUN.mcap --format rosbag2 OUT``.

What is bridged (ROS 2 type ⇄ Ark schema):

===================================  ===================  ======================================
ROS 2 type                           Ark schema           notes
===================================  ===================  ======================================
sensor_msgs/msg/Image                ark/Image            zero-copy when rows are unpadded;
                                                          ROS 32FC1 ⇄ Ark depth32f; other
                                                          encodings keep their ROS names
sensor_msgs/msg/CompressedImage      ros/CompressedImage  bytes as-is, no decoding
sensor_msgs/msg/CameraInfo           ros/CameraInfo
sensor_msgs/msg/JointState           ark/JointState       header.frame_id is dropped
sensor_msgs/msg/LaserScan            ark/LaserScan        intensities, time_increment and
                                                          scan_time are dropped (Ark has none)
sensor_msgs/msg/PointCloud2          ros/PointCloud       one strided view per field
sensor_msgs/msg/Imu                  ros/Imu
geometry_msgs/msg/Twist              ark/Twist
geometry_msgs/msg/Pose               ark/Pose             frame_id stays empty
geometry_msgs/msg/PoseStamped        ark/Pose             (default for exporting ark/Pose)
geometry_msgs/msg/TransformStamped   ros/Transform
tf2_msgs/msg/TFMessage               ros/TFMessage
nav_msgs/msg/Odometry                ros/Odometry
std_msgs/msg/String                  ark/String
std_msgs/msg/Bool                    ark/Bool
std_msgs/msg/Float64MultiArray       ark/Float64Array     shape from layout.dim; labels dropped
any other known or custom type       ark/DictArrays       with ``ark_type: ark/DictArrays``
===================================  ===================  ======================================

Header stamps travel as the Ark message's publisher stamp (``MessageInfo.stamp_ns``) and back;
without a header, the DDS source timestamp is used. QoS: reliable/best-effort, keep-last
depth or keep-all, volatile or transient-local (a latched Ark publisher for ROS → Ark).

Not bridged: services and actions (``.srv`` types can be registered and serialised, but no
request/reply crosses the bridge), parameters, ROS time (``/clock``), deadline/lifespan/
liveliness QoS, big-endian CDR on the Ark → ROS side (it is always little endian; big-endian
input is decoded), wide strings. A topic can be bridged in one direction per mapping. The DDS
backend does not publish ``ros_discovery_info``, so ROS 2 sees its topics and endpoints
(``ros2 topic list/echo/info``) but no bridge node in ``ros2 node list``; the rclpy backend
is a normal node. Custom types registered only from text need the DDS backend.

Interoperability: the DDS backend creates exactly the endpoints rmw_cyclonedds_cpp creates
(``rt/`` topics, ``pkg::msg::dds_::Type_`` names, final types in plain little-endian CDR,
ROS 2 QoS; on Jazzy also ``typehash=RIHS01_…;`` USER_DATA), so ROS 2 nodes on Cyclone DDS
match it directly. Fast DDS (the default RMW of Humble and Jazzy) speaks the same DDSI-RTPS,
but cross-vendor matching is not guaranteed by ROS 2; set ``RMW_IMPLEMENTATION=rmw_cyclonedds_cpp``
on the ROS side, or use the rclpy backend, where it matters. Cyclone DDS discards samples that
are structurally invalid for the type before they reach the bridge; samples that pass it but
do not decode (text that is not UTF-8, images whose data is shorter than height × step) are
counted per route as ``malformed``/``convert_errors``, and writers announcing a different type
hash as ``hash_mismatch`` (their samples are dropped undecoded).
"""

from __future__ import annotations

from typing import Any

# Lazy: ``ark`` imports ``bridge_ros.cli`` for its parser, which must not need the [ros] extra.
_EXPORTS = {
    "RosTypes": "bridge_ros.cdr", "CdrError": "bridge_ros.cdr", "RosTypeError": "bridge_ros.cdr",
    "dds_type_name": "bridge_ros.cdr", "dds_topic_name": "bridge_ros.cdr",
    "Converter": "bridge_ros.convert", "ConvertError": "bridge_ros.convert", "CONVERTERS": "bridge_ros.convert",
    "converter_for": "bridge_ros.convert", "register_converter": "bridge_ros.convert",
    "generic_converter": "bridge_ros.convert",
    "BridgeConfig": "bridge_ros.config", "TopicMapping": "bridge_ros.config", "Route": "bridge_ros.config",
    "load_bridge_config": "bridge_ros.config", "parse_bridge_config": "bridge_ros.config",
    "QosProfile": "bridge_ros.qos", "PRESETS": "bridge_ros.qos",
    "Bridge": "bridge_ros.bridge", "BackendUnavailable": "bridge_ros.bridge", "rclpy_available": "bridge_ros.bridge",
    "DdsTypes": "bridge_ros.dds_types",
    "export_rosbag2": "bridge_ros.export", "ExportError": "bridge_ros.export", "ExportStats": "bridge_ros.export",
    "add_ros_cli": "bridge_ros.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge_ros' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
