"""Split-DNN end to end on a tiny rendered dataset: data, training, checkpoints, ONNX export, and the
head, link and tail nodes over real Ark channels (loopback/ipc), including bad input."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
import torch

from ark.messages import Image
from ark.node import Node
from edge.split import checkpoint, config, dataset, onnx_export, train
from edge.split.codec import LatentCodec
from edge.split.errors import SplitError
from edge.split.link import LinkEmulator
from edge.split.models import Student, preprocess
from edge.split.nodes import Feedback, Latent, Output, SplitHeadNode, SplitTailNode
from conftest import wait_until


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The tiny recipe's dataset and a checkpoint trained on it (a few seconds)."""
    root = tmp_path_factory.mktemp("split")
    cfg = config.load("tiny")
    dataset.write(cfg.data, root / "data", progress=False)
    metrics = train.train(cfg, root / "data", root / "model", progress=False)
    return {"cfg": cfg, "data": root / "data", "model_dir": root / "model", "model": checkpoint.load(root / "model"),
            "metrics": metrics, "test": dataset.read(root / "data", "test"), "root": root}


def test_frames_are_reproducible_from_seeds() -> None:
    cfg = config.DataConfig(size=32, seed=3, empty_fraction=0.3)
    r = dataset.SceneRenderer(32)
    try:
        a = list(dataset.frames(cfg, "train", 3, renderer=r))
        b = list(dataset.frames(cfg, "train", 1, start=2, renderer=r))  # frame 2 alone, after others
        other = list(dataset.frames(config.DataConfig(size=32, seed=4), "train", 1, renderer=r))
        val = list(dataset.frames(cfg, "val", 1, renderer=r))
    finally:
        r.close()
    np.testing.assert_array_equal(a[2][0], b[0][0])
    assert a[2][1:3] == b[0][1:3]
    assert not np.array_equal(a[0][0], other[0][0]) and not np.array_equal(a[0][0], val[0][0])
    with pytest.raises(SplitError, match="unknown split 'dev'"):
        next(dataset.frames(cfg, "dev", 1))


def test_dataset_files_hold_consistent_labels(tiny) -> None:
    s = dataset.read(tiny["data"], "train")
    assert s.images.shape == (40, 32, 32, 3) and s.images.dtype == np.uint8
    assert np.array_equal(s.present, s.shape >= 0) and np.array_equal(s.present, s.colour >= 0)
    assert 0 < (~s.present).sum() < 20  # some empty frames, mostly objects
    obj = s.objects()
    assert np.all((obj.position >= dataset.AREA_LOW) & (obj.position <= dataset.AREA_HIGH))
    # Frames with an object differ from the scene without one (the object is visible).
    assert np.abs(obj.images.astype(int) - obj.images.mean(axis=(1, 2), keepdims=True)).max() > 40
    with pytest.raises(SplitError, match="no such file"):
        dataset.read(tiny["root"], "train")


def test_checkpoint_round_trips_and_records_every_width_and_bit_depth(tiny) -> None:
    m = tiny["model"]
    assert m.channels == [2, 4, 8]
    meta = json.loads((tiny["model_dir"] / "model.json").read_text())
    assert meta["fingerprint"] == m.fingerprint.hex()
    assert set(tiny["metrics"]["student"]) == {f"w{k}_c{c}_{b}" for k, c in enumerate([2, 4, 8])
                                               for b in ("float", "2bit", "4bit", "8bit")}
    assert 0.0 <= tiny["metrics"]["filter_acc"] <= 1.0
    # The same weights give the same outputs after loading.
    x = preprocess(tiny["test"].images[:4])
    with torch.no_grad():
        again = checkpoint.load(tiny["model_dir"])
        assert torch.equal(again.student(x, 1, 4)["position"], m.student(x, 1, 4)["position"])


