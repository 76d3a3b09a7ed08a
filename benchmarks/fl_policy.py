"""Federated BC on ark/PandaPush-v0: N robots, each with demonstrations of its own goal region.

Each robot's scripted-expert demonstrations put the goal in one quadrant of the table's goal
area (non-IID task variants: the robots never see each other's goals). Compared on the *full*
goal area (every quadrant), same seeds, same BC-MLP (the `configs/train/panda_push_bc.yaml`
architecture: 8-action chunks, 4 executed), same number of gradient steps per robot:

- centralised: one policy on the pooled demonstrations (what sharing all data would give);
- federated: FedAvg / FedProx with local Adam, only parameter deltas leave a robot;
- local-only: each robot's own policy, on the full area and on its own quadrant.

    nice -n 5 .venv/bin/python benchmarks/fl_policy.py            # ~15 min on 2 cores
    .venv/bin/python benchmarks/fl_policy.py --quick               # ~3 min, smaller
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ENV = "ark/PandaPush-v0"
GOAL_LOW, GOAL_HIGH = (-0.2, -0.15), (0.1, 0.15)   # configs/envs/panda_push.yaml
BC = {"chunk_size": 8, "n_action_steps": 4, "hidden_dims": [256, 256], "optimizer_lr": 1e-3}


def quadrants(n: int) -> list[dict]:
    """Goal sub-regions: the goal area split in a grid of n cells (n = 2 or 4)."""
    xs = np.linspace(GOAL_LOW[0], GOAL_HIGH[0], 3 if n == 4 else 2)
    ys = np.linspace(GOAL_LOW[1], GOAL_HIGH[1], 3)
    cells = [(xs[i], xs[i + 1], ys[j], ys[j + 1]) for i in range(len(xs) - 1) for j in range(2)]
    return [{"randomisation": {"goal": {"low": [a, c, 0.0], "high": [b, d, 0.0]}}} for a, b, c, d in cells[:n]]


def central_train(clients, steps: int, seed: int):
    """One policy on the pooled data: every batch draws equally from every robot's demonstrations."""
    import torch

    from edge.fl.policy import build_policy, pool_stats

    stats = pool_stats([c.local_stats() for c in clients])
    policy = build_policy("bc", clients[0].ds.features, stats, BC, seed)
    policy.train()
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=BC["optimizer_lr"])
    for _ in range(steps):
        parts = [c._batch() for c in clients]
        batch = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        loss, _ = policy(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()
    policy.eval()
    return policy


def success(policy, episodes: int, seed: int, env_kwargs=None) -> float:
    from policies.evaluate import evaluate

    return evaluate(policy, ENV, episodes, seed=seed, env_kwargs=env_kwargs, progress=False).success_rate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--robots", type=int, default=4, choices=[2, 4])
    p.add_argument("--demos", type=int, default=25, help="demonstrations per robot")
    p.add_argument("--steps", type=int, default=3000, help="gradient steps per robot (and for the central policy)")
    p.add_argument("--central-steps", type=int,
                   help="steps of the centralised policy (default: robots x --steps, the fleet's total compute; "
                        "each centralised batch holds as many windows as one robot's)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes on the full goal area")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-federated", action="store_true", help="skip the centralised and local-only baselines")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--workdir", help="keep datasets here (default: a temporary folder)")
    a = p.parse_args(argv)
    if a.quick:
        a.demos, a.steps, a.rounds, a.episodes = 10, 600, 10, 20
    import torch

    torch.set_num_threads(1)
    from edge.fl.policy import PolicyClient, train_federated
    from edge.fl.strategy import FedAvg, FedProx
    from policies.collect import collect

    work = Path(a.workdir or tempfile.mkdtemp(prefix="fl_policy_"))
    t_start = time.perf_counter()
    variants = quadrants(a.robots)
    clients = []
    for i, kw in enumerate(variants):
        path = work / f"robot{i}"
        if not path.exists():
            collect(ENV, a.demos, path, seed=1000 * (i + 1) + a.seed, env_kwargs=kw, progress=False)
        clients.append(PolicyClient(path, "bc", BC, name=f"robot{i}", batch_size=64, seed=a.seed + i))
    frames = [c.num_examples for c in clients]
    print(f"collected {a.demos} demos x {a.robots} robots ({sum(frames)} frames) in "
          f"{time.perf_counter() - t_start:.0f}s", flush=True)
    rows = []
    eval_seed = 10_000 + a.seed

    t = time.perf_counter()
    central_steps = a.central_steps or a.robots * a.steps
    if a.only_federated:
        central_steps = 0
    if central_steps:
        central = central_train([PolicyClient(c.ds, "bc", BC, name=c.name, batch_size=64 // a.robots,
                                              seed=a.seed + 50 + i) for i, c in enumerate(clients)], central_steps, a.seed)
        rows.append({"method": f"centralised (pooled data, {central_steps} steps)", "success": success(central, a.episodes, eval_seed),
                     "train_s": time.perf_counter() - t, "bytes_up": 0})
        print(rows[-1], flush=True)

    local_steps = max(1, a.steps // a.rounds)
    for name, cls, args in [(f"federated FedAvg ({a.rounds} rounds x {local_steps} steps)", FedAvg, {}),
                            (f"federated FedProx (mu=0.01, {a.rounds} rounds)", FedProx, {"prox_mu": 0.01})]:
        t = time.perf_counter()
        res = train_federated(clients, cls, rounds=a.rounds, local_steps=local_steps, seed=a.seed, strategy_args=args)
        rows.append({"method": name, "success": success(res.policy, a.episodes, eval_seed),
                     "train_s": time.perf_counter() - t, "bytes_up": res.history[-1]["bytes_up"]})
        print(rows[-1], flush=True)

    local_full, local_own = [], []
    for i, c in enumerate([] if a.only_federated else clients):
        t = time.perf_counter()
        res = train_federated([c], FedAvg, rounds=1, local_steps=a.steps, seed=a.seed)
        local_full.append(success(res.policy, a.episodes, eval_seed))
        local_own.append(success(res.policy, max(10, a.episodes // 2), eval_seed + 1, variants[i]))
        print(f"robot{i} local-only: full area {local_full[-1]:.2f}, own quadrant {local_own[-1]:.2f} "
              f"({time.perf_counter() - t:.0f}s)", flush=True)
    if local_full:
        rows.append({"method": "local-only (mean of robots)", "success": float(np.mean(local_full)),
                     "own_quadrant": float(np.mean(local_own)), "per_robot": local_full, "bytes_up": 0})

    total = time.perf_counter() - t_start
    print()
    print(f"Federated BC on {ENV}: {a.robots} robots x {a.demos} demos (goal quadrant per robot), "
          f"{a.steps} steps per robot, {a.rounds} rounds x {local_steps} local steps, "
          f"{a.episodes} eval episodes on the full goal area (seed {eval_seed}); {total / 60:.1f} min, "
          f"{platform.node()} nproc={os.cpu_count()}")
    print()
    print("| method | success (full goal area) | notes |")
    print("|---|---:|---|")
    for r in rows:
        note = ""
        if "own_quadrant" in r:
            note = (f"own quadrant {r['own_quadrant']:.2f}; per robot "
                    + ", ".join(f"{s:.2f}" for s in r["per_robot"]))
        elif r["bytes_up"]:
            note = f"{r['bytes_up'] / 1e6:.1f} MB uploaded in total"
        print(f"| {r['method']} | {r['success']:.2f} | {note} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows, "total_s": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
