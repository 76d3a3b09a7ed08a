"""Robot drivers: the interface between Ark's environments and a robot, and the pybullet driver.

``gymnasium.make("ark/PandaPush-v0", backend="node", driver="panda_driver")`` runs the task
(observations, reward, success) in the caller's process and drives the robot through the Ark
node named ``panda_driver``. That node may wrap a simulator — :class:`PybulletDriverNode`,
which plays the real robot so the path is tested without hardware — or real hardware. Run
the pybullet one standalone with::

    python -m envs.driver --env ark/PandaPush-v0 --name panda_driver [--camera front] [--rate 20]

DRIVER INTERFACE
================

A driver is an Ark node named ``<name>``. Schemas are in :mod:`envs.messages` (``envs/*``) and
:mod:`ark.messages` (``ark/*``). All arrays are float64 unless stated.

Services (the environment calls these; each must answer within the env's ``driver_timeout``)
-----------------------------------------------------------------------------------------------

``<name>/info``   ``ark/Empty -> envs/DriverInfo``
    ``robot`` (``"panda"`` or ``"husky"``; the env checks it), ``control_hz``, ``joint_names``,
    ``cameras`` ({name: [height, width, has_depth]}; the env checks the cameras it is
    configured with), ``state_keys`` and ``meta``: arm drivers give ``object_half_height`` (m),
    ``max_gripper_width`` (m); base drivers give ``lidar_angles`` (rad, per beam),
    ``lidar_range`` (m), ``chassis_mass`` (kg).

``<name>/reset``  ``envs/ResetRequest -> envs/RobotState``
    Start an episode: bring the robot to its home pose, lay out the scene as far as the
    driver can, return the state. ``seed`` is informational. ``scene`` keys (a driver uses
    what it can and ignores the rest — a real arm driver homes the arm and asks for the cube
    to be placed near ``object/pose``):

    * ``goal`` (3): goal position (world, m); a simulator shows a marker there.
    * ``object/pose`` (3): arm: cube x, y (m) and yaw (rad), resting on the table.
    * ``base/pose`` (3): base: start x, y (m) and yaw (rad).
    * ``obstacles`` (N x 7): base: rows [kind (0 box, 1 cylinder), x, y, yaw, size_x,
      size_y (the diameter for cylinders), height], metres and radians.
    * ``color/object``, ``color/table``, ``color/obstacle``, ``color/floor`` (4): RGBA in [0, 1].
    * ``mass/object``, ``mass/chassis`` (1): kg.
    * ``friction/object``, ``friction/fingers``, ``friction/wheels``, ``friction/obstacles`` (1):
      lateral friction coefficients.
    * ``light/direction``, ``light/color`` (3) and ``light/ambient``, ``light/diffuse`` (1): the
      camera renderer's light.

``<name>/step``   ``envs/Command -> envs/RobotState``
    Apply the command for one control period (1 / ``control_hz`` s) and return the state at
    its end. This is the synchronised mode the environments use. Commands:

    * ``kind = "ee_target"`` (arm): ``data = [x, y, z, gripper_width]``, end-effector target
      (world, m; gripper pointing down) and finger opening (m). The driver clips to its own
      safe workspace.
    * ``kind = "twist"`` (base): ``data = [v, omega]``, forward speed (m/s) and yaw rate
      (rad/s) in the base frame; the driver clips to its limits.

``<name>/render`` ``ark/Empty -> ark/Image``   (optional) a picture for ``render_mode="rgb_array"``.

A driver that cannot serve a request raises (the env gets ``envs.errors.DriverError``). A driver
that does not answer in time makes the env raise ``envs.errors.DriverTimeout``.

State (``envs/RobotState.arrays``, also published on ``<name>/state``)
-----------------------------------------------------------------------

=========================== ======== ============================================================
key                         shape    meaning
=========================== ======== ============================================================
``joint/position|velocity`` J        joints in ``joint_names`` order (rad, m; rad/s, m/s)
``ee/pose``                 7        arm: end-effector x, y, z, qx, qy, qz, qw (world)
``ee/velocity``             6        arm: end-effector linear (m/s) and angular (rad/s) velocity
``gripper/width``           1        arm: finger opening (m)
``object/pose|velocity``    7 / 6    arm: the cube, as for the end effector (measured, e.g. by a
                                     motion-capture or vision tracker on a real robot)
``base/pose|velocity``      7 / 6    base: pose and velocity of the base (world)
``lidar``                   N        base: float32 ranges (m) at ``meta["lidar_angles"]``
``collision``               1        base: 1.0 while touching an obstacle (bumper), else 0.0
``camera/<cam>/rgb``        H x W x 3 uint8 image of camera ``<cam>``
``camera/<cam>/depth``      H x W    float32 metric depth (m), if the camera has depth
``time``                    1        seconds since the reset
=========================== ======== ============================================================

``RobotState.session`` identifies the driver process (the env detects a restart mid-episode),
``episode`` counts resets and ``step`` counts steps since the last reset.

Topics (published after every reset and step; in free-running mode at ``--rate`` Hz)
-------------------------------------------------------------------------------------

``<name>/joint_states`` ``ark/JointState``; ``<name>/ee_pose`` ``ark/Pose`` (arm);
``<name>/objects/<object>`` ``ark/Pose`` (arm: ``cube``); ``<name>/odom`` ``ark/Pose`` (base);
``<name>/scan`` ``ark/LaserScan`` (base); ``<name>/camera/<cam>/rgb`` ``ark/Image`` (``rgb8``);
``<name>/camera/<cam>/depth`` ``ark/Image`` (``depth32f``); ``<name>/state`` ``envs/RobotState``.

Topic subscribed: ``<name>/command`` ``envs/Command``. In free-running mode (``--rate`` > 0)
the driver advances on its own clock and applies the newest command received here at every
tick (holding position when none has arrived since the reset) — how a policy node drives a
robot asynchronously. In that mode ``<name>/step`` is refused, since two clocks cannot both
drive the robot.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import uuid
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ark/ environments)
from ark.config import ArkConfig
from ark.errors import ArkError
from ark.messages import Empty, Image, JointState, LaserScan, Pose
from envs.backend import RobotBackend, State
from envs.messages import Command, DriverInfo, ResetRequest, RobotState

log = logging.getLogger("envs.driver")

COMMAND_KIND = {"panda": "ee_target", "husky": "twist"}


def env_class(env_id: str) -> type:
    """The environment class registered as ``env_id`` (an Ark environment)."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise ArkError(f"unknown environment {env_id!r} ({exc})") from None
    entry = spec.entry_point
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    if not hasattr(entry, "sim_backend"):
        raise ArkError(f"{env_id} is not an Ark environment (no pybullet backend to drive)")
    return entry


