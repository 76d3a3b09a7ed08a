"""Nodes: services, parameters, timers, shutdown on signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ark import ArkError, Empty, Node, NotFound, Parameter, Result, SchemaError, ServiceError, ServiceTimeout, String
from ark.registry import RegistryClient
from conftest import wait_until


def test_service_call_roundtrip_errors_and_timeouts(cfg):
    server, caller = Node("server", config=cfg).start(), Node("caller", config=cfg)

    def handler(req: String) -> Result:
        if req.data == "boom":
            raise ValueError("cannot boom")
        if req.data == "slow":
            time.sleep(0.5)
        return Result(True, req.data.upper())

    server.service("/shout", String, Result, handler)
    client = caller.client("/shout", String, Result)
    assert client.call(String("hi")) == Result(True, "HI")
    with pytest.raises(ServiceError, match="ValueError: cannot boom"):
        client.call(String("boom"))
    with pytest.raises(ServiceTimeout, match="did not answer within 0.1s"):
        client.call(String("slow"), timeout=0.1)
    time.sleep(0.5)
    assert client.call(String("again")).message == "AGAIN"  # the late reply to 'slow' is skipped
    with pytest.raises(NotFound, match="no service /nothing"):
        caller.call("/nothing", Empty(), Result)
    with pytest.raises(SchemaError, match="takes ark/String -> ark/Result"):
        caller.call("/shout", Empty(), Result)
    with pytest.raises(SchemaError, match="takes ark/String, not Empty"):
        client.call(Empty())
    server.shutdown(), caller.shutdown()


def test_a_call_follows_a_restarted_server_to_its_new_endpoint(cfg):
    """A restarted server binds new endpoints; the client's next call finds them through the
    registry within the same call instead of timing out once on the old ones."""
    caller = Node("caller", config=cfg)
    client = caller.client("/shout", String, Result)
    first = Node("server", config=cfg).start()
    first.service("/shout", String, Result, lambda r: Result(True, "first " + r.data))
    assert client.call(String("hi")).message == "first hi"
    first.shutdown()
    second = Node("server", config=cfg).start()
    second.service("/shout", String, Result, lambda r: Result(True, "second " + r.data))
    try:
        assert client.call(String("hi"), timeout=3.0).message == "second hi"
        assert client.call(String("again")).message == "second again"
    finally:
        second.shutdown(), caller.shutdown()


def test_two_nodes_cannot_serve_the_same_name(cfg):
    a, b = Node("a", config=cfg), Node("b", config=cfg)
    a.service("/svc", Empty, Result, lambda r: Result())
    with pytest.raises(ArkError, match="already provided by node a"):
        b.service("/svc", Empty, Result, lambda r: Result())
    a.shutdown(), b.shutdown()


def test_a_node_whose_constructor_fails_leaves_the_graph(cfg):
    class Server(Node):
        def __init__(self, name: str) -> None:
            super().__init__(name, config=cfg)
            self.service("/svc", Empty, Result, lambda r: Result())

    first = Server("first")
    with pytest.raises(ArkError, match="already provided by node first"):
        Server("second")
    registry = RegistryClient(cfg)
    names = lambda: {node_id.rsplit("-", 2)[0] for node_id in registry.request("graph")["nodes"]}  # noqa: E731
    assert wait_until(lambda: "second" not in names(), 3), "the half-built node is still registered"
    assert "first" in names()
    first.shutdown()
    Server("second").shutdown()  # the name is free again


def test_parameters_are_readable_and_settable_remotely(cfg):
    node = Node("arm", config=cfg, params={"gain": 2.5}).start()
    other = Node("tool", config=cfg)
    assert other.call("arm/param", Parameter("gain"), Parameter).value == 2.5
    assert other.call("arm/param", Parameter("gain", 4.0), Parameter).value == 4.0
    assert node.param("gain") == 4.0
    assert other.call("arm/param", Parameter(""), Parameter).value == {"gain": 4.0}
    with pytest.raises(ServiceError, match="no parameter 'nope'"):
        other.call("arm/param", Parameter("nope"), Parameter)
    node.shutdown(), other.shutdown()


def test_timer_rate_and_overruns(cfg):
    node = Node("clock", config=cfg)
    ticks = []
    fast = node.timer(50, lambda: ticks.append(time.monotonic()))
    slow = node.timer(100, lambda: time.sleep(0.025))  # needs 25 ms of a 10 ms period
    node.spin(duration=0.5)
    assert 15 <= len(ticks) <= 27  # ~50 Hz, the slow timer eats into it a little
    assert slow.overruns >= 10
    assert fast.ticks == len(ticks)
    node.shutdown()


NODE = textwrap.dedent(
    """
    from ark import Node, String
    n = Node("daemon")
    n.publisher("/alive", String)
    t = n.timer(100, lambda: (print("ready", flush=True), t.cancel()))  # printed once spinning
    n.spin()
    print("clean exit", flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_spin_returns_cleanly_on_signals_and_leaves_the_graph(cfg, env_for, sig):
    Node("observer", config=cfg)  # hosts the registry for the child
    proc = subprocess.Popen([sys.executable, "-c", NODE], env=env_for, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    client = RegistryClient(cfg)
    assert "/alive" in client.request("graph")["publishers"]
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "clean exit" in out
    # it unregistered on the way out, without waiting to go stale
    assert "/alive" not in client.request("graph")["publishers"]


def test_threads_in_one_process(cfg):
    nodes = [Node(f"n{i}", config=cfg).start() for i in range(4)]
    got = []
    nodes[0].subscriber("/ring", String, lambda m: got.append(m.data), queue=100)
    pubs = [n.publisher("/ring", String) for n in nodes[1:]]
    assert wait_until(lambda: ([p.publish(String(p.node.name)) for p in pubs], set(got) >= {"n1", "n2", "n3"})[1], 5)
    for n in nodes:
        n.shutdown()
