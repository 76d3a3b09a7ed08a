"""The ark command line against a live graph: output a user reads, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from ark import Float64Array, Node, Result, String
from conftest import wait_until


def ark(env, *args, timeout=30):
    return subprocess.run([sys.executable, "-m", "ark.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def graph(cfg):
    talker = Node("talker", config=cfg, params={"gain": 1.5}).start()
    pub = talker.publisher("/chatter", String)
    arr = talker.publisher("/values", Float64Array)
    talker.service("/shout", String, Result, lambda r: Result(True, r.data.upper()))
    talker.timer(50, lambda: (pub.publish(String("hello")), arr.publish(Float64Array(np.arange(3.0)))))
    yield talker
    talker.shutdown()


def test_lists_show_nodes_topics_services(graph, env_for):
    nodes = ark(env_for, "node", "list")
    assert nodes.returncode == 0 and "talker" in nodes.stdout and "/chatter" in nodes.stdout
    topics = ark(env_for, "topic", "list")
    assert "/chatter" in topics.stdout and "ark/String v1" in topics.stdout
    services = ark(env_for, "service", "list")
    assert "/shout" in services.stdout and "ark/Result" in services.stdout


def test_echo_pub_hz_and_call(graph, env_for):
    echo = ark(env_for, "topic", "echo", "/values", "-n", "2", "--json")
    assert echo.returncode == 0, echo.stderr
    docs = [json.loads(chunk) for chunk in echo.stdout.strip().replace("}\n{", "}\x00{").split("\x00")]
    assert len(docs) == 2 and docs[0]["data"] == [0.0, 1.0, 2.0]

    heard = []
    listener = Node("listener", config=graph.config).start()
    listener.subscriber("/cmd", String, lambda m: heard.append(m.data))
    pub = ark(env_for, "topic", "pub", "/cmd", "ark/String", '{"data": "go"}', "-n", "3", "--rate", "20")
    assert pub.returncode == 0, pub.stderr
    assert wait_until(lambda: heard, 3) and heard[0] == "go"

    hz = ark(env_for, "topic", "hz", "/chatter", "--window", "0.5", "--duration", "1.1")
    assert hz.returncode == 0, hz.stderr
    rates = [float(line.split()[1]) for line in hz.stdout.splitlines() if line.startswith("/chatter")]
    assert rates and 20 < max(rates) < 80  # published at 50 Hz

    call = ark(env_for, "service", "call", "/shout", '{"data": "hey"}')
    assert call.returncode == 0 and json.loads(call.stdout) == {"success": True, "message": "HEY"}
    param = ark(env_for, "service", "call", "talker/param", '{"name": "gain"}')
    assert json.loads(param.stdout)["value"] == 1.5
    listener.shutdown()


def test_hz_shows_a_slow_subscribers_drops(graph, env_for):
    slow = Node("slowpoke", config=graph.config).start()
    slow.subscriber("/chatter", String, lambda m: time.sleep(0.05), queue=1)
    time.sleep(1.0)
    hz = ark(env_for, "topic", "hz", "/chatter", "--window", "0.5", "--duration", "1.1")
    line = [l for l in hz.stdout.splitlines() if "slowpoke" in l][-1]
    dropped = int(line.split("slowpoke:")[1].split()[0])
    assert dropped > 0
    slow.shutdown()


@pytest.mark.parametrize(
    "args, message",
    [
        (("topic", "echo", "/nope", "--timeout", "1"), "no topic /nope in the graph"),
        (("topic", "pub", "/chatter", "ark/Image", "{}"), "carries ark/String v1, not ark/Image"),
        (("topic", "pub", "/x", "ark/Nope", "{}"), "unknown schema 'ark/Nope'"),
        (("topic", "pub", "/x", "ark/String", "{bad json"), "not valid JSON"),
        (("topic", "pub", "/x", "ark/String", '{"speed": 1}'), "unknown field(s) speed"),
        (("service", "call", "/missing"), "no service /missing"),
        (("launch", "/no/such/file.yaml"), "no such file"),
    ],
)
def test_user_mistakes_are_one_line_errors(graph, env_for, args, message):
    res = ark(env_for, *args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unreachable_registry(env_for):
    env = dict(env_for, ARK_REGISTRY="tcp://127.0.0.1:9")
    res = ark(env, "topic", "list")
    assert res.returncode == 2 and "no registry answered" in res.stderr and "Traceback" not in res.stderr


def test_bad_config_file_names_file_and_key(env_for, tmp_path):
    bad = tmp_path / "ark.yaml"
    bad.write_text("heartbeat_s: -1\n")
    res = ark(dict(env_for, ARK_CONFIG=str(bad)), "topic", "list")
    assert res.returncode == 2 and str(bad) in res.stderr and "heartbeat_s" in res.stderr
    bad.write_text("registry: [unclosed\n")
    res = ark(dict(env_for, ARK_CONFIG=str(bad)), "topic", "list")
    assert res.returncode == 2 and "invalid YAML" in res.stderr


def test_standalone_registry_refuses_a_taken_port(graph, env_for):
    res = ark(env_for, "registry")
    assert res.returncode == 2 and "already listens" in res.stderr
