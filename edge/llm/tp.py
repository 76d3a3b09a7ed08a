"""Tensor parallelism across processes over ZeroMQ (TPI-LLM style).

Every block is split across ``world`` ranks by a ratio per rank: attention by whole KV
groups (a KV head with its query heads), the SwiGLU feed-forward by 32-column slices of
``ffn_dim``. Each rank computes a partial attention output (its heads through its columns
of ``wo``) and a partial feed-forward output (its columns through its rows of ``w2``); an
all-reduce sums the partials, so every rank keeps the full residual stream. The master
(rank 0, the caller's process) also holds the token embedding and the output head.

All-reduce: **star** (every worker sends its partial to the master, which adds them in rank
order and sends the sum back: 2 hops, what TPI-LLM picks because link latency dominates on
edge networks) or **ring** (reduce-scatter then all-gather around the ranks: 2(N-1) hops,
less traffic per link). Either way all ranks end with the same bits, and the sum is taken
in a fixed order, so decoding is deterministic.

Weights are distributed by the master: workers never open the GGUF file. Messages are
``[kind, msgpack header, raw buffer...]``; nothing is pickled. Every receive has a
timeout: a dead or silent peer is a PeerTimeoutError, never a hang; a worker whose master
is gone exits.

    model = TensorParallelModel.launch(GGUFFile(path), world=2, ratios=[1, 1])
    logits = model(torch.tensor(ids), 0)       # same interface as Transformer
    model.comm.stats()                         # all-reduce count and seconds
    model.close()
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import msgpack
import numpy as np
import torch
import zmq
from torch import nn

from edge.llm.errors import PeerTimeoutError, TensorParallelError
from edge.llm.gguf_reader import as_stored
from edge.llm.model import (Attention, FeedForward, ModelArgs, RMSNorm, Transformer, TransformerBlock,
                            block_tensor_names)
from edge.llm.quantize import float_tensor, from_gguf, gguf_slice, quantize_weight

if TYPE_CHECKING:
    from edge.llm.gguf_reader import GGUFFile

FFN_UNIT = 32  # feed-forward columns move between ranks in whole quantisation blocks


# -- the split -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardPlan:
    """What one rank computes: KV groups [kv0, kv1) and feed-forward columns [f0, f1)."""

    rank: int
    kv0: int
    kv1: int
    f0: int
    f1: int


def _split(total: int, ratios: Sequence[float]) -> list[int]:
    """Integer shares of ``total`` proportional to ``ratios`` (largest remainder)."""
    s = sum(ratios)
    exact = [total * r / s for r in ratios]
    shares = [int(e) for e in exact]
    for i in sorted(range(len(ratios)), key=lambda i: exact[i] - shares[i], reverse=True)[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split_plan(args: ModelArgs, world: int, ratios: Sequence[float] | None = None) -> list[ShardPlan]:
    """Per-rank shares of attention (whole KV groups) and feed-forward (32-column units)."""
    ratios = list(ratios) if ratios is not None else [1.0] * world
    if len(ratios) != world or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise TensorParallelError(f"need {world} non-negative ratios, got {ratios}")
    if args.ffn_dim % FFN_UNIT:
        raise TensorParallelError(f"ffn_dim {args.ffn_dim} is not a multiple of {FFN_UNIT}")
    kv = _split(args.n_kv_head, ratios)
    ff = _split(args.ffn_dim // FFN_UNIT, ratios)
    plans, k, f = [], 0, 0
    for r in range(world):
        plans.append(ShardPlan(r, k, k + kv[r], f * FFN_UNIT, (f + ff[r]) * FFN_UNIT))
        k, f = k + kv[r], f + ff[r]
    return plans


def shard_tensors(f: "GGUFFile", i: int, args: ModelArgs, plan: ShardPlan) -> dict[str, tuple[str, tuple, np.ndarray]]:
    """Block ``i``'s tensors for one rank, cut from the file's bytes: role -> (ggml type, shape, raw)."""
    names = block_tensor_names(i)
    out: dict[str, tuple[str, tuple, np.ndarray]] = {}
    rep, hd = args.n_head // args.n_kv_head, args.head_dim
    q_rows = slice(plan.kv0 * rep * hd, plan.kv1 * rep * hd)
    kv_rows = slice(plan.kv0 * hd, plan.kv1 * hd)
    cuts = {"wq": (q_rows, slice(None)), "wk": (kv_rows, slice(None)), "wv": (kv_rows, slice(None)),
            "wo": (slice(None), q_rows), "w1": (slice(plan.f0, plan.f1), slice(None)),
            "w3": (slice(plan.f0, plan.f1), slice(None)), "w2": (slice(None), slice(plan.f0, plan.f1))}
    for role, name in names.items():
        info = f.check_type(name)
        raw = f.read(name)
        if role in cuts:
            if (role in ("wq", "wk", "wv", "wo") and plan.kv0 == plan.kv1) or (role in ("w1", "w3", "w2") and plan.f0 == plan.f1):
                continue
            rows, cols = cuts[role]
            raw, shape = gguf_slice(raw, info.ggml_type, info.shape, rows, cols)
            out[role] = (info.ggml_type, shape, raw)
        else:
            out[role] = (info.ggml_type, info.shape, raw)
    return out


class ZeroPartial(nn.Module):
    """A rank's share when it holds no heads (or no columns): contributes zeros to the sum."""

    n_kv_head = 0

    def __init__(self) -> None:
        super().__init__()
        self.kv_cache = None

    def forward(self, x: torch.Tensor, *_: Any) -> torch.Tensor:
        return torch.zeros_like(x)


