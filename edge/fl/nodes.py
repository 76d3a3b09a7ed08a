"""A networked fleet: the FL server and its clients as Ark nodes, one process per robot.

Services (``prefix`` defaults to ``/fl``), all with ``ark/DictArrays`` requests and replies:

- ``<prefix>/task``: ``meta={"client": id}`` -> ``meta={"status", "round", "steps", "instructions",
  "compression", "want_grad_mean"}`` and ``arrays={"params", "ins.<name>"...}``.
- ``<prefix>/submit``: ``arrays={"update": uint8 blob}`` (compressed) or ``{"delta": float32}``,
  optional ``"grad_mean"``, ``meta={"client", "round", "nonce", "num_examples", "steps", "lr"}``
  -> ``meta={"accepted", "reason", "round"}``.

The server also publishes ``<prefix>/status`` (latched ``DictArrays`` meta: round, accuracy,
bytes_up, updates, rejected) after every round. Clients pull work, so a client may stop, be
slow or rejoin at any time; a server restarted with the same ``checkpoint`` folder resumes
where it stopped (see :class:`edge.fl.server.FLServer`). Nothing is pickled: parameters and
updates travel as raw array buffers.

    python -m ark.runner edge.fl.nodes:FLServerNode --name fl_server --params '{"config": "configs/fl/digits.yaml"}'
    python -m ark.runner edge.fl.nodes:FLClientNode --name robot3 --params '{"config": "configs/fl/digits.yaml", "index": 3}'
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Mapping

import numpy as np

from ark.config import ArkConfig
from ark.errors import ArkError
from ark.messages import DictArrays
from ark.node import Node
from edge.fl.compression import Compressor, compression_config
from edge.fl.config import FleetConfig, load_fleet_config
from edge.fl.server import FLServer
from edge.fl.simulation import client_name, make_strategy, train_clients

log = logging.getLogger("edge.fl.nodes")


def _fleet(params: Mapping[str, Any]) -> FleetConfig:
    return load_fleet_config(params.get("config"), {k: v for k, v in params.items() if k in FleetConfig.__dataclass_fields__})


class FLServerNode(Node):
    """Serves ``<prefix>/task`` and ``<prefix>/submit`` for a synchronous strategy; see the module docstring.

    Parameters: ``config`` (a YAML of ``configs/fl/``) and any :class:`~edge.fl.fleet.FleetConfig`
    key to override it; ``checkpoint`` (folder; resume from it when it holds a checkpoint).
    """

    def __init__(self, name: str = "fl_server", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(name, config=config, params=params)
        fc = _fleet(self.params)
        self.fleet = fc
        task, _ = fc.build()
        names = [client_name(i) for i in range(fc.clients)]
        strategy = make_strategy(fc.strategy, task.init_params(fc.seed), names, lr=fc.lr, **fc.strategy_args)
        if not hasattr(strategy, "accept"):
            raise ArkError(f"the networked server runs synchronous strategies; {fc.strategy} is event-driven "
                           f"(use it in `ark fl simulate`)")
        self.server = FLServer(strategy, rounds=fc.rounds, clients_per_round=fc.clients_per_round,
                               min_updates=fc.min_updates, round_timeout_s=fc.round_timeout_s,
                               local_steps=fc.local_steps, checkpoint=self.param("checkpoint"),
                               compression=fc.compression, max_norm=fc.max_norm, evaluate=task.accuracy)
        prefix = fc.prefix
        self.status_pub = self.publisher(f"{prefix}/status", DictArrays, latched=True)
        self.service(f"{prefix}/task", DictArrays, DictArrays, self._on_task)
        self.service(f"{prefix}/submit", DictArrays, DictArrays, self._on_submit)
        self._last_round = -1
        self.timer(20.0, self._tick)
        self._publish_status()

    def _on_task(self, req: DictArrays) -> DictArrays:
        task = self.server.task_for(str(req.meta.get("client", "")))
        arrays: dict[str, np.ndarray] = {}
        meta = {k: v for k, v in task.items() if k not in ("params", "instructions")}
        if "params" in task:
            arrays["params"] = task["params"]
            scalars = {}
            for k, v in task["instructions"].items():
                if isinstance(v, np.ndarray):
                    arrays[f"ins.{k}"] = v.astype(np.float32)
                else:
                    scalars[k] = v
            meta["instructions"] = scalars
        return DictArrays(arrays=arrays, meta=meta)

    def _on_submit(self, req: DictArrays) -> DictArrays:
        m = req.meta
        blob = req.arrays.get("update")
        ok, reason = self.server.submit(
            str(m.get("client", "")), int(m.get("round", -1)), delta=req.arrays.get("delta"),
            blob=None if blob is None else blob.tobytes(), num_examples=int(m.get("num_examples", 1)),
            steps=int(m.get("steps", 1)), lr=float(m.get("lr", 0.05)), nonce=str(m.get("nonce", "")),
            grad_mean=req.arrays.get("grad_mean"))
        self._publish_status()
        return DictArrays(meta={"accepted": ok, "reason": reason, "round": self.server.round})

    def _tick(self) -> None:
        if self.server.tick():
            self._publish_status()

    def _publish_status(self) -> None:
        if self.server.round == self._last_round:
            return
        self._last_round = self.server.round
        last = self.server.history[-1] if self.server.history else {}
        self.status_pub.publish(DictArrays(meta={"round": self.server.round, "done": self.server.done,
                                                 "accuracy": last.get("accuracy"), "bytes_up": self.server.bytes_up,
                                                 "rejected": dict(self.server.validator.rejected),
                                                 "resumed": self.server.resumed}))


class FLClientNode(Node):
    """A robot of the fleet: pulls the model, trains on its own data partition, submits the update.

    Parameters: ``config`` and FleetConfig overrides (task, clients, alpha, seed, ...), ``index``
    (which partition, default 0), ``client_id`` (default ``client-XXXX`` from the index),
    ``poll_s`` (wait between polls, 0.05), ``delay_s`` (extra seconds per round: a slow robot),
    ``max_updates`` (leave after this many accepted updates: a robot that drops out),
    ``call_timeout`` (seconds per service call, 2), ``give_up_s`` (stop after this long without
reaching the server, 60). The work runs on a thread; the node exits
    (SystemExit 0 under ``ark.runner``) when the server says training is done.
    """

    def __init__(self, name: str = "fl_client", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(name, config=config, params=params)
        fc = _fleet(self.params)
        self.fleet = fc
        self.index = int(self.param("index", 0))
        self.client_id = str(self.param("client_id", client_name(self.index)))
        self.task, parts = fc.build()
        self.parts = parts
        self.accepted = 0
        self.rejected: list[str] = []
        self.bytes_sent = 0
        self.finished = threading.Event()
        self._compressor: Compressor | None = None
        self._task_client = self.client(f"{fc.prefix}/task", DictArrays, DictArrays)
        self._submit_client = self.client(f"{fc.prefix}/submit", DictArrays, DictArrays)
        self._worker = threading.Thread(target=self._loop, name=f"fl-client-{self.client_id}", daemon=True)
        self.timer(10.0, self._check_finished)
        self._worker.start()

    def _check_finished(self) -> None:
        if self.finished.is_set() and threading.current_thread() is threading.main_thread():
            raise SystemExit(0)

    def _loop(self) -> None:
        poll = float(self.param("poll_s", 0.05))
        timeout = float(self.param("call_timeout", 2.0))
        delay = float(self.param("delay_s", 0.0))
        max_updates = self.param("max_updates")
        give_up = float(self.param("give_up_s", 60.0))
        submissions = 0
        last_contact = time.monotonic()
        while not self._stop.is_set():
            try:
                rep = self._task_client.call(DictArrays(meta={"client": self.client_id}), timeout)
                last_contact = time.monotonic()
            except ArkError as exc:  # server down, restarting or slow: try again later
                log.info("client %s: %s", self.client_id, exc)
                if time.monotonic() - last_contact > give_up:
                    log.warning("client %s: no server for %.0f s, giving up", self.client_id, give_up)
                    break
                self._stop.wait(max(poll, 0.2))
                continue
            status = rep.meta.get("status")
            if status == "done":
                break
            if status == "refused":
                log.warning("client %s refused: %s", self.client_id, rep.meta.get("reason"))
                break
            if status != "train":
                self._stop.wait(poll)
                continue
            self._train_and_submit(rep, timeout, submissions)
            submissions += 1
            if delay:
                self._stop.wait(delay)
            if max_updates is not None and self.accepted >= int(max_updates):
                break
        self.finished.set()

    def _train_and_submit(self, rep: DictArrays, timeout: float, submissions: int) -> None:
        meta = rep.meta
        ins: dict[str, Any] = dict(meta.get("instructions") or {})
        ins.update({k[4:]: v for k, v in rep.arrays.items() if k.startswith("ins.")})
        round_ = int(meta["round"])
        want = bool(meta.get("want_grad_mean"))
        delta, grad = train_clients(self.task, self.parts, [self.index], rep.arrays["params"], [ins],
                                    int(meta["steps"]), 1000 * round_ + submissions, self.fleet.seed,
                                    self.fleet.batch_size, want)
        arrays: dict[str, np.ndarray] = {}
        cc = compression_config(meta.get("compression"))
        if cc is not None:
            if self._compressor is None:
                self._compressor = Compressor(cc)
            blob = self._compressor.compress(delta[0], self.client_id)
            arrays["update"] = np.frombuffer(blob, np.uint8)
        else:
            arrays["delta"] = delta[0]
        if grad is not None:
            arrays["grad_mean"] = grad[0]
        self.bytes_sent += sum(a.nbytes for a in arrays.values())
        req = DictArrays(arrays=arrays, meta={"client": self.client_id, "round": round_, "nonce": uuid.uuid4().hex,
                                              "num_examples": int(len(self.parts[self.index])),
                                              "steps": int(meta["steps"]), "lr": float(ins.get("lr", 0.05))})
        try:
            res = self._submit_client.call(req, timeout)
        except ArkError as exc:
            log.info("client %s: submit failed: %s", self.client_id, exc)
            return
        if res.meta.get("accepted"):
            self.accepted += 1
        else:
            self.rejected.append(str(res.meta.get("reason")))

    def shutdown(self) -> None:
        self._stop.set()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=5)
        super().shutdown()
