"""Federated-learning benchmarks: strategies on non-IID digits, FedCompass vs sync/async, compression, aggregation.

Four parts, each printed as a markdown table (``--part`` picks one; default all):

- ``strategies``: scikit-learn's bundled digits (no download), 50 clients, Dirichlet
  alpha in {0.1, 0.5}, 20 % uniform participation, plus alpha 0.5 with heterogeneous unknown
  participation probabilities (U[0.05, 0.9]): test accuracy after R rounds for every
  synchronous strategy, same seeds (mean and spread over seeds).
- ``async``: FedCompass vs synchronous FedAvg vs FedAsync / FedBuff with heterogeneous device
  speeds (log-normal sigma 1, ~20x fast-to-slow): simulated seconds to a target accuracy.
- ``compression``: FedAvg on digits with a 19k-parameter MLP: bytes per round and final
  accuracy for float32 and several FedZip-style settings.
- ``throughput``: aggregation of 10M-parameter float32 updates (updates/s): one process
  folding every update (flat) vs co-located edge aggregators over shared memory (hierarchical).

    nice -n 5 .venv/bin/python benchmarks/fl.py                 # ~15 min on 2 busy cores
    .venv/bin/python benchmarks/fl.py --part throughput --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.fl.simulation import SimConfig, simulate  # noqa: E402

SYNC = [("FedAvg", "fedavg", {}), ("FedProx (mu 0.01)", "fedprox", {"prox_mu": 0.01}),
        ("FedAvg-M (client, beta 0.5)", "fedavgm", {"beta": 0.5}),
        ("FedAvg + server momentum (0.9, lr 0.5)", "fedavg_server_m", {"server_momentum": 0.9, "server_lr": 0.5}),
        ("SCAFFOLD", "scaffold", {}), ("SCAFFOLD-M (beta 0.5)", "scaffold_m", {"beta": 0.5}),
        ("FedAU (K 50)", "fedau", {"cutoff": 50}),
        ("FedAvg + coordinate median", "fedavg", {"robust": "median"}),
        ("FedAvg + trimmed mean (10 %)", "fedavg", {"robust": "trimmed_mean", "trim": 0.1})]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.node()}: nproc={os.cpu_count()}, {cpu}, Python {platform.python_version()}, "
            f"numpy {np.__version__}, load {load:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def strategies(args: argparse.Namespace) -> dict:
    settings = [("alpha 0.1", 0.1, {"kind": "uniform", "fraction": 0.2}),
                ("alpha 0.5", 0.5, {"kind": "uniform", "fraction": 0.2}),
                ("alpha 0.5, heterogeneous p", 0.5, {"kind": "heterogeneous", "p_low": 0.05, "p_high": 0.9}),
                ("alpha 0.1, p tied to labels", 0.1, {"kind": "heterogeneous", "p_low": 0.02, "p_high": 0.9,
                                                      "label_correlated": True})]
    rounds = 15 if args.quick else args.rounds
    seeds = range(1 if args.quick else args.seeds)
    table: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for label, name, sargs in SYNC:
        for col, alpha, part in settings:
            accs = []
            for seed in seeds:
                cfg = SimConfig(task="digits", hidden=32, clients=50, alpha=alpha, strategy=name, strategy_args=sargs,
                                rounds=rounds, local_steps=10, batch_size=32, lr=0.05, participation=part, seed=seed)
                accs.append(simulate(cfg).final_accuracy)
            table.setdefault(label, {})[col] = accs
        print(f"  {label}: " + ", ".join(f"{c} {100 * np.mean(v):.1f}" for c, v in table[label].items()), flush=True)
    cols = [s[0] for s in settings]
    print(f"\nDigits (1437 train / 360 test), 50 clients, 10 per round (uniform) or each with its own hidden "
          f"probability U[0.05, 0.9] (heterogeneous) or rising linearly from 0.02 to 0.9 with the client's mean "
          f"label (tied to labels), MLP 64-32-10, 10 local SGD steps (batch 32, lr 0.05), "
          f"{rounds} rounds; test accuracy %, mean +- std over seeds {list(seeds)} "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print("| strategy | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, row in table.items():
        print(f"| {label} | " + " | ".join(f"{100 * np.mean(row[c]):.1f} +- {100 * np.std(row[c]):.1f}"
                                           for c in cols) + " |")
    return {"rounds": rounds, "table": table}


def asynchronous(args: argparse.Namespace) -> dict:
    target = args.target
    runs = [("FedAvg (synchronous, 20 steps)", "fedavg_sync", {}),
            ("FedCompass (Q 5..40, lambda 0.5)", "fedcompass", {"q_min": 5, "q_max": 40, "lam": 0.5}),
            ("FedAsync (alpha 0.3, 20 steps)", "fedasync", {"alpha": 0.3}),
            ("FedBuff (K 5, 20 steps)", "fedbuff", {"buffer_size": 5})]
    seeds = range(1 if args.quick else args.seeds)
    rows = {}
    t0 = time.perf_counter()
    for label, name, sargs in runs:
        times, finals, updates = [], [], []
        for seed in seeds:
            cfg = SimConfig(task="digits", clients=20, alpha=0.5, strategy=name, strategy_args=sargs, local_steps=20,
                            lr=0.05, speed_spread=1.0, time_budget=20.0 if args.quick else 40.0, max_updates=4000,
                            target_accuracy=target, seed=seed)
            res = simulate(cfg)
            times.append(res.time_to_target if res.time_to_target is not None else float("inf"))
            finals.append(res.final_accuracy)
            updates.append(res.updates)
        rows[label] = {"time": times, "final": finals, "updates": updates}
        print(f"  {label}: {times}", flush=True)
    print(f"\nDigits, 20 clients (alpha 0.5), seconds per local step log-normal (base 10 ms, sigma 1), "
          f"simulated clock, {'20' if args.quick else '40'} s budget; time to {100 * target:.0f} % test accuracy, "
          f"median over seeds {list(seeds)} ({time.perf_counter() - t0:.0f} s)\n")
    print("| strategy | time to target (s) | vs sync FedAvg | accuracy at budget % | updates received |")
    print("|---|---:|---:|---:|---:|")
    base = np.median(rows[runs[0][0]]["time"])
    for label, r in rows.items():
        t = float(np.median(r["time"]))
        print(f"| {label} | {t:.2f} | {base / t:.2f}x | {100 * np.mean(r['final']):.1f} | {int(np.mean(r['updates']))} |")
    return {"target": target, "rows": rows}


def compression(args: argparse.Namespace) -> dict:
    settings = [("float32 (none)", {}),
                ("fp16, dense", {"topk": None, "quant": "fp16", "error_feedback": False}),
                ("uniform 8-bit, dense", {"topk": None, "quant": "uniform", "bits": 8, "error_feedback": False}),
                ("top 2 %, k-means 16, EF", {"topk": 0.02, "quant": "kmeans", "clusters": 16}),
                ("top 1 %, k-means 16, EF", {"topk": 0.01, "quant": "kmeans", "clusters": 16}),
                ("top 1 %, uniform 4-bit, EF", {"topk": 0.01, "quant": "uniform", "bits": 4}),
                ("top 1 %, k-means 16, no EF", {"topk": 0.01, "quant": "kmeans", "clusters": 16, "error_feedback": False})]
    rounds = 30 if args.quick else 100
    rows = {}
    t0 = time.perf_counter()
    for label, comp in settings:
        cfg = SimConfig(task="digits", hidden=256, clients=50, alpha=0.5, strategy="fedavg", rounds=rounds,
                        local_steps=10, lr=0.05, participation={"kind": "uniform", "fraction": 0.2}, compression=comp)
        res = simulate(cfg)
        rows[label] = {"bytes_round": res.bytes_up / rounds, "accuracy": res.final_accuracy,
                       "bytes_update": res.bytes_up / res.updates}
        print(f"  {label}: {rows[label]}", flush=True)
    dense = rows["float32 (none)"]
    print(f"\nFedAvg on digits, MLP 64-256-10 (19,210 parameters), 50 clients (alpha 0.5), 10 per round, "
          f"{rounds} rounds, seed 0; bytes are exact encoded sizes (header + zstd payload) "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print("| setting | bytes / update | bytes / round | vs float32 | accuracy % | loss (points) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        print(f"| {label} | {r['bytes_update']:,.0f} | {r['bytes_round']:,.0f} | "
              f"{dense['bytes_round'] / r['bytes_round']:.0f}x | {100 * r['accuracy']:.1f} | "
              f"{100 * (dense['accuracy'] - r['accuracy']):+.1f} |")
    return {"rounds": rounds, "rows": rows}


def throughput(args: argparse.Namespace) -> dict:
    from edge.fl.hierarchy import EdgeAggregator, SharedMemoryAggregators

    dim = 10_000_000
    n = 8 if args.quick else 24
    reps = 2 if args.quick else 3
    rng = np.random.default_rng(0)
    weights = rng.uniform(1, 10, n)
    results: dict[str, float] = {}
    root_ms: dict[str, float] = {}
    fanouts = [2] if args.quick else [2, 4]
    ref_copy = None
    for k in fanouts:
        with SharedMemoryAggregators(k, dim, n) as agg:
            data_rng = np.random.default_rng(1)  # the same updates for every variant
            for i in range(n):
                agg.put(i, data_rng.standard_normal(dim, dtype=np.float32), weights[i])
            pool = agg.pool
            if ref_copy is None:
                flat_times = []
                for _ in range(reps):
                    t = time.perf_counter()
                    e = EdgeAggregator(dim)
                    for i in range(n):
                        e.fold(pool[i], float(weights[i]))
                    ref_copy = e.sum / np.float32(e.weight)
                    flat_times.append(time.perf_counter() - t)
                results["flat (one process, running sum)"] = n / min(flat_times)
                root_ms["flat (one process, running sum)"] = 1000 * min(flat_times)
            times, roots = [], []
            for _ in range(reps):
                t = time.perf_counter()
                out = agg.aggregate(n)
                times.append(time.perf_counter() - t)
                roots.append(agg.last_root_s)
            assert np.allclose(out, ref_copy, rtol=1e-4, atol=1e-5)
            label = f"hierarchical, {k} edge aggregators over shared memory"
            results[label] = n / min(times)
            root_ms[label] = 1000 * min(roots)
        print(f"  fanout {k}: {results}", flush=True)
    print(f"\nAggregating {n} updates of a 10M-parameter model (float32, 40 MB each, weighted): updates/s, "
          f"best of {reps}; the updates already sit in shared memory (where a receiver puts them)\n")
    print("| aggregation | updates/s | vs flat | root busy per round (ms) |")
    print("|---|---:|---:|---:|")
    base = results["flat (one process, running sum)"]
    for label, v in results.items():
        print(f"| {label} | {v:.1f} | {v / base:.2f}x | {root_ms[label]:.0f} |")
    return {"n": n, "results": results, "root_ms": root_ms}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["strategies", "async", "compression", "throughput", "all"], default="all")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--target", type=float, default=0.85)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    a = p.parse_args(argv)
    print(machine(), flush=True)
    out = {}
    parts = ["strategies", "async", "compression", "throughput"] if a.part == "all" else [a.part]
    for part in parts:
        print(f"\n## {part}", flush=True)
        out[part] = {"strategies": strategies, "async": asynchronous, "compression": compression,
                     "throughput": throughput}[part](a)
    print("\n" + machine())
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