def block_from_shards(tensors: dict[str, tuple[str, tuple, np.ndarray]], args: ModelArgs, mode: str,
                      group_size: int = 32) -> TransformerBlock:
    """A block computing one rank's partial sums from its tensors (see ``shard_tensors``)."""
    def w(role: str):
        t, shape, raw = tensors[role]
        return quantize_weight(from_gguf(t, raw, shape), mode, group_size)

    def norm(role: str) -> RMSNorm:
        t, _, raw = tensors[role]
        return RMSNorm(float_tensor(t, raw), args.norm_eps)

    attn = Attention(w("wq"), w("wk"), w("wv"), w("wo"), args.head_dim) if "wq" in tensors else ZeroPartial()
    ffn = FeedForward(w("w1"), w("w3"), w("w2")) if "w1" in tensors else ZeroPartial()
    return TransformerBlock(attn, ffn, norm("attn_norm"), norm("ffn_norm"))  # type: ignore[arg-type]


# -- messages --------------------------------------------------------------------------------------
def _pack(kind: bytes, header: dict, *buffers: Any) -> list:
    return [kind, msgpack.packb(header), *buffers]


def _tensor(buf: Any, shape: Sequence[int]) -> torch.Tensor:
    return torch.frombuffer(bytearray(buf), dtype=torch.float32).view(*shape)


