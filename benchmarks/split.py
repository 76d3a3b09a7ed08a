"""Split-DNN encoders: rate-accuracy against JPEG/WebP, head/tail latency, and capture-to-output
delay through Ark nodes over emulated links (issue 5).

    python benchmarks/split.py                      # default recipe: renders data and trains if missing
    python benchmarks/split.py --quick              # tiny recipe: checks the pipeline only
    ark split bench -- --data runs/split/data --model runs/split/model

1. **Rate-accuracy** on the test split's object frames: every width x bit depth of the
   slimmable head (exact packet bytes per frame: header, zstd'd codes, CRC), beside JPEG and
   WebP (OpenCV encoders, quality sweep) and lossless PNG of the input frame with the teacher
   on the decoded frame, and the uncompressed teacher. Headline: the fewest split bytes per
   frame whose accuracy reaches JPEG q=90's (same test frames, same teacher).
2. **Latency** on this CPU, one frame, one thread, median of many runs: preprocessing, frame
   filter, head (PyTorch and ONNX Runtime) per width, latent coding per bit depth, tail per
   width, Ark message serialisation, JPEG encode/decode, the whole teacher (PyTorch and ONNX
   Runtime), and the time to switch width.
3. **Capture-to-output delay** through real Ark nodes (one process, loopback ipc) at 1, 5 and
   25 Mbit/s with 2 ms one-way latency, for three deployments: split (SplitHeadNode ->
   LinkEmulator -> SplitTailNode), JPEG q=90 frames to the server (teacher there), and the
   whole teacher on the device (only the result crosses the link); with a breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ark.config import ArkConfig  # noqa: E402
from ark.messages import Image, array, message  # noqa: E402
from ark.node import Node, shutdown_all  # noqa: E402
from ark.wire import MessageInfo, encode  # noqa: E402
from edge.split import checkpoint, config, dataset, onnx_export, train  # noqa: E402
from edge.split.codec import LatentCodec  # noqa: E402
from edge.split.config import COLOURS, SHAPES  # noqa: E402
from edge.split.link import LinkEmulator  # noqa: E402
from edge.split.models import preprocess  # noqa: E402
from edge.split.nodes import Latent, Output, SplitHeadNode, SplitTailNode  # noqa: E402


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return (f"{os.cpu_count()} cores ({cpu}), shared with other jobs; Python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, OpenCV {cv2.__version__}")


# -- 1. rate-accuracy --------------------------------------------------------------------------
def teacher_on(model: checkpoint.SplitModel, images: np.ndarray, split: dataset.Split) -> dict[str, float]:
    return train.task_metrics(train.predict(model.teacher, images), split)


def codec_sweep(model, split, kind: str, qualities: list[int]) -> list[dict[str, Any]]:
    rows = []
    for q in qualities:
        if kind == "JPEG":
            ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, q]
        elif kind == "WebP":
            ext, params = ".webp", [cv2.IMWRITE_WEBP_QUALITY, q]
        else:
            ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 9]
        sizes, decoded = [], []
        for img in split.images:
            ok, buf = cv2.imencode(ext, np.ascontiguousarray(img[:, :, ::-1]), params)
            sizes.append(len(buf))
            decoded.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
        m = teacher_on(model, np.ascontiguousarray(np.stack(decoded)), split)
        rows.append({"method": f"{kind} q={q}" if kind != "PNG" else "PNG (lossless)", "bytes": float(np.mean(sizes)), **m})
    return rows


def split_sweep(model, split, bits_list=(2, 4, 8)) -> list[dict[str, Any]]:
    codec = LatentCodec.for_model(model)
    rows = []
    x = preprocess(split.images)
    with torch.no_grad():
        for k, c in enumerate(model.channels):
            z = model.student.head(x, k).numpy()
            for bits in bits_list:
                packets = [codec.encode(zi, k, bits) for zi in z]
                zq = np.stack([codec.decode(p).latent for p in packets])
                parts: dict[str, list] = {}
                for i in range(0, len(zq), 256):
                    for key, v in model.student.tail(torch.from_numpy(zq[i:i + 256]), k).items():
                        parts.setdefault(key, []).append(v.numpy())
                out = {key: np.concatenate(v) for key, v in parts.items()}
                m = train.task_metrics(out, split)
                rows.append({"method": f"split w={model.config.model.widths[k]:.0%} ({c} ch) {bits}-bit", "width": k,
                             "channels": c, "bits": bits, "bytes": float(np.mean([len(p) for p in packets])), **m})
    return rows


# -- 2. latency --------------------------------------------------------------------------------
def timeit(fn: Callable[[], Any], n: int) -> float:
    """Median ms of ``fn`` over ``n`` runs after 10 warm-up runs."""
    for _ in range(10):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


def export_teacher(model, path: Path) -> Any:
    import onnxruntime as ort

    class T(torch.nn.Module):
        def __init__(self, t):
            super().__init__()
            self.t = t

        def forward(self, frames):
            o = self.t(onnx_export._preprocess(frames))
            return o["shape"], o["colour"], o["position"]

    s = model.config.data.size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(T(model.teacher).eval(), (torch.zeros(1, s, s, 3, dtype=torch.uint8),), str(path),
                          input_names=["frames"], output_names=["shape", "colour", "position"],
                          opset_version=onnx_export.OPSET, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latency_table(model, split, onnx_dir: Path, n: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    img = np.ascontiguousarray(split.images[:1])
    x = preprocess(img)
    head, tail, filt = model.student.head, model.student.tail, model.student.filter
    ort_head = onnx_export.OnnxHead(onnx_dir, threads=1)
    teacher_ort = export_teacher(model, onnx_dir / "teacher.onnx")
    codec = LatentCodec.for_model(model)
    out: dict[str, Any] = {"per_width": [], "per_bits": []}
    with torch.inference_mode():
        out["preprocess_ms"] = timeit(lambda: preprocess(img), n)
        out["filter_torch_ms"] = timeit(lambda: filt(x), n)
        out["filter_onnx_ms"] = timeit(lambda: ort_head.filter_logit(img), n)
        out["teacher_torch_ms"] = timeit(lambda: model.teacher(x), n)
        out["teacher_onnx_ms"] = timeit(lambda: teacher_ort.run(None, {"frames": img}), n)
        for k, c in enumerate(model.channels):
            z = head(x, k)
            out["per_width"].append({"width": k, "channels": c,
                                     "head_torch_ms": timeit(lambda: head(x, k), n),
                                     "head_onnx_ms": timeit(lambda: ort_head.latent(img, k), n),
                                     "tail_torch_ms": timeit(lambda: tail(z, k), n)})
        zf = head(x, len(model.channels) - 1)[0].numpy()
        k_max = len(model.channels) - 1
        for bits in (2, 4, 8):
            p = codec.encode(zf, k_max, bits)
            out["per_bits"].append({"bits": bits, "encode_ms": timeit(lambda: codec.encode(zf, k_max, bits), n),
                                    "decode_ms": timeit(lambda: codec.decode(p), n)})
        # Width switching: an attribute write; the first forward after a switch costs what any forward does.
        t = time.perf_counter()
        for i in range(10000):
            head.set_width(i % len(model.channels))
        out["switch_us"] = (time.perf_counter() - t) / 10000 * 1e6
        ts_switch, ts_same = [], []
        for i in range(200):
            head.set_width(i % len(model.channels))
            t = time.perf_counter()
            head(x)
            ts_switch.append(time.perf_counter() - t)
            t = time.perf_counter()
            head(x)
            ts_same.append(time.perf_counter() - t)
        out["forward_after_switch_ms"] = 1000 * float(np.median(ts_switch))
        out["forward_same_width_ms"] = 1000 * float(np.median(ts_same))
    rgb = np.ascontiguousarray(split.images[0][:, :, ::-1])
    buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    out["jpeg_encode_ms"] = timeit(lambda: cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90]), n)
    out["jpeg_decode_ms"] = timeit(lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR), n)
    out["webp_encode_ms"] = timeit(lambda: cv2.imencode(".webp", rgb, [cv2.IMWRITE_WEBP_QUALITY, 70]), n)
    lat = Latent(np.frombuffer(codec.encode(zf, k_max, 4), np.uint8), 1, 1, {"head_ms": 1.0})
    from ark.wire import decode as wdecode
    from ark.messages import schema_of

    def roundtrip(msg):
        frames = encode(b"/t", msg, 1, 1, "bench")
        wdecode([bytes(f) for f in frames], schema_of(msg), 1 << 30)

    out["serialise_latent_ms"] = timeit(lambda: roundtrip(lat), n)
    out["serialise_jpeg_ms"] = timeit(lambda: roundtrip(JpegFrame(np.frombuffer(buf.tobytes(), np.uint8), 1, {})), n)
    out["serialise_image_ms"] = timeit(lambda: roundtrip(Image(split.images[0])), n)
    return out


# -- 3. capture-to-output through nodes -------------------------------------------------------------
@message("bench/SplitJpeg")
@dataclass
class JpegFrame:
    """A JPEG-compressed camera frame (the send-frames-to-the-server baseline)."""

    data: np.ndarray = array("uint8", (None,))
    frame_seq: int = 0
    timings: dict = field(default_factory=dict)


class JpegDeviceNode(Node):
    """Device side of the JPEG baseline: encode each frame at quality ``quality`` and send it."""

    def __init__(self, name: str, *, config: ArkConfig, params: dict) -> None:
        super().__init__(name, config=config, params=params)
        self.q = int(self.param("quality", 90))
        self.pub = self.publisher(self.param("out_topic"), JpegFrame)
        self.subscriber("/camera/rgb", Image, self.on_frame, queue=100)

    def on_frame(self, msg: Image, info: MessageInfo) -> None:
        t = time.perf_counter()
        buf = cv2.imencode(".jpg", np.ascontiguousarray(msg.data[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, self.q])[1]
        self.pub.publish(JpegFrame(buf.ravel(), info.seq, {"encode_ms": (time.perf_counter() - t) * 1000}),
                         stamp_ns=info.stamp_ns)


class JpegServerNode(Node):
    """Server side of the JPEG baseline: decode and run the teacher."""

    def __init__(self, name: str, *, config: ArkConfig, params: dict, model) -> None:
        super().__init__(name, config=config, params=params)
        self.model = model
        self.pub = self.publisher("/split/output", Output)
        self.subscriber(self.param("in_topic"), JpegFrame, self.on_jpeg, queue=100)

    def on_jpeg(self, msg: JpegFrame, info: MessageInfo) -> None:
        timings = dict(msg.timings)
        t = time.perf_counter()
        img = cv2.imdecode(msg.data, cv2.IMREAD_COLOR)[:, :, ::-1]
        timings["decode_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        with torch.inference_mode():
            o = self.model.teacher(preprocess(np.ascontiguousarray(img)))
        timings["model_ms"] = (time.perf_counter() - t) * 1000
        self.pub.publish(_output(o, msg.frame_seq, len(msg.data), timings), stamp_ns=info.stamp_ns)


class DeviceModelNode(Node):
    """The whole teacher on the device: only the result crosses the link."""

    def __init__(self, name: str, *, config: ArkConfig, params: dict, model) -> None:
        super().__init__(name, config=config, params=params)
        self.model = model
        self.pub = self.publisher(self.param("out_topic"), Output)
        self.subscriber("/camera/rgb", Image, self.on_frame, queue=100)

    def on_frame(self, msg: Image, info: MessageInfo) -> None:
        t = time.perf_counter()
        x = preprocess(np.ascontiguousarray(msg.data))
        timings = {"preprocess_ms": (time.perf_counter() - t) * 1000}
        t = time.perf_counter()
        with torch.inference_mode():
            o = self.model.teacher(x)
        timings["model_ms"] = (time.perf_counter() - t) * 1000
        self.pub.publish(_output(o, info.seq, 0, timings), stamp_ns=info.stamp_ns)


def _output(o: dict, seq: int, nbytes: int, timings: dict) -> Output:
    s, c = int(o["shape"][0].argmax()), int(o["colour"][0].argmax())
    xy = dataset.denormalise_position(o["position"][0].numpy()).astype(np.float64)
    return Output(SHAPES[s], COLOURS[c], 1.0, xy, seq, 0, 0, nbytes, timings)


def run_pipeline(kind: str, model, split, mbit: float, frames: int, rate: float, cfg: ArkConfig,
                 width: int, bits: int, budget_ms: float = 10.0, compute_ms: list[float] | None = None) -> dict[str, Any]:
    """Publish ``frames`` test frames at ``rate`` Hz through one deployment; raw per-frame records."""
    results: dict[int, tuple[Output, int]] = {}
    wire: list[int] = []
    head = None
    try:
        if kind in ("split", "adaptive"):
            params = {"out_topic": "/tx", "width": width, "bits": bits, "filter_threshold": 0, "queue": 100}
            if kind == "adaptive":  # the width controller meets a delay budget from the tail's feedback
                params.update(budget_ms=budget_ms, compute_ms=compute_ms, bandwidth_bps=1e6)
            head = SplitHeadNode("dev", config=cfg, model=model, params=params).start()
            schema = "split/Latent"
            SplitTailNode("srv", config=cfg, model=model,
                          params={"in_topic": "/rx", "feedback_topic": "/split/feedback" if kind == "adaptive" else ""}).start()
        elif kind == "jpeg":
            JpegDeviceNode("dev", config=cfg, params={"out_topic": "/tx", "quality": 90}).start()
            schema = "bench/SplitJpeg"
            JpegServerNode("srv", config=cfg, params={"in_topic": "/rx"}, model=model).start()
        else:
            DeviceModelNode("dev", config=cfg, params={"out_topic": "/tx"}, model=model).start()
            schema = "split/Output"
        out_topic = "/rx" if kind == "device" else "/split/output"
        link = LinkEmulator("link", config=cfg, params={"in_topic": "/tx", "out_topic": "/rx", "schema": schema,
                                                        "bandwidth_bps": mbit * 1e6, "latency_ms": 2.0}).start()
        sink = Node("sink", config=cfg).start()
        cam = Node("camera", config=cfg).start()
        pub = cam.publisher("/camera/rgb", Image)
        sink.subscriber(out_topic, Output, lambda o, info: results.setdefault(o.frame_seq, (o, time.time_ns() - info.stamp_ns)),
                        queue=1000)
        sink.subscriber("/rx", None, lambda m, info: wire.append(info.nbytes), queue=1000)
        end = time.monotonic() + 5
        while time.monotonic() < end and not all(s.connected for n in (link, sink) for s in n.subscribers):
            time.sleep(0.01)
        time.sleep(0.3)
        for i in range(frames):
            pub.publish(Image(np.ascontiguousarray(split.images[i % len(split)])), stamp_ns=time.time_ns())
            time.sleep(1.0 / rate)
        end = time.monotonic() + 5
        while time.monotonic() < end and len(results) < frames:
            time.sleep(0.01)
    finally:
        shutdown_all()
    est = head.controller.estimate if head is not None and head.controller is not None else None
    return {"records": [(dict(o.timings), o.width, d / 1e6) for o, d in results.values()], "wire": wire,
            "estimate": (est.bandwidth_bps, est.latency_s) if est else None}


def summarise(kind: str, mbit: float, raws: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the rounds of one deployment and link rate: medians, breakdown, widths used."""
    recs = [r for raw in raws for r in raw["records"]]
    wire = [w for raw in raws for w in raw["wire"]]
    delays = np.array([d for _, _, d in recs])
    keys = sorted({k for t, _, _ in recs for k in t})
    breakdown = {k: float(np.median([t.get(k, 0.0) for t, _, _ in recs])) for k in keys}
    total = float(np.median(delays))
    used = [w for _, w, _ in recs] if kind in ("split", "adaptive") else []
    widths = sorted(set(used))
    mean_wire = float(np.mean(wire)) if wire else 0.0
    ests = [raw["estimate"] for raw in raws if raw["estimate"]]
    return {"pipeline": kind, "mbit": mbit, "frames": len(recs), "p50_ms": total, "p95_ms": float(np.percentile(delays, 95)),
            "widths": widths, "width_share": {w: used.count(w) / len(used) for w in widths},
            "wire_bytes": mean_wire, "modelled_link_ms": 2.0 + 8 * mean_wire / (mbit * 1e6) * 1000,
            "breakdown_ms": breakdown, "link_and_serialisation_ms": total - sum(breakdown.values()),
            "controller_estimates": [{"bandwidth_mbit": e[0] / 1e6, "latency_ms": e[1] * 1000} for e in ests]}


