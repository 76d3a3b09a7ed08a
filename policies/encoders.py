"""Observation encoders: an MLP for state vectors and a small ResNet-style CNN for RGB images.

The CNN is written here (no torchvision, no downloaded weights): a stride-2 stem and stages
of ResNet BasicBlocks (two 3×3 convolutions with a skip), GroupNorm by default — as
Diffusion Policy does, since BatchNorm interacts badly with EMA weights and small batches —
and few channels so it trains on a CPU. It returns a feature map (ACT turns it into tokens)
or, through :class:`ImageEncoder`, a vector after spatial-softmax keypoints or global
average pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, H, W, 3)`` in [0, 255] -> float ``(N, 3, H, W)`` in [-1, 1]."""
    x = images.to(torch.float32).permute(0, 3, 1, 2)  # explicit dims: ONNX rejects negative perms
    return x / 127.5 - 1.0


def crop_images(x: torch.Tensor, size: tuple[int, int], random: bool) -> torch.Tensor:
    """Crop ``(N, C, H, W)`` to ``size``: a random window per sample when ``random``, else the centre."""
    n, _, h, w = x.shape
    ch, cw = size
    if (ch, cw) == (h, w):
        return x
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[:, :, top : top + ch, left : left + cw]
    top = torch.randint(0, h - ch + 1, (n,), device=x.device)
    left = torch.randint(0, w - cw + 1, (n,), device=x.device)
    rows = (top[:, None] + torch.arange(ch, device=x.device))[:, :, None]  # (N, ch, 1)
    cols = (left[:, None] + torch.arange(cw, device=x.device))[:, None, :]  # (N, 1, cw)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    """GroupNorm (channels // 16 groups, at least 1, as Diffusion Policy's ResNet) or BatchNorm."""
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 16), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}; expected 'group' or 'batch'")


class StateMLP(nn.Module):
    """Linear layers with ReLU between them: ``in_dim`` -> hidden dims -> ``out_dim`` (ReLU after the last too)."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden_dims, out_dim]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """ResNet BasicBlock: conv3×3-norm-ReLU-conv3×3-norm plus a (projected, when shapes change) skip, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm: str = "group"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.norm2 = make_norm(norm, out_ch)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.skip = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.skip(x))


class ResNetBackbone(nn.Module):
    """Stem (3×3 conv, stride 2) then one stage per entry of ``channels``; stages after the first halve the resolution.

    Input ``(N, 3, H, W)`` float; output ``(N, channels[-1], H / 2**len(channels), W / 2**len(channels))``.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), blocks_per_stage: int = 1, norm: str = "group"):
        super().__init__()
        c0 = channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, 2, 1, bias=False), make_norm(norm, c0), nn.ReLU())
        stages = []
        in_ch = c0
        for i, out_ch in enumerate(channels):
            blocks = [BasicBlock(in_ch, out_ch, stride=1 if i == 0 else 2, norm=norm)]
            blocks += [BasicBlock(out_ch, out_ch, norm=norm) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the feature map for an input of ``height`` × ``width``."""
        with torch.no_grad():
            out = self(torch.zeros(1, 3, height, width))
        return tuple(out.shape[1:])  # type: ignore[return-value]


class SpatialSoftmax(nn.Module):
    """Keypoints from a feature map (Levine et al. 2016): a 1×1 conv to K maps, a softmax over each
    map's pixels, and the expected (x, y) in [-1, 1] of each; output ``(N, 2K)``."""

    def __init__(self, in_channels: int, height: int, width: int, num_keypoints: int = 32):
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], -1), persistent=False)
        self.num_keypoints = num_keypoints

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.keypoints(features).flatten(2)  # (N, K, h*w)
        attention = torch.softmax(maps, dim=-1)
        return (attention @ self.grid).flatten(1)  # (N, K*2)


class ImageEncoder(nn.Module):
    """uint8 RGB ``(N, H, W, 3)`` -> feature vector ``(N, feature_dim)``: optional crop, ResNet, pooling, Linear + ReLU.

    ``pool``: ``spatial_softmax`` (Diffusion Policy's choice) or ``avg`` (global average pooling).
    ``crop``: (h, w) window — random in training, centred in eval — or None.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
        norm: str = "group",
        pool: str = "spatial_softmax",
        num_keypoints: int = 32,
        feature_dim: int = 64,
        crop: tuple[int, int] | None = None,
    ):
        super().__init__()
        h, w = int(image_shape[0]), int(image_shape[1])
        self.crop = tuple(crop) if crop is not None else None
        if self.crop is not None:
            h, w = self.crop
        self.backbone = ResNetBackbone(channels, blocks_per_stage, norm)
        c, fh, fw = self.backbone.output_shape(h, w)
        if pool == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax(c, fh, fw, num_keypoints)
            pooled = 2 * num_keypoints
        elif pool == "avg":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = c
        else:
            raise ValueError(f"unknown pool {pool!r}; expected 'spatial_softmax' or 'avg'")
        self.out = nn.Sequential(nn.Linear(pooled, feature_dim), nn.ReLU())
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images_to_float(images)
        if self.crop is not None:
            x = crop_images(x, self.crop, random=self.training)
        return self.out(self.pool(self.backbone(x)))