class Comm:
    """One rank's links: to the master (star and control) and, for ring, to its ring neighbours."""

    def __init__(self, rank: int, world: int, ctx: zmq.Context, timeout: float, mode: str = "star") -> None:
        if mode not in ("star", "ring"):
            raise TensorParallelError(f"all-reduce must be 'star' or 'ring', got {mode!r}")
        self.rank, self.world, self.ctx, self.timeout, self.mode = rank, world, ctx, timeout, mode
        self.seq = 0
        self.allreduce_s = 0.0
        self.allreduce_n = 0
        self.bytes_sent = 0
        self.broken: str | None = None
        self.watch: dict[int, subprocess.Popen] = {}  # master: worker processes to check while waiting
        self.control: zmq.Socket | None = None  # master: ROUTER; worker: DEALER
        self.pull: zmq.Socket | None = None
        self.push: zmq.Socket | None = None

    # -- plumbing
    def _fail(self, msg: str, exc: type = PeerTimeoutError) -> None:
        self.broken = msg
        raise exc(msg)

    def _wait(self, sock: zmq.Socket, who: str) -> list:
        if self.broken:
            raise TensorParallelError(f"tensor-parallel group is broken: {self.broken}")
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"tensor-parallel {who} did not answer within {self.timeout:g}s (dead or unreachable)")
            if sock.poll(int(min(left, 0.2) * 1000) + 1):
                return sock.recv_multipart(copy=False)
            for r, proc in self.watch.items():
                code = proc.poll()
                if code is not None:
                    self._fail(f"tensor-parallel rank {r} exited (code {code})")

    def open_ring(self) -> str:
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.linger = 0
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        return f"tcp://127.0.0.1:{port}"

    def connect_ring(self, addrs: Sequence[str]) -> None:
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.connect(addrs[(self.rank + 1) % self.world])

    # -- all-reduce
    def allreduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all ranks; every rank gets the same result."""
        if self.world == 1:
            return t
        t0 = time.perf_counter()
        self.seq += 1
        flat = t.detach().to(torch.float32).contiguous().view(-1)
        out = self._star(flat) if self.mode == "star" else self._ring(flat)
        self.allreduce_s += time.perf_counter() - t0
        self.allreduce_n += 1
        return out.view(t.shape)

    def _star(self, flat: torch.Tensor) -> torch.Tensor:
        assert self.control is not None
        hdr = {"seq": self.seq, "n": flat.numel()}
        if self.rank == 0:
            parts: dict[int, torch.Tensor] = {0: flat}
            while len(parts) < self.world:
                frames = self._wait(self.control, "worker")
                rank, kind = int(frames[0].bytes[4:]), frames[1].bytes
                h = msgpack.unpackb(frames[2].bytes)
                if kind != b"AR" or h["seq"] != self.seq:
                    self._fail(f"tensor-parallel rank {rank} is out of step ({kind!r} seq {h.get('seq')}, "
                               f"expected AR seq {self.seq})", TensorParallelError)
                parts[rank] = _tensor(frames[3].buffer, (flat.numel(),))
            total = parts[0].clone()
            for r in range(1, self.world):
                total += parts[r]  # fixed order: every run and every rank gets the same bits
            data = total.numpy().tobytes()
            for r in range(1, self.world):
                self.control.send_multipart([f"rank{r}".encode(), *_pack(b"AR", hdr, data)], copy=False)
                self.bytes_sent += len(data)
            return total
        data = flat.numpy().tobytes()
        self.control.send_multipart(_pack(b"AR", hdr, data), copy=False)
        self.bytes_sent += len(data)
        frames = self._wait(self.control, "master")
        h = msgpack.unpackb(frames[1].bytes)
        if frames[0].bytes != b"AR" or h["seq"] != self.seq:
            self._fail(f"tensor-parallel master is out of step (seq {h.get('seq')}, expected {self.seq})",
                       TensorParallelError)
        return _tensor(frames[2].buffer, (flat.numel(),))

    def _ring(self, flat: torch.Tensor) -> torch.Tensor:
        assert self.push is not None and self.pull is not None
        n, w, r = flat.numel(), self.world, self.rank
        bounds = [n * i // w for i in range(w + 1)]
        buf = flat.clone()
        chunk = lambda i: buf[bounds[i % w]:bounds[i % w + 1]]  # noqa: E731
        for step in range(2 * (w - 1)):
            send_i = (r - step) % w if step < w - 1 else (r + 1 - (step - (w - 1))) % w
            data = chunk(send_i).numpy().tobytes()
            self.push.send_multipart(_pack(b"RG", {"seq": self.seq, "step": step}, data), copy=False)
            self.bytes_sent += len(data)
            frames = self._wait(self.pull, f"ring neighbour of rank {r}")
            h = msgpack.unpackb(frames[1].bytes)
            if h["seq"] != self.seq or h["step"] != step:
                self._fail(f"tensor-parallel ring is out of step at rank {r}", TensorParallelError)
            recv_i = send_i - 1
            incoming = _tensor(frames[2].buffer, (bounds[recv_i % w + 1] - bounds[recv_i % w],))
            if step < w - 1:
                chunk(recv_i).add_(incoming)  # reduce-scatter
            else:
                chunk(recv_i).copy_(incoming)  # all-gather: copies, so all ranks hold identical bits
        return buf

    def stats(self) -> dict[str, float]:
        return {"allreduce_n": self.allreduce_n, "allreduce_s": self.allreduce_s, "bytes_sent": self.bytes_sent}

    def close(self) -> None:
        for s in (self.control, self.pull, self.push):
            if s is not None:
                s.close(0)


def _hook_allreduce(block: TransformerBlock, comm: Comm) -> None:
    """Sum the attention and feed-forward partials across ranks (gpt-fast's tp.py does the same with hooks)."""
    reduce = lambda _m, _i, out: comm.allreduce(out)  # noqa: E731
    block.attention.register_forward_hook(reduce)
    block.feed_forward.register_forward_hook(reduce)


# -- master ------------------------------------------------------------------------------------------
class TensorParallelModel(Transformer):
    """Rank 0: embedding, head and its own shards; drives the workers. Same interface as Transformer."""

    comm: Comm
    procs: list[subprocess.Popen]

    @classmethod
    def launch(cls, f: "GGUFFile", world: int, ratios: Sequence[float] | None = None, mode: str = "gguf",
               allreduce: str = "star", timeout: float = 30.0, threads: int | None = None,
               group_size: int = 32) -> "TensorParallelModel":
        """Start ``world - 1`` worker processes on this host, send them their weights, return the master."""
        args = ModelArgs.from_gguf(f)
        if world < 2:
            raise TensorParallelError(f"tensor parallelism needs at least 2 processes, got {world}")
        plans = split_plan(args, world, ratios)
        threads = threads or max(1, (os.cpu_count() or 1) // world)
        torch.set_num_threads(threads)
        ctx = zmq.Context.instance()
        comm = Comm(0, world, ctx, timeout, allreduce)
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        port = router.bind_to_random_port("tcp://127.0.0.1")
        comm.control = router
        ring_addr = comm.open_ring() if allreduce == "ring" else ""
        # Workers import the same edge package as this process, wherever it was imported from.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        procs = []
        for r in range(1, world):
            cmd = [sys.executable, "-m", "edge.llm.tp", "--connect", f"tcp://127.0.0.1:{port}", "--rank", str(r),
                   "--threads", str(threads)]
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=root, env=env))
        comm.watch = {r + 1: p for r, p in enumerate(procs)}
        try:
            model = cls._setup(f, args, plans, comm, mode, group_size, ring_addr, max(timeout, 60.0))
        except BaseException:
            for p in procs:
                p.kill()
            comm.close()
            raise
        model.procs = procs
        return model

    @classmethod
    def _setup(cls, f: "GGUFFile", args: ModelArgs, plans: list[ShardPlan], comm: Comm, mode: str,
               group_size: int, ring_addr: str, setup_timeout: float) -> "TensorParallelModel":
        world, router = comm.world, comm.control
        assert router is not None
        saved, comm.timeout = comm.timeout, setup_timeout  # workers import torch first: allow for it
        full = Transformer.from_gguf(f, mode=mode, group_size=group_size, load_layers=False)
        full_factors = full.rope_freq_factors
        rings = {0: ring_addr}
        while len(rings) < world:
            frames = comm._wait(router, "worker (starting)")
            h = msgpack.unpackb(frames[2].bytes)
            rings[h["rank"]] = h.get("ring", "")
        ring = [rings[r] for r in range(world)]
        for r in range(1, world):
            ident = f"rank{r}".encode()
            cfg = {"args": asdict(args), "plan": asdict(plans[r]), "mode": mode, "group_size": group_size,
                   "world": world, "allreduce": comm.mode, "ring": ring, "timeout": saved,
                   "rope_freq_factors": None if full_factors is None else full_factors.tolist()}
            router.send_multipart([ident, *_pack(b"CFG", cfg)])
            for i in range(args.n_layer):
                for role, (t, shape, raw) in shard_tensors(f, i, args, plans[r]).items():
                    router.send_multipart([ident, *_pack(b"W", {"layer": i, "role": role, "type": t,
                                                                "shape": list(shape)}, raw)], copy=False)
            router.send_multipart([ident, *_pack(b"END", {})])
        blocks = []
        for i in range(args.n_layer):
            blk = block_from_shards(shard_tensors(f, i, args, plans[0]), args, mode, group_size)
            _hook_allreduce(blk, comm)
            blocks.append(blk)
        if comm.mode == "ring":
            comm.connect_ring(ring)
        ready = 1
        while ready < world:
            frames = comm._wait(router, "worker (loading)")
            if frames[1].bytes == b"ERR":
                comm._fail(f"tensor-parallel worker failed: {msgpack.unpackb(frames[2].bytes)['error']}",
                           TensorParallelError)
            ready += 1
        comm.timeout = saved
        model = cls(args, full.tok_embeddings, blocks, full.norm, full.output, full.rope_freq_factors)
        model.comm = comm
        model.plans = plans  # type: ignore[attr-defined]
        return model

    def setup_cache(self, max_seq_len: int) -> None:
        super().setup_cache(max_seq_len)
        for r in range(1, self.comm.world):
            self._send(r, b"CACHE", {"n": max_seq_len})

    def _send(self, rank: int, kind: bytes, header: dict, *bufs: Any) -> None:
        if self.comm.broken:
            raise TensorParallelError(f"tensor-parallel group is broken: {self.comm.broken}")
        assert self.comm.control is not None
        self.comm.control.send_multipart([f"rank{rank}".encode(), *_pack(kind, header, *bufs)], copy=False)

    def forward_layers(self, x: torch.Tensor, start: int) -> torch.Tensor:
        if start + x.shape[1] <= self.max_seq_len:  # else the base class raises ContextOverflowError
            data = x.contiguous().numpy().tobytes()
            for r in range(1, self.comm.world):
                self._send(r, b"FWD", {"start": start, "t": x.shape[1]}, data)
        return super().forward_layers(x, start)

    def close(self) -> None:
        """Tell the workers to exit and wait for them (killing any that linger)."""
        for r, p in enumerate(getattr(self, "procs", []), start=1):
            if p.poll() is None:
                try:
                    self._send(r, b"BYE", {})
                except Exception:
                    pass
        for p in getattr(self, "procs", []):
            if self.comm.broken and p.poll() is None:
                p.kill()  # a stalled peer would never read BYE
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.comm.close()

    def __del__(self) -> None:
        for p in getattr(self, "procs", []):
            if p.poll() is None:
                p.kill()


