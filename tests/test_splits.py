"""Validation and spatial splits (stfcat.data.splits): which cases exist, which pixels training
may read, which pixels a metric uses, and the validation section of metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


# --- spatial split ------------------------------------------------------------------------------
SPATIAL = {"test": "right-third", "val": "auto", "guard": "auto"}


@pytest.fixture(scope="module")
def spatial_series(tmp_path_factory, cache):
    """64 x 64, three dates (like the 3-date fixtures), temporal split 1 3 -> 2 and a spatial split."""
    root = tmp_path_factory.mktemp("spatial")
    d = load_series("demo", data_dir=cache).dates
    return small_series(root / "small-spatial", cache, dates=slice(4, 7),
                        split={"train": [d[4], d[6]], "test": [d[5]], "spatial": SPATIAL})


def _spec(**kw):
    from stfcat.schemas import SpatialSplit

    return SpatialSplit(**{**SPATIAL, **kw})


def test_regions_are_disjoint_with_a_guard_at_least_the_receptive_field():
    from stfcat.data.splits import dilate, intersects, spatial_regions

    for shape in ((64, 64), (44, 45), (480, 480), (250, 250)):
        for rf in (0, 2, 8, 16):
            for spec in (_spec(), _spec(guard=3), _spec(test=[0, shape[0] // 2, 0, shape[1] // 2]), _spec(val="none")):
                try:
                    r = spatial_regions(spec, shape, rf)
                except Exception as exc:  # noqa: BLE001 - only "too small" may be refused
                    assert "training region" in str(exc) and shape == (44, 45), (shape, rf, spec)
                    continue
                assert r.guard >= rf and r.guard >= (spec.guard if isinstance(spec.guard, int) else 0)
                assert not intersects(r.train, dilate(r.test, r.guard, shape))
                if r.val is not None:
                    assert not intersects(r.val, r.test)
                    assert not intersects(r.train, dilate(r.val, r.guard, shape))
                    # validation and test pixels do not depend on the model
                    assert r.val == spatial_regions(spec, shape, 0).val and r.test == spatial_regions(spec, shape, 0).test
                else:
                    assert spec.val == "none"
    with pytest.raises(Exception, match="receptive field is needed"):
        spatial_regions(_spec(), (64, 64), None)
    with pytest.raises(Exception, match="left for training"):
        spatial_regions(_spec(), (44, 45), 40)
    with pytest.raises(Exception, match="no training region of at least 8x8"):
        spatial_regions(_spec(), (44, 45), 24)
    with pytest.raises(ValueError, match="region name"):
        _spec(test="middle")


def test_no_training_patch_reads_a_test_or_guard_pixel(spatial_series, monkeypatch):
    """Every window read from the files while sampling many training patches lies outside the test
    region dilated by the guard band (and outside the validation region)."""
    import stfcat.data.series as series_mod
    from stfcat.data.sampler import PatchSampler
    from stfcat.data.splits import dilate, intersects, spatial_regions

    s = load_series(spatial_series)
    rf = 6
    regions = spatial_regions(s.spatial, s.shape, rf)
    seen: list[tuple[int, int, int, int]] = []

    def spy(fn):
        def wrapped(path, *a, window=None, **kw):
            seen.append((int(window.row_off), int(window.row_off + window.height),
                         int(window.col_off), int(window.col_off + window.width)))
            return fn(path, *a, window=window, **kw)
        return wrapped

    monkeypatch.setattr(series_mod, "read_reflectance", spy(series_mod.read_reflectance))
    monkeypatch.setattr(series_mod, "read_resampled", spy(series_mod.read_resampled))
    for n_refs in (1, 2):
        cases = s.cases(n_refs, "train", kind="spatial", receptive_field=rf)
        assert cases and all(c.series.shape == (regions.train[1] - regions.train[0],
                                                 regions.train[3] - regions.train[2]) for c in cases)
        for cache_bytes in (0, 1 << 30):  # windowed reads and the cached whole-region read
            seen.clear()
            sampler = PatchSampler(cases, patch=8, batch=16, seed=1, cache_bytes=cache_bytes)
            for _ in range(20):
                sampler.sample()
            assert len(seen) > (20 if cache_bytes == 0 else 0)
            forbidden = [dilate(regions.test, regions.guard, s.shape), dilate(regions.val, regions.guard, s.shape)]
            for w in seen:
                assert not any(intersects(w, f) for f in forbidden), (w, forbidden)
                assert regions.train[0] <= w[0] and w[1] <= regions.train[1]
                assert regions.train[2] <= w[2] and w[3] <= regions.train[3]


def test_spatially_split_metrics_use_only_the_test_region(spatial_series, tmp_path, monkeypatch):
    import stfcat.engine.outputs as outputs
    from stfcat.engine.run import run_experiment
    from stfcat.metrics import rmse

    drawn = []
    real = outputs.quicklook_png

    def spy(*a, **kw):
        drawn.append(kw.get("outline"))
        return real(*a, **kw)

    monkeypatch.setattr(outputs, "quicklook_png", spy)
    m = run_experiment("tiny-test", spatial_series, device="cpu", out=tmp_path / "run", progress=False,
                       split="spatial").metrics
    s = load_series(spatial_series)
    assert m["split"] == "spatial split" and m["split_kind"] == "spatial"
    test = tuple(m["spatial_split"]["test"])
    assert test == (0, 64, 64 - 21, 64) and m["spatial_split"]["guard"] >= 2  # tiny-test: halo 2
    assert drawn == [test]  # the quick-look outlines the test region
    # the scores are those of the test region only, for the model's baselines alike
    case = s.cases(1, "test")[0]
    inputs, target, valid = case.read()
    region = np.zeros_like(valid)
    region[test[0] : test[1], test[2] : test[3]] = True
    assert m["cases"][0]["valid_fraction"] == pytest.approx((valid & region).mean())
    for method, pred in (("copy-f1", inputs["f1"]), ("upsample-c2", inputs["c2"])):
        assert m["mean"][method]["rmse"] == pytest.approx(rmse(pred, target, valid & region), abs=1e-9)
        assert m["mean"][method]["rmse"] != pytest.approx(rmse(pred, target, valid), abs=1e-6)
    # validation: the validation region, guarded from training
    assert m["val"] and m["val"]["cases"] and m["spatial_split"]["val"]
    # the same dataset split temporally is another row: scored on the whole scene
    t = run_experiment("delta", spatial_series, device="cpu", out=tmp_path / "t", progress=False, images=False).metrics
    assert t["split"] == "test" and t["spatial_split"] is None and t["cases"][0]["valid_fraction"] > 0.99


def test_temporal_split_of_a_three_date_series_for_one_reference(spatial_series):
    """Train on the pairs of the other two dates in both directions, test on the held-out date."""
    from stfcat.data.splits import available_splits, default_split

    s = load_series(spatial_series)
    d = s.dates
    train = s.cases(1, "train")
    assert {(c.ref_dates, c.target_date) for c in train} == {((d[0],), d[2]), ((d[2],), d[0])}
    assert all(d[1] not in (c.target_date, *c.ref_dates) for c in train)  # the test fine image is never seen
    assert [(c.ref_dates, c.target_date) for c in s.cases(1, "test")] == [((d[0],), d[1])]
    assert available_splits(s, 1) == ["temporal", "spatial"] and default_split(s, 1) == "temporal"
    # two references: no temporal training case on three dates, so spatial
    assert available_splits(s, 2) == ["spatial"] and default_split(s, 2) == "spatial"
    assert available_splits(s, 2, trainable=False) == ["temporal", "spatial"]


# --- the real fixtures --------------------------------------------------------------------------
def _real(tmp_path, ds_id: str, folder: str):
    import yaml
    from test_data_helpers import REAL

    from stfcat.data.fetch import fetch
    from stfcat.schemas import Dataset

    src = REAL / folder
    if not src.is_dir():
        pytest.skip(f"real test data absent: {src} (the shared fixtures live in ../shared/data/real)")
    yml = Path(__file__).resolve().parents[1] / "catalog" / "datasets" / f"{ds_id}.yaml"
    ds = Dataset.model_validate(yaml.safe_load(yml.read_text()))
    from types import SimpleNamespace

    assert fetch(ds_id, catalog=SimpleNamespace(datasets={ds_id: ds}), data_dir=tmp_path, from_path=src,
                 progress=False).ok
    return load_series(ds_id, data_dir=tmp_path)


FIXTURES = [("fixture-lgc-fsdaf", "fsdaf-testdata-lgc", 2), ("fixture-shenzhen", "shenzhen-l7-modis", 2),
            ("fixture-kranj", "imagefusion-kranj", 3), ("fixture-realset1", "imagefusion-realset1", 3),
            ("fixture-cia-e2starfm-250", "cia-e2starfm-250", 3)]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize(("ds_id", "folder", "n_dates"), FIXTURES)
def test_every_real_fixture_has_cases_for_one_and_two_reference_models(tmp_path, ds_id, folder, n_dates):
    from stfcat.data.splits import available_splits

    s = _real(tmp_path, ds_id, folder)
    assert len(s.dates) == n_dates and s.spatial is not None
    rf = 8 if min(s.shape) < 100 else 32
    for n_refs in (1, 2) if n_dates == 3 else (1,):
        test = s.cases(n_refs, "test", kind="spatial")
        train = s.cases(n_refs, "train", kind="spatial", receptive_field=rf)
        val = s.cases(n_refs, "val", kind="spatial", receptive_field=rf)
        assert test and train and val, (n_refs, test, train, val)
        assert all(c.has_target and c.region for c in test + val)
        assert "spatial" in available_splits(s, n_refs)
        inputs, target, valid = test[0].read()
        r0, r1, c0, c1 = test[0].region
        assert valid[r0:r1, c0:c1].any() and not valid[:, :c0].any()  # (real-set1: DN above 1.6 are invalid)
    assert available_splits(s, 1) == (["temporal", "spatial"] if n_dates == 3 else ["spatial"])
    if n_dates == 2:
        assert s.cases(2, "test", kind="spatial") == []


def test_bench_runs_both_splits_and_labels_them(spatial_series, tmp_path):
    from stfcat.engine.bench import run_bench

    board = run_bench(["tiny-test", "tiny-two-stage"], [str(spatial_series)], out=tmp_path / "res", device="cpu",
                      progress=False)
    rows = {(r["model"], r["n_refs"], r["split"]) for r in board["rows"]}
    # one-reference: temporal and spatial rows, each with its own baselines; two-reference: spatial only
    for split in ("test", "spatial split"):
        assert {("tiny-test", 1, split), ("copy-f1", 1, split), ("delta", 1, split)} <= rows
    assert ("tiny-two-stage", 2, "spatial split") in rows and ("tiny-two-stage", 2, "test") not in rows
    assert ("upsample-c2", 2, "spatial split") in rows
    assert not [r for r in board["runs"] if r.get("error")]
    md = (tmp_path / "res" / "leaderboard.md").read_text()
    assert md.count("spatial split (scored on the test region only") == 2
    spatial = {r["model"]: r["metrics"]["rmse"] for r in board["rows"] if r["split"] == "spatial split" and r["n_refs"] == 1}
    temporal = {r["model"]: r["metrics"]["rmse"] for r in board["rows"] if r["split"] == "test" and r["n_refs"] == 1}
    assert spatial["copy-f1"] != pytest.approx(temporal["copy-f1"])  # another region, not the whole scene
    # validation is reported apart from test: the spatial split has a validation region, the
    # temporal split of this series no validation date
    by = {(r["model"], r["split"]): r for r in board["rows"] if r["n_refs"] == 1}
    assert isinstance(by["tiny-test", "spatial split"]["val_metrics"]["rmse"], float)
    assert by["tiny-test", "spatial split"]["val_metrics"]["rmse"] != by["tiny-test", "spatial split"]["metrics"]["rmse"]
    assert by["tiny-test", "test"]["val_metrics"] is None
    assert "validation RMSE" in md


def test_cia250_fixture_declares_a_guarded_spatial_split(tmp_path):
    """The CIA 250 x 250 fixture, imported through its catalog entry: a right-third test region, a
    validation strip and a guard band at least the model's receptive field wide around both."""
    from stfcat.data.splits import dilate, intersects, spatial_regions

    s = _real(tmp_path, "fixture-cia-e2starfm-250", "cia-e2starfm-250")
    assert s.spatial is not None and s.spatial.test == "right-third" and s.spatial.guard == "auto"
    assert s.spatial.note and "guard band" in s.spatial.note
    for rf in (0, 8, 32):
        r = spatial_regions(s.spatial, s.shape, rf, "fixture-cia-e2starfm-250")
        assert r.test == (0, 250, 250 - 83, 250) and r.val is not None and r.guard >= rf
        assert not intersects(r.train, dilate(r.test, r.guard, s.shape))
        assert not intersects(r.train, dilate(r.val, r.guard, s.shape))
    train = s.cases(2, "train", kind="spatial", receptive_field=32)
    test = s.cases(2, "test", kind="spatial")
    assert train and [(c.ref_dates, c.target_date) for c in test] == [(("2001-10-08", "2001-11-02"), "2001-10-17")]
