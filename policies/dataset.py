"""Ark's demonstration dataset: episodes of per-key arrays in a chunked, compressed zarr (v3) store.

Layout of a dataset folder (every file is a zarr v3 document or chunk; nothing is pickled)::

    zarr.json                 root group; attribute ``ark_dataset`` holds the metadata (schema, fps,
                              tasks, statistics, and the commit record: episode and frame counts)
    meta/zarr.json            a second copy of the same metadata, written first on every commit
    data/<key>/               one array per feature, frames along axis 0 (``observation.state``,
                              ``observation.rgb``, ``action``, ``reward``, ``done``, ...), plus the
                              bookkeeping arrays ``episode_index`` and ``frame_index``
    episodes/{from,to,success,seed,task_index}
                              the episode table: frame range ``[from, to)`` and per-episode facts

Appending is atomic from a reader's point of view: an episode's frames and its episode-table row are
written first, and the commit record is updated last (each zarr document is replaced atomically), so
a crash mid-append leaves the previous episodes intact and the next append overwrites the leftovers.
Every chunk carries a CRC32C checksum, so corrupted or truncated chunks are detected on read and by
:meth:`Dataset.validate`, which names the damaged file while the undamaged episodes stay readable.

Images (``uint8`` arrays of shape ``(H, W, C)``) are chunked in small groups of frames so that
:class:`WindowSampler` can fetch (observation history, action chunk) training windows at random
without decoding any video.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ark.errors import ArkError

log = logging.getLogger(__name__)

FORMAT = "ark-dataset"
FORMAT_VERSION = 1
META_ATTR = "ark_dataset"
BACKUP_GROUP = "meta"
AUTO_KEYS = ("episode_index", "frame_index")  # written by append_episode, never by the caller
EPISODE_COLUMNS = {"from": "int64", "to": "int64", "success": "int8", "seed": "int64", "task_index": "int64"}
STAT_NAMES = ("min", "max", "mean", "std")
# Image statistics are estimated per episode from a subsample (like LeRobot's): at most this many
# frames, each strided down to at most this many pixels per side.
IMAGE_STATS_FRAMES = 64
IMAGE_STATS_SIDE = 128
_IMAGE_CHUNK_BYTES = 512 * 1024  # random access reads one chunk per window: keep image chunks small
_VECTOR_CHUNK_BYTES = 128 * 1024
_EPISODE_CHUNK = 4096


class DatasetError(ArkError):
    """A dataset is missing, malformed, truncated or corrupted, or data do not match its schema."""


def _zarr():
    try:
        import zarr
    except ImportError:  # pragma: no cover - the [data] extra is missing
        raise ArkError("datasets need zarr: pip install 'ark-robotics[data]'") from None
    return zarr


# -- schema --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    """One per-frame key of a dataset: numpy dtype name, per-frame shape and optional element names."""

    dtype: str
    shape: tuple[int, ...]
    names: list[str] | None = None

    @property
    def is_image(self) -> bool:
        """True for ``uint8`` frames of shape ``(H, W, C)`` with 1, 3 or 4 channels."""
        return self.dtype == "uint8" and len(self.shape) == 3 and self.shape[-1] in (1, 3, 4)

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape), "names": self.names}

    @classmethod
    def parse(cls, key: str, spec: Any) -> "Feature":
        """Build a feature from a dict ``{"dtype", "shape", "names"}`` (or a Feature); bad specs raise DatasetError."""
        if isinstance(spec, Feature):
            return spec
        if not isinstance(spec, Mapping) or "dtype" not in spec or "shape" not in spec:
            raise DatasetError(f"feature {key!r}: expected a mapping with 'dtype' and 'shape', got {spec!r}")
        try:
            dtype = np.dtype(spec["dtype"])
        except TypeError:
            raise DatasetError(f"feature {key!r}: unknown dtype {spec['dtype']!r}") from None
        if dtype.kind not in "biuf":
            raise DatasetError(f"feature {key!r}: dtype {dtype} is not numeric or bool")
        shape = spec["shape"]
        if not isinstance(shape, (list, tuple)) or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
            raise DatasetError(f"feature {key!r}: shape must be a list of positive ints, got {shape!r}")
        names = spec.get("names")
        if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
            raise DatasetError(f"feature {key!r}: names must be a list of strings or null, got {names!r}")
        return cls(dtype.name, tuple(int(d) for d in shape), list(names) if names is not None else None)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or "/" in key or key.startswith("__") or key in (".", ".."):
        raise DatasetError(f"feature key {key!r} is not allowed (non-empty, no '/', not starting with '__')")
    if key in AUTO_KEYS:
        raise DatasetError(f"feature key {key!r} is reserved: the dataset writes it itself")


def default_chunk_frames(feature: Feature) -> int:
    """Frames per chunk for a feature: small groups for images (random access), large ones for vectors."""
    if feature.is_image or len(feature.shape) >= 2:
        target, low, high = _IMAGE_CHUNK_BYTES, 1, 256
    else:
        target, low, high = _VECTOR_CHUNK_BYTES, 256, 8192
    frames = 2 ** int(math.floor(math.log2(max(1, target // max(1, feature.frame_bytes)))))
    return int(min(high, max(low, frames)))


def _codecs(feature: Feature):
    from zarr.codecs import BloscCodec, Crc32cCodec

    itemsize = np.dtype(feature.dtype).itemsize
    shuffle = "noshuffle" if itemsize == 1 else "shuffle"
    return [BloscCodec(cname="zstd", clevel=3 if feature.is_image else 5, shuffle=shuffle, typesize=itemsize),
            Crc32cCodec()]


# -- statistics ----------------------------------------------------------------------------------
def feature_stats(feature: Feature, values: np.ndarray) -> dict[str, np.ndarray]:
    """min/max/mean/std (float64) and count of one episode's frames of a feature.

    Vector features get per-element statistics of the feature's shape; images get per-channel
    statistics of shape ``(C,)`` in the stored units (0-255), estimated from a subsample.
    """
    if feature.is_image:
        step = max(1, math.ceil(len(values) / IMAGE_STATS_FRAMES))
        side = max(1, math.ceil(max(feature.shape[0], feature.shape[1]) / IMAGE_STATS_SIDE))
        x = np.asarray(values[::step, ::side, ::side], dtype=np.float64)
        axes: tuple[int, ...] = (0, 1, 2)
    else:
        x = np.asarray(values, dtype=np.float64)
        axes = (0,)
    return {"min": x.min(axis=axes), "max": x.max(axis=axes), "mean": x.mean(axis=axes), "std": x.std(axis=axes),
            "count": np.asarray(len(values), dtype=np.int64)}


def merge_stats(a: Mapping[str, np.ndarray] | None, b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Combine the statistics of two disjoint sets of frames (counts weight the means and variances)."""
    if a is None:
        return {k: np.asarray(v) for k, v in b.items()}
    na, nb = float(a["count"]), float(b["count"])
    n = na + nb
    mean = (na * a["mean"] + nb * b["mean"]) / n
    var = (na * (a["std"] ** 2 + (a["mean"] - mean) ** 2) + nb * (b["std"] ** 2 + (b["mean"] - mean) ** 2)) / n
    return {"min": np.minimum(a["min"], b["min"]), "max": np.maximum(a["max"], b["max"]), "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)), "count": np.asarray(int(n), dtype=np.int64)}


def _stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {key: {k: np.asarray(v).tolist() for k, v in s.items()} for key, s in stats.items()}


def _stats_from_json(raw: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for key, s in raw.items():
        out[key] = {k: np.asarray(v, dtype=np.int64 if k == "count" else np.float64) for k, v in s.items()}
    return out


# -- metadata ------------------------------------------------------------------------------------
def _parse_meta(doc: Any, where: str) -> dict:
    """Check a metadata document read from ``where``; return its ark_dataset attribute or raise DatasetError."""
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise DatasetError(f"{where}: not a zarr v3 group document")
    meta = (doc.get("attributes") or {}).get(META_ATTR)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(f"{where}: no Ark dataset metadata (attribute {META_ATTR!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > FORMAT_VERSION:
        raise DatasetError(f"{where}: dataset format version {meta.get('version')!r} is newer than this Ark "
                           f"understands ({FORMAT_VERSION}); upgrade Ark")
    fps = meta.get("fps")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
        raise DatasetError(f"{where}: fps must be a positive number, got {fps!r}")
    for name in ("num_episodes", "num_frames"):
        if not isinstance(meta.get(name), int) or meta[name] < 0:
            raise DatasetError(f"{where}: {name} must be a non-negative int, got {meta.get(name)!r}")
    if not isinstance(meta.get("features"), dict) or not meta["features"]:
        raise DatasetError(f"{where}: features must be a non-empty mapping")
    for key, spec in meta["features"].items():
        Feature.parse(key, spec)
    if not isinstance(meta.get("chunk_frames"), dict) or set(meta["chunk_frames"]) != set(meta["features"]) | set(AUTO_KEYS):
        raise DatasetError(f"{where}: chunk_frames must name every feature")
    if not isinstance(meta.get("tasks"), list) or not isinstance(meta.get("stats", {}), dict):
        raise DatasetError(f"{where}: tasks must be a list and stats a mapping")
    return meta


def _read_meta_file(root: Path, group: str) -> dict:
    rel = f"{group}/zarr.json" if group else "zarr.json"
    path = root / rel
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; "
                           f"truncated or corrupted)") from None
    return _parse_meta(doc, str(path))


def _write_meta_file(root: Path, group: str, meta: dict) -> None:
    """Replace one metadata copy atomically (a zarr v3 group document, written beside and renamed)."""
    path = root / (f"{group}/zarr.json" if group else "zarr.json")
    doc = {"zarr_format": 3, "node_type": "group", "attributes": {META_ATTR: meta}}
    tmp = path.with_name(f".zarr.json.{os.getpid()}.partial")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)


# -- the dataset ---------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    """What :meth:`Dataset.validate` found: problems (each ``file: what``) and the episodes they touch."""

    path: Path
    num_episodes: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damaged_episodes: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def intact_episodes(self) -> list[int]:
        damaged = set(self.damaged_episodes)
        return [i for i in range(self.num_episodes) if i not in damaged]

    def summary(self) -> str:
        """One line: the first problem, how many more, and how many episodes are intact."""
        if self.ok:
            return f"{self.path}: ok ({self.num_episodes} episodes)"
        more = f" (+{len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        return (f"dataset {self.path} is damaged: {self.problems[0]}{more}; "
                f"{len(self.intact_episodes)} of {self.num_episodes} episodes intact")


