"""Federated learning: strategies, checkpoints, validation, compression, hierarchy, simulation, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.fl.asynchronous import FedBuff, FedCompass
from edge.fl.client import ClientUpdate, local_sgd
from edge.fl.compression import CompressionConfig, CompressionError, Compressor, decode, encode
from edge.fl.errors import CheckpointError, FLConfigError
from edge.fl.hierarchy import SharedMemoryAggregators, hierarchical_mean
from edge.fl.partition import Participation, dirichlet_partition
from edge.fl.robust import coordinate_median, trimmed_mean
from edge.fl.server import FLServer
from edge.fl.simulation import SYNC_STRATEGIES, SimConfig, build_fleet, make_strategy, simulate, train_clients
from edge.fl.strategy import FedAU, Strategy

SYNC = sorted(SYNC_STRATEGIES)


def blobs(**kw) -> SimConfig:
    base = dict(task="blobs", hidden=16, clients=8, alpha=0.3, rounds=8, local_steps=5, batch_size=16, lr=0.1,
                participation={"kind": "uniform", "fraction": 0.5})
    base.update(kw)
    return SimConfig(**base)


# ----- strategies ----------------------------------------------------------------------------------
def test_fedavg_folds_updates_as_they_arrive_into_the_example_weighted_mean() -> None:
    s = Strategy(np.zeros(3, np.float32), server_lr=1.0)
    s.accept(ClientUpdate("a", 0, np.array([1.0, 0.0, 0.0], np.float32), num_examples=1))
    s.accept(ClientUpdate("b", 0, np.array([0.0, 4.0, 0.0], np.float32), num_examples=3))
    assert s.pending == ["a", "b"]
    s.aggregate()
    np.testing.assert_allclose(s.params, [0.25, 3.0, 0.0], rtol=1e-6)
    assert s.round == 1 and s.pending == []


@pytest.mark.parametrize("name", SYNC)
def test_strategy_resumes_from_a_checkpoint_taken_mid_round(name: str, tmp_path: Path) -> None:
    """Save after some of a round's updates, restore into a fresh strategy: it ends exactly where the original does."""
    cfg = blobs()
    task, parts = build_fleet(cfg)
    names = [f"client-{i:04d}" for i in range(cfg.clients)]

    def run(strategy, rounds, save_at=None):
        for r in rounds:
            ids = [(r * 3 + k) % cfg.clients for k in range(4)]
            for j, i in enumerate(ids):
                ins = strategy.instructions(names[i])
                d, g = train_clients(task, parts, [i], strategy.params, [ins], cfg.local_steps, r, 0, 16,
                                     strategy.wants_grad_mean)
                strategy.accept(ClientUpdate(names[i], strategy.round, d[0], num_examples=len(parts[i]),
                                             steps=cfg.local_steps, lr=cfg.lr, grad_mean=None if g is None else g[0]))
                if save_at == (r, j):
                    strategy.save(tmp_path / "ckpt")
                    return strategy
            strategy.aggregate()
        return strategy

    def fresh():
        return make_strategy(name, task.init_params(0), names, lr=cfg.lr)

    full = run(fresh(), range(4))
    run(fresh(), range(4), save_at=(2, 1))
    resumed = fresh()
    resumed.restore(tmp_path / "ckpt")
    assert resumed.round == 2 and len(resumed.pending) == 2
    # finish round 2 from its third update, then round 3
    r = 2
    ids = [(r * 3 + k) % cfg.clients for k in range(4)]
    for i in ids[2:]:
        ins = resumed.instructions(names[i])
        d, g = train_clients(task, parts, [i], resumed.params, [ins], cfg.local_steps, r, 0, 16, resumed.wants_grad_mean)
        resumed.accept(ClientUpdate(names[i], resumed.round, d[0], num_examples=len(parts[i]), steps=cfg.local_steps,
                                    lr=cfg.lr, grad_mean=None if g is None else g[0]))
    resumed.aggregate()
    run(resumed, range(3, 4))
    np.testing.assert_allclose(resumed.params, full.params, rtol=1e-5, atol=1e-6)


