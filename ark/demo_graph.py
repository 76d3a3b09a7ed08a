"""The runtime demo (``make demo-graph``, ``python -m ark.demo_graph``): a camera pipeline as three processes.

It launches ``configs/demo.yaml`` (camera → processor → monitor, see :mod:`ark.demo_nodes`)
for ``--duration`` seconds (default 8), prints the live graph halfway through (nodes, and
topics with their schema and publisher/subscriber counts, as the registry reports them),
then stops every node and prints a short summary. A small observer node in this process
subscribes to the features too, to check the pipeline end to end.

Unless ``--registry``, ``ARK_REGISTRY`` or ``ARK_CONFIG`` says otherwise, the demo uses a
free local port for its registry, so it never joins (or trips over) another running graph.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from ark import config as ark_config
from ark.config import ArkConfig
from ark.demo_nodes import FEATURES_TOPIC, square_centre
from ark.errors import ArkError
from ark.launch import LaunchSpec, NodeSpec, launch, load_launch
from ark.messages import DictArrays
from ark.node import Node
from ark.wire import MessageInfo

DEMO_FILE = Path("configs") / "demo.yaml"


def find_demo_launch() -> Path | None:
    """``configs/demo.yaml`` of the source tree this package lives in, else of the working directory."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / DEMO_FILE).is_file():
            return root / DEMO_FILE
    return None


def builtin_spec() -> LaunchSpec:
    """The demo graph without its YAML file (an installed package ships no ``configs/``)."""
    return LaunchSpec(nodes=[
        NodeSpec(name="camera", node="ark.demo_nodes:CameraNode", params={"rate": 30}, restart="on-failure"),
        NodeSpec(name="processor", node="ark.demo_nodes:ProcessorNode"),
        NodeSpec(name="monitor", node="ark.demo_nodes:MonitorNode"),
    ])


def graph_tables(graph: dict) -> tuple[Table, Table]:
    """Two tables from a registry ``graph`` reply: the nodes, and the topics with schema and counts."""
    nodes = Table(title="nodes", title_justify="left")
    for col in ("name", "pid", "host", "publishes", "subscribes"):
        nodes.add_column(col)
    pubs: dict[str, list[str]] = {}
    subs: dict[str, list[str]] = {}
    for table, into in ((graph["publishers"], pubs), (graph["subscribers"], subs)):
        for topic, entries in table.items():
            for e in entries:
                into.setdefault(e["node"], []).append(topic)
    for nid, info in sorted(graph["nodes"].items(), key=lambda kv: kv[1]["name"]):
        nodes.add_row(info["name"], str(info.get("pid", "")), str(info.get("host", "")),
                      ", ".join(sorted(pubs.get(nid, []))), ", ".join(sorted(subs.get(nid, []))))

    topics = Table(title="topics", title_justify="left")
    for col, justify in (("topic", "left"), ("schema", "left"), ("publishers", "right"), ("subscribers", "right")):
        topics.add_column(col, justify=justify)  # type: ignore[arg-type]
    for topic in sorted(set(graph["publishers"]) | set(graph["subscribers"])):
        entries = graph["publishers"].get(topic, []) + graph["subscribers"].get(topic, [])
        schema = next((f"{e['schema']} v{e['version']}" for e in entries if e.get("schema")), "?")
        topics.add_row(topic, schema, str(len(graph["publishers"].get(topic, []))),
                       str(len(graph["subscribers"].get(topic, []))))
    return nodes, topics


class _Observer:
    """Counts the features reaching this process and checks the centroid the processor found."""

    def __init__(self, node: Node) -> None:
        self.received = 0
        self.latencies_ms: list[float] = []
        self.worst_error_px = 0.0
        self.first: float | None = None
        node.subscriber(FEATURES_TOPIC, DictArrays, self.on_features, queue=100)

    def on_features(self, msg: DictArrays, info: MessageInfo) -> None:
        self.received += 1
        self.first = self.first or time.monotonic()
        self.latencies_ms.append((time.time_ns() - msg.meta["camera_stamp_ns"]) / 1e6)
        found = msg.arrays["centroid"]
        if np.all(np.isfinite(found)):
            # Frame geometry of the demo's default camera (480x640, 64 px square).
            err = float(np.max(np.abs(found - np.array(square_centre(int(msg.meta["frame_seq"]))))))
            self.worst_error_px = max(self.worst_error_px, err)


def _free_registry() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _config(registry: str | None) -> ArkConfig:
    if registry is None and not ({"ARK_REGISTRY", "ARK_CONFIG"} & set(os.environ)):
        registry = _free_registry()
    return ark_config.load(**({"registry": registry} if registry else {}))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when every node ran and stopped cleanly."""
    p = argparse.ArgumentParser(prog="python -m ark.demo_graph", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds to run (default 8)")
    p.add_argument("--launch", type=Path, default=None, help="launch file (default configs/demo.yaml)")
    p.add_argument("--registry", default=None, help="registry endpoint tcp://HOST:PORT (default: a free port)")
    args = p.parse_args(argv)
    console = Console()
    try:
        path = args.launch or find_demo_launch()
        spec = load_launch(path) if path is not None else builtin_spec()
        config = _config(args.registry)
        observer_node = Node("demo-observer", config=config)
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = str(path) if path is not None else f"the built-in graph ({DEMO_FILE} not found)"
    console.print(f"[bold]Ark demo[/]: launching {source} for {args.duration:g} s, registry at {config.registry}")

    observer = _Observer(observer_node)
    observer_node.start()

    def show_graph() -> None:
        try:
            graph = observer_node.registry.request("graph")
        except ArkError as exc:
            console.print(f"[red]graph unavailable:[/] {exc}")
            return
        for table in graph_tables(graph):
            console.print(table)

    halfway = threading.Timer(args.duration / 2, show_graph)
    halfway.daemon = True
    halfway.start()
    started = time.monotonic()
    try:
        rc = launch(spec, config=config, duration=args.duration)
    finally:
        halfway.cancel()
        observer_node.shutdown()
    elapsed = time.monotonic() - started

    span = time.monotonic() - observer.first if observer.first else 0.0
    rate = observer.received / span if span > 0 else 0.0
    p50 = f"{float(np.median(observer.latencies_ms)):.2f} ms" if observer.latencies_ms else "n/a"
    console.print(f"[bold]summary[/]: ran {elapsed:.1f} s; {observer.received} feature messages reached this "
                  f"process ({rate:.1f}/s), latency p50 {p50}, worst centroid error {observer.worst_error_px:.1f} px; "
                  + ("all nodes stopped cleanly" if rc == 0 else "[red]some nodes did not stop cleanly[/]"))
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the launcher took over signal handling
        sys.exit(130)
