"""Training-window sampling: Ark's zarr store against decoding the same frames from a LeRobot mp4.

    python benchmarks/dataset.py                 # full run (under 2 minutes; the first run collects data)
    python benchmarks/dataset.py --quick         # a smaller dataset and sample (under 30 s)
    python benchmarks/dataset.py --json out.json # also write every number as JSON

**Data.** ``ark collect``'s function records ``--episodes`` (20; 5 with ``--quick``) scripted-expert
episodes of ``ark/PandaPush-v0`` with the 96x96 ``front`` camera (``observation.rgb``) into an Ark
dataset, cached under ``$TMPDIR/ark-bench-dataset/`` (``--fresh`` records again). Each run exports it
with :func:`policies.lerobot.export_lerobot` (LeRobot v3.0: parquet + ``videos/observation.rgb/...mp4``,
libx264, yuv420p, a keyframe every ``--gop`` frames: 2, Ark's and LeRobot's default).

**Window.** Anchored at a frame: every ``observation.*`` key (the 96x96 image and the state vectors)
for 2 frames (anchor-1, anchor), ``action`` for 16 frames (anchor .. anchor+15); steps outside the
episode repeat its edge frame and are flagged in ``<key>_is_pad`` (Ark's layout, LeRobot's too).
Anchors are drawn uniformly over all frames in batches of ``--batch`` (32); every system reads the
same anchors (each batch's generator is seeded by its repetition and number).

**Systems.**

* ``ark, chunk cache warm``: :class:`policies.dataset.WindowSampler` with its default LRU cache of
  decoded image chunks (512 MB), warmed by one pass; the steady state of training on a dataset
  whose images fit the cache (they do here).
* ``ark, no chunk cache``: the same with ``cache_mb=0`` (it keeps only the last chunk), so every
  batch reads and decompresses the zarr chunks (16 frames each) its windows touch: the cost when
  the images do not fit in memory.
* ``mp4 (PyAV)`` (the baseline): the export read back as a LeRobot-style loader would: state and
  action columns of the parquet files loaded into numpy arrays once (as Ark's sampler holds its
  vectors in memory), window indices from ``meta/episodes``, images decoded from the mp4. The
  decoder is reasonably efficient: each video file stays open; a batch's needed frames are sorted
  and deduplicated, and for each run of them it seeks to the keyframe at or before the first
  (``container.seek(pts, backward=True)``) and decodes forward, continuing without a seek when the
  next needed frame is at most one GOP ahead; frames convert to RGB through one shared
  ``VideoReformatter`` (PyAV's ``frame.to_ndarray(format="rgb24")`` builds a new swscale context
  per frame, about 50x slower at this size); the codec's default threading (frame threads would
  add latency to every seek).

Repetitions take turns across systems (the order rotating), and the table reports the median
windows/s, and the median CPU time per batch (all threads of this process: zarr decodes on a thread
pool), steadier than wall time on a busy machine. A check compares the first batch of every system:
state and action windows must be identical and the mp4 images close to the stored frames (lossy
video: mean absolute error in uint8 levels, and each decoded frame must be nearer its own stored
frame than its neighbours).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(ROOT)  # benchmarks/envs.py would otherwise shadow the envs package

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

ENV_ID = "ark/PandaPush-v0"
IMAGE_KEY = "observation.rgb"
OBS_HORIZON, ACTION_HORIZON = 2, 16


# -- data ----------------------------------------------------------------------------------------
def cached_dataset(root: Path, episodes: int, seed: int, fresh: bool, log: Callable[[str], None]) -> tuple[Path, float]:
    """The Ark dataset of ``episodes`` expert episodes with images (collected unless cached and valid);
    returns its path and the seconds spent collecting (0 when cached)."""
    import envs  # noqa: F401  (registers the ark/ environments)
    from policies.collect import collect
    from policies.dataset import Dataset, DatasetError

    path = root / f"push-rgb96-e{episodes}-s{seed}" / "ark"
    if path.exists() and not fresh:
        try:
            ds = Dataset.open(path, read_only=True)
            if ds.num_episodes == episodes and ds.validate(raise_error=False).ok and IMAGE_KEY in ds.features:
                log(f"using the cached dataset {path} ({ds.num_episodes} episodes, {ds.num_frames} frames)")
                return path, 0.0
        except DatasetError:
            pass
    log(f"collecting {episodes} expert episodes of {ENV_ID} with 96x96 images into {path} ...")
    t = time.perf_counter()
    collect(ENV_ID, episodes, path, images=True, seed=seed, progress=sys.stderr.isatty(), overwrite=True)
    return path, time.perf_counter() - t


# -- the mp4 baseline ----------------------------------------------------------------------------
def _column(table: Any, key: str, shape: list[int]) -> np.ndarray:
    """A parquet column (scalar or fixed-size list) as an (N, *shape) numpy array."""
    import pyarrow as pa

    col = table.column(key).combine_chunks()
    flat = col.flatten() if pa.types.is_fixed_size_list(col.type) else col
    return flat.to_numpy(zero_copy_only=False).reshape(len(table), *shape)


class Mp4Windows:
    """(observation history, action chunk) windows from a LeRobot v3 export: vectors from parquet (in
    memory), images decoded from mp4 with PyAV (see the module docstring)."""

    def __init__(self, root: Path, keys: list[str], gop: int) -> None:
        import av
        import pyarrow as pa
        import pyarrow.parquet as pq
        from av.video.reformatter import VideoReformatter

        self.av = av
        self.root = root
        info = json.loads((root / "meta" / "info.json").read_text())
        self.fps = float(info["fps"])
        self.video_path = info["video_path"]
        self.features = info["features"]
        self.video_keys = [k for k in keys if self.features[k]["dtype"] == "video"]
        self.vector_keys = [k for k in keys if k not in self.video_keys]
        self.action_keys = [k for k in keys if k == "action"]
        ep_files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
        eps_table = pa.concat_tables([pq.read_table(f) for f in ep_files])
        ep_order = np.argsort(eps_table.column("episode_index").to_numpy())

        def ep_col(name: str) -> np.ndarray:
            return eps_table.column(name).to_numpy()[ep_order]

        self.ep_from = ep_col("dataset_from_index").astype(np.int64)
        self.ep_to = ep_col("dataset_to_index").astype(np.int64)
        self.ep_video: dict[str, list[tuple[Path, int]]] = {}
        for k in self.video_keys:
            self.ep_video[k] = [
                (root / self.video_path.format(video_key=k, chunk_index=int(c), file_index=int(f)),
                 int(round(ts * self.fps)))
                for c, f, ts in zip(ep_col(f"videos/{k}/chunk_index"), ep_col(f"videos/{k}/file_index"),
                                    ep_col(f"videos/{k}/from_timestamp"))]
        data = pa.concat_tables([pq.read_table(f, columns=[*self.vector_keys, "index"])
                                 for f in sorted((root / "data").rglob("*.parquet"))])
        order = np.argsort(data.column("index").to_numpy())
        self.vectors = {k: _column(data, k, self.features[k]["shape"])[order] for k in self.vector_keys}
        self.gop = gop
        self.reformatter = VideoReformatter()
        self.open: dict[Path, tuple[Any, Any]] = {}

    def _container(self, path: Path) -> tuple[Any, Any]:
        got = self.open.get(path)
        if got is None:
            container = self.av.open(str(path))
            got = self.open[path] = (container, container.streams.video[0])
        return got

    def _decode(self, path: Path, numbers: np.ndarray) -> dict[int, np.ndarray]:
        """RGB frames ``numbers`` (sorted, unique frame numbers within one video file)."""
        container, stream = self._container(path)
        tb, fps = float(stream.time_base), self.fps
        out: dict[int, np.ndarray] = {}
        i, n = 0, len(numbers)
        while i < n:
            first = int(numbers[i])
            container.seek(int(round(first / fps / tb)), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                k = int(round(frame.pts * tb * fps))
                if k < numbers[i]:
                    continue
                if k == numbers[i]:
                    out[k] = self.reformatter.reformat(frame, format="rgb24").to_ndarray()
                    i += 1
                    if i == n or numbers[i] - k > self.gop:  # next one is cheaper to reach by seeking
                        break
                else:  # k > numbers[i]: the frame is missing from the file
                    raise RuntimeError(f"{path}: frame {int(numbers[i])} not found (decoder at {k})")
            else:
                raise RuntimeError(f"{path}: video ends before frame {int(numbers[i])}")
        return out

    def windows(self, anchor: np.ndarray) -> dict[str, np.ndarray]:
        """The windows anchored at global frames ``anchor`` (the layout of Ark's WindowSampler)."""
        ep = np.searchsorted(self.ep_to, anchor, side="right")
        lo, hi = self.ep_from[ep][:, None], self.ep_to[ep][:, None]
        obs = anchor[:, None] + np.arange(-OBS_HORIZON + 1, 1)[None, :]
        act = anchor[:, None] + np.arange(ACTION_HORIZON)[None, :]
        obs_idx, obs_pad = np.clip(obs, lo, hi - 1), obs < lo
        act_idx, act_pad = np.clip(act, lo, hi - 1), (act < lo) | (act >= hi)
        out: dict[str, np.ndarray] = {}
        for k in self.vector_keys:
            is_action = k in self.action_keys
            out[k] = self.vectors[k][act_idx if is_action else obs_idx]
            out[f"{k}_is_pad"] = act_pad if is_action else obs_pad
        for k in self.video_keys:
            table = self.ep_video[k]
            files = [table[e][0] for e in ep]
            # frame number inside the file: episode's first frame there + offset in the episode
            numbers = np.asarray([table[e][1] for e in ep])[:, None] + (obs_idx - lo)
            h, w, c = self.features[k]["shape"]
            img = np.empty((*obs_idx.shape, h, w, c), np.uint8)
            by_file: dict[Path, list[int]] = {}
            for b, f in enumerate(files):
                by_file.setdefault(f, []).append(b)
            for f, rows in by_file.items():
                wanted = numbers[rows]
                frames = self._decode(f, np.unique(wanted))
                for j, b in enumerate(rows):
                    for t in range(obs_idx.shape[1]):
                        img[b, t] = frames[int(wanted[j, t])]
            out[k] = img
            out[f"{k}_is_pad"] = obs_pad
        out["index"] = anchor
        return out

    def close(self) -> None:
        for container, _ in self.open.values():
            container.close()
        self.open.clear()


# -- measurement ---------------------------------------------------------------------------------
def batch_rng(seed: int, rep: int, b: int) -> np.random.Generator:
    return np.random.default_rng([seed, rep, b])


def check(ark: dict, mp4: dict, ds: Any, image_key: str) -> dict:
    """Equal vectors and padding; mp4 images close to the stored frames they stand for."""
    vectors_equal = all(np.array_equal(ark[k], mp4[k]) for k in ark if k != image_key)
    a, m = ark[image_key].astype(np.int16), mp4[image_key].astype(np.int16)
    mae = float(np.abs(a - m).mean())
    # frame identity: each decoded frame is closer to its own stored frame than to the neighbours
    n = len(ds)
    wrong = 0
    for b, anchor in enumerate(ark["index"]):
        lo, hi = ds.episode_bounds(ds.episode_of(int(anchor)))
        for t, frame in enumerate(np.clip(anchor + np.arange(-OBS_HORIZON + 1, 1), lo, hi - 1)):
            own = np.abs(m[b, t] - a[b, t]).mean()
            for j in (frame - 1, frame + 1):
                if 0 <= j < n:
                    other = ds.read(image_key, int(j), int(j) + 1)[0].astype(np.int16)
                    if not np.array_equal(other, a[b, t]) and np.abs(m[b, t] - other).mean() < own:
                        wrong += 1
    return {"vectors_and_padding_equal": bool(vectors_equal), "image_mae_levels": mae,
            "image_max_abs_levels": int(np.abs(a - m).max()), "frames_nearer_a_neighbour": wrong,
            "ok": bool(vectors_equal and wrong == 0 and mae < 8.0)}


def measure(systems: dict[str, Callable[[np.random.Generator], dict]], reps: int, batches: int, batch: int,
            seed: int, log: Callable[[str], None]) -> dict[str, dict]:
    names = list(systems)
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = systems[name]
            gc.collect()
            c, t = time.process_time(), time.perf_counter()
            for b in range(batches):
                fn(batch_rng(seed, r + 1, b))
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
        log(f"  rep {r + 1}/{reps}: " + ", ".join(f"{k} {batches * batch / times[k][-1]:,.0f}" for k in names)
            + " windows/s")
    out = {}
    for k in names:
        med = float(np.median(times[k]))
        out[k] = {"seconds": times[k], "cpu_seconds": cpu[k], "windows_per_rep": batches * batch,
                  "windows_per_s": batches * batch / med, "ms_per_batch": med / batches * 1e3,
                  "cpu_ms_per_batch": float(np.median(cpu[k])) / batches * 1e3}
    return out


def machine_info() -> dict:
    import av
    import zarr

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "numpy": np.__version__,
            "zarr": zarr.__version__, "av": av.__version__, "ffmpeg": av.library_versions.get("libavcodec"),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 150)
    d = res["dataset"]
    con.print(f"Random training windows ({OBS_HORIZON} obs x 96x96 rgb + state, {ACTION_HORIZON}-action chunk) in "
              f"batches of {res['batch']}, from {d['episodes']} episodes / {d['frames']} frames of {ENV_ID}")
    t = Table(title="Ark's store vs the exported mp4, same anchors")
    for col in ("source", "windows/s (median)", "ms / batch", "CPU ms / batch", "vs mp4", "setup s"):
        t.add_column(col, justify="left" if col == "source" else "right")
    base = res["results"]["mp4 (PyAV)"]["windows_per_s"]
    for name, r in res["results"].items():
        t.add_row(name, f"{r['windows_per_s']:,.0f}", f"{r['ms_per_batch']:.2f}", f"{r['cpu_ms_per_batch']:.2f}",
                  f"{r['windows_per_s'] / base:.1f}x",
                  f"{res['setup_s'][name]:.2f}")
    con.print(t)
    con.print(f"  store: Ark zarr {d['ark_mb']:.1f} MB ({d['image_chunk_frames']} frames per image chunk); "
              f"LeRobot export {d['lerobot_mb']:.1f} MB, of which mp4 {d['mp4_mb']:.1f} MB (libx264, gop {res['gop']}); "
              f"export took {d['export_s']:.1f} s")
    for name, c in res["checks"].items():
        mark = "[green]    ok[/green]" if c["ok"] else "[red]FAILED[/red]"
        con.print(f"  {mark}  same windows, {name} vs mp4: vectors and padding equal: {c['vectors_and_padding_equal']}, "
                  f"image MAE {c['image_mae_levels']:.2f} levels (max {c['image_max_abs_levels']}), "
                  f"frames nearer a neighbour: {c['frames_nearer_a_neighbour']}")


