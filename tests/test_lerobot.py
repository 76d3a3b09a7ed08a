"""Export to the LeRobot v3.0 layout and import back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import av
import pyarrow as pa
import pyarrow.parquet as pq

from policies.dataset import Dataset, DatasetError
from policies.lerobot import export_lerobot, import_lerobot

LENGTHS = [6, 9, 4]
H, W = 16, 24


def smooth_image(e: int, t: int) -> np.ndarray:
    """Smooth gradients (video codecs keep these well) that move with the episode and step."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = (40 + 6 * x + 3 * t) % 256
    img[..., 1] = (60 + 8 * y + 20 * e) % 256
    img[..., 2] = 90 + 4 * t
    return img


def episode(e: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(e)
    return {
        "observation.state": rng.normal(size=(n, 4)).astype(np.float32),
        "observation.rgb": np.stack([smooth_image(e, t) for t in range(n)]),
        "action": rng.uniform(-1, 1, size=(n, 1)).astype(np.float32),
        "reward": rng.normal(size=n).astype(np.float32),
        "done": np.arange(n) == n - 1,
    }


@pytest.fixture
def ark_ds(tmp_path: Path) -> Dataset:
    feats = {"observation.state": {"dtype": "float32", "shape": [4], "names": ["a", "b", "c", "d"]},
             "observation.rgb": {"dtype": "uint8", "shape": [H, W, 3]},
             "action": {"dtype": "float32", "shape": [1]},
             "reward": {"dtype": "float32", "shape": []},
             "done": {"dtype": "bool", "shape": []}}
    ds = Dataset.create(tmp_path / "ark", feats, fps=15, tasks=["stack the cube"], info={"env_id": "Test-v0"})
    for e, n in enumerate(LENGTHS):
        ds.append_episode(episode(e, n), success=e != 1, seed=e + 10, task="stack the cube" if e != 2 else "wipe")
    return ds


def test_export_writes_the_v3_layout(tmp_path: Path, ark_ds: Dataset) -> None:
    out = export_lerobot(ark_ds, tmp_path / "lr", robot_type="panda")
    total = sum(LENGTHS)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 15 and info["robot_type"] == "panda"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, total, 2)
    assert info["chunks_size"] == 1000 and info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [4], "names": ["a", "b", "c", "d"]}
    assert feats["reward"]["shape"] == [1] and feats["action"]["shape"] == [1]
    video = feats["observation.rgb"]
    assert video["dtype"] == "video" and video["shape"] == [H, W, 3]
    assert video["names"] == ["height", "width", "channels"]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.fps"] == 15
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert feats[key]["shape"] == [1]

    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.num_rows == total
    assert set(data.column_names) == {"observation.state", "action", "reward", "done", "timestamp", "frame_index",
                                      "episode_index", "index", "task_index"}
    assert pa.types.is_fixed_size_list(data.schema.field("observation.state").type)
    assert data.schema.field("action").type == pa.float32()  # LeRobot's shape (1,) is a scalar column
    np.testing.assert_array_equal(data.column("index").to_numpy(), np.arange(total))
    np.testing.assert_allclose(data.column("timestamp").to_numpy()[:LENGTHS[0]], np.arange(LENGTHS[0]) / 15, rtol=1e-6)
    assert data.column("task_index").to_pylist()[-1] == 1

    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0, 1], "task": ["stack the cube", "wipe"]}
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # pandas reads it as the index

    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["episode_index"] for r in eps] == [0, 1, 2] and [r["length"] for r in eps] == LENGTHS
    assert [r["dataset_from_index"] for r in eps] == [0, 6, 15] and eps[-1]["dataset_to_index"] == total
    assert eps[2]["tasks"] == ["wipe"] and eps[1]["data/chunk_index"] == 0 and eps[1]["meta/episodes/file_index"] == 0
    assert eps[1]["videos/observation.rgb/from_timestamp"] == pytest.approx(6 / 15)
    assert eps[1]["videos/observation.rgb/to_timestamp"] == pytest.approx(15 / 15)
    assert np.asarray(eps[0]["stats/observation.rgb/mean"]).shape == (3, 1, 1)
    assert eps[0]["stats/action/count"] == [6]

    stats = json.loads((out / "meta/stats.json").read_text())
    rgb = np.concatenate([episode(e, n)["observation.rgb"] for e, n in enumerate(LENGTHS)]) / 255.0
    np.testing.assert_allclose(np.asarray(stats["observation.rgb"]["mean"]).reshape(3), rgb.mean((0, 1, 2)), rtol=1e-9)
    state = np.concatenate([episode(e, n)["observation.state"] for e, n in enumerate(LENGTHS)]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-9)
    assert stats["index"]["max"] == [total - 1] and stats["action"]["count"] == [total]
    np.testing.assert_allclose(stats["observation.state"]["q50"], np.quantile(state, 0.5, axis=0), rtol=1e-6)
    assert np.asarray(stats["observation.rgb"]["q99"]).shape == (3, 1, 1)
    assert set(stats["reward"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}

    with av.open(str(out / "videos/observation.rgb/chunk-000/file-000.mp4")) as container:
        times = [f.time for f in container.decode(video=0)]
    np.testing.assert_allclose(times, np.arange(total) / 15, atol=1e-6)

    with pytest.raises(DatasetError, match="already exists"):
        export_lerobot(ark_ds, out)


@pytest.mark.parametrize("video, tolerance", [({}, 6.0), ({"pix_fmt": "yuv444p", "crf": 0}, 1.0)])
def test_round_trip(tmp_path: Path, ark_ds: Dataset, video: dict, tolerance: float) -> None:
    out = export_lerobot(ark_ds, tmp_path / "lr", **video)
    back = import_lerobot(out, tmp_path / "back")
    assert back.num_episodes == 3 and len(back) == len(ark_ds) and back.fps == 15
    assert {k: (f.dtype, f.shape) for k, f in back.features.items()} == \
           {k: (f.dtype, f.shape) for k, f in ark_ds.features.items()}
    for e, n in enumerate(LENGTHS):
        got, want = back.episode(e), ark_ds.episode(e)
        for key in ("observation.state", "action", "reward", "done"):
            np.testing.assert_array_equal(got[key], want[key])
        err = np.abs(got["observation.rgb"].astype(int) - want["observation.rgb"].astype(int))
        assert err.mean() < tolerance, err.mean()
        assert back.episode_info(e) == ark_ds.episode_info(e)
    assert back.validate().ok and back.info["imported_from"] == str(out)


def test_import_rolls_over_files_and_works_without_ark_metadata(tmp_path: Path, ark_ds: Dataset) -> None:
    out = export_lerobot(ark_ds, tmp_path / "lr", data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6,
                         chunks_size=2)
    assert sorted(p.relative_to(out).as_posix() for p in (out / "data").rglob("*.parquet")) == [
        "data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet", "data/chunk-001/file-000.parquet"]
    assert len(list((out / "videos").rglob("*.mp4"))) == 3
    (out / "meta/ark.json").unlink()  # as if the dataset came from LeRobot itself
    back = import_lerobot(out, tmp_path / "back")
    assert back.features["reward"].shape == () and back.features["action"].shape == ()
    assert back.features["observation.state"].names == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(back.episode(2)["action"], ark_ds.episode(2)["action"][:, 0])
    assert back.episode_info(2)["task"] == "wipe" and back.episode_info(2)["success"] is None
    assert np.abs(back.episode(2)["observation.rgb"].astype(int) - ark_ds.episode(2)["observation.rgb"]).mean() < 6


def test_import_rejects_other_layouts(tmp_path: Path, ark_ds: Dataset) -> None:
    with pytest.raises(DatasetError, match="missing"):
        import_lerobot(tmp_path / "nothing", tmp_path / "x")
    (tmp_path / "v21" / "meta").mkdir(parents=True)
    (tmp_path / "v21" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 30}))
    with pytest.raises(DatasetError, match="only LeRobot v3.x") as exc:
        import_lerobot(tmp_path / "v21", tmp_path / "x")
    assert "\n" not in str(exc.value)
    odd = Dataset.create(tmp_path / "odd", {"observation.rgb": {"dtype": "uint8", "shape": [5, 5, 3]}}, fps=10)
    odd.append_episode({"observation.rgb": np.zeros((2, 5, 5, 3), np.uint8)})
    with pytest.raises(DatasetError, match="yuv444p"):
        export_lerobot(odd, tmp_path / "odd_lr")