def test_checkpoint_refuses_a_corrupt_file_and_another_strategy(tmp_path: Path) -> None:
    s = Strategy(np.ones(4, np.float32))
    s.save(tmp_path / "c")
    other = make_strategy("scaffold", np.ones(4, np.float32), ["a"], lr=0.1)
    with pytest.raises(FLConfigError, match="fedavg"):
        other.restore(tmp_path / "c")
    (arrays,) = (tmp_path / "c").glob("state*.safetensors")
    blob = arrays.read_bytes()
    arrays.write_bytes(blob[:-3] + b"xyz")
    with pytest.raises(CheckpointError, match="does not match"):
        s.restore(tmp_path / "c")


def test_a_save_interrupted_before_its_json_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    from edge.fl.checkpoint import load_state, save_state

    save_state(tmp_path, {"w": np.zeros(3, np.float32)}, {"round": 1})
    # a crash after the new arrays file was written but before state.json was replaced
    (tmp_path / "state-0123456789abcdef.safetensors").write_bytes(b"half of a newer checkpoint")
    arrays, meta = load_state(tmp_path)
    assert meta == {"round": 1} and arrays["w"].tolist() == [0, 0, 0]
    save_state(tmp_path, {"w": np.ones(3, np.float32)}, {"round": 2})  # the next save tidies up
    assert len(list(tmp_path.glob("state*.safetensors"))) == 1
    arrays, meta = load_state(tmp_path)
    assert meta == {"round": 2} and arrays["w"].tolist() == [1, 1, 1]


def test_momentum_and_control_variates_beat_fedavg_under_strong_label_skew() -> None:
    """Dirichlet alpha 0.1 on digits: SCAFFOLD-M and FedAvg-M end above FedAvg with the same seeds and budget."""
    common = dict(task="digits", clients=30, alpha=0.1, rounds=25, local_steps=10, lr=0.05,
                  participation={"kind": "uniform", "fraction": 0.2})
    acc = {s: simulate(SimConfig(strategy=s, **common)).final_accuracy for s in ("fedavg", "fedavgm", "scaffold_m")}
    assert acc["scaffold_m"] > acc["fedavg"] + 0.02
    assert acc["fedavgm"] > acc["fedavg"]


def test_fedau_learns_participation_intervals_it_was_never_told() -> None:
    rng = np.random.default_rng(0)
    p = np.array([0.9, 0.5, 0.25, 0.1])
    s = FedAU(np.zeros(1, np.float32), clients=["a", "b", "c", "d"], cutoff=100)
    for _ in range(800):
        for name, on in zip("abcd", rng.random(4) < p):
            if on:
                s.accept(ClientUpdate(name, s.round, np.zeros(1, np.float32)))
        s.aggregate()
    np.testing.assert_allclose(s.omega(), 1 / p, rtol=0.2)


def test_client_corrections_prox_scaffold_and_momentum() -> None:
    grad = lambda y, k: np.ones_like(y)  # noqa: E731
    x0 = np.zeros((1, 2), np.float32)
    plain, _ = local_sgd(grad, x0, 3, {"lr": 0.1})
    np.testing.assert_allclose(plain, -0.3)
    corrected, _ = local_sgd(grad, x0, 3, {"lr": 0.1, "correction": np.array([-1.0, 0.0], np.float32)})
    np.testing.assert_allclose(corrected[0], [0.0, -0.3], atol=1e-7)
    mom, _ = local_sgd(grad, x0, 2, {"lr": 0.1, "momentum": np.array([3.0, 3.0], np.float32), "beta": 0.5})
    np.testing.assert_allclose(mom, -0.4)
    prox, _ = local_sgd(grad, x0, 50, {"lr": 0.1, "prox_mu": 1.0})
    assert -1.05 < prox[0, 0] < -0.95  # the proximal term pulls back: y settles where g + mu*y = 0
    steps, gm = local_sgd(grad, np.zeros((2, 1), np.float32), np.array([1, 4]), {"lr": 1.0}, want_grad_mean=True)
    np.testing.assert_allclose(steps[:, 0], [-1, -4])
    np.testing.assert_allclose(gm, 1.0)


