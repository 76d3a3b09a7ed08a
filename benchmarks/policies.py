"""Policy quality and inference latency on ark/PandaPush-v0 (issue 4's quality bar).

    python benchmarks/policies.py                       # 200 demos, bc/act/diffusion, 100 eval episodes
    python benchmarks/policies.py --quick               # 20 demos, few steps: checks the pipeline only
    python benchmarks/policies.py --images --policies act --recipe cpu --steps 3000

For each policy type: train on scripted demonstrations (state observations unless
``--images``) with a recipe (default: ``configs/train/panda_push_<type>.yaml``, the PandaPush
quality recipes; ``--recipe cpu``: the type's built-in CPU preset; or a YAML path), report the
training time (wall and CPU seconds of this process: CPU time does not grow when other jobs
share the cores), evaluate over seeded
episodes (success rate with its 95 % Wilson interval), export to ONNX and time inference,
PyTorch eager versus ONNX Runtime, per action (``select_action``, including chunk-queue hits)
and per chunk (``predict_chunk``), all in one run on this machine.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ENV = "ark/PandaPush-v0"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, torch {torch.__version__}"


def latency(policy, obs_source, n: int) -> dict[str, float]:
    """p50/p99 ms of select_action over a stream of observations and of predict_chunk."""
    policy.reset()
    steps = []
    for i in range(n):
        obs = obs_source[i % len(obs_source)]
        t = time.perf_counter()
        policy.select_action(obs)
        steps.append(time.perf_counter() - t)
    hist = {k: np.stack([obs_source[0][k]] * policy_n_obs(policy)) for k in obs_source[0]}
    chunks = []
    rng = np.random.default_rng(0)
    for _ in range(max(5, n // 10)):
        noise = rng.standard_normal(noise_shape(policy)).astype(np.float32) if noise_shape(policy) else None
        t = time.perf_counter()
        policy.predict_chunk(hist, noise=noise)
        chunks.append(time.perf_counter() - t)
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
    return {"action_p50_ms": ms(steps, 50), "action_p99_ms": ms(steps, 99),
            "chunk_p50_ms": ms(chunks, 50), "chunk_p99_ms": ms(chunks, 99)}


def policy_n_obs(policy) -> int:
    cfg = getattr(policy, "config", policy)  # a PyTorch policy's config, or the OnnxPolicy itself
    return int(cfg.n_obs_steps)


def noise_shape(policy):
    """(horizon, A) for Diffusion Policy, so both runtimes start from the same noise; else None."""
    if hasattr(policy, "config"):
        cfg = policy.config
        return (int(cfg.horizon), int(cfg.output_features["action"][0])) if cfg.type == "diffusion" else None
    return (policy.horizon, policy.action_dim) if policy.type == "diffusion" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", nargs="+", default=["bc", "act", "diffusion"])
    ap.add_argument("--demos", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=100, help="evaluation episodes")
    ap.add_argument("--steps", type=int, help="training steps (default: each recipe's)")
    ap.add_argument("--images", action="store_true", help="96x96 rgb observations too")
    ap.add_argument("--recipe", default="push",
                    help="push (configs/train/panda_push_<type>.yaml), cpu (built-in preset) or a YAML path")
    ap.add_argument("--threads", type=int, help="torch threads (default: the recipe's)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "ark-bench-policies"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--plots", help="write the training-loss curves as a PNG into this folder (needs matplotlib)")
    args = ap.parse_args()
    if args.quick:
        args.demos, args.episodes, args.steps = 20, 5, args.steps or 50

    from policies.collect import collect
    from policies.evaluate import evaluate, load_policy
    from policies.onnx_export import export_onnx
    from policies.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    recipes_dir = Path(__file__).resolve().parent.parent / "configs" / "train"

    def recipe_for(ptype: str):
        if args.recipe == "push":
            return recipes_dir / f"panda_push_{ptype}.yaml"
        return None if args.recipe == "cpu" else args.recipe
    work = Path(args.work)
    tag = f"push{'-img' if args.images else ''}-{args.demos}"
    data = work / tag
    if not data.exists():
        t = time.perf_counter()
        collect(ENV, args.demos, data, images=args.images, seed=0, progress=True)
        print(f"collected {args.demos} demos in {time.perf_counter() - t:.0f} s")
    results = []
    for ptype in args.policies:
        recipe = recipe_for(ptype)
        run = work / f"{tag}-{ptype}-{Path(str(recipe)).stem if recipe else 'cpu'}-{args.steps or 'recipe'}"
        t, c = time.perf_counter(), time.process_time()
        res = train(ptype, data, run, steps=args.steps, seed=0, num_threads=args.threads, recipe=recipe,
                    progress=True, resume=False)
        train_s, train_cpu = time.perf_counter() - t, time.process_time() - c
        ev = evaluate(run, ENV, args.episodes, seed=10_000, progress=True,
                      env_kwargs={"cameras": True} if args.images else None)
        torch_policy = load_policy(run)
        onnx_dir = export_onnx(torch_policy, run / "onnx")
        onnx_policy = load_policy(onnx_dir)
        # observations in the policy's own key layout, from the dataset
        from policies.dataset import Dataset

        ds = Dataset.open(data, read_only=True)
        ep = ds.episode(0)
        keys = list(torch_policy.config.input_features)
        obs_source = [{k: np.asarray(ep[k][i]) for k in keys} for i in range(min(40, len(ep[keys[0]])))]
        lat_torch = latency(torch_policy, obs_source, 200)
        lat_onnx = latency(onnx_policy, obs_source, 200)
        row = {**ev.to_dict(), "policy": ptype, "recipe": str(recipe or "cpu preset"), "run": str(run), "steps": res.step,
               "train_wall_s": train_s, "train_cpu_s": train_cpu, "torch": lat_torch, "onnx": lat_onnx}
        row.pop("per_episode", None)
        results.append(row)
        print(f"{ptype}: {ev.summary()}; trained {train_s / 60:.1f} min")

    print(f"\nark/PandaPush-v0, {args.demos} demos, {'state+rgb' if args.images else 'state'} observations; {machine()}")
    print("| policy | recipe | train steps | train wall / CPU min | success (95% CI) | mean len | torch action p50/p99 ms | onnx action p50/p99 ms | torch chunk p50 ms | onnx chunk p50 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ci = r["success_ci95"]
        sr = f"{100 * r['success_rate']:.0f}% ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})" if r["success_rate"] is not None else "-"
        print(f"| {r['policy']} | {Path(r['recipe']).stem} | {r['steps']} | "
              f"{r['train_wall_s'] / 60:.1f} / {r['train_cpu_s'] / 60:.1f} | {sr} | {r['mean_length']:.1f} | "
              f"{r['torch']['action_p50_ms']:.2f}/{r['torch']['action_p99_ms']:.2f} | "
              f"{r['onnx']['action_p50_ms']:.2f}/{r['onnx']['action_p99_ms']:.2f} | "
              f"{r['torch']['chunk_p50_ms']:.2f} | {r['onnx']['chunk_p50_ms']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=2,
                                              default=str))
    if args.plots:
        plot_losses(results, Path(args.plots), tag)


def plot_losses(results: list[dict], folder: Path, tag: str) -> None:
    """Training loss against step for each run, from the runs' metrics.csv."""
    import csv

    from ark.viz.plots import PlotUnavailable, training_curves

    curves = {}
    for r in results:
        with open(Path(r["run"]) / "metrics.csv", newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get("loss")]
        curves[r["policy"]] = ([float(row["step"]) for row in rows], [float(row["loss"]) for row in rows])
    try:
        png = training_curves(curves, folder / f"{tag}_loss.png", title=f"training loss, {tag}", log_y=True)
        print(f"wrote {png}")
    except PlotUnavailable as exc:
        print(f"no plot: {exc}")


if __name__ == "__main__":
    main()
