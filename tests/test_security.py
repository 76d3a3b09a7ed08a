"""CurveZMQ: with keys configured, only authorized peers can register, subscribe or publish."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from ark import Float64Array, Node, Result, RegistryUnreachable, String
from ark.config import SecurityConfig
from ark.security import generate_keys
from conftest import wait_until


@pytest.fixture
def secure(cfg, tmp_path):
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    public, secret = generate_keys(keys, "graph")
    authorized.mkdir()
    (authorized / "graph.key").write_bytes(public.read_bytes())
    intruder_public, intruder_secret = generate_keys(keys, "intruder")
    good = cfg.model_copy(update={"security": SecurityConfig(secret_key=secret, authorized_keys=authorized)})
    bad = cfg.model_copy(update={
        "auto_registry": False, "request_timeout_s": 0.3,
        "security": SecurityConfig(secret_key=intruder_secret, authorized_keys=authorized, registry_key=public)})
    return good, bad, cfg.model_copy(update={"auto_registry": False, "request_timeout_s": 0.3})


def test_authorized_nodes_talk_and_intruders_are_shut_out(secure):
    good, intruder_cfg, plain_cfg = secure
    a, b = Node("a", config=good).start(), Node("b", config=good).start()
    got = []
    b.subscriber("/secret", Float64Array, got.append)
    pub = a.publisher("/secret", Float64Array)
    a.service("/svc", String, Result, lambda r: Result(True, "ok"))
    assert wait_until(lambda: (pub.publish(Float64Array(np.arange(3.0))), got)[1], 5)
    assert b.call("/svc", String("x"), Result).message == "ok"

    # cannot register: neither without keys nor with a key the graph does not authorize
    with pytest.raises(RegistryUnreachable):
        Node("plain", config=plain_cfg)
    with pytest.raises(RegistryUnreachable):
        Node("intruder", config=intruder_cfg)

    # cannot subscribe, even knowing a publisher's endpoint and the server's public key
    endpoint = pub.endpoints["tcp"]
    ctx = zmq.Context.instance()
    plain_sub = ctx.socket(zmq.SUB)
    plain_sub.subscribe(b"")
    plain_sub.connect(endpoint)
    curve_sub = ctx.socket(zmq.SUB)
    curve_sub.subscribe(b"")
    pk, sk = zmq.curve_keypair()
    curve_sub.curve_publickey, curve_sub.curve_secretkey = pk, sk
    curve_sub.curve_serverkey = a.security.public_key
    curve_sub.connect(endpoint)
    n = len(got)
    for _ in range(30):
        pub.publish(Float64Array(np.arange(3.0)))
        time.sleep(0.01)
    assert len(got) > n  # the authorized subscriber still receives
    assert not plain_sub.poll(200) and not curve_sub.poll(200)

    # cannot call services or push frames into the graph's sockets
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(a.services[-1].endpoints["tcp"])
    dealer.send_multipart([b"", b"1", b"/svc", b"junk"])
    assert not dealer.poll(300)
    assert a.services[-1].calls == 1

    for s in (plain_sub, curve_sub, dealer):
        s.close(0)
    a.shutdown(), b.shutdown()


def test_missing_key_files_fail_at_load(cfg, tmp_path):
    from ark.errors import ConfigError

    bad = cfg.model_copy(update={"security": SecurityConfig(secret_key=tmp_path / "nope", authorized_keys=tmp_path)})
    with pytest.raises(ConfigError, match="cannot load certificate"):
        Node("n", config=bad)
