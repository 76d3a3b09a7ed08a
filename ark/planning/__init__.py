"""Motion planning: collision checking against a pybullet scene, joint-space RRT-Connect with
shortcutting, an OMPL backend behind the same interface (optional), time parameterisation under
velocity/acceleration limits, and 2-D grid A* for a wheeled base.

Modules: :mod:`~ark.planning.grid` (A*), :mod:`~ark.planning.collision`, :mod:`~ark.planning.rrt`,
:mod:`~ark.planning.smoothing`, :mod:`~ark.planning.timing`, :mod:`~ark.planning.ompl_backend`.
"""
