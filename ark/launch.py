"""Launch files: a YAML graph of nodes, each started and supervised as its own process.

    registry: tcp://127.0.0.1:7450      # optional; defaults to the Ark configuration's
    nodes:
      - name: camera
        node: ark.demo_nodes:CameraNode  # MODULE:FACTORY, run by ``python -m ark.runner``
        params: {rate: 30}
        restart: on-failure              # never (default) | on-failure | always
        max_restarts: 5
        restart_delay_s: 0.5
        env: {OMP_NUM_THREADS: "1"}

:func:`load_launch` validates such a file into a :class:`LaunchSpec`; any mistake is one
:class:`~ark.errors.ConfigError` line naming the file, the key (``nodes.1.restart``) and
what was expected. :func:`launch` runs the graph: it hosts the registry in its own process
(so the graph survives node restarts), starts one ``ark.runner`` child per node, prefixes
every line a child prints with the node's name, restarts children per their policy, and on
Ctrl-C, SIGTERM, a stop event or the end of ``duration`` terminates them all (SIGTERM, then
SIGKILL for any that linger).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ark import config as ark_config
from ark.config import ArkConfig
from ark.errors import ConfigError
from ark.registry import ensure_registry

_MODULE_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

RestartPolicy = Literal["never", "on-failure", "always"]


class NodeSpec(BaseModel):
    """One node of a launch file.

    ``node`` names the factory as ``module:Factory`` (a Node subclass or a callable taking
    ``name=`` and ``params=``); ``params`` must be JSON-like because they reach the child on
    its command line. ``restart``: ``never`` leaves an exited node down, ``on-failure``
    restarts it after a non-zero exit, ``always`` after any exit; at most ``max_restarts``
    times, each after ``restart_delay_s``. ``env`` adds environment variables to the child.

    ``host`` must be ``localhost``: starting nodes on remote machines is not supported yet,
    so any other value fails when the file is loaded rather than being silently ignored.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    node: str
    params: dict[str, Any] = Field(default_factory=dict)
    restart: RestartPolicy = "never"
    max_restarts: int = Field(5, ge=0)
    restart_delay_s: float = Field(0.5, ge=0)
    host: str = "localhost"
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise PydanticCustomError("node_name", "expected a non-empty name without spaces, got {value}",
                                      {"value": repr(v)})
        return v

    @field_validator("node")
    @classmethod
    def _module_factory(cls, v: str) -> str:
        if not _MODULE_FACTORY.fullmatch(v):
            raise PydanticCustomError("module_factory", "expected 'module:Factory', got {value}", {"value": repr(v)})
        return v

    @field_validator("params")
    @classmethod
    def _json_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"expected JSON-like values (numbers, strings, lists, mappings): {exc}") from None
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, v: Any) -> Any:
        # YAML reads `THREADS: 1` as an int; environment values are strings either way.
        if isinstance(v, dict):
            return {k: str(x).lower() if isinstance(x, bool) else str(x) if isinstance(x, (int, float)) else x
                    for k, x in v.items()}
        return v

    @field_validator("host")
    @classmethod
    def _local_only(cls, v: str) -> str:
        if v != "localhost":
            raise PydanticCustomError(
                "remote_host", "expected 'localhost' (remote hosts are not supported yet), got {value}",
                {"value": repr(v)})
        return v


class LaunchSpec(BaseModel):
    """A launch file: the nodes to run (unique names) and optionally the registry endpoint."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[NodeSpec] = Field(min_length=1)
    registry: str | None = None

    @field_validator("registry")
    @classmethod
    def _tcp_registry(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("tcp://") and v.rsplit(":", 1)[-1].isdigit()):
            raise ValueError(f"expected tcp://HOST:PORT, got {v!r}")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> "LaunchSpec":
        first: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.name in first:
                raise ValidationError.from_exception_data(self.__class__.__name__, [InitErrorDetails(
                    type=PydanticCustomError("duplicate_name", "node name {name} is already used by nodes.{first}",
                                             {"name": repr(node.name), "first": first[node.name]}),
                    loc=("nodes", i, "name"), input=node.name)])
            first[node.name] = i
        return self


def _describe(err: ValidationError, source: str) -> str:
    """One line: the source, the key path of the first error, and what was expected."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    if first["type"] in ("literal_error", "string_type", "int_parsing", "float_parsing", "int_type",
                         "float_type", "greater_than_equal", "list_type", "dict_type"):
        msg = f"{msg}, got {value!r}"
    return f"{source}: key '{key}': {msg}"


