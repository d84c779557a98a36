"""Engine: training with stages/recipes, exact resume, whole-scene run outputs, tiling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _engine_models import make_small_series  # also registers tiny-test, tiny-two-stage
from _hooks import StopAfterEpochs

from stfcat.engine.run import run_experiment
from stfcat.engine.train import TrainingInterrupted

REQUIRED = ("rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "r2")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small user series folder (64 x 64, 6 dates, 2 test dates) cropped from the demo."""
    root = tmp_path_factory.mktemp("stfcat-data")
    return make_small_series(root / "small", root / "cache")


def _run(data_dir, out, model="tiny-test", **kw):
    kw.setdefault("images", False)
    return run_experiment(model, data_dir, device="cpu", seed=3, out=out, progress=False, **kw)


def test_run_writes_outputs_and_scores_baselines(data_dir, tmp_path):
    res = _run(data_dir, tmp_path / "run", images=True)
    out = res.out_dir
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["mean"]) == {"tiny-test", "copy-f1", "upsample-c2", "delta"}
    for scores in m["mean"].values():
        for k in REQUIRED:
            assert isinstance(scores[k], float), k
    assert m["split"] == "test" and len(m["cases"]) == 2
    assert all(c["target_date"] and c["ref_dates"] for c in m["cases"])
    assert m["params"] > 0 and m["train_seconds"] > 0 and m["infer_seconds"] > 0
    assert len(m["history"]) == 3 and m["device"] == "cpu" and m["stfcat_version"]
    assert m["model"] == "tiny-test" and m["dataset"] and "git_commit" in m and m["infer_seconds"] < 1e4
    for c in m["cases"]:  # per-case metrics of the model and of every baseline, with the case's dates
        assert set(c["metrics"]) == set(m["mean"]) and c["target_date"] not in c["ref_dates"]
        assert all(set(REQUIRED) <= set(v) for v in c["metrics"].values())
        assert c["id"] == "+".join(c["ref_dates"]) + "->" + c["target_date"]
    for method, scores in m["mean"].items():  # the mean is the mean of the cases
        assert scores["rmse"] == pytest.approx(np.mean([c["metrics"][method]["rmse"] for c in m["cases"]]))
    # copy-f1 is exactly F1: its RMSE equals an independent computation on the case
    from stfcat.data.series import load_series
    from stfcat.metrics import rmse

    case = load_series(data_dir).cases(1, "test")[0]
    inputs, target, valid = case.read()
    assert m["cases"][0]["metrics"]["copy-f1"]["rmse"] == pytest.approx(rmse(inputs["f1"], target, valid), abs=1e-9)
    # GeoTIFF with the series' georeferencing, PNGs, checkpoint
    import rasterio

    tifs = sorted((out / "predictions").glob("*.tif"))
    assert len(tifs) == 2
    prof = load_series(data_dir).profile
    with rasterio.open(tifs[0]) as ds:
        assert ds.crs is not None and ds.count == 6 and ds.descriptions[3] == "nir"
        assert ds.crs.to_string() == str(prof["crs"])
        assert tuple(ds.transform)[:6] == pytest.approx(tuple(prof["transform"])[:6])
        assert (ds.height, ds.width) == tuple(load_series(data_dir).shape)
    assert len(list((out / "quicklook").glob("*.png"))) == 2
    assert (out / "loss.png").stat().st_size > 1000
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["model_id"] == "tiny-test" and ck["config"]["bands"] == 6 and ck["band_names"][0] == "blue"
    assert ck["train"]["done"]
    import os

    mask = os.umask(0)
    os.umask(mask)
    for f in ("metrics.json", "checkpoint.pt", "loss.png", *(str(p.relative_to(out)) for p in out.glob("*/*"))):
        assert (out / f).stat().st_mode & 0o777 == 0o666 & ~mask, f"{f}: not readable like a normal file"


