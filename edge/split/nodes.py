"""The split pipeline as Ark nodes: ``SplitHeadNode`` on the device, ``SplitTailNode`` on the server.

::

    /camera/rgb (ark/Image) -> SplitHeadNode -> /split/latent (split/Latent)
        -> [LinkEmulator] -> SplitTailNode -> /split/output (split/Output)
                                           -> /split/feedback (split/Feedback) -> SplitHeadNode

``SplitHeadNode`` resizes the frame to the model's size if needed, runs the frame filter
(frames whose object probability is below ``filter_threshold`` are dropped and counted),
the head at the current width, and the latent codec; it publishes the packet stamped with
the camera's capture time. The width is the ``width`` parameter (settable at run time) or,
with ``budget_ms`` set, the :class:`~edge.split.controller.WidthController`'s choice from the
tail's feedback. ``SplitTailNode`` decodes the packet and runs the tail. Bad input (a frame
of the wrong kind, a packet with wrong shape, bit depth, width, checksum or fingerprint) is
dropped with a one-line warning and counted in ``rejected``; the nodes keep running.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ark.config import ArkConfig
from ark.messages import Image, array, message
from ark.node import Node
from ark.wire import MessageInfo
from edge.split import checkpoint
from edge.split.codec import BITS, CRC_BYTES, HEADER_BYTES, LatentCodec
from edge.split.config import COLOURS, SHAPES
from edge.split.controller import WidthController
from edge.split.dataset import denormalise_position
from edge.split.errors import PacketError, SplitError
from edge.split.models import preprocess

log = logging.getLogger("edge.split")

LATENT_TOPIC = "/split/latent"
OUTPUT_TOPIC = "/split/output"
FEEDBACK_TOPIC = "/split/feedback"


@message("split/Latent")
@dataclass
class Latent:
    """One encoded latent packet (layout in :mod:`edge.split.codec`) and the device's timings (ms)."""

    packet: np.ndarray = array("uint8", (None,))
    frame_seq: int = 0
    sent_ns: int = 0
    timings: dict = field(default_factory=dict)


@message("split/Output")
@dataclass
class Output:
    """The task output of one frame: shape and colour names, position (x, y, m) and where time went (ms)."""

    shape: str = ""
    colour: str = ""
    confidence: float = 0.0
    position: np.ndarray = array("float64", (2,))
    frame_seq: int = 0
    width: int = 0
    bits: int = 0
    packet_bytes: int = 0
    timings: dict = field(default_factory=dict)


