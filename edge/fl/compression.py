"""FedZip-style compression of client updates: top-z sparsification, quantisation, lossless coding.

A :class:`Compressor` turns a float32 delta ``(P,)`` into bytes and back:

1. **Sparsify**: keep the ``topk`` fraction of coordinates with the largest magnitude.
2. **Quantise** the kept values: ``kmeans`` (1-D Lloyd with a few centroids, the FedZip
   choice), ``uniform`` ``bits``-bit levels between min and max, ``fp16``, or ``none`` (float32).
3. **Code losslessly**: indices as gaps (delta coding) in LEB128 varints, codes bit-packed,
   the whole payload through zstd.

With ``error_feedback`` the part of each update that compression dropped is kept per client
and added to its next update, so nothing is lost for good (it arrives late). The encoded
blob is self-describing: :func:`decode` needs no configuration, and ``len(blob)`` is exactly
what the update costs on the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import zstandard

from edge.fl.errors import FLConfigError, FLError

MAGIC = b"AFZ1"
_QUANT = {"none": 0, "fp16": 1, "uniform": 2, "kmeans": 3}
_QUANT_NAMES = {v: k for k, v in _QUANT.items()}
# magic, dim, kept, quant, bits, index bytes, codebook bytes, code bytes (before zstd)
_HEADER = struct.Struct("<4sIIBBIII")


class CompressionError(FLError):
    """A compressed update that does not decode (truncated, corrupt, or not Ark's format)."""


@dataclass
class CompressionConfig:
    """How updates are compressed. ``topk``: fraction of coordinates kept (None: all).

    ``quant``: ``kmeans`` (``clusters`` centroids, ``kmeans_iters`` Lloyd iterations),
    ``uniform`` (``bits`` bits), ``fp16`` or ``none``. ``level``: zstd level.
    ``error_feedback``: carry the compression error into the client's next update.
    """

    topk: float | None = 0.01
    quant: str = "kmeans"
    bits: int = 4
    clusters: int = 16
    kmeans_iters: int = 8
    level: int = 3
    error_feedback: bool = True

    def __post_init__(self) -> None:
        if self.topk is not None and not 0 < self.topk <= 1:
            raise FLConfigError(f"compression.topk: expected a fraction in (0, 1] or none, got {self.topk}")
        if self.quant not in _QUANT:
            raise FLConfigError(f"compression.quant: expected one of {', '.join(_QUANT)}, got {self.quant!r}")
        if not 1 <= self.bits <= 8:
            raise FLConfigError(f"compression.bits: expected 1..8, got {self.bits}")
        if not 2 <= self.clusters <= 256:
            raise FLConfigError(f"compression.clusters: expected 2..256, got {self.clusters}")

    @property
    def code_bits(self) -> int:
        return self.bits if self.quant == "uniform" else int(np.ceil(np.log2(self.clusters)))


# ----- lossless pieces ---------------------------------------------------------------------------
def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 varints of non-negative integers (< 2**35), vectorised."""
    v = np.asarray(values, np.uint64)
    nbytes = np.ones(v.size, np.int64)
    for b in range(1, 5):
        nbytes += v >= (np.uint64(1) << np.uint64(7 * b))
    out = np.empty(int(nbytes.sum()), np.uint8)
    pos = np.cumsum(nbytes) - nbytes
    for b in range(int(nbytes.max(initial=0))):
        m = nbytes > b
        byte = ((v[m] >> np.uint64(7 * b)) & np.uint64(0x7F)).astype(np.uint8)
        out[pos[m] + b] = byte | ((nbytes[m] > b + 1).astype(np.uint8) << 7)
    return out.tobytes()


def varint_decode(buf: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`varint_encode`; CompressionError if ``buf`` does not hold ``count`` values."""
    a = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero((a & 0x80) == 0)
    if ends.size != count or (a.size and ends[-1] != a.size - 1):
        raise CompressionError(f"index stream holds {ends.size} values, expected {count}")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts + 1
    out = np.zeros(count, np.uint64)
    for b in range(int(lengths.max(initial=0))):
        m = lengths > b
        out[m] |= (a[starts[m] + b] & np.uint64(0x7F)).astype(np.uint64) << np.uint64(7 * b)
    return out


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned codes (< 2**bits) into a bit stream, ``bits`` per code."""
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    planes = (codes.astype(np.uint8)[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(buf: bytes, bits: int, count: int) -> np.ndarray:
    if bits == 8:
        return np.frombuffer(buf, np.uint8)[:count].copy()
    flat = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")[: count * bits]
    if flat.size != count * bits:
        raise CompressionError("code stream is truncated")
    planes = flat.reshape(count, bits).astype(np.uint8)
    return (planes << np.arange(bits, dtype=np.uint8)).sum(axis=1).astype(np.uint8)


def kmeans_1d(values: np.ndarray, clusters: int, iters: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars: ``(sorted centroids float32, codes uint8)``. Quantile start, so deterministic."""
    v = values.astype(np.float32)
    k = min(clusters, max(int(np.unique(v).size), 1))
    cent = np.quantile(v, (np.arange(k) + 0.5) / k).astype(np.float32)
    for _ in range(iters):
        cent = np.unique(cent)
        codes = np.searchsorted((cent[1:] + cent[:-1]) / 2, v)
        sums = np.bincount(codes, weights=v, minlength=cent.size)
        counts = np.bincount(codes, minlength=cent.size)
        nz = counts > 0
        cent = np.where(nz, sums / np.maximum(counts, 1), cent).astype(np.float32)
    cent = np.unique(cent)
    codes = np.searchsorted((cent[1:] + cent[:-1]) / 2, v).astype(np.uint8)
    return cent, codes


# ----- the codec ----------------------------------------------------------------------------------
def encode(vec: np.ndarray, cfg: CompressionConfig) -> bytes:
    """Compress one float vector under ``cfg`` (no error feedback: see :class:`Compressor`)."""
    v = np.asarray(vec, np.float32).ravel()
    dim = v.size
    if cfg.topk is None or cfg.topk >= 1:
        idx = None
        vals = v
    else:
        k = max(1, int(round(cfg.topk * dim)))
        idx = np.sort(np.argpartition(np.abs(v), dim - k)[dim - k:])
        vals = v[idx]
    index_bytes = b""
    if idx is not None:
        gaps = np.diff(idx, prepend=0).astype(np.uint64)  # the first gap is the first index itself
        index_bytes = varint_encode(gaps)
    quant = cfg.quant
    bits = 0
    codebook = b""
    if quant == "none":
        codes_bytes = vals.astype("<f4").tobytes()
    elif quant == "fp16":
        codes_bytes = vals.astype("<f2").tobytes()
    elif quant == "uniform":
        bits = cfg.bits
        lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 0.0)
        levels = (1 << bits) - 1
        scale = (hi - lo) / levels if hi > lo else 1.0
        codes = np.clip(np.rint((vals - lo) / scale), 0, levels).astype(np.uint8)
        codebook = np.array([lo, scale], "<f4").tobytes()
        codes_bytes = pack_bits(codes, bits)
    else:
        cent, codes = kmeans_1d(vals, cfg.clusters, cfg.kmeans_iters) if vals.size else (np.zeros(1, np.float32),
                                                                                          np.zeros(0, np.uint8))
        bits = max(1, int(np.ceil(np.log2(max(cent.size, 2)))))
        codebook = cent.astype("<f4").tobytes()
        codes_bytes = pack_bits(codes, bits)
    payload = index_bytes + codebook + codes_bytes
    header = _HEADER.pack(MAGIC, dim, vals.size if idx is not None else 0, _QUANT[quant], bits,
                          len(index_bytes), len(codebook), len(codes_bytes))
    return header + zstandard.ZstdCompressor(level=cfg.level).compress(payload)