def test_resume_after_interruption_equals_uninterrupted(data_dir, tmp_path):
    full = _run(data_dir, tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        _run(data_dir, tmp_path / "part", hooks=[StopAfterEpochs(1)])
    ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ck["train"]["pos"] == {"stage": 0, "epoch": 1, "step": 0} and not ck["train"]["done"]
    resumed = _run(data_dir, tmp_path / "part", resume=True)
    assert resumed.metrics["resumed"]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.metrics["history"] == full.metrics["history"]
    assert resumed.metrics["mean"] == full.metrics["mean"]


def test_resume_mid_epoch_signal_and_multi_stage(data_dir, tmp_path, monkeypatch):
    """Two stages (loss + custom step); a SIGTERM mid-epoch stops between steps; resume is exact."""
    import os
    import signal

    full = _run(data_dir, tmp_path / "full", model="tiny-two-stage", epochs=4)
    assert [h["stage"] for h in full.metrics["history"]] == ["warm", "warm", "refine", "refine"]
    assert "l1" in full.metrics["history"][-1]

    import stfcat.engine.train as T

    calls = {"n": 0}
    real = T._to_device

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # second step of the third epoch (stage "refine")
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(T, "_to_device", interrupting)
    with pytest.raises(TrainingInterrupted):
        _run(data_dir, tmp_path / "part", model="tiny-two-stage", epochs=4)
    monkeypatch.setattr(T, "_to_device", real)
    ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ck["train"]["pos"] == {"stage": 1, "epoch": 0, "step": 2}
    resumed = _run(data_dir, tmp_path / "part", model="tiny-two-stage", epochs=4, resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["stage"] for h in resumed.metrics["history"]] == ["warm", "warm", "refine", "refine"]
    for x, y in zip(resumed.metrics["history"], full.metrics["history"], strict=True):
        for k in x:
            if k != "stage":
                assert x[k] == pytest.approx(y[k], rel=1e-12), k


def test_optimizer_and_scheduler_follow_recipe():
    from stfcat.engine.optim import make_optimizer, make_scheduler
    from stfcat.models import OptimSpec

    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer(p, OptimSpec(name="sgd", lr=0.1, momentum=0.5))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    sch = make_scheduler(opt, OptimSpec(scheduler="step", scheduler_args={"step_size": 2, "gamma": 0.1}), 10)
    for _ in range(2):
        opt.step()
        sch.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    cos = make_scheduler(make_optimizer(p, OptimSpec(lr=1.0)), OptimSpec(scheduler="cosine"), epochs=4)
    assert cos.T_max == 4
    assert make_scheduler(opt, OptimSpec(), 3) is None


def test_tiled_prediction_matches_whole_image(data_dir):
    """Tiles overlapping by >= halo and blended give the untiled prediction inside the scene."""
    from dataclasses import replace

    from stfcat.data.series import load_series
    from stfcat.engine.predict import predict_case, tile_layout
    from stfcat.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny-test", bands=6, ratio=16).eval()
    case = load_series(data_dir).cases(1, "test")[0]
    layout = replace(tile_layout(model), core=16)  # the default core would cover the small scene in one tile
    assert len(layout.windows(case.series.shape)) > 4
    tiled = predict_case(model, case, layout=layout)
    batch, _, _ = case.tensors()
    with torch.no_grad():
        whole = model(batch)[0].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_non_trainable_model_runs_without_training(data_dir, tmp_path):
    res = _run(data_dir, tmp_path / "d", model="delta")
    assert res.metrics["train_seconds"] == 0 and res.metrics["history"] == []
    assert set(res.metrics["mean"]) == {"delta", "copy-f1", "upsample-c2"}
    assert res.metrics["mean"]["delta"]["rmse"] < res.metrics["mean"]["upsample-c2"]["rmse"]


def test_stage_plan_shares():
    from stfcat.engine.train import stage_plan
    from stfcat.models import Stage

    f = lambda b, t: t.sum()  # noqa: E731
    assert stage_plan([Stage("a", loss=f, share=0.25), Stage("b", loss=f, share=0.75)], 8) == [2, 6]
    assert stage_plan([Stage("a", loss=f, share=0.1)], 2) == [1]


def test_resume_with_other_budget_is_refused(data_dir, tmp_path):
    from stfcat.engine.errors import EngineError

    _run(data_dir, tmp_path / "r", epochs=1)
    with pytest.raises(EngineError, match="stage epochs"):
        _run(data_dir, tmp_path / "r", epochs=2, resume=True)
    with pytest.raises(EngineError, match="no checkpoint"):
        _run(data_dir, Path(tmp_path / "none"), resume=True)


def test_full_recipe_uses_the_paper_budget_and_overrides(data_dir, tmp_path):
    res = _run(data_dir, tmp_path / "p", full_recipe=True, steps_per_epoch=1, lr=5e-4)
    assert res.metrics["budget"] == {"epochs": 4, "patch": 32, "batch": 4, "steps_per_epoch": 1, "which": "paper"}
    assert len(res.metrics["history"]) == 4 and res.metrics["lr"] == 5e-4
    ck = torch.load(tmp_path / "p" / "checkpoint.pt", weights_only=True)
    # step scheduler (gamma 0.7 per epoch) applied to the overridden learning rate
    assert ck["train"]["optimizers"]["main"]["param_groups"][0]["lr"] == pytest.approx(5e-4 * 0.7**4)


def test_quicklook_stretch_makes_dark_reflectance_readable(tmp_path, monkeypatch):
    """Reflectance of 0.01..0.06 shown raw is near black; the 2-98 % stretch spreads it over the
    display range, the same stretch for every RGB panel, and the error map has its own scale."""
    import matplotlib.axes

    from stfcat.engine.outputs import quicklook_png

    shown: list[np.ndarray] = []
    real = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, x, **kw: (shown.append(np.asarray(x)),
                                                                             real(ax, x, **kw))[1])
    rng = np.random.default_rng(0)
    names = ["blue", "green", "red", "nir", "swir1", "swir2"]
    truth = rng.uniform(0.01, 0.06, (6, 40, 48)).astype(np.float32)
    panels = {"F1": truth * 0.9, "C1": truth * 0.8, "C2": truth * 1.1}
    path = quicklook_png(tmp_path / "q.png", panels, truth, truth + 0.005, names, "t")
    assert path.stat().st_size > 1000
    assert len(shown) == 6  # F1, C1, C2, prediction, truth, error
    rgb_truth = shown[4]
    assert rgb_truth.shape == (40, 48, 3)
    assert np.allclose(rgb_truth, np.clip((truth[[2, 1, 0]].transpose(1, 2, 0) - np.percentile(
        truth[[2, 1, 0]].reshape(3, -1), 2, axis=1)) / (np.percentile(truth[[2, 1, 0]].reshape(3, -1), 98, axis=1)
        - np.percentile(truth[[2, 1, 0]].reshape(3, -1), 2, axis=1)), 0, 1), atol=1e-5)  # red, green, blue
    lo, hi = np.percentile(rgb_truth, [5, 95])
    assert lo < 0.1 and hi > 0.9  # uses the display range, unlike raw reflectance (max 0.06)
    assert shown[3].mean() > rgb_truth.mean()  # a brighter prediction looks brighter: one common stretch
    assert shown[5].shape == (40, 48) and shown[5].max() == pytest.approx(0.005, abs=1e-5)