class PybulletDriverNode:
    """A driver node that implements the driver interface on a pybullet backend.

    ``env_id`` picks the robot and scene (its config file, or ``config``, plus ``overrides``
    such as ``cameras=["front"]``). ``rate_hz`` > 0 runs free (see the module docstring).
    ``start()`` serves in a background thread; ``spin()`` in the caller's."""

    def __init__(self, name: str, env_id: str, *, config: str | dict | None = None,
                 overrides: dict[str, Any] | None = None, ark_config: ArkConfig | None = None,
                 rate_hz: float = 0.0, gui: bool = False, backend: RobotBackend | None = None) -> None:
        from ark.node import Node

        cls = env_class(env_id)
        self.name = name
        self.env_id = env_id
        if backend is None:
            cfg = cls.load_config(config, overrides or {})
            backend = cls.sim_backend(cfg, gui=gui)
        self.backend = backend
        self.info: DriverInfo = backend.info()
        self.kind = COMMAND_KIND.get(self.info.robot, "")
        self.session = uuid.uuid4().hex
        self.episode = 0
        self.steps = 0
        self.rate_hz = float(rate_hz)
        self._latest: np.ndarray | None = None
        self._state: State | None = None
        try:
            self.node = node = Node(name, config=ark_config)
        except BaseException:
            backend.close()
            raise
        node.service(f"{name}/info", Empty, DriverInfo, lambda _req: self.info)
        node.service(f"{name}/reset", ResetRequest, RobotState, self._on_reset)
        node.service(f"{name}/step", Command, RobotState, self._on_step)
        node.service(f"{name}/render", Empty, Image, lambda _req: Image(self.backend.render(), "rgb8", "world"))
        node.subscriber(f"{name}/command", Command, self._on_command, latest_only=True)
        self.pub_state = node.publisher(f"{name}/state", RobotState)
        self.pub_joints = node.publisher(f"{name}/joint_states", JointState)
        self.pub_images = {}
        for cam, (_h, _w, depth) in self.info.cameras.items():
            self.pub_images[f"camera/{cam}/rgb"] = node.publisher(f"{name}/camera/{cam}/rgb", Image)
            if depth:
                self.pub_images[f"camera/{cam}/depth"] = node.publisher(f"{name}/camera/{cam}/depth", Image)
        if self.info.robot == "husky":
            self.pub_odom = node.publisher(f"{name}/odom", Pose)
            self.pub_scan = node.publisher(f"{name}/scan", LaserScan)
        else:
            self.pub_ee = node.publisher(f"{name}/ee_pose", Pose)
            self.pub_object = node.publisher(f"{name}/objects/cube", Pose)
        if self.rate_hz > 0:
            node.timer(self.rate_hz, self._tick)

    # -- services -----------------------------------------------------------------------------
    def _reply(self, state: State) -> RobotState:
        self._state = state
        self._publish(state)
        return RobotState(arrays=state, session=self.session, episode=self.episode, step=self.steps)

    def _on_reset(self, req: ResetRequest) -> RobotState:
        state = self.backend.reset(dict(req.scene), None if req.seed < 0 else req.seed)
        self.episode += 1
        self.steps = 0
        self._latest = None
        return self._reply(state)

    def _on_step(self, req: Command) -> RobotState:
        if self.rate_hz > 0:
            raise ArkError(f"driver {self.name} is free-running at {self.rate_hz:g} Hz; "
                           f"publish commands on {self.name}/command instead")
        return self._reply(self._apply(req))

    def _apply(self, req: Command) -> State:
        if req.kind != self.kind:
            raise ArkError(f"driver {self.name} drives a {self.info.robot} and takes {self.kind!r} commands, "
                           f"not {req.kind!r}")
        if self._state is None:
            raise ArkError(f"driver {self.name}: step before reset")
        state = self.backend.step(np.asarray(req.data, dtype=np.float64))
        self.steps += 1
        return state

    def _on_command(self, msg: Command) -> None:
        if msg.kind != self.kind:
            log.warning("driver %s: ignoring a %r command (takes %r)", self.name, msg.kind, self.kind)
            return
        self._latest = np.array(msg.data, dtype=np.float64)

    def _tick(self) -> None:
        if self._state is None:
            return
        command = self._latest if self._latest is not None else self._hold(self._state)
        try:
            self._reply(self._apply(Command(kind=self.kind, data=command)))
        except (ArkError, ValueError) as exc:
            log.warning("driver %s: %s", self.name, exc)
            self._latest = None

    def _hold(self, state: State) -> np.ndarray:
        if self.kind == "ee_target":
            return np.array([*state["ee/pose"][:3], state["gripper/width"][0]])
        return np.zeros(2)

    # -- topics -------------------------------------------------------------------------------
    def _publish(self, state: State) -> None:
        self.pub_state.publish(RobotState(arrays=state, session=self.session, episode=self.episode, step=self.steps))
        self.pub_joints.publish(JointState(list(self.info.joint_names), np.asarray(state["joint/position"], np.float64),
                                           np.asarray(state["joint/velocity"], np.float64)))
        for key, pub in self.pub_images.items():
            img = state[key]
            pub.publish(Image(img, "rgb8" if key.endswith("rgb") else "depth32f", key.split("/")[1]))
        if self.info.robot == "husky":
            pose = state["base/pose"]
            self.pub_odom.publish(Pose(pose[:3].copy(), pose[3:].copy(), "world"))
            meta = self.info.meta
            angles = meta["lidar_angles"]
            step = (angles[-1] - angles[0]) / max(len(angles) - 1, 1)
            self.pub_scan.publish(LaserScan(np.asarray(state["lidar"], np.float32), float(angles[0]), float(angles[-1]),
                                            float(step), 0.0, float(meta["lidar_range"]), "base_link"))
        else:
            ee = state["ee/pose"]
            self.pub_ee.publish(Pose(ee[:3].copy(), ee[3:].copy(), "world"))
            if "object/pose" in state:
                obj = state["object/pose"]
                self.pub_object.publish(Pose(obj[:3].copy(), obj[3:].copy(), "world"))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "PybulletDriverNode":
        """Serve in a background thread; returns self."""
        self.node.start()
        return self

    def spin(self) -> None:
        """Serve until SIGINT/SIGTERM or ``shutdown()``."""
        self.node.spin()

    def shutdown(self) -> None:
        self.node.shutdown()
        self.backend.close()

    def __enter__(self) -> "PybulletDriverNode":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs.driver",
                                     description="Run the pybullet driver node of an Ark environment.")
    parser.add_argument("--env", required=True, help="environment id, e.g. ark/PandaPush-v0")
    parser.add_argument("--name", required=True, help="driver node name (the env's driver=...)")
    parser.add_argument("--config", help="environment YAML (default: configs/envs/<task>.yaml)")
    parser.add_argument("--camera", action="append", default=[], metavar="NAME",
                        help="enable a camera preset of the config (repeatable)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="free-running control rate in Hz (default 0: stepped by the <name>/step service)")
    parser.add_argument("--gui", action="store_true", help="open a pybullet window")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {"cameras": args.camera} if args.camera else {}
    try:
        driver = PybulletDriverNode(args.name, args.env, config=args.config, overrides=overrides,
                                    rate_hz=args.rate, gui=args.gui)
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode = f"free-running at {args.rate:g} Hz" if args.rate > 0 else "stepped by service"
    print(f"driver {args.name} ready: {driver.info.robot} for {args.env}, {mode}; services "
          f"{args.name}/info|reset|step|render", flush=True)
    try:
        driver.spin()
    finally:
        driver.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