@message("split/Feedback")
@dataclass
class Feedback:
    """What the tail saw of one packet: its wire bytes and its one-way delay from the head's send."""

    frame_seq: int = 0
    wire_bytes: int = 0
    delay_s: float = 0.0


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class _Rejections:
    """Counts and logs dropped inputs by reason: one line each, then every 100th."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.counts: collections.Counter[str] = collections.Counter()
        self.last: str | None = None

    def __call__(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        self.last = text
        n = sum(self.counts.values())
        if n <= 20 or n % 100 == 0:
            log.warning("%s: dropped input (%s): %s [%d dropped so far]", self.node, kind, text, n)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _model_from_params(node: Node, model: checkpoint.SplitModel | None) -> checkpoint.SplitModel:
    """The model given to the constructor, else the checkpoint named by the node's ``model`` parameter;
    also applies the ``threads`` parameter (default 1: small convolutions, a core left to the rest)."""
    if model is None:
        if not node.param("model"):
            raise SplitError(f"node {node.name}: parameter 'model' (a checkpoint folder) is required")
        model = checkpoint.load(node.param("model"))
    torch.set_num_threads(int(node.param("threads", 1)))
    return model


class SplitHeadNode(Node):
    """Device side. Parameters: ``model`` (checkpoint folder, required), ``onnx`` (folder with
    head.onnx: run under ONNX Runtime instead of PyTorch), ``in_topic`` (/camera/rgb),
    ``out_topic`` (/split/latent), ``width`` (index, default widest), ``bits`` (4),
    ``filter_threshold`` (0.5; 0 sends every frame), ``per_frame_ranges`` (false),
    ``budget_ms`` (unset: fixed width) with ``compute_ms`` (head + tail ms per width) and
    ``bandwidth_bps`` (the first guess), ``feedback_topic`` (/split/feedback), ``threads`` (1),
    ``queue`` (frames waiting, 10), ``latest_only`` (false: take only the newest frame).
    """

    def __init__(self, name: str = "split_head", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None, model: checkpoint.SplitModel | None = None) -> None:
        super().__init__(name, config=config, params=params)
        self.model = model = _model_from_params(self, model)
        self.head = model.student.head
        self.filter = model.student.filter
        self.size = model.config.data.size
        self.channels = model.channels
        self.codec = LatentCodec.for_model(model, per_frame_ranges=bool(self.param("per_frame_ranges", False)))
        self.onnx = None
        if self.param("onnx"):
            from edge.split.onnx_export import OnnxHead

            self.onnx = OnnxHead(self.param("onnx"), threads=int(self.param("threads", 1)))
        self.params.setdefault("width", len(self.channels) - 1)
        self.params.setdefault("bits", 4)
        self.params.setdefault("filter_threshold", 0.5)
        self.rejected = _Rejections(name)
        self.filtered = 0
        self.sent = 0
        self.controller: WidthController | None = None
        if self.param("budget_ms") is not None:
            self.controller = self._make_controller(float(self.param("budget_ms")))
            self.subscriber(str(self.param("feedback_topic", FEEDBACK_TOPIC)), Feedback, self._on_feedback, queue=100)
        self.pub = self.publisher(str(self.param("out_topic", LATENT_TOPIC)), Latent)
        self.subscriber(str(self.param("in_topic", "/camera/rgb")), Image, self.on_frame,
                        queue=int(self.param("queue", 10)), latest_only=bool(self.param("latest_only", False)))

    def _make_controller(self, budget_ms: float) -> WidthController:
        bits = int(self.param("bits"))
        overhead = 160  # Ark header and framing of a split/Latent message, bytes
        sizes = [self.codec.body_bytes(k, bits) + HEADER_BYTES + CRC_BYTES + overhead for k in range(len(self.channels))]
        compute = [float(c) for c in self.param("compute_ms", [2.0] * len(self.channels))]
        return WidthController(sizes, compute, budget_ms, bandwidth_bps=float(self.param("bandwidth_bps", 1e6)))

    def _on_feedback(self, fb: Feedback) -> None:
        assert self.controller is not None
        self.controller.observe(fb.wire_bytes, fb.delay_s)

    def set_width(self, k: int) -> None:
        """Use width ``k`` from the next frame on (IndexError when out of range)."""
        if not 0 <= int(k) < len(self.channels):
            raise IndexError(f"width index {k} out of range 0..{len(self.channels) - 1}")
        self.params["width"] = int(k)

    def _frame(self, msg: Image) -> np.ndarray:
        img = msg.data
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or msg.encoding not in ("rgb8", "bgr8"):
            raise SplitError(f"expected an rgb8/bgr8 HxWx3 uint8 image, got {msg.encoding} {img.dtype} {tuple(img.shape)}")
        if msg.encoding == "bgr8":
            img = img[:, :, ::-1]
        if img.shape[:2] != (self.size, self.size):
            import cv2

            img = cv2.resize(np.ascontiguousarray(img), (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img)[None]

    def on_frame(self, msg: Image, info: MessageInfo) -> None:
        t0 = time.perf_counter()
        try:
            frames = self._frame(msg)
            k = self.controller.next_width() if self.controller else int(self.param("width"))
            bits = int(self.param("bits"))
            if not 0 <= k < len(self.channels):
                raise SplitError(f"width index {k} out of range 0..{len(self.channels) - 1}")
            if bits not in BITS:
                raise SplitError(f"bit depth {bits} not supported (expected 2, 4 or 8)")
        except SplitError as exc:
            self.rejected("bad_input", str(exc))
            return
        timings: dict[str, float] = {}
        with torch.inference_mode():
            if self.onnx is None:
                x = preprocess(frames)
                timings["preprocess_ms"] = _ms(t0)
                t = time.perf_counter()
                threshold = float(self.param("filter_threshold"))
                if threshold > 0:
                    p = float(torch.sigmoid(self.filter(x))[0])
                    timings["filter_ms"] = _ms(t)
                    if p < threshold:
                        self.filtered += 1
                        return
                t = time.perf_counter()
                z = self.head(x, k)[0].numpy()
            else:
                timings["preprocess_ms"] = _ms(t0)
                t = time.perf_counter()
                threshold = float(self.param("filter_threshold"))
                if threshold > 0:
                    p = float(1.0 / (1.0 + np.exp(-self.onnx.filter_logit(frames)[0])))
                    timings["filter_ms"] = _ms(t)
                    if p < threshold:
                        self.filtered += 1
                        return
                t = time.perf_counter()
                z = self.onnx.latent(frames, k)[0]
        timings["head_ms"] = _ms(t)
        t = time.perf_counter()
        packet = self.codec.encode(z, k, bits)
        timings["encode_ms"] = _ms(t)
        self.sent += 1
        self.pub.publish(Latent(np.frombuffer(packet, np.uint8), info.seq, time.time_ns(), timings), stamp_ns=info.stamp_ns)


class SplitTailNode(Node):
    """Server side. Parameters: ``model`` (checkpoint folder, required), ``in_topic``
    (/split/latent), ``out_topic`` (/split/output), ``feedback_topic`` (/split/feedback; "" for none),
    ``threads`` (1). ``rejected`` counts dropped packets by reason; ``last_error`` is the newest reason.
    """

    def __init__(self, name: str = "split_tail", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None, model: checkpoint.SplitModel | None = None) -> None:
        super().__init__(name, config=config, params=params)
        self.model = model = _model_from_params(self, model)
        self.tail = model.student.tail
        self.codec = LatentCodec.for_model(model)
        self.rejected = _Rejections(name)
        self.processed = 0
        self.pub = self.publisher(str(self.param("out_topic", OUTPUT_TOPIC)), Output)
        fb = self.param("feedback_topic", FEEDBACK_TOPIC)
        self.feedback = self.publisher(str(fb), Feedback) if fb else None
        self.subscriber(str(self.param("in_topic", LATENT_TOPIC)), Latent, self.on_latent, queue=100)

    @property
    def last_error(self) -> str | None:
        return self.rejected.last

    def on_latent(self, msg: Latent, info: MessageInfo) -> None:
        arrived = time.time_ns()
        t0 = time.perf_counter()
        try:
            dec = self.codec.decode(msg.packet.tobytes())
        except PacketError as exc:
            self.rejected(type(exc).__name__, f"frame {msg.frame_seq}: {exc}")
            return
        timings = {k: float(v) for k, v in msg.timings.items() if isinstance(v, (int, float))}
        timings["decode_ms"] = _ms(t0)
        t = time.perf_counter()
        with torch.inference_mode():
            out = self.tail(torch.from_numpy(dec.latent)[None], dec.width)
        shape_p = torch.softmax(out["shape"][0], 0)
        colour_p = torch.softmax(out["colour"][0], 0)
        timings["tail_ms"] = _ms(t)
        s, c = int(shape_p.argmax()), int(colour_p.argmax())
        xy = denormalise_position(out["position"][0].numpy()).astype(np.float64)
        self.processed += 1
        if self.feedback is not None and msg.sent_ns:
            self.feedback.publish(Feedback(msg.frame_seq, info.nbytes, (arrived - msg.sent_ns) / 1e9))
        self.pub.publish(Output(SHAPES[s], COLOURS[c], float(shape_p[s] * colour_p[c]), xy, msg.frame_seq,
                                dec.width, dec.bits, len(msg.packet), timings), stamp_ns=info.stamp_ns)
