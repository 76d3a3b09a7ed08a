"""Latent coding: per-channel affine quantisation to 2, 4 or 8 bits, bit packing, zstd, and a
self-describing packet whose every byte is counted.

Packet layout (little-endian), ``HEADER_BYTES`` + ranges + body + 4 bytes::

    offset size field
    0      2    magic b"AS"
    2      1    format version (1)
    3      1    flags: bit 0 body is zstd (magicless frame), bit 1 per-frame ranges follow the header
    4      1    width index k
    5      1    bits n (2, 4 or 8)
    6      3    latent shape C, H, W (one byte each)
    9      8    model fingerprint (see edge.split.checkpoint)
    17     4C   only with flag bit 1: per channel lo, hi as float16
    ..     ..   body: the C*H*W codes, n bits each, packed channel-major (zstd'd when smaller)
    -4     4    CRC-32 of everything before it

With static ranges (the default) the per-channel ranges come from calibration and live in
the checkpoint, so the packet carries none; per-frame ranges cost 4 bytes per channel and
follow the frame's own min/max. Decoding checks magic, checksum, fingerprint, width, bit
depth, shape and body size, and raises :class:`~edge.split.errors.PacketError` (one line)
for the first that fails.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

from edge.split.errors import FingerprintMismatch, PacketError

MAGIC = b"AS"
VERSION = 1
BITS = (2, 4, 8)
_HEADER = struct.Struct("<2sBBBBBBB8s")
HEADER_BYTES = _HEADER.size  # 17
CRC_BYTES = 4
FLAG_ZSTD, FLAG_RANGES = 1, 2


def pack_bits(q: np.ndarray, bits: int) -> bytes:
    """Pack uint8 codes below 2**bits, ``8 // bits`` per byte (first code in the low bits)."""
    per = 8 // bits
    flat = np.ascontiguousarray(q, dtype=np.uint8).ravel()
    if per == 1:
        return flat.tobytes()
    pad = (-flat.size) % per
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, np.uint8)])
    groups = flat.reshape(-1, per).astype(np.uint8)
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    return np.bitwise_or.reduce(groups << shifts, axis=1).astype(np.uint8).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` uint8 codes."""
    per = 8 // bits
    raw = np.frombuffer(data, dtype=np.uint8)
    if per == 1:
        return raw[:count].copy()
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    mask = np.uint8((1 << bits) - 1)
    return ((raw[:, None] >> shifts) & mask).ravel()[:count]


def quantise(z: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Per-channel affine quantisation of z (C, H, W) onto 0 .. 2**bits - 1 over [lo, hi]."""
    levels = (1 << bits) - 1
    lo_, hi_ = lo.reshape(-1, 1, 1), hi.reshape(-1, 1, 1)
    scale = np.maximum(hi_ - lo_, 1e-6) / levels
    return np.clip(np.rint((z - lo_) / scale), 0, levels).astype(np.uint8)


def dequantise(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    levels = (1 << bits) - 1
    lo_, hi_ = lo.reshape(-1, 1, 1), hi.reshape(-1, 1, 1)
    return (q.astype(np.float32) * (np.maximum(hi_ - lo_, 1e-6) / levels) + lo_).astype(np.float32)


@dataclass
class Decoded:
    """A decoded packet: the dequantised latent (C, H, W), its width index and bit depth."""

    latent: np.ndarray
    width: int
    bits: int


class LatentCodec:
    """Encoder and decoder of latent packets for one checkpoint.

    ``channels[k]`` is the latent depth of width ``k``; ``lo``/``hi`` the static per-channel
    ranges, (K, 3, C_max) per width and bit depth (2, 4, 8) or (K, C_max) for all depths; ``grid`` the latent's (H, W). ``per_frame_ranges`` sends each
    frame's own ranges instead (4 bytes per channel more).
    """

    def __init__(self, channels: list[int], lo: np.ndarray, hi: np.ndarray, grid: tuple[int, int],
                 fingerprint: bytes, *, level: int = 19, per_frame_ranges: bool = False) -> None:
        if len(fingerprint) != 8:
            raise ValueError("fingerprint must be 8 bytes")
        self.channels = list(channels)
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        if lo.ndim == 2:  # one range for every bit depth
            lo, hi = np.repeat(lo[:, None], len(BITS), 1), np.repeat(hi[:, None], len(BITS), 1)
        self.lo, self.hi = lo, hi  # (widths, len(BITS), C_max)
        self.grid = tuple(grid)
        self.fingerprint = fingerprint
        self.per_frame_ranges = per_frame_ranges
        params = zstandard.ZstdCompressionParameters.from_level(
            level, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
            write_dict_id=False)
        self._zc = zstandard.ZstdCompressor(compression_params=params)
        self._zd = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)

    @classmethod
    def for_model(cls, model, **kw) -> "LatentCodec":
        """The codec of a loaded :class:`~edge.split.checkpoint.SplitModel`."""
        s = model.config.data.size // 8
        r = model.student.ranges
        return cls(model.channels, r.lo.numpy(), r.hi.numpy(), (s, s), model.fingerprint, **kw)

    def body_bytes(self, k: int, bits: int) -> int:
        """Packed (pre-zstd) body size of width ``k`` at ``bits``."""
        n = self.channels[k] * self.grid[0] * self.grid[1]
        return -(-n // (8 // bits))

    def encode(self, z: np.ndarray, k: int, bits: int) -> bytes:
        """One packet from latent ``z`` (channels[k], H, W) float32."""
        if bits not in BITS:
            raise PacketError(f"bit depth {bits} not supported (expected 2, 4 or 8)")
        if not 0 <= k < len(self.channels):
            raise PacketError(f"width index {k} out of range 0..{len(self.channels) - 1}")
        want = (self.channels[k], *self.grid)
        if tuple(z.shape) != want:
            raise PacketError(f"latent shape {tuple(z.shape)} does not match width {k}: expected {want}")
        flags = 0
        extra = b""
        if self.per_frame_ranges:
            lo = z.min(axis=(1, 2)).astype(np.float16)
            hi = z.max(axis=(1, 2)).astype(np.float16)
            flags |= FLAG_RANGES
            extra = np.stack([lo, hi], axis=1).tobytes()
            lo, hi = lo.astype(np.float32), hi.astype(np.float32)
        else:
            lo, hi = self.lo[k, BITS.index(bits), :want[0]], self.hi[k, BITS.index(bits), :want[0]]
        body = pack_bits(quantise(z, lo, hi, bits), bits)
        packed = self._zc.compress(body)
        if len(packed) < len(body):
            body, flags = packed, flags | FLAG_ZSTD
        head = _HEADER.pack(MAGIC, VERSION, flags, k, bits, *want, self.fingerprint)
        msg = head + extra + body
        return msg + struct.pack("<I", zlib.crc32(msg))

    def decode(self, packet: bytes | memoryview | np.ndarray) -> Decoded:
        """The latent of a packet; PacketError (or FingerprintMismatch) naming what is wrong."""
        data = bytes(packet) if not isinstance(packet, bytes) else packet
        if len(data) < HEADER_BYTES + CRC_BYTES:
            raise PacketError(f"packet too short: {len(data)} bytes (header alone is {HEADER_BYTES + CRC_BYTES})")
        magic, version, flags, k, bits, c, h, w, fp = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise PacketError(f"not a latent packet (magic {magic!r}, expected {MAGIC!r})")
        if struct.unpack_from("<I", data, len(data) - CRC_BYTES)[0] != zlib.crc32(data[:-CRC_BYTES]):
            raise PacketError(f"corrupted packet: CRC-32 mismatch over {len(data)} bytes")
        if version != VERSION:
            raise PacketError(f"packet format version {version} not supported (expected {VERSION})")
        if fp != self.fingerprint:
            raise FingerprintMismatch(f"head fingerprint {fp.hex()} != tail's {self.fingerprint.hex()}: "
                                      "head and tail come from different checkpoints")
        if not 0 <= k < len(self.channels):
            raise PacketError(f"width index {k} out of range 0..{len(self.channels) - 1}")
        if bits not in BITS:
            raise PacketError(f"bit depth {bits} not supported (expected 2, 4 or 8)")
        want = (self.channels[k], *self.grid)
        if (c, h, w) != want:
            raise PacketError(f"latent shape {(c, h, w)} does not match width {k}: expected {want}")
        pos = HEADER_BYTES
        if flags & FLAG_RANGES:
            rb = 4 * c
            if len(data) - CRC_BYTES - pos < rb:
                raise PacketError(f"packet too short for {c} per-frame ranges")
            r = np.frombuffer(data, np.float16, 2 * c, pos).reshape(c, 2).astype(np.float32)
            lo, hi = r[:, 0], r[:, 1]
            pos += rb
        else:
            lo, hi = self.lo[k, BITS.index(bits), :c], self.hi[k, BITS.index(bits), :c]
        body = data[pos:-CRC_BYTES]
        expect = self.body_bytes(k, bits)
        if flags & FLAG_ZSTD:
            try:
                body = self._zd.decompress(body, max_output_size=expect)
            except zstandard.ZstdError as exc:
                raise PacketError(f"corrupted payload (zstd: {exc})") from None
        if len(body) != expect:
            raise PacketError(f"payload has {len(body)} bytes, expected {expect} for {c}x{h}x{w} at {bits} bits")
        q = unpack_bits(body, bits, c * h * w).reshape(c, h, w)
        return Decoded(dequantise(q, lo, hi, bits), k, bits)