# ----- robust aggregation and validation ------------------------------------------------------------
def test_median_and_trimmed_mean_ignore_one_attacker() -> None:
    honest = np.random.default_rng(0).normal(1.0, 0.1, size=(6, 5)).astype(np.float32)
    stacked = np.vstack([honest, np.full((1, 5), 1e4, np.float32)])
    assert np.abs(coordinate_median(stacked) - 1).max() < 0.2
    assert np.abs(trimmed_mean(stacked, 0.1) - 1).max() < 0.2
    assert stacked.mean(0).min() > 1000
    s = make_strategy("fedavg", np.zeros(5, np.float32), None, lr=0.1, robust="median")
    for i, row in enumerate(stacked):
        s.accept(ClientUpdate(f"c{i}", 0, row))
    assert np.abs(s.aggregate() - 1).max() < 0.2


def test_server_rejects_bad_updates_with_a_reason_and_the_round_completes(caplog) -> None:
    names = ["a", "b", "c", "d"]
    s = Strategy(np.zeros(4, np.float32), clients=names)
    srv = FLServer(s, rounds=3, clients_per_round=3, min_updates=1, round_timeout_s=1e9, max_norm=100.0,
                   evaluate=lambda p: 0.0)
    good = lambda v: np.full(4, v, np.float32)  # noqa: E731
    assert srv.submit("a", 0, delta=good(1), nonce="n1") == (True, "accepted")
    cases = {
        "wrong shape": dict(client="b", delta=np.ones(5, np.float32)),
        "non-finite": dict(client="b", delta=np.array([1, np.nan, 0, 0], np.float32)),
        "exceeds the bound": dict(client="b", delta=good(1e3)),
        "duplicate": dict(client="a", delta=good(1), nonce="n2"),
        "replayed": dict(client="c", delta=good(1), nonce="n1"),
        "unknown client": dict(client="mallory", delta=good(1)),
        "future": dict(client="b", delta=good(1), round_=5),
    }
    for reason, kw in cases.items():
        ok, why = srv.submit(kw["client"], kw.get("round_", 0), delta=kw["delta"], nonce=kw.get("nonce", ""))
        assert not ok and reason in why, (reason, why)
    assert srv.round == 0
    assert srv.submit("b", 0, delta=good(2))[0]
    assert srv.submit("c", 0, delta=good(3))[0]
    assert srv.round == 1  # closed with the three good updates
    np.testing.assert_allclose(s.params, 2.0)
    ok, why = srv.submit("d", 0, delta=good(1))
    assert not ok and "stale round 0" in why
    ok, why = srv.submit("d", 1, blob=b"garbage")
    assert not ok and "header" in why
    assert "rejected update from b" in caplog.text
    assert sum(srv.validator.rejected.values()) == 9


def test_round_closes_at_its_timeout_with_the_clients_that_answered() -> None:
    now = [0.0]
    s = Strategy(np.zeros(2, np.float32), clients=["a", "b", "c"])
    srv = FLServer(s, rounds=2, clients_per_round=3, min_updates=1, round_timeout_s=10, clock=lambda: now[0])
    assert not srv.tick()
    srv.submit("a", 0, delta=np.ones(2, np.float32))
    now[0] = 11.0
    assert srv.tick() and srv.round == 1
    np.testing.assert_allclose(s.params, 1.0)
    assert srv.task_for("a")["status"] == "train"
    assert srv.task_for("zed")["status"] == "refused"


