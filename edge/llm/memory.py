"""Process memory as the operating system sees it: resident set now, peak, and sizes like "64MB"."""

from __future__ import annotations

import mmap
import os
import re
import resource
import threading

import numpy as np

from edge.llm.errors import LLMError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_size(value: int | float | str) -> int:
    """Bytes from ``64MB``, ``1.5G``, ``512k`` or a number (units are powers of 1024, like llama.cpp's)."""
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).upper() not in _UNITS:
        raise LLMError(f"memory size {value!r}: expected a number with an optional unit (e.g. 64MB, 1.5GB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_size(n: float) -> str:
    """``123.4 MiB``-style text for a byte count."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Resident set size of this process now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (since start, or since ``reset_peak_rss``)."""
    hwm = _status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Restart the peak at the current RSS (Linux ``clear_refs``); False where the OS cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class load_phase:
    """Context for loading weights: big temporaries go straight back to the OS (glibc only).

    Quantising a model allocates many multi-MB float temporaries between small long-lived
    buffers; with glibc's default, adaptive mmap threshold they land in the heap, fragment it
    and stay resident (SmolLM2 at int8: +260 MB). Inside this context allocations over 1 MiB
    are mmapped and unmapped on free; on exit free heap pages are trimmed and the thresholds
    are pinned high (decode then reuses its scratch from the heap without page faults).
    """

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def __enter__(self) -> "load_phase":
        self._libc = None
        try:
            import ctypes

            self._libc = ctypes.CDLL("libc.so.6")
            self._libc.mallopt(self.M_MMAP_THRESHOLD, 1 << 20)
        except (OSError, AttributeError):
            self._libc = None  # not glibc: nothing to tune
        return self

    def __exit__(self, *exc: object) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)
            # Pinning one threshold turns glibc's adaptation off for both: keep the heap's top
            # (trim) high too, or every freed scratch buffer is returned and faulted back in.
            self._libc.mallopt(self.M_MMAP_THRESHOLD, 64 << 20)
            self._libc.mallopt(self.M_TRIM_THRESHOLD, 256 << 20)


_mapped = threading.local()
MAPPED_MIN_BYTES = 1 << 20  # smaller buffers reuse heap holes well; mapping them cost SmolLM2 a quarter of its capped decode speed
# Pre-fault the pages in one call (Linux): the buffer is written at once anyway, and a fault
# per 4 KiB page made streamed loads slower.
_MAP_FLAGS = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | getattr(mmap, "MAP_POPULATE", 0)


class mapped_allocations:
    """Within this context, on this thread only, weight buffers made through :func:`empty_bytes`
    get an anonymous memory map of their own, unmapped when the buffer is freed.

    For the blocks a memory-capped model streams: read, used and dropped every token, on the
    heap they fragment it and the heap keeps growing. The compute's scratch stays on the heap,
    where reusing it is fast (making glibc map every allocation over 1 MiB instead made decode
    3-4x slower). Development runs, toggling this on a synthetic 4-layer model with 54 MiB
    blocks (``benchmarks/llm_memory.py --dim 2048 --layers 4 --heads 16 --kv-heads 4 --ffn
    5632``), peak RSS above the runtime: 192 MiB on the heap, 174 mapping buffers from 64 KiB
    and 182 from 1 MiB (the floor kept, see MAPPED_MIN_BYTES) under a 128 MB budget, at the
    same decode speed. The committed benchmark's figures are in benchmarks/RESULTS.md.
    """

    def __enter__(self) -> "mapped_allocations":
        self._outer = getattr(_mapped, "on", False)
        _mapped.on = True
        return self

    def __exit__(self, *exc: object) -> None:
        _mapped.on = self._outer


def empty_bytes(n: int) -> np.ndarray:
    """An uninitialised uint8 buffer of ``n`` bytes: mapped inside ``mapped_allocations``."""
    if n >= MAPPED_MIN_BYTES and getattr(_mapped, "on", False):
        return np.frombuffer(mmap.mmap(-1, n, flags=_MAP_FLAGS), dtype=np.uint8)
    return np.empty(n, dtype=np.uint8)