# -- main -------------------------------------------------------------------------------------------
def ensure(args) -> tuple[Path, Path]:
    data, model = Path(args.data), Path(args.model)
    cfg = config.load(args.config)
    if not (data / "test.npz").is_file():
        print(f"rendering the dataset into {data} ...", file=sys.stderr)
        dataset.write(cfg.data, data)
    if not (model / "model.json").is_file():
        print(f"training into {model} ...", file=sys.stderr)
        cfg.train.threads = 1
        train.train(cfg, data, model)
    return data, model


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default", help="recipe when data/model must be made (default: default)")
    p.add_argument("--data", default="runs/split/data")
    p.add_argument("--model", default="runs/split/model")
    p.add_argument("--quick", action="store_true", help="tiny recipe in a temporary folder, few frames: a smoke run")
    p.add_argument("--frames", type=int, default=100, help="frames per end-to-end run")
    p.add_argument("--rate", type=float, default=10.0, help="camera rate of the end-to-end runs (Hz)")
    p.add_argument("--rates", default="1,5,25", help="emulated link rates, Mbit/s")
    p.add_argument("--latency-runs", type=int, default=300)
    p.add_argument("--budget-ms", type=float, default=7.0, help="delay budget of the width controller's run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the end-to-end runs")
    p.add_argument("--json", help="also write every number to this file")
    p.add_argument("--plots", help="write the rate-accuracy curve as a PNG into this folder (needs matplotlib)")
    args = p.parse_args()
    if args.quick:
        tmp = Path(tempfile.mkdtemp(prefix="ark-split-bench-"))
        args.config, args.data, args.model = "tiny", str(tmp / "data"), str(tmp / "model")
        args.frames, args.latency_runs = 10, 30
    torch.set_num_threads(1)
    # Every node of the end-to-end runs is a thread of this process: hand the GIL over sooner
    # than the default 5 ms, which would otherwise add up to 5 ms per hop under load.
    sys.setswitchinterval(0.0005)
    data_dir, model_dir = ensure(args)
    model = checkpoint.load(model_dir)
    test = dataset.read(data_dir, "test")
    obj = test.objects()
    report: dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv), "test_object_frames": len(obj),
                              "load_before": os.getloadavg()[0]}
    t0 = time.perf_counter()

    # 1. rate-accuracy
    rows = [{"method": "teacher, uncompressed RGB", "bytes": float(obj.images[0].nbytes), **teacher_on(model, obj.images, obj)}]
    rows += codec_sweep(model, obj, "PNG", [9])
    rows += codec_sweep(model, obj, "JPEG", [10, 20, 30, 50, 70, 80, 90, 95])
    rows += codec_sweep(model, obj, "WebP", [10, 30, 50, 70, 90, 100])
    srows = split_sweep(model, obj)
    report["rate_accuracy"] = rows + srows
    jpeg90 = next(r for r in rows if r["method"] == "JPEG q=90")
    ok = [r for r in srows if r["accuracy"] >= jpeg90["accuracy"]]
    near = [r for r in srows if r["accuracy"] >= jpeg90["accuracy"] - 0.01]
    best = min(ok, key=lambda r: r["bytes"]) if ok else None
    best_near = min(near, key=lambda r: r["bytes"]) if near else None
    report["headline"] = {"jpeg90": jpeg90, "split_at_jpeg90_accuracy": best, "split_within_1pp": best_near}

    # frame filter on all test frames (with and without an object)
    with torch.no_grad():
        prob = torch.sigmoid(model.student.filter(preprocess(test.images))).numpy()
    report["filter"] = [{"threshold": th, "empty_dropped": float(np.mean(prob[~test.present] < th)),
                         "objects_kept": float(np.mean(prob[test.present] >= th))} for th in (0.1, 0.3, 0.5, 0.7, 0.9)]
    report["filter_frames"] = {"empty": int((~test.present).sum()), "objects": int(test.present.sum())}

    # 2. latency
    onnx_dir = Path(tempfile.mkdtemp(prefix="ark-split-onnx-"))
    onnx_export.export(model, onnx_dir)
    report["latency"] = latency_table(model, test, onnx_dir, args.latency_runs)

    # 3. end to end
    pick = best or best_near or max(srows, key=lambda r: r["accuracy"])
    lat = report["latency"]
    compute = [w["head_torch_ms"] + w["tail_torch_ms"] + lat["preprocess_ms"] for w in lat["per_width"]]
    import socket

    from ark.registry import stop_embedded

    kinds, rates = ("split", "adaptive", "jpeg", "device"), [float(r) for r in args.rates.split(",")]
    raws: dict[tuple[str, float], list] = {(k, m): [] for m in rates for k in kinds}
    # Rounds interleave the deployments, so a change in the shared machine's load hits all of them.
    for rnd in range(args.rounds):
        for mbit in rates:
            for kind in kinds:
                ipc = Path(tempfile.mkdtemp(prefix="arkb", dir="/tmp"))
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                cfg = ArkConfig(registry=f"tcp://127.0.0.1:{port}", ipc_dir=ipc, heartbeat_s=0.2, stale_after_s=2.0)
                raw = run_pipeline(kind, model, test, mbit, args.frames // args.rounds, args.rate, cfg, pick["width"],
                                   pick["bits"], args.budget_ms, compute)
                stop_embedded()
                raws[kind, mbit].append(raw)
                print(f"e2e round {rnd} {kind} @ {mbit} Mbit/s: {len(raw['records'])} frames", file=sys.stderr)
    e2e = [summarise(kind, mbit, raws[kind, mbit]) for mbit in rates for kind in kinds]
    report["end_to_end"] = {"split_config": pick["method"], "budget_ms": args.budget_ms, "runs": e2e}
    report["bench_seconds"] = round(time.perf_counter() - t0, 1)
    report["load_after"] = os.getloadavg()[0]
    print_report(report, model)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plots:
        plot_rate_accuracy(report["rate_accuracy"], Path(args.plots))
    return 0