def decode(blob: bytes | memoryview | np.ndarray) -> np.ndarray:
    """Decompress a blob from :func:`encode` into a dense float32 vector; CompressionError if it is bad."""
    raw = bytes(blob) if not isinstance(blob, bytes) else blob
    if len(raw) < _HEADER.size:
        raise CompressionError(f"compressed update is {len(raw)} bytes, shorter than its header")
    magic, dim, kept, quant, bits, n_idx, n_book, n_codes = _HEADER.unpack_from(raw)
    if magic != MAGIC or quant not in _QUANT_NAMES:
        raise CompressionError("not an Ark compressed update")
    if dim > 1 << 31 or n_idx + n_book + n_codes > 16 * dim + 4096:
        raise CompressionError("compressed update declares impossible sizes")
    try:
        payload = zstandard.ZstdDecompressor().decompress(raw[_HEADER.size:], max_output_size=n_idx + n_book + n_codes)
    except zstandard.ZstdError as exc:
        raise CompressionError(f"compressed update does not decompress: {exc}") from None
    if len(payload) != n_idx + n_book + n_codes:
        raise CompressionError("compressed update payload has the wrong length")
    count = kept if n_idx else dim
    name = _QUANT_NAMES[quant]
    codes_buf = payload[n_idx + n_book:]
    book = np.frombuffer(payload[n_idx:n_idx + n_book], "<f4")
    if name == "none":
        vals = np.frombuffer(codes_buf, "<f4")
    elif name == "fp16":
        vals = np.frombuffer(codes_buf, "<f2").astype(np.float32)
    elif name == "uniform":
        vals = book[0] + book[1] * unpack_bits(codes_buf, bits, count).astype(np.float32)
    else:
        codes = unpack_bits(codes_buf, bits, count)
        if codes.size and int(codes.max()) >= book.size:
            raise CompressionError("code outside the codebook")
        vals = book[codes]
    if vals.size != count:
        raise CompressionError(f"compressed update holds {vals.size} values, expected {count}")
    if not n_idx:
        return np.array(vals, np.float32)
    idx = np.cumsum(varint_decode(payload[:n_idx], kept)).astype(np.int64)
    if idx.size and (idx[-1] >= dim or (np.diff(idx) <= 0).any()):
        raise CompressionError("indices out of range or not increasing")
    out = np.zeros(dim, np.float32)
    out[idx] = vals
    return out


