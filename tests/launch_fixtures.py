"""Nodes that misbehave on purpose, for the launch tests (run by ``python -m ark.runner``)."""

from __future__ import annotations

import signal
from typing import Any

from ark.node import Node


class CrashingNode(Node):
    """Prints ``started``, then exits the process with status 3 after ``crash_after_s`` (0.3 s)."""

    def __init__(self, name: str, *, params: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(name, params=params, **kw)
        print(f"{name}: started", flush=True)
        self.timer(1.0 / float(self.param("crash_after_s", 0.3)), self._crash)

    def _crash(self) -> None:
        raise SystemExit(3)  # not an Exception: escapes the executor, ends the runner with status 3


class StubbornNode(Node):
    """Ignores SIGTERM once its executor runs, so only SIGKILL stops it; prints ``ignoring SIGTERM``."""

    def __init__(self, name: str, *, params: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(name, params=params, **kw)
        self._armed = self.timer(20.0, self._ignore_sigterm)

    def _ignore_sigterm(self) -> None:
        self._armed.cancel()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # callbacks run on the main thread
        print("ignoring SIGTERM", flush=True)


def not_a_node(name: str, params: dict[str, Any]) -> str:
    """A factory that returns the wrong thing."""
    return name
