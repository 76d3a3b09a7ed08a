"""2-D lidar SLAM for a wheeled base: scan matching, occupancy grids, pose graphs with loop closures.

    from ark.slam import LidarSlam, SlamConfig

    slam = LidarSlam(SlamConfig(), initial_pose=(0.0, 0.0, 0.0))
    pose = slam.update(scan, odom_pose)       # ark.LaserScan, (x, y, yaw) or None
    slam.trajectory(); slam.occupancy()

Modules: :mod:`~ark.slam.slam` (the SLAM loop and its config), :mod:`~ark.slam.scan_matching`
(ICP, correlative matching), :mod:`~ark.slam.occupancy` (log-odds grid), :mod:`~ark.slam.pose_graph`
(least-squares optimisation), :mod:`~ark.slam.metrics` (ATE, map accuracy),
:mod:`~ark.slam.odometry` (wheel odometry), :mod:`~ark.slam.node` (``SlamNode``),
:mod:`~ark.slam.husky_sim` (room scenes and logs from ``ark/HuskyNavigate-v0``).

Input checks: a scan whose length does not match its angles, with NaN ranges, negative
ranges or bad range limits raises :class:`ScanError`; odometry that is not 3 finite numbers
raises :class:`OdometryError`. ``+inf`` and ``range_max`` readings mean "no return".
"""

from ark.slam.errors import OdometryError, ScanError
from ark.slam.metrics import absolute_trajectory_error, map_accuracy
from ark.slam.occupancy import LogOddsGrid
from ark.slam.odometry import WheelOdometry
from ark.slam.pose_graph import PoseGraph
from ark.slam.scan_matching import icp
from ark.slam.slam import LidarSlam, SlamConfig, check_scan

__all__ = ["LidarSlam", "LogOddsGrid", "OdometryError", "PoseGraph", "ScanError", "SlamConfig", "WheelOdometry",
           "absolute_trajectory_error", "check_scan", "icp", "map_accuracy"]
