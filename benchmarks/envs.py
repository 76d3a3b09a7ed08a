"""Ark's PandaPush environment against the same pybullet scene stepped raw, and the node backend.

    python benchmarks/envs.py                 # full run (under 1.5 minutes on a 2-core machine)
    python benchmarks/envs.py --quick         # smaller samples (under 30 s)
    python benchmarks/envs.py --json out.json # also write every number as JSON

**Step rate** (``ark/PandaPush-v0``, state only and with one 96x96 ``rgb`` camera, the config's
``front`` preset). Systems:

* ``ark``: ``gymnasium.make("ark/PandaPush-v0")`` as a user gets it (TimeLimit, OrderEnforcing
  and PassiveEnvChecker wrappers, sim backend in this process), ``env.step(action)``;
* ``raw`` (the baseline): the same scene built with plain ``pybullet`` calls on its own DIRECT
  client: the same URDFs and poses, physics rate, solver settings, joint gains and forces; per step
  the same end-effector target from the action, the same ``calculateInverseKinematics`` call, the
  same two ``setJointMotorControlArray`` calls, the same 12 ``stepSimulation`` substeps, the same
  state reads (joint states, end-effector link state with velocity, cube pose and velocity) and,
  with the camera, the same ``getCameraImage`` render (TinyRenderer, same matrices and light) cut
  to an (H, W, 3) uint8 array. No gymnasium, no Ark code in the loop.

Both replay identical action sequences: the scripted expert's actions, recorded once (untimed)
in closed loop on scenes drawn from a seeded generator, replayed open loop by both systems from
the same scenes. A fidelity check compares the two trajectories (end effector and cube at every
step, and every image): they must agree, or the baseline is not the same scene. Only
``step`` calls are timed (resets are not). In one repetition both systems replay the whole
action set taking turns every few steps (16 state-only, 2 with the camera, i.e. every 20-80 ms;
the order alternates, ark-raw then raw-ark), so a change of background load hits both alike;
the table reports medians over repetitions, and Ark's overhead is the median over repetitions
of ``t_ark / t_raw - 1``. Target: overhead <= 10 % (wall time). The same ratio of this thread's
CPU time is printed beside it: pybullet runs on the calling thread, so CPU time counts the same
work without the time the process waits for a core, and stays steady on a busy machine.

**Node backend**: ``python -m envs.driver --env ark/PandaPush-v0 --name ...`` runs in its own
process (one driver without camera, one with ``--camera front``); this process hosts the
registry and the environment ``gymnasium.make(..., backend="node", driver=NAME)``. Latency is
the wall time of each ``env.step`` (command out, ``<driver>/step`` service round trip, state in,
observation built), p50/p99; the sim backend's per-step time on the same actions is measured in
the same run, episodes alternating node/sim, for reference. "transport" is node p50 - sim p50:
what the service round trip adds to a step.

The run prints the 1-minute load average before and after: on a shared 2-core machine other
work moves these numbers; the driver process also shares those cores with this one.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(ROOT)  # this folder's envs.py would otherwise shadow the envs package

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

ENV_ID = "ark/PandaPush-v0"
CAMERA = "front"  # the 96x96 preset of configs/envs/panda_push.yaml


@dataclass(frozen=True)
class Sizes:
    """How much each part measures (``--quick`` shrinks everything)."""

    scenes: int          # scenes (episodes) of recorded expert actions
    max_steps: int       # cap on one episode's recorded actions
    state_reps: int      # repetitions per system, state only (each replays every scene)
    cam_steps: int       # steps per repetition with the camera (a prefix of the action set)
    cam_reps: int
    node_steps: int      # env.step samples per backend, state only
    node_cam_steps: int  # env.step samples per backend, with the camera


def make_sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes(scenes=4, max_steps=60, state_reps=5, cam_steps=24, cam_reps=3, node_steps=150, node_cam_steps=24)
    return Sizes(scenes=8, max_steps=80, state_reps=9, cam_steps=80, cam_reps=5, node_steps=400, node_cam_steps=80)


# -- workload ------------------------------------------------------------------------------------
def sample_scenes(env: Any, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` PandaPush layouts (cube x, y, yaw and goal) drawn from the config's ranges with a seeded
    generator; passed to ``reset(options={"scene": ...})`` and to the raw baseline alike."""
    u = env.unwrapped
    rnd = u.cfg.randomisation
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        xy = rng.uniform(rnd.object.low, rnd.object.high)
        yaw = rng.uniform(*rnd.object.yaw)
        while True:
            goal = rng.uniform(rnd.goal.low, rnd.goal.high)
            if np.linalg.norm(goal[:2] - xy) >= rnd.min_goal_distance:
                break
        goal[2] += u.object_half_height
        scenes.append({"object/pose": np.array([*xy, yaw]), "goal": goal})
    return scenes


