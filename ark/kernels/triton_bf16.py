"""Rounding to bf16 that is right under Triton's interpreter too (shared by the Triton kernels).

On a GPU ``x.to(tl.bfloat16)`` rounds to nearest even. The interpreter (``TRITON_INTERPRET=1``)
truncates instead, which doubles the rounding error of every bf16 result and would make the
CPU tests of bf16 kernels meaningless; so where a kernel runs interpreted on bf16 data it
rounds with integer arithmetic on the fp32 bits first (the cast then truncates nothing).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_to(x, dtype: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """fp32 ``x`` rounded to ``dtype`` (nearest even); ``EMULATE_BF16`` under the interpreter with bf16."""
    if EMULATE_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(dtype)
    else:
        return x.to(dtype)