def test_loss_curve_draws_one_line_per_stage(tmp_path, monkeypatch):
    import matplotlib.axes

    from stfcat.engine.outputs import loss_curve_png

    drawn: list[tuple[list, list, str]] = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, x, y, **kw: (
        drawn.append((list(x), list(y), kw.get("label"))), real(ax, x, y, **kw))[1])
    hist = [{"stage": "a", "epoch": 1, "loss": 3.0}, {"stage": "a", "epoch": 2, "loss": 2.0},
            {"stage": "b", "epoch": 1, "loss": 9.0}]
    assert loss_curve_png(tmp_path / "l.png", hist, "t").stat().st_size > 1000
    assert drawn == [([1, 2], [3.0, 2.0], "a: loss"), ([3], [9.0], "b: loss")]


def test_continued_stage_keeps_the_optimiser_and_resumes_exactly(data_dir, tmp_path):
    """``continues``: the second stage goes on with the first stage's Adam moments, step count and
    learning-rate schedule; an interruption at the stage boundary resumes to the same weights."""
    full = _run(data_dir, tmp_path / "full", model="tiny-continued", epochs=4)
    assert [h["stage"] for h in full.metrics["history"]] == ["mse", "mse", "mse+l1", "mse+l1"]
    ck = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["train"]
    steps = 4 * 3  # epochs x steps per epoch of the recipe's quick budget
    assert all(int(st["step"]) == steps for st in ck["optimizers"]["main"]["state"].values())
    sched = ck["schedulers"]["main"]
    assert sched["last_epoch"] == 4 and sched["_last_lr"][0] == pytest.approx(1e-3 * 0.7**4)
    with pytest.raises(TrainingInterrupted):
        _run(data_dir, tmp_path / "part", model="tiny-continued", epochs=4, hooks=[StopAfterEpochs(2)])
    part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["train"]
    assert part["pos"] == {"stage": 1, "epoch": 0, "step": 0}
    _run(data_dir, tmp_path / "part", model="tiny-continued", epochs=4, resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="continues"):
        from stfcat.models import OptimSpec, Stage

        Stage("x", loss=lambda b, t: t.sum(), continues=True, optimizers={"a": ([], OptimSpec())})