def record_actions(env: Any, scenes: list[dict], max_steps: int) -> list[np.ndarray]:
    """The scripted expert's actions on each scene (closed loop, untimed): the replayed workload."""
    from envs.experts import expert_for

    expert = expert_for(env)
    out = []
    for i, scene in enumerate(scenes):
        obs, _ = env.reset(seed=i, options={"scene": scene})
        expert.reset()
        actions = []
        for _ in range(max_steps):
            actions.append(expert(obs))
            obs, _, terminated, truncated, _ = env.step(actions[-1])
            if terminated or truncated:
                break
        out.append(np.stack(actions))
    return out


# -- the raw pybullet baseline -------------------------------------------------------------------
class RawPush:
    """PandaPush's scene and step in plain pybullet calls (see the module docstring).

    Numbers come from the environment's config (the same URDFs, rates, gains, limits); nothing of
    Ark runs in :meth:`step`. ``camera`` is a :class:`envs.config.CameraConfig` or None."""

    ARM, FINGERS, EE_LINK, DOWN = list(range(7)), [9, 10], 11, (1.0, 0.0, 0.0, 0.0)

    def __init__(self, cfg: Any, camera: Any | None) -> None:
        import pybullet as pb
        import pybullet_data

        from envs.sim.world import DEFAULT_LIGHT

        self.pb = pb
        self.cid = cid = pb.connect(pb.DIRECT)
        pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
        pb.setTimeStep(1.0 / cfg.control.physics_hz, physicsClientId=cid)
        pb.setGravity(0, 0, -9.81, physicsClientId=cid)
        pb.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=cid)
        r = cfg.robot
        pb.loadURDF("plane.urdf", [0.0, 0.0, -0.4], [0, 0, 0, 1], physicsClientId=cid)
        pb.loadURDF(cfg.resolve("table.urdf", "table"), [0, 0, 0], [0, 0, 0, 1], useFixedBase=True, physicsClientId=cid)
        self.robot = pb.loadURDF(r.urdf, list(r.base_position), [0, 0, 0, 1], useFixedBase=True,
                                 flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=cid)
        self.cube = pb.loadURDF(cfg.task.object.urdf, [0.0, 0.0, 0.5], [0, 0, 0, 1], physicsClientId=cid)
        self.marker = pb.loadURDF(cfg.resolve("goal_marker.urdf", "goal marker"), [0.0, 0.0, -1.0], [0, 0, 0, 1],
                                  useFixedBase=True, physicsClientId=cid)
        info = [pb.getJointInfo(self.robot, j, physicsClientId=cid) for j in self.ARM + self.FINGERS]
        self.lower, self.upper = [i[8] for i in info], [i[9] for i in info]
        self.ranges = [u - lo for lo, u in zip(self.lower, self.upper)]
        self.forces = [i[10] for i in info[:7]]
        self.rest = list(r.home_joints) + [0.0, 0.0]
        self.gains = [0.1] * 7
        self.ik_iters, self.gripper_force = r.ik_iterations, r.gripper_force
        self.ws_low, self.ws_high = np.asarray(r.workspace.low), np.asarray(r.workspace.high)
        self.max_step = r.max_ee_step
        self.substeps = cfg.control.substeps
        for j, q in zip(self.ARM + self.FINGERS, self.rest):
            pb.resetJointState(self.robot, j, q, physicsClientId=cid)
        for j in self.FINGERS:
            pb.changeDynamics(self.robot, j, lateralFriction=r.finger_friction, spinningFriction=0.001,
                              physicsClientId=cid)
        self._hold(self.rest[:7], 0.0)
        lo, hi = pb.getAABB(self.cube, physicsClientId=cid)
        self.half = (hi[2] - lo[2]) / 2.0
        dyn = pb.getDynamicsInfo(self.cube, -1, physicsClientId=cid)
        self.cube_mass, self.cube_friction, self.finger_friction = dyn[0], dyn[1], r.finger_friction
        self.cube_color = list(cfg.task.object.color)
        self.camera = camera
        if camera is not None:
            self.view = pb.computeViewMatrix(camera.position, camera.target, camera.up)
            self.proj = pb.computeProjectionMatrixFOV(camera.fov, camera.width / camera.height, camera.near, camera.far)
            self.light = dict(DEFAULT_LIGHT)
        pb.stepSimulation(physicsClientId=cid)
        self.saved = pb.saveState(physicsClientId=cid)
        self.ee = np.zeros(3)

    def _hold(self, arm: list[float], width: float) -> None:
        pb, cid = self.pb, self.cid
        pb.setJointMotorControlArray(self.robot, self.ARM, pb.POSITION_CONTROL, targetPositions=arm,
                                     forces=self.forces, positionGains=self.gains, physicsClientId=cid)
        pb.setJointMotorControlArray(self.robot, self.FINGERS, pb.POSITION_CONTROL,
                                     targetPositions=[width / 2.0, width / 2.0], forces=[self.gripper_force] * 2,
                                     physicsClientId=cid)

    def reset(self, scene: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Lay out ``scene`` as PandaSim.reset does (same calls, same order); returns the first reading."""
        pb, cid = self.pb, self.cid
        pb.restoreState(self.saved, physicsClientId=cid)
        self._hold(self.rest[:7], 0.0)
        pb.resetBasePositionAndOrientation(self.marker, [float(v) for v in scene["goal"]], [0, 0, 0, 1],
                                           physicsClientId=cid)
        for j in self.FINGERS:
            pb.changeDynamics(self.robot, j, lateralFriction=self.finger_friction, physicsClientId=cid)
        x, y, yaw = (float(v) for v in scene["object/pose"])
        pb.resetBasePositionAndOrientation(self.cube, [x, y, self.half], pb.getQuaternionFromEuler([0.0, 0.0, yaw]),
                                           physicsClientId=cid)
        pb.resetBaseVelocity(self.cube, [0, 0, 0], [0, 0, 0], physicsClientId=cid)
        pb.changeVisualShape(self.cube, -1, rgbaColor=self.cube_color, physicsClientId=cid)
        pb.changeDynamics(self.cube, -1, mass=self.cube_mass, lateralFriction=self.cube_friction, physicsClientId=cid)
        return self._read()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One control step; returns (end-effector position, cube position, image or None)."""
        pb, cid = self.pb, self.cid
        a = np.asarray(action, dtype=np.float64)
        target = np.clip(self.ee + a[:3] * self.max_step, self.ws_low, self.ws_high)  # block_gripper: width 0
        q = pb.calculateInverseKinematics(self.robot, self.EE_LINK, target.tolist(), self.DOWN,
                                          lowerLimits=self.lower, upperLimits=self.upper, jointRanges=self.ranges,
                                          restPoses=self.rest, maxNumIterations=self.ik_iters, residualThreshold=1e-5,
                                          physicsClientId=cid)
        self._hold(list(q[:7]), 0.0)
        for _ in range(self.substeps):
            pb.stepSimulation(physicsClientId=cid)
        return self._read()

    def _read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        pb, cid = self.pb, self.cid
        pb.getJointStates(self.robot, self.ARM + self.FINGERS, physicsClientId=cid)  # read, as Ark's observation does
        link = pb.getLinkState(self.robot, self.EE_LINK, computeLinkVelocity=1, computeForwardKinematics=1,
                               physicsClientId=cid)
        pos, _orn = pb.getBasePositionAndOrientation(self.cube, physicsClientId=cid)
        pb.getBaseVelocity(self.cube, physicsClientId=cid)
        self.ee = np.array(link[4])
        rgb = None
        if self.camera is not None:
            c = self.camera
            rgba = pb.getCameraImage(c.width, c.height, self.view, self.proj, renderer=pb.ER_TINY_RENDERER,
                                     flags=pb.ER_NO_SEGMENTATION_MASK, shadow=0, physicsClientId=cid, **self.light)[2]
            rgb = np.asarray(rgba, dtype=np.uint8).reshape(c.height, c.width, 4)[:, :, :3].copy()
        return self.ee, np.array(pos), rgb

    def close(self) -> None:
        self.pb.disconnect(physicsClientId=self.cid)


# -- timed replays -------------------------------------------------------------------------------
def trace_ark(env: Any, scenes: list[dict], actions: list[np.ndarray]) -> list:
    """(end effector, cube, image) after every step of Ark's replay (untimed; for the fidelity check)."""
    out = []
    for i, (scene, acts) in enumerate(zip(scenes, actions)):
        env.reset(seed=i, options={"scene": scene})
        for a in acts:
            obs = env.step(a)[0]
            out.append((obs["ee_pos"].astype(np.float64), obs["object_pos"].astype(np.float64), obs.get("rgb")))
    return out


def trace_raw(raw: RawPush, scenes: list[dict], actions: list[np.ndarray]) -> list:
    out = []
    for scene, acts in zip(scenes, actions):
        raw.reset(scene)
        out.extend(raw.step(a) for a in acts)
    return out


def replay_interleaved(env: Any, raw: RawPush, scenes: list[dict], actions: list[np.ndarray], block: int,
                       flip: bool) -> dict[str, float]:
    """One repetition: both systems replay every action set, taking turns every ``block`` steps (the
    order alternating, ABBA...), so background load falls on both alike. Returns the wall seconds
    and this thread's CPU seconds each spent in ``step`` (resets untimed)."""
    wall, cpu = time.perf_counter, time.thread_time
    t = {"ark_s": 0.0, "raw_s": 0.0, "ark_cpu_s": 0.0, "raw_cpu_s": 0.0}
    turn = int(flip)
    for i, (scene, acts) in enumerate(zip(scenes, actions)):
        env.reset(seed=i, options={"scene": scene})
        raw.reset(scene)
        for b in range(0, len(acts), block):
            part = acts[b:b + block]
            for system in (("ark", "raw") if turn % 2 == 0 else ("raw", "ark")):
                step = env.step if system == "ark" else raw.step
                c0, w0 = cpu(), wall()
                for a in part:
                    step(a)
                w1, c1 = wall(), cpu()
                t[f"{system}_s"] += w1 - w0
                t[f"{system}_cpu_s"] += c1 - c0
            turn += 1
    return t


def fidelity(ark: list, raw: list) -> dict:
    """Largest difference between the two trajectories (metres; image: uint8 levels)."""
    ee = max(float(np.max(np.abs(a[0] - r[0]))) for a, r in zip(ark, raw))
    cube = max(float(np.max(np.abs(a[1] - r[1]))) for a, r in zip(ark, raw))
    img = None
    if ark[-1][2] is not None:
        img = max(int(np.max(np.abs(a[2].astype(np.int16) - r[2].astype(np.int16)))) for a, r in zip(ark, raw))
    # Ark's observations are float32, the raw readings float64: a few 1e-8 m is "identical".
    return {"steps": len(ark), "max_ee_diff_m": ee, "max_cube_diff_m": cube, "max_image_diff": img,
            "same": ee < 1e-5 and cube < 1e-5 and (img is None or img == 0)}


def take_prefix(scenes: list[dict], actions: list[np.ndarray], n: int) -> tuple[list[dict], list[np.ndarray]]:
    """The first ``n`` actions of the action set (whole episodes, the last one cut)."""
    out_s, out_a, left = [], [], n
    for s, a in zip(scenes, actions):
        if left <= 0:
            break
        out_s.append(s)
        out_a.append(a[:left])
        left -= len(out_a[-1])
    return out_s, out_a


def step_rate(label: str, env: Any, raw: RawPush, scenes: list[dict], actions: list[np.ndarray], reps: int,
              block: int, log: Callable[[str], None]) -> dict:
    """Repetitions of interleaved ark/raw replays; medians and the paired overhead."""
    steps = sum(len(a) for a in actions)
    fid = fidelity(trace_ark(env, scenes, actions), trace_raw(raw, scenes, actions))  # also the warm-up
    runs = []
    for r in range(reps):
        gc.collect()
        t = replay_interleaved(env, raw, scenes, actions, block, flip=bool(r % 2))
        runs.append(t)
        log(f"  {label} rep {r + 1}/{reps}: ark {steps / t['ark_s']:,.0f} steps/s, raw {steps / t['raw_s']:,.0f} "
            f"steps/s, overhead {(t['ark_s'] / t['raw_s'] - 1) * 100:+.1f} % (CPU time "
            f"{(t['ark_cpu_s'] / t['raw_cpu_s'] - 1) * 100:+.1f} %)")
    col = {k: np.asarray([t[k] for t in runs]) for k in runs[0]}
    ratios = col["ark_s"] / col["raw_s"]
    cpu_ratios = col["ark_cpu_s"] / col["raw_cpu_s"]
    return {"steps_per_rep": steps, "reps": reps, "block_steps": block, **{k: v.tolist() for k, v in col.items()},
            "ark_steps_per_s": steps / float(np.median(col["ark_s"])),
            "raw_steps_per_s": steps / float(np.median(col["raw_s"])),
            "overhead_pct": float(np.median(ratios) - 1.0) * 100.0,
            "overhead_pct_range": [float(ratios.min() - 1) * 100.0, float(ratios.max() - 1) * 100.0],
            "overhead_cpu_pct": float(np.median(cpu_ratios) - 1.0) * 100.0,
            "overhead_cpu_pct_range": [float(cpu_ratios.min() - 1) * 100.0, float(cpu_ratios.max() - 1) * 100.0],
            "fidelity": fid}


# -- node backend --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_driver(name: str, camera: str | None, child_env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "envs.driver", "--env", ENV_ID, "--name", name]
    if camera:
        cmd += ["--camera", camera]
    return subprocess.Popen(cmd, cwd=str(ROOT), env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_ready(proc: subprocess.Popen, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if f"driver {name} ready" in line:
            return
    raise RuntimeError(f"driver {name} did not start: {''.join(seen)[-2000:]}")


def step_latencies(env: Any, scenes: list[dict], actions: list[np.ndarray], out: list[float]) -> None:
    clock = time.perf_counter_ns
    for i, (scene, acts) in enumerate(zip(scenes, actions)):
        env.reset(seed=i, options={"scene": scene})
        for a in acts:
            t = clock()
            env.step(a)
            out.append((clock() - t) / 1e3)


def _pcts(us: list[float]) -> dict:
    a = np.asarray(us)
    return {"n": len(a), "p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean())}


def node_latency(label: str, node_env: Any, sim_env: Any, scenes: list[dict], actions: list[np.ndarray],
                 log: Callable[[str], None]) -> dict:
    """env.step latency on the node backend and on the sim backend, episodes alternating."""
    warm_s, warm_a = take_prefix(scenes, actions, 5)
    step_latencies(node_env, warm_s, warm_a, [])
    step_latencies(sim_env, warm_s, warm_a, [])
    node_us: list[float] = []
    sim_us: list[float] = []
    for k, (s, a) in enumerate(zip(scenes, actions)):
        pair = [(node_env, node_us), (sim_env, sim_us)]
        for env, out in (pair if k % 2 == 0 else pair[::-1]):
            gc.collect()
            step_latencies(env, [s], [a], out)
    res = {"node": _pcts(node_us), "sim": _pcts(sim_us)}
    res["transport_p50_us"] = res["node"]["p50_us"] - res["sim"]["p50_us"]
    log(f"  node {label}: p50 {res['node']['p50_us'] / 1e3:.2f} ms, p99 {res['node']['p99_us'] / 1e3:.2f} ms; "
        f"sim p50 {res['sim']['p50_us'] / 1e3:.2f} ms")
    return res


# -- reporting -----------------------------------------------------------------------------------
def machine_info() -> dict:
    import gymnasium
    import pybullet

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "numpy": np.__version__,
            "gymnasium": gymnasium.__version__, "pybullet_api": pybullet.getAPIVersion(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def evaluate(res: dict) -> list[dict]:
    checks = []
    for key, label in (("state", "state only"), ("rgb", "96x96 rgb")):
        r = res["step_rate"][key]
        checks.append({"target": f"step rate, {label}: Ark overhead <= 10 % vs raw pybullet (wall time)",
                       "value": f"{r['overhead_pct']:+.1f} % (CPU time {r['overhead_cpu_pct']:+.1f} %)",
                       "met": r["overhead_pct"] <= 10.0})
        checks.append({"target": f"step rate, {label}: raw baseline reproduces Ark's trajectory",
                       "value": (f"max |d ee| {r['fidelity']['max_ee_diff_m']:.1e} m, |d cube| "
                                 f"{r['fidelity']['max_cube_diff_m']:.1e} m"
                                 + (f", image {r['fidelity']['max_image_diff']} levels"
                                    if r["fidelity"]["max_image_diff"] is not None else "")),
                       "met": r["fidelity"]["same"]})
    return checks


def print_tables(res: dict, checks: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 150)
    t = Table(title=f"{ENV_ID} step rate: Ark env vs the same scene in raw pybullet (medians, interleaved reps)")
    for col in ("observation", "steps x reps", "ark steps/s", "raw steps/s", "ark ms/step", "raw ms/step",
                "Ark overhead, wall (min..max)", "Ark overhead, CPU time (min..max)"):
        t.add_column(col, justify="left" if col == "observation" else "right")
    for key, label in (("state", "state only"), ("rgb", "state + 96x96 rgb")):
        r = res["step_rate"][key]
        lo, hi = r["overhead_pct_range"]
        clo, chi = r["overhead_cpu_pct_range"]
        t.add_row(label, f"{r['steps_per_rep']} x {r['reps']}", f"{r['ark_steps_per_s']:,.0f}",
                  f"{r['raw_steps_per_s']:,.0f}", f"{1e3 / r['ark_steps_per_s']:.2f}",
                  f"{1e3 / r['raw_steps_per_s']:.2f}",
                  f"{r['overhead_pct']:+.1f} % ({lo:+.1f}..{hi:+.1f})",
                  f"{r['overhead_cpu_pct']:+.1f} % ({clo:+.1f}..{chi:+.1f})")
    con.print(t)
    t = Table(title="env.step latency: node backend (driver in its own process) vs sim backend (in process)")
    for col in ("observation", "steps", "node p50 ms", "node p99 ms", "sim p50 ms", "sim p99 ms",
                "transport (p50 diff)"):
        t.add_column(col, justify="left" if col == "observation" else "right")
    for key, label in (("state", "state only"), ("rgb", "state + 96x96 rgb")):
        r = res["node"][key]
        t.add_row(label, str(r["node"]["n"]), f"{r['node']['p50_us'] / 1e3:.2f}", f"{r['node']['p99_us'] / 1e3:.2f}",
                  f"{r['sim']['p50_us'] / 1e3:.2f}", f"{r['sim']['p99_us'] / 1e3:.2f}",
                  f"{r['transport_p50_us'] / 1e3:+.2f} ms")
    con.print(t)
    for c in checks:
        mark = "[green]    met[/green]" if c["met"] else "[red]NOT met[/red]"
        con.print(f"  {mark}  {c['target']}: {c['value']}")


# -- main ----------------------------------------------------------------------------------------
def run(sizes: Sizes, seed: int, log: Callable[[str], None]) -> dict:
    import gymnasium as gym

    import envs  # noqa: F401  (registers ark/ environments)
    from ark.config import ArkConfig
    from ark.registry import ensure_registry, stop_embedded

    res: dict[str, Any] = {"step_rate": {}, "node": {}}
    tmp = tempfile.mkdtemp(prefix="arkb-env-", dir="/tmp")  # ipc paths are limited to ~100 chars
    cfg = ArkConfig(registry=f"tcp://127.0.0.1:{_free_port()}", ipc_dir=os.path.join(tmp, "ark"))
    child_env = dict(os.environ, ARK_REGISTRY=cfg.registry, ARK_IPC_DIR=str(cfg.ipc_dir), PYTHONUNBUFFERED="1")
    procs: dict[str, subprocess.Popen] = {}
    envs_open: list[Any] = []
    raws: list[RawPush] = []
    try:
        ensure_registry(cfg)  # the registry lives in this process
        # Drivers start now and load pybullet while the step-rate part runs.
        procs = {"bench_state": start_driver("bench_state", None, child_env),
                 "bench_rgb": start_driver("bench_rgb", CAMERA, child_env)}

        sim = gym.make(ENV_ID)
        envs_open.append(sim)
        scenes = sample_scenes(sim, sizes.scenes, seed)
        actions = record_actions(sim, scenes, sizes.max_steps)
        log(f"recorded {sum(map(len, actions))} expert actions on {len(scenes)} scenes (seed {seed})")
        res["workload"] = {"scenes": [{k: v.tolist() for k, v in s.items()} for s in scenes],
                           "episode_lengths": [len(a) for a in actions]}

        raw = RawPush(sim.unwrapped.cfg, None)
        raws.append(raw)
        log("step rate, state only")
        res["step_rate"]["state"] = step_rate("state", sim, raw, scenes, actions, sizes.state_reps, 16, log)

        cam = gym.make(ENV_ID, cameras=[CAMERA])
        envs_open.append(cam)
        raw_cam = RawPush(cam.unwrapped.cfg, cam.unwrapped.cfg.cameras[0])
        raws.append(raw_cam)
        cs, ca = take_prefix(scenes, actions, sizes.cam_steps)
        log("step rate, 96x96 rgb")
        res["step_rate"]["rgb"] = step_rate("rgb", cam, raw_cam, cs, ca, sizes.cam_reps, 2, log)

        for name, proc in procs.items():
            wait_ready(proc, name)
        node = gym.make(ENV_ID, backend="node", driver="bench_state", ark_config=cfg)
        envs_open.append(node)
        log("node backend, state only")
        ns, na = take_prefix(scenes, actions, sizes.node_steps)
        res["node"]["state"] = node_latency("state", node, sim, ns, na, log)
        node_cam = gym.make(ENV_ID, backend="node", driver="bench_rgb", ark_config=cfg, cameras=[CAMERA])
        envs_open.append(node_cam)
        log("node backend, 96x96 rgb")
        ns, na = take_prefix(scenes, actions, sizes.node_cam_steps)
        res["node"]["rgb"] = node_latency("rgb", node_cam, cam, ns, na, log)
    finally:
        for e in envs_open:
            e.close()
        for r in raws:
            r.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        stop_embedded()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller samples (under 30 s)")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    ap.add_argument("--seed", type=int, default=0, help="seed of the scenes")
    args = ap.parse_args(argv)
    sizes = make_sizes(args.quick)
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    print(f"env benchmark ({'quick' if args.quick else 'full'}), seed {args.seed}, "
          f"load average {load_before:.2f} on {os.cpu_count()} CPUs", flush=True)
    res = run(sizes, args.seed, lambda m: print(m, flush=True))
    elapsed = time.monotonic() - t0
    load_after = os.getloadavg()[0]
    checks = evaluate(res)
    print_tables(res, checks)
    print(f"total {elapsed:.1f} s; 1-minute load average {load_before:.2f} before, {load_after:.2f} after")
    if args.json:
        doc = {"benchmark": "envs", "argv": sys.argv, "quick": args.quick, "seed": args.seed, "env": ENV_ID,
               "camera": CAMERA, "machine": machine_info(), "elapsed_s": elapsed,
               "loadavg_1min": [load_before, load_after], "sizes": asdict(sizes), "results": res, "targets": checks}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
