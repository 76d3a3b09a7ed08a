"""Control: kinematics cross-checked against pybullet, IK, joint-space and operational-space control."""

from __future__ import annotations

import numpy as np
import pybullet as pb
import pytest
from pybullet_utils.bullet_client import BulletClient

from ark.control.errors import JointLimitError, ShapeError, UnreachableTarget
from ark.control.ik import solve_ik
from ark.control.joint import ComputedTorque, JointPD
from ark.control.kinematics import panda_chain, quat_to_matrix
from ark.control.model import apply_torques, enable_torque_control, panda_model
from ark.control.osc import OperationalSpaceController

HOME = np.array([0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79])
DOWN = np.array([1.0, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def chain():
    return panda_chain()


@pytest.fixture(scope="module")
def model():
    m = panda_model()
    yield m
    m.close()


def test_own_fk_and_jacobian_match_pybullet_and_finite_differences(chain, model):
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = rng.uniform(chain.lower, chain.upper)
        assert np.allclose(chain.fk(q), model.fk(q), atol=1e-6)  # pybullet computes in float32-ish precision
        J = chain.jacobian(q)
        assert np.allclose(J, model.jacobian(q), atol=1e-8)
        # Linear rows: central differences of the tip position.
        eps = 1e-6
        num = np.column_stack([(chain.fk(q + eps * e)[:3, 3] - chain.fk(q - eps * e)[:3, 3]) / (2 * eps)
                               for e in np.eye(7)])
        assert np.allclose(J[:3], num, atol=1e-6)
    # The documented home pose: end effector at about (0.04, 0, 0.2), gripper pointing down.
    pos, quat = chain.fk_pose(HOME)
    assert np.allclose(pos, [0.04, 0.0, 0.2], atol=0.01)
    assert quat_to_matrix(quat)[2, 2] < -0.99


def test_ik_reaches_poses_within_limits(chain, model):
    rng = np.random.default_rng(1)
    for kin in (chain, model):
        for _ in range(4):
            target = rng.uniform([-0.3, -0.25, 0.05], [0.1, 0.25, 0.35])
            res = solve_ik(kin, target, DOWN, q0=HOME)
            assert np.all(res.q >= chain.lower) and np.all(res.q <= chain.upper)
            T = chain.fk(res.q)  # checked with the other implementation than the solver's for `model`
            assert np.linalg.norm(T[:3, 3] - target) < 2e-4
            assert T[2, 2] < -0.999


def test_ik_respects_a_joint_limit_that_the_unconstrained_solution_violates(chain):
    import copy

    tight = copy.copy(chain)
    tight.upper = chain.upper.copy()
    tight.upper[0] = 0.05  # base yaw may not turn left
    target = [-0.1, 0.25, 0.15]  # to the left: an unconstrained solution turns joint 1 to ~0.8 rad
    assert solve_ik(chain, target, DOWN, q0=HOME).q[0] > 0.2
    res = solve_ik(tight, target, DOWN, q0=HOME)
    assert res.q[0] <= 0.05 + 1e-12
    assert np.linalg.norm(chain.fk(res.q)[:3, 3] - target) < 2e-4


def test_ik_bad_input_gives_one_line_errors(chain):
    with pytest.raises(UnreachableTarget, match=r"out of reach: .* the arm reaches at most 1\.09"):
        solve_ik(chain, [2.0, 0.0, 0.2])
    with pytest.raises(UnreachableTarget, match="no pose within joint limits .* best remaining error"):
        solve_ik(chain, [-0.6, 0.0, -0.35], DOWN, q0=HOME, restarts=2)  # inside the robot's own base
    with pytest.raises(ShapeError, match=r"IK target position must have shape \(3,\), got \(2,\)"):
        solve_ik(chain, [0.1, 0.2])
    with pytest.raises(ShapeError, match="must be finite"):
        solve_ik(chain, [0.1, 0.2, np.nan])
    with pytest.raises(ShapeError, match="zero quaternion"):
        solve_ik(chain, [0.1, 0.2, 0.2], [0, 0, 0, 0])
    with pytest.raises(JointLimitError, match=r"joint panda_joint4 = 0\.5000 is outside its limits"):
        chain.check_limits([0, 0, 0, 0.5, 0, 1, 0])


class _Sim:
    """A torque-controlled Panda in its own pybullet client (the plant the controllers drive)."""

    def __init__(self, model, q0):
        self.c = c = BulletClient(pb.DIRECT)
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(1.0 / 240.0)
        self.body = c.loadURDF(model.chain.urdf, [-0.6, 0, 0], useFixedBase=True, flags=pb.URDF_USE_INERTIA_FROM_FILE)
        self.joints = model.joints
        for j, v in zip(self.joints, q0):
            c.resetJointState(self.body, j, v)
        enable_torque_control(c, self.body, self.joints)

    def state(self):
        s = self.c.getJointStates(self.body, self.joints)
        return np.array([x[0] for x in s]), np.array([x[1] for x in s])

    def step(self, tau):
        apply_torques(self.c, self.body, self.joints, tau)
        self.c.stepSimulation()


def test_computed_torque_and_pd_track_joint_targets_in_simulation(model):
    target = HOME + np.array([0.3, -0.2, 0.2, 0.3, 0.2, -0.3, 0.4])
    for ctrl in (ComputedTorque(model, kp=100.0),
                 JointPD(kp=[300.0] * 7, kd=[30.0] * 7, gravity=model.gravity, effort_limits=model.effort_limits)):
        sim = _Sim(model, HOME)
        for _ in range(480):  # 2 s
            q, dq = sim.state()
            sim.step(ctrl.torque(q, dq, target))
        q, dq = sim.state()
        assert np.abs(q - target).max() < 2e-3, type(ctrl).__name__
        assert np.abs(dq).max() < 1e-2
    # Without gravity compensation the same PD sags measurably: the model term matters.
    sim = _Sim(model, HOME)
    pd = JointPD(kp=[300.0] * 7, kd=[30.0] * 7)
    for _ in range(480):
        q, dq = sim.state()
        sim.step(pd.torque(q, dq, target))
    assert np.abs(sim.state()[0] - target).max() > 0.02


def test_operational_space_control_moves_the_end_effector_to_a_pose(model):
    sim = _Sim(model, HOME)
    osc = OperationalSpaceController(model, q_null=HOME)
    target = np.array([0.1, 0.15, 0.1])
    path = []
    for _ in range(720):  # 3 s
        q, dq = sim.state()
        sim.step(osc.torque(q, dq, target, DOWN))
        path.append(model.fk(q)[:3, 3])
    q, _ = sim.state()
    T = model.fk(q)
    assert np.linalg.norm(T[:3, 3] - target) < 2e-3
    assert T[2, 2] < -0.999
    # Critically damped task-space spring: the straight-line distance shrinks without overshoot.
    d = np.linalg.norm(np.array(path) - target, axis=1)
    assert d[-1] <= d[100] <= d[0]
    assert np.all(np.diff(d[50:]) < 1e-4)


def test_out_of_limit_seeds_and_set_points_are_rejected(chain, model):
    bad = HOME.copy()
    bad[5] = 4.0  # joint 6 upper limit is 3.82
    with pytest.raises(JointLimitError, match=r"IK initial joint positions: joint panda_joint6 = 4.0000 is outside"):
        solve_ik(chain, [0.0, 0.0, 0.2], DOWN, q0=bad)
    with pytest.raises(JointLimitError, match=r"desired joint positions: joint panda_joint6 = 4.0000"):
        ComputedTorque(model).torque(HOME, np.zeros(7), bad)
    with pytest.raises(ShapeError, match=r"dq must have shape \(7,\)"):
        ComputedTorque(model).torque(HOME, np.zeros(6), HOME)
