"""Ark's zarr dataset: append/open, windows with edge padding, statistics, corruption detection, merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import zarr  # noqa: F401  (a dev dependency: fail loudly if missing)

from policies.dataset import Dataset, DatasetError, WindowSampler, merge  # noqa: E402

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"]},
    "observation.rgb": {"dtype": "uint8", "shape": [6, 8, 3], "names": None},
    "action": {"dtype": "float32", "shape": [2], "names": None},
    "reward": {"dtype": "float32", "shape": [], "names": None},
}
CHUNKS = {"observation.rgb": 4, "observation.state": 8, "action": 8, "reward": 8}


def episode_data(e: int, n: int) -> dict[str, np.ndarray]:
    """Frames whose values encode (episode, step), so any misplaced frame shows."""
    t = np.arange(n, dtype=np.float32)
    rng = np.random.default_rng(e)
    return {
        "observation.state": np.stack([t + 100 * e, -t, np.full(n, e, np.float32)], axis=1),
        "observation.rgb": rng.integers(0, 256, size=(n, 6, 8, 3), dtype=np.uint8),
        "action": np.stack([t + 1000 * e, t * 0.5], axis=1).astype(np.float32),
        "reward": (t / 10).astype(np.float32),
    }


LENGTHS = [5, 7, 3, 9]


def make(path: Path, lengths=LENGTHS, **kw) -> Dataset:
    ds = Dataset.create(path, FEATURES, fps=10, tasks=["reach"], chunk_frames=CHUNKS, info={"env_id": "Test-v0"}, **kw)
    for e, n in enumerate(lengths):
        ds.append_episode(episode_data(e, n), success=e % 2 == 0, seed=40 + e, task="reach" if e < 2 else "push")
    return ds


def test_append_and_reopen_round_trip(tmp_path: Path) -> None:
    make(tmp_path / "ds")
    ds = Dataset.open(tmp_path / "ds", read_only=True)
    assert ds.num_episodes == 4 and len(ds) == sum(LENGTHS) and ds.fps == 10
    assert ds.features["observation.state"].names == ["x", "y", "z"]
    assert ds.tasks == ["reach", "push"] and ds.info["env_id"] == "Test-v0"
    for e, n in enumerate(LENGTHS):
        got, want = ds.episode(e), episode_data(e, n)
        assert set(got) == set(FEATURES)
        for key in FEATURES:
            np.testing.assert_array_equal(got[key], want[key])
            assert got[key].dtype == np.dtype(FEATURES[key]["dtype"])
        info = ds.episode_info(e)
        assert info == {"episode_index": e, "length": n, "success": e % 2 == 0, "seed": 40 + e,
                        "task": "reach" if e < 2 else "push"}
    assert ds.episode_bounds(1) == (5, 12)
    np.testing.assert_array_equal(ds.read("episode_index"), np.repeat(np.arange(4), LENGTHS))
    np.testing.assert_array_equal(ds.read("frame_index"), np.concatenate([np.arange(n) for n in LENGTHS]))
    assert ds.validate().ok
    with pytest.raises(DatasetError, match="read-only"):
        ds.append_episode(episode_data(9, 2))


def test_append_rejects_mismatched_episodes(tmp_path: Path) -> None:
    ds = make(tmp_path / "ds", lengths=[2])
    bad = episode_data(0, 3)
    del bad["reward"]
    with pytest.raises(DatasetError, match=r"missing \['reward'\]"):
        ds.append_episode(bad)
    bad = episode_data(0, 3) | {"action": np.zeros((3, 5), np.float32)}
    with pytest.raises(DatasetError, match="'action': frames of shape"):
        ds.append_episode(bad)
    bad = episode_data(0, 3) | {"reward": np.zeros(4, np.float32)}
    with pytest.raises(DatasetError, match="has 4 frames"):
        ds.append_episode(bad)
    bad = episode_data(0, 3) | {"observation.rgb": np.zeros((3, 6, 8, 3), np.float32)}
    with pytest.raises(DatasetError, match="cannot be stored as uint8"):
        ds.append_episode(bad)
    assert Dataset.open(tmp_path / "ds").num_episodes == 1


def test_window_pads_by_repeating_edge_frames(tmp_path: Path) -> None:
    ds = make(tmp_path / "ds")
    lo, hi = ds.episode_bounds(1)  # frames 5..11
    state = episode_data(1, 7)["observation.state"]
    action = episode_data(1, 7)["action"]

    w = ds.window(lo + 1, obs_horizon=4, action_horizon=3)
    np.testing.assert_array_equal(w["observation.state"], state[[0, 0, 0, 1]])
    np.testing.assert_array_equal(w["observation.state_is_pad"], [True, True, False, False])
    np.testing.assert_array_equal(w["action"], action[[1, 2, 3]])
    assert not w["action_is_pad"].any()

    w = ds.window(hi - 2, obs_horizon=2, action_horizon=5)
    np.testing.assert_array_equal(w["action"], action[[5, 6, 6, 6, 6]])
    np.testing.assert_array_equal(w["action_is_pad"], [False, False, True, True, True])
    np.testing.assert_array_equal(w["observation.rgb"], episode_data(1, 7)["observation.rgb"][[4, 5]])
    assert set(w) == {"observation.state", "observation.rgb", "action", *(f"{k}_is_pad" for k in
                                                                           ("observation.state", "observation.rgb", "action"))}

    # Diffusion Policy's layout: actions start with the oldest observation.
    w = ds.window(lo + 1, obs_horizon=3, action_horizon=4, action_start=-2)
    np.testing.assert_array_equal(w["action"], action[[0, 0, 1, 2]])
    np.testing.assert_array_equal(w["action_is_pad"], [True, False, False, False])

    # The sampler (cached image chunks, vectorised) gives exactly the dataset's windows, cache evictions included.
    sampler = WindowSampler(ds, obs_horizon=3, action_horizon=4, cache_mb=0.0005, action_start=-1)
    assert len(sampler) == len(ds)
    for i in range(len(sampler)):
        got, want = sampler[i], ds.window(i, 3, 4, action_start=-1)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} at {i}")
    batch = sampler.sample(16, rng=0)
    assert batch["observation.rgb"].shape == (16, 3, 6, 8, 3) and batch["action"].shape == (16, 4, 2)
    assert batch["action_is_pad"].shape == (16, 4)
    seen = np.concatenate([b["index"] for b in sampler.batches(5, seed=1)])
    assert sorted(seen.tolist()) == list(range(len(ds)))
    only = WindowSampler(ds, 2, 2, episodes=[2], in_memory=True)
    assert len(only) == 3 and only[0]["observation.state"][0, 0] == 200


def test_stats_per_feature_and_per_channel(tmp_path: Path) -> None:
    ds = make(tmp_path / "ds")
    all_eps = [episode_data(e, n) for e, n in enumerate(LENGTHS)]
    for key in ("observation.state", "action", "reward"):
        x = np.concatenate([d[key] for d in all_eps]).astype(np.float64)
        s = ds.stats[key]
        np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(s["min"], x.min(0))
        np.testing.assert_array_equal(s["max"], x.max(0))
        assert int(s["count"]) == sum(LENGTHS)
    rgb = np.concatenate([d["observation.rgb"] for d in all_eps]).astype(np.float64)
    s = ds.stats["observation.rgb"]
    assert s["mean"].shape == (3,)
    np.testing.assert_allclose(s["mean"], rgb.mean((0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(s["std"], rgb.std((0, 1, 2)), rtol=1e-9)
    recomputed = Dataset.open(tmp_path / "ds").compute_stats()
    for key, st in recomputed.items():
        for name in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(st[name], ds.stats[key][name], rtol=1e-9, atol=1e-12)


def test_crash_mid_append_keeps_previous_episodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make(tmp_path / "ds", lengths=[5, 7])
    real = Dataset._write_rows
    calls = {"n": 0}

    def crashing(self, name, start, rows):
        calls["n"] += 1
        if calls["n"] == 3:  # after two of the episode's arrays are written
            raise OSError("disk unplugged")
        return real(self, name, start, rows)

    monkeypatch.setattr(Dataset, "_write_rows", crashing)
    with pytest.raises(OSError):
        ds.append_episode(episode_data(2, 20))
    monkeypatch.setattr(Dataset, "_write_rows", real)

    again = Dataset.open(tmp_path / "ds")
    assert again.num_episodes == 2 and len(again) == 12
    assert again.validate().ok  # leftovers past the committed length are not damage
    np.testing.assert_array_equal(again.episode(1)["action"], episode_data(1, 7)["action"])
    again.append_episode(episode_data(2, 3))  # overwrites the leftovers
    fresh = Dataset.open(tmp_path / "ds")
    assert fresh.num_episodes == 3 and len(fresh) == 15 and fresh.validate().ok
    np.testing.assert_array_equal(fresh.episode(2)["observation.rgb"], episode_data(2, 3)["observation.rgb"])


def _rgb_chunk(root: Path, chunk: int) -> Path:
    return root / "data" / "observation.rgb" / "c" / str(chunk) / "0" / "0" / "0"


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_validate_names_a_damaged_chunk_and_intact_episodes_stay_readable(tmp_path: Path, damage: str) -> None:
    make(tmp_path / "ds")
    chunk = _rgb_chunk(tmp_path / "ds", 3)  # frames 12-15: episode 2 (12-14) and episode 3 (15-23)
    raw = bytearray(chunk.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
        chunk.write_bytes(bytes(raw))
    elif damage == "truncate":
        chunk.write_bytes(bytes(raw[: len(raw) // 3]))
    else:
        chunk.unlink()
    ds = Dataset.open(tmp_path / "ds")
    with pytest.raises(DatasetError) as exc:
        ds.validate()
    message = str(exc.value)
    assert "\n" not in message and str(chunk) in message and "2 of 4 episodes intact" in message
    report = ds.validate(raise_error=False)
    assert report.damaged_episodes == [2, 3] and report.intact_episodes == [0, 1]
    for e in report.intact_episodes:
        np.testing.assert_array_equal(ds.episode(e)["observation.rgb"], episode_data(e, LENGTHS[e])["observation.rgb"])
    with pytest.raises(DatasetError, match=str(chunk)):
        ds.episode(3)
    np.testing.assert_array_equal(ds.episode(3, keys=["action"])["action"], episode_data(3, 9)["action"])


def test_damaged_metadata_is_detected_and_the_backup_keeps_episodes_readable(tmp_path: Path) -> None:
    make(tmp_path / "ds")
    root_meta = tmp_path / "ds" / "zarr.json"
    root_meta.write_text(root_meta.read_text()[:200])  # truncated
    ds = Dataset.open(tmp_path / "ds")
    with pytest.raises(DatasetError, match=r"zarr\.json: not valid JSON"):
        ds.validate()
    np.testing.assert_array_equal(ds.episode(3)["action"], episode_data(3, 9)["action"])
    with pytest.raises(DatasetError, match="repair"):
        ds.append_episode(episode_data(4, 2))
    assert ds.repair_metadata() == [str(root_meta)]
    assert Dataset.open(tmp_path / "ds").validate().ok

    array_meta = tmp_path / "ds" / "data" / "reward" / "zarr.json"
    array_meta.write_text("{ not json")
    ds = Dataset.open(tmp_path / "ds")
    with pytest.raises(DatasetError, match=f"{array_meta}: cannot open array"):
        ds.validate()
    np.testing.assert_array_equal(ds.episode(0, keys=["observation.state"])["observation.state"],
                                  episode_data(0, 5)["observation.state"])

    (tmp_path / "ds" / "meta" / "zarr.json").write_text("")
    root_meta.write_text("[]")
    with pytest.raises(DatasetError, match="backup copy is damaged too") as exc:
        Dataset.open(tmp_path / "ds")
    assert "\n" not in str(exc.value)


def test_truncated_array_is_detected(tmp_path: Path) -> None:
    make(tmp_path / "ds")
    meta_file = tmp_path / "ds" / "data" / "action" / "zarr.json"
    doc = json.loads(meta_file.read_text())
    doc["shape"][0] = 10
    meta_file.write_text(json.dumps(doc))
    report = Dataset.open(tmp_path / "ds").validate(raise_error=False)
    assert any("holds 10 rows" in p and "truncated" in p for p in report.problems)
    assert report.intact_episodes == [0]


def test_merge_concatenates_and_checks_schemas(tmp_path: Path) -> None:
    a = make(tmp_path / "a", lengths=[5, 7])
    b = Dataset.create(tmp_path / "b", FEATURES, fps=10, tasks=["push"], chunk_frames=CHUNKS)
    b.append_episode(episode_data(7, 4), success=False, seed=3, task="push")
    out = merge([a.path, b.path], tmp_path / "m")
    assert out.num_episodes == 3 and len(out) == 16 and out.tasks == ["reach", "push"]
    np.testing.assert_array_equal(out.episode(2)["observation.rgb"], episode_data(7, 4)["observation.rgb"])
    assert out.episode_info(2) == {"episode_index": 2, "length": 4, "success": False, "seed": 3, "task": "push"}
    x = np.concatenate([episode_data(0, 5)["action"], episode_data(1, 7)["action"], episode_data(7, 4)["action"]])
    np.testing.assert_allclose(out.stats["action"]["mean"], x.mean(0), rtol=1e-9)
    assert out.validate().ok and [s["path"] for s in out.info["merged_from"]] == [str(a.path), str(b.path)]

    other = Dataset.create(tmp_path / "c", {**FEATURES, "action": {"dtype": "float32", "shape": [3]}}, fps=10)
    with pytest.raises(DatasetError, match="different features"):
        merge([a.path, other.path], tmp_path / "m2")
    with pytest.raises(DatasetError, match="already exists"):
        merge([a.path], tmp_path / "m")


def test_create_and_open_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no dataset at"):
        Dataset.open(tmp_path / "missing")
    with pytest.raises(DatasetError, match="reserved"):
        Dataset.create(tmp_path / "x", {"episode_index": {"dtype": "int64", "shape": []}}, fps=10)
    with pytest.raises(DatasetError, match="unknown dtype"):
        Dataset.create(tmp_path / "y", {"a": {"dtype": "float99", "shape": [2]}}, fps=10)
    with pytest.raises(DatasetError, match="fps"):
        Dataset.create(tmp_path / "z", {"a": {"dtype": "float32", "shape": [2]}}, fps=0)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not an Ark dataset"):
        Dataset.open(tmp_path / "plain")
