"""The fleet simulation on a local Ray instance gives the same model as the in-process simulator."""

from __future__ import annotations

import numpy as np
import pytest

import ray  # the fl-ray extra, part of the dev install

from edge.fl.ray_runner import simulate_on_ray  # noqa: E402
from edge.fl.simulation import SimConfig, simulate  # noqa: E402


def test_ray_workers_reproduce_the_in_process_simulation() -> None:
    cfg = SimConfig(task="blobs", hidden=16, clients=12, rounds=3, local_steps=5, batch_size=16, lr=0.1,
                    strategy="scaffold", participation={"kind": "uniform", "fraction": 0.5})
    local = simulate(cfg)
    rows = []
    on_ray = simulate_on_ray(cfg, workers=2, progress=rows.append,
                             init_kwargs={"object_store_memory": 80 * 2**20})
    np.testing.assert_allclose(on_ray.params, local.params, rtol=1e-6, atol=1e-7)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert on_ray.bytes_up == local.bytes_up
    assert not ray.is_initialized()  # the runner shut down the Ray it started
