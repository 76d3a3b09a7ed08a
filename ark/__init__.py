"""Ark: a Python-first robotics and edge-learning framework.

The runtime: typed messages, pub-sub channels, a registry, nodes with timers, services and
parameters, launch files, MCAP recording and the ``ark`` command line.
"""

from ark.channel import Publisher, RawMessage, Subscriber
from ark.config import ArkConfig
from ark.errors import (ArkError, ConfigError, DecodeError, NotFound, RegistryError, RegistryUnreachable,
                        SchemaError, ServiceError, ServiceTimeout)
from ark.messages import (Bool, DictArrays, Empty, Float64Array, Image, JointState, LaserScan, NDArray, Parameter,
                          Pose, Result, String, Twist, array, message)
from ark.node import Node, Timer
from ark.wire import MessageInfo

__all__ = [
    "ArkConfig", "ArkError", "Bool", "ConfigError", "DecodeError", "DictArrays", "Empty", "Float64Array", "Image",
    "JointState", "LaserScan", "MessageInfo", "NDArray", "Node", "NotFound", "Parameter", "Pose", "Publisher",
    "RawMessage", "RegistryError", "RegistryUnreachable", "Result", "SchemaError", "ServiceError", "ServiceTimeout",
    "String", "Subscriber", "Timer", "Twist", "array", "message",
]
__version__ = "0.1.0"
