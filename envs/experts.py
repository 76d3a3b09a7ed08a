"""Scripted experts: one closed-loop controller per task, for demonstrations and baselines.

An expert reads the low-dimensional entries of the observation only (never simulator state),
so it runs unchanged on the ``node`` backend and with camera observations switched on. It is
deterministic: the same observations give the same actions (``reset()`` clears its phase).

    env = gymnasium.make("ark/PandaPush-v0")
    expert = expert_for(env)
    obs, _ = env.reset(seed=0); expert.reset()
    obs, reward, terminated, truncated, info = env.step(expert(obs))

Evaluate one on seeded episodes (seeds 0..N-1) with a progress bar::

    python -m envs.experts --env ark/PandaPush-v0 --episodes 100
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ark/ environments)


class Expert:
    """Base of the scripted experts: ``reset()`` before an episode, ``expert(obs) -> action``."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env.unwrapped
        self.action_space = env.action_space
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Forget the previous episode (the experts use no randomness; ``seed`` is accepted for symmetry)."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.clip(self.act(obs), self.action_space.low, self.action_space.high).astype(np.float32)


class _ArmExpert(Expert):
    """Shared: move the end effector toward a target point at up to full speed."""

    def __init__(self, env: gym.Env) -> None:
        cfg = env.unwrapped.cfg
        self.step_size = cfg.robot.max_ee_step
        self.half = max(float(env.unwrapped.object_half_height), 1e-3)
        super().__init__(env)

    def move(self, ee: np.ndarray, target: np.ndarray, grip: float, speed: float = 1.0) -> np.ndarray:
        delta = (np.asarray(target, dtype=np.float64) - ee) / self.step_size
        norm = np.max(np.abs(delta))
        if norm > speed:
            delta *= speed / norm  # keep the direction when saturating
        return np.array([*delta, grip])