# ----- compression -----------------------------------------------------------------------------------
def test_topk_kmeans_update_is_over_100x_smaller_and_keeps_the_largest_coordinates() -> None:
    v = np.random.default_rng(1).normal(size=200_000).astype(np.float32)
    blob = encode(v, CompressionConfig(topk=0.01, quant="kmeans", clusters=16))
    assert len(blob) * 100 < v.nbytes
    out = decode(blob)
    kept = np.flatnonzero(out)
    assert kept.size == 2000
    assert set(kept) == set(np.argsort(-np.abs(v))[:2000])
    assert np.all(np.sign(out[kept]) == np.sign(v[kept]))
    u = decode(encode(v, CompressionConfig(topk=None, quant="uniform", bits=8)))
    assert np.abs(u - v).max() <= (v.max() - v.min()) / 255 / 2 + 1e-5
    np.testing.assert_array_equal(decode(encode(v, CompressionConfig(topk=0.3, quant="none")))[kept], v[kept])


def test_corrupt_compressed_updates_raise_one_error_type() -> None:
    blob = encode(np.arange(100, dtype=np.float32), CompressionConfig(topk=0.1))
    for bad in (blob[:10], blob[:-4], b"XXXX" + blob[4:], blob[:30] + bytes(len(blob) - 30)):
        with pytest.raises(CompressionError):
            decode(bad)


def test_error_feedback_delivers_what_compression_dropped_later() -> None:
    v = np.random.default_rng(2).normal(size=1000).astype(np.float32)
    comp = Compressor(CompressionConfig(topk=0.05, quant="kmeans", error_feedback=True))
    received = sum(comp.roundtrip(v, "a")[0] for _ in range(40))
    # Everything sent is delivered, up to what is still in the residual (bounded, not growing).
    np.testing.assert_allclose(received + comp.residual["a"], 40 * v, rtol=1e-3, atol=1e-3)
    no_ef = Compressor(CompressionConfig(topk=0.05, quant="kmeans", error_feedback=False))
    lost = 40 * v - sum(no_ef.roundtrip(v, "a")[0] for _ in range(40))
    assert np.linalg.norm(40 * v - received) < 0.5 * np.linalg.norm(lost)


def test_compressed_simulation_sends_far_fewer_bytes_and_still_learns() -> None:
    plain = simulate(blobs(rounds=25))
    small = simulate(blobs(rounds=25, compression={"topk": 0.05, "quant": "kmeans", "clusters": 8}))
    assert small.bytes_up * 15 < plain.bytes_up  # tiny model: the ~60-byte header and codebook weigh in
    assert small.final_accuracy > plain.final_accuracy - 0.1


# ----- hierarchy ---------------------------------------------------------------------------------------
def test_hierarchical_and_shared_memory_aggregation_equal_the_flat_weighted_mean() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(size=(10, 500)).astype(np.float32)
    w = rng.uniform(1, 4, 10)
    flat = (w[:, None] * d).sum(0) / w.sum()
    np.testing.assert_allclose(hierarchical_mean(d, w, 3), flat, rtol=1e-5, atol=1e-6)
    with SharedMemoryAggregators(2, 500, 10) as agg:
        for i in range(10):
            agg.put(i, d[i], w[i])
        np.testing.assert_allclose(agg.aggregate(10), flat, rtol=1e-5, atol=1e-6)
        names = [agg._shm_pool.name, agg._shm_slots.name]
    for name in names:
        assert not Path("/dev/shm", name.lstrip("/")).exists()  # unlinked on close


# ----- simulation ------------------------------------------------------------------------------------
def test_simulation_is_deterministic_and_independent_of_client_batching() -> None:
    a = simulate(blobs(strategy="scaffold", chunk=64))
    b = simulate(blobs(strategy="scaffold", chunk=3))
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5, atol=1e-6)
    assert a.history == b.history
    assert a.final_accuracy > 0.6