class Dataset:
    """An Ark demonstration dataset on disk. Make one with :meth:`create`, reopen it with :meth:`open`.

    Frames are addressed by a global index ``0 <= i < len(dataset)``; episode ``e`` owns frames
    ``episode_bounds(e)``. Per-key arrays hold ``(num_frames, *feature.shape)`` values.
    """

    def __init__(self, path: Path, meta: dict, *, read_only: bool, meta_problems: list[str]):
        zarr = _zarr()
        self.path = path
        self.read_only = read_only
        self._meta = meta
        self._meta_problems = meta_problems  # damaged metadata copies found at open time
        self._store = zarr.storage.LocalStore(str(path), read_only=read_only)
        self._arrays: dict[str, Any] = {}
        self._features = {k: Feature.parse(k, v) for k, v in meta["features"].items()}
        self._load_episode_table()

    # construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, features: Mapping[str, Any], fps: float, *,
               tasks: Sequence[str] = (), info: Mapping[str, Any] | None = None,
               chunk_frames: Mapping[str, int] | None = None, overwrite: bool = False) -> "Dataset":
        """Create an empty dataset with the given per-frame ``features`` (key -> dtype/shape/names) and fps.

        ``tasks`` are task descriptions episodes may refer to; ``info`` is free-form JSON provenance
        (environment, policy, ...); ``chunk_frames`` overrides frames per chunk for some keys.
        """
        zarr = _zarr()
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise DatasetError(f"{path} already exists (pass overwrite=True, or choose another path)")
            if not (path / "zarr.json").exists() and any(path.iterdir()):
                raise DatasetError(f"{path} exists and is not an Ark dataset; refusing to overwrite it")
            shutil.rmtree(path)
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
            raise DatasetError(f"fps must be a positive number, got {fps!r}")
        if not features:
            raise DatasetError("a dataset needs at least one feature")
        feats: dict[str, Feature] = {}
        for key, spec in features.items():
            _check_key(key)
            feats[key] = Feature.parse(key, spec)
        all_feats = {**feats, "episode_index": Feature("int64", ()), "frame_index": Feature("int64", ())}
        chunks = {k: default_chunk_frames(f) for k, f in all_feats.items()}
        for key, n in (chunk_frames or {}).items():
            if key not in chunks or not isinstance(n, int) or n < 1:
                raise DatasetError(f"chunk_frames[{key!r}]: expected a feature key and a positive int, got {n!r}")
            chunks[key] = n
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "fps": fps,
            "features": {k: f.to_json() for k, f in feats.items()},
            "chunk_frames": chunks, "tasks": list(tasks), "info": json.loads(json.dumps(dict(info or {}))),
            "num_episodes": 0, "num_frames": 0, "stats": {},
        }
        store = zarr.storage.LocalStore(str(path))
        root = zarr.create_group(store=store, zarr_format=3, attributes={META_ATTR: meta})
        root.create_group(BACKUP_GROUP, attributes={META_ATTR: meta})
        for key, feat in all_feats.items():
            root.create_array(f"data/{key}", shape=(0, *feat.shape), chunks=(chunks[key], *feat.shape),
                              dtype=feat.dtype, compressors=_codecs(feat), fill_value=0,
                              attributes={"feature": feat.to_json()}, config={"write_empty_chunks": True})
        for name, dtype in EPISODE_COLUMNS.items():
            root.create_array(f"episodes/{name}", shape=(0,), chunks=(_EPISODE_CHUNK,), dtype=dtype,
                              compressors=_codecs(Feature(dtype, (1,))), fill_value=0,
                              config={"write_empty_chunks": True})
        return cls(path, meta, read_only=False, meta_problems=[])

    @classmethod
    def open(cls, path: str | os.PathLike, *, read_only: bool = False) -> "Dataset":
        """Open an existing dataset. A damaged metadata copy is tolerated while the other one is intact."""
        _zarr()
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"no dataset at {path}")
        if not (path / "zarr.json").exists() and not (path / BACKUP_GROUP / "zarr.json").exists():
            raise DatasetError(f"{path} is not an Ark dataset (no zarr.json)")
        problems: list[str] = []
        metas = []
        for group in ("", BACKUP_GROUP):
            try:
                metas.append(_read_meta_file(path, group))
            except DatasetError as exc:
                metas.append(None)
                problems.append(str(exc))
        meta = metas[0] or metas[1]
        if meta is None:
            raise DatasetError(f"{problems[0]}; the backup copy is damaged too ({problems[1]})")
        if metas[0] is None:
            log.warning("%s; reading the backup copy %s/%s/zarr.json", problems[0], path, BACKUP_GROUP)
        return cls(path, meta, read_only=read_only, meta_problems=problems)

    # schema and sizes -------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return self._meta["fps"]

    @property
    def features(self) -> dict[str, Feature]:
        """The caller's per-frame features (without the bookkeeping keys)."""
        return dict(self._features)

    @property
    def keys(self) -> list[str]:
        return list(self._features)

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self._features.items() if f.is_image]

    @property
    def tasks(self) -> list[str]:
        return list(self._meta["tasks"])

    @property
    def info(self) -> dict:
        return json.loads(json.dumps(self._meta["info"]))

    @property
    def chunk_frames(self) -> dict[str, int]:
        return dict(self._meta["chunk_frames"])

    @property
    def num_episodes(self) -> int:
        return self._meta["num_episodes"]

    @property
    def num_frames(self) -> int:
        return self._meta["num_frames"]

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, episodes={self.num_episodes}, frames={self.num_frames}, keys={self.keys})"

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Normalisation statistics per feature: min/max/mean/std arrays and the frame count."""
        return _stats_from_json(self._meta.get("stats", {}))

    def _feature(self, key: str) -> Feature:
        if key in self._features:
            return self._features[key]
        if key in AUTO_KEYS:
            return Feature("int64", ())
        raise DatasetError(f"{self.path}: no feature {key!r} (features: {', '.join(self._features)})")

    # episode table ----------------------------------------------------------------------------
    def _load_episode_table(self) -> None:
        n = self.num_episodes
        self._episode_table_error: str | None = None
        cols: dict[str, np.ndarray] = {}
        try:
            for name in EPISODE_COLUMNS:
                cols[name] = self._read_raw(f"episodes/{name}", 0, n)
        except DatasetError as exc:
            # The per-frame episode_index array is a second record of the boundaries.
            self._episode_table_error = str(exc)
            log.warning("%s; rebuilding episode boundaries from data/episode_index", exc)
            ei = self.read("episode_index", 0, self.num_frames) if self.num_frames else np.zeros(0, np.int64)
            starts = np.flatnonzero(np.r_[True, ei[1:] != ei[:-1]]) if len(ei) else np.zeros(0, np.int64)
            if len(starts) != n:
                raise DatasetError(f"{exc}; data/episode_index cannot replace it either") from None
            cols = {"from": starts, "to": np.r_[starts[1:], self.num_frames].astype(np.int64),
                    "success": np.full(n, -1, np.int8), "seed": np.full(n, -1, np.int64),
                    "task_index": np.zeros(n, np.int64)}
        self._ep = cols

    def episode_bounds(self, episode: int) -> tuple[int, int]:
        """Global frame range ``[from, to)`` of an episode."""
        e = self._episode_index(episode)
        return int(self._ep["from"][e]), int(self._ep["to"][e])

    def episode_info(self, episode: int) -> dict:
        """Per-episode facts: length, success (True/False/None), seed (None when unknown) and task."""
        e = self._episode_index(episode)
        success = int(self._ep["success"][e])
        seed = int(self._ep["seed"][e])
        task_i = int(self._ep["task_index"][e])
        tasks = self._meta["tasks"]
        return {"episode_index": e, "length": int(self._ep["to"][e] - self._ep["from"][e]),
                "success": None if success < 0 else bool(success), "seed": None if seed < 0 else seed,
                "task": tasks[task_i] if 0 <= task_i < len(tasks) else None}

    @property
    def episode_lengths(self) -> np.ndarray:
        return (self._ep["to"] - self._ep["from"]).astype(np.int64)

    @property
    def episode_success(self) -> np.ndarray:
        """Per-episode success as int8: 1 success, 0 failure, -1 unknown."""
        return self._ep["success"].copy()

    def episode_of(self, index: int | np.ndarray) -> int | np.ndarray:
        """Episode that owns global frame ``index`` (also element-wise for an array of indices)."""
        found = np.searchsorted(self._ep["to"], index, side="right")
        return found if isinstance(index, np.ndarray) else int(found)

    def _episode_index(self, episode: int) -> int:
        n = self.num_episodes
        if not isinstance(episode, (int, np.integer)) or not -n <= episode < n:
            raise DatasetError(f"{self.path}: no episode {episode} (the dataset has {n})")
        return int(episode) % n

    # reading ----------------------------------------------------------------------------------
    def _array(self, name: str):
        """The zarr array at ``name`` (``data/<key>`` or ``episodes/<col>``), opened once."""
        arr = self._arrays.get(name)
        if arr is None:
            zarr = _zarr()
            try:
                with zarr.config.set({"array.write_empty_chunks": True}):
                    arr = zarr.open_array(store=self._store, path=name, mode="r" if self.read_only else "r+",
                                          zarr_format=3)
            except Exception as exc:  # zarr raises several types for missing or malformed metadata
                raise DatasetError(f"{self.path / name / 'zarr.json'}: cannot open array ({_reason(exc)})") from None
            self._arrays[name] = arr
        return arr

    def _chunk_file(self, name: str, ndim: int, chunk: int) -> Path:
        """File of chunk ``chunk`` along axis 0 (chunks span the other axes whole; zarr's default "c/i/0/..." keys)."""
        return self.path.joinpath(name, "c", str(chunk), *(["0"] * (ndim - 1)))

    def _read_raw(self, name: str, start: int, stop: int) -> np.ndarray:
        arr = self._array(name)
        if arr.shape[0] < stop:
            raise DatasetError(f"{self.path / name / 'zarr.json'}: holds {arr.shape[0]} rows, the metadata "
                               f"commits {stop} (truncated)")
        if stop <= start:
            return np.zeros((0, *arr.shape[1:]), dtype=arr.dtype)
        per = arr.chunks[0]
        for c in range(start // per, (stop - 1) // per + 1):
            f = self._chunk_file(name, arr.ndim, c)
            if not f.exists():  # zarr would silently return the fill value
                raise DatasetError(f"{f}: chunk file missing (rows {c * per}-{(c + 1) * per - 1}; truncated copy?)")
        try:
            return arr[start:stop]
        except Exception as exc:
            for c in range(start // per, (stop - 1) // per + 1):
                try:
                    arr[c * per:min((c + 1) * per, arr.shape[0])]
                except Exception as inner:
                    raise DatasetError(f"{self._chunk_file(name, arr.ndim, c)}: {_reason(inner)} "
                                       f"(rows {c * per}-{(c + 1) * per - 1})") from None
            raise DatasetError(f"{self.path / name}: cannot read rows {start}-{stop - 1} ({_reason(exc)})") from None

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` (global indices) of one key; damaged chunks raise DatasetError naming the file."""
        self._feature(key)
        stop = self.num_frames if stop is None else stop
        if not 0 <= start <= stop <= self.num_frames:
            raise DatasetError(f"{self.path}: frames {start}-{stop} out of range (0-{self.num_frames})")
        return self._read_raw(f"data/{key}", start, stop)

    def episode(self, episode: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """All frames of one episode as ``{key: array}`` (every feature unless ``keys`` names some)."""
        lo, hi = self.episode_bounds(episode)
        return {k: self.read(k, lo, hi) for k in (self.keys if keys is None else keys)}

    def window(self, index: int, obs_horizon: int = 1, action_horizon: int = 1, keys: Sequence[str] | None = None,
               action_keys: Sequence[str] = ("action",), action_start: int = 0) -> dict[str, np.ndarray]:
        """The training window anchored at global frame ``index``.

        Observation keys give ``obs_horizon`` frames ending at ``index``; action keys give
        ``action_horizon`` frames starting at ``index + action_start`` (0 for ACT; ``1 - obs_horizon``
        for Diffusion Policy). Steps outside the episode repeat its first or last frame and are
        flagged in ``<key>_is_pad``.
        """
        keys = list(keys) if keys is not None else default_window_keys(self, action_keys)
        if not 0 <= index < self.num_frames:
            raise DatasetError(f"{self.path}: frame {index} out of range (0-{self.num_frames - 1})")
        lo, hi = self.episode_bounds(self.episode_of(index))
        obs_idx, obs_pad, act_idx, act_pad = _window_indices(np.asarray([index]), np.asarray([lo]), np.asarray([hi]),
                                                             obs_horizon, action_horizon, action_start)
        out: dict[str, np.ndarray] = {}
        for key in keys:
            idx, pad = (act_idx[0], act_pad[0]) if key in action_keys else (obs_idx[0], obs_pad[0])
            a, b = int(idx.min()), int(idx.max()) + 1
            out[key] = self.read(key, a, b)[idx - a]
            out[f"{key}_is_pad"] = pad
        return out

    # writing ----------------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.read_only:
            raise DatasetError(f"{self.path} was opened read-only")
        if self._meta_problems:
            raise DatasetError(f"{self.path}: metadata is damaged ({self._meta_problems[0]}); "
                               f"run `ark dataset validate --repair {self.path}` first")

    def _coerce(self, data: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        missing = [k for k in self._features if k not in data]
        extra = [k for k in data if k not in self._features]
        if missing or extra:
            raise DatasetError(f"episode keys do not match the dataset: missing {missing or 'none'}, "
                               f"unexpected {extra or 'none'}")
        out: dict[str, np.ndarray] = {}
        length = None
        for key, feat in self._features.items():
            x = np.asarray(data[key])
            if x.shape[1:] != feat.shape:
                raise DatasetError(f"episode key {key!r}: frames of shape {x.shape[1:]}, the dataset expects {feat.shape}")
            if length is None:
                length = len(x)
            elif len(x) != length:
                raise DatasetError(f"episode key {key!r} has {len(x)} frames, {next(iter(self._features))!r} has {length}")
            if x.dtype != np.dtype(feat.dtype):
                if not np.can_cast(x.dtype, feat.dtype, casting="same_kind"):
                    raise DatasetError(f"episode key {key!r}: dtype {x.dtype} cannot be stored as {feat.dtype}")
                x = x.astype(feat.dtype)
            out[key] = np.ascontiguousarray(x)
        if not length:
            raise DatasetError("an episode needs at least one frame")
        return out, int(length)

    def append_episode(self, data: Mapping[str, Any], *, success: bool | None = None, seed: int | None = None,
                       task: str | None = None) -> int:
        """Write one episode (``{key: array of frames}``, every feature) and commit it; returns its index.

        The episode becomes visible only after all of its data are on disk.
        """
        self._require_writable()
        values, length = self._coerce(data)
        e, start = self.num_episodes, self.num_frames
        stop = start + length
        values["episode_index"] = np.full(length, e, dtype=np.int64)
        values["frame_index"] = np.arange(length, dtype=np.int64)
        tasks = list(self._meta["tasks"])
        if task is not None and task not in tasks:
            tasks.append(task)
        row = {"from": start, "to": stop, "success": -1 if success is None else int(bool(success)),
               "seed": -1 if seed is None else int(seed), "task_index": tasks.index(task) if task is not None else 0}
        # 1. frames (anything past the committed length is leftovers of an interrupted append)
        for key, x in values.items():
            self._write_rows(f"data/{key}", start, x)
        # 2. the episode-table row
        for name, v in row.items():
            self._write_rows(f"episodes/{name}", e, np.asarray([v], dtype=EPISODE_COLUMNS[name]))
        # 3. the commit record, backup copy first
        stats = dict(self._meta.get("stats", {}))
        for key, feat in self._features.items():
            old = _stats_from_json({key: stats[key]})[key] if key in stats else None
            stats[key] = _stats_to_json({key: merge_stats(old, feature_stats(feat, values[key]))})[key]
        meta = {**self._meta, "tasks": tasks, "num_episodes": e + 1, "num_frames": stop, "stats": stats}
        self._commit(meta)
        for name, v in row.items():
            self._ep[name] = np.append(self._ep[name], np.asarray(v, dtype=EPISODE_COLUMNS[name]))
        return e

    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        arr = self._array(name)
        stop = start + len(rows)
        if arr.shape[0] != stop:
            arr.resize((stop, *arr.shape[1:]))
        arr[start:stop] = rows

    def _commit(self, meta: dict) -> None:
        _write_meta_file(self.path, BACKUP_GROUP, meta)
        _write_meta_file(self.path, "", meta)
        self._meta = meta

    def compute_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Recompute every feature's statistics from the stored episodes, save and return them."""
        self._require_writable()
        stats: dict[str, dict[str, np.ndarray]] = {}
        for e in range(self.num_episodes):
            lo, hi = self.episode_bounds(e)
            for key, feat in self._features.items():
                stats[key] = merge_stats(stats.get(key), feature_stats(feat, self.read(key, lo, hi)))
        self._commit({**self._meta, "stats": _stats_to_json(stats)})
        return stats

    def set_info(self, **info: Any) -> None:
        """Add or replace provenance entries (JSON values) in the dataset's ``info``."""
        self._require_writable()
        self._commit({**self._meta, "info": {**self._meta["info"], **json.loads(json.dumps(info))}})

    def repair_metadata(self) -> list[str]:
        """Rewrite a damaged metadata copy from the intact one; returns what was repaired."""
        if self.read_only:
            raise DatasetError(f"{self.path} was opened read-only")
        fixed = [p.split(":")[0] for p in self._meta_problems]
        if fixed:
            self._meta_problems = []
            self._commit(self._meta)
        return fixed

    # validation -------------------------------------------------------------------------------
    def validate(self, *, raise_error: bool = True) -> ValidationReport:
        """Check metadata, every array's schema and length, every chunk's presence and checksum, the episode
        table and the statistics. Raises DatasetError (one line naming the first damaged file) unless
        ``raise_error`` is False; the report lists every problem and the episodes that are still intact."""
        rep = ValidationReport(self.path, self.num_episodes)
        rep.problems.extend(self._meta_problems)
        n_frames = self.num_frames
        damaged_frames: list[tuple[int, int]] = []
        if not self._meta_problems:
            try:
                if _read_meta_file(self.path, BACKUP_GROUP) != _read_meta_file(self.path, ""):
                    rep.notes.append("the two metadata copies differ (an append was interrupted); the next append "
                                     "rewrites both")
            except DatasetError as exc:
                rep.problems.append(str(exc))
        for key in [*self._features, *AUTO_KEYS]:
            feat = self._feature(key)
            name = f"data/{key}"
            try:
                arr = self._array(name)
            except DatasetError as exc:
                rep.problems.append(str(exc))
                damaged_frames.append((0, n_frames))
                continue
            if arr.dtype != np.dtype(feat.dtype) or tuple(arr.shape[1:]) != feat.shape:
                rep.problems.append(f"{self.path / name / 'zarr.json'}: holds {arr.dtype} frames of shape "
                                    f"{tuple(arr.shape[1:])}, the schema says {feat.dtype} {feat.shape}")
                damaged_frames.append((0, n_frames))
                continue
            damaged_frames.extend(self._check_chunks(name, n_frames, rep))
        for col in EPISODE_COLUMNS:
            self._check_chunks(f"episodes/{col}", self.num_episodes, rep)
        if self._episode_table_error:
            rep.notes.append("episode boundaries were rebuilt from data/episode_index")
        lengths = self.episode_lengths
        if self.num_episodes and (self._ep["from"][0] != 0 or self._ep["to"][-1] != n_frames
                                  or np.any(self._ep["from"][1:] != self._ep["to"][:-1]) or np.any(lengths <= 0)):
            rep.problems.append(f"{self.path / 'episodes'}: episode boundaries are not contiguous over "
                                f"{n_frames} frames")
            damaged_frames.append((0, n_frames))
        elif self.num_episodes and not damaged_frames:
            expect_e = np.repeat(np.arange(self.num_episodes), lengths)
            expect_f = np.arange(n_frames) - np.repeat(self._ep["from"], lengths)
            for key, expect in (("episode_index", expect_e), ("frame_index", expect_f)):
                bad = np.flatnonzero(self.read(key) != expect)
                if len(bad):
                    rep.problems.append(f"{self.path / 'data' / key}: disagrees with the episode table at frame {bad[0]}")
                    damaged_frames.append((int(bad[0]), int(bad[-1]) + 1))
        stats = self._meta.get("stats", {})
        for key, feat in self._features.items():
            if self.num_episodes == 0:
                break
            want = (feat.shape[-1],) if feat.is_image else feat.shape
            s = stats.get(key)
            try:
                ok = s is not None and all(np.asarray(s[n], dtype=np.float64).shape == want for n in STAT_NAMES)
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                rep.problems.append(f"{self.path / 'zarr.json'}: statistics of {key!r} are missing or malformed "
                                    f"(recompute with Dataset.compute_stats())")
        damaged: set[int] = set()
        for a, b in damaged_frames:
            if b > a and self.num_episodes:
                first, last = self.episode_of(a), self.episode_of(b - 1)
                damaged.update(range(int(first), min(int(last), self.num_episodes - 1) + 1))
        rep.damaged_episodes = sorted(damaged)
        if raise_error and not rep.ok:
            raise DatasetError(rep.summary())
        return rep

    def _check_chunks(self, name: str, rows: int, rep: ValidationReport) -> list[tuple[int, int]]:
        """Decode every chunk of ``name`` that holds committed rows; returns the damaged row ranges."""
        try:
            arr = self._array(name)
        except DatasetError as exc:
            rep.problems.append(str(exc))
            return [(0, rows)]
        if arr.shape[0] < rows:
            rep.problems.append(f"{self.path / name / 'zarr.json'}: holds {arr.shape[0]} rows, the metadata commits "
                                f"{rows} (truncated)")
            return [(arr.shape[0], rows)]
        damaged = []
        per = arr.chunks[0]
        for c in range(0, math.ceil(rows / per)):
            a, b = c * per, min((c + 1) * per, rows)
            try:
                self._read_raw(name, a, b)
            except DatasetError as exc:
                rep.problems.append(str(exc))
                damaged.append((a, b))
        return damaged


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "checksum" in text.lower():
        return "checksum mismatch (corrupted or truncated chunk)"
    return f"{type(exc).__name__}: {text[:200]}"


# -- training windows ----------------------------------------------------------------------------
def default_window_keys(ds: Dataset, action_keys: Sequence[str] = ("action",)) -> list[str]:
    """Every ``observation*`` key plus the action keys the dataset has."""
    return [k for k in ds.keys if k.startswith("observation")] + [k for k in action_keys if k in ds.features]


def _window_indices(anchor: np.ndarray, lo: np.ndarray, hi: np.ndarray, obs_horizon: int, action_horizon: int,
                    action_start: int = 0):
    """Frame indices (clamped into each window's episode ``[lo, hi)``) and padding flags of observation
    history ``anchor-obs_horizon+1 .. anchor`` and action chunk ``anchor+action_start ..``."""
    if obs_horizon < 1 or action_horizon < 1:
        raise DatasetError(f"horizons must be >= 1, got obs {obs_horizon}, action {action_horizon}")
    obs = anchor[:, None] + np.arange(-obs_horizon + 1, 1)[None, :]
    act = anchor[:, None] + action_start + np.arange(action_horizon)[None, :]
    lo, hi = lo[:, None], hi[:, None]
    return (np.clip(obs, lo, hi - 1), obs < lo, np.clip(act, lo, hi - 1), (act < lo) | (act >= hi))


class WindowSampler:
    """Random access to (observation history, action chunk) windows for training, without video decoding.

    ``sampler[i]`` is the window anchored at the i-th frame of the selected episodes (see
    :meth:`Dataset.window` for the window's layout and padding); ``sample(B)`` draws a batch of
    ``{key: (B, T, ...)}`` arrays plus ``<key>_is_pad`` ``(B, T)`` flags and the anchors' ``index``. Vector keys are held in memory; image keys are read chunk by chunk through an LRU
    cache of decoded chunks (``cache_mb``), or held in memory with ``in_memory=True``.
    """

    def __init__(self, dataset: Dataset, obs_horizon: int = 2, action_horizon: int = 16,
                 keys: Sequence[str] | None = None, action_keys: Sequence[str] = ("action",),
                 episodes: Sequence[int] | None = None, cache_mb: float = 512, in_memory: bool = False,
                 action_start: int = 0):
        self.dataset = dataset
        self.obs_horizon, self.action_horizon, self.action_start = int(obs_horizon), int(action_horizon), int(action_start)
        self.keys = list(keys) if keys is not None else default_window_keys(dataset, action_keys)
        self.action_keys = [k for k in self.keys if k in action_keys]
        _window_indices(np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64), self.obs_horizon,
                        self.action_horizon)
        eps = list(range(dataset.num_episodes)) if episodes is None else [dataset._episode_index(e) for e in episodes]
        bounds = np.asarray([dataset.episode_bounds(e) for e in eps], dtype=np.int64).reshape(-1, 2)
        lengths = bounds[:, 1] - bounds[:, 0]
        self._anchors = np.concatenate([np.arange(a, b) for a, b in bounds]) if len(bounds) else np.zeros(0, np.int64)
        self._lo = np.repeat(bounds[:, 0], lengths)
        self._hi = np.repeat(bounds[:, 1], lengths)
        self._memory: dict[str, np.ndarray] = {}
        for key in self.keys:
            feat = dataset._feature(key)
            if in_memory or not (feat.is_image or len(feat.shape) >= 2):
                self._memory[key] = dataset.read(key)
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_mb * 2**20)

    def __len__(self) -> int:
        return len(self._anchors)

    def _chunk(self, key: str, c: int) -> np.ndarray:
        hit = self._cache.get((key, c))
        if hit is not None:
            self._cache.move_to_end((key, c))
            return hit
        per = self.dataset.chunk_frames[key]
        data = self.dataset.read(key, c * per, min((c + 1) * per, self.dataset.num_frames))
        self._cache[(key, c)] = data
        self._cache_bytes += data.nbytes
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return data

    def _gather(self, key: str, idx: np.ndarray) -> np.ndarray:
        mem = self._memory.get(key)
        if mem is not None:
            return mem[idx]
        feat = self.dataset._feature(key)
        per = self.dataset.chunk_frames[key]
        flat = idx.reshape(-1)
        out = np.empty((len(flat), *feat.shape), dtype=feat.dtype)
        chunks = flat // per
        for c in np.unique(chunks):
            sel = chunks == c
            out[sel] = self._chunk(key, int(c))[flat[sel] - c * per]
        return out.reshape(*idx.shape, *feat.shape)

    def _windows(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        anchor = self._anchors[positions]
        obs, obs_pad, act, act_pad = _window_indices(anchor, self._lo[positions], self._hi[positions],
                                                     self.obs_horizon, self.action_horizon, self.action_start)
        out: dict[str, np.ndarray] = {}
        for key in self.keys:
            is_action = key in self.action_keys
            out[key] = self._gather(key, act if is_action else obs)
            out[f"{key}_is_pad"] = act_pad if is_action else obs_pad
        out["index"] = anchor
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return {k: v[0] for k, v in self._windows(np.asarray([i % len(self)])).items()}

    def sample(self, batch_size: int, rng: np.random.Generator | int | None = None) -> dict[str, np.ndarray]:
        """A batch of ``batch_size`` windows drawn uniformly (with replacement) over the selected frames."""
        if not len(self):
            raise DatasetError(f"{self.dataset.path}: no frames to sample from")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return self._windows(rng.integers(0, len(self), size=batch_size))

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """One pass over every window in batches (shuffled with ``seed`` unless ``shuffle`` is False)."""
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for a in range(0, len(order), batch_size):
            part = order[a:a + batch_size]
            if drop_last and len(part) < batch_size:
                break
            yield self._windows(part)


# -- merging -------------------------------------------------------------------------------------
def merge(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False,
          progress: bool = False) -> Dataset:
    """Concatenate the episodes of several datasets (same features and fps) into a new dataset at ``out``."""
    if not paths:
        raise DatasetError("merge needs at least one dataset")
    out = Path(out)
    sources = [Dataset.open(p, read_only=True) for p in paths]
    if any(s.path.resolve() == out.resolve() for s in sources):
        raise DatasetError(f"{out} is one of the inputs; merge into a new path")
    first = sources[0]
    for s in sources[1:]:
        if s.fps != first.fps:
            raise DatasetError(f"{s.path} records at {s.fps} fps, {first.path} at {first.fps} fps; cannot merge")
        a = {k: (f.dtype, f.shape) for k, f in s.features.items()}
        b = {k: (f.dtype, f.shape) for k, f in first.features.items()}
        if a != b:
            diff = sorted(set(a.items()) ^ set(b.items()))
            raise DatasetError(f"{s.path} and {first.path} have different features (first difference: {diff[0][0]!r})")
    tasks: list[str] = []
    for s in sources:
        tasks += [t for t in s.tasks if t not in tasks]
    dst = Dataset.create(out, first.features, first.fps, tasks=tasks, overwrite=overwrite,
                         chunk_frames=first.chunk_frames,
                         info={"merged_from": [{"path": str(s.path), "episodes": s.num_episodes, "info": s.info}
                                               for s in sources]})
    total = sum(s.num_episodes for s in sources)
    with progress_bar(progress, "merging", total) as advance:
        for s in sources:
            for e in range(s.num_episodes):
                meta = s.episode_info(e)
                dst.append_episode(s.episode(e), success=meta["success"], seed=meta["seed"], task=meta["task"])
                advance()
    return dst


class progress_bar:
    """A rich progress bar (or nothing): ``with progress_bar(on, label, total) as advance: advance()``."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda n=1: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=False)
        self._bar.__enter__()
        task = self._bar.add_task(self.label, total=self.total)
        return lambda n=1: self._bar.advance(task, n)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
