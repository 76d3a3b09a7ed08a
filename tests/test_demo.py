"""`make demo` end to end at toy size: driver process, collect, train, evaluate, export, policy node."""

from __future__ import annotations

import pytest

from ark import demo


@pytest.mark.timeout(240)
def test_demo_runs_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ARK_CONFIG", raising=False)
    monkeypatch.setenv("ARK_REGISTRY", demo._free_registry())  # inherited by the driver process
    rc = demo.main(["--demos", "2", "--steps", "30", "--episodes", "2", "--deploy-episodes", "1",
                    "--work", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    for stage in ("driver", "collect", "train", "evaluate", "export", "deploy"):
        assert f"│ {stage}" in out
    assert "2 expert episodes" in out and "30 steps" in out and "ONNX Runtime policy node" in out
    # the work folder keeps what each stage wrote
    assert (tmp_path / "data" / "push").is_dir()
    assert (tmp_path / "runs" / "push-bc" / "onnx" / "policy.onnx").is_file()
