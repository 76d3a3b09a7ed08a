"""The ``node`` backend: a RobotBackend whose every call is an Ark service call to a driver node.

The environment does not know or care whether the driver wraps pybullet (``PybulletDriverNode``)
or a real robot: it calls ``<driver>/info`` once, then ``<driver>/reset`` and ``<driver>/step``
(interface in :mod:`envs.driver`). Every call is bounded by ``timeout`` seconds; a driver that
stalls, dies or never existed raises :class:`envs.errors.DriverTimeout` — one line, never a hang.
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np

from ark.config import ArkConfig
from ark.errors import NotFound, RegistryError, ServiceError, ServiceTimeout
from ark.messages import Empty, Image
from envs.backend import RobotBackend, Scene, State
from envs.errors import DriverError, DriverTimeout
from envs.messages import Command, DriverInfo, ResetRequest, RobotState

COMMAND_KIND = {"panda": "ee_target", "husky": "twist"}


class NodeBackend(RobotBackend):
    """Drives the robot behind driver node ``driver`` over Ark services."""

    def __init__(self, driver: str, *, ark_config: ArkConfig | None = None, timeout: float = 5.0,
                 connect_timeout: float = 10.0) -> None:
        from ark.node import Node

        if not (timeout > 0 and connect_timeout > 0):
            raise DriverError(f"driver timeouts must be > 0 seconds, got {timeout} and {connect_timeout}")
        self.driver = driver
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.node = Node(f"env-{driver}-{os.getpid()}-{uuid.uuid4().hex[:4]}", config=ark_config)
        self._clients = {
            "info": self.node.client(f"{driver}/info", Empty, DriverInfo),
            "reset": self.node.client(f"{driver}/reset", ResetRequest, RobotState),
            "step": self.node.client(f"{driver}/step", Command, RobotState),
            "render": self.node.client(f"{driver}/render", Empty, Image),
        }
        self._info: DriverInfo | None = None
        self._providers: dict[str, str | None] = {}
        self._session: str | None = None
        self._kind = ""
        self._closed = False

    # -- calls ------------------------------------------------------------------------------
    def _call(self, what: str, request, timeout: float | None = None) -> object:
        """One service call bounded by ``timeout``; a driver not (yet, or no longer) in the graph is
        retried until the same deadline, so a starting driver is waited for but never forever."""
        client = self._clients[what]
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        retried = False
        while True:
            left = deadline - time.monotonic()
            try:
                return client.call(request, timeout=max(left, 0.001))
            except ServiceTimeout:
                if not self._replaced(what):
                    raise DriverTimeout(f"driver {self.driver!r} did not answer {what} within {timeout:g}s "
                                        f"(stalled or died?)") from None
                for c in self._clients.values():
                    c.close()  # connect to the new process at the next call
                if what == "step" or retried:  # a step is not repeated: the episode is lost
                    raise DriverTimeout(f"driver {self.driver!r} did not answer {what} within {timeout:g}s "
                                        f"(it restarted; call reset())") from None
                retried, deadline = True, time.monotonic() + timeout
            except (NotFound, RegistryError) as exc:
                if time.monotonic() + 0.05 >= deadline:
                    why = "it is not in the graph" if isinstance(exc, NotFound) else f"registry: {exc}"
                    raise DriverTimeout(f"driver {self.driver!r} did not answer {what} within {timeout:g}s "
                                        f"({why}; start it with `python -m envs.driver --name {self.driver} ...`)"
                                        ) from None
                time.sleep(0.05)
            except ServiceError as exc:
                if what == "step" and self._replaced(what):  # a new driver process knows no episode
                    raise DriverError(f"driver {self.driver!r} restarted during the episode; call reset()") from None
                raise DriverError(f"driver {self.driver!r} failed {what}: {exc}") from None

    def _provider(self, what: str) -> str | None:
        """The node id that serves ``<driver>/<what>`` now, per the registry (None if unknown)."""
        try:
            return self.node.registry.request("lookup_service", service=f"{self.driver}/{what}")["service"]["node"]
        except (RegistryError, KeyError, TypeError):
            return None

    def _replaced(self, what: str) -> bool:
        # A driver that restarted under the same name: the service client follows it to its new
        # endpoint (or, if the registry lagged, times out once); say so rather than "stalled".
        now = self._provider(what)
        return now is not None and self._providers.get(what) not in (None, now)

    def _state(self, reply: RobotState, what: str) -> State:
        if self._session is not None and reply.session != self._session and what == "step":
            raise DriverError(f"driver {self.driver!r} restarted during the episode; call reset()")
        self._session = reply.session
        return {k: np.asarray(v) for k, v in reply.arrays.items()}

    # -- RobotBackend -------------------------------------------------------------------------
    def info(self) -> DriverInfo:
        if self._info is None:
            self._info = self._call("info", Empty(), self.connect_timeout)
            self._kind = COMMAND_KIND.get(self._info.robot, "")
            self._providers = {what: self._provider(what) for what in ("reset", "step")}
        return self._info

    def reset(self, scene: Scene, seed: int | None = None) -> State:
        req = ResetRequest(seed=-1 if seed is None else int(seed),
                           scene={k: np.ascontiguousarray(v, dtype=np.float64) for k, v in scene.items()})
        self._session = None
        state = self._state(self._call("reset", req), "reset")
        self._providers = {what: self._provider(what) for what in ("reset", "step")}
        return state

    def step(self, command: np.ndarray) -> State:
        if self._session is None:
            raise DriverError(f"driver {self.driver!r}: step before reset")
        cmd = Command(kind=self._kind, data=np.ascontiguousarray(command, dtype=np.float64))
        return self._state(self._call("step", cmd), "step")

    def render(self) -> np.ndarray:
        return np.asarray(self._call("render", Empty()).data, dtype=np.uint8)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.node.shutdown()