def test_head_distillation_moves_student_features_to_the_teachers(tiny) -> None:
    m, cfg = tiny["model"], tiny["cfg"]
    objects = dataset.read(tiny["data"], "train").objects()
    x = preprocess(objects.images)
    torch.manual_seed(5)
    before = Student(cfg.model)  # what distill() starts from: the same draw, the teacher's stem in the head
    before.head.body.load_state_dict(m.teacher.stem.state_dict())
    torch.manual_seed(5)
    after = train.distill(cfg, m.teacher, objects, progress=False)

    def err(s: Student, k: int) -> float:
        s.train()  # batch statistics: the untrained student has no running ones
        with torch.no_grad():
            return float(torch.mean((s.tail.decoder(s.head(x, k), k) - m.teacher.features(x)) ** 2))

    for k in (0, 2):
        assert err(after, k) < 0.8 * err(before, k)


def test_damaged_checkpoints_are_refused_with_one_line(tiny, tmp_path) -> None:
    with pytest.raises(SplitError, match="not a split checkpoint"):
        checkpoint.load(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = json.loads((tiny["model_dir"] / "model.json").read_text())
    meta["fingerprint"] = "00" * 8
    (bad / "model.json").write_text(json.dumps(meta))
    (bad / "model.safetensors").write_bytes((tiny["model_dir"] / "model.safetensors").read_bytes())
    with pytest.raises(SplitError, match="weights changed since model.json was written"):
        checkpoint.load(bad)


def test_onnx_head_matches_pytorch_at_every_width(tiny, tmp_path) -> None:
    m = tiny["model"]
    onnx_export.export(m, tmp_path)
    err = onnx_export.parity(m, tmp_path, tiny["test"].images[:5])
    assert set(err) == {"latent_w0", "latent_w1", "latent_w2", "filter"}
    assert max(err.values()) < 1e-4, err
    # One session serves every width: the latent has that width's channels.
    head = onnx_export.OnnxHead(tmp_path)
    assert [head.latent(tiny["test"].images[:2], k).shape[1] for k in range(3)] == [2, 4, 8]


# -- nodes over real channels --------------------------------------------------------------------
def other_checkpoint(model: checkpoint.SplitModel) -> checkpoint.SplitModel:
    """The same network with one weight changed: a different checkpoint with another fingerprint."""
    student = copy.deepcopy(model.student)
    with torch.no_grad():
        student.head.bottleneck.weight[0, 0, 0, 0] += 0.1
    return checkpoint.SplitModel(model.config, model.teacher, student, checkpoint.fingerprint(student))


def offline(model: checkpoint.SplitModel, image: np.ndarray, k: int, bits: int) -> tuple[str, str, bytes]:
    codec = LatentCodec.for_model(model)
    with torch.no_grad():
        packet = codec.encode(model.student.head(preprocess(image), k)[0].numpy(), k, bits)
        dec = codec.decode(packet)
        out = model.student.tail(torch.from_numpy(dec.latent)[None], k)
    return config.SHAPES[int(out["shape"].argmax())], config.COLOURS[int(out["colour"].argmax())], packet


def test_head_link_tail_nodes_deliver_the_offline_result(tiny, cfg) -> None:
    m, test = tiny["model"], tiny["test"]
    head = SplitHeadNode("head", config=cfg, model=m, params={"out_topic": "/tx", "width": 1, "bits": 2,
                                                              "filter_threshold": 0}).start()
    link = LinkEmulator("link", config=cfg, params={"in_topic": "/tx", "out_topic": "/split/latent",
                                                    "bandwidth_bps": 2e6, "latency_ms": 1}).start()
    tail = SplitTailNode("tail", config=cfg, model=m).start()
    cam = Node("cam", config=cfg).start()
    pub = cam.publisher("/camera/rgb", Image)
    outs: list[Output] = []
    cam.subscriber("/split/output", Output, outs.append, queue=100)
    assert wait_until(lambda: head.subscribers[-1].connected and link.subscribers[0].connected
                      and tail.subscribers[0].connected and cam.subscribers[0].connected)
    for i in range(4):
        pub.publish(Image(test.images[i].copy()), stamp_ns=1000 + i)
        time.sleep(0.02)
    assert wait_until(lambda: len(outs) == 4, timeout=10)
    for i, o in enumerate(outs):
        shape, colour, packet = offline(m, test.images[i], 1, 2)
        assert (o.frame_seq, o.shape, o.colour, o.width, o.bits) == (i + 1, shape, colour, 1, 2)
        assert o.packet_bytes == len(packet)
        assert {"preprocess_ms", "head_ms", "encode_ms", "decode_ms", "tail_ms"} <= set(o.timings)
    assert link.sent == 4 and tail.rejected.total == 0


def test_tail_drops_bad_packets_with_clear_errors_and_keeps_running(tiny, cfg) -> None:
    m = tiny["model"]
    tail = SplitTailNode("tail", config=cfg, model=m, params={"feedback_topic": ""}).start()
    src = Node("src", config=cfg).start()
    pub = src.publisher("/split/latent", Latent)
    outs: list[Output] = []
    src.subscriber("/split/output", Output, outs.append, queue=100)
    assert wait_until(lambda: tail.subscribers[0].connected and src.subscribers[0].connected)
    _, _, good = offline(m, tiny["test"].images[0], 2, 4)
    foreign = offline(other_checkpoint(m), tiny["test"].images[0], 2, 4)[2]
    import struct
    import zlib

    def reseal(offset: int, value: int) -> bytes:
        b = bytearray(good[:-4])
        b[offset] = value
        return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)))

    bad = {"shape": reseal(6, 5), "bits": reseal(5, 3), "width": reseal(4, 9),
           "corrupt": good[:30] + bytes([good[30] ^ 0x55]) + good[31:], "fingerprint": foreign}
    for i, packet in enumerate(bad.values()):
        pub.publish(Latent(np.frombuffer(packet, np.uint8), frame_seq=i))
    assert wait_until(lambda: tail.rejected.total == 5, timeout=10)
    pub.publish(Latent(np.frombuffer(good, np.uint8), frame_seq=99))
    assert wait_until(lambda: len(outs) == 1, timeout=10)
    assert outs[0].frame_seq == 99 and tail.processed == 1
    assert tail.rejected.counts == {"PacketError": 4, "FingerprintMismatch": 1}
    assert "different checkpoints" in tail.last_error and "\n" not in tail.last_error


