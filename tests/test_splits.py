"""Validation and spatial splits (stfcat.data.splits): which cases exist, which pixels training
may read, which pixels a metric uses, and the validation section of metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _engine_models import RECIPE  # noqa: F401 - registers tiny-test (halo 2)

from stfcat.data.manifest import Manifest, write_manifest
from stfcat.data.readers import write_geotiff
from stfcat.data.series import load_series


def small_series(folder: Path, demo_dir: Path, *, size: int = 64, dates: slice = slice(0, 8), split=None) -> Path:
    """A user-style series cropped from the demo scene with the given manifest ``split``."""
    demo = load_series("demo", data_dir=demo_dir)
    ds = demo.dates[dates]
    win = (0, 0, size, size)
    tf = list(demo.profile["transform"])
    pairs = []
    for d in ds:
        write_geotiff(folder / "fine" / f"{d}.tif", demo.read_fine(d, win), crs=demo.profile["crs"], transform=tf)
        write_geotiff(folder / "coarse" / f"{d}.tif", demo.read_coarse(d, win), crs=demo.profile["crs"], transform=tf)
        pairs.append({"date": d, "fine": {"path": f"fine/{d}.tif"}, "coarse": {"path": f"coarse/{d}.tif"}})
    m = Manifest(name=folder.name, bands=demo.bands, scale_factor=1.0, fine_resolution=30.0, coarse_resolution=480.0,
                 ratio=16, shape=(size, size), crs=demo.profile["crs"], transform=tf, split=split or {}, pairs=pairs)
    write_manifest(m, folder)
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="module")
def val_series(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("val")
    d = load_series("demo", data_dir=cache).dates
    return small_series(root / "small-val", cache, dates=slice(0, 6),
                        split={"train": [d[0], d[1], d[2]], "val": [d[3]], "test": [d[4], d[5]]})


def test_metrics_json_has_a_validation_section_beside_test(val_series, tmp_path):
    from stfcat.engine.run import run_experiment

    m = run_experiment("tiny-test", val_series, device="cpu", seed=0, out=tmp_path / "run", progress=False,
                       images=False).metrics
    d = load_series(val_series).dates
    assert [c["target_date"] for c in m["cases"]] == [d[4], d[5]]
    assert [(c["ref_dates"], c["target_date"]) for c in m["val"]["cases"]] == [([d[2]], d[3])]
    assert set(m["val"]["mean"]) == set(m["mean"])
    # the validation copy-f1 score is that of the validation case, recomputed here
    from stfcat.metrics import rmse

    case = load_series(val_series).cases(1, "val")[0]
    inputs, target, valid = case.read()
    assert m["val"]["mean"]["copy-f1"]["rmse"] == pytest.approx(rmse(inputs["f1"], target, valid), abs=1e-9)
    assert m["val"]["mean"]["copy-f1"]["rmse"] != pytest.approx(m["mean"]["copy-f1"]["rmse"])
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["val"]["mean"]["delta"]["rmse"] == pytest.approx(m["val"]["mean"]["delta"]["rmse"])


def test_no_validation_dates_no_validation_section(tmp_path, cache):
    from stfcat.engine.run import run_experiment

    folder = small_series(tmp_path / "s", cache, dates=slice(0, 4))
    m = run_experiment("delta", folder, device="cpu", out=tmp_path / "run", progress=False, images=False).metrics
    assert m["val"] is None and len(m["cases"]) == 1
