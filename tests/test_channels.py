"""Publish-subscribe between nodes: delivery, queues, latching, and peers that misbehave."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zmq

from ark import Float64Array, Image, Node, RegistryError, SchemaError, String
from conftest import wait_until


def connected(sub, n=1):
    return wait_until(lambda: len(sub.connected) >= n and not sub.pending_endpoints, 5)


def prime(pub, sub, msg):
    """Publish until the subscriber has seen one message (PUB/SUB drops before the link is up)."""
    for _ in range(500):
        pub.publish(msg)
        if sub.received:
            return
        if not sub.node.spinning:
            sub.node.spin_once(0.01)
        time.sleep(0.01)
    raise AssertionError("subscriber never connected")


def test_messages_flow_in_order_with_metadata(cfg):
    a, b = Node("talker", config=cfg).start(), Node("listener", config=cfg).start()
    got = []
    sub = b.subscriber("/chatter", String, lambda m, info: got.append((m.data, info.seq, info.source)), queue=1000)
    pub = a.publisher("/chatter", String)
    prime(pub, sub, String("warm"))
    for i in range(200):
        pub.publish(String(f"m{i}"))
    assert wait_until(lambda: got and got[-1][0] == "m199")
    tail = got[[d for d, _, _ in got].index("m0"):]
    assert [d for d, _, _ in tail] == [f"m{i}" for i in range(200)]
    assert all(s2 == s1 + 1 for (_, s1, _), (_, s2, _) in zip(tail, tail[1:]))
    assert tail[0][2] == a.id
    a.shutdown(), b.shutdown()


def test_polling_subscriber_and_big_frames(cfg):
    a, b = Node("cam", config=cfg).start(), Node("viewer", config=cfg)
    sub = b.subscriber("/camera/rgb", Image, queue=4)
    pub = a.publisher("/camera/rgb", Image)
    frame = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    got = None
    for _ in range(300):
        pub.publish(Image(frame))
        got = sub.recv(timeout=0.02)
        if got is not None:
            break
    assert got is not None and np.array_equal(got.data, frame)
    a.shutdown(), b.shutdown()


def test_slow_subscriber_has_bounded_queue_and_counts_drops(cfg):
    a, b = Node("fast", config=cfg).start(), Node("slow", config=cfg).start()
    seen = []

    def slow(msg):
        seen.append(int(msg.data[0]))
        time.sleep(0.01)

    sub = b.subscriber("/fast", Float64Array, slow, queue=5)
    pub = a.publisher("/fast", Float64Array)
    prime(pub, sub, Float64Array(np.array([-1.0])))
    for i in range(1000):  # ~1 kHz against a callback that manages ~100 Hz
        pub.publish(Float64Array(np.array([float(i)])))
        time.sleep(0.001)
    assert wait_until(lambda: seen and seen[-1] == 999, 10)
    assert len(sub.queue) <= 5
    assert sub.dropped > 500  # it cannot keep up; the oldest were dropped and counted
    assert sub.received + sub.dropped >= 1000
    # what was delivered is in order and ends with the newest
    delivered = [s for s in seen if s >= 0]
    assert delivered == sorted(delivered)
    a.shutdown(), b.shutdown()


def test_latest_only_delivers_newest(cfg):
    a, b = Node("fast", config=cfg).start(), Node("slow", config=cfg)
    sub = b.subscriber("/state", Float64Array, latest_only=True)
    pub = a.publisher("/state", Float64Array)
    prime(pub, sub, Float64Array(np.array([-1.0])))
    for i in range(100):
        pub.publish(Float64Array(np.array([float(i)])))
    time.sleep(0.2)
    assert wait_until(lambda: (m := sub.latest()) is not None and m.data[0] == 99.0 or sub.received >= 100, 3)
    a.shutdown(), b.shutdown()


def test_latched_publisher_reaches_late_joiner_without_duplicates(cfg):
    a = Node("map_server", config=cfg).start()
    pub = a.publisher("/map", String, latched=True)
    pub.publish(String("the map"))
    b = Node("late", config=cfg).start()
    first = []
    b.subscriber("/map", String, first.append)
    assert wait_until(lambda: first, 5)
    c = Node("later", config=cfg).start()
    second = []
    c.subscriber("/map", String, second.append)
    assert wait_until(lambda: second, 5)
    time.sleep(0.2)
    assert [m.data for m in first] == ["the map"] and [m.data for m in second] == ["the map"]
    for n in (a, b, c):
        n.shutdown()


def test_wrong_schema_on_topic_is_refused_in_one_line(cfg):
    a = Node("a", config=cfg).start()
    a.publisher("/chatter", String)
    with pytest.raises(RegistryError, match="carries ark/String v1, not ark/Image v1"):
        a.subscriber("/chatter", Image)
    with pytest.raises(SchemaError, match="carries ark/String"):
        a.publisher("/chatter", String).publish(Image())
    a.shutdown()


def test_garbage_from_the_network_is_dropped_and_counted(cfg):
    b = Node("victim", config=cfg).start()
    got = []
    sub = b.subscriber("/t", Float64Array, got.append)
    rogue = zmq.Context.instance().socket(zmq.PUB)
    port = rogue.bind_to_random_port("tcp://127.0.0.1")
    b._set_targets(sub, [{"endpoints": {"tcp": f"tcp://127.0.0.1:{port}"}, "host": "elsewhere"}])
    assert connected(sub)
    from ark.wire import encode

    good = encode(b"/t", Float64Array(np.arange(3.0)), 1, 0, "rogue")
    bad = [
        [b"/t"],
        [b"/t", b"\x00\xff\xfe"],
        [b"/t", good[1]],  # header promises a buffer that never comes
        [b"/t", good[1], b"short"],
        [b"/t", encode(b"/t", String("x"), 1, 0, "r")[1]],  # another schema
    ]
    for _ in range(200):
        for frames in bad:
            rogue.send_multipart(frames)
        rogue.send_multipart(good)
        if got:
            break
        time.sleep(0.01)
    assert wait_until(lambda: got)
    assert got[0].data.tolist() == [0.0, 1.0, 2.0]
    assert sub.decode_errors >= len(bad)
    assert b._thread.is_alive()
    rogue.close(0)
    b.shutdown()


def test_oversized_message_is_refused(cfg):
    small = cfg.model_copy(update={"max_message_bytes": 10_000})
    a, b = Node("a", config=cfg).start(), Node("b", config=small).start()
    got = []
    sub = b.subscriber("/big", Float64Array, got.append)
    pub = a.publisher("/big", Float64Array)
    prime(pub, sub, Float64Array(np.zeros(10)))
    for _ in range(3):
        pub.publish(Float64Array(np.zeros(5000)))  # 40 kB > 10 kB: refused by the transport
    n = len(got)
    # the link to the offending publisher is dropped and re-established; later messages arrive
    assert wait_until(lambda: (pub.publish(Float64Array(np.ones(10))), len(got) > n + 2)[1], 5)
    assert all(m.data.size == 10 for m in got)
    assert sub.dropped >= 3  # the refused messages show up as a sequence gap
    assert b._thread.is_alive()
    a.shutdown(), b.shutdown()


PUBLISHER = textwrap.dedent(
    """
    import numpy as np, time
    from ark import Node, Float64Array
    n = Node("doomed").start()
    pub = n.publisher("/stream", Float64Array)
    i = 0
    while True:
        pub.publish(Float64Array(np.full(100, float(i)))); i += 1
        time.sleep(0.002)
    """
)


def test_publisher_killed_mid_stream(cfg, env_for):
    b = Node("survivor", config=cfg).start()
    got = []
    sub = b.subscriber("/stream", Float64Array, got.append)
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=env_for)
    try:
        assert wait_until(lambda: len(got) > 20, 15)
    finally:
        proc.kill()
        proc.wait(5)
    n = len(got)
    # the dead node goes stale and leaves the graph; the subscriber keeps running
    assert wait_until(lambda: not b.registry.request("lookup", topic="/stream")["publishers"], 5)
    assert b._thread.is_alive() and sub.decode_errors == 0
    # a new publisher on the same topic is picked up
    c = Node("replacement", config=cfg).start()
    pub = c.publisher("/stream", Float64Array)
    assert wait_until(lambda: (pub.publish(Float64Array(np.zeros(100))), len(got) > n)[1], 5)
    b.shutdown(), c.shutdown()