def test_partitions_and_participation_patterns() -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_partition(labels, 10, 0.1, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(500))
    classes_per_client = [len(np.unique(labels[p])) for p in parts]
    assert np.mean(classes_per_client) < 6  # strong skew at alpha 0.1
    cyc = Participation(kind="cyclic", groups=4, fraction=1.0)
    assert all(set(cyc.sample(r, 12, 0) % 4) == {r % 4} for r in range(8))
    het = Participation(kind="heterogeneous", p_low=0.0, p_high=0.05)
    assert all(len(het.sample(r, 5, 0)) >= 1 for r in range(20))
    with pytest.raises(FLConfigError, match="participation.kind"):
        Participation(kind="sometimes")


def test_fedcompass_gives_fast_clients_more_steps_and_beats_sync_fedavg_in_simulated_time() -> None:
    common = dict(clients=8, alpha=0.5, local_steps=20, speed_spread=1.2, time_budget=30.0, max_updates=100,
                  target_accuracy=0.8, eval_every=1)
    sync = simulate(blobs(strategy="fedavg_sync", **common))
    compass_cfg = blobs(strategy="fedcompass", strategy_args={"q_min": 5, "q_max": 40}, **common)
    compass = simulate(compass_cfg)
    assert compass.time_to_target is not None and sync.time_to_target is not None
    assert compass.time_to_target < sync.time_to_target
    # The scheduler itself: after the probe round, a client twice as slow gets half the local steps, so
    # both land in one arrival group and are aggregated together.
    s = FedCompass(np.zeros(2, np.float32), q_min=5, q_max=40, lam=0.5)
    s.start({"fast": 1, "slow": 1}, 0.0)
    assert s.on_update(ClientUpdate("fast", 0, np.zeros(2, np.float32)), 0.05) == []  # 5 steps: 10 ms/step
    out = s.on_update(ClientUpdate("slow", 0, np.zeros(2, np.float32)), 0.10)         # 5 steps: 20 ms/step
    assert {a.client: a.steps for a in out} == {"fast": 40, "slow": 20}
    assert s.member_of["fast"] == s.member_of["slow"] and s.version == 1
    s.on_update(ClientUpdate("slow", 1, np.ones(2, np.float32)), 0.50)
    assert s.version == 1  # waits for its group
    s.on_update(ClientUpdate("fast", 1, np.ones(2, np.float32)), 0.51)
    assert s.version == 2


def test_async_strategy_checkpoint_round_trip(tmp_path: Path) -> None:
    for cls in (FedBuff, FedCompass):
        s = cls(np.zeros(3, np.float32))
        s.start({"a": 2, "b": 1}, 0.0)
        s.on_update(ClientUpdate("a", 0, np.ones(3, np.float32), num_examples=2), 1.0)
        s.save(tmp_path / cls.name)
        t = cls(np.zeros(3, np.float32))
        t.restore(tmp_path / cls.name)
        for x in (s, t):
            x.on_update(ClientUpdate("b", 0, np.full(3, 2.0, np.float32)), 2.0)
        np.testing.assert_allclose(s.params, t.params)
        assert s.version == t.version and s.dispatched == t.dispatched


# ----- CLI -------------------------------------------------------------------------------------------
def test_cli_simulate_prints_round_accuracy_and_bytes(capsys, tmp_path: Path) -> None:
    from ark.cli import main

    out_json = tmp_path / "r.json"
    assert main(["fl", "simulate", "blobs", "--rounds", "3", "--strategy", "fedprox", "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("round 1/3  accuracy 0.") and "bytes sent" in lines[0]
    assert lines[-1].startswith("fedprox on blobs: accuracy")
    assert len(json.loads(out_json.read_text())["history"]) == 3
    assert main(["fl", "simulate", "blobs", "--strategy", "fedmagic"]) == 2
    assert "strategy" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: blobs\nrounds: -1\n")
    assert main(["fl", "simulate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "rounds" in err and "Traceback" not in err