class Compressor:
    """Encodes updates under one :class:`CompressionConfig`, keeping each client's error-feedback residual.

    The residuals are state (``state()`` / ``load_state()``) of whoever compresses: a robot keeps
    its own; the simulator keeps one per simulated client.
    """

    def __init__(self, cfg: CompressionConfig | None = None) -> None:
        self.cfg = cfg or CompressionConfig()
        self.residual: dict[str, np.ndarray] = {}

    def compress(self, delta: np.ndarray, client_id: str = "") -> bytes:
        """Bytes for ``delta`` (plus the client's residual when error feedback is on)."""
        v = np.asarray(delta, np.float32).ravel()
        if self.cfg.error_feedback:
            r = self.residual.get(client_id)
            if r is not None:
                v = v + r
        blob = encode(v, self.cfg)
        if self.cfg.error_feedback:
            self.residual[client_id] = v - decode(blob)
        return blob

    def roundtrip(self, delta: np.ndarray, client_id: str = "") -> tuple[np.ndarray, int]:
        """What the server receives for ``delta`` and how many bytes it took."""
        blob = self.compress(delta, client_id)
        return decode(blob), len(blob)

    def state(self) -> dict[str, np.ndarray]:
        return {f"residual.{k}": v for k, v in self.residual.items()}

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.residual = {k[len("residual."):]: np.array(v) for k, v in arrays.items() if k.startswith("residual.")}


def compression_config(spec: Mapping[str, Any] | None) -> CompressionConfig | None:
    """A CompressionConfig from a mapping (None or ``{}`` = no compression)."""
    if not spec:
        return None
    try:
        return CompressionConfig(**dict(spec))
    except TypeError as exc:
        raise FLConfigError(f"compression: {exc}") from None
