"""The Ark demo (``make demo``, ``python -m ark.demo``): demonstrations to a deployed policy.

Runs the main job of Ark end to end on ``ark/PandaPush-v0`` in a few minutes on a 2-core CPU:

1. **driver**: starts the pybullet driver node of the environment as its own process
   (``python -m envs.driver``); every later stage drives the robot through it (``backend="node"``);
2. **collect**: the scripted expert's demonstrations, through the driver, into an Ark dataset;
3. **train**: a BC-MLP policy with the PandaPush recipe (``configs/train/panda_push_bc.yaml``);
4. **evaluate**: seeded episodes through the driver, success rate with its 95 % interval;
5. **export**: the policy to ONNX;
6. **deploy**: the ONNX export served by a :class:`~policies.policy_node.PolicyNode`, driving the
   robot over Ark topics, with the node's inference latency.

It prints each stage's result at the end. Each stage is also a CLI command (the README lists
them). The work folder (default: a temporary one) keeps the dataset, run and export with
``--work DIR``. The demo uses a registry on a free local port, so it never joins another graph.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from ark.demo_graph import _free_registry
from ark.errors import ArkError

ENV_ID = "ark/PandaPush-v0"
DRIVER = "demo_driver"
RECIPE = Path("configs") / "train" / "panda_push_bc.yaml"


@dataclass
class Stage:
    name: str
    command: str  # the equivalent CLI command
    result: str = ""
    seconds: float = 0.0


def find_recipe() -> Path | None:
    """The PandaPush BC recipe of the source tree this package lives in, else of the working directory."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / RECIPE).is_file():
            return root / RECIPE
    return None


