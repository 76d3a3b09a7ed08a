"""System identification of a robot arm: rigid-body base parameters, viscous and Coulomb friction.

    from ark.sysid import ArmModel, BaseParameters, FourierTrajectory, identify

    base = BaseParameters.of(model)                       # identifiable combinations (QR)
    fit = identify(model, base, q, qd, qdd, tau)          # linear least squares
    fit.predict(q_test, qd_test, qdd_test)                # held-out torques

Modules: :mod:`~ark.sysid.model` (regressor ``tau = Y(q, qd, qdd) pi`` by Newton–Euler),
:mod:`~ark.sysid.identify` (base parameters, least squares), :mod:`~ark.sysid.excitation`
(Fourier-series excitation trajectories), :mod:`~ark.sysid.sim` (a torque-controlled Panda in
pybullet with known friction and damping, perturbable for validation).
"""

from ark.sysid.excitation import FourierTrajectory
from ark.sysid.identify import BaseParameters, Identified, IdentificationError, friction_regressor, identify
from ark.sysid.model import ArmModel, parameters_from_pybullet

__all__ = ["ArmModel", "BaseParameters", "FourierTrajectory", "Identified", "IdentificationError", "friction_regressor",
           "identify", "parameters_from_pybullet"]
