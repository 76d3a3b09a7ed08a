"""The ``ark train``, ``ark eval`` and ``ark export`` commands (registered by :func:`add_policy_cli`).

    ark train --policy act --data data/push --out runs/push-act [--steps N] [--batch-size B]
              [--device cpu|cuda] [--recipe YAML] [--seed S] [--no-resume]
    ark eval --policy runs/push-act --env ark/PandaPush-v0 --episodes 50 [--video out.mp4]
             [--seed S] [--backend sim|node] [--json]
    ark export --policy runs/push-act --format onnx [--out DIR]

User mistakes raise ArkError subclasses, which ``ark``'s main prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ark.errors import ArkError

PARITY_TOLERANCE = 1e-4


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


# ----- ark train --------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from policies.train import TrainingInterrupted, train

    console = _console()
    try:
        result = train(args.policy, args.data, args.out, steps=args.steps, batch_size=args.batch_size,
                       device=args.device, seed=args.seed, recipe=args.recipe, checkpoint_every=args.checkpoint_every,
                       resume=not args.no_resume, progress=not args.no_progress, num_threads=args.threads)
    except TrainingInterrupted as exc:
        where = f"; checkpoint {exc.checkpoint}" if exc.checkpoint else ""
        console.print(f"interrupted at step {exc.step}{where}; run the same command to resume", style="yellow")
        return 130
    if result.steps_run == 0:
        console.print(f"already trained: {result.summary()}")
    else:
        console.print(f"trained {result.summary()}")
    console.print(f"metrics: {result.metrics_csv}")
    return 0


# ----- ark eval ---------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from ark.cli import json_object

    from policies.evaluate import evaluate

    console = _console()
    result = evaluate(args.policy, args.env, args.episodes, seed=args.seed, video=args.video,
                      video_episodes=args.video_episodes, env_kwargs=json_object(args.env_kwargs, "--env-kwargs"),
                      max_steps=args.max_steps, progress=not args.no_progress and not args.json,
                      backend=args.backend, device=args.device)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"{result.policy} on {result.env_id}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("episodes", str(result.n))
    if result.success_rate is not None:
        lo, hi = result.success_ci
        table.add_row("success rate", f"{100 * result.success_rate:.1f}% ({result.successes}/{result.reported})")
        table.add_row("95% interval (Wilson)", f"{100 * lo:.1f}% - {100 * hi:.1f}%")
    else:
        table.add_row("success rate", "n/a (the environment reports no is_success)")
    table.add_row("mean episode length", f"{result.mean_length:.1f}")
    table.add_row("mean return", f"{result.mean_return:.4g}")
    table.add_row("wall time", f"{result.wall_time_s:.1f}s")
    console.print(table)
    if result.video is not None:
        console.print(f"video: {result.video}")
    return 0


# ----- ark export -------------------------------------------------------------------------------
def onnx_parity(policy: Any, directory: str | os.PathLike[str], batch: int = 4, seed: int = 0) -> float:
    """Max |ONNX Runtime − PyTorch| over the action chunks of ``batch`` random observations.

    State inputs are drawn within the policy's normalisation range, images uniformly; Diffusion
    Policy gets the same initial noise on both sides.
    """
    import torch

    from policies.onnx_runner import OnnxPolicy

    cfg = policy.config
    rng = np.random.default_rng(seed)
    stats = policy.normalizer.stats()
    obs: dict[str, np.ndarray] = {}
    for key, shape in cfg.input_features.items():
        if key in cfg.image_keys:
            obs[key] = rng.integers(0, 256, (batch, cfg.n_obs_steps, *shape), dtype=np.uint8)
        else:
            lo, hi = np.asarray(stats[key]["min"]), np.asarray(stats[key]["max"])
            if not (np.all(np.isfinite(lo)) and np.all(hi > lo)):
                lo, hi = -np.ones(shape), np.ones(shape)
            obs[key] = rng.uniform(lo, hi, (batch, cfg.n_obs_steps, *shape)).astype(np.float32)
    noise = None
    if policy.name == "diffusion":
        noise = rng.standard_normal((batch, cfg.horizon, cfg.action_dim)).astype(np.float32)
    expected = policy.predict_chunk_batch({k: torch.from_numpy(v) for k, v in obs.items()},
                                          None if noise is None else torch.from_numpy(noise)).cpu().numpy()
    got = OnnxPolicy(directory).predict_chunk_batch(obs, noise)
    return float(np.abs(got - expected).max())


def cmd_export(args: argparse.Namespace) -> int:
    from policies.base import Policy
    from policies.onnx_export import DEFAULT_OPSET, export_onnx

    if args.format != "onnx":
        raise ArkError(f"--format {args.format}: only 'onnx' is supported")
    console = _console()
    policy = Policy.load(args.policy)
    out = Path(args.out) if args.out else Path(args.policy) / "onnx"
    export_onnx(policy, out, opset=args.opset or DEFAULT_OPSET)
    console.print(f"exported {policy.name} policy to {out}")
    for f in sorted(out.iterdir()):
        if f.is_file():
            console.print(f"  {f.name:24s} {f.stat().st_size / 1024:10.1f} KiB")
    err = onnx_parity(policy, out)
    ok = err <= PARITY_TOLERANCE
    console.print(f"parity: max |ONNX - PyTorch| = {err:.2e} ({'ok' if ok else 'FAILED'}, tolerance "
                  f"{PARITY_TOLERANCE:g})", style=None if ok else "red")
    return 0 if ok else 1


# ----- registration -----------------------------------------------------------------------------
def add_policy_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ark train``, ``ark eval`` and ``ark export`` on ``ark``'s subparsers (imports nothing heavy)."""
    t = subparsers.add_parser("train", help="train a policy (bc, act, diffusion) on a dataset")
    t.add_argument("--policy", required=True, choices=["bc", "act", "diffusion"], help="policy type")
    t.add_argument("--data", required=True, help="dataset folder (from ark collect)")
    t.add_argument("--out", required=True, help="run folder: final policy, checkpoints, metrics.csv")
    t.add_argument("--steps", type=int, help="optimiser steps of the whole run (default: the recipe's)")
    t.add_argument("--batch-size", type=int, help="windows per batch (default: the recipe's)")
    t.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    t.add_argument("--recipe", help="training recipe YAML, or the name of one in configs/train/ "
                                    "(default: the policy type's CPU preset)")
    t.add_argument("--seed", type=int, default=0, help="seed of every random generator (default 0)")
    t.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: the recipe's)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--no-resume", action="store_true", help="start over instead of resuming the run in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    e = subparsers.add_parser("eval", help="evaluate a policy in a Gymnasium environment")
    e.add_argument("--policy", required=True, help="run, checkpoint or ONNX export folder")
    e.add_argument("--env", help="environment id, e.g. ark/PandaPush-v0 (default: the training data's)")
    e.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    e.add_argument("--seed", type=int, default=0, help="episode k is reset with seed+k (default 0)")
    e.add_argument("--video", help="write the first episodes to this mp4")
    e.add_argument("--video-episodes", type=int, default=3, help="episodes in the video (default 3)")
    e.add_argument("--backend", choices=["sim", "node"], help="Ark environments: pybullet here (sim) or over a "
                                                              "driver node (node)")
    e.add_argument("--env-kwargs", help='environment kwargs as JSON, e.g. \'{"cameras": true}\'')
    e.add_argument("--max-steps", type=int, help="end episodes after this many steps")
    e.add_argument("--device", default="cpu", help="cpu or cuda for PyTorch policies (default cpu)")
    e.add_argument("--json", action="store_true", help="print the result (with every episode) as JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_eval)

    x = subparsers.add_parser("export", help="export a policy to ONNX and check parity with PyTorch")
    x.add_argument("--policy", required=True, help="run or checkpoint folder")
    x.add_argument("--format", default="onnx", help="export format (onnx)")
    x.add_argument("--out", help="output folder (default: <policy>/onnx)")
    x.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    x.set_defaults(fn=cmd_export)
