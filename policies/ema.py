"""Exponential moving average of model weights with power-law warm-up, as Diffusion Policy uses.

decay(step) = 1 − (1 + step / inv_gamma)^(−power), clamped to [min_decay, max_decay], and 0
for the first step(s) so the average starts as a copy. With inv_gamma 1 and power 3/4
(Diffusion Policy's setting) it reaches 0.999 at about 10k steps. BatchNorm statistics and
non-trainable tensors are copied, not averaged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def ema_decay(
    optimization_step: int,
    power: float = 0.75,
    inv_gamma: float = 1.0,
    min_decay: float = 0.0,
    max_decay: float = 0.9999,
    update_after_step: int = 0,
) -> float:
    """Decay for the update after ``optimization_step`` optimiser steps (0 while warming up)."""
    step = max(0, optimization_step - update_after_step - 1)
    if step <= 0:
        return 0.0
    value = 1 - (1 + step / inv_gamma) ** -power
    return max(min_decay, min(value, max_decay))


@torch.no_grad()
def ema_update_(averaged: nn.Module, model: nn.Module, decay: float) -> None:
    """In place: averaged ← decay · averaged + (1 − decay) · model, module by module; buffers are copied."""
    for module, avg_module in zip(model.modules(), averaged.modules()):
        for param, avg_param in zip(module.parameters(recurse=False), avg_module.parameters(recurse=False)):
            if isinstance(module, _BatchNorm) or not param.requires_grad:
                avg_param.copy_(param)
            else:
                avg_param.mul_(decay).add_(param.detach(), alpha=1 - decay)
        for buf, avg_buf in zip(module.buffers(recurse=False), avg_module.buffers(recurse=False)):
            avg_buf.copy_(buf)
