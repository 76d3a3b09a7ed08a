"""The networks: a teacher on full frames, the student's slimmable head (device) and tail (server),
and the device-side frame filter.

Split point: after the stride-8 stage. The teacher is ``stem -> TaskTail``, where ``stem``
maps an S x S frame to ``teacher_channels[2]`` features at S/8 x S/8. The student replaces
the stem by

* :class:`SlimmableHead` (device): three stride-2 convolutions (the teacher's stem's
  architecture when ``head_channels`` equals ``teacher_channels``, and then initialised from
  it) and a 1x1 bottleneck to ``bottleneck`` channels, of which width ``k`` keeps the first ``channels[k]``; each width
  has its own batch-norm statistics (switchable BN), the convolution weights are shared;
* :class:`SlimmableDecoder` (server): a 3x3 convolution from ``channels[k]`` back to the
  teacher's feature size, with switchable BN (one per width);

and keeps a copy of the teacher's :class:`TaskTail`. :class:`SplitTail` is what the
server runs: decoder plus task tail. Switching width sets one integer (``set_width``);
nothing is reloaded or re-allocated.

Outputs of every task network: ``shape`` logits (3), ``colour`` logits (4) and ``position``
(x, y normalised to [-1, 1] over the task area; see :mod:`edge.split.dataset`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.split.config import COLOURS, SHAPES, ModelConfig

# Per-channel input normalisation (frames are uint8 RGB); fixed, so the device needs no statistics.
_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
_STD = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


def preprocess(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames (N, S, S, 3) or one (S, S, 3) to normalised float32 NCHW."""
    x = torch.as_tensor(frames)
    if x.ndim == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - _MEAN) / _STD


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TaskTail(nn.Module):
    """Split-point features (C, S/8, S/8) to the task outputs; the teacher's and the student's last stage."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _conv(channels, channels)
        self.heatmap = nn.Conv2d(channels, 1, 1)
        self.classes = nn.Linear(channels, len(SHAPES) + len(COLOURS))
        self.position = nn.Sequential(nn.Linear(channels + 2, 64), nn.ReLU(inplace=True), nn.Linear(64, 2))

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(f)
        n, _, hh, ww = h.shape
        # Spatial soft-argmax: a sub-cell object location from an S/8 grid.
        attn = torch.softmax(self.heatmap(h).flatten(1), dim=1).view(n, 1, hh, ww)
        ys = torch.linspace(-1.0, 1.0, hh, device=h.device).view(1, 1, hh, 1)
        xs = torch.linspace(-1.0, 1.0, ww, device=h.device).view(1, 1, 1, ww)
        uv = torch.cat([(attn * xs).sum((2, 3)), (attn * ys).sum((2, 3))], dim=1)
        # Attention pooling with the same map: the object covers about one cell of the grid, and a
        # plain mean over the grid would dilute it with background.
        pooled = (attn * h).sum((2, 3))
        logits = self.classes(pooled)
        return {"shape": logits[:, :len(SHAPES)], "colour": logits[:, len(SHAPES):],
                "position": self.position(torch.cat([pooled, uv], dim=1))}


class Teacher(nn.Module):
    """The full network on full frames (the uncompressed baseline and the distillation target)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c0, c1, c2 = cfg.teacher_channels
        self.stem = nn.Sequential(_conv(3, c0, 2), _conv(c0, c1, 2), _conv(c1, c2, 2))
        self.tail = TaskTail(c2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The split-point features the student's decoder learns to reproduce."""
        return self.stem(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.tail(self.stem(x))


class SwitchableBatchNorm2d(nn.Module):
    """One BatchNorm2d per width (statistics and affine), over the first ``channels[k]`` channels."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.bn = nn.ModuleList(nn.BatchNorm2d(c) for c in channels)

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.bn[k](x)


class SlimmableHead(nn.Module):
    """Device side: frame (N, 3, S, S) to the latent (N, channels[k], S/8, S/8) of width ``k``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h0, h1, h2 = cfg.head_channels
        self.channels = cfg.width_channels()
        self.body = nn.Sequential(_conv(3, h0, 2), _conv(h0, h1, 2), _conv(h1, h2, 2))
        self.bottleneck = nn.Conv2d(h2, cfg.bottleneck, 1, bias=False)
        self.norm = SwitchableBatchNorm2d(self.channels)
        self.width = len(self.channels) - 1

    def set_width(self, k: int) -> None:
        """Select width ``k`` (index into ``channels``); a plain attribute write."""
        if not 0 <= k < len(self.channels):
            raise IndexError(f"width index {k} out of range 0..{len(self.channels) - 1}")
        self.width = k

    def latent_all(self, x: torch.Tensor, widths: list[int]) -> list[torch.Tensor]:
        """Latents of several widths from one pass through the shared layers (sandwich training)."""
        f = self.body(x)
        full = self.bottleneck(f)
        return [self.norm(full[:, :self.channels[k]], k) for k in widths]

    def forward(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        k = self.width if k is None else k
        c = self.channels[k]
        z = F.conv2d(self.body(x), self.bottleneck.weight[:c])
        return self.norm(z, k)


class SlimmableDecoder(nn.Module):
    """Server side: latent of width ``k`` back to the teacher's split-point features."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.channels = cfg.width_channels()
        c2 = cfg.teacher_channels[2]
        self.inp = nn.Conv2d(cfg.bottleneck, c2, 3, 1, 1, bias=False)
        self.norm = SwitchableBatchNorm2d([c2] * len(self.channels))

    def forward(self, z: torch.Tensor, k: int) -> torch.Tensor:
        h = F.conv2d(z, self.inp.weight[:, :self.channels[k]], padding=1)
        return F.relu(self.norm(h, k))


class SplitTail(nn.Module):
    """What the edge server runs: decoder and task tail, for a latent of any width."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.decoder = SlimmableDecoder(cfg)
        self.task = TaskTail(cfg.teacher_channels[2])

    def forward(self, z: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        return self.task(self.decoder(z, k))


class FrameFilter(nn.Module):
    """Device side: probability-logit that a frame holds an object, from a 2x-downsampled frame."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        f = cfg.filter_channels
        self.net = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, f, 3, 2, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(f, 2 * f, 3, 2, 1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(2 * f, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Max over space: one object anywhere is enough.
        return self.fc(self.net(x).amax((2, 3))).squeeze(1)


#: Bit depths the latent can be coded with; LatentRanges keeps one range per depth.
BIT_DEPTHS = (2, 4, 8)


class LatentRanges(nn.Module):
    """Per-width, per-bit-depth, per-channel quantisation ranges [lo, hi] of the latent.

    Calibrated after training (see :func:`edge.split.train.calibrate`): fewer bits clip harder.
    ``lo``/``hi`` have shape (widths, len(BIT_DEPTHS), bottleneck).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.channels = cfg.width_channels()
        shape = (len(self.channels), len(BIT_DEPTHS), cfg.bottleneck)
        self.register_buffer("lo", torch.full(shape, -3.0))
        self.register_buffer("hi", torch.full(shape, 3.0))

    def of(self, k: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, b = self.channels[k], BIT_DEPTHS.index(bits)
        return self.lo[k, b, :c], self.hi[k, b, :c]


def fake_quantise(z: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise-dequantise per channel with a straight-through gradient (training for n-bit latents)."""
    lo_, hi_ = lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1)
    levels = (1 << bits) - 1
    scale = (hi_ - lo_).clamp_min(1e-6) / levels
    q = torch.clamp(torch.round((z - lo_) / scale), 0, levels) * scale + lo_
    return z + (q - z).detach()


class Student(nn.Module):
    """Head, ranges, tail (and the filter) as one module: what training optimises and checkpoints hold."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = SlimmableHead(cfg)
        self.ranges = LatentRanges(cfg)
        self.tail = SplitTail(cfg)
        self.filter = FrameFilter(cfg)

    def forward(self, x: torch.Tensor, k: int, bits: int | None = None) -> dict[str, torch.Tensor]:
        z = self.head(x, k)
        if bits is not None:
            z = fake_quantise(z, *self.ranges.of(k, bits), bits)
        return self.tail(z, k)
