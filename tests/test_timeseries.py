"""The time-series forecasting task end to end: demo, cases, sampler, baselines, metrics, a run of
the GRU reference model with the same outputs as an image model, and its leaderboard rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stfcat.models import create_model, model_info
from stfcat.tasks import TaskError, get_task
from stfcat.tasks.timeseries import forecast_errors
from stfcat.tasks.timeseries_demo import generate

TASK = get_task("timeseries")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ts-data")


@pytest.fixture(scope="module")
def series(data_dir):
    return TASK.open("demo", data_dir=data_dir)


def test_demo_is_deterministic_and_correlated():
    a, b = generate(), generate()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (24 * 60, 12)
    assert np.isnan(a).sum() == 12 and np.isnan(a[:, 3]).sum() == 12  # the one gap, at station 4
    ok = np.isfinite(a).all(1)
    corr = np.corrcoef(a[ok].T)
    assert corr[np.triu_indices(12, 1)].min() > 0.3  # the shared weather links every station
    assert not np.array_equal(generate(seed=1), a)


def test_split_is_chronological_and_cases_stay_in_their_period(series):
    info = model_info("persistence")
    spans = {k: series.split[k] for k in ("train", "val", "test")}
    assert spans["train"][1] == spans["val"][0] and spans["val"][1] == spans["test"][0]
    assert spans["test"][1] == len(series.times)
    (train,), (test,) = TASK.cases(series, "train", info), TASK.cases(series, "test", info)
    o = train.origins(complete=True)
    assert o.min() - series.window + 1 >= spans["train"][0] and o.max() + series.horizon < spans["train"][1]
    gap_lo, gap_hi = 24 * 10 + 6, 24 * 10 + 18  # missing at station 4: no window may touch it
    hit = np.arange(gap_lo - series.horizon, gap_hi + series.window - 1)
    assert not np.isin(hit, o).any() and {hit[0] - 1, hit[-1] + 1} <= set(o.tolist())
    t = test.origins(complete=False)
    # the first test forecast is made at the last validation hour; targets never leave the period
    assert t.min() == spans["test"][0] - 1 and t.max() + series.horizon == spans["test"][1] - 1
    assert TASK.cases(series, "val", info)[0].split == "val"


def test_sampler_is_seeded_and_gives_complete_windows(series):
    info = model_info("gru-forecast")
    cases = TASK.cases(series, "train", info)
    s1, s2 = (TASK.training_sampler(series, cases, info.recipe.quick, seed=5) for _ in range(2))
    (b1, t1), (b2, t2) = s1.sample(), s2.sample()
    assert b1["x"].shape == (64, 24, 12) and t1.shape == (64, 6, 12) and b1["hours_out"].shape == (64, 6)
    assert torch.equal(b1["x"], b2["x"]) and torch.equal(t1, t2)
    assert torch.isfinite(b1["x"]).all() and torch.isfinite(t1).all()
    # the target continues the window: hour of day advances by one step
    assert torch.equal((b1["hours_in"][:, -1] + 1) % 24, b1["hours_out"][:, 0])


def test_baselines_match_an_independent_computation(series):
    (case,) = TASK.cases(series, "test", model_info("persistence"))
    origins = case.origins(complete=False)
    methods = {}
    for b in TASK.baselines:
        methods[b] = create_model(b, **TASK.model_kwargs(series))
        TASK.prepare_model(methods[b], series)
    preds, target, valid, _ = TASK.predict(methods, case)
    v, hours = series.values, series.hours
    k = np.arange(1, series.horizon + 1)
    np.testing.assert_allclose(preds["persistence"], np.repeat(v[origins][:, None], series.horizon, 1))
    np.testing.assert_allclose(preds["same-hour-yesterday"], v[origins[:, None] + k[None] - 24])
    a, b = series.split["train"]
    clim = np.stack([np.nanmean(v[a:b][hours[a:b] == h], axis=0) for h in range(24)])
    np.testing.assert_allclose(preds["hour-of-day-mean"], clim[hours[origins[:, None] + k[None]]], rtol=1e-5)
    np.testing.assert_array_equal(target, v[origins[:, None] + k[None]])
    assert valid.all()


def test_forecast_errors_per_horizon_and_masked():
    target = np.zeros((2, 3, 2))
    pred = np.zeros((2, 3, 2))
    pred[:, 0] = 1.0  # step 1 off by 1 everywhere
    pred[0, 2, 0] = 4.0
    valid = np.ones_like(target, dtype=bool)
    valid[1, 2, 1] = False
    pred[1, 2, 1] = 1e6  # masked out
    m = forecast_errors(pred, target, valid)
    assert m["mae_h1"] == 1.0 and m["rmse_h1"] == 1.0 and m["mae_h2"] == 0.0
    assert m["mae_h3"] == pytest.approx(4.0 / 3) and m["rmse_h3"] == pytest.approx(np.sqrt(16 / 3))
    assert m["mae"] == pytest.approx(8.0 / 11) and m["rmse"] == pytest.approx(np.sqrt(20 / 11))
    with pytest.raises(ValueError, match="no valid"):
        forecast_errors(pred, target, np.zeros_like(valid))


def test_fusion_folder_is_refused_with_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x", "pairs": []}))
    with pytest.raises(TaskError, match="'kind'.*stations"):
        TASK.open(tmp_path)


def test_run_of_the_gru_writes_the_outputs_of_an_image_model(data_dir, tmp_path):
    from stfcat.engine.run import run_experiment

    res = run_experiment("gru-forecast", "demo", data_dir=data_dir, epochs=1, steps_per_epoch=3, device="cpu",
                         seed=0, out=tmp_path / "run", progress=False)
    out = res.out_dir
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "timeseries" and m["dataset"] == "demo-stations" and m["horizon"] == 6
    assert set(m["mean"]) == {"gru-forecast", "persistence", "same-hour-yesterday", "hour-of-day-mean"}
    assert {"mae", "rmse", "mae_h1", "rmse_h6"} <= set(m["mean"]["gru-forecast"])
    assert len(m["history"]) == 1 and m["params"] == model_info("gru-forecast").params
    assert (out / "quicklook" / "test.png").stat().st_size > 10_000 and (out / "loss.png").is_file()
    lines = (out / "predictions" / "gru-forecast_test.csv").read_text().splitlines()
    assert lines[0] == "origin,station,h1,h2,h3,h4,h5,h6" and len(lines) == 1 + 12 * m["cases"][0]["forecasts"]
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["model_id"] == "gru-forecast" and ck["band_names"][0] == "st01" and ck["config"]["horizon"] == 6
    model = create_model("gru-forecast", **{k: ck["config"][k] for k in ("n_stations", "window", "horizon")})
    model.load_state_dict(ck["model_state"])  # the training statistics travel with the weights
    assert float(model.std.min()) > 0.5


def test_quick_recipe_beats_persistence(data_dir, tmp_path):
    """The reference model learns something: its quick budget beats every baseline."""
    from stfcat.engine.run import run_experiment

    m = run_experiment("gru-forecast", "demo", data_dir=data_dir, epochs=2, device="cpu", seed=0,
                       out=tmp_path / "run", progress=False, images=False).metrics["mean"]
    for b in TASK.baselines:
        assert m["gru-forecast"]["rmse"] < m[b]["rmse"], b


def test_bench_gives_the_forecaster_rows_under_its_own_table(data_dir, tmp_path, monkeypatch):
    from stfcat.engine.bench import run_bench

    monkeypatch.setenv("STFCAT_DATA_DIR", str(data_dir))
    board = run_bench(models=["gru-forecast"], datasets=["demo"], out=tmp_path, device="cpu", epochs=1,
                      progress=False, data_dir=data_dir)
    rows = {r["model"]: r for r in board["rows"]}
    assert set(rows) == {"gru-forecast", "persistence", "same-hour-yesterday", "hour-of-day-mean"}
    assert {r["task"] for r in rows.values()} == {"timeseries"} and len({r["group"] for r in rows.values()}) == 1
    md = (tmp_path / "leaderboard.md").read_text()
    assert "12 stations, 24 h -> 6 h forecasts" in md and "RMSE_H6" in md
    line = next(x for x in md.splitlines() if x.startswith("| gru-forecast"))
    assert "—" not in line.split("|")[3]  # its RMSE is filled in
    from stfcat.engine.bench import rebuild_board

    rebuilt = rebuild_board(tmp_path)  # the same rows again from the runs' metrics.json
    assert {r["model"]: r["metrics"] for r in rebuilt["rows"]} == {k: r["metrics"] for k, r in rows.items()}
    assert {Path(r["out"]).name for r in rebuilt["runs"]} == {"persistence-demo", "gru-forecast-demo"}


def test_default_bench_runs_each_model_only_on_datasets_of_its_task(series):
    from stfcat.engine.bench import _models_for_dataset

    models = ["delta", "starfm", "persistence", "gru-forecast"]
    assert _models_for_dataset(models, str(series.root), catalog=None, data_dir=None) == ["persistence",
                                                                                          "gru-forecast"]
    missing = str(series.root.parent / "absent")
    assert _models_for_dataset(models, missing, catalog=None, data_dir=None) == models  # each run says why


def test_fuse_refuses_a_forecasting_model_with_one_line(tmp_path):
    from stfcat.engine.errors import EngineError
    from stfcat.engine.fuse import fuse_files

    x = tmp_path / "x.tif"
    with pytest.raises(EngineError, match="task 'timeseries'.*stfcat fuse"):
        fuse_files("gru-forecast", fine_ref=x, coarse_ref=x, coarse_target=x, out=tmp_path / "o.tif")


def test_interrupted_forecaster_resumes_exactly(data_dir, tmp_path):
    from _hooks import StopAfterEpochs

    from stfcat.engine.run import run_experiment
    from stfcat.engine.train import TrainingInterrupted

    kw = dict(data_dir=data_dir, epochs=2, steps_per_epoch=3, device="cpu", seed=1, progress=False, images=False)
    whole = run_experiment("gru-forecast", "demo", out=tmp_path / "a", **kw).metrics
    with pytest.raises(TrainingInterrupted):
        run_experiment("gru-forecast", "demo", out=tmp_path / "b", hooks=[StopAfterEpochs(1)], **kw)
    resumed = run_experiment("gru-forecast", "demo", out=tmp_path / "b", resume=True, **kw).metrics
    assert resumed["resumed"] and resumed["mean"] == whole["mean"]
