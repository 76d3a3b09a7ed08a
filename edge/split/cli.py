"""``ark split data | train | export | run | bench``: split-DNN encoders from the command line.

    ark split data --out runs/split/data                          render train/val/test frames
    ark split train --data runs/split/data --out runs/split/model teacher, distillation, fine-tuning
    ark split export --model runs/split/model                     head.onnx + filter.onnx, parity check
    ark split run --model runs/split/model --data runs/split/data --link 5
                                                                  camera -> head -> link -> tail nodes
    ark split bench [--quick]                                     benchmarks/split.py

``--config`` names a recipe (a YAML path or a name in configs/split/, default ``default``).
``add_split_cli(subparsers)`` registers the commands on the ``ark`` parser; errors a user can
cause raise SplitError (one line, exit status 2 from ``ark``'s main). Heavy imports (torch,
pybullet) happen only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence


def cmd_data(args: argparse.Namespace) -> int:
    from edge.split import config, dataset

    over = {k: v for k, v in {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
                              "size": args.size, "seed": args.seed}.items() if v is not None}
    cfg = config.load(args.config, data=over)
    out = dataset.write(cfg.data, args.out, progress=not args.quiet)
    print(f"wrote {cfg.data.n_train}/{cfg.data.n_val}/{cfg.data.n_test} frames of {cfg.data.size}x{cfg.data.size} to {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edge.split import config, train

    over = {k: v for k, v in {"threads": args.threads, "seed": args.seed}.items() if v is not None}
    cfg = config.load(args.config, train=over)
    if args.size is None:
        from edge.split.dataset import data_config

        cfg.data.size = data_config(args.data).size
    m = train.train(cfg, args.data, args.out, progress=not args.quiet)
    _print_metrics(m)
    print(f"checkpoint: {args.out}")
    return 0


def _print_metrics(m: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="validation")
    for col in ("model", "accuracy", "shape", "colour", "position MAE (cm)"):
        t.add_column(col, justify="right" if col != "model" else "left")
    rows = [("teacher", m["teacher"])] + list(m["student"].items())
    for name, r in rows:
        t.add_row(name, f"{r['accuracy']:.3f}", f"{r['shape_acc']:.3f}", f"{r['colour_acc']:.3f}", f"{r['position_mae_cm']:.2f}")
    Console().print(t)
    print(f"frame filter accuracy {m['filter_acc']:.3f}; trained in {m.get('train_seconds', 0):.0f} s")


def cmd_export(args: argparse.Namespace) -> int:
    from edge.split import checkpoint, onnx_export

    model = checkpoint.load(args.model)
    out = Path(args.out or Path(args.model) / "onnx")
    onnx_export.export(model, out)
    import numpy as np

    rng = np.random.default_rng(0)
    s = model.config.data.size
    frames = rng.integers(0, 256, (4, s, s, 3), dtype=np.uint8)
    err = onnx_export.parity(model, out, frames)
    worst = max(err.values())
    print(f"wrote {out}/head.onnx and filter.onnx; max |ONNX - PyTorch| = {worst:.2e} over {len(err)} outputs")
    if worst > 1e-3:
        from edge.split.errors import SplitError

        raise SplitError(f"ONNX parity check failed: max difference {worst:.2e} > 1e-3 ({err})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Replay test frames through camera -> SplitHeadNode -> LinkEmulator -> SplitTailNode in this process."""
    import numpy as np

    from ark import config as ark_config
    from ark.messages import Image
    from ark.node import Node, shutdown_all
    from edge.split import checkpoint, dataset
    from edge.split.link import LinkEmulator
    from edge.split.nodes import SplitHeadNode, SplitTailNode, Output
    from edge.split.train import POSITION_TOLERANCE_M

    cfg = ark_config.load(getattr(args, "config_runtime", None))
    model = checkpoint.load(args.model)
    split = dataset.read(args.data, "test")
    n = min(args.frames, len(split))
    head_params: dict[str, Any] = {"out_topic": "/split/latent_tx", "bits": args.bits,
                                   "filter_threshold": args.filter_threshold}
    if args.width is not None:
        head_params["width"] = args.width
    if args.budget_ms is not None:
        head_params["budget_ms"] = args.budget_ms
    if args.onnx:
        head_params["onnx"] = args.onnx
    results: list[tuple[Any, int]] = []
    try:
        head = SplitHeadNode("split_head", config=cfg, params=head_params, model=model).start()
        link = LinkEmulator("split_link", config=cfg, params={
            "in_topic": "/split/latent_tx", "out_topic": "/split/latent", "bandwidth_bps": args.link * 1e6,
            "latency_ms": args.latency_ms, "loss": args.loss}).start()
        tail = SplitTailNode("split_tail", config=cfg, model=model).start()
        cam = Node("split_camera", config=cfg).start()
        pub = cam.publisher("/camera/rgb", Image)
        cam.subscriber("/split/output", Output, lambda o: results.append((o, time.time_ns())), queue=1000)
        time.sleep(0.3)  # let the subscriptions connect
        stamps: dict[int, int] = {}
        for i in range(n):
            stamps[i + 1] = time.time_ns()
            pub.publish(Image(np.ascontiguousarray(split.images[i]), encoding="rgb8", frame_id="camera"),
                        stamp_ns=stamps[i + 1])
            time.sleep(1.0 / args.rate)
        end = time.monotonic() + 2.0
        while time.monotonic() < end and len(results) < head.sent - link.lost:
            time.sleep(0.01)
    finally:
        shutdown_all()
    ok = 0
    delays, sizes, widths = [], [], []
    for o, t in results:
        i = o.frame_seq - 1
        delays.append((t - stamps[o.frame_seq]) / 1e6)
        sizes.append(o.packet_bytes)
        widths.append(o.width)
        if split.present[i]:
            err = float(np.linalg.norm(o.position - split.position[i]))
            ok += (o.shape == dataset.SHAPES[split.shape[i]] and o.colour == dataset.COLOURS[split.colour[i]]
                   and err <= POSITION_TOLERANCE_M)
    objects = int(sum(split.present[o.frame_seq - 1] for o, _ in results))
    summary = {"frames": n, "sent": head.sent, "filtered": head.filtered, "lost": link.lost, "outputs": len(results),
               "accuracy_on_objects": round(ok / max(objects, 1), 4),
               "bytes_per_frame": round(float(np.mean(sizes)), 1) if sizes else None,
               "delay_ms_p50": round(float(np.median(delays)), 2) if delays else None,
               "delay_ms_p95": round(float(np.percentile(delays, 95)), 2) if delays else None,
               "widths_used": sorted(set(widths)), "rejected": dict(tail.rejected.counts)}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    from edge.split.config import REPO_ROOT
    from edge.split.errors import SplitError

    path = REPO_ROOT / "benchmarks" / "split.py"
    if not path.is_file():
        raise SplitError(f"{path}: not found (the benchmark ships with the source tree, not the package)")
    argv = [a for a in args.rest if a != "--"]
    for name in ("config", "data", "model", "frames", "rate", "rates", "latency_runs", "budget_ms", "rounds", "json"):
        value = getattr(args, f"bench_{name}")
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if args.quick:
        argv.append("--quick")
    sys.argv = [str(path), *argv]
    runpy.run_path(str(path), run_name="__main__")
    return 0


