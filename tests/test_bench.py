"""`stfcat bench`: leaderboard files, baselines always present, a failing model is recorded."""

from __future__ import annotations

import json

import _engine_models  # noqa: F401
import pytest
from _engine_models import make_small_series

from stfcat.engine.bench import run_bench
from stfcat.models import FusionModel, register_model, scoped


@pytest.fixture()
def broken_model():
    """A model that always fails, like one with a bug (registered for this test only)."""
    with scoped():

        @register_model("broken-test", paper=None, family="classical", params=0)
        class Broken(FusionModel):
            """Always fails, like a model with a bug."""

            trainable = False

            def forward(self, batch):
                raise RuntimeError("boom")

        yield "broken-test"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-data")
    return make_small_series(root / "small", root / "cache")


def test_bench_writes_leaderboard_and_survives_failures(series, tmp_path, broken_model):
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


def test_bench_cli_exit_code_on_failure(series, tmp_path, broken_model):
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
    # without merge (replacing needs overwrite: issue 13) the file holds only what was run now
    run_bench(models=["copy-f1"], datasets=[str(series)], out=tmp_path, device="cpu", progress=False, overwrite=True)
    alone = json.loads((tmp_path / "leaderboard.json").read_text())
    assert "tiny-plain" not in [r["model"] for r in alone["rows"]]


def test_one_and_two_reference_models_get_baselines_of_their_own_cases(series, tmp_path):
    """A 2-reference model is scored on fewer cases than a 1-reference one: each case set gets
    its own baseline rows, and --rebuild reproduces the leaderboard from the runs' metrics.json."""
    board = run_bench(models=["tiny-plain", "tiny-two-stage"], datasets=[str(series)], out=tmp_path,
                      device="cpu", epochs=1, progress=False)
    by_refs: dict[int, dict[str, dict]] = {}
    for r in board["rows"]:
        by_refs.setdefault(r["n_refs"], {})[r["model"]] = r
    assert set(by_refs) == {1, 2}
    for refs, model in ((1, "tiny-plain"), (2, "tiny-two-stage")):
        rows = by_refs[refs]
        assert {"copy-f1", "upsample-c2", "delta", model} <= set(rows)
        assert len({r["cases"] for r in rows.values()}) == 1  # baselines scored on the model's cases
        run = json.loads((tmp_path / "runs" / f"{model}-{series.name}" / "metrics.json").read_text())
        assert rows["delta"]["metrics"] == pytest.approx(run["mean"]["delta"], rel=1e-6, abs=1e-9)
    assert by_refs[1]["delta"]["cases"] > by_refs[2]["delta"]["cases"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "one reference pair" in md and "two reference pairs" in md

    from stfcat.engine.bench import rebuild_board

    rebuilt = rebuild_board(tmp_path)
    key = lambda r: (r["model"], r["n_refs"])  # noqa: E731
    assert sorted(map(key, rebuilt["rows"])) == sorted(map(key, board["rows"]))
    assert {key(r): r["metrics"] for r in rebuilt["rows"]} == {key(r): r["metrics"] for r in board["rows"]}
