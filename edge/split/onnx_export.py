"""ONNX export of the device side: ``head.onnx`` (slimmable head) and ``filter.onnx`` (frame filter).

**Width is an input, not one model per width.** ``head.onnx`` takes ``frames`` (N, S, S, 3)
uint8 RGB and ``width`` (1,) int64 and returns ``latent`` (N, C_max, S/8, S/8) float32 whose
channels from ``channels[width]`` on are zero; the caller keeps the first ``channels[width]``.
Why: the device holds one file and one ONNX Runtime session, and switching width is a
different input value (no session reload, no extra memory), exactly like the PyTorch head's
``set_width``. The price is computing all C_max bottleneck channels every frame, a 1x1
convolution that is a few percent of the head's work, while K sessions would hold K copies
of the weights. Each width's switchable batch norm is folded into a (K, C_max) scale/shift
table that the graph indexes with ``width``. Preprocessing (uint8 to normalised float) is in
the graph too, so the device needs nothing but ONNX Runtime and numpy.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.split.checkpoint import SplitModel
from edge.split.errors import SplitError
from edge.split.models import _MEAN, _STD, FrameFilter, SlimmableHead

OPSET = 17


def _preprocess(frames: torch.Tensor) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return (x - _MEAN) / _STD


class HeadExport(nn.Module):
    """The slimmable head with width as a tensor input (see the module docstring)."""

    def __init__(self, head: SlimmableHead) -> None:
        super().__init__()
        self.body = head.body
        self.weight = nn.Parameter(head.bottleneck.weight.detach().clone(), requires_grad=False)
        k_n, c_max = len(head.channels), head.bottleneck.out_channels
        scale, shift = torch.zeros(k_n, c_max), torch.zeros(k_n, c_max)
        for k, (c, bn) in enumerate(zip(head.channels, head.norm.bn)):
            s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            scale[k, :c], shift[k, :c] = s, bn.bias.detach() - bn.running_mean * s
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, frames: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        z = F.conv2d(self.body(_preprocess(frames)), self.weight)
        c = z.shape[1]
        return z * self.scale.index_select(0, width).view(1, c, 1, 1) + self.shift.index_select(0, width).view(1, c, 1, 1)


class FilterExport(nn.Module):
    def __init__(self, f: FrameFilter) -> None:
        super().__init__()
        self.f = f

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.f(_preprocess(frames))


def export(model: SplitModel, directory: str | Path) -> Path:
    """Write ``head.onnx``, ``filter.onnx`` and ``onnx.json`` (widths, fingerprint) to ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    s = model.config.data.size
    frames = torch.zeros(1, s, s, 3, dtype=torch.uint8)
    width = torch.tensor([len(model.channels) - 1], dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(HeadExport(model.student.head).eval(), (frames, width), str(d / "head.onnx"),
                          input_names=["frames", "width"], output_names=["latent"],
                          dynamic_axes={"frames": {0: "batch"}, "latent": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        torch.onnx.export(FilterExport(model.student.filter).eval(), (frames,), str(d / "filter.onnx"),
                          input_names=["frames"], output_names=["logit"],
                          dynamic_axes={"frames": {0: "batch"}, "logit": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    (d / "onnx.json").write_text(json.dumps({"channels": model.channels, "size": s,
                                             "fingerprint": model.fingerprint.hex()}, indent=2))
    return d


class OnnxHead:
    """The device side under ONNX Runtime: ``latent(frame, k)`` and ``filter_logit(frame)``."""

    def __init__(self, directory: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        d = Path(directory)
        if not (d / "head.onnx").is_file():
            raise SplitError(f"{d}: no head.onnx (export one with `ark split export`)")
        meta = json.loads((d / "onnx.json").read_text())
        self.channels: list[int] = meta["channels"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.head = ort.InferenceSession(str(d / "head.onnx"), opts, providers=["CPUExecutionProvider"])
        self.filter = ort.InferenceSession(str(d / "filter.onnx"), opts, providers=["CPUExecutionProvider"])
        self._widths = [np.array([k], np.int64) for k in range(len(self.channels))]

    def latent(self, frames: np.ndarray, k: int) -> np.ndarray:
        """(N, channels[k], g, g) float32 latents of uint8 frames (N, S, S, 3)."""
        z = self.head.run(None, {"frames": frames, "width": self._widths[k]})[0]
        return z[:, :self.channels[k]]

    def filter_logit(self, frames: np.ndarray) -> np.ndarray:
        return self.filter.run(None, {"frames": frames})[0]


def parity(model: SplitModel, directory: str | Path, frames: np.ndarray) -> dict[str, float]:
    """Largest |ONNX - PyTorch| of the latent of every width and of the filter logit on ``frames``."""
    from edge.split.models import preprocess

    ort_head = OnnxHead(directory)
    out: dict[str, float] = {}
    with torch.no_grad():
        x = preprocess(frames)
        for k in range(len(model.channels)):
            ref = model.student.head(x, k).numpy()
            out[f"latent_w{k}"] = float(np.abs(ort_head.latent(frames, k) - ref).max())
        out["filter"] = float(np.abs(ort_head.filter_logit(frames) - model.student.filter(x).numpy()).max())
    return out
