"""``ark ros``: run the ROS 2 bridge, export recordings to rosbag2.

    ark ros bridge configs/ros_bridge.yaml [--duration S] [--backend auto|dds|rclpy]
    ark ros export run.mcap --format rosbag2 out/ [--storage mcap|sqlite3] [--distro humble|jazzy]

``add_ros_cli(subparsers)`` registers the commands on the ``ark`` parser; ``python -m bridge_ros``
runs the same commands standalone (``python -m bridge_ros ros bridge …``). User mistakes
raise :class:`ark.errors.ArkError`, which ``ark`` prints as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from ark import config as ark_config
from ark.errors import ArkError


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _require(module: str) -> None:
    """Fail with one line when an optional dependency of the [ros] extra is missing."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ArkError(f"ark ros needs the '{module}' package: pip install 'ark-robotics[ros]'") from None


def cmd_ros_bridge(args: argparse.Namespace) -> int:
    """Run the bridge of a mapping file until Ctrl-C (or ``--duration``), then print its counters."""
    _require("rosbags")
    from bridge_ros.bridge import Bridge
    from bridge_ros.config import load_bridge_config

    err = _console()
    config, types, routes = load_bridge_config(args.mapping)
    if not routes:
        raise ArkError(f"{args.mapping}: no topics to bridge (key 'topics' is empty)")
    runtime = ark_config.load(getattr(args, "config", None))
    bridge = Bridge(config, types, routes, ark_config=runtime, backend=args.backend)
    err.print(f"bridging {len(routes)} topic(s) over {bridge.backend_name} (ROS 2 {config.distro}, domain "
              f"{config.domain_id}); Ctrl-C to stop", highlight=False)
    try:
        bridge.spin(args.duration)
    finally:
        bridge.shutdown()
    stats = bridge.stats()
    for r in stats["routes"]:
        arrow = "→" if r["direction"] == "ark_to_ros" else "←"
        problems = ", ".join(f"{k} {r[k]}" for k in ("malformed", "convert_errors", "hash_mismatch",
                                                       "incompatible_qos", "send_errors") if r[k])
        err.print(f"  ark {r['ark']} {arrow} ros {r['ros']} [{r['type']}]: {r['forwarded']} forwarded"
                  + (f"; {problems}" if problems else ""), highlight=False, markup=False, soft_wrap=True)
    if args.json:
        print(json.dumps(stats))
    return 0


def cmd_ros_export(args: argparse.Namespace) -> int:
    """Convert an Ark recording to a rosbag2 directory."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    _require("rosbags")
    from bridge_ros.export import export_rosbag2

    types: dict[str, str] = {}
    for item in args.type or []:
        topic, sep, ros_type = item.partition("=")
        if not sep or not topic or not ros_type:
            raise ArkError(f"--type {item!r}: expected TOPIC=ROS_TYPE, e.g. /state=my_msgs/msg/State")
        types[topic] = ros_type
    err = _console()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("exporting", total=None)
        stats = export_rosbag2(args.recording, args.output, storage=args.storage, distro=args.distro,
                               topics=args.topics or None, types=types or None,
                               progress=lambda n: bar.update(task, description=f"exporting: {n} messages"))
    per_topic = ", ".join(f"{t} ({ros_type}) {n}" for t, (ros_type, n) in sorted(stats.topics.items())) or "no topics"
    err.print(f"wrote {stats.output} ({args.storage}, {args.distro}): {stats.messages} messages: {per_topic}",
              highlight=False, markup=False, soft_wrap=True)
    for topic, why in sorted(stats.skipped_topics.items()):
        err.print(f"  skipped {topic}: {why}", highlight=False, markup=False, soft_wrap=True)
    if stats.skipped_messages:
        err.print(f"  {stats.skipped_messages} message(s) did not convert and were skipped", highlight=False)
    return 0


def add_ros_cli(subparsers: Any) -> None:
    """Register ``ros bridge`` and ``ros export`` on an argparse sub-parser collection (``ark``'s)."""
    ros = subparsers.add_parser("ros", help="ROS 2 interoperability: live bridge, rosbag2 export")
    sub = ros.add_subparsers(dest="ros_command", required=True)

    b = sub.add_parser("bridge", help="bridge Ark topics and ROS 2 topics as a YAML mapping says")
    b.add_argument("mapping", metavar="CONFIG", help="bridge mapping YAML (e.g. configs/ros_bridge.yaml)")
    b.add_argument("--backend", choices=["auto", "dds", "rclpy"], help="override the mapping's backend")
    b.add_argument("--duration", type=float, help="stop after this many seconds")
    b.add_argument("--json", action="store_true", help="print the final counters as JSON on stdout")
    b.set_defaults(fn=cmd_ros_bridge)

    e = sub.add_parser("export", help="convert an Ark MCAP recording to a rosbag2")
    e.add_argument("recording", metavar="RUN.mcap")
    e.add_argument("--format", required=True, choices=["rosbag2"], help="output format")
    e.add_argument("output", metavar="OUT", help="rosbag2 directory to create (must not exist)")
    e.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage (default mcap)")
    e.add_argument("--distro", choices=["humble", "jazzy"], default="humble", help="ROS 2 distribution (default humble)")
    e.add_argument("--topics", nargs="*", help="export only these topics")
    e.add_argument("--type", action="append", metavar="TOPIC=ROS_TYPE",
                   help="ROS type of a topic (repeatable); needed for ark/DictArrays topics")
    e.set_defaults(fn=cmd_ros_export)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridge_ros ros …``: the ``ark ros`` commands, through the ``ark`` CLI itself."""
    from ark.cli import main as ark_main

    return ark_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