class ReachExpert(_ArmExpert):
    """PandaReach: head straight for the goal."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.move(obs["ee_pos"].astype(np.float64), obs["goal_pos"], -1.0)


class PushExpert(_ArmExpert):
    """PandaPush: travel above the table to a spot behind the cube (seen from the goal), descend,
    push at the height of the cube's centre along the cube-to-goal line, steering the contact
    point back onto the line; lift and re-approach when the cube slips off to the side."""

    TRAVEL = 0.08      # travel height of the end effector (m): clears the cube
    PUSH_HEIGHT = 0.7  # of the cube's half height: low contact keeps the cube from tipping
    PUSH_SPEED = 0.6   # of full speed: pushing fast makes the arm dip and the cube tip

    def reset(self, seed: int | None = None) -> None:
        self.phase = "approach"

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        ee = obs["ee_pos"].astype(np.float64)
        obj = obs["object_pos"].astype(np.float64)
        goal = obs["goal_pos"].astype(np.float64)
        to_goal = goal[:2] - obj[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 1e-6:
            return self.move(ee, ee, -1.0)
        u = to_goal / dist
        side = np.array([-u[1], u[0]])
        push_z = self.half * self.PUSH_HEIGHT
        contact = self.half + 0.012                     # ee-to-centre distance when touching a face
        standoff = self.half * math.sqrt(2.0) + 0.035   # clears a cube of any yaw, plus the fingers
        rel = ee[:2] - obj[:2]
        lateral, along = float(rel @ side), float(rel @ u)
        if self.phase == "push" and (abs(lateral) > 0.025 or along > -self.half or ee[2] > push_z + 0.03):
            self.phase = "approach"
        if self.phase == "approach":
            behind = obj[:2] - u * standoff
            if np.linalg.norm(ee[:2] - behind) > 0.012:
                near = float(np.linalg.norm(rel)) < standoff + 0.02
                if near and ee[2] < self.TRAVEL - 0.02:  # rise before moving sideways past the cube
                    return self.move(ee, [ee[0], ee[1], self.TRAVEL], -1.0)
                return self.move(ee, [behind[0], behind[1], self.TRAVEL], -1.0)
            if ee[2] > push_z + 0.008:
                return self.move(ee, [behind[0], behind[1], push_z], -1.0)
            self.phase = "push"
        # Push: put the contact point a little past where it is now, on the cube-to-goal line.
        advance = min(dist, 0.02)
        target = obj[:2] - u * contact + u * advance
        return self.move(ee, [target[0], target[1], push_z], -1.0, speed=self.PUSH_SPEED)


class PickPlaceExpert(_ArmExpert):
    """PandaPickPlace: open above the cube, descend, close, lift, carry to the goal, settle there;
    start over when the cube slips out."""

    def reset(self, seed: int | None = None) -> None:
        self.phase = "above"
        self.closing = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        ee = obs["ee_pos"].astype(np.float64)
        obj = obs["object_pos"].astype(np.float64)
        goal = obs["goal_pos"].astype(np.float64)
        width = float(obs["gripper_width"][0])
        open_, closed = 1.0, -1.0
        hover = obj[2] + 0.08
        xy_err = float(np.linalg.norm(ee[:2] - obj[:2]))
        held = width > self.half * 1.2 and np.linalg.norm(ee - obj) < self.half * 1.5
        if self.phase in ("carry", "lift") and not held and self.closing >= 6:
            self.phase, self.closing = "above", 0  # lost it: try again
        if self.phase == "above":
            if xy_err > 0.008 or abs(ee[2] - hover) > 0.03:
                return self.move(ee, [obj[0], obj[1], max(hover, ee[2]) if xy_err > 0.03 else hover], open_)
            if width < 0.07:
                return self.move(ee, [obj[0], obj[1], hover], open_)
            self.phase = "descend"
        if self.phase == "descend":
            target = np.array([obj[0], obj[1], obj[2] - 0.005])
            if np.linalg.norm(ee - target) > 0.008:
                if xy_err > 0.02:
                    self.phase = "above"
                return self.move(ee, target, open_, speed=0.6)
            self.phase = "grasp"
        if self.phase == "grasp":
            self.closing += 1
            if self.closing < 6:
                return self.move(ee, ee, closed)
            self.phase = "lift"
        # Carry at a fixed cube height over the goal; the cube hangs at (obj - ee) from the hand.
        offset = obj - ee
        carry_z = max(goal[2], self.half) + 0.05
        if self.phase == "lift":
            if obj[2] < carry_z - 0.015:
                return self.move(ee, [ee[0], ee[1], carry_z - offset[2]], closed)
            self.phase = "carry"
        if np.linalg.norm(obj[:2] - goal[:2]) > 0.015:
            aim = np.array([goal[0], goal[1], carry_z]) - offset
            return self.move(ee, aim, closed)
        return self.move(ee, goal - offset, closed, speed=0.6)


class NavigateExpert(Expert):
    """HuskyNavigate: steer for the free heading nearest the goal direction, judged from the lidar
    (a heading is free when no return lies in the corridor the base would sweep), slowing near
    obstacles and the goal."""

    HALF_WIDTH = 0.55   # corridor half-width: the Husky's 0.34 m plus margin
    LOOKAHEAD = 1.6     # m
    TURN_GAIN = 1.8

    def __init__(self, env: gym.Env) -> None:
        e = env.unwrapped
        self.angles = np.asarray(e.driver_info.meta["lidar_angles"], dtype=np.float64)
        self.range = float(e.cfg.robot.lidar.range)
        self.max_v = float(e.cfg.robot.max_linear)
        self.max_w = float(e.cfg.robot.max_angular)
        self.headings = np.linspace(-math.pi, math.pi, 72, endpoint=False)
        super().__init__(env)

    def reset(self, seed: int | None = None) -> None:
        self.previous = 0.0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        gx, gy = (float(v) for v in obs["goal_rel"])
        goal_dist = math.hypot(gx, gy)
        goal_dir = math.atan2(gy, gx)
        ranges = obs["lidar"].astype(np.float64)
        hit = ranges < self.range - 1e-3
        px, py = ranges[hit] * np.cos(self.angles[hit]), ranges[hit] * np.sin(self.angles[hit])
        look = min(self.LOOKAHEAD, goal_dist + 0.3)
        c, s = np.cos(self.headings)[:, None], np.sin(self.headings)[:, None]
        along = c * px + s * py
        lateral = -s * px + c * py
        blocked = ((along > -0.1) & (along < look) & (np.abs(lateral) < self.HALF_WIDTH)).any(axis=1)
        wrap = lambda a: (a + math.pi) % (2 * math.pi) - math.pi  # noqa: E731
        cost = np.abs(wrap(self.headings - goal_dir)) + 0.25 * np.abs(wrap(self.headings - self.previous))
        cost[blocked] = np.inf
        if np.all(np.isinf(cost)):
            heading = math.copysign(math.pi / 2, goal_dir)  # boxed in: turn on the spot
        else:
            heading = float(self.headings[int(np.argmin(cost))])
        self.previous = heading
        omega = float(np.clip(self.TURN_GAIN * heading, -self.max_w, self.max_w))
        near = float(ranges[np.abs(self.angles) < 0.6].min()) if np.any(np.abs(self.angles) < 0.6) else self.range
        v = self.max_v * max(0.0, math.cos(heading)) ** 2
        v *= min(1.0, goal_dist / 1.0) * min(1.0, max(0.0, (near - 0.7) / 0.8))
        if abs(heading) > 1.0:
            v = 0.0
        return np.array([max(v, 0.0), omega])


EXPERTS: dict[str, type[Expert]] = {
    "ark/PandaReach-v0": ReachExpert,
    "ark/PandaPush-v0": PushExpert,
    "ark/PandaPickPlace-v0": PickPlaceExpert,
    "ark/HuskyNavigate-v0": NavigateExpert,
}


def expert_for(env: gym.Env) -> Expert:
    """The scripted expert of an Ark environment (made with ``gymnasium.make`` or directly)."""
    from envs.husky_navigate import HuskyNavigateEnv
    from envs.panda_tasks import PandaPickPlaceEnv, PandaPushEnv, PandaReachEnv

    by_class = {PandaReachEnv: ReachExpert, PandaPushEnv: PushExpert, PandaPickPlaceEnv: PickPlaceExpert,
                HuskyNavigateEnv: NavigateExpert}
    cls = by_class.get(type(env.unwrapped))
    if cls is None:
        from ark.errors import ArkError

        raise ArkError(f"no scripted expert for {type(env.unwrapped).__name__} (experts exist for: {', '.join(EXPERTS)})")
    return cls(env)


def run_episode(env: gym.Env, expert: Expert, seed: int) -> dict[str, Any]:
    """One episode with ``reset(seed=seed)``; returns success, steps and return."""
    obs, info = env.reset(seed=seed)
    expert.reset(seed)
    total, steps, success = 0.0, 0, bool(info.get("is_success", False))
    while True:
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        total += reward
        steps += 1
        success = success or bool(info.get("is_success", False))
        if terminated or truncated:
            return {"seed": seed, "success": success, "steps": steps, "return": total}


def evaluate(env_id: str, episodes: int, first_seed: int = 0, progress: bool = True,
             **env_kwargs: Any) -> dict[str, Any]:
    """Success rate of the task's expert over seeds ``first_seed .. first_seed + episodes - 1``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    env = gym.make(env_id, **env_kwargs)
    expert = expert_for(env)
    results = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    start = time.perf_counter()
    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task(env_id, total=episodes, rate="")
            for seed in range(first_seed, first_seed + episodes):
                results.append(run_episode(env, expert, seed))
                ok = sum(r["success"] for r in results)
                bar.update(task, advance=1, rate=f"success {ok}/{len(results)}")
    finally:
        env.close()
    ok = sum(r["success"] for r in results)
    return {"env": env_id, "episodes": len(results), "successes": ok, "success_rate": ok / max(len(results), 1),
            "mean_steps": float(np.mean([r["steps"] for r in results])) if results else 0.0,
            "max_steps": max((r["steps"] for r in results), default=0),
            "failed_seeds": [r["seed"] for r in results if not r["success"]],
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs.experts", description="Evaluate a scripted expert.")
    parser.add_argument("--env", required=True, choices=sorted(EXPERTS), help="environment id")
    parser.add_argument("--episodes", type=int, default=100, help="number of episodes (seeds first-seed..)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    from ark.errors import ArkError

    try:
        r = evaluate(args.env, args.episodes, args.first_seed, progress=not args.no_progress)
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"{r['env']}: {r['successes']}/{r['episodes']} successful ({100 * r['success_rate']:.1f} %), "
          f"steps mean {r['mean_steps']:.1f} max {r['max_steps']}, {r['seconds']:.1f} s")
    if r["failed_seeds"]:
        print(f"failed seeds: {' '.join(map(str, r['failed_seeds']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
