"""ROS 2 interoperability: CDR types, live bridge, rosbag2 export."""
