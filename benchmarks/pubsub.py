"""Ark pub/sub against raw pyzmq: one publisher process -> one subscriber process, same host.

    python benchmarks/pubsub.py                 # full run (well under 2 minutes)
    python benchmarks/pubsub.py --quick         # smaller sample counts
    python benchmarks/pubsub.py --json out.json # also write every number as JSON

For each payload (64 B, 4 KiB, 1 MiB as ``NDArray`` uint8; one 1080p RGB frame, 6.2 MB, as
``Image``) it measures

* one-way latency (p50/p99): the publisher stamps ``time.time_ns()`` when it publishes
  (Ark stamps the header itself; raw pyzmq sends an 8-byte stamp frame before the payload),
  the subscriber takes ``time.time_ns()`` when the message reaches user code (Ark: the
  callback; raw: after ``recv_multipart`` and ``np.frombuffer``). Both processes are on one
  host, so CLOCK_REALTIME is one clock. Sending is paced (1 ms for small payloads, 5 ms for
  1 MiB, 20 ms for frames) after a warm-up that also waits for the connection;
* throughput: the publisher sends N messages as fast as it can with high-water marks and
  queues large enough that nothing is dropped; messages/s is delivered messages over the
  time from the first message's publish stamp to the last delivery (end to end, so a
  receiver that batches gains nothing from it); GB/s = messages/s x payload bytes / 1e9.
  Three bursts per system, alternating, the median reported.

The raw baseline is the floor: ``PUB``/``SUB`` over ``ipc://``, a two-frame multipart message
``[stamp, payload]``, copy=True receive for small payloads and zero-copy Frames for big ones.
Ark runs its registry in this (orchestrating) process, so neither measured process serves
registry traffic beyond its own heartbeats. All four processes (two per system) stay up for
the whole run and the systems take turns: latency samples are taken in rounds that
alternate raw/Ark, throughput bursts likewise, so a change in background load hits both
alike. Payload bytes come from a seeded generator. The run prints the 1-minute load
average before and after: on a shared 2-core machine, other work moves these numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Payload specs: label, shape, Ark schema, latency samples, pacing (s), throughput messages.
FRAME_SHAPE = (1080, 1920, 3)


@dataclass(frozen=True)
class Spec:
    label: str
    topic: str
    shape: tuple[int, ...]
    schema: str  # "NDArray" or "Image"
    lat_n: int
    lat_interval: float
    tp_n: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


def make_specs(quick: bool) -> list[Spec]:
    q = 4 if quick else 1
    return [
        Spec("64 B", "/bench/64B", (64,), "NDArray", 1000 // q, 0.001, 10000 // q),
        Spec("4 KiB", "/bench/4KiB", (4096,), "NDArray", 1000 // q, 0.001, 10000 // q),
        Spec("1 MiB", "/bench/1MiB", (1 << 20,), "NDArray", 400 // q, 0.005, 1000 // q),
        Spec("6.2 MB (1080p RGB)", "/bench/frame", FRAME_SHAPE, "Image", 240 // q, 0.020, 150 // q),
    ]


WARM_N = 50  # messages the subscriber must see per payload before a measurement starts
WARM_INTERVAL = 0.005
SMALL = 65536  # pyzmq's copy threshold: below it, copying beats zero-copy Frames


def payload(spec: Spec, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=spec.shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Child processes. Protocol (multiprocessing Pipe, driven by the orchestrator):
#   subscriber: ("collect", topic, n, timeout) -> "armed" ... -> result dict; ("quit",)
#   publisher:  ("send", topic, n, interval) -> result dict; ("warm", topic, interval) sends
#               until the next command arrives (which must be ("stop",)); ("quit",)
# The subscriber ignores messages stamped before it was armed, so stragglers of an earlier
# phase never count.


class Recorder:
    def __init__(self) -> None:
        self.reset("", 0)

    def reset(self, topic: str, n: int) -> None:
        self.topic = topic
        self.n = n
        self.arm_ns = time.time_ns()
        self.lat: list[int] = []
        self.first_stamp_ns = 0
        self.last_ns = 0
        self.nbytes = 0

    def record(self, now: int, stamp: int, nbytes: int) -> None:
        if stamp < self.arm_ns:
            return
        if not self.lat:
            self.first_stamp_ns = stamp
        self.last_ns = now
        self.lat.append(now - stamp)
        self.nbytes = nbytes

    def result(self) -> dict:
        return {"count": len(self.lat), "lat_ns": self.lat, "first_stamp_ns": self.first_stamp_ns,
                "last_ns": self.last_ns, "nbytes": self.nbytes}


def _sub_loop(conn: Any, rec: Recorder, wait: Any, extra: Any = None) -> None:
    """Serve collect commands; ``wait(timeout)`` handles traffic for up to ``timeout`` seconds."""
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "quit":
            return
        _, topic, n, timeout = cmd
        rec.reset(topic, n)
        conn.send("armed")
        deadline = time.monotonic() + timeout
        while len(rec.lat) < n and time.monotonic() < deadline:
            wait(0.05)
        res = rec.result()
        if extra is not None:
            res.update(extra(topic))
        conn.send(res)


def _pub_loop(conn: Any, send: Any) -> None:
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "quit":
            return
        if cmd[0] == "warm":
            _, topic, interval = cmd
            sent = 0
            while not conn.poll():
                send(topic)
                sent += 1
                time.sleep(interval)
            stop = conn.recv()
            if stop[0] != "stop":
                raise RuntimeError(f"publisher protocol: expected stop, got {stop!r}")
            conn.send({"sent": sent})
            continue
        _, topic, n, interval = cmd
        t0 = time.perf_counter()
        nxt = t0
        for _ in range(n):
            if interval:
                nxt += interval
            send(topic)
            if interval:
                delay = nxt - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        conn.send({"sent": n, "send_s": time.perf_counter() - t0})


def ark_pub_main(conn: Any, cfg_kw: dict, specs: list[Spec], seed: int) -> None:
    from ark import ArkConfig, Image, NDArray, Node

    node = Node("bench-pub", config=ArkConfig(**cfg_kw))
    pubs, msgs = {}, {}
    for s in specs:
        schema = Image if s.schema == "Image" else NDArray
        pubs[s.topic] = node.publisher(s.topic, schema, queue=_pub_hwm(s))
        msgs[s.topic] = schema(data=payload(s, seed))

    def send(topic: str) -> None:
        pubs[topic].publish(msgs[topic])

    try:
        _pub_loop(conn, send)
    finally:
        node.shutdown()


def ark_sub_main(conn: Any, cfg_kw: dict, specs: list[Spec], seed: int) -> None:
    from ark import ArkConfig, Image, NDArray, Node

    node = Node("bench-sub", config=ArkConfig(**cfg_kw))
    rec = Recorder()
    subs = {}
    for s in specs:
        schema = Image if s.schema == "Image" else NDArray

        def cb(msg: Any, info: Any, _topic: str = s.topic) -> None:
            now = time.time_ns()
            if rec.topic == _topic:
                rec.record(now, info.stamp_ns, msg.data.nbytes)

        # Queue deep enough that a throughput burst is not dropped by the subscription's queue.
        subs[s.topic] = node.subscriber(s.topic, schema, cb, queue=_sub_queue(s))

    def extra(topic: str) -> dict:
        return {"ark_stats": subs[topic].stats()}

    try:
        _sub_loop(conn, rec, node.spin_once, extra)
    finally:
        node.shutdown()


def _pub_hwm(spec: Spec) -> int:
    return spec.tp_n + 1000  # the publisher's queue: a whole throughput burst fits


def _sub_queue(spec: Spec) -> int:
    return spec.tp_n + 100  # the subscription's queue (Ark's rcvhwm is twice this)


def raw_pub_main(conn: Any, endpoint: str, specs: list[Spec], seed: int) -> None:
    import zmq

    # One PUB socket per payload, like Ark's one publisher per topic, with the same HWM.
    ctx = zmq.Context()
    socks, data = {}, {}
    for i, s in enumerate(specs):
        sock = ctx.socket(zmq.PUB)
        sock.sndhwm = _pub_hwm(s)
        sock.linger = 200
        sock.bind(f"{endpoint}-{i}")
        socks[s.topic], data[s.topic] = sock, payload(s, seed)

    def send(topic: str) -> None:
        socks[topic].send_multipart([time.time_ns().to_bytes(8, "little"), data[topic]], copy=False)

    try:
        _pub_loop(conn, send)
    finally:
        for sock in socks.values():
            sock.close()
        ctx.term()


def raw_sub_main(conn: Any, endpoint: str, specs: list[Spec], seed: int) -> None:
    import zmq

    ctx = zmq.Context()
    socks, pollers = {}, {}
    for i, s in enumerate(specs):
        sock = ctx.socket(zmq.SUB)
        sock.rcvhwm = max(2 * _sub_queue(s), 100)  # as Ark sets it
        sock.linger = 0
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(f"{endpoint}-{i}")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        socks[s.topic], pollers[s.topic] = sock, poller
    rec = Recorder()
    sizes = {s.topic: s.nbytes for s in specs}

    def wait(timeout: float) -> None:
        sock, poller = socks.get(rec.topic), pollers.get(rec.topic)
        if sock is None:
            time.sleep(timeout)
            return
        copy = sizes[rec.topic] < SMALL
        # Block in libzmq (GIL released) until a message arrives, then take all that are queued.
        if not poller.poll(int(timeout * 1000)):
            return
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                return
            now = time.time_ns()
            if copy:
                stamp = int.from_bytes(frames[0], "little")
                arr = np.frombuffer(frames[1], dtype=np.uint8)
            else:
                stamp = int.from_bytes(frames[0].bytes, "little")
                arr = np.frombuffer(frames[1].buffer, dtype=np.uint8)
            rec.record(now, stamp, arr.nbytes)

    try:
        _sub_loop(conn, rec, wait)
    finally:
        for sock in socks.values():
            sock.close()
        ctx.term()


# ---------------------------------------------------------------------------------------------
# Orchestrator


def _recv(conn: Any, timeout: float, procs: list) -> Any:
    end = time.monotonic() + timeout
    while not conn.poll(0.2):
        if time.monotonic() > end:
            raise TimeoutError("child did not answer in time")
        for p in procs:
            if p.pid is not None and not p.is_alive():
                raise RuntimeError(f"child {p.name} exited with code {p.exitcode}")
    return conn.recv()


def _expect(conn: Any, want: str, procs: list, timeout: float = 60) -> None:
    got = _recv(conn, timeout, procs)
    if got != want:
        raise RuntimeError(f"child protocol: expected {want!r}, got {got!r}")


def _phase(pub: Any, sub: Any, procs: list, topic: str, n: int, interval: float, timeout: float) -> tuple[dict, dict]:
    sub.send(("collect", topic, n, timeout))
    _expect(sub, "armed", procs, 30)
    pub.send(("send", topic, n, interval))
    sent = _recv(pub, timeout + 30, procs)
    got = _recv(sub, timeout + 30, procs)
    return sent, got


def _warm(pub: Any, sub: Any, procs: list, topic: str) -> dict:
    sub.send(("collect", topic, WARM_N, 20.0))
    _expect(sub, "armed", procs, 30)
    pub.send(("warm", topic, WARM_INTERVAL))
    got = _recv(sub, 60, procs)
    pub.send(("stop",))
    _recv(pub, 30, procs)
    if got["count"] < WARM_N:
        raise RuntimeError(f"{topic}: subscriber saw {got['count']}/{WARM_N} warm-up messages in 20 s")
    return got


def _lat_stats(lat_ns: list[int]) -> dict:
    a = np.asarray(lat_ns, dtype=np.float64) / 1e3
    if a.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "p50_us": float(p50), "p90_us": float(p90), "p99_us": float(p99),
            "mean_us": float(a.mean()), "min_us": float(a.min()), "max_us": float(a.max())}


def _tp_stats(got: dict, n: int, nbytes: int) -> dict:
    # End to end: from the first message's publish stamp to the last delivery, so a receiver
    # that batches (drains everything, then runs callbacks) is not credited for its batching.
    count = got["count"]
    span = (got["last_ns"] - got["first_stamp_ns"]) / 1e9
    rate = count / span if count and span > 0 else 0.0
    return {"sent": n, "delivered": count, "lost": n - count, "span_s": span, "msg_per_s": rate,
            "gb_per_s": rate * nbytes / 1e9}


class Pair:
    """One publisher process and one subscriber process of one system ("ark" or "raw")."""

    def __init__(self, kind: str, specs: list[Spec], seed: int, cfg_kw: dict, endpoint: str) -> None:
        ctx = mp.get_context("spawn")
        self.kind = kind
        self.pub, pub_child = ctx.Pipe()
        self.sub, sub_child = ctx.Pipe()
        conf = cfg_kw if kind == "ark" else endpoint
        pub_target, sub_target = (ark_pub_main, ark_sub_main) if kind == "ark" else (raw_pub_main, raw_sub_main)
        self.pub_p = ctx.Process(target=pub_target, args=(pub_child, conf, specs, seed), name=f"{kind}-pub", daemon=True)
        self.sub_p = ctx.Process(target=sub_target, args=(sub_child, conf, specs, seed), name=f"{kind}-sub", daemon=True)
        self.procs = [self.pub_p, self.sub_p]

    def start_pub(self) -> None:
        self.pub_p.start()

    def start_sub(self) -> None:
        _expect(self.pub, "ready", self.procs, 60)  # publisher bound (and advertised) first
        self.sub_p.start()

    def wait_ready(self) -> None:
        _expect(self.sub, "ready", self.procs, 60)

    def warm(self, topic: str) -> dict:
        return _warm(self.pub, self.sub, self.procs, topic)

    def phase(self, topic: str, n: int, interval: float, timeout: float) -> tuple[dict, dict]:
        return _phase(self.pub, self.sub, self.procs, topic, n, interval, timeout)

    def close(self) -> None:
        for c in (self.pub, self.sub):
            try:
                c.send(("quit",))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            if p.pid is None:
                continue
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)


LAT_ROUNDS = 8  # latency samples are taken in rounds that alternate between the systems
TP_ROUNDS = 3  # throughput bursts per system (alternating); the median is reported


def run_all(specs: list[Spec], seed: int, cfg_kw: dict, endpoint: str, log: Any) -> dict:
    pairs = [Pair("raw", specs, seed, cfg_kw, endpoint), Pair("ark", specs, seed, cfg_kw, endpoint)]
    out: dict[str, dict] = {p.kind: {} for p in pairs}
    try:
        for p in pairs:
            p.start_pub()
        for p in pairs:
            p.start_sub()
        for p in pairs:
            p.wait_ready()
        for s in specs:
            t0 = time.monotonic()
            for p in pairs:
                p.warm(s.topic)
            lat: dict[str, list[int]] = {p.kind: [] for p in pairs}
            per_round = max(1, s.lat_n // LAT_ROUNDS)
            for r in range(LAT_ROUNDS):
                for p in (pairs if r % 2 == 0 else pairs[::-1]):
                    _, got = p.phase(s.topic, per_round, s.lat_interval, per_round * s.lat_interval + 10)
                    lat[p.kind] += got["lat_ns"]
            tps: dict[str, list[dict]] = {p.kind: [] for p in pairs}
            for r in range(TP_ROUNDS):
                for p in (pairs if r % 2 == 0 else pairs[::-1]):
                    sent, got = p.phase(s.topic, s.tp_n, 0.0, 60.0)
                    tp = _tp_stats(got, s.tp_n, s.nbytes)
                    tp["sender_msg_per_s"] = s.tp_n / sent["send_s"] if sent.get("send_s") else None
                    if "ark_stats" in got:
                        tp["ark_stats"] = got["ark_stats"]
                    tps[p.kind].append(tp)
            for p in pairs:
                ls = _lat_stats(lat[p.kind])
                ls["lost"] = per_round * LAT_ROUNDS - ls["n"]
                rounds = sorted(tps[p.kind], key=lambda t: t["msg_per_s"])
                med = dict(rounds[len(rounds) // 2])
                med["lost"] = sum(t["lost"] for t in rounds)
                med["rounds_msg_per_s"] = [t["msg_per_s"] for t in tps[p.kind]]
                out[p.kind][s.label] = {"latency": ls, "throughput": med}
                log(f"  {p.kind:>3} {s.label:<20} p50 {ls.get('p50_us', float('nan')):9.1f} us  "
                    f"p99 {ls.get('p99_us', float('nan')):9.1f} us  {med['msg_per_s']:10.0f} msg/s  "
                    f"{med['gb_per_s']:6.2f} GB/s")
            log(f"      ({time.monotonic() - t0:.1f} s)")
    finally:
        for p in pairs:
            p.close()
    return out


def machine_info() -> dict:
    import zmq

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 1024 ** 2:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "python": platform.python_version(),
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "numpy": np.__version__,
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate(specs: list[Spec], res: dict) -> list[dict]:
    checks = []
    for s in specs[:2]:
        a, r = res["ark"][s.label]["latency"], res["raw"][s.label]["latency"]
        ratio = a["p50_us"] / r["p50_us"]
        checks.append({"target": f"{s.label}: ark p50 latency <= 1.3x raw", "value": f"{ratio:.2f}x",
                       "met": ratio <= 1.3})
    big = specs[-1].label
    gbs = res["ark"][big]["throughput"]["gb_per_s"]
    p50 = res["ark"][big]["latency"]["p50_us"]
    checks.append({"target": f"{big}: ark >= 1 GB/s", "value": f"{gbs:.2f} GB/s", "met": gbs >= 1.0})
    checks.append({"target": f"{big}: ark p50 latency < 5 ms", "value": f"{p50 / 1e3:.2f} ms", "met": p50 < 5000})
    return checks


def print_table(specs: list[Spec], res: dict, checks: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Ark pub/sub vs raw pyzmq (ipc://), 1 publisher process -> 1 subscriber process")
    for col in ("payload", "ark p50/p99 µs", "raw p50/p99 µs", "latency ratio ark/raw (p50)",
                "ark msg/s", "raw msg/s", "ark GB/s", "raw GB/s"):
        t.add_column(col, justify="left" if col == "payload" else "right")
    for s in specs:
        a, r = res["ark"][s.label], res["raw"][s.label]
        al, rl = a["latency"], r["latency"]
        t.add_row(s.label, f"{al['p50_us']:.0f} / {al['p99_us']:.0f}", f"{rl['p50_us']:.0f} / {rl['p99_us']:.0f}",
                  f"{al['p50_us'] / rl['p50_us']:.2f}", f"{a['throughput']['msg_per_s']:,.0f}",
                  f"{r['throughput']['msg_per_s']:,.0f}", f"{a['throughput']['gb_per_s']:.2f}",
                  f"{r['throughput']['gb_per_s']:.2f}")
    con = Console(width=None if sys.stdout.isatty() else 150)
    con.print(t)
    for c in checks:
        mark = "[green]    met[/green]" if c["met"] else "[red]NOT met[/red]"
        con.print(f"  {mark}  {c['target']}: {c['value']}")
    lost = [(k, s.label, res[k][s.label][ph]["lost"]) for k in ("ark", "raw") for s in specs
            for ph in ("latency", "throughput") if res[k][s.label][ph]["lost"]]
    if lost:
        con.print(f"  [yellow]messages lost:[/yellow] {lost}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (about a quarter)")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    ap.add_argument("--seed", type=int, default=0, help="seed of the payload bytes")
    args = ap.parse_args(argv)

    from ark.config import ArkConfig
    from ark.registry import ensure_registry, stop_embedded

    specs = make_specs(args.quick)
    tmp = tempfile.mkdtemp(prefix="arkb-", dir="/tmp")  # ipc paths are limited to ~100 chars
    cfg_kw = {"registry": f"tcp://127.0.0.1:{_free_port()}", "ipc_dir": os.path.join(tmp, "ark")}
    endpoint = f"ipc://{tmp}/raw"
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    print(f"pub/sub benchmark ({'quick' if args.quick else 'full'}), seed {args.seed}, "
          f"load average {load_before:.2f} on {os.cpu_count()} CPUs", flush=True)
    ensure_registry(ArkConfig(**cfg_kw))  # the registry lives here, off both measured processes
    results: dict[str, Any] = {}
    try:
        results = run_all(specs, args.seed, cfg_kw, endpoint, lambda m: print(m, flush=True))
    finally:
        stop_embedded()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t0
    load_after = os.getloadavg()[0]
    checks = evaluate(specs, results)
    print_table(specs, results, checks)
    print(f"total {elapsed:.1f} s; 1-minute load average {load_before:.2f} before, {load_after:.2f} after")
    if args.json:
        doc = {"benchmark": "pubsub", "argv": sys.argv, "quick": args.quick, "seed": args.seed,
               "machine": machine_info(), "elapsed_s": elapsed, "loadavg_1min": [load_before, load_after], "specs": [asdict(s) | {"nbytes": s.nbytes} for s in specs],
               "results": results, "targets": checks}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
