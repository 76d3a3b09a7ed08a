"""One pybullet physics client and what every simulated scene needs from it: loading assets,
cameras (fixed or mounted on a link), lighting, colours and contact dynamics.

Each :class:`BulletWorld` owns its own client (``pybullet_utils.bullet_client``), never the
module-level default connection, so any number of worlds live in one process.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pybullet as pb
import pybullet_data
from gymnasium import logger
from pybullet_utils.bullet_client import BulletClient

from envs.config import CameraConfig, RenderConfig


DEFAULT_LIGHT = {"lightDirection": [0.5, 0.3, 1.5], "lightColor": [1.0, 1.0, 1.0],
                 "lightAmbientCoeff": 0.6, "lightDiffuseCoeff": 0.5, "lightSpecularCoeff": 0.05}


def has_display() -> bool:
    """Whether a pybullet GUI can open (it kills the process when it cannot)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class Camera:
    """A pinhole camera rendering RGB (and optionally metric depth) from a world pose or a link."""

    def __init__(self, cfg: CameraConfig, link: tuple[int, int] | None) -> None:
        self.cfg = cfg
        self.link = link  # (body, link index) the camera rides on, or None for world-fixed
        self.proj = pb.computeProjectionMatrixFOV(cfg.fov, cfg.width / cfg.height, cfg.near, cfg.far)
        self._world_view = None if link else pb.computeViewMatrix(cfg.position, cfg.target, cfg.up)

    def view(self, client: BulletClient) -> list[float]:
        if self.link is None:
            return self._world_view
        body, index = self.link
        if index < 0:
            pos, orn = client.getBasePositionAndOrientation(body)
        else:
            st = client.getLinkState(body, index, computeForwardKinematics=1)
            pos, orn = st[4], st[5]
        rot = np.array(client.getMatrixFromQuaternion(orn)).reshape(3, 3)
        eye = np.asarray(pos) + rot @ np.asarray(self.cfg.position)
        target = np.asarray(pos) + rot @ np.asarray(self.cfg.target)
        up = rot @ np.asarray(self.cfg.up)
        return client.computeViewMatrix(eye.tolist(), target.tolist(), up.tolist())