class DriverProcess:
    """``python -m envs.driver`` as a child process; ready once it prints its 'ready' line."""

    def __init__(self, env_id: str, name: str, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "envs.driver", "--env", env_id, "--name", name],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        self.lines: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                if "ready" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "; ".join(self.lines[-3:]) or "no output"
                raise ArkError(f"the driver node did not start ({tail})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run(args: argparse.Namespace, console: Console) -> list[Stage]:
    """Run the six stages in ``args.work``; returns them with their results."""
    import gymnasium as gym
    import torch

    import envs  # noqa: F401  (registers the ark/ environments)
    from ark.node import shutdown_all
    from policies.base import Policy
    from policies.collect import collect
    from policies.evaluate import evaluate
    from policies.onnx_export import export_onnx
    from policies.policy_node import PolicyNode, run_policy_loop
    from policies.train import train

    torch.set_num_threads(1)  # a small MLP: one thread is fastest and leaves a core to the driver
    work = Path(args.work)
    data, out = work / "data" / "push", work / "runs" / "push-bc"
    onnx_dir = out / "onnx"
    node_kwargs = {"backend": "node", "driver": DRIVER}
    stages: list[Stage] = []

    def stage(name: str, command: str) -> Stage:
        console.rule(f"[bold]{len(stages) + 1}. {name}[/]")
        stages.append(Stage(name, command))
        return stages[-1]

    s = stage("driver", f"python -m envs.driver --env {ENV_ID} --name {DRIVER}")
    t = time.perf_counter()
    driver = DriverProcess(ENV_ID, DRIVER)
    try:
        s.seconds = time.perf_counter() - t
        s.result = f"pid {driver.proc.pid}: {driver.lines[-1] if driver.lines else 'ready'}"
        console.print(s.result)

        s = stage("collect", f"ark collect --env {ENV_ID} --episodes {args.demos} --out {data} "
                             f"--env-kwargs '{{\"backend\": \"node\", \"driver\": \"{DRIVER}\"}}'")
        t = time.perf_counter()
        res = collect(ENV_ID, args.demos, data, seed=0, env_kwargs=node_kwargs, overwrite=True, progress=True)
        s.seconds = time.perf_counter() - t
        s.result = (f"{res.episodes} expert episodes ({res.successes} successful), {res.frames} frames through the "
                    f"driver node")

        recipe = find_recipe()
        s = stage("train", f"ark train --policy bc --data {data} --out {out} --steps {args.steps}"
                           + (f" --recipe {RECIPE}" if recipe else ""))
        t = time.perf_counter()
        tr = train("bc", data, out, steps=args.steps, recipe=recipe, seed=0, resume=False, progress=True)
        s.seconds = time.perf_counter() - t
        s.result = f"{tr.step} steps at {tr.steps_per_s:.0f} steps/s, loss {tr.loss_avg or tr.loss or float('nan'):.4f}"

        s = stage("evaluate", f"ark eval --policy {out} --env {ENV_ID} --episodes {args.episodes} --backend node "
                              f"--env-kwargs '{{\"driver\": \"{DRIVER}\"}}'")
        t = time.perf_counter()
        ev = evaluate(out, ENV_ID, args.episodes, seed=10_000, env_kwargs={"driver": DRIVER}, backend="node",
                      progress=True)
        s.seconds = time.perf_counter() - t
        s.result = ev.summary().split(": ", 1)[-1]
        console.print(ev.summary())

        s = stage("export", f"ark export --policy {out} --out {onnx_dir}")
        t = time.perf_counter()
        export_onnx(Policy.load(out), onnx_dir)
        s.seconds = time.perf_counter() - t
        files = sorted(p.name for p in onnx_dir.iterdir())
        s.result = f"{onnx_dir} ({', '.join(files)})"

        s = stage("deploy", f"python -m ark.runner policies.policy_node:PolicyNode --name policy "
                            f"--params '{{\"policy\": \"{onnx_dir}\"}}'")
        t = time.perf_counter()
        node = PolicyNode("policy", params={"policy": str(onnx_dir), "rate_hz": 0}).start()
        env = gym.make(ENV_ID, **node_kwargs)
        try:
            records = run_policy_loop(env, "policy", args.deploy_episodes, seed=20_000, progress=True, env_id=ENV_ID)
            lat = node.latency()
        finally:
            env.close()
            node.shutdown()
        s.seconds = time.perf_counter() - t
        wins = sum(r.success for r in records)
        s.result = (f"ONNX Runtime policy node: {wins}/{len(records)} successes, {lat['count']} actions, "
                    f"inference p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms")
    finally:
        driver.stop()
        shutdown_all()
    return stages


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when every stage completed."""
    p = argparse.ArgumentParser(prog="python -m ark.demo", description=__doc__.splitlines()[0])
    p.add_argument("--demos", type=int, default=40, help="expert demonstrations to collect (default 40)")
    p.add_argument("--steps", type=int, default=3000, help="BC training steps (default 3000)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    p.add_argument("--deploy-episodes", type=int, default=10, help="episodes driven by the policy node (default 10)")
    p.add_argument("--work", default=None, help="keep the dataset, run and export here (default: a temporary folder)")
    args = p.parse_args(argv)
    console = Console()
    if not ({"ARK_REGISTRY", "ARK_CONFIG"} & set(os.environ)):
        os.environ["ARK_REGISTRY"] = _free_registry()  # inherited by the driver process
    console.print(f"[bold]Ark demo[/]: demonstrations → policy → ONNX node on {ENV_ID}, "
                  f"registry {os.environ.get('ARK_REGISTRY', '(from ARK_CONFIG)')}")
    started = time.perf_counter()
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ark-demo-")
        args.work = tmp.name
    try:
        stages = run(args, console)
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            tmp.cleanup()
    table = Table(title=f"Ark demo on {ENV_ID}: {time.perf_counter() - started:.0f} s in all", title_justify="left")
    for col in ("stage", "seconds", "result"):
        table.add_column(col)
    for s in stages:
        table.add_row(s.name, f"{s.seconds:.1f}", s.result)
    console.print(table)
    console.print("[bold]the same stages as commands:[/]")
    for s in stages:
        console.print(f"  {s.command}", highlight=False, markup=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
