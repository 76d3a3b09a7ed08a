"""The registry: one per graph, liveness, restarts, and garbage requests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import msgpack
import numpy as np
import pytest
import zmq

from ark import Float64Array, Node, RegistryUnreachable
from ark.registry import Registry, RegistryClient
from conftest import wait_until

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from ark import Node
    import ark.registry as r
    n = Node(sys.argv[1]).start()
    hosting = bool(r._embedded)
    time.sleep(float(sys.argv[2]))
    graph = n.registry.request("graph")
    print(json.dumps({"hosting": hosting, "nodes": sorted(v["name"] for v in graph["nodes"].values())}), flush=True)
    time.sleep(float(sys.argv[3]))
    n.shutdown()
    """
)


def test_exactly_one_registry_when_processes_start_together(cfg, env_for):
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, f"n{i}", "2.0", "1.5"], env=env_for,
                              stdout=subprocess.PIPE, text=True) for i in range(6)]
    outs = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs]
    assert sum(o["hosting"] for o in outs) == 1
    for o in outs:  # everyone sees everyone: one graph, not several
        assert o["nodes"] == [f"n{i}" for i in range(6)]


def test_nodes_survive_a_registry_restart(cfg):
    standalone = cfg.model_copy(update={"auto_registry": False})
    reg = Registry(standalone).start()
    a, b = Node("a", config=standalone).start(), Node("b", config=standalone).start()
    got = []
    b.subscriber("/x", Float64Array, got.append)
    pub = a.publisher("/x", Float64Array)
    assert wait_until(lambda: (pub.publish(Float64Array(np.zeros(1))), got)[1])
    reg.stop()
    time.sleep(0.3)
    reg = Registry(standalone).start()  # a fresh registry knows nothing
    client = RegistryClient(standalone)

    def restored():
        graph = client.request("graph")
        return len(graph["nodes"]) == 2 and "/x" in graph["publishers"] and "/x" in graph["subscribers"]

    assert wait_until(restored, 5)
    n = len(got)
    assert wait_until(lambda: (pub.publish(Float64Array(np.zeros(1))), len(got) > n)[1])
    a.shutdown(), b.shutdown()
    reg.stop()


def test_a_node_takes_over_when_the_embedded_registry_dies(cfg, env_for):
    host = subprocess.Popen([sys.executable, "-c", CHILD, "host", "0.5", "0"], env=env_for, stdout=subprocess.PIPE, text=True)
    assert wait_until(lambda: _answers(cfg), 15)
    a = Node("survivor", config=cfg).start()
    import ark.registry as r

    assert cfg.registry not in r._embedded
    host.communicate(timeout=30)  # the hosting process exits, taking its registry along
    assert wait_until(lambda: cfg.registry in r._embedded, 10)
    assert wait_until(lambda: "survivor" in [v["name"] for v in a.registry.request("graph")["nodes"].values()], 5)
    a.shutdown()


def _answers(cfg):
    try:
        RegistryClient(cfg).request("ping", timeout=0.2)
        return True
    except RegistryUnreachable:
        return False


def test_stale_nodes_disappear(cfg):
    reg = Registry(cfg).start()
    client = RegistryClient(cfg)
    client.request("register", node="ghost", name="ghost", pid=1, host="h")
    client.request("advertise", node="ghost", topic="/g", schema="ark/String", version=1,
                   endpoints={"tcp": "tcp://127.0.0.1:1"}, host="h")
    assert "/g" in client.request("graph")["publishers"]
    assert wait_until(lambda: "/g" not in client.request("graph")["publishers"], 3)
    assert client.request("graph")["nodes"] == {}
    reg.stop()


def test_garbage_requests_get_errors_and_the_registry_keeps_serving(cfg):
    reg = Registry(cfg).start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(cfg.registry)
    for payload in (b"\xc1", msgpack.packb([1]), msgpack.packb({"op": "nope"}), msgpack.packb({"op": "advertise"})):
        sock.send_multipart([b"", payload])
        assert sock.poll(2000)
        reply = msgpack.unpackb(sock.recv_multipart()[-1])
        assert reply["ok"] is False and reply["error"]
    sock.send_multipart([b"only-one-frame"])  # no envelope: nothing to answer, only counted
    assert wait_until(lambda: reg.bad_requests >= 3)
    sock.close(0)
    assert RegistryClient(cfg).request("ping")["ok"]
    reg.stop()


def test_unreachable_registry_is_one_line_error(cfg):
    with pytest.raises(RegistryUnreachable, match="no registry at tcp://127.0.0.1"):
        Node("lonely", config=cfg.model_copy(update={"auto_registry": False, "request_timeout_s": 0.2}))
