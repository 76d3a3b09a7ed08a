"""Export Ark datasets to the LeRobot dataset layout v3.0, and import them back.

The layout written (as LeRobot's ``LeRobotDataset`` v3.0 reads it)::

    meta/info.json                      codebase_version "v3.0", fps, features, totals, chunks_size,
                                        file-size limits, data_path / video_path templates, splits
    meta/stats.json                     per-feature min/max/mean/std/count and quantiles q01/q10/q50/q90/q99
                                        (images: per channel, in [0, 1], shape (C, 1, 1))
    meta/tasks.parquet                  task strings (the pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet
                                        one row per episode: tasks, length, data/{chunk,file}_index,
                                        dataset_{from,to}_index, videos/<key>/{chunk_index,file_index,
                                        from_timestamp,to_timestamp}, stats/<key>/<stat>,
                                        meta/episodes/{chunk,file}_index
    data/chunk-XXX/file-YYY.parquet     frames of many episodes: the non-image features plus timestamp,
                                        frame_index, episode_index, index, task_index
    videos/<key>/chunk-XXX/file-YYY.mp4 every episode's frames of one camera, back to back

Data and video files roll over to the next file index when they reach the size limits
(``data_files_size_in_mb``, ``video_files_size_in_mb``), and to the next chunk folder after
``chunks_size`` files, as LeRobot does. Videos are encoded with PyAV (libx264 by default; LeRobot's
own default is libsvtav1, available with ``vcodec="libsvtav1"``).

``meta/ark.json`` (ignored by LeRobot) keeps what LeRobot's schema cannot say, so an export imports
back exactly: Ark shapes (LeRobot stores shape ``()`` and ``(1,)`` alike), per-episode success and seed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from policies.dataset import Dataset, DatasetError, Feature, feature_stats, merge_stats, progress_bar

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000  # files per chunk folder
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
INFO_PATH, STATS_PATH, TASKS_PATH, ARK_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/ark.json"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's DEFAULT_QUANTILES, for quantile normalisation
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
_QUANTILE_PIXELS = 4096  # per episode and image feature
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def _deps():
    try:
        import av
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - the [data] extra is missing
        raise DatasetError("LeRobot export/import needs pyarrow and av: pip install 'ark-robotics[data]'") from None
    return pa, pq, av


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


# -- statistics in LeRobot's convention ----------------------------------------------------------
def _lerobot_stats(feat: Feature, stats: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Ark statistics -> LeRobot's: vectors keep their shape (scalars become (1,)); images are per channel,
    scaled to [0, 1], shape (C, 1, 1). Quantiles ``q01`` ... ``q99`` are passed through when present."""
    out: dict[str, list] = {}
    for name in ("min", "max", "mean", "std", *(q for q in QUANTILE_KEYS if q in stats)):
        v = np.asarray(stats[name], dtype=np.float64)
        if feat.is_image:
            v = (v / 255.0).reshape(-1, 1, 1)
        elif v.ndim == 0:
            v = v.reshape(1)
        out[name] = v.tolist()
    out["count"] = [int(stats["count"])]
    return out


