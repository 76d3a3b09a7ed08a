"""Three small nodes that make a camera pipeline, for the demo and the launch tests.

``CameraNode`` publishes synthetic RGB frames on ``/camera/rgb``; ``ProcessorNode``
downsamples each and finds the coloured square in it, publishing ``/camera/features``;
``MonitorNode`` prints, once a second, how many feature messages arrived and their
end-to-end latency measured from the camera's stamp.

    python -m ark.runner ark.demo_nodes:CameraNode --name camera --params '{"rate": 30}'
    python -m ark.runner ark.demo_nodes:ProcessorNode --name processor
    python -m ark.runner ark.demo_nodes:MonitorNode --name monitor
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ark.config import ArkConfig
from ark.messages import DictArrays, Image
from ark.node import Node
from ark.wire import MessageInfo

RGB_TOPIC = "/camera/rgb"
FEATURES_TOPIC = "/camera/features"

# The background never gets brighter than this in any channel; the square always reaches 255
# in one, so "some channel above SQUARE_THRESHOLD" separates them exactly.
_BACKGROUND_MAX = 150
SQUARE_THRESHOLD = 200


def square_at(seq: int, height: int = 480, width: int = 640, size: int = 64) -> tuple[int, int]:
    """Top-left corner (x, y) of the square in frame ``seq``; both even, so 2x pooling keeps its edges sharp."""
    t = seq / 30.0
    x = (width - size) / 2 * (1 + math.sin(1.3 * t))
    y = (height - size) / 2 * (1 + math.sin(0.9 * t + 1.0))
    return int(x) // 2 * 2, int(y) // 2 * 2


def square_centre(seq: int, height: int = 480, width: int = 640, size: int = 64) -> tuple[float, float]:
    """Centre (x, y) in pixels of the square in frame ``seq`` (what ProcessorNode should find)."""
    x, y = square_at(seq, height, width, size)
    return x + (size - 1) / 2, y + (size - 1) / 2


def square_colour(seq: int) -> np.ndarray:
    """A fully saturated colour cycling through the hues; one channel is always 255."""
    hue = (seq % 90) / 90.0 * 6.0
    sector, frac = int(hue), hue - int(hue)
    rising, falling = int(255 * frac), int(255 * (1 - frac))
    rgb = [(255, rising, 0), (falling, 255, 0), (0, 255, rising),
           (0, falling, 255), (rising, 0, 255), (255, 0, falling)][sector]
    return np.array(rgb, dtype=np.uint8)


def gradient(height: int, width: int) -> np.ndarray:
    """A muted diagonal colour gradient, HxWx3 uint8, never brighter than the square."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (30 + 120 * xs).astype(np.uint8)
    img[..., 1] = (30 + 120 * ys).astype(np.uint8)
    img[..., 2] = (90 + 60 * (1 - xs) * ys).astype(np.uint8)
    return img


