"""The Ark ⇄ ROS 2 bridge against a direct cyclonedds-to-cyclonedds exchange, in one run.

    python benchmarks/ros_bridge.py            # full run (about 80 s)
    python benchmarks/ros_bridge.py --quick    # smaller sample counts
    python benchmarks/ros_bridge.py --json out.json
    python benchmarks/ros_bridge.py --direct-decoder rosbags   # baseline decodes with rosbags instead

A sender process plays a ROS 2 node: it writes ``sensor_msgs/JointState`` (6 joints) or a
640x480 rgb8 ``sensor_msgs/Image`` on ``rt/…`` with Cyclone DDS, each sample stamped with
``time.time_ns()`` in its header just before the write (the payload is prebuilt CDR; only the
stamp is patched, so sending costs the same for both paths). It is received either

* **direct** (the baseline): a second ROS 2 stand-in process reads the DDS topic itself (a
  WaitSet, as the bridge's DDS backend waits) and decodes each sample with the same CDR readers
  the bridge uses (``bridge_ros.cdr_fast``: arrays are views, the fastest a Python ROS 2 node
  gets; ``--direct-decoder rosbags`` decodes with rosbags instead), or
* **bridge**: ``python -m bridge_ros ros bridge`` (backend dds) in its own process takes the
  samples, converts them and publishes Ark messages (the header stamp becomes the Ark stamp),
  and an Ark node in the receiver process gets them in its subscriber callback.

A third row, **ark**, sends the same stream from an Ark publisher straight to that Ark
receiver (no DDS, no bridge): the cost of the Ark hop that the bridge path adds.

Latency is receive time minus header stamp (one host, one clock), paced sends after a
warm-up; p50/p99. Throughput sends a burst as fast as reliable DDS lets the sender go
(keep-all writer and bridge reader), and counts messages delivered per second from the first
stamp to the last delivery, with losses (the Ark hop drops rather than blocks when its
queues fill). CPU is the user+system time of every process on the path over the measured
window (sender: its sends; receiver: from its first message; bridge: from before the sender
starts to the receiver's end), per message sent: on a shared machine it moves less than the
wall-clock figures. Runs alternate direct/bridge/ark per payload. The 1-minute load average
is printed before and after: on a shared 2-core machine, other work moves these numbers, and
the bridge path has a third process competing for the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOOPBACK = ("<CycloneDDS><Domain Id=\"any\"><General><Interfaces><NetworkInterface address=\"127.0.0.1\"/>"
            "</Interfaces><AllowMulticast>false</AllowMulticast></General><Discovery>"
            "<ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>30</MaxAutoParticipantIndex>"
            "<Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery></Domain></CycloneDDS>")
SPECS = {
    # kind: ROS type, latency samples, pacing (s), throughput burst, receive queue
    "JointState": ("sensor_msgs/msg/JointState", 600, 0.002, 5000, 10000),
    "Image 640x480": ("sensor_msgs/msg/Image", 150, 0.020, 300, 400),
}
WARM_N = 30
PATHS = ("direct", "bridge", "ark")  # ark: Ark pub -> Ark sub alone, to split the bridge's cost


# -- sender: a ROS 2 node writing prebuilt CDR ------------------------------------------------
def _payload(types: Any, kind: str, phase: str) -> bytearray:
    from bridge_ros.convert import make_header

    if kind == "JointState":
        msg = types.make("sensor_msgs/msg/JointState", header=make_header(types, 0, ""),
                         name=[phase] + [f"joint{i}" for i in range(5)], position=np.arange(6.0),
                         velocity=np.zeros(6), effort=np.zeros(6))
        return bytearray(types.serialize(msg, "sensor_msgs/msg/JointState"))
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    msg = types.make("sensor_msgs/msg/Image", header=make_header(types, 0, phase), height=480, width=640,
                     encoding="rgb8", step=640 * 3, data=frame.reshape(-1))
    return bytearray(types.serialize(msg, "sensor_msgs/msg/Image"))


def run_sender(args: argparse.Namespace) -> None:
    from cyclonedds._clayer import ddspy_write
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from bridge_ros.cdr import RosTypes
    from bridge_ros.dds_types import DdsTypes

    types = RosTypes("humble")
    ros_type, lat_n, pace, tp_n, _ = SPECS[args.kind]
    dp = DomainParticipant(args.domain)
    topic = Topic(dp, args.topic, DdsTypes(types).idl_class(ros_type))
    w = DataWriter(dp, topic, qos=Qos(Policy.Reliability.Reliable(duration(seconds=10)), Policy.History.KeepAll))
    end = time.monotonic() + 20
    while w.get_publication_matched_status().current_count < 1 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.5)  # let the receiving side settle after matching
    ref = w._ref
    n = lat_n // args.scale
    cpu0 = time.process_time()
    for phase, count, gap in (("warm", WARM_N, pace), ("lat", n, pace), ("tp", tp_n // args.scale, 0.0)):
        buf = _payload(types, args.kind, phase)
        for _ in range(count):
            sec, nsec = divmod(time.time_ns(), 1_000_000_000)
            buf[4:8] = sec.to_bytes(4, "little", signed=True)
            buf[8:12] = nsec.to_bytes(4, "little")
            ddspy_write(ref, buf)
            if gap:
                time.sleep(gap)
        if phase == "lat":
            time.sleep(0.3)  # a gap between phases
    print(json.dumps({"cpu_s": time.process_time() - cpu0}), flush=True)
    time.sleep(0.5)


def run_ark_sender(args: argparse.Namespace) -> None:
    """The reference row: the same stream as Ark messages from an Ark publisher (no DDS, no bridge)."""
    from ark.config import ArkConfig
    from ark.messages import Image, JointState
    from ark.node import Node

    _, lat_n, pace, tp_n, queue = SPECS[args.kind]
    node = Node("bench_sender", config=ArkConfig(registry=args.registry, ipc_dir=args.ipc_dir))
    image = args.kind != "JointState"
    pub = node.publisher("/bench", Image if image else JointState, queue=queue)
    time.sleep(1.5)  # the receiver's subscription finds this publisher on its next registry refresh
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    cpu0 = time.process_time()
    for phase, count, gap in (("warm", WARM_N, pace), ("lat", lat_n // args.scale, pace),
                              ("tp", tp_n // args.scale, 0.0)):
        msg = Image(frame, "rgb8", phase) if image else \
            JointState([phase] + [f"joint{i}" for i in range(5)], np.arange(6.0), np.zeros(6), np.zeros(6))
        for _ in range(count):
            pub.publish(msg)  # stamped with time.time_ns() by the publisher
            if gap:
                time.sleep(gap)
        if phase == "lat":
            time.sleep(0.3)
    print(json.dumps({"cpu_s": time.process_time() - cpu0}), flush=True)
    time.sleep(0.5)
    node.shutdown()


# -- receivers ----------------------------------------------------------------------------------
class Tally:
    def __init__(self, expect_tp: int) -> None:
        self.lat: list[int] = []
        self.tp_first_stamp: int | None = None
        self.tp_last_arrival = 0
        self.tp_n = 0
        self.expect_tp = expect_tp
        self.last_progress = time.monotonic()
        self.cpu0: float | None = None  # process CPU time at the first message (the warm-up)

    def add(self, phase: str, stamp: int) -> None:
        now = time.time_ns()
        if self.cpu0 is None:
            self.cpu0 = time.process_time()
        self.last_progress = time.monotonic()
        if phase == "lat":
            self.lat.append(now - stamp)
        elif phase == "tp":
            if self.tp_first_stamp is None:
                self.tp_first_stamp = stamp
            self.tp_n += 1
            self.tp_last_arrival = now

    def done(self) -> bool:
        return self.tp_n >= self.expect_tp or (self.tp_n > 0 and time.monotonic() - self.last_progress > 3)

    def result(self) -> dict:
        span = (self.tp_last_arrival - self.tp_first_stamp) / 1e9 if self.tp_first_stamp else float("nan")
        cpu = time.process_time() - self.cpu0 if self.cpu0 is not None else float("nan")
        return {"lat_ns": self.lat, "tp_n": self.tp_n, "tp_span_s": span, "cpu_s": cpu}


def run_direct(args: argparse.Namespace) -> None:
    from cyclonedds._clayer import ddspy_take
    from cyclonedds.core import InstanceState, Policy, Qos, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from bridge_ros.cdr import RosTypes
    from bridge_ros.dds_types import DdsTypes

    types = RosTypes("humble")
    ros_type, _, _, tp_n, _ = SPECS[args.kind]
    types.warm([ros_type])
    dp = DomainParticipant(args.domain)
    topic = Topic(dp, args.topic, DdsTypes(types).idl_class(ros_type))
    reader = DataReader(dp, topic, qos=Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepAll))
    mask = SampleState.Any | ViewState.Any | InstanceState.Any
    ws = WaitSet(dp)
    ws.attach(ReadCondition(reader, mask))
    tally = Tally(tp_n // args.scale)
    deadline = time.monotonic() + args.timeout
    image = args.kind != "JointState"
    if args.direct_decoder == "rosbags":
        def decode(data: bytes) -> tuple[str, int]:
            msg = types.deserialize(data, ros_type)
            if image:
                frame = msg.data.reshape(msg.height, msg.width, 3)  # the view a user would take
                phase = msg.header.frame_id if frame.size else ""
            else:
                phase = msg.name[0]
            return phase, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    else:  # the CDR readers the bridge itself uses: both paths pay the same decoding
        from bridge_ros.cdr_fast import read_image, read_joint_state

        def decode(data: bytes) -> tuple[str, int]:
            if image:
                sec, nanosec, frame_id, h, w, _, _, _, pixels = read_image(data)
                frame = pixels.reshape(h, w, 3)
                phase = frame_id if frame.size else ""
            else:
                sec, nanosec, names, _, _, _ = read_joint_state(data)
                phase = names[0]
            return phase, sec * 1_000_000_000 + nanosec

    while not tally.done() and time.monotonic() < deadline:
        ws.wait(duration(milliseconds=50))
        for data, info in ddspy_take(reader._ref, mask, 64):
            tally.add(*decode(data))
    print(json.dumps(tally.result()), flush=True)


def run_ark(args: argparse.Namespace) -> None:
    from ark.config import ArkConfig
    from ark.messages import Image, JointState
    from ark.node import Node

    ros_type, _, _, tp_n, queue = SPECS[args.kind]
    tally = Tally(tp_n // args.scale)
    image = args.kind != "JointState"

    def on_message(msg: Any, info: Any) -> None:
        tally.add(msg.frame_id if image else msg.name[0], info.stamp_ns)

    node = Node("bench_receiver", config=ArkConfig(registry=args.registry, ipc_dir=args.ipc_dir))
    node.subscriber("/bench", Image if image else JointState, on_message, queue=queue)
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while not tally.done() and time.monotonic() < deadline:
        node.spin_once(0.05)
    node.shutdown()
    print(json.dumps(tally.result()), flush=True)


# -- orchestration --------------------------------------------------------------------------------
def _spawn(role: str, args: argparse.Namespace, extra: list[str], env: dict) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--kind", args.kind_now,
           "--domain", str(args.domain), "--topic", args.topic_now, "--scale", str(args.scale),
           "--direct-decoder", args.direct_decoder, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode not in (0, -15):
        raise RuntimeError(f"benchmark process failed ({proc.returncode}): {err[-2000:]}")
    return out


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def run_once(args: argparse.Namespace, kind: str, path: str, env: dict, registry: str, ipc_dir: str) -> dict:
    args.kind_now = kind
    args.topic_now = f"rt/bench_{uuid.uuid4().hex[:6]}"
    timeout = ["--timeout", "60"]
    bridge = None
    ark_args = ["--registry", registry, "--ipc-dir", ipc_dir]
    if path == "ark":
        receiver = _spawn("ark", args, timeout + ark_args, env)
        receiver.stdout.readline()  # "ready"
    elif path == "direct":
        receiver = _spawn("direct", args, timeout, env)
        time.sleep(1.0)  # receiver up before the sender starts matching
    else:
        mapping = Path(args.tmp) / f"bridge_{args.topic_now[3:]}.yaml"
        queue_depth = SPECS[kind][4]
        mapping.write_text(
            f"backend: dds\ndomain_id: {args.domain}\nnode_name: bench_bridge\ntopics:\n"
            f"  - {{ark: /bench, ros: /{args.topic_now[3:]}, type: {SPECS[kind][0]}, direction: ros_to_ark, "
            f"qos: {{history: keep_all, depth: {queue_depth}}}}}\n")
        bridge = subprocess.Popen([sys.executable, "-m", "bridge_ros", "ros", "bridge", str(mapping), "--json"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        receiver = _spawn("ark", args, timeout + ark_args, env)
        receiver.stdout.readline()  # "ready"
        time.sleep(1.5)  # bridge joined both graphs, Ark subscription connected
    bridge_cpu0 = _proc_cpu_s(bridge.pid) if bridge is not None else 0.0
    sender = _spawn("arksender" if path == "ark" else "sender", args, ark_args, env)
    sender_cpu = json.loads(_finish(sender, 120).strip().splitlines()[-1])["cpu_s"]
    result = json.loads(_finish(receiver, 120).strip().splitlines()[-1])
    # CPU of every process on the path over the measured window (sender: its sends; receiver:
    # from its first message; bridge: from before the sender started to the receiver's end).
    result["cpu"] = {"sender": sender_cpu, "receiver": result.pop("cpu_s"),
                     "bridge": _proc_cpu_s(bridge.pid) - bridge_cpu0 if bridge is not None else 0.0}
    if bridge is not None:
        bridge.terminate()
        _finish(bridge, 20)
    return result


def summarize(results: list[dict], sent: int, expect_tp: int) -> dict:
    """Latency percentiles, median burst rate, losses and CPU per message sent (all processes of the path)."""
    lat = np.array([x for r in results for x in r["lat_ns"]], dtype=np.float64) / 1e3
    rates = [r["tp_n"] / r["tp_span_s"] for r in results if r["tp_n"] and r["tp_span_s"] > 0]
    cpu = {part: sum(r["cpu"][part] for r in results) / (sent * len(results)) * 1e6
           for part in ("sender", "bridge", "receiver")}
    return {"lat_p50_us": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "lat_p99_us": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "lat_n": int(lat.size), "msgs_per_s": float(np.median(rates)) if rates else float("nan"),
            "lost": int(sum(expect_tp - r["tp_n"] for r in results)),
            "cpu_us_per_msg": {**cpu, "total": sum(cpu.values())}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--role", default="main", choices=["main", "sender", "arksender", "direct", "ark"])
    p.add_argument("--kind", default="JointState", choices=list(SPECS))
    p.add_argument("--domain", type=int, default=0)
    p.add_argument("--topic", default="rt/bench")
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--registry", default="")
    p.add_argument("--ipc-dir", default="")
    p.add_argument("--direct-decoder", default="fast", choices=["fast", "rosbags"],
                   help="how the direct receiver decodes: the bridge's CDR readers (default) or rosbags")
    args = p.parse_args()
    if args.role != "main":
        args.kind_now, args.topic_now = args.kind, args.topic
        {"sender": run_sender, "arksender": run_ark_sender, "direct": run_direct, "ark": run_ark}[args.role](args)
        return

    from ark.config import ArkConfig
    from ark.registry import ensure_registry

    args.scale = 3 if args.quick else 1
    args.domain = 150 + os.getpid() % 80
    env = dict(os.environ, CYCLONEDDS_URI=os.environ.get("CYCLONEDDS_URI", LOOPBACK), PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="ark-rosbench-") as tmp:
        args.tmp = tmp
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        registry, ipc_dir = f"tcp://127.0.0.1:{port}", os.path.join(tmp, "ipc")
        ensure_registry(ArkConfig(registry=registry, ipc_dir=ipc_dir))  # the graph's registry lives here
        env.update(ARK_REGISTRY=registry, ARK_IPC_DIR=ipc_dir)
        load0 = os.getloadavg()[0]
        rows = []
        for kind in SPECS:
            runs: dict[str, list[dict]] = {path: [] for path in PATHS}
            for _ in range(args.rounds):
                for path in PATHS:
                    runs[path].append(run_once(args, kind, path, env, registry, ipc_dir))
            _, lat_n, _, tp_n, _ = SPECS[kind]
            sent = WARM_N + lat_n // args.scale + tp_n // args.scale
            for path in PATHS:
                rows.append({"payload": kind, "path": path, **summarize(runs[path], sent, tp_n // args.scale)})
        load1 = os.getloadavg()[0]
    print(f"\nROS 2 -> Ark bridge vs direct cyclonedds (loopback, {os.cpu_count()} CPUs, {args.rounds} round(s); "
          f"load avg {load0:.2f} -> {load1:.2f})\n")
    head = f"{'payload':<15} {'path':<7} {'p50 lat (us)':>13} {'p99 lat (us)':>13} {'msgs/s':>10} {'lost':>6} " \
           f"{'p50 ratio':>10} {'msgs/s ratio':>13} {'CPU us/msg':>11} {'(send/bridge/recv)':>20}"
    print(head)
    print("-" * len(head))
    for row in rows:
        base = next(r for r in rows if r["payload"] == row["payload"] and r["path"] == "direct")
        cpu = row["cpu_us_per_msg"]
        print(f"{row['payload']:<15} {row['path']:<7} {row['lat_p50_us']:>13.0f} {row['lat_p99_us']:>13.0f} "
              f"{row['msgs_per_s']:>10.0f} {row['lost']:>6d} {row['lat_p50_us'] / base['lat_p50_us']:>9.2f}x "
              f"{base['msgs_per_s'] / row['msgs_per_s']:>12.2f}x {cpu['total']:>11.1f} "
              f"{cpu['sender']:>7.1f}/{cpu['bridge']:.1f}/{cpu['receiver']:.1f}")
    print("\nratios against direct: latency path/direct, throughput direct/path (1.00x = no overhead); "
          "ark = Ark pub -> Ark sub alone (no DDS), the Ark hop the bridge path adds;\nCPU us/msg: CPU time of "
          "the path's processes over the measured window, per message sent (warm-up, paced and burst)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load": [load0, load1]}, indent=2))


if __name__ == "__main__":
    main()
