"""Launch files and the launcher: validation errors, a real multi-process graph, restarts, shutdown, the runner."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ark.demo_nodes import square_centre
from ark.errors import ConfigError
from ark.launch import LaunchSpec, launch, load_launch, parse_launch
from ark.messages import DictArrays
from ark.node import Node
from conftest import PYTHON, wait_until

REPO = Path(__file__).resolve().parent.parent
FIXTURES_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parent),
                                                         os.environ.get("PYTHONPATH", "")) if p)}


def runner_children() -> list[int]:
    """Pids of this process's children that run ``ark.runner`` or were never reaped (zombies).

    Read from POSIX ``ps`` (Linux and macOS alike), so the check runs everywhere the tests do."""
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 3:
            continue
        pid, ppid, state = int(parts[0]), int(parts[1]), parts[2]
        args = parts[3] if len(parts) > 3 else ""
        if ppid == os.getpid() and ("ark.runner" in args or state.startswith("Z")):
            found.append(pid)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def run_in_thread(spec: LaunchSpec, **kw) -> tuple[threading.Thread, dict]:
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", launch(spec, **kw)), daemon=True)
    t.start()
    return t, result


# -- launch files ---------------------------------------------------------------------

GOOD_NODE = "  - name: camera\n    node: ark.demo_nodes:CameraNode\n"


@pytest.mark.parametrize("text, key, expected", [
    (GOOD_NODE + "  - name: proc\n    node: ark.demo_nodes:ProcessorNode\n    restart: sometimes\n",
     "nodes.1.restart", "'never', 'on-failure' or 'always'"),
    (GOOD_NODE + GOOD_NODE, "nodes.1.name", "already used by nodes.0"),
    ("  - name: camera\n    params: {rate: 5}\n", "nodes.0.node", "Field required"),
    ("  - name: camera\n    node: CameraNode\n", "nodes.0.node", "expected 'module:Factory'"),
    (GOOD_NODE + "    host: jetson.local\n", "nodes.0.host", "remote hosts are not supported"),
    (GOOD_NODE + "    max_restarts: -1\n", "nodes.0.max_restarts", "greater than or equal to 0"),
    (GOOD_NODE + "    restrat: always\n", "nodes.0.restrat", "Extra inputs are not permitted"),
])
def test_bad_launch_file_names_file_key_and_expectation(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text("nodes:\n" + text)
    with pytest.raises(ConfigError) as err:
        load_launch(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and f"'{key}'" in msg and expected in msg


def test_bad_yaml_and_missing_or_empty_files_are_one_line_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes:\n  - name: camera\n    node: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(broken))}: line \d+ invalid YAML"):
        load_launch(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="expected a mapping with a 'nodes' list"):
        load_launch(empty)
    with pytest.raises(ConfigError, match="no such file"):
        load_launch(tmp_path / "absent.yaml")


def test_defaults_and_the_shipped_demo_graph() -> None:
    spec = load_launch(REPO / "configs" / "demo.yaml")
    assert [n.name for n in spec.nodes] == ["camera", "processor", "monitor"]
    assert spec.nodes[0].restart == "on-failure"
    proc = spec.nodes[1]
    assert (proc.restart, proc.max_restarts, proc.restart_delay_s, proc.host, proc.params, proc.env) == \
        ("never", 5, 0.5, "localhost", {}, {})
    spec = parse_launch({"nodes": [{"name": "a", "node": "m:F", "env": {"THREADS": 1, "DEBUG": True}}]})
    assert spec.nodes[0].env == {"THREADS": "1", "DEBUG": "true"}


# -- running graphs ---------------------------------------------------------------------

def test_launched_demo_graph_delivers_features_between_processes(cfg) -> None:
    spec = load_launch(REPO / "configs" / "demo.yaml")
    stop = threading.Event()
    probe = Node("probe", config=cfg)
    got: list[DictArrays] = []
    probe.subscriber("/camera/features", DictArrays, got.append, queue=100)
    probe.start()
    t, result = run_in_thread(spec, config=cfg, stop=stop)
    try:
        assert wait_until(lambda: len(got) >= 5, timeout=15), "no features reached the probe"
        graph = probe.registry.request("graph")
        by_name = {n["name"]: n["pid"] for n in graph["nodes"].values()}
        assert {"camera", "processor", "monitor"} <= set(by_name)
        children = runner_children()
        assert sorted(children) == sorted(by_name[n] for n in ("camera", "processor", "monitor"))
    finally:
        stop.set()
        t.join(timeout=10)
        probe.shutdown()
    assert not t.is_alive() and result["rc"] == 0
    for msg in got:
        assert msg.arrays["thumb"].shape == (240, 320, 3)
        np.testing.assert_allclose(msg.arrays["centroid"], square_centre(msg.meta["frame_seq"]))
        assert msg.meta["camera_stamp_ns"] <= time.time_ns()
    assert runner_children() == []
    assert not any(alive(pid) for pid in children)


def test_on_failure_node_is_restarted_up_to_max_restarts(cfg, capfd) -> None:
    spec = parse_launch({"nodes": [
        {"name": "crashy", "node": "launch_fixtures:CrashingNode", "restart": "on-failure", "max_restarts": 2,
         "restart_delay_s": 0.1, "env": FIXTURES_ENV},
        {"name": "once", "node": "launch_fixtures:CrashingNode", "env": FIXTURES_ENV},  # restart: never
    ]})
    start = time.monotonic()
    rc = launch(spec, config=cfg, duration=25)
    assert time.monotonic() - start < 25, "the launch should end by itself once no node may restart"
    assert rc == 1
    out, err = capfd.readouterr()
    # Each child's lines arrive prefixed with its node name.
    assert len(re.findall(r"^\[crashy\]\s+crashy: started$", out, re.M)) == 3  # first run + 2 restarts
    assert len(re.findall(r"^\[once\]\s+once: started$", out, re.M)) == 1
    assert err.count("crashy exited with code 3") == 3
    assert "crashy exited with code 3; not restarting (max_restarts=2 reached)" in err
    assert err.count("once exited with code 3") == 1
    assert runner_children() == []


def test_stop_terminates_every_child_and_kills_those_ignoring_sigterm(cfg, capfd) -> None:
    spec = parse_launch({"nodes": [
        {"name": "camera", "node": "ark.demo_nodes:CameraNode", "params": {"rate": 5, "height": 48, "width": 64,
                                                                           "size": 8}},
        {"name": "stubborn", "node": "launch_fixtures:StubbornNode", "env": FIXTURES_ENV},
    ]})
    stop = threading.Event()
    t, result = run_in_thread(spec, config=cfg, stop=stop, term_timeout_s=1.0)
    out: list[str] = []
    try:
        assert wait_until(lambda: out.append(capfd.readouterr().out) or "ignoring SIGTERM" in "".join(out),
                          timeout=15, step=0.05)
        children = runner_children()
        assert len(children) == 2
    finally:
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive()
    assert result["rc"] == 1  # the stubborn node had to be killed
    err = capfd.readouterr().err
    assert "camera exited with code 0" in err
    assert "stubborn did not stop within 1 s; killing it" in err and "stubborn killed by SIGKILL" in err
    assert runner_children() == []
    assert not any(alive(pid) for pid in children)


# -- the runner -----------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["bad.module:X", "--name", "x"], "cannot import 'bad.module'"),
    (["ark.demo_nodes:Nope", "--name", "x"], "has no attribute 'Nope'"),
    (["ark.demo_nodes", "--name", "x"], "expected MODULE:FACTORY"),
    (["ark.demo_nodes:CameraNode", "--name", "x", "--params", "{rate: 1"], "--params is not valid JSON"),
    (["ark.demo_nodes:CameraNode", "--name", "x", "--params", "[1]"], "must be a JSON object"),
    (["launch_fixtures:not_a_node", "--name", "x"], "returned a str, not a Node"),
    (["ark.demo_nodes:CameraNode"], "--name"),
])
def test_runner_user_errors_are_one_line_and_exit_2(env_for, args: list[str], expected: str) -> None:
    proc = subprocess.run([PYTHON, "-m", "ark.runner", *args], env={**env_for, **FIXTURES_ENV},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert proc.stdout == ""
