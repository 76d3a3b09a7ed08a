"""System identification: the regressor against pybullet, base parameters on small arms, and the Panda
identified in simulation (held-out torques, re-run of a trajectory in a perturbed simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from ark.sysid import ArmModel, BaseParameters, FourierTrajectory, IdentificationError, identify
from ark.sysid.model import Joint
from ark.sysid.sim import PandaTorqueSim


@pytest.fixture(scope="module")
def panda():
    sim = PandaTorqueSim()
    yield sim, BaseParameters.of(sim.model)
    sim.close()


def test_regressor_times_simulator_parameters_equals_pybullet_inverse_dynamics(panda):
    sim, _ = panda
    pi = sim.true_parameters()["inertial"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        q, qd, qdd = rng.uniform(-1.5, 1.5, 7), rng.uniform(-2, 2, 7), rng.uniform(-4, 4, 7)
        ref = sim.c.calculateInverseDynamics(sim.robot, [*q, 0.0, 0.0], [*qd, 0.0, 0.0], [*qdd, 0.0, 0.0])[:7]
        ours = sim.model.inverse_dynamics(q[None], qd[None], qdd[None], pi)[0]
        assert np.allclose(ours, ref, atol=1e-5 * (1 + np.abs(ref).max()))


def planar_2r(gravity) -> ArmModel:
    """Two parallel z axes, link 1 of length 0.5 along x."""
    z = np.array([0.0, 0.0, 1.0])
    return ArmModel([Joint(np.eye(3), np.zeros(3), z), Joint(np.eye(3), np.array([0.5, 0.0, 0.0]), z)], gravity=gravity)


@pytest.mark.parametrize("gravity, rank", [((0, 0, -9.81), 4), ((0, -9.81, 0), 6)])
def test_base_parameters_of_a_planar_two_link_arm(gravity, rank):
    """Horizontal 2R: ZZ1R, ZZ2, MX2, MY2; in a vertical plane also MX1R, MY1 (Khalil & Dombre)."""
    model = planar_2r(gravity)
    base = BaseParameters.of(model)
    assert base.rank == rank
    rng = np.random.default_rng(1)
    pi = rng.normal(size=model.n_params)
    q, qd, qdd = (rng.uniform(-2, 2, (50, 2)) for _ in range(3))
    Y = model.regressor(q, qd, qdd)
    assert np.allclose(Y @ pi, base.regressor(Y) @ base.project(pi))  # torques depend on pi only through beta


def test_panda_base_parameters_reproduce_torques(panda):
    sim, base = panda
    assert base.rank == 43  # the Panda's 43 identifiable rigid-body combinations
    rng = np.random.default_rng(2)
    pi = rng.normal(size=70)
    q, qd, qdd = (rng.uniform(-2, 2, (20, 7)) for _ in range(3))
    Y = sim.model.regressor(q, qd, qdd)
    assert np.allclose(Y @ pi, base.regressor(Y) @ base.project(pi), atol=1e-8)


def test_identification_in_a_perturbed_panda_predicts_and_tracks_far_better_than_the_nominal_model(panda):
    sim_nominal, base = panda
    model = sim_nominal.model
    nom = sim_nominal.true_parameters()

    def nominal_ff(q, qd, qdd):
        return model.inverse_dynamics(q, qd, qdd, nom["inertial"]) + (nom["viscous"] + nom["damping"]) * qd \
            + nom["coulomb"] * np.sign(qd)

    sim = PandaTorqueSim()
    try:
        sim.perturb(seed=1, mass_scale=0.3, friction_scale=0.5)
        truth = sim.true_parameters()
        excitation = FourierTrajectory.random(sim.lower, sim.upper, seed=1, period=10.0, max_velocity=1.2)
        data = sim.run(excitation, 20.0, nominal_ff, torque_noise=0.2, seed=0)
        fit = identify(model, base, data["q"], data["qd"], data["qdd"], data["tau"])
        assert np.allclose(fit.residual_rms, 0.2, rtol=0.15)  # what is left is the sensor noise
        assert np.allclose(fit.viscous, truth["viscous"] + truth["damping"], atol=0.05)
        assert np.allclose(fit.coulomb, truth["coulomb"], atol=0.05)
        beta = base.project(truth["inertial"])
        err_id = np.linalg.norm(fit.beta - beta) / np.linalg.norm(beta)
        err_nom = np.linalg.norm(base.project(nom["inertial"]) - beta) / np.linalg.norm(beta)
        assert err_id < 0.02 < err_nom

        test = FourierTrajectory.random(sim.lower, sim.upper, seed=7, period=8.0, max_velocity=1.0)
        held = sim.run(test, 8.0, nominal_ff)
        rmse = {name: float(np.sqrt(np.mean((f(held["q"], held["qd"], held["qdd"]) - held["tau"]) ** 2)))
                for name, f in (("identified", fit.predict), ("nominal", nominal_ff))}
        assert rmse["identified"] < 0.05 < 0.3 < rmse["nominal"]
        soft = dict(kp=np.array([40.0, 40, 30, 30, 10, 6, 3]), kd=np.array([4.0, 4, 3, 3, 1, 0.6, 0.3]))
        track_nom = sim.run(test, 8.0, nominal_ff, **soft)["tracking_rmse"].mean()
        track_id = sim.run(test, 8.0, fit.predict, **soft)["tracking_rmse"].mean()
        assert track_id < track_nom / 10
    finally:
        sim.close()


def test_unusable_data_raise_one_line_errors(panda):
    sim, base = panda
    z = np.zeros((10, 7))
    with pytest.raises(IdentificationError, match="too few"):
        identify(sim.model, base, z, z + 0.1, z, z)
    with pytest.raises(IdentificationError, match=r"must all be \(T, 7\)"):
        identify(sim.model, base, z, z, z, np.zeros((10, 6)))
    still = np.zeros((400, 7))  # the arm held still: nothing but gravity at one pose
    with pytest.raises(IdentificationError, match="does not identify"):
        identify(sim.model, base, still, still, still, np.ones((400, 7)))
