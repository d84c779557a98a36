"""Reproducibility: metrics.json provenance, `stfcat bench` refusing rows computed on other data,
and the committed results/ recomputed (trivial baselines of every demo and real-fixture row).

The last test compares results/leaderboard.json with a fresh computation to 1e-6: it fails until
results/ is re-benched on a fresh data folder with this code (see CONTRIBUTING.md, "Splits")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _engine_models import RECIPE  # noqa: F401 - registers tiny-test, tiny-plain
from test_splits import _real, small_series

from stfcat.data.fingerprint import dataset_fingerprint, folder_fingerprint
from stfcat.data.series import load_series

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "results" / "leaderboard.json"
# a lookup for the datasets results/ has rows on (the test is parametrised by those rows, so an entry
# without rows yet, such as the CIA 250 x 250 fixture, is simply not used)
FIXTURE_FOLDERS = {"fixture-lgc-fsdaf": "fsdaf-testdata-lgc", "fixture-shenzhen": "shenzhen-l7-modis",
                   "fixture-kranj": "imagefusion-kranj", "fixture-realset1": "imagefusion-realset1",
                   "fixture-cia-e2starfm-250": "cia-e2starfm-250"}
BASELINES = ("copy-f1", "upsample-c2", "delta")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-cache")


def _bench(models, folder, out, **kw):
    from stfcat.engine.bench import run_bench

    return run_bench(models, [str(folder)], out=out, device="cpu", progress=False, **kw)


def test_metrics_json_records_data_fingerprint_versions_device_threads_and_config(tmp_path, cache):
    from stfcat.engine.run import run_experiment

    folder = small_series(tmp_path / "s", cache, dates=slice(0, 4))
    m = run_experiment("tiny-test", folder, device="cpu", seed=5, out=tmp_path / "run", progress=False,
                       images=False).metrics
    p = m["provenance"]
    assert p["data"]["fingerprint"] == folder_fingerprint(folder) == m["data_fingerprint"]
    for lib in ("torch", "numpy", "scipy", "rasterio"):
        assert p["versions"][lib], lib
    import torch

    assert p["versions"]["numpy"] == np.__version__
    assert torch.__version__.startswith(p["versions"]["torch"].split("+")[0])
    assert p["device"] == "cpu" and p["threads"] == torch.get_num_threads()
    # the run's resolved config, the same as its config.yaml
    import yaml

    assert p["config"]["seed"] == 5 and p["config"]["model"]["id"] == "tiny-test"
    assert p["config"] == yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["provenance"]["data"]["fingerprint"] == m["data_fingerprint"]


def test_bench_reruns_stale_rows_and_refuses_to_mix_data(tmp_path, cache):
    import rasterio

    from stfcat.engine.bench import rebuild_board
    from stfcat.engine.errors import EngineError

    folder = small_series(tmp_path / "s", cache, dates=slice(0, 4))
    out = tmp_path / "res"
    first = _bench(["tiny-test"], folder, out)
    fp0 = folder_fingerprint(folder)
    assert first["rows"] and all(r["fingerprint"] == fp0 for r in first["rows"])
    # the data changes (one fine image): every old row is stale
    d = load_series(folder).dates
    with rasterio.open(folder / "fine" / f"{d[-1]}.tif", "r+") as ds:
        arr = ds.read()
        ds.write(arr * np.float32(0.9))
    fp1 = folder_fingerprint(folder)
    assert fp1 != fp0
    board = json.loads((out / "leaderboard.json").read_text())
    board["rows"].append({**board["rows"][-1], "model": "gone-model"})  # stale and impossible to re-run
    (out / "leaderboard.json").write_text(json.dumps(board))
    second = _bench(["tiny-plain"], folder, out, merge=True)
    assert {r["model"] for r in second["rows"]} == {"tiny-test", "tiny-plain", *BASELINES}
    assert all(r["fingerprint"] == fp1 for r in second["rows"])  # tiny-test was re-run, not merged
    assert [(r["model"], "no data" not in r["reason"]) for r in second["refused"]] == [("gone-model", True)]
    tiny = json.loads((out / "runs" / "tiny-test-s" / "metrics.json").read_text())
    assert tiny["data_fingerprint"] == fp1
    # rebuilding from runs computed on different data is refused
    stale = json.loads((out / "runs" / "tiny-plain-s" / "metrics.json").read_text())
    stale["data_fingerprint"] = fp0
    (out / "runs" / "tiny-plain-s" / "metrics.json").write_text(json.dumps(stale))
    with pytest.raises(EngineError, match="different data"):
        rebuild_board(out)


# --- the committed results ----------------------------------------------------------------------
def _board_datasets() -> list[str]:
    if not BOARD.is_file():
        return []
    rows = json.loads(BOARD.read_text())["rows"]
    return sorted({r["dataset"] for r in rows if r.get("family") == "trivial"})


def _open(dataset: str, tmp_path: Path):
    if dataset == "demo":
        return load_series("demo", data_dir=tmp_path / "fresh")  # a fresh data folder: generated now
    assert dataset in FIXTURE_FOLDERS, f"results/ has rows on {dataset!r}: add its fixture folder to FIXTURE_FOLDERS"
    return _real(tmp_path, dataset, FIXTURE_FOLDERS[dataset])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("dataset", _board_datasets())
def test_committed_trivial_baselines_reproduce(dataset, tmp_path):
    """Every trivial-baseline row of results/ on the demo and the real fixtures, recomputed on
    freshly generated / imported data with the same cases, equals the committed numbers to 1e-6,
    and was computed on data with today's fingerprint."""
    from stfcat.engine.predict import predict_case_multi
    from stfcat.metrics import compute_all, mean_metrics
    from stfcat.models import create_model

    series = _open(dataset, tmp_path)
    rows = [r for r in json.loads(BOARD.read_text())["rows"] if r["dataset"] == dataset and r["family"] == "trivial"]
    fp = dataset_fingerprint(series)
    res_ratio = (series.fine_resolution / series.coarse_resolution
                 if series.fine_resolution and series.coarse_resolution else 1.0 / max(series.ratio, 1))
    methods = {b: create_model(b, bands=len(series.bands), ratio=series.ratio) for b in BASELINES}
    for r in rows:
        assert r.get("fingerprint") == fp, (
            f"{dataset}: the {r['model']} row of results/ was computed on other data (fingerprint "
            f"{r.get('fingerprint')}, fresh data {fp}); re-bench results/")
        kind = "spatial" if r["split"] == "spatial split" else "temporal"
        cases = [c for c in series.cases(int(r["n_refs"]), "test", kind=kind) if c.has_target]
        assert len(cases) == r["cases"], (dataset, r["model"], r["split"])
        scores = []
        for case in cases:
            preds, target, valid, _ = predict_case_multi({r["model"]: methods[r["model"]]}, case)
            scores.append(compute_all(preds[r["model"]], target, valid, resolution_ratio=res_ratio))
        mean = mean_metrics(scores)
        for k, v in r["metrics"].items():
            assert mean[k] == pytest.approx(v, rel=1e-6, abs=1e-6), (dataset, r["model"], r["n_refs"], r["split"], k)