def _quantile_samples(feat: Feature, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values of one episode to estimate quantiles from, as ``(samples, *element shape)`` (images: a random
    subset of pixels, ``(samples, C)``; other features: every frame)."""
    if not feat.is_image:
        return np.asarray(values, dtype=np.float32)
    pixels = np.asarray(values).reshape(-1, feat.shape[-1])
    take = rng.choice(len(pixels), size=min(len(pixels), _QUANTILE_PIXELS), replace=False)
    return pixels[take].astype(np.float32)


def _quantiles(samples: np.ndarray) -> dict[str, np.ndarray]:
    q = np.quantile(np.asarray(samples, dtype=np.float64), QUANTILES, axis=0)
    return {key: q[i] for i, key in enumerate(QUANTILE_KEYS)}


# -- video ---------------------------------------------------------------------------------------
class _VideoWriter:
    """Frames of consecutive episodes into one mp4 (frame i at time i / fps)."""

    def __init__(self, path: Path, fps: int, height: int, width: int, vcodec: str, pix_fmt: str, crf: int | None,
                 gop: int):
        _, _, av = _deps()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), mode="w")
        try:
            self.stream = self.container.add_stream(vcodec, rate=fps)
        except Exception as exc:
            self.container.close()
            raise DatasetError(f"video codec {vcodec!r} is not available in PyAV's FFmpeg ({exc})") from None
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        options = {"g": str(gop)}
        if crf is not None:
            options["crf"] = str(crf)
        self.stream.options = options
        self.frames = 0
        self._av = av

    def write(self, frames: np.ndarray) -> None:
        for img in frames:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20 if self.path.exists() else 0.0

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


class _VideoReader:
    """Sequential decoding of episode frame ranges, reopening a file only to go back or change files."""

    def __init__(self, fps: float):
        self.fps = fps
        self.path: Path | None = None
        self._frames = None
        self._next = 0  # frame number the iterator yields next
        self._pending = None

    def _open(self, path: Path) -> None:
        _, _, av = _deps()
        self.close()
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
        except Exception as exc:
            raise DatasetError(f"{path}: cannot open video ({exc})") from None
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        # One reformatter for the file: frame.to_ndarray(format=...) builds a new one per frame,
        # which costs ~50x the conversion itself at small resolutions.
        self._reformatter = av.video.reformatter.VideoReformatter()
        self.path, self._next, self._pending = path, 0, None

    def read(self, path: Path, from_timestamp: float, length: int) -> np.ndarray:
        first = int(round(from_timestamp * self.fps))
        if path != self.path or first < self._next:
            self._open(path)
        out = []
        while len(out) < length:
            if self._pending is not None:
                frame, self._pending = self._pending, None
            else:
                try:
                    frame = next(self._frames)
                except StopIteration:
                    raise DatasetError(f"{path}: video ends before frame {first + length - 1} "
                                       f"(from_timestamp {from_timestamp})") from None
                except Exception as exc:
                    raise DatasetError(f"{path}: cannot decode ({exc})") from None
            number = int(round(frame.time * self.fps)) if frame.time is not None else self._next
            self._next = number + 1
            if number < first:
                continue
            out.append(self._reformatter.reformat(frame, format="rgb24").to_ndarray())
        return np.stack(out)

    def close(self) -> None:
        if self._frames is not None:
            self._container.close()
            self._frames = None
            self.path = None


# -- export --------------------------------------------------------------------------------------
def export_lerobot(src: str | os.PathLike | Dataset, out: str | os.PathLike, *, robot_type: str | None = None,
                   vcodec: str = "libx264", pix_fmt: str = "yuv420p", crf: int | None = None, gop: int = 2,
                   chunks_size: int = DEFAULT_CHUNK_SIZE, data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
                   video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB, overwrite: bool = False,
                   progress: bool = False) -> Path:
    """Write the Ark dataset ``src`` as a LeRobot v3.0 dataset in folder ``out``; returns ``out``.

    RGB image features become mp4 videos (``dtype: video``); scalar and vector features become parquet
    columns. Per-episode tasks come from the Ark dataset (its environment id when recorded by collect).
    """
    pa, pq, _ = _deps()
    ds = src if isinstance(src, Dataset) else Dataset.open(src, read_only=True)
    out = Path(out)
    if float(ds.fps) != int(ds.fps):
        raise DatasetError(f"{ds.path}: LeRobot needs an integer fps, the dataset has {ds.fps}")
    fps = int(ds.fps)
    if ds.num_episodes == 0:
        raise DatasetError(f"{ds.path} has no episodes to export")
    videos, columns = [], []
    for key, feat in ds.features.items():
        if feat.is_image:
            if feat.shape[-1] != 3:
                raise DatasetError(f"feature {key!r}: only RGB images (H, W, 3) export as video, got {feat.shape}")
            if pix_fmt == "yuv420p" and (feat.shape[0] % 2 or feat.shape[1] % 2):
                raise DatasetError(f"feature {key!r}: {feat.shape[1]}x{feat.shape[0]} images need even sizes for "
                                   f"yuv420p video; pass pix_fmt='yuv444p'")
            videos.append(key)
        elif len(feat.shape) <= 1:
            columns.append(key)
        else:
            raise DatasetError(f"feature {key!r} of shape {feat.shape} has no LeRobot column type "
                               f"(only scalars, vectors and RGB images export)")
    if out.exists():
        if not overwrite:
            raise DatasetError(f"{out} already exists (pass overwrite=True / --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True)

    features: dict[str, dict] = {}
    for key in [*columns, *videos]:
        feat = ds.features[key]
        if key in videos:
            h, w, c = feat.shape
            features[key] = {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
                             "info": {"video.height": h, "video.width": w, "video.codec": None,
                                      "video.pix_fmt": pix_fmt, "video.is_depth_map": False, "video.fps": fps,
                                      "video.channels": c, "has_audio": False}}
        else:
            features[key] = {"dtype": feat.dtype, "shape": list(feat.shape) or [1], "names": feat.names}
    features.update(json.loads(json.dumps(DEFAULT_FEATURES)))

    tasks: list[str] = []
    episode_rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, np.ndarray]] = {}
    data_chunk = data_file = 0
    data_writer = None
    data_bytes = 0.0
    vid: dict[str, dict[str, Any]] = {k: {"chunk": 0, "file": 0, "writer": None} for k in videos}
    frame_offset = 0
    samples: dict[str, list[np.ndarray]] = {}
    rng = np.random.default_rng(0)
    try:
        with progress_bar(progress, "exporting", ds.num_episodes) as advance:
            for e in range(ds.num_episodes):
                data = ds.episode(e)
                meta = ds.episode_info(e)
                n = meta["length"]
                task = meta["task"] or ds.info.get("env_id") or "unknown"
                if task not in tasks:
                    tasks.append(task)
                frames = {k: data[k] for k in columns}
                frames["timestamp"] = (np.arange(n) / fps).astype(np.float32)
                frames["frame_index"] = np.arange(n, dtype=np.int64)
                frames["episode_index"] = np.full(n, e, dtype=np.int64)
                frames["index"] = np.arange(frame_offset, frame_offset + n, dtype=np.int64)
                frames["task_index"] = np.full(n, tasks.index(task), dtype=np.int64)
                table = pa.table({k: _column(pa, frames[k]) for k in [*columns, *DEFAULT_FEATURES]})
                # data file: roll over when the current one is full
                if data_writer is not None and data_bytes + table.nbytes / 2**20 >= data_files_size_in_mb:
                    data_writer.close()
                    data_writer, data_bytes = None, 0.0
                    data_chunk, data_file = _next_file(data_chunk, data_file, chunks_size)
                if data_writer is None:
                    path = out / DATA_PATH.format(chunk_index=data_chunk, file_index=data_file)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
                data_writer.write_table(table)
                data_bytes += table.nbytes / 2**20
                row: dict[str, Any] = {"episode_index": e, "tasks": [task], "length": n,
                                       "data/chunk_index": data_chunk, "data/file_index": data_file,
                                       "dataset_from_index": frame_offset, "dataset_to_index": frame_offset + n}
                for key in videos:
                    v = vid[key]
                    if v["writer"] is not None and v["writer"].size_mb() >= video_files_size_in_mb:
                        v["writer"].close()
                        v["writer"] = None
                        v["chunk"], v["file"] = _next_file(v["chunk"], v["file"], chunks_size)
                    if v["writer"] is None:
                        h, w, _ = ds.features[key].shape
                        path = out / VIDEO_PATH.format(video_key=key, chunk_index=v["chunk"], file_index=v["file"])
                        v["writer"] = _VideoWriter(path, fps, h, w, vcodec, pix_fmt, crf, gop)
                    start = v["writer"].frames
                    v["writer"].write(data[key])
                    row.update({f"videos/{key}/chunk_index": v["chunk"], f"videos/{key}/file_index": v["file"],
                                f"videos/{key}/from_timestamp": start / fps,
                                f"videos/{key}/to_timestamp": (start + n) / fps})
                for key in [*columns, *videos, *DEFAULT_FEATURES]:
                    feat = ds.features.get(key) or Feature(DEFAULT_FEATURES[key]["dtype"], ())
                    values = data[key] if key in ds.features else frames[key]
                    s = feature_stats(feat, values)
                    totals[key] = merge_stats(totals.get(key), s)
                    sample = _quantile_samples(feat, values, rng)
                    samples.setdefault(key, []).append(sample)
                    for name, value in _lerobot_stats(feat, {**s, **_quantiles(sample)}).items():
                        row[f"stats/{key}/{name}"] = value
                row["meta/episodes/chunk_index"] = 0
                row["meta/episodes/file_index"] = 0
                episode_rows.append(row)
                frame_offset += n
                advance()
    finally:
        if data_writer is not None:
            data_writer.close()
        for v in vid.values():
            if v["writer"] is not None:
                v["writer"].close()

    for key in videos:  # what the encoder actually produced, as LeRobot records it
        first = out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
        features[key]["info"].update(_probe_video(first))
    episodes_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
    _write_tasks(out / TASKS_PATH, tasks)
    stats = {key: _lerobot_stats(ds.features.get(key) or Feature(DEFAULT_FEATURES[key]["dtype"], ()),
                                 {**s, **_quantiles(np.concatenate(samples[key]))})
             for key, s in totals.items()}
    _write_json(out / STATS_PATH, stats)
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": ds.num_episodes,
        "total_frames": ds.num_frames, "total_tasks": len(tasks), "chunks_size": chunks_size,
        "data_files_size_in_mb": data_files_size_in_mb, "video_files_size_in_mb": video_files_size_in_mb,
        "fps": fps, "splits": {"train": f"0:{ds.num_episodes}"}, "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if videos else None, "features": features,
    }
    _write_json(out / INFO_PATH, info)
    success = ds.episode_success
    _write_json(out / ARK_PATH, {
        "format": "ark-dataset", "note": "Ark's own schema of this export; LeRobot ignores this file",
        "features": {k: f.to_json() for k, f in ds.features.items()}, "info": ds.info,
        "episodes": {"success": [None if s < 0 else bool(s) for s in success],
                     "seed": [ds.episode_info(e)["seed"] for e in range(ds.num_episodes)]},
    })
    return out


def _column(pa, x: np.ndarray):
    """A parquet column as LeRobot's schema reads it: a scalar per frame, or a fixed-size list."""
    x = np.asarray(x)
    if x.ndim == 1 or x.shape[1:] == (1,):  # LeRobot's shape (1,) is a scalar column
        return pa.array(x.reshape(len(x)))
    flat = pa.array(np.ascontiguousarray(x).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def _probe_video(path: Path) -> dict:
    _, _, av = _deps()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
                "video.fps": int(stream.base_rate) if stream.base_rate else None}


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4, ensure_ascii=False))


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes LeRobot's DataFrame: column task_index, index "task"."""
    pa, pq, _ = _deps()
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


