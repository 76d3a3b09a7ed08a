"""The ``ark`` command line.

    ark registry                      run a standalone registry
    ark launch configs/demo.yaml      start a graph of nodes as processes
    ark node list                     nodes in the graph
    ark topic list|echo|hz|pub        inspect and feed topics
    ark service list|call             inspect and call services
    ark record -o run.mcap TOPIC...   record topics to MCAP
    ark play run.mcap                 replay a recording
    ark keys DIR NAME                 make a CurveZMQ keypair
    ark collect --env ID --episodes N --out DIR    record demonstrations
    ark dataset info|validate|merge|export|import  inspect and convert datasets
    ark train --policy act --data DIR --out DIR    train a policy (resumable)
    ark eval --policy DIR --env ID --episodes N    success rate with a 95 % interval
    ark export --policy DIR --format onnx          ONNX export with a parity check
    ark ros bridge configs/ros_bridge.yaml         bridge topics to a ROS 2 graph (DDS)
    ark ros export run.mcap --format rosbag2 OUT   convert a recording to a rosbag2
    ark llm chat|bench|serve                       the on-device LLM runtime
    ark split data|train|run|export|bench          split-DNN encoders (device head, server tail)
    ark fl simulate|server|client                  federated training across a fleet

User mistakes end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from ark import config as ark_config
from ark.errors import ArkError, NotFound, RegistryError
from ark.messages import from_jsonable, lookup_schema, schema_names, to_jsonable

out = Console()
err = Console(stderr=True)


def _config(args: argparse.Namespace, **overrides: Any) -> ark_config.ArkConfig:
    return ark_config.load(getattr(args, "config", None), **overrides)


def _client_config(args: argparse.Namespace) -> ark_config.ArkConfig:
    # Inspection tools never start a registry of their own: an empty graph would mislead.
    return _config(args, auto_registry=False)


def _graph(args: argparse.Namespace) -> dict:
    from ark.registry import RegistryClient

    cfg = _client_config(args)
    try:
        return RegistryClient(cfg).request("graph")
    except RegistryError as exc:
        raise ArkError(f"{exc} (is a graph running? start one with `ark registry` or `ark launch`)") from None


def _node(args: argparse.Namespace, name: str):
    from ark.node import Node
    from ark.errors import RegistryUnreachable

    try:
        return Node(f"_ark_cli_{name}", config=_client_config(args))
    except RegistryUnreachable as exc:
        raise ArkError(str(exc)) from None


def _topic_schema(graph: dict, topic: str) -> tuple[str, int]:
    for entry in graph["publishers"].get(topic, []) + graph["subscribers"].get(topic, []):
        if entry.get("schema"):
            return entry["schema"], entry["version"]
    known = sorted(set(graph["publishers"]) | set(graph["subscribers"]))
    raise NotFound(f"no topic {topic} in the graph (topics: {', '.join(known) or 'none'})")


# -- registry / launch ---------------------------------------------------------------------
def cmd_registry(args: argparse.Namespace) -> int:
    import errno

    import zmq

    from ark.registry import Registry

    cfg = _config(args, **({"registry": args.endpoint} if args.endpoint else {}))
    reg = Registry(cfg)
    try:
        reg.bind()
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ArkError(f"a registry (or another program) already listens at {cfg.registry}") from None
        raise ArkError(f"cannot listen at {cfg.registry}: {exc}") from None
    err.print(f"registry listening at {cfg.registry} (Ctrl-C to stop)")
    thread = threading.Thread(target=reg.serve, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        reg.stop()
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from ark.launch import launch, load_launch

    spec = load_launch(args.file)
    return launch(spec, config=_config(args), duration=args.duration)


# -- nodes ---------------------------------------------------------------------------------
def cmd_node_list(args: argparse.Namespace) -> int:
    graph = _graph(args)
    table = Table("node", "pid", "host", "publishes", "subscribes", "services", "last heartbeat")
    for nid, node in sorted(graph["nodes"].items(), key=lambda kv: kv[1]["name"]):
        pubs = sorted(t for t, es in graph["publishers"].items() if any(e["node"] == nid for e in es))
        subs = sorted(t for t, es in graph["subscribers"].items() if any(e["node"] == nid for e in es))
        srvs = sorted(s for s, e in graph["services"].items() if e["node"] == nid and not s.endswith("/param"))
        table.add_row(node["name"], str(node.get("pid")), str(node.get("host")), " ".join(pubs), " ".join(subs),
                      " ".join(srvs), f"{node['age_s']:.2f}s ago")
    out.print(table)
    return 0


# -- topics --------------------------------------------------------------------------------
def cmd_topic_list(args: argparse.Namespace) -> int:
    graph = _graph(args)
    table = Table("topic", "schema", "publishers", "subscribers")
    for topic in sorted(set(graph["publishers"]) | set(graph["subscribers"])):
        pubs, subs = graph["publishers"].get(topic, []), graph["subscribers"].get(topic, [])
        try:
            schema, version = _topic_schema(graph, topic)
            label = f"{schema} v{version}"
        except NotFound:
            label = "?"
        table.add_row(topic, label, str(len(pubs)), str(len(subs)))
    out.print(table)
    return 0


def _summarise(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.size <= 16:
            return value.tolist()
        return f"<{value.dtype} array {'x'.join(map(str, value.shape))}, min {value.min():.4g}, max {value.max():.4g}>"
    if isinstance(value, dict):
        return {k: _summarise(v) for k, v in value.items()}
    return value


def cmd_topic_echo(args: argparse.Namespace) -> int:
    from ark.channel import RawMessage
    from ark.wire import arrays_from

    node = _node(args, "echo")
    try:
        if not args.wait:
            _topic_schema(node.registry.request("graph"), args.topic)
        sub = node.subscriber(args.topic, None, queue=100)
        count = 0
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while args.count is None or count < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            got = sub.recv(timeout=0.2 if remaining is None else min(0.2, remaining), with_info=True)
            if got is None:
                continue
            raw, info = got
            assert isinstance(raw, RawMessage)
            fields: dict[str, Any] = dict(raw.header["f"])
            for name, key, arr in arrays_from(raw.header, raw.buffers):
                if key is None:
                    fields[name] = arr
                else:
                    fields.setdefault(name, {})[key] = arr
            if args.json:
                out.print_json(json.dumps({"topic": args.topic, "seq": info.seq, "stamp_ns": info.stamp_ns,
                                           **{k: (v.tolist() if isinstance(v, np.ndarray) else
                                                  {kk: vv.tolist() for kk, vv in v.items()} if isinstance(v, dict) and any(isinstance(x, np.ndarray) for x in v.values()) else v)
                                              for k, v in fields.items()}}))
            else:
                out.print(f"[bold]{args.topic}[/] {info.schema} seq={info.seq} {info.nbytes} B")
                for k, v in fields.items():
                    out.print(f"  {k}: {_summarise(v)}", highlight=False, soft_wrap=True)
            count += 1
        if count == 0 and args.timeout is not None:
            raise ArkError(f"no message on {args.topic} within {args.timeout:g}s")
    finally:
        node.shutdown()
    return 0


def cmd_topic_hz(args: argparse.Namespace) -> int:
    node = _node(args, "hz")
    try:
        if not args.wait:
            _topic_schema(node.registry.request("graph"), args.topic)
        stamps: deque[float] = deque(maxlen=10_000)
        sizes: deque[int] = deque(maxlen=10_000)
        sub = node.subscriber(args.topic, None, lambda raw, info: (stamps.append(time.monotonic()), sizes.append(info.nbytes)),
                              queue=1000)
        node.start()
        end = None if args.duration is None else time.monotonic() + args.duration
        while end is None or time.monotonic() < end:
            time.sleep(args.window)
            now = time.monotonic()
            recent = [t for t in stamps if now - t <= args.window]
            rate = len(recent) / args.window
            nbytes = sum(list(sizes)[-len(recent):]) / args.window if recent else 0.0
            graph = node.registry.request("graph")
            drops = []
            for nid, info in graph["nodes"].items():
                st = info.get("stats", {}).get("sub", {}).get(args.topic)
                if st is not None and not info["name"].startswith("_ark_cli_"):
                    drops.append(f"{info['name']}: {st['dropped']} dropped, {st['decode_errors']} bad")
            out.print(f"{args.topic}: {rate:8.1f} msg/s  {_bandwidth(nbytes):>11}  "
                      f"(hz drops {sub.dropped})  subscribers: {'; '.join(drops) or 'none'}",
                      highlight=False, soft_wrap=True)
    finally:
        node.shutdown()
    return 0


def _bandwidth(bytes_per_s: float) -> str:
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.2f} {unit}"
    return f"{bytes_per_s:.0f} B/s"


def cmd_topic_pub(args: argparse.Namespace) -> int:
    try:
        values = json.loads(args.values)
    except json.JSONDecodeError as exc:
        raise ArkError(f"values are not valid JSON: {exc.msg} at column {exc.colno}") from None
    schema = lookup_schema(args.schema)
    msg = from_jsonable(schema.cls, values)
    node = _node(args, "pub")
    try:
        graph = node.registry.request("graph")
        try:
            have = _topic_schema(graph, args.topic)
        except NotFound:
            have = None
        if have is not None and have != (schema.name, schema.version):
            raise ArkError(f"topic {args.topic} carries {have[0]} v{have[1]}, not {schema.name}")
        pub = node.publisher(args.topic, schema.cls, latched=args.latch)
        time.sleep(max(2 * node.config.heartbeat_s, 0.3))  # let subscribers connect before the first message
        sent = 0
        while args.count is None or sent < args.count:
            pub.publish(msg)
            sent += 1
            if args.count is not None and sent >= args.count:
                break
            node.spin_once(1.0 / args.rate)
        if args.latch:
            node.spin(duration=args.linger)
        time.sleep(0.1)
        err.print(f"published {sent} message(s) on {args.topic}")
    finally:
        node.shutdown()
    return 0


# -- services ------------------------------------------------------------------------------
def cmd_service_list(args: argparse.Namespace) -> int:
    graph = _graph(args)
    table = Table("service", "request", "response", "node")
    for name, entry in sorted(graph["services"].items()):
        table.add_row(name, entry["request"][0], entry["response"][0], graph["nodes"].get(entry["node"], {}).get("name", "?"))
    out.print(table)
    return 0


def cmd_service_call(args: argparse.Namespace) -> int:
    try:
        values = json.loads(args.values)
    except json.JSONDecodeError as exc:
        raise ArkError(f"request is not valid JSON: {exc.msg} at column {exc.colno}") from None
    node = _node(args, "call")
    try:
        try:
            entry = node.registry.request("lookup_service", service=args.service)["service"]
        except RegistryError:
            raise NotFound(f"no service {args.service} in the graph") from None
        req_cls, resp_cls = lookup_schema(entry["request"][0]).cls, lookup_schema(entry["response"][0]).cls
        reply = node.call(args.service, from_jsonable(req_cls, values), resp_cls, timeout=args.timeout)
        out.print_json(json.dumps(to_jsonable(reply)))
    finally:
        node.shutdown()
    return 0


# -- recording ------------------------------------------------------------------------------
def cmd_record(args: argparse.Namespace) -> int:
    from ark.record import record

    if not args.topics and not args.all:
        raise ArkError("name the topics to record, or pass -a for all")
    stats = record(args.output, args.topics, config=_client_config(args), duration=args.duration, all_topics=args.all)
    per_topic = ", ".join(f"{t} {n}" for t, n in sorted(stats.topics.items())) or "no topics"
    err.print(f"wrote {args.output}: {stats.messages} messages, {stats.bytes / 1e6:.1f} MB in {stats.duration_s:.1f} s "
              f"({per_topic}; {stats.dropped} dropped)", highlight=False, soft_wrap=True)
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from ark.record import play

    stats = play(args.file, config=_client_config(args), rate=args.rate, loop=args.loop, topics=args.topics or None)
    err.print(f"played {args.file}: {stats.messages} messages on {len(stats.topics)} topic(s) in "
              f"{stats.duration_s:.1f} s ({stats.loops} pass(es), {stats.skipped} skipped)", highlight=False, soft_wrap=True)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from ark.security import generate_keys

    public, secret = generate_keys(args.directory, args.name)
    out.print(f"public key: {public}\nsecret key: {secret} (keep it private; put the public one in authorized_keys)")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    for name in schema_names():
        out.print(name)
    return 0


# -- parser --------------------------------------------------------------------------------
def json_object(text: str | None, what: str, error: type[ArkError] = ArkError) -> dict[str, Any] | None:
    """A command-line argument holding a JSON object (``--params``, ``--env-kwargs``...): the dict,
    None when the argument is absent or empty, else ``error`` with a one-line message naming ``what``."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ark", description="Ark robotics runtime")
    p.add_argument("--config", help="runtime config YAML (default: $ARK_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the runtime does")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("registry", help="run a standalone registry")
    r.add_argument("--endpoint", help="tcp://HOST:PORT (default from config)")
    r.set_defaults(fn=cmd_registry)

    la = sub.add_parser("launch", help="start a graph of nodes from a YAML file")
    la.add_argument("file")
    la.add_argument("--duration", type=float, help="stop after this many seconds")
    la.set_defaults(fn=cmd_launch)

    n = sub.add_parser("node", help="inspect nodes").add_subparsers(dest="sub", required=True)
    n.add_parser("list", help="list nodes").set_defaults(fn=cmd_node_list)

    t = sub.add_parser("topic", help="inspect and feed topics").add_subparsers(dest="sub", required=True)
    t.add_parser("list", help="list topics").set_defaults(fn=cmd_topic_list)
    e = t.add_parser("echo", help="print messages of a topic")
    e.add_argument("topic")
    e.add_argument("-n", "--count", type=int, help="stop after N messages")
    e.add_argument("--timeout", type=float, help="give up after this many seconds")
    e.add_argument("--json", action="store_true", help="one JSON document per message")
    e.add_argument("--wait", action="store_true", help="wait for a topic that does not exist yet")
    e.set_defaults(fn=cmd_topic_echo)
    h = t.add_parser("hz", help="message rate, bandwidth and subscribers' drops")
    h.add_argument("topic")
    h.add_argument("--window", type=float, default=1.0)
    h.add_argument("--duration", type=float, help="stop after this many seconds")
    h.add_argument("--wait", action="store_true", help="wait for a topic that does not exist yet")
    h.set_defaults(fn=cmd_topic_hz)
    pb = t.add_parser("pub", help="publish a message given as JSON")
    pb.add_argument("topic")
    pb.add_argument("schema", help="e.g. ark/String (see `ark schemas`)")
    pb.add_argument("values", help='field values as JSON, e.g. \'{"data": "hi"}\'')
    pb.add_argument("--rate", type=float, default=1.0)
    pb.add_argument("-n", "--count", type=int, default=1, help="messages to send (default 1)")
    pb.add_argument("--latch", action="store_true", help="latched: late joiners get the message too")
    pb.add_argument("--linger", type=float, default=2.0, help="with --latch, seconds to stay up")
    pb.set_defaults(fn=cmd_topic_pub)

    s = sub.add_parser("service", help="inspect and call services").add_subparsers(dest="sub", required=True)
    s.add_parser("list", help="list services").set_defaults(fn=cmd_service_list)
    c = s.add_parser("call", help="call a service with a JSON request")
    c.add_argument("service")
    c.add_argument("values", nargs="?", default="{}")
    c.add_argument("--timeout", type=float, default=2.0)
    c.set_defaults(fn=cmd_service_call)

    rec = sub.add_parser("record", help="record topics to MCAP")
    rec.add_argument("topics", nargs="*")
    rec.add_argument("-o", "--output", required=True)
    rec.add_argument("-a", "--all", action="store_true", help="every topic, including ones that appear later")
    rec.add_argument("--duration", type=float)
    rec.set_defaults(fn=cmd_record)

    pl = sub.add_parser("play", help="replay an MCAP recording")
    pl.add_argument("file")
    pl.add_argument("--rate", type=float, default=1.0, help="speed factor (0: as fast as possible)")
    pl.add_argument("--loop", action="store_true")
    pl.add_argument("--topics", nargs="*")
    pl.set_defaults(fn=cmd_play)

    k = sub.add_parser("keys", help="generate a CurveZMQ keypair")
    k.add_argument("directory")
    k.add_argument("name")
    k.set_defaults(fn=cmd_keys)

    sub.add_parser("schemas", help="list message schemas").set_defaults(fn=cmd_schemas)

    from policies.collect import add_collect_cli  # light: imports nothing heavy until run

    add_collect_cli(sub)

    from policies.cli import add_policy_cli

    add_policy_cli(sub)

    from bridge_ros.cli import add_ros_cli

    add_ros_cli(sub)

    from edge.llm.cli import add_llm_cli

    add_llm_cli(sub)

    from edge.split.cli import add_split_cli

    add_split_cli(sub)

    from edge.fl.cli import add_fl_cli

    add_fl_cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ark`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return int(args.fn(args) or 0)
    except ArkError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