def add_split_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``split data|train|export|run|bench`` on an ``add_subparsers()`` object; returns the ``split`` parser."""
    sp = subparsers.add_parser("split", help="split-DNN encoders: data, train, export, run, bench")
    sub = sp.add_subparsers(dest="split_command", required=True)

    d = sub.add_parser("data", help="render train/val/test frames from the Panda table scene")
    d.add_argument("--config", help="recipe YAML or name in configs/split/ (default: default)")
    d.add_argument("--out", required=True, help="dataset folder")
    for name in ("n-train", "n-val", "n-test", "size", "seed"):
        d.add_argument(f"--{name}", type=int)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(fn=cmd_data)

    t = sub.add_parser("train", help="teacher, head distillation, sandwich fine-tuning, frame filter")
    t.add_argument("--config", help="recipe YAML or name in configs/split/ (default: default)")
    t.add_argument("--data", required=True, help="dataset folder from `ark split data`")
    t.add_argument("--out", required=True, help="checkpoint folder")
    t.add_argument("--threads", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--size", type=int, help=argparse.SUPPRESS)
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("export", help="head.onnx and filter.onnx with a parity check against PyTorch")
    e.add_argument("--model", required=True, help="checkpoint folder")
    e.add_argument("--out", help="output folder (default: <model>/onnx)")
    e.set_defaults(fn=cmd_export)

    r = sub.add_parser("run", help="replay test frames through head, emulated link and tail nodes")
    r.add_argument("--model", required=True, help="checkpoint folder")
    r.add_argument("--data", required=True, help="dataset folder (its test split is replayed)")
    r.add_argument("--frames", type=int, default=100)
    r.add_argument("--rate", type=float, default=20.0, help="camera frames per second")
    r.add_argument("--link", type=float, default=5.0, metavar="MBIT", help="link bandwidth, Mbit/s")
    r.add_argument("--latency-ms", type=float, default=2.0)
    r.add_argument("--loss", type=float, default=0.0, help="probability a packet is lost")
    r.add_argument("--width", type=int, help="width index (default: widest)")
    r.add_argument("--bits", type=int, default=4, choices=[2, 4, 8])
    r.add_argument("--budget-ms", type=float, help="let the width controller meet this delay budget")
    r.add_argument("--filter-threshold", type=float, default=0.5, help="0 sends every frame")
    r.add_argument("--onnx", help="run the head under ONNX Runtime from this folder (see `ark split export`)")
    r.set_defaults(fn=cmd_run)

    b = sub.add_parser("bench", help="rate-accuracy and latency tables (benchmarks/split.py)")
    b.add_argument("--quick", action="store_true", help="tiny recipe in a temporary folder: a smoke run")
    for name, kind, text in (("config", str, "recipe when data/model must be made"), ("data", str, "dataset folder"),
                             ("model", str, "checkpoint folder"), ("frames", int, "frames per end-to-end run"),
                             ("rate", float, "camera rate, Hz"), ("rates", str, "link rates, Mbit/s, e.g. 1,5,25"),
                             ("latency-runs", int, "runs per latency measurement"),
                             ("budget-ms", float, "the width controller's delay budget"),
                             ("rounds", int, "interleaved end-to-end rounds"), ("json", str, "write every number here")):
        b.add_argument(f"--{name}", type=kind, dest=f"bench_{name.replace('-', '_')}", metavar=name.upper().replace('-', '_'),
                       help=text)
    b.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    b.set_defaults(fn=cmd_bench)
    return sp


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.split.cli ...``: the same as ``ark split ...``."""
    from ark.cli import main as ark_main

    return ark_main(["split", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
