"""Shared fixtures: every test gets its own registry port and ipc folder, so tests never see each other."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from ark.config import ArkConfig
from ark.node import shutdown_all
from ark.registry import stop_embedded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cfg(tmp_path: Path) -> ArkConfig:
    """An ArkConfig on a fresh registry port with fast heartbeats; embedded registries stop afterwards."""
    ipc = Path("/tmp") / f"ark-test-{os.getpid()}-{free_port()}"  # short: ipc paths are limited to ~100 chars
    c = ArkConfig(registry=f"tcp://127.0.0.1:{free_port()}", ipc_dir=ipc, heartbeat_s=0.05, stale_after_s=0.6)
    yield c
    shutdown_all()  # a node left running would keep heartbeating (and could revive a registry)
    stop_embedded()


@pytest.fixture
def env_for(cfg: ArkConfig) -> dict[str, str]:
    """Environment that points a child process (CLI, launched node) at ``cfg``'s graph."""
    env = dict(os.environ)
    env.update(ARK_REGISTRY=cfg.registry, ARK_IPC_DIR=str(cfg.ipc_dir), PYTHONUNBUFFERED="1")
    return env


def wait_until(pred: Callable[[], object], timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll ``pred`` until it is truthy or ``timeout`` passes (bounded; never hangs a test)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


PYTHON = sys.executable
