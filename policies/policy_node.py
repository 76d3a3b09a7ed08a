"""Run a trained policy as an Ark node: observations in, actions out at the control rate.

    node = PolicyNode(policy="runs/push-act", rate_hz=20).start()      # or an ONNX export folder

Topics and services of a node named ``policy`` (the default):

``policy/observation``  (subscribed, ``ark/DictArrays``) one observation: ``arrays`` keyed as in
    the dataset (``observation.state``, ``observation.rgb``, ...; extra keys are ignored),
    optional ``meta`` ``{"episode": e, "step": t}``. Latest-only: a slow policy acts on the
    newest observation. Each observation is acted on once (by its episode/step, or else by its
    sequence number); a new ``episode`` in ``meta`` resets the policy.
``policy/action``  (published, ``ark/Float64Array``) the action for the newest observation, one per
    timer tick at ``rate_hz`` while fresh observations arrive (``rate_hz`` 0: as soon as one
    arrives). The chunk queue or temporal ensemble lives in the policy's ``select_action``.
    Latched, so a consumer that joins late still gets the newest action.
``policy/latency``  (published every ``latency_period_s``, default 1 s, ``ark/DictArrays``)
    ``select_action`` latency over the last ``latency_window`` actions: ``p50_ms``, ``p99_ms``,
    ``mean_ms``, ``max_ms``, ``count``.
``policy/reset``  (service, ``ark/Empty -> ark/Result``) forget the history and queued actions.
``policy/param``  the node's parameters, including ``latency_p50_ms``, ``latency_p99_ms``,
    ``actions``, ``action_seq``, ``errors``, ``last_error``, ``input_features``, ``action_dim``.

Parameters (keyword arguments, or ``params`` when started by ``ark launch`` / ``ark.runner``):
``policy`` (a run, checkpoint or ONNX export folder; required), ``rate_hz`` (default: the
training data's rate from the run's ``train.json``), ``obs_topic``, ``action_topic``,
``device``, ``latency_window``, ``latency_period_s``.

:func:`run_policy_loop` bridges a Gymnasium environment to such a node over these topics, so
the same node drives an environment on any backend (``sim`` or ``node``) and a real robot.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ark.config import ArkConfig
from ark.errors import ArkError, ServiceError
from ark.messages import DictArrays, Empty, Float64Array, Parameter, Result
from ark.node import Node
from policies.evaluate import (EpisodeRecord, ObservationAdapter, VideoWriter, check_action_space, env_fps,
                               load_policy, policy_spec, run_episodes)

log = logging.getLogger(__name__)


class PolicyNodeError(ArkError):
    """The policy node did not answer (not running, wrong topics, or its policy failed)."""


def _rate_from_run(policy: Any) -> float | None:
    if not isinstance(policy, (str, Path)):
        return None
    from policies.evaluate import _run_info

    run = _run_info(policy)
    fps = (run or {}).get("fps")
    return float(fps) if isinstance(fps, (int, float)) and fps > 0 else None


class PolicyNode(Node):
    """Serves a policy on Ark topics; see the module docstring for topics, services and parameters."""

    def __init__(self, name: str = "policy", *, config: ArkConfig | None = None, params: dict[str, Any] | None = None,
                 policy: Any = None, rate_hz: float | None = None, obs_topic: str | None = None,
                 action_topic: str | None = None, device: str | None = None, latency_window: int | None = None,
                 latency_period_s: float | None = None) -> None:
        params = dict(params or {})
        policy = policy if policy is not None else params.get("policy")
        if policy is None:
            raise ArkError(f"policy node {name}: no policy (pass policy= or the 'policy' parameter: a run, checkpoint "
                           f"or ONNX export folder)")
        rate = rate_hz if rate_hz is not None else params.get("rate_hz")
        if rate is None:
            rate = _rate_from_run(policy)
        if rate is None:
            raise ArkError(f"policy node {name}: no control rate (pass rate_hz=; the policy's run records none)")
        rate = float(rate)
        if not rate >= 0 or math.isinf(rate):
            raise ArkError(f"policy node {name}: rate_hz must be >= 0, got {rate}")
        self.policy = load_policy(policy, device=device or params.get("device", "cpu"))
        inputs, action_dim = policy_spec(self.policy)
        window = int(latency_window or params.get("latency_window", 1000))
        super().__init__(name, config=config, params=params)
        self.rate_hz = rate
        self.input_features = {k: list(v) for k, v in inputs.items()}
        self.action_dim = action_dim
        self.obs_topic = obs_topic or params.get("obs_topic") or f"{name}/observation"
        self.action_topic = action_topic or params.get("action_topic") or f"{name}/action"
        self.latencies: deque[float] = deque(maxlen=max(1, window))
        self.actions = 0
        self.errors = 0
        self.skipped_ticks = 0
        self._pending: tuple[DictArrays, Any] | None = None
        self._last_key: Any = None
        self._episode: Any = None
        self.params.update(policy=str(policy) if isinstance(policy, (str, Path)) else type(self.policy).__name__,
                           rate_hz=rate, input_features=self.input_features, action_dim=action_dim,
                           obs_topic=self.obs_topic, action_topic=self.action_topic, actions=0, action_seq=0,
                           errors=0, last_error="", latency_p50_ms=None, latency_p99_ms=None)
        self.pub_action = self.publisher(self.action_topic, Float64Array, latched=True)
        self.pub_latency = self.publisher(f"{name}/latency", DictArrays)
        self.service(f"{name}/reset", Empty, Result, self._on_reset)
        self.subscriber(self.obs_topic, DictArrays, self._on_observation, latest_only=True)
        if rate > 0:
            self.timer(rate, self._tick)
        period = float(latency_period_s or params.get("latency_period_s", 1.0))
        self.timer(1.0 / period, self._report)

    # -- control ------------------------------------------------------------------------------
    def _on_observation(self, msg: DictArrays, info: Any) -> None:
        self._pending = (msg, info)
        if self.rate_hz == 0:
            self._tick()

    def _tick(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            self.skipped_ticks += 1
            return
        msg, info = pending
        meta = msg.meta if isinstance(msg.meta, dict) else {}
        episode, step = meta.get("episode"), meta.get("step")
        key = (episode, step) if episode is not None and step is not None else (info.source, info.seq)
        if key == self._last_key:
            return  # a latched resend of the observation already acted on
        if episode is not None and episode != self._episode:
            self.policy.reset()
            self._episode = episode
        self._last_key = key
        t0 = time.perf_counter()
        try:
            action = self.policy.select_action(msg.arrays)
        except Exception as exc:  # never let a bad observation kill the node: count, report, go on
            self.errors += 1
            self.params.update(errors=self.errors, last_error=str(exc).splitlines()[0] if str(exc) else repr(exc))
            if self.errors <= 10 or self.errors % 100 == 0:
                log.warning("policy node %s: no action for this observation: %s", self.name, exc)
            return
        self.latencies.append(time.perf_counter() - t0)
        self.pub_action.publish(Float64Array(np.asarray(action, dtype=np.float64).reshape(-1).copy()))
        self.actions += 1
        self.params.update(actions=self.actions, action_seq=self.pub_action.seq)

    def _on_reset(self, _req: Empty) -> Result:
        self.reset()
        return Result(True, "reset")

    def reset(self) -> None:
        """Forget the observation history, the queued actions and the last observation (episode start)."""
        self.policy.reset()
        self._pending = None
        self._last_key = None
        self._episode = None

    # -- reporting ----------------------------------------------------------------------------
    def latency(self) -> dict[str, float]:
        """``select_action`` latency over the window: p50, p99, mean and max in ms, and the count."""
        lat = np.asarray(list(self.latencies), dtype=np.float64) * 1e3  # list(): a C-level (atomic) copy
        if lat.size == 0:
            return {"count": 0, "p50_ms": math.nan, "p99_ms": math.nan, "mean_ms": math.nan, "max_ms": math.nan}
        p50, p99 = np.percentile(lat, [50, 99])
        return {"count": int(lat.size), "p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(lat.mean()),
                "max_ms": float(lat.max())}

    def _report(self) -> None:
        stats = self.latency()
        if stats["count"]:
            self.params.update(latency_p50_ms=stats["p50_ms"], latency_p99_ms=stats["p99_ms"])
            self.pub_latency.publish(DictArrays(arrays={k: np.asarray([v], dtype=np.float64) for k, v in stats.items()},
                                                meta={"actions": self.actions, "errors": self.errors}))

    def stats(self) -> dict:
        """The node's channel counters plus the policy's latency and action/error counts."""
        out = super().stats()
        out["policy"] = {**self.latency(), "actions": self.actions, "errors": self.errors,
                         "skipped_ticks": self.skipped_ticks}
        return out


# ----- bridging an environment to a policy node ---------------------------------------------------
class _Bridge:
    """The environment's side of the topics: publishes observations, waits for the matching action."""

    def __init__(self, node_name: str, obs_topic: str | None, action_topic: str | None, config: ArkConfig | None,
                 timeout: float):
        self.name = node_name
        self.timeout = timeout
        self.node = Node(f"{node_name}_bridge", config=config).start()
        try:
            self.params = self._param("", connect_timeout=timeout)
            self.obs_topic = obs_topic or self.params.get("obs_topic") or f"{node_name}/observation"
            self.action_topic = action_topic or self.params.get("action_topic") or f"{node_name}/action"
            self.pub = self.node.publisher(self.obs_topic, DictArrays, latched=True)
            self.sub = self.node.subscriber(self.action_topic, Float64Array, queue=100)
            self.reset_client = self.node.client(f"{node_name}/reset", Empty, Result)
        except BaseException:
            self.node.shutdown()
            raise
        self._seq = 0

    def _param(self, name: str, connect_timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (connect_timeout or self.timeout)
        while True:
            try:
                return self.node.call(f"{self.name}/param", Parameter(name), Parameter, timeout=self.timeout).value
            except (ServiceError, ArkError) as exc:
                if time.monotonic() >= deadline:
                    raise PolicyNodeError(f"policy node '{self.name}' does not answer ({exc})") from None
                time.sleep(0.05)

    def reset(self) -> None:
        try:
            self.reset_client.call(Empty(), self.timeout)
        except ArkError as exc:
            raise PolicyNodeError(f"policy node '{self.name}' did not reset ({exc})") from None
        # Actions published before now (and their latched resends) belong to earlier steps.
        self._seq = int(self._param("action_seq"))

    def act(self, obs: Mapping[str, np.ndarray], episode: int, step: int) -> np.ndarray:
        arrays = {k: np.array(v) for k, v in obs.items()}  # published zero-copy: never reuse the env's arrays
        self.pub.publish(DictArrays(arrays=arrays, meta={"episode": episode, "step": step}))
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            got = self.sub.recv(timeout=max(remaining, 0.0), with_info=True) if remaining > 0 else None
            if got is None:
                last = self._param("last_error")
                why = f"; its last error: {last}" if last else ""
                raise PolicyNodeError(f"policy node '{self.name}' sent no action for episode {episode} step {step} "
                                      f"within {self.timeout:g}s{why}")
            msg, info = got
            if info.seq > self._seq:
                self._seq = info.seq
                return np.asarray(msg.data, dtype=np.float64)

    def close(self) -> None:
        self.node.shutdown()


def run_policy_loop(env: Any, node_name: str = "policy", episodes: int = 1, *, seed: int = 0,
                    max_steps: int | None = None, obs_topic: str | None = None, action_topic: str | None = None,
                    config: ArkConfig | None = None, timeout: float = 10.0, video: str | None = None,
                    video_episodes: int = 1, progress: bool = False, env_id: str | None = None) -> list[EpisodeRecord]:
    """Drive ``env`` with the policy node ``node_name`` over Ark topics for ``episodes`` seeded episodes.

    Each step publishes the observation (keyed as in the dataset, with its episode and step) and
    waits up to ``timeout`` s for the node's next action; the environment may use any backend.
    The node's input features and action size are checked against the environment's spaces
    first. Returns the same per-episode records as :func:`policies.evaluate.evaluate`.
    """
    env_id = env_id or getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
    bridge = _Bridge(node_name, obs_topic, action_topic, config, timeout)
    writer = None
    try:
        inputs = {k: tuple(v) for k, v in bridge.params["input_features"].items()}
        adapter = ObservationAdapter(env, env_id, inputs)
        check_action_space(env, env_id, int(bridge.params["action_dim"]))
        if video is not None:
            writer = VideoWriter(video, env_fps(env))
        return run_episodes(env, adapter, bridge.act, lambda k: bridge.reset(), episodes, seed=seed,
                            max_steps=max_steps, video=writer, video_episodes=video_episodes, progress=progress,
                            label=f"{node_name} on {env_id}", env_id=env_id)
    finally:
        if writer is not None:
            writer.close()
        bridge.close()