def _dir_mb(path: Path, pattern: str = "*") -> float:
    return sum(f.stat().st_size for f in path.rglob(pattern) if f.is_file()) / 2**20


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    from policies.dataset import Dataset, WindowSampler, default_window_keys
    from policies.lerobot import export_lerobot

    cache = Path(args.cache) if args.cache else Path(tempfile.gettempdir()) / "ark-bench-dataset"
    ark_path, collect_s = cached_dataset(cache, args.episodes, args.seed, args.fresh, log)
    lerobot_path = ark_path.parent / "lerobot"
    ds = Dataset.open(ark_path, read_only=True)
    log(f"exporting to LeRobot v3 at {lerobot_path} (libx264, gop {args.gop}) ...")
    t = time.perf_counter()
    export_lerobot(ds, lerobot_path, gop=args.gop, overwrite=True)
    export_s = time.perf_counter() - t
    keys = default_window_keys(ds)

    setup: dict[str, float] = {}
    t = time.perf_counter()
    warm = WindowSampler(ds, OBS_HORIZON, ACTION_HORIZON, keys=keys)
    setup["ark, chunk cache warm"] = time.perf_counter() - t
    for batch in warm.batches(256, shuffle=False):  # fill the cache: one pass over every window
        pass
    t = time.perf_counter()
    cold = WindowSampler(Dataset.open(ark_path, read_only=True), OBS_HORIZON, ACTION_HORIZON, keys=keys, cache_mb=0)
    setup["ark, no chunk cache"] = time.perf_counter() - t
    t = time.perf_counter()
    mp4 = Mp4Windows(lerobot_path, keys, args.gop)
    setup["mp4 (PyAV)"] = time.perf_counter() - t
    n = len(warm)

    def ark_fn(sampler: WindowSampler) -> Callable[[np.random.Generator], dict]:
        return lambda rng: sampler.sample(args.batch, rng)

    systems = {"ark, chunk cache warm": ark_fn(warm), "ark, no chunk cache": ark_fn(cold),
               "mp4 (PyAV)": lambda rng: mp4.windows(rng.integers(0, n, size=args.batch))}
    try:
        first = {k: fn(batch_rng(args.seed, 0, 0)) for k, fn in systems.items()}  # also the warm-up
        checks = {k: check(first[k], first["mp4 (PyAV)"], ds, IMAGE_KEY) for k in systems if k != "mp4 (PyAV)"}
        for k in systems:
            assert np.array_equal(first[k]["index"], first["mp4 (PyAV)"]["index"]), "systems drew different anchors"
        log(f"sampling {args.reps} x {args.batches} batches of {args.batch} windows per system")
        results = measure(systems, args.reps, args.batches, args.batch, args.seed, log)
    finally:
        mp4.close()
    return {"batch": args.batch, "gop": args.gop, "keys": keys, "setup_s": setup, "results": results,
            "checks": checks,
            "dataset": {"episodes": ds.num_episodes, "frames": ds.num_frames, "path": str(ark_path),
                        "collect_s": collect_s, "export_s": export_s, "ark_mb": _dir_mb(ark_path),
                        "lerobot_mb": _dir_mb(lerobot_path), "mp4_mb": _dir_mb(lerobot_path, "*.mp4"),
                        "image_chunk_frames": ds.chunk_frames[IMAGE_KEY]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 episodes and fewer batches (under 30 s)")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    ap.add_argument("--seed", type=int, default=0, help="seed of the episodes and of the sampled anchors")
    ap.add_argument("--episodes", type=int, help="episodes in the dataset (default 20; 5 with --quick)")
    ap.add_argument("--batch", type=int, default=32, help="windows per batch (default 32)")
    ap.add_argument("--batches", type=int, help="batches per repetition and system (default 40; 10 with --quick)")
    ap.add_argument("--reps", type=int, help="repetitions per system (default 9; 5 with --quick)")
    ap.add_argument("--gop", type=int, default=2, help="keyframe interval of the exported mp4 (default 2)")
    ap.add_argument("--cache", help="folder for the collected dataset (default $TMPDIR/ark-bench-dataset)")
    ap.add_argument("--fresh", action="store_true", help="collect the dataset again even when cached")
    args = ap.parse_args(argv)
    args.episodes = args.episodes or (5 if args.quick else 20)
    args.batches = args.batches or (10 if args.quick else 40)
    args.reps = args.reps or (5 if args.quick else 9)
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    print(f"dataset benchmark ({'quick' if args.quick else 'full'}), seed {args.seed}, "
          f"load average {load_before:.2f} on {os.cpu_count()} CPUs", flush=True)
    res = run(args, lambda m: print(m, flush=True))
    elapsed = time.monotonic() - t0
    load_after = os.getloadavg()[0]
    print_table(res)
    print(f"total {elapsed:.1f} s (collecting {res['dataset']['collect_s']:.1f} s); 1-minute load average "
          f"{load_before:.2f} before, {load_after:.2f} after")
    if args.json:
        doc = {"benchmark": "dataset", "argv": sys.argv, "quick": args.quick, "seed": args.seed, "env": ENV_ID,
               "obs_horizon": OBS_HORIZON, "action_horizon": ACTION_HORIZON, "machine": machine_info(),
               "elapsed_s": elapsed, "loadavg_1min": [load_before, load_after], **res}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0 if all(c["ok"] for c in res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
