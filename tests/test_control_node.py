"""ControllerNode over real channels: a Pose target in, joint commands out at a fixed rate."""

from __future__ import annotations

import numpy as np

from ark.control.kinematics import panda_chain
from ark.control.node import ControllerNode
from ark.messages import JointState, Pose
from ark.node import Node
from conftest import wait_until

HOME = np.array([0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79])


def test_controller_node_drives_a_kinematic_arm_to_the_target_and_ignores_unreachable_ones(cfg):
    chain = panda_chain()
    ctrl = ControllerNode("controller", config=cfg, params={"rate": 100, "speed_scale": 1.0}).start()
    arm = Node("arm", config=cfg).start()
    state = {"q": HOME.copy(), "commands": 0, "max_step": np.zeros(7)}
    state_pub = arm.publisher("/joint_states", JointState)
    target_pub = arm.publisher("/ee_target", Pose)

    def on_command(msg: JointState) -> None:  # a perfect position-controlled arm: it goes where told
        assert list(msg.name) == chain.names
        q = np.asarray(msg.position).copy()
        state["max_step"] = np.maximum(state["max_step"], np.abs(q - state["q"]))
        state["q"] = q
        state["commands"] += 1
        state_pub.publish(JointState(name=chain.names, position=state["q"].copy()))

    arm.subscriber("/joint_command", JointState, on_command)
    target = np.array([0.0, 0.2, 0.15])

    def send_all() -> bool:
        state_pub.publish(JointState(name=chain.names, position=state["q"].copy()))
        target_pub.publish(Pose(position=target, orientation=np.array([1.0, 0.0, 0.0, 0.0])))
        return state["commands"] > 0

    assert wait_until(send_all, 5.0, 0.05), "no joint command arrived"
    assert wait_until(lambda: np.linalg.norm(chain.fk(state["q"])[:3, 3] - target) < 1e-3, 10.0)
    T = chain.fk(state["q"])
    assert T[2, 2] < -0.999
    assert np.all(state["q"] >= chain.lower) and np.all(state["q"] <= chain.upper)
    # A smooth motion, not a jump: many commands, none moving a joint faster than its URDF
    # velocity limit allows in one period (1/100 s).
    assert state["commands"] > 5
    assert np.all(state["max_step"] <= chain.velocity_limits / 100 + 1e-9)

    # An unreachable target is reported and ignored; the arm holds still.
    held = state["q"].copy()
    target_pub.publish(Pose(position=np.array([3.0, 0.0, 0.2]), orientation=np.array([1.0, 0.0, 0.0, 0.0])))
    assert wait_until(lambda: ctrl.unreachable == 1, 5.0)
    assert "out of reach" in ctrl.last_error
    assert np.allclose(state["q"], held, atol=1e-6)

    # An all-zero orientation asks for the position only.
    target = np.array([0.05, -0.1, 0.25])
    target_pub.publish(Pose(position=target, orientation=np.zeros(4)))
    assert wait_until(lambda: np.linalg.norm(chain.fk(state["q"])[:3, 3] - target) < 1e-3, 10.0)
    ctrl.shutdown(), arm.shutdown()