# -- worker ------------------------------------------------------------------------------------------
def worker_main(connect: str, rank: int, threads: int) -> int:
    """A worker process: receive config and weights, then run forward passes until BYE or the master is gone."""
    torch.set_num_threads(threads)
    parent = os.getppid()
    ctx = zmq.Context.instance()
    comm = Comm(rank, 0, ctx, 60.0)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.setsockopt(zmq.IDENTITY, f"rank{rank}".encode())
    sock.connect(connect)
    comm.control = sock
    ring_addr = comm.open_ring()
    sock.send_multipart(_pack(b"HELLO", {"rank": rank, "pid": os.getpid(), "ring": ring_addr}))
    model: Transformer | None = None
    try:
        frames = comm._wait(sock, "master")
        cfg = msgpack.unpackb(frames[1].bytes)
        args = ModelArgs(**cfg["args"])
        comm.world, comm.mode, comm.timeout = cfg["world"], cfg["allreduce"], cfg["timeout"]
        mode, group_size = cfg["mode"], cfg["group_size"]
        layers: list[dict] = [{} for _ in range(args.n_layer)]
        while True:
            frames = comm._wait(sock, "master")
            kind = frames[0].bytes
            if kind == b"END":
                break
            h = msgpack.unpackb(frames[1].bytes)
            layers[h["layer"]][h["role"]] = (h["type"], tuple(h["shape"]), np.frombuffer(frames[2].buffer, np.uint8).copy())
        blocks = []
        for i in range(args.n_layer):
            # Received bytes viewed as GGUFFile.read returns them.
            tensors = {role: (t, shape, as_stored(raw, t, shape, shape[0])) for role, (t, shape, raw) in layers[i].items()}
            blk = block_from_shards(tensors, args, mode, group_size)
            _hook_allreduce(blk, comm)
            blocks.append(blk)
            layers[i] = {}
        factors = cfg.get("rope_freq_factors")
        model = Transformer(args, nn.Identity(), blocks, nn.Identity(), nn.Identity(),  # type: ignore[arg-type]
                            torch.tensor(factors, dtype=torch.float32) if factors is not None else None)
        if comm.mode == "ring":
            comm.connect_ring(cfg["ring"])
        sock.send_multipart(_pack(b"READY", {"rank": rank}))
    except Exception as exc:
        sock.send_multipart(_pack(b"ERR", {"error": f"rank {rank}: {exc}"}))
        return 1
    with torch.inference_mode():
        while True:
            if not sock.poll(1000):
                if os.getppid() != parent:
                    return 3  # the master is gone: do not linger
                continue
            frames = sock.recv_multipart(copy=False)
            kind, h = frames[0].bytes, msgpack.unpackb(frames[1].bytes)
            try:
                if kind == b"FWD":
                    x = _tensor(frames[2].buffer, (1, h["t"], model.args.dim))
                    model.forward_layers(x, h["start"])
                elif kind == b"CACHE":
                    model.setup_cache(h["n"])
                elif kind == b"BYE":
                    comm.close()
                    return 0
            except TensorParallelError as exc:
                print(f"ark llm tp rank {rank}: {exc}", file=sys.stderr)
                return 2


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.llm.tp", description="tensor-parallel worker (started by the master)")
    p.add_argument("--connect", required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    return worker_main(a.connect, a.rank, a.threads)


if __name__ == "__main__":
    sys.exit(main())
