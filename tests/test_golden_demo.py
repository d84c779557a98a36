"""Golden values of the demo: its fingerprint and the trivial baselines' RMSE per test and
validation case. They change only when the generator (or the demo's manifest) changes: then
bump ``DEMO_VERSION``, re-bench ``results/`` and update the values here in the same commit."""

from __future__ import annotations

import json

import pytest

from stfcat.data import demo as demo_mod
from stfcat.data.fingerprint import dataset_fingerprint, folder_fingerprint
from stfcat.data.series import load_series

DEMO_FINGERPRINT = "e9461120dd1e2c51c4945498f5562207e38ecad5443720bff272bd792012f2ff"

# (n_refs, split, case id) -> RMSE of copy-f1, upsample-c2, delta
GOLDEN_RMSE = {
    (1, "test", "2021-07-07->2021-08-08"): (0.012627184356308595, 0.04845112001393681, 0.00967493962476543),
    (1, "test", "2021-08-08->2021-09-09"): (0.041227695624529104, 0.046937571378491805, 0.028720149207932828),
    (1, "test", "2021-09-09->2021-10-11"): (0.024201842739965698, 0.04589836393138778, 0.019983235910292125),
    (1, "val", "2021-05-04->2021-06-05"): (0.04156653084026842, 0.04732064945669889, 0.025943444542939068),
    (2, "test", "2021-07-07+2021-09-09->2021-08-08"): (0.012627184356308595, 0.04845112001393681,
                                                      0.00967493962476543),
    (2, "test", "2021-08-08+2021-10-11->2021-09-09"): (0.04127182933740156, 0.046902307664317085,
                                                      0.02873973164734118),
    (2, "val", "2021-05-04+2021-07-07->2021-06-05"): (0.04156653084026842, 0.04732064945669889,
                                                     0.025943444542939068),
}
BASELINES = ("copy-f1", "upsample-c2", "delta")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_series("demo", data_dir=tmp_path_factory.mktemp("golden"))


def test_demo_fingerprint_is_pinned(demo):
    assert demo_mod.generator_fingerprint() == DEMO_FINGERPRINT
    assert dataset_fingerprint(demo) == DEMO_FINGERPRINT  # the files written hold the generator's arrays


def test_trivial_baselines_of_every_demo_case_are_pinned(demo):
    from stfcat.engine.predict import predict_case_multi
    from stfcat.metrics import rmse
    from stfcat.models import create_model

    methods = {b: create_model(b, bands=len(demo.bands), ratio=demo.ratio) for b in BASELINES}
    got = {}
    for n_refs in (1, 2):
        for split in ("test", "val"):
            for case in demo.cases(n_refs, split):
                preds, target, valid, _ = predict_case_multi(methods, case)
                got[(n_refs, split, case.id)] = tuple(rmse(preds[b], target, valid) for b in BASELINES)
    assert set(got) == set(GOLDEN_RMSE)
    for key, values in GOLDEN_RMSE.items():
        assert got[key] == pytest.approx(values, abs=1e-9), key


def test_a_stale_cached_demo_is_regenerated(tmp_path):
    """Same DEMO_VERSION and seed but other content (a stale cache from an earlier generator):
    ensure_demo checks the fingerprint, not the version label, and regenerates."""
    import numpy as np
    import rasterio

    folder = demo_mod.write_demo(tmp_path / "demo")
    tif = folder / "fine" / f"L_{demo_mod.dates()[6]}.tif"
    with rasterio.open(tif, "r+") as ds:
        arr = ds.read()
        arr[:, 100:110, 100:110] = np.int16(1234)
        ds.write(arr)
    assert folder_fingerprint(folder) != DEMO_FINGERPRINT
    assert json.loads((folder / "manifest.json").read_text())["source"]["demo_version"] == demo_mod.DEMO_VERSION
    demo_mod.ensure_demo(folder)
    assert folder_fingerprint(folder) == DEMO_FINGERPRINT
    assert not [p for p in tmp_path.iterdir() if p.name != "demo"]  # no temporary folder left behind
    # a changed split (manifest) is other data too
    raw = json.loads((folder / "manifest.json").read_text())
    raw["split"]["test"] = raw["split"]["test"][:1]
    (folder / "manifest.json").write_text(json.dumps(raw))
    assert folder_fingerprint(folder) != DEMO_FINGERPRINT
    demo_mod.ensure_demo(folder)
    assert folder_fingerprint(folder) == DEMO_FINGERPRINT


def test_fingerprint_ignores_where_the_data_came_from_not_what_it_is(tmp_path):
    folder = demo_mod.write_demo(tmp_path / "demo")
    raw = json.loads((folder / "manifest.json").read_text())
    raw["source"]["created"] = "2030-01-01T00:00:00Z"
    raw["split"]["note"] = "reworded"
    (folder / "manifest.json").write_text(json.dumps(raw))
    assert folder_fingerprint(folder) == DEMO_FINGERPRINT
    raw["scale_factor"] = 2e-4
    (folder / "manifest.json").write_text(json.dumps(raw))
    assert folder_fingerprint(folder) != DEMO_FINGERPRINT