def parse_launch(data: Any, source: str = "<launch>") -> LaunchSpec:
    """Validate a mapping as a LaunchSpec; errors name ``source``, the key and the expectation."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: expected a mapping with a 'nodes' list at the top level, got {got}")
    try:
        return LaunchSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_launch(path: str | Path) -> LaunchSpec:
    """Read and validate a launch file; any problem is a one-line ConfigError naming the file and key."""
    return parse_launch(ark_config.read_yaml(path), str(path))


# --------------------------------------------------------------------------------------
# Supervision


@dataclass
class _Child:
    """The supervisor's record of one node: its current process and its history."""

    spec: NodeSpec
    proc: subprocess.Popen | None = None
    starts: int = 0
    restart_at: float | None = None
    done: bool = False
    last_code: int | None = None
    terminated: bool = False  # we sent it SIGTERM, so dying of it is an orderly stop
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    @property
    def clean(self) -> bool:
        """Whether the node's last process ended the way a stopped node should."""
        code = self.last_code
        return code == 0 or (self.terminated and code in (-signal.SIGTERM, -signal.SIGINT))


_COLOURS = ("36", "33", "35", "32", "34", "91", "96", "93")


class _Output:
    """Writes children's lines and the launcher's own reports, one whole line at a time."""

    def __init__(self, names: list[str]) -> None:
        # Re-entrant: the signal handler reports from the main thread, maybe mid-line.
        self._lock = threading.RLock()
        self._width = max(len(n) for n in [*names, "launch"])
        self._colour = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}

    def _prefix(self, name: str, stream: IO[str]) -> str:
        label = f"[{name}]".ljust(self._width + 2)
        if getattr(stream, "isatty", lambda: False)():
            return f"\033[{self._colour.get(name, '1')}m{label}\033[0m "
        return f"{label} "

    def line(self, name: str, text: str, *, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout  # looked up per line: follows redirection
        with self._lock:
            try:
                stream.write(self._prefix(name, stream) + text.rstrip("\r\n") + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # our own output is gone (closed pipe): keep supervising

    def report(self, text: str) -> None:
        self.line("launch", text, err=True)

    def pump(self, name: str, pipe: IO[bytes], err: bool) -> threading.Thread:
        """Copy ``pipe`` line by line in a daemon thread until the child closes it."""

        def run() -> None:
            with pipe:
                for raw in iter(pipe.readline, b""):
                    self.line(name, raw.decode("utf-8", errors="replace"), err=err)

        t = threading.Thread(target=run, name=f"ark-launch-{name}-{'err' if err else 'out'}", daemon=True)
        t.start()
        return t


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Supervisor:
    """Starts, watches, restarts and finally stops the children of one launch."""

    def __init__(self, spec: LaunchSpec, config: ArkConfig, env: dict[str, str], out: _Output) -> None:
        self.children = [_Child(n) for n in spec.nodes]
        self.config = config
        self.env = env
        self.out = out

    def _start(self, child: _Child) -> None:
        spec = child.spec
        cmd = [sys.executable, "-m", "ark.runner", spec.node, "--name", spec.name,
               "--params", json.dumps(spec.params)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**self.env, **spec.env})
        child.proc, child.restart_at, child.terminated = proc, None, False
        child.starts += 1
        child.readers = [self.out.pump(spec.name, proc.stdout, False), self.out.pump(spec.name, proc.stderr, True)]
        again = f" (restart {child.restarts}/{spec.max_restarts})" if child.restarts else ""
        self.out.report(f"started {spec.name} (pid {proc.pid}){again}")

    def _reap(self, child: _Child, code: int, stopping: bool) -> None:
        """Record an exit and decide whether the node comes back."""
        spec = child.spec
        child.proc, child.last_code = None, code
        for t in child.readers:
            t.join(timeout=1.0)  # print the child's last words before reporting its exit
        wants = spec.restart == "always" or (spec.restart == "on-failure" and code != 0)
        if stopping or not wants:
            child.done = True
            self.out.report(f"{spec.name} {_describe_exit(code)}")
        elif child.restarts >= spec.max_restarts:
            child.done = True
            self.out.report(f"{spec.name} {_describe_exit(code)}; not restarting "
                            f"(max_restarts={spec.max_restarts} reached)")
        else:
            child.restart_at = time.monotonic() + spec.restart_delay_s
            self.out.report(f"{spec.name} {_describe_exit(code)}; restarting in {spec.restart_delay_s:g} s")

    def step(self) -> bool:
        """Reap exited children and start due ones; False once every node is done for good."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and (code := child.proc.poll()) is not None:
                self._reap(child, code, stopping=False)
            if not child.done and child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._start(child)
        return not all(c.done for c in self.children)

    def start_all(self) -> None:
        for child in self.children:
            self._start(child)

    def stop_all(self, timeout: float, force: threading.Event) -> None:
        """SIGTERM every running child, wait up to ``timeout`` s (or until ``force``), then SIGKILL."""
        running = [c for c in self.children if c.proc is not None]
        for child in self.children:
            if child.proc is None and not child.done:  # waiting for a restart that will not come
                child.done = True
                child.restart_at = None
        for child in running:
            child.terminated = True
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(c.proc.poll() is None for c in running) and time.monotonic() < deadline and not force.is_set():
            time.sleep(0.02)
        for child in running:
            if child.proc.poll() is None:
                self.out.report(f"{child.spec.name} did not stop within {timeout:g} s; killing it")
                child.proc.kill()
        for child in running:
            self._reap(child, child.proc.wait(), stopping=True)

    def summary(self) -> int:
        return 0 if all(c.clean for c in self.children) else 1


def _child_environment(config: ArkConfig, config_file: Path) -> dict[str, str]:
    """The environment every launched node starts with: ours, pointed at the launcher's graph."""
    env = dict(os.environ)
    env.update(ARK_CONFIG=str(config_file), ARK_REGISTRY=config.registry, ARK_IPC_DIR=str(config.ipc_dir),
               ARK_HOST=config.host, PYTHONUNBUFFERED="1")
    return env


def launch(spec: LaunchSpec, *, config: ArkConfig | None = None, stop: threading.Event | None = None,
           duration: float | None = None, term_timeout_s: float = 3.0) -> int:
    """Run ``spec``'s nodes as supervised processes until stopped; 0 if every node ended cleanly, else 1.

    The launcher hosts the registry in this process (at ``spec.registry`` if set, else
    ``config``'s, else the configured default) unless one already answers there; it keeps
    serving after this returns, for the life of the process. Every child gets the launcher's
    configuration (written to a temporary file named by ``ARK_CONFIG``, plus ``ARK_REGISTRY``
    and ``ARK_IPC_DIR``) and then its node's ``env``. The launch ends on SIGINT/SIGTERM (when
    called from the main thread), when ``stop`` is set, after ``duration`` seconds, or when
    every node has exited for good; children still running get SIGTERM and, after
    ``term_timeout_s``, SIGKILL. A node ended cleanly if its last process exited 0 or died of
    the launcher's own SIGTERM.
    """
    config = config or ark_config.load()
    if spec.registry is not None:
        config = config.model_copy(update={"registry": spec.registry})
    stop = stop if stop is not None else threading.Event()
    force = threading.Event()
    out = _Output([n.name for n in spec.nodes])
    ensure_registry(config)
    os.makedirs(config.ipc_dir, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ark-launch-"))
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    supervisor = _Supervisor(spec, config, _child_environment(config, config_file), out)
    restore = _install_signals(stop, force, out)
    end = None if duration is None else time.monotonic() + duration
    try:
        supervisor.start_all()
        while supervisor.step():
            if stop.wait(0.05) or (end is not None and time.monotonic() >= end):
                break
    finally:
        try:
            supervisor.stop_all(term_timeout_s, force)
        finally:
            restore()
            shutil.rmtree(tmp, ignore_errors=True)
    rc = supervisor.summary()
    failed = [c.spec.name for c in supervisor.children if not c.clean]
    out.report("all nodes stopped cleanly" if rc == 0 else f"nodes that did not end cleanly: {', '.join(failed)}")
    return rc


def _install_signals(stop: threading.Event, force: threading.Event, out: _Output) -> Callable[[], None]:
    """On SIGINT/SIGTERM set ``stop``; a second signal sets ``force`` (skip the grace period)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            force.set()
        else:
            out.report(f"{signal.Signals(signum).name}: stopping all nodes (again to kill them at once)")
            stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore
