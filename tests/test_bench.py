"""`stfcat bench`: leaderboard files, baselines always present, a failing model is recorded."""

from __future__ import annotations

import json

import _engine_models  # noqa: F401
import pytest
from _engine_models import make_small_series

from stfcat.engine.bench import run_bench
from stfcat.models import FusionModel, register_model
from stfcat.models.registry import _REGISTRY

if "broken-test" not in _REGISTRY:

    @register_model("broken-test", paper=None, family="classical", params=0)
    class Broken(FusionModel):
        """Always fails, like a model with a bug."""

        trainable = False

        def forward(self, batch):
            raise RuntimeError("boom")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-data")
    return make_small_series(root / "small", root / "cache")


def test_bench_writes_leaderboard_and_survives_failures(series, tmp_path):
    (tmp_path / "reported.json").write_text(json.dumps({"tiny-plain": {"small": {"rmse": 0.02, "ssim": 0.9}}}))
    board = run_bench(models=["broken-test", "tiny-plain"], datasets=[str(series)], out=tmp_path, device="cpu",
                      epochs=1, progress=False)
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(board["rows"]))
    models = [r["model"] for r in saved["rows"]]
    assert sorted(models) == ["copy-f1", "delta", "tiny-plain", "upsample-c2"]
    tiny = next(r for r in saved["rows"] if r["model"] == "tiny-plain")
    assert tiny["params"] == 6 * 18 * 9 + 6 and tiny["train_seconds"] > 0
    assert tiny["reported"]["rmse"] == 0.02 and tiny["source"] == "reproduced here"
    for r in saved["rows"]:
        assert {"rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "r2"} <= set(r["metrics"])
    failed = [r for r in saved["runs"] if r.get("error")]
    assert [f["model"] for f in failed] == ["broken-test"] and "boom" in failed[0]["error"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| tiny-plain |" in md and "0.0200 / 0.9000" in md and "—" in md and "Failed runs" in md


def test_bench_cli_exit_code_on_failure(series, tmp_path):
    from typer.testing import CliRunner

    from stfcat.cli.main import app

    res = CliRunner().invoke(app, ["bench", "--models", "broken-test", "--datasets", str(series), "--out",
                                   str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 1 and "1 failed run" in res.output
    assert (tmp_path / "leaderboard.md").is_file()


def test_bench_merge_keeps_other_rows_and_replaces_rerun_ones(series, tmp_path):
    run_bench(models=["tiny-plain"], datasets=[str(series)], out=tmp_path, device="cpu", epochs=1, progress=False)
    first = json.loads((tmp_path / "leaderboard.json").read_text())
    first_tiny = next(r for r in first["rows"] if r["model"] == "tiny-plain")
    # a second sitting with another model: merge keeps tiny-plain, adds copy-f1's run, no duplicates
    run_bench(models=["copy-f1"], datasets=[str(series)], out=tmp_path, device="cpu", progress=False, merge=True)
    merged = json.loads((tmp_path / "leaderboard.json").read_text())
    keys = [(r["model"], r["dataset"]) for r in merged["rows"]]
    assert len(keys) == len(set(keys))
    assert sorted(m for m, _ in keys) == ["copy-f1", "delta", "tiny-plain", "upsample-c2"]
    assert next(r for r in merged["rows"] if r["model"] == "tiny-plain") == first_tiny
    # without merge the file holds only what was run now
    run_bench(models=["copy-f1"], datasets=[str(series)], out=tmp_path, device="cpu", progress=False)
    alone = json.loads((tmp_path / "leaderboard.json").read_text())
    assert "tiny-plain" not in [r["model"] for r in alone["rows"]]