# -- import --------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (not a LeRobot dataset?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None


def _to_numpy(column, n: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An arrow column of scalars or (nested) lists as an ``(n, *shape)`` array."""
    pa = _deps()[0]
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    while pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = arr.flatten()
    values = arr.to_numpy(zero_copy_only=False)
    size = int(np.prod(shape, dtype=np.int64))
    if values.size != n * size:
        raise DatasetError(f"column holds {values.size} values, expected {n} x {shape}")
    return values.reshape(n, *shape).astype(dtype, copy=False)


def import_lerobot(src: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                   progress: bool = False) -> Dataset:
    """Read a LeRobot v3.x dataset folder into a new Ark dataset at ``out``.

    Videos are decoded into ``uint8`` image features; numeric columns keep their dtype. LeRobot's
    scalar columns (shape ``(1,)``) become Ark shape ``()`` unless ``meta/ark.json`` (written by
    :func:`export_lerobot`) records the original Ark schema. String columns are skipped.
    """
    pa, pq, av = _deps()
    src = Path(src)
    info = _read_json(src / INFO_PATH)
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise DatasetError(f"{src / INFO_PATH}: codebase_version {version or '?'}; only LeRobot v3.x layouts import "
                           f"(convert v2.1 datasets with LeRobot's convert_dataset_v21_to_v30 first)")
    fps = info.get("fps")
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise DatasetError(f"{src / INFO_PATH}: fps must be positive, got {fps!r}")
    lr_features: dict[str, dict] = info.get("features") or {}
    ark_side = _read_json(src / ARK_PATH) if (src / ARK_PATH).exists() else None
    features: dict[str, dict] = {}
    kinds: dict[str, str] = {}
    skipped = []
    for key, ft in lr_features.items():
        if key in DEFAULT_FEATURES:
            continue
        dtype = ft.get("dtype")
        shape = tuple(ft.get("shape") or ())
        if dtype in ("video", "image"):
            names = ft.get("names") or ["height", "width", "channels"]
            if len(shape) != 3:
                raise DatasetError(f"{src / INFO_PATH}: feature {key!r} has image shape {shape}, expected 3 dims")
            if names[0] in ("channel", "channels"):
                shape = (shape[1], shape[2], shape[0])
            if shape[-1] != 3:
                raise DatasetError(f"{src / INFO_PATH}: feature {key!r}: only RGB images import, got {shape}")
            features[key] = {"dtype": "uint8", "shape": list(shape), "names": None}
            kinds[key] = dtype
        else:
            try:
                np.dtype(dtype)
                ok = np.dtype(dtype).kind in "biuf"
            except TypeError:
                ok = False
            if not ok:
                skipped.append(key)
                continue
            features[key] = {"dtype": np.dtype(dtype).name, "shape": [] if shape == (1,) else list(shape),
                             "names": ft.get("names") if shape != (1,) else None}
            kinds[key] = "column"
    if skipped:
        log.warning("skipping non-numeric LeRobot features: %s", ", ".join(skipped))
    if not features:
        raise DatasetError(f"{src / INFO_PATH}: no numeric or video features to import")
    episode_ext: dict[str, list] = {}
    if ark_side and set(ark_side.get("features", {})) == set(features):
        for key, spec in ark_side["features"].items():
            want = Feature.parse(key, spec)
            have = Feature.parse(key, features[key])
            if want.dtype == have.dtype and int(np.prod(want.shape)) == int(np.prod(have.shape)):
                features[key] = want.to_json()
        episode_ext = ark_side.get("episodes") or {}

    episode_files = sorted((src / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not episode_files:
        raise DatasetError(f"{src / 'meta' / 'episodes'}: no episode parquet files")
    rows: list[dict] = []
    for f in episode_files:
        try:
            table = pq.read_table(f, columns=None)
        except Exception as exc:
            raise DatasetError(f"{f}: unreadable parquet ({exc})") from None
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        rows.extend(table.select(keep).to_pylist())
    rows.sort(key=lambda r: r["episode_index"])
    required = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    for key in [k for k, kind in kinds.items() if kind == "video"]:
        required += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
    missing = [c for c in required if rows and c not in rows[0]]
    if missing:
        raise DatasetError(f"{episode_files[0]}: episode metadata lacks column(s) {', '.join(missing)}")
    task_names = _read_tasks(src / TASKS_PATH) if (src / TASKS_PATH).exists() else {}
    # Per-episode facts from meta/ark.json only while the episodes are still the exported ones.
    episode_ext = {k: v for k, v in episode_ext.items() if isinstance(v, list) and len(v) == len(rows)}

    data_template = info.get("data_path") or DATA_PATH
    video_template = info.get("video_path") or VIDEO_PATH
    tasks = list(dict.fromkeys(task_names[i] for i in sorted(task_names)))
    ds = Dataset.create(out, features, fps, tasks=tasks, overwrite=overwrite,
                        info={"imported_from": str(src), "codebase_version": version,
                              "robot_type": info.get("robot_type"), **((ark_side or {}).get("info") or {})})
    readers = {k: _VideoReader(fps) for k, kind in kinds.items() if kind == "video"}
    table_cache: dict[Path, Any] = {}
    column_keys = [k for k, kind in kinds.items() if kind == "column"]
    image_keys = [k for k, kind in kinds.items() if kind == "image"]
    try:
        with progress_bar(progress, "importing", len(rows)) as advance:
            for i, row in enumerate(rows):
                e, n = int(row["episode_index"]), int(row["length"])
                path = src / data_template.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
                if path not in table_cache:
                    table_cache.clear()  # episodes are in file order: keep one file in memory
                    try:
                        table_cache[path] = pq.read_table(path)
                    except Exception as exc:
                        raise DatasetError(f"{path}: unreadable parquet ({exc})") from None
                table = table_cache[path]
                mask = table.column("episode_index").to_numpy() == e
                part = table.filter(pa.array(mask))
                if "frame_index" in part.column_names:
                    order = np.argsort(part.column("frame_index").to_numpy(), kind="stable")
                    part = part.take(pa.array(order))
                if part.num_rows != n:
                    raise DatasetError(f"{path}: episode {e} has {part.num_rows} rows, its metadata says {n}")
                data: dict[str, np.ndarray] = {}
                for key in column_keys:
                    feat = Feature.parse(key, features[key])
                    try:
                        data[key] = _to_numpy(part.column(key), n, feat.shape, feat.dtype)
                    except KeyError:
                        raise DatasetError(f"{path}: no column {key!r}") from None
                    except DatasetError as exc:
                        raise DatasetError(f"{path}: column {key!r}: {exc}") from None
                for key in image_keys:
                    data[key] = np.stack([_decode_image(av, cell, path, key) for cell in part.column(key).to_pylist()])
                for key, reader in readers.items():
                    vpath = src / video_template.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                        file_index=row[f"videos/{key}/file_index"])
                    frames = reader.read(vpath, float(row[f"videos/{key}/from_timestamp"]), n)
                    if frames.shape[1:] != tuple(features[key]["shape"]):
                        raise DatasetError(f"{vpath}: frames are {frames.shape[1:]}, info.json says "
                                           f"{tuple(features[key]['shape'])}")
                    data[key] = frames
                task = (row.get("tasks") or [None])[0]
                if task is None and "task_index" in part.column_names and part.num_rows:
                    task = task_names.get(int(part.column("task_index")[0].as_py()))
                success = _ext(episode_ext, "success", i)
                seed = _ext(episode_ext, "seed", i)
                ds.append_episode(data, success=success, seed=seed, task=task)
                advance()
    finally:
        for reader in readers.values():
            reader.close()
    return ds


def _ext(ext: Mapping[str, list], name: str, i: int) -> Any:
    values = ext.get(name)
    return values[i] if isinstance(values, list) and i < len(values) else None


def _read_tasks(path: Path) -> dict[int, str]:
    _, pq, _ = _deps()
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable parquet ({exc})") from None
    names = [c for c in ("task", "__index_level_0__") if c in table.column_names]
    if "task_index" not in table.column_names or not names:
        raise DatasetError(f"{path}: expected columns task_index and task")
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(), table.column(names[0]).to_pylist())}


def _decode_image(av, cell: Any, path: Path, key: str) -> np.ndarray:
    """One LeRobot ``image`` cell ({"bytes": PNG/JPEG, "path": ...}) as an RGB array."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise DatasetError(f"{path}: image {key!r} has no embedded bytes")
    try:
        with av.open(io.BytesIO(data)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except Exception as exc:
        raise DatasetError(f"{path}: image {key!r} does not decode ({exc})") from None