class BulletWorld:
    """A pybullet client at a fixed physics rate with cameras and lighting."""

    def __init__(self, physics_hz: int, gui: bool = False) -> None:
        if gui and not has_display():
            logger.warn("render_mode='human' needs a display (DISPLAY is unset); running headless instead")
            gui = False
        self.gui = gui
        self.client = BulletClient(connection_mode=pb.GUI if gui else pb.DIRECT)
        self.physics_hz = physics_hz
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        if gui:
            self.client.configureDebugVisualizer(pb.COV_ENABLE_GUI, 0)
        self._configure()
        self.renderer = pb.ER_BULLET_HARDWARE_OPENGL if gui else pb.ER_TINY_RENDERER
        self.light = dict(DEFAULT_LIGHT)
        self.cameras: list[Camera] = []
        self._closed = False
        self._last_frame = 0.0

    def _configure(self) -> None:
        c = self.client
        c.setTimeStep(1.0 / self.physics_hz)
        c.setGravity(0, 0, -9.81)
        # Same inputs, same outputs: pair ordering independent of the order of insertion.
        c.setPhysicsEngineParameter(deterministicOverlappingPairs=1)

    def clear(self) -> None:
        """Remove every body and shape (a fresh world on the same client, cameras forgotten)."""
        self.client.resetSimulation()
        self.cameras = []
        self._configure()

    # -- assets -------------------------------------------------------------------------
    def load(self, path: str, position=(0.0, 0.0, 0.0), orientation=(0.0, 0.0, 0.0, 1.0), **kw) -> int:
        """Load a URDF (position in metres, orientation a quaternion x, y, z, w)."""
        return self.client.loadURDF(path, list(position), list(orientation), **kw)

    def link_index(self, body: int, name: str) -> int:
        """Index of the link called ``name`` (-1 for the base link's name); KeyError if none."""
        c = self.client
        if c.getBodyInfo(body)[0].decode() == name:
            return -1
        for j in range(c.getNumJoints(body)):
            if c.getJointInfo(body, j)[12].decode() == name:
                return j
        raise KeyError(name)

    def link_names(self, body: int) -> list[str]:
        c = self.client
        return [c.getBodyInfo(body)[0].decode()] + [c.getJointInfo(body, j)[12].decode() for j in range(c.getNumJoints(body))]

    # -- cameras ------------------------------------------------------------------------
    def add_camera(self, cfg: CameraConfig, robot: int, source: str) -> None:
        from ark.errors import ConfigError

        link = None
        if cfg.mount != "world":
            try:
                link = (robot, self.link_index(robot, cfg.mount))
            except KeyError:
                raise ConfigError(f"{source}: key 'cameras.{cfg.name}.mount': no link {cfg.mount!r} on the robot "
                                  f"(expected 'world' or one of: {', '.join(self.link_names(robot))})") from None
        self.cameras.append(Camera(cfg, link))

    def capture(self, cam: Camera) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB (H, W, 3) uint8 and, when the camera has depth, metric depth (H, W) float32."""
        cfg = cam.cfg
        _, _, rgba, depth, _ = self.client.getCameraImage(
            cfg.width, cfg.height, cam.view(self.client), cam.proj, renderer=self.renderer,
            flags=pb.ER_NO_SEGMENTATION_MASK, shadow=0, **self.light)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(cfg.height, cfg.width, 4)[:, :, :3].copy()
        if not cfg.depth:
            return rgb, None
        z = np.asarray(depth, dtype=np.float64).reshape(cfg.height, cfg.width)
        metric = cfg.far * cfg.near / (cfg.far - (cfg.far - cfg.near) * z)
        return rgb, np.clip(metric, 0.0, cfg.far).astype(np.float32)

    def render_view(self, cfg: RenderConfig, anchor: int | None = None) -> np.ndarray:
        """The ``rgb_array`` picture from the render viewpoint (offset from body ``anchor`` if ``cfg.follow``)."""
        eye, target = np.asarray(cfg.position), np.asarray(cfg.target)
        if cfg.follow and anchor is not None:
            base = np.asarray(self.client.getBasePositionAndOrientation(anchor)[0])
            eye, target = eye + base, target + base
        view = self.client.computeViewMatrix(eye.tolist(), target.tolist(), list(cfg.up))
        proj = self.client.computeProjectionMatrixFOV(cfg.fov, cfg.width / cfg.height, 0.02, 20.0)
        _, _, rgba, _, _ = self.client.getCameraImage(cfg.width, cfg.height, view, proj, renderer=self.renderer,
                                                      flags=pb.ER_NO_SEGMENTATION_MASK, shadow=1, **self.light)
        return np.asarray(rgba, dtype=np.uint8).reshape(cfg.height, cfg.width, 4)[:, :, :3].copy()

    def camera_state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            rgb, depth = self.capture(cam)
            out[f"camera/{cam.cfg.name}/rgb"] = rgb
            if depth is not None:
                out[f"camera/{cam.cfg.name}/depth"] = depth
        return out

    # -- appearance and contact dynamics --------------------------------------------------
    def set_light(self, scene: dict[str, np.ndarray]) -> None:
        """Lighting of the episode: the scene's ``light/*`` entries, defaults for the others."""
        self.light = dict(DEFAULT_LIGHT)
        if "light/direction" in scene:
            self.light["lightDirection"] = [float(v) for v in scene["light/direction"]]
        if "light/color" in scene:
            self.light["lightColor"] = [float(v) for v in scene["light/color"]]
        if "light/ambient" in scene:
            self.light["lightAmbientCoeff"] = float(scene["light/ambient"][0])
        if "light/diffuse" in scene:
            self.light["lightDiffuseCoeff"] = float(scene["light/diffuse"][0])

    def set_color(self, body: int, rgba, link: int = -1) -> None:
        self.client.changeVisualShape(body, link, rgbaColor=[float(v) for v in rgba])

    def color_of(self, body: int, link: int = -1) -> np.ndarray:
        for shape in self.client.getVisualShapeData(body):
            if shape[1] == link:
                return np.asarray(shape[7], dtype=np.float64)
        raise KeyError(link)

    # -- time ---------------------------------------------------------------------------
    def run(self, substeps: int) -> None:
        step = self.client.stepSimulation
        for _ in range(substeps):
            step()

    def sync_real_time(self, period: float) -> None:
        """In GUI mode, hold the loop to wall-clock time so a person can watch."""
        if not self.gui:
            return
        now = time.perf_counter()
        wait = self._last_frame + period - now
        if wait > 0:
            time.sleep(wait)
        self._last_frame = time.perf_counter()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.client.disconnect()
            except pb.error:
                pass