def downsample2(image: np.ndarray) -> np.ndarray:
    """Average 2x2 blocks of an HxWxC uint8 image (odd edges are cropped)."""
    h, w, c = image.shape[0] // 2, image.shape[1] // 2, image.shape[2]
    blocks = image[: 2 * h, : 2 * w].reshape(h, 2, w, 2, c)
    return (blocks.sum(axis=(1, 3), dtype=np.uint16) // 4).astype(np.uint8)


def find_square(thumb: np.ndarray, scale: int = 2) -> np.ndarray:
    """Centroid (x, y) in full-resolution pixels of the bright square in a downsampled frame; NaN if absent."""
    ys, xs = np.nonzero(thumb.max(axis=2) > SQUARE_THRESHOLD)
    if xs.size == 0:
        return np.array([np.nan, np.nan])
    # Pixel i of the thumbnail covers full-resolution pixels scale*i .. scale*i + scale - 1.
    return np.array([xs.mean() * scale + (scale - 1) / 2, ys.mean() * scale + (scale - 1) / 2])


class CameraNode(Node):
    """Publishes synthetic ``Image`` frames (rgb8) on ``/camera/rgb``: a moving square over a gradient.

    Parameters: ``rate`` (Hz, default 30), ``height`` (480), ``width`` (640), ``size``
    (square side, 64). Frame ``k`` (1-based, equal to the message's sequence number) shows
    the square at :func:`square_at(k) <square_at>` in :func:`square_colour(k) <square_colour>`.
    """

    def __init__(self, name: str = "camera", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(name, config=config, params=params)
        self.height = int(self.param("height", 480))
        self.width = int(self.param("width", 640))
        self.size = int(self.param("size", 64))
        self.frames = 0
        self._background = gradient(self.height, self.width)
        self.pub = self.publisher(RGB_TOPIC, Image)
        self.timer(float(self.param("rate", 30)), self.tick)

    def render(self, seq: int) -> np.ndarray:
        """Frame ``seq`` as a fresh array (published arrays are sent zero-copy, so never reused)."""
        frame = self._background.copy()
        x, y = square_at(seq, self.height, self.width, self.size)
        frame[y:y + self.size, x:x + self.size] = square_colour(seq)
        return frame

    def tick(self) -> None:
        self.frames += 1
        self.pub.publish(Image(self.render(self.frames), encoding="rgb8", frame_id="camera"))


class ProcessorNode(Node):
    """Turns frames from ``/camera/rgb`` into features on ``/camera/features``.

    Takes only the newest frame (latest-only), downsamples it 2x and finds the square's
    centroid. Publishes ``DictArrays`` with arrays ``centroid`` (x, y in full-resolution
    pixels, float64) and ``thumb`` (the downsampled frame), and meta ``frame_seq`` (the
    camera's sequence number) and ``camera_stamp_ns`` (the camera's publish time).
    """

    def __init__(self, name: str = "processor", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(name, config=config, params=params)
        self.processed = 0
        self.pub = self.publisher(FEATURES_TOPIC, DictArrays)
        self.subscriber(RGB_TOPIC, Image, self.on_frame, latest_only=True)

    def on_frame(self, msg: Image, info: MessageInfo) -> None:
        thumb = downsample2(msg.data if msg.data.ndim == 3 else msg.data[..., None])
        self.processed += 1
        self.pub.publish(DictArrays(arrays={"centroid": find_square(thumb), "thumb": thumb},
                                    meta={"frame_seq": info.seq, "camera_stamp_ns": info.stamp_ns}))


class MonitorNode(Node):
    """Prints one line per ``period_s`` (param, default 1 s): feature messages/s and latency p50.

    Latency is end to end: from the camera's publish stamp (carried in the features' meta)
    to arrival here. Both clocks are this host's wall clock, as all three nodes share it.
    """

    def __init__(self, name: str = "monitor", *, config: ArkConfig | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(name, config=config, params=params)
        self.received = 0
        self._latencies_ms: list[float] = []
        self._window_start = time.monotonic()
        self.subscriber(FEATURES_TOPIC, DictArrays, self.on_features, queue=100)
        self.timer(1.0 / float(self.param("period_s", 1.0)), self.report)

    def on_features(self, msg: DictArrays, info: MessageInfo) -> None:
        self.received += 1
        stamp = msg.meta.get("camera_stamp_ns", info.stamp_ns)
        self._latencies_ms.append((time.time_ns() - stamp) / 1e6)

    def report(self) -> None:
        now = time.monotonic()
        rate = len(self._latencies_ms) / max(now - self._window_start, 1e-9)
        if self._latencies_ms:
            line = f"{rate:5.1f} msgs/s  latency p50 {float(np.median(self._latencies_ms)):6.2f} ms"
        else:
            line = f"{rate:5.1f} msgs/s  (no features yet)"
        print(f"{line}  total {self.received}", flush=True)
        self._latencies_ms.clear()
        self._window_start = now
