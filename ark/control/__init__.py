"""Robot control: kinematics (FK, Jacobians, damped-least-squares IK), joint-space PD and
computed-torque control, operational-space control, pure pursuit for a wheeled base, and a
``ControllerNode`` that turns end-effector targets into joint commands.

Modules: :mod:`~ark.control.kinematics` (own URDF chain), :mod:`~ark.control.model` (pybullet
model: FK, Jacobians, dynamics), :mod:`~ark.control.ik`, :mod:`~ark.control.joint`,
:mod:`~ark.control.osc`, :mod:`~ark.control.diff_drive`, :mod:`~ark.control.node`.
"""
