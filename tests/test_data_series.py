"""Demo generator, pair series, cases, sampler and tiling (the API models and the runner use)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stfcat.data import (
    DataError,
    ManifestError,
    PatchSampler,
    TileBlender,
    iter_tiles,
    load_series,
    read_manifest,
)
from stfcat.data import demo as demo_mod
from stfcat.data.readers import write_geotiff


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_series("demo", data_dir=tmp_path_factory.mktemp("data"))


def test_demo_facts(demo):
    assert demo.bands == ["blue", "green", "red", "nir", "swir1", "swir2"]
    assert demo.shape == (256, 256) and demo.ratio == 16
    assert demo.fine_resolution == 30 and demo.coarse_resolution == 480
    assert len(demo.dates) == 8 and demo.dates == sorted(demo.dates)
    d = demo.dates
    assert demo.split == {"train": [d[0], d[1], d[2], d[4]], "val": [d[3]], "test": d[5:]}
    m = read_manifest(demo.root)
    assert m.format_version == 2 and all(p.coarse.grid == "native" for p in m.pairs)
    # coarse really stored on its native 480 m grid
    from stfcat.data.readers import raster_info

    assert raster_info(demo.path(demo.dates[0], "coarse")).shape == (16, 16)
    assert demo.profile["crs"] == "EPSG:32650"


def test_demo_is_deterministic(tmp_path):
    # speed (well under 2 s) is measured by hand / benchmarks, never asserted in a test
    a = demo_mod.generate(7)
    b = demo_mod.generate(7)
    c = demo_mod.generate(8)
    assert np.array_equal(a["fine"], b["fine"]) and not np.array_equal(a["fine"], c["fine"])
    f = a["fine"]
    assert -0.05 < f.min() and f.max() < 0.8  # realistic reflectance
    nir, red = f[:, 3], f[:, 2]
    assert (nir - red).max() > 0.25  # vegetation present
    assert len(np.unique(a["classes"])) == 6


def test_demo_scene_is_nontrivial(demo):
    # abrupt change (flood) between dates 6 and 7 is much larger than the noise
    f6, f7 = demo.read_fine(demo.dates[5]), demo.read_fine(demo.dates[6])
    assert np.nanmax(np.abs(f7 - f6)) > 0.2
    # coarse is not a plain block mean of fine (PSF + misregistration + noise)
    c = demo.read_coarse(demo.dates[0])
    assert c.shape == (6, 256, 256) and np.isfinite(c).all()
    f = demo.read_fine(demo.dates[0])
    assert 0.003 < np.sqrt(np.nanmean((c - f) ** 2)) < 0.2


def test_demo_regenerated_when_version_changes(tmp_path):
    folder = demo_mod.ensure_demo(tmp_path / "demo")
    mpath = folder / "manifest.json"
    first = mpath.stat().st_mtime_ns
    assert demo_mod.ensure_demo(folder).joinpath("manifest.json").stat().st_mtime_ns == first
    raw = json.loads(mpath.read_text())
    raw["source"]["demo_version"] = -1
    mpath.write_text(json.dumps(raw))
    demo_mod.ensure_demo(folder)
    assert json.loads(mpath.read_text())["source"]["demo_version"] == demo_mod.DEMO_VERSION


def test_cases_split_rules(demo):
    d = demo.dates
    test1 = demo.cases(1, "test")
    assert [(c.ref_dates, c.target_date) for c in test1] == [
        ((d[4],), d[5]),
        ((d[5],), d[6]),
        ((d[6],), d[7]),
    ]
    test2 = demo.cases(2, "test")
    assert [(c.ref_dates, c.target_date) for c in test2] == [((d[4], d[6]), d[5]), ((d[5], d[7]), d[6])]
    train_dates = [d[0], d[1], d[2], d[4]]
    train1 = demo.cases(1, "train")
    assert len(train1) == 6
    for c in train1:  # the validation date is never a training target nor reference
        assert c.target_date in train_dates and all(r in train_dates for r in c.ref_dates)
    assert {(c.ref_dates[0], c.target_date) for c in train1} >= {(d[0], d[1]), (d[1], d[0]), (d[2], d[4])}
    train2 = demo.cases(2, "train")
    assert [(c.ref_dates, c.target_date) for c in train2] == [((d[0], d[2]), d[1]), ((d[1], d[4]), d[2])]
    # validation: date 4, references from train dates only (never a test date)
    assert [(c.ref_dates, c.target_date) for c in demo.cases(1, "val")] == [((d[2],), d[3])]
    assert [(c.ref_dates, c.target_date) for c in demo.cases(2, "val")] == [((d[2], d[4]), d[3])]
    with pytest.raises(ValueError, match="n_refs"):
        demo.cases(3)
    with pytest.raises(ValueError, match="split"):
        demo.cases(1, "dev")


def test_val_references_never_come_from_test_dates(demo):
    d = demo.dates
    # a validation date after the last train date: with one reference, the nearest earlier
    # train date; with two, no case (the later neighbour would be a test date)
    other = demo.with_split(train=d[:4], val=[d[4]], test=d[5:])
    assert [(c.ref_dates, c.target_date) for c in other.cases(1, "val")] == [((d[3],), d[4])]
    assert other.cases(2, "val") == []
    assert [c.target_date for c in other.cases(1, "test")] == d[5:]
    with pytest.raises(DataError, match="both train and val"):
        demo.with_split(train=d[:4], val=[d[3]], test=d[5:])


def test_case_read_and_tensors(demo):
    case = demo.cases(2, "test")[1]  # target 7 with refs 6 and 8: f3 has the cloud gap
    inputs, target, valid = case.read()
    assert set(inputs) == {"f1", "c1", "c2", "f3", "c3"}
    for v in inputs.values():
        assert v.shape == (6, 256, 256) and v.dtype == np.float32 and np.isfinite(v).all()
    assert target.shape == (6, 256, 256)
    assert not valid[150:162, 40:52].any() and valid.mean() > 0.99
    batch, tgt, mask = case.tensors((32, 16, 64, 48))
    assert batch["f1"].shape == (1, 6, 48, 64) and tgt.shape == (1, 6, 48, 64) and mask.shape == (1, 48, 64)
    # a window reads exactly the same pixels as the whole scene (coarse resampling included)
    np.testing.assert_allclose(batch["c2"][0].numpy(), inputs["c2"][:, 16:64, 32:96], atol=1e-6)
    np.testing.assert_allclose(batch["f1"][0].numpy(), inputs["f1"][:, 16:64, 32:96])


def test_missing_date_and_window_errors(demo):
    with pytest.raises(DataError, match="1999-01-01.*manifest.json"):
        demo.read_fine("1999-01-01")
    with pytest.raises(DataError, match="outside"):
        demo.read_fine(demo.dates[0], (250, 0, 20, 20))


def test_patch_sampler(demo):
    cases = demo.cases(1, "train")
    a = PatchSampler(cases, 32, 4, seed=3)
    b = PatchSampler(cases, 32, 4, seed=3)
    ba, ta = a.sample()
    bb, tb = b.sample()
    assert set(ba) == {"f1", "c1", "c2"} and ba["f1"].shape == (4, 6, 32, 32) and ta.shape == (4, 6, 32, 32)
    for k in ba:
        assert (ba[k] == bb[k]).all()
    assert not (a.sample()[1] == ta).all()
    assert ta.isfinite().all()
    # windowed (uncached) reading gives the same batches as the cached path
    c = PatchSampler(cases, 32, 4, seed=3, cache_bytes=0)
    bc, tc = c.sample()
    assert (tc == ta).all() and (bc["c2"] - ba["c2"]).abs().max() < 1e-6
    with pytest.raises(ValueError, match="patch"):
        PatchSampler(cases, 300, 1)
    with pytest.raises(ValueError, match="empty"):
        PatchSampler([], 32, 1)


def test_sampler_augmentation_is_consistent(demo):
    case = demo.cases(1, "train")[0]
    s = PatchSampler([case], 256, 1, seed=0, augment=True)
    inputs, target, _ = case.read()
    seen = set()
    for _ in range(12):
        batch, tgt = s.sample()
        f1 = batch["f1"][0].numpy()
        t = tgt[0].numpy()
        for k in range(4):
            for flip in (False, True):
                ref = np.rot90(inputs["f1"], k, axes=(1, 2))
                ref_t = np.rot90(target, k, axes=(1, 2))
                if flip:
                    ref, ref_t = ref[:, :, ::-1], ref_t[:, :, ::-1]
                if np.array_equal(f1, ref):
                    assert np.allclose(t, ref_t, equal_nan=True)  # same transform for every image
                    seen.add((k, flip))
    assert len(seen) >= 3


@pytest.mark.parametrize("shape,tile,overlap", [((100, 70), 32, 8), ((64, 64), 64, 0), ((20, 90), 32, 16)])
def test_tiles_cover_and_blend_seamlessly(shape, tile, overlap):
    wins = list(iter_tiles(shape, tile, overlap))
    cover = np.zeros(shape, int)
    for w in wins:
        cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
        assert w.width <= tile and w.height <= tile
    assert (cover >= 1).all()
    rng = np.random.default_rng(0)
    scene = rng.random((3, *shape)).astype(np.float32)
    blender = TileBlender(shape, 3, overlap)
    for w in wins:
        blender.add(w, scene[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width])
    np.testing.assert_allclose(blender.result(), scene, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blender.result(), scene, rtol=1e-5, atol=1e-6)  # idempotent
    with pytest.raises(ValueError, match="already taken"):
        blender.add(wins[0], scene[:, : wins[0].height, : wins[0].width])


def test_blending_crossfades_disagreeing_tiles():
    shape = (1, 48)
    wins = list(iter_tiles(shape, 32, 16))
    blender = TileBlender(shape, 1, 16)
    for i, w in enumerate(wins):
        blender.add(w, np.full((1, 1, w.width), float(i), np.float32))
    out = blender.result()[0, 0]
    steps = np.diff(out)
    assert (steps >= -1e-6).all() and steps.max() < 0.2  # a gradual ramp, no jump (seam)
    with pytest.raises(ValueError, match="overlap"):
        list(iter_tiles((10, 10), 8, 8))
    partial = TileBlender((4, 4), 1)
    partial.add((0, 0, 4, 2), np.ones((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match="8 pixels were covered by no tile.*row 2, col 0"):
        partial.result()


def test_load_series_from_folder_and_errors(tmp_path):
    with pytest.raises(ManifestError, match="manifest.json"):
        load_series(tmp_path / "nothing")
    folder = tmp_path / "mine"
    img = np.full((2, 8, 8), 1000, np.int16)
    for d in ("2020-01-01", "2020-01-09"):
        write_geotiff(folder / f"f{d}.tif", img)
        write_geotiff(folder / f"c{d}.tif", img)
    write_geotiff(folder / "bad.tif", np.zeros((3, 8, 8), np.int16))
    manifest = {
        "format": "stfcat-manifest",
        "format_version": 1,
        "name": "mine",
        "bands": ["red", "nir"],
        "scale_factor": 1e-4,
        "shape": [8, 8],
        "ratio": 1,
        "pairs": [
            {"date": d, "fine": {"path": f"f{d}.tif"}, "coarse": {"path": f"c{d}.tif"}}
            for d in ("2020-01-01", "2020-01-09")
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    s = load_series(folder)
    assert s.split == {"train": ["2020-01-01"], "val": [], "test": ["2020-01-09"]}
    assert np.allclose(s.read_fine("2020-01-01"), 0.1)
    manifest["pairs"][0]["fine"]["path"] = "bad.tif"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"bad\.tif.*3 bands.*2"):
        load_series(folder).read_fine("2020-01-01")
    manifest["pairs"][0]["fine"]["path"] = "../outside.tif"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="relative"):
        load_series(folder)
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="newer"):
        load_series(folder)


def test_manifest_write_is_atomic(tmp_path, demo, monkeypatch):
    import os

    from stfcat.data import write_manifest

    m = read_manifest(demo.root)
    write_manifest(m, tmp_path)
    before = (tmp_path / "manifest.json").read_text()
    m.name = "changed"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(m, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_case_with_unknown_dates(demo):
    from stfcat.data import Case

    with pytest.raises(DataError, match="1999-01-01"):
        Case(demo, demo.dates[1], ("1999-01-01",))


def test_external_dataset_is_not_fetchable(tmp_path):
    from test_data_helpers import dataset_yaml

    from stfcat.data import NotFetchedError

    cat = tmp_path / "catalog"
    dataset_yaml(cat, "far", {"kind": "external"})
    with pytest.raises(NotFetchedError, match=r"catalog-only.*https://example.org/far"):
        load_series("far", catalog=cat, data_dir=tmp_path / "data")
    with pytest.raises(KeyError, match="far"):
        load_series("fra", catalog=cat, data_dir=tmp_path / "data")


def test_demo_scene_has_phenology_small_objects_psf_and_misregistration():
    from scipy.ndimage import gaussian_filter, label

    s = demo_mod.generate()
    f, c, cls = s["fine"], s["coarse"], s["classes"]
    t, b, h, w = f.shape
    ndvi = (f[:, 3] - f[:, 2]) / (f[:, 3] + f[:, 2])
    traj = np.array([[ndvi[i][cls == k].mean() for i in range(t)] for k in range(4)])
    # class-specific phenology: summer and winter crops peak on different dates, the forest barely moves
    assert traj[0].argmax() != traj[1].argmax() and np.ptp(traj[0]) > 0.3 and np.ptp(traj[3]) < 0.15
    # the harvest: an abrupt NDVI drop of the winter crop between two consecutive dates
    assert np.diff(traj[1]).min() < -0.3
    # objects smaller than one coarse pixel (16 x 16 fine pixels): buildings and ponds
    small = 0
    for k in (4, 5):
        lab, _ = label(cls == k)
        small += int((np.bincount(lab.ravel())[1:] < demo_mod.RATIO**2).sum())
    assert small >= 20
    # the coarse images are explained by shift (2, -1) + a PSF wider than a block, not by a block mean
    k = h // demo_mod.RATIO

    def coarse_model(shift, sigma):
        x = np.roll(f, shift, axis=(2, 3))
        if sigma:
            x = gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest")
        return x.reshape(t, b, k, demo_mod.RATIO, k, demo_mod.RATIO).mean(axis=(3, 5)) * 1.02 + 0.004

    def rmse(model):
        return float(np.sqrt(np.mean((c - model) ** 2)))

    full = rmse(coarse_model((2, -1), 10))
    assert full < 0.006  # what is left is the coarse sensor noise
    assert rmse(coarse_model((0, 0), 10)) > 2 * full  # misregistration is there
    assert rmse(coarse_model((2, -1), 0)) > 4 * full  # the PSF is wider than the block


def test_with_split_selects_another_split(demo):
    d = demo.dates
    other = demo.with_split(train=d[:3], test=d[3:5])
    assert other.split == {"train": d[:3], "val": [], "test": d[3:5]}
    assert demo.split["train"] == [d[0], d[1], d[2], d[4]]  # the original is untouched
    assert [c.target_date for c in other.cases(1, "test")] == d[3:5]
    assert all(c.target_date in d[:3] for c in other.cases(1, "train"))
    with pytest.raises(DataError, match=r"1999-01-01.*manifest\.json"):
        demo.with_split(train=["1999-01-01"], test=d[5:])
    with pytest.raises(DataError, match="both train and test"):
        demo.with_split(train=d[:3], test=d[2:4])


def test_fine_grid_mismatch_names_the_file(tmp_path):
    folder = tmp_path / "s"
    write_geotiff(folder / "f1.tif", np.full((2, 8, 8), 1000, np.int16))
    write_geotiff(folder / "c1.tif", np.full((2, 8, 6), 1000, np.int16))
    manifest = {
        "format": "stfcat-manifest",
        "name": "s",
        "bands": ["red", "nir"],
        "scale_factor": 1e-4,
        "shape": [8, 8],
        "pairs": [{"date": "2020-01-01", "fine": {"path": "f1.tif"}, "coarse": {"path": "c1.tif"}}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    s = load_series(folder)
    with pytest.raises(DataError, match=r"c1\.tif: grid is 8x6 but the fine grid is 8x8"):
        s.read_coarse("2020-01-01")


def test_readme_one_liner(tmp_path):
    code = (
        "from stfcat.data import load_series; s = load_series('demo'); c = s.cases(1)[0]; "
        "b, t, v = c.tensors(); print(s, c.id, tuple(b['f1'].shape), tuple(t.shape), int(v.sum()))"
    )
    env = {**__import__("os").environ, "STFCAT_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "PairSeries('demo'" in out.stdout and "(1, 6, 256, 256)" in out.stdout
    assert (tmp_path / "demo" / "manifest.json").is_file()


def test_demo_yaml_matches_the_generator(demo):
    from stfcat.catalog import load_catalog

    ds = load_catalog().datasets["demo"]
    assert ds.access.kind == "embedded"
    assert ds.dates == demo.dates and ds.n_dates == len(demo.dates)
    assert ds.split.train == demo.split["train"] and ds.split.test == demo.split["test"]
    assert ds.split.val == demo.split["val"]
    assert list(ds.fine.bands) == demo.bands and ds.image_size == f"{demo.shape[0]}x{demo.shape[1]}"
    assert ds.coarse.resolution.value / ds.fine.resolution.value == demo.ratio
    assert ds.scale_factor == demo.scale_factor and ds.nodata == demo.manifest.nodata
    assert ds.coarse_on_fine_grid is False  # the demo's coarse files stay on their 480 m grid


@pytest.mark.parametrize("shape,tile,overlap,align", [((100, 77), 32, 10, 8), ((250, 97), 64, 20, 16), ((40, 40), 32, 8, 8)])
def test_aligned_tiles_start_on_the_grid_and_still_overlap(shape, tile, overlap, align):
    wins = list(iter_tiles(shape, tile, overlap, align))
    cover = np.zeros(shape, int)
    for w in wins:
        assert w.row_off % align == 0 and w.col_off % align == 0
        assert w.width <= tile + align - 1 and w.height <= tile + align - 1
        cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert (cover >= 1).all()
    for axis in ("row_off", "col_off"):
        starts = sorted({int(getattr(w, axis)) for w in wins})
        ends = sorted({int(getattr(w, axis)) + int(w.height if axis == "row_off" else w.width) for w in wins})
        assert all(e - s >= overlap for s, e in zip(starts[1:], ends[:-1], strict=False))
    with pytest.raises(ValueError, match="align"):
        list(iter_tiles(shape, 32, 30, 8))
