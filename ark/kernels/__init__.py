"""GPU kernels for attention and low-bit matmul, as torch custom ops with plain-PyTorch CPU kernels.

    from ark import kernels
    y = kernels.attention(q, k, v, causal=True)             # prefill, [B, H, T, D]
    y = kernels.decode_attention(q, k_cache, v_cache)       # one token against a KV cache
    y = kernels.q4_matmul(x, qs, scale, zero)               # 4-bit weight-only matmul

On CUDA tensors these run Triton kernels (``pip install -e .[gpu]``); on CPU, or without
Triton, the same ops run plain PyTorch (``scaled_dot_product_attention``,
dequantise-then-matmul). Callers never branch on the device. ``ARK_KERNELS=off`` (or
``use_kernel_mode("off")``) bypasses the custom ops; see :mod:`ark.kernels.ops` for the
routing rules. Layouts are documented in :mod:`ark.kernels.reference`; the Triton kernels
live in ``triton_attention.py``, ``triton_decode.py`` and ``triton_lowbit.py`` and are
imported only when a CUDA tensor reaches an op.
"""

from ark.kernels.errors import KernelArgumentError
from ark.kernels.ops import (
    MODES,
    attention,
    decode_attention,
    int8_matmul,
    kernel_mode,
    paged_decode_attention,
    q4_matmul,
    set_kernel_mode,
    triton_available,
    use_kernel_mode,
)

__all__ = [
    "MODES", "KernelArgumentError", "attention", "decode_attention", "int8_matmul", "kernel_mode",
    "paged_decode_attention", "q4_matmul", "set_kernel_mode", "triton_available", "use_kernel_mode",
]
