"""``ark fl simulate | server | client``: federated learning from the command line.

    ark fl simulate digits                                  a configs/fl/ scenario (or a YAML path)
    ark fl simulate digits --strategy fedau --alpha 0.1     override keys of the file
    ark fl simulate digits --ray 4                          the same simulation on a local Ray with 4 workers
    ark fl server digits --checkpoint runs/fl               the server node (resumes from runs/fl)
    ark fl client digits --index 3                          robot 3 of the fleet (its own partition)

Each prints one line per round: round, accuracy, bytes sent. ``add_fl_cli(subparsers)``
registers the commands; user mistakes raise FLError (one line, exit status 2 from ``ark``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from ark.cli import json_object
    from edge.fl.errors import FLConfigError

    out = {k: getattr(args, k) for k in ("strategy", "rounds", "clients", "alpha", "seed", "local_steps", "lr")
           if getattr(args, k, None) is not None}
    for key in ("strategy_args", "compression", "participation"):
        value = json_object(getattr(args, key, None), f"--{key.replace('_', '-')}", FLConfigError)
        if value is not None:
            out[key] = value
    return out


def _row_line(row: dict[str, Any], total: int | None) -> str:
    if "round" in row:
        head = f"round {row['round']}" + (f"/{total}" if total else "")
    else:
        head = f"t={row['time']:.2f}s version {row['version']}"
    acc = row.get("accuracy")
    acc_s = f"accuracy {acc:.3f}" if isinstance(acc, float) else "accuracy -"
    return f"{head}  {acc_s}  bytes sent {_fmt_bytes(row.get('bytes_up', 0))}"


def cmd_simulate(args: argparse.Namespace) -> int:
    from edge.fl.config import load_sim_config
    from edge.fl.simulation import ASYNC_STRATEGIES, simulate

    cfg = load_sim_config(args.scenario, _overrides(args))
    total = None if cfg.strategy in ASYNC_STRATEGIES else cfg.rounds
    quiet = args.quiet

    def progress(row: dict[str, Any]) -> None:
        if not quiet:
            print(_row_line(row, total), flush=True)

    if args.ray:
        from edge.fl.ray_runner import simulate_on_ray

        res = simulate_on_ray(cfg, workers=args.ray, progress=progress)
    else:
        res = simulate(cfg, progress=progress)
    summary = (f"{cfg.strategy} on {cfg.task}: accuracy {res.final_accuracy:.3f} after "
               f"{res.history[-1].get('round', res.updates) if res.history else 0} "
               f"{'rounds' if total else 'updates'}, {_fmt_bytes(res.bytes_up)} sent by clients, "
               f"{res.wall_time_s:.1f}s")
    if res.time_to_target is not None:
        summary += f", target {cfg.target_accuracy} reached at {res.time_to_target:.2f}"
    print(summary, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res.to_dict(), f, indent=1, default=float)
    return 0


def _ark_config(args: argparse.Namespace) -> Any:
    """The runtime configuration (``ark --config``), as the other node commands use it."""
    from ark import config as ark_config

    return ark_config.load(getattr(args, "config", None))


def _start_server(args: argparse.Namespace, params: dict[str, Any]) -> Any:
    """Build the server node. Right after a crash the old node still holds the name's services until the
    registry sees it go stale, so wait (up to ``--wait-s``) for the name to be free first."""
    from ark.errors import RegistryError
    from ark.registry import RegistryClient
    from edge.fl.nodes import FLServerNode

    cfg = _ark_config(args)
    deadline = time.monotonic() + args.wait_s
    announced = False
    while time.monotonic() < deadline:
        client = RegistryClient(cfg)
        try:
            client.request("lookup_service", service=f"{args.name}/param")
        except RegistryError:  # not found, or no registry yet (the node will start one): the name is free
            break
        finally:
            client.close()
        if not announced:
            print(f"waiting for the previous {args.name} to leave the graph...", flush=True)
            announced = True
        time.sleep(0.2)
    return FLServerNode(args.name, config=cfg, params=params)


def cmd_server(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"config": args.scenario, **_overrides(args)}
    if args.checkpoint:
        params["checkpoint"] = args.checkpoint
    for key in ("clients_per_round", "min_updates", "round_timeout_s"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    node = _start_server(args, params)
    srv = node.server
    if srv.resumed:
        print(f"resumed from {args.checkpoint} at round {srv.round} "
              f"({len(srv.strategy.acc)} accepted updates in the open round)", flush=True)
    print(f"FL server {args.name}: {srv.strategy.name}, {srv.rounds} rounds, "
          f"{srv.clients_per_round} updates per round", flush=True)
    shown = len(srv.history)
    node.start()
    try:
        while not srv.done and not node._stop.is_set():
            time.sleep(0.1)
            while shown < len(srv.history):
                print(_row_line(srv.history[shown], srv.rounds) + f"  ({srv.history[shown]['updates']} updates)",
                      flush=True)
                shown += 1
        while shown < len(srv.history):
            print(_row_line(srv.history[shown], srv.rounds), flush=True)
            shown += 1
        if srv.done:
            time.sleep(args.linger)  # let clients hear "done" before the services go away
    finally:
        node.shutdown()
    rejected = dict(srv.validator.rejected)
    print(f"done: round {srv.round}, {srv.validator.accepted} updates accepted"
          + (f", rejected {rejected}" if rejected else ""), flush=True)
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from edge.fl.nodes import FLClientNode

    params: dict[str, Any] = {"config": args.scenario, "index": args.index, **_overrides(args)}
    for key in ("delay_s", "max_updates", "poll_s", "give_up_s"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    name = args.name or f"fl_client_{args.index}"
    node = FLClientNode(name, config=_ark_config(args), params=params).start()
    last = 0
    try:
        while not node.finished.wait(0.1):
            if node.accepted != last:
                last = node.accepted
                print(f"{node.client_id}: {last} updates accepted, bytes sent {_fmt_bytes(node.bytes_sent)}",
                      flush=True)
    finally:
        node.shutdown()
    print(f"{node.client_id}: finished with {node.accepted} updates accepted"
          + (f", {len(node.rejected)} rejected" if node.rejected else ""), flush=True)
    return 0


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="?", default="digits", help="a configs/fl/ name or a YAML path (default: digits)")
    g = p.add_argument_group("overrides of the file's keys")
    g.add_argument("--strategy")
    g.add_argument("--strategy-args", metavar="JSON", help='e.g. \'{"beta": 0.5}\'')
    g.add_argument("--rounds", type=int)
    g.add_argument("--clients", type=int)
    g.add_argument("--alpha", type=float, help="Dirichlet label skew")
    g.add_argument("--local-steps", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--compression", metavar="JSON", help='e.g. \'{"topk": 0.01, "quant": "kmeans"}\'')
    g.add_argument("--seed", type=int)


def add_fl_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fl simulate|server|client`` on an ``add_subparsers()`` object; returns the ``fl`` parser."""
    fl = subparsers.add_parser("fl", help="federated learning: simulate a fleet, or run a server / a client")
    sub = fl.add_subparsers(dest="fl_command", required=True)

    s = sub.add_parser("simulate", help="simulate a fleet in this process (or on Ray with --ray N)")
    _scenario_args(s)
    s.add_argument("--participation", metavar="JSON", help='e.g. \'{"kind": "heterogeneous"}\'')
    s.add_argument("--ray", type=int, metavar="N", help="run the clients on a local Ray with N workers")
    s.add_argument("--json", metavar="FILE", help="write the history and totals here")
    s.add_argument("-q", "--quiet", action="store_true", help="only the summary line")
    s.set_defaults(fn=cmd_simulate)

    v = sub.add_parser("server", help="run the FL server node (synchronous strategies)")
    _scenario_args(v)
    v.add_argument("--name", default="fl_server")
    v.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder; resume from it when it holds one")
    v.add_argument("--clients-per-round", type=int)
    v.add_argument("--min-updates", type=int)
    v.add_argument("--round-timeout-s", type=float)
    v.add_argument("--wait-s", type=float, default=10.0,
                   help="after a crash, wait this long for the old server to leave the graph (default 10)")
    v.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after the last round (default 1)")
    v.set_defaults(fn=cmd_server)

    c = sub.add_parser("client", help="run one client node (a robot with its own data partition)")
    _scenario_args(c)
    c.add_argument("--index", type=int, default=0, help="which partition of the fleet's data")
    c.add_argument("--name", help="node name (default fl_client_<index>)")
    c.add_argument("--delay-s", type=float, help="extra seconds per round (a slow robot)")
    c.add_argument("--max-updates", type=int, help="leave after this many accepted updates")
    c.add_argument("--poll-s", type=float)
    c.add_argument("--give-up-s", type=float, help="stop after this long without reaching the server (default 60)")
    c.set_defaults(fn=cmd_client)
    return fl


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.fl.cli ...``: the same as ``ark fl ...``."""
    from ark.cli import main as ark_main

    return ark_main(["fl", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
