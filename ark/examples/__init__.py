"""Short runnable examples of Ark's robotics modules (``python -m ark.examples.<name>``).

- ``pick_place``: IK + operational-space control pick-and-place on the Panda, with RRT-Connect
  planning over a wall between the pick and the place.
- ``navigate_home``: the wheeled base maps an unknown room with SLAM and drives back to its start
  with the grid planner.
"""