def test_head_drops_bad_frames_and_widths_and_filters_by_threshold(tiny, cfg) -> None:
    m, test = tiny["model"], tiny["test"]
    with torch.no_grad():
        p = torch.sigmoid(m.student.filter(preprocess(test.images))).numpy()
    threshold = float(np.median(p))
    head = SplitHeadNode("head", config=cfg, model=m, params={"filter_threshold": threshold, "queue": 64}).start()
    cam = Node("cam", config=cfg).start()
    pub = cam.publisher("/camera/rgb", Image)
    got: list[Latent] = []
    cam.subscriber("/split/latent", Latent, got.append, queue=100)
    assert wait_until(lambda: head.subscribers[-1].connected and cam.subscribers[0].connected)
    pub.publish(Image(np.zeros((32, 32), np.uint8), encoding="mono8"))
    head.set_param("width", 7)
    pub.publish(Image(test.images[0].copy()))
    assert wait_until(lambda: head.rejected.total == 2)
    assert "expected an rgb8/bgr8" in next(iter(head.rejected.last.splitlines())) or "width index 7" in head.rejected.last
    head.set_param("width", 0)
    for img in test.images:
        pub.publish(Image(img.copy()))
    n = len(test)
    assert wait_until(lambda: head.sent + head.filtered == n, timeout=10)
    assert head.filtered == int(np.sum(p < threshold)) and head.sent == int(np.sum(p >= threshold))
    # A 64x64 bgr8 frame is resized and reordered rather than refused.
    pub.publish(Image(np.zeros((64, 64, 3), np.uint8), encoding="bgr8"))
    assert wait_until(lambda: head.sent + head.filtered == n + 1)
    with pytest.raises(IndexError):
        head.set_width(3)