def plot_rate_accuracy(rows: list[dict[str, Any]], folder: Path) -> None:
    """One curve per codec (JPEG, WebP) and per split bit depth: bytes/frame against accuracy."""
    from ark.viz.plots import PlotUnavailable, rate_accuracy

    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        name = r["method"]
        key = name.split(" q=")[0] if " q=" in name else (f"split {r['bits']}-bit" if "bits" in r else None)
        if key is None:
            continue
        xs, ys = series.setdefault(key, ([], []))
        xs.append(r["bytes"])
        ys.append(r["accuracy"])
    try:
        png = rate_accuracy(series, folder / "split_rate_accuracy.png", xlabel="bytes per frame", ylabel="accuracy",
                            title="split latents vs image codecs", log_x=True)
        print(f"wrote {png}")
    except PlotUnavailable as exc:
        print(f"no plot: {exc}")


def print_report(r: dict[str, Any], model) -> None:
    print(f"\n### Split-DNN encoders (benchmarks/split.py)\n\nMachine: {r['machine']}; load average "
          f"{r['load_before']:.1f} -> {r['load_after']:.1f}.  \nCommand: `{r['command']}`  \n"
          f"Test set: {r['test_object_frames']} frames with an object ({model.config.data.size}x{model.config.data.size} RGB). "
          f"Accuracy = shape and colour right and position within 2 cm.\n")
    rows = [[x["method"], f"{x['bytes']:.1f}", f"{x['accuracy']:.3f}", f"{x['shape_acc']:.3f}", f"{x['colour_acc']:.3f}",
             f"{x['position_mae_cm']:.2f}"] for x in r["rate_accuracy"]]
    print(md_table(["method", "bytes/frame", "accuracy", "shape", "colour", "pos. MAE cm"], rows))
    h = r["headline"]
    j = h["jpeg90"]
    print(f"\n**Headline.** JPEG q=90: {j['bytes']:.0f} bytes/frame at accuracy {j['accuracy']:.3f}.")
    for key, label in (("split_at_jpeg90_accuracy", "at >= JPEG q=90's accuracy"), ("split_within_1pp", "within 1 point of it")):
        b = h[key]
        if b:
            print(f"Split {label}: {b['method']}, {b['bytes']:.1f} bytes/frame (accuracy {b['accuracy']:.3f}), "
                  f"{j['bytes'] / b['bytes']:.1f}x fewer bytes than JPEG q=90.")
        else:
            print(f"Split {label}: no width/bit depth reaches it.")
    ff = r["filter_frames"]
    print(f"\n**Frame filter** (device side, on all {ff['empty'] + ff['objects']} test frames: {ff['empty']} empty, "
          f"{ff['objects']} with an object):\n")
    print(md_table(["threshold", "empty frames dropped", "object frames kept"],
                   [[f"{x['threshold']:.1f}", f"{x['empty_dropped']:.3f}", f"{x['objects_kept']:.3f}"] for x in r["filter"]]))
    L = r["latency"]
    print("\n**Latency** (one 64x64 frame, 1 thread, median ms):\n")
    rows = [[f"{w['channels']} ch", f"{w['head_torch_ms']:.3f}", f"{w['head_onnx_ms']:.3f}", f"{w['tail_torch_ms']:.3f}"]
            for w in L["per_width"]]
    print(md_table(["width", "head PyTorch", "head ONNX Runtime", "tail PyTorch"], rows))
    print()
    rows = [[f"{b['bits']}-bit", f"{b['encode_ms']:.3f}", f"{b['decode_ms']:.3f}"] for b in L["per_bits"]]
    print(md_table(["latent coding (widest)", "encode (quantise+pack+zstd+CRC)", "decode"], rows))
    print()
    rows = [["preprocess (uint8 -> normalised tensor)", f"{L['preprocess_ms']:.3f}"],
            ["frame filter PyTorch / ONNX Runtime", f"{L['filter_torch_ms']:.3f} / {L['filter_onnx_ms']:.3f}"],
            ["whole teacher PyTorch / ONNX Runtime", f"{L['teacher_torch_ms']:.3f} / {L['teacher_onnx_ms']:.3f}"],
            ["JPEG q=90 encode / decode (OpenCV)", f"{L['jpeg_encode_ms']:.3f} / {L['jpeg_decode_ms']:.3f}"],
            ["WebP q=70 encode (OpenCV)", f"{L['webp_encode_ms']:.3f}"],
            ["Ark serialise+deserialise: latent / JPEG / raw Image msg",
             f"{L['serialise_latent_ms']:.3f} / {L['serialise_jpeg_ms']:.3f} / {L['serialise_image_ms']:.3f}"],
            ["width switch (set_width)", f"{L['switch_us']:.2f} µs"],
            ["head forward right after a switch / at the same width",
             f"{L['forward_after_switch_ms']:.3f} / {L['forward_same_width_ms']:.3f}"]]
    print(md_table(["step", "ms"], rows))
    e = r["end_to_end"]
    print(f"\n**Capture-to-output delay through Ark nodes** (one process, ipc; link emulator with 2 ms one-way latency; "
          f"split = {e['split_config']}; the width controller's budget is {e['budget_ms']:g} ms; median over the frames; "
          f"'emulated link' = 2 ms + wire bytes at the link rate; 'link+ser.' = total minus the timed steps, i.e. the emulated link plus Ark hops, serialisation and scheduling):\n")
    rows = []
    for x in e["runs"]:
        b = x["breakdown_ms"]
        dev = sum(v for k, v in b.items() if k in ("preprocess_ms", "filter_ms", "head_ms", "encode_ms")) \
            if x["pipeline"] in ("split", "adaptive") else b.get("encode_ms", 0.0) + (b.get("model_ms", 0.0) + b.get("preprocess_ms", 0.0)
                                                                           if x["pipeline"] == "device" else 0.0)
        srv = (b.get("decode_ms", 0.0) + b.get("tail_ms", 0.0)) if x["pipeline"] in ("split", "adaptive") else \
            (b.get("decode_ms", 0.0) + b.get("model_ms", 0.0) if x["pipeline"] == "jpeg" else 0.0)
        chans = model.channels
        name = {"split": "split head -> tail",
                "adaptive": "split, width controller (channels used: " + ", ".join(
                    f"{chans[int(w)]} ch {100 * f:.0f} %" for w, f in x["width_share"].items()) + ")",
                "jpeg": "JPEG q=90 -> server teacher", "device": "teacher on device"}[x["pipeline"]]
        if x["controller_estimates"]:
            e0 = x["controller_estimates"][-1]
            name += f"; estimated {e0['bandwidth_mbit']:.2f} Mbit/s, {e0['latency_ms']:.1f} ms"
        rows.append([f"{x['mbit']:g}", name, f"{x['wire_bytes']:.0f}", f"{dev:.2f}", f"{x['modelled_link_ms']:.2f}",
                     f"{x['link_and_serialisation_ms']:.2f}", f"{srv:.2f}", f"{x['p50_ms']:.2f}", f"{x['p95_ms']:.2f}",
                     x["frames"]])
    print(md_table(["Mbit/s", "deployment", "wire bytes/msg", "device ms", "emulated link ms", "link+ser. ms",
                    "server ms", "total p50", "total p95", "frames"], rows))
    print(f"\n(bench took {r['bench_seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