def test_head_controller_narrows_the_width_when_feedback_shows_a_slow_link(tiny, cfg) -> None:
    m, test = tiny["model"], tiny["test"]
    head = SplitHeadNode("head", config=cfg, model=m, params={"filter_threshold": 0, "budget_ms": 6.0,
                                                              "compute_ms": [1.0, 1.0, 1.0]}).start()
    head.controller.probe_every = 0
    cam = Node("cam", config=cfg).start()
    img_pub = cam.publisher("/camera/rgb", Image)
    fb_pub = cam.publisher("/split/feedback", Feedback)
    got: list[Latent] = []
    cam.subscriber("/split/latent", Latent, got.append, queue=100)
    assert wait_until(lambda: len(head.subscribers) == 2 and all(s.connected for s in head.subscribers)
                      and cam.subscribers[0].connected)
    sizes = head.controller.packet_bytes

    def link(mbit: float) -> None:  # feedback as a link of this rate with 1 ms latency would give
        for i in range(64):  # enough for the controller's median over its recent fits to follow
            b = sizes[i % 3]
            fb_pub.publish(Feedback(i, int(b), 0.001 + 8 * b / (mbit * 1e6)))

    def width_after(mbit: float) -> int:
        link(mbit)
        want = len(got) + 1
        assert wait_until(lambda: abs(head.controller.estimate.bandwidth_bps - mbit * 1e6) < 0.1 * mbit * 1e6)
        img_pub.publish(Image(test.images[0].copy()))
        assert wait_until(lambda: len(got) == want)
        return LatentCodec.for_model(m).decode(got[-1].packet.tobytes()).width

    assert width_after(0.3) == 0
    assert width_after(50.0) == 2


def test_link_emulator_delays_by_size_and_loses_reproducibly(cfg) -> None:
    link = LinkEmulator("link", config=cfg, params={"in_topic": "/a", "out_topic": "/b", "schema": "split/Latent",
                                                    "bandwidth_bps": 1e5, "latency_ms": 20, "loss": 0.5, "seed": 7}).start()
    n = Node("ends", config=cfg).start()
    pub = n.publisher("/a", Latent)
    arrivals: list[tuple[int, float]] = []
    n.subscriber("/b", Latent, lambda m: arrivals.append((m.frame_seq, time.monotonic())), queue=100)
    assert wait_until(lambda: link.subscribers[0].connected and n.subscribers[0].connected)
    sent = time.monotonic()
    for i in range(10):
        pub.publish(Latent(np.zeros(1000, np.uint8), frame_seq=i))
    expected_lost = int(np.sum(np.random.default_rng(7).random(10) < 0.5))
    assert wait_until(lambda: len(arrivals) == 10 - expected_lost, timeout=10)
    assert link.lost == expected_lost
    # Queued behind each other at 100 kbit/s: the k-th delivered message left after k transmissions.
    for k, (_, t) in enumerate(sorted(arrivals, key=lambda a: a[1]), start=1):
        assert t - sent >= 0.020 + k * 8 * 1000 / 1e5
    assert [s for s, _ in arrivals] == sorted(s for s, _ in arrivals)


# -- command line ---------------------------------------------------------------------------------
def test_cli_runs_the_pipeline_and_reports_one_line_errors(tiny, cfg, monkeypatch, capsys, tmp_path) -> None:
    from edge.split.cli import main

    monkeypatch.setenv("ARK_REGISTRY", cfg.registry)
    monkeypatch.setenv("ARK_IPC_DIR", str(cfg.ipc_dir))
    assert main(["run", "--model", str(tiny["model_dir"]), "--data", str(tiny["data"]), "--frames", "6",
                 "--rate", "50", "--link", "1", "--filter-threshold", "0", "--width", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outputs"] == 6 and summary["widths_used"] == [0] and summary["rejected"] == {}
    assert main(["export", "--model", str(tiny["model_dir"]), "--out", str(tmp_path / "onnx")]) == 0
    assert "max |ONNX - PyTorch|" in capsys.readouterr().out
    assert main(["data", "--config", "tiny", "--out", str(tmp_path / "d"), "--n-train", "2", "--n-val", "1",
                 "--n-test", "1", "--quiet"]) == 0
    assert "wrote 2/1/1 frames of 32x32" in capsys.readouterr().out
    assert dataset.read(tmp_path / "d", "train").images.shape == (2, 32, 32, 3)
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "ark split data" in err and len(err.strip().splitlines()) == 1
