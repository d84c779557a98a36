"""Readers: ENVI (BSQ/BIL/BIP, data types, byte order, map info), GeoTIFF (CRS, transform, nodata),
the reading rule, coarse resampling, and the real fixtures in ../shared/data/real."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from test_data_helpers import REAL

from stfcat.data import DataError, load_series
from stfcat.data.readers import (
    apply_reading_rule,
    raster_info,
    read_reflectance,
    read_resampled,
    write_geotiff,
)
from stfcat.schemas import Dataset

ENVI_TYPES = {"int16": 2, "uint16": 12, "float32": 4, "uint8": 1}
MAP_INFO = (
    "map info = {UTM, 1.000, 1.000, 500000.000, 4000000.000, 30.000, 30.000, 50, North, WGS-84, units=Meters}"
)


def write_envi(
    path: Path,
    data: np.ndarray,
    interleave: str = "bsq",
    big_endian: bool = False,
    map_info: bool = False,
    header: Path | None = None,
) -> Path:
    """Write ``data`` (B, H, W) as raw ENVI + header (the test's own writer, independent of GDAL)."""
    b, h, w = data.shape
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    dt = data.dtype.newbyteorder(">" if big_endian else "<")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.ascontiguousarray(data.transpose(order)).astype(dt).tobytes())
    lines = [
        "ENVI",
        "description = {test}",
        f"samples = {w}",
        f"lines   = {h}",
        f"bands   = {b}",
        "header offset = 0",
        "file type = ENVI Standard",
        f"data type = {ENVI_TYPES[data.dtype.name]}",
        f"interleave = {interleave}",
        f"byte order = {int(big_endian)}",
    ]
    if map_info:
        lines.append(MAP_INFO)
    hdr = header or path.with_suffix(".hdr")
    hdr.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_envi_layouts(tmp_path, interleave, dtype, big_endian):
    rng = np.random.default_rng(1)
    data = (rng.random((3, 5, 7)) * 9000 + 10).astype(dtype)
    p = write_envi(tmp_path / f"img.{interleave}", data, interleave, big_endian)
    out = read_reflectance(p, scale_factor=1e-4)
    np.testing.assert_allclose(out, data.astype(np.float32) * np.float32(1e-4), rtol=1e-6)
    # band selection follows the caller's (the manifest's) order
    sel = read_reflectance(p, scale_factor=1e-4, bands=[3, 1, 2])
    np.testing.assert_allclose(sel[0], out[2])
    with pytest.raises(DataError, match="has 3 bands but the dataset has 4"):
        read_reflectance(p, scale_factor=1e-4, n_bands=4)


def test_envi_map_info_and_no_extension(tmp_path):
    data = np.arange(2 * 4 * 6, dtype=np.int16).reshape(2, 4, 6)
    p = write_envi(tmp_path / "Landsat20040101", data, map_info=True, header=tmp_path / "Landsat20040101.HDR")
    info = raster_info(p)
    assert info.shape == (4, 6) and info.count == 2 and info.driver == "ENVI"
    assert "32650" in info.crs or "UTM zone 50N" in info.crs
    assert info.transform == pytest.approx((30, 0, 500000, 0, -30, 4000000))
    np.testing.assert_allclose(
        read_reflectance(p, scale_factor=1e-4, window=(1, 2, 3, 2)), data[:, 2:4, 1:4] * 1e-4, rtol=1e-6
    )


def test_geotiff_keeps_crs_transform_nodata(tmp_path):
    data = np.full((2, 6, 6), 1234, np.int16)
    data[:, 0, 0] = -9999
    tf = [30, 0, 700000, 0, -30, 2500000]
    p = write_geotiff(tmp_path / "a.tif", data, crs="EPSG:32649", transform=tf, nodata=-9999)
    info = raster_info(p)
    assert info.crs == "EPSG:32649" and info.transform == pytest.approx(tuple(tf)) and info.nodata == -9999
    out = read_reflectance(p, scale_factor=1e-4)
    assert np.isnan(out[:, 0, 0]).all() and np.allclose(out[:, 1:, 1:], 0.1234)


def test_reading_rule():
    raw = np.array([[[-50, -200, 17000, -9999, 500, 16000]]], dtype=np.float32)
    raw_nan = np.array([[[np.nan, np.inf, 100]]], dtype=np.float32)
    out = apply_reading_rule(raw, 1e-4, -9999)
    assert out[0, 0, 0] == 0.0  # small negative reflectance clipped to 0
    assert np.isnan(out[0, 0, 1:4]).all()  # too negative, above 1.6, nodata
    assert out[0, 0, 4] == pytest.approx(0.05) and out[0, 0, 5] == pytest.approx(1.6)
    out2 = apply_reading_rule(raw_nan, 1e-4, None)
    assert np.isnan(out2[0, 0, :2]).all() and out2[0, 0, 2] == pytest.approx(0.01)
    f32 = np.array([[[-3.4e38, 100]]], dtype=np.float32)
    assert np.isnan(apply_reading_rule(f32, 1e-4, -3.4e38)[0, 0, 0])


def _coarse_ramp(tmp_path, georef=True):
    k = 6
    ramp = (np.arange(k)[None, :] * 100 + np.arange(k)[:, None] * 10 + 1000).astype(np.int16)
    data = np.stack([ramp, ramp + 500])
    kw = {"crs": "EPSG:32650", "transform": [480, 0, 500000, 0, -480, 4000000]} if georef else {}
    return write_geotiff(tmp_path / f"c{int(georef)}.tif", data, **kw), data


def test_resample_georeferenced_bilinear(tmp_path):
    p, data = _coarse_ramp(tmp_path)
    fine_tf = [30, 0, 500000, 0, -30, 4000000]
    full = read_resampled(
        p, scale_factor=1e-4, fine_shape=(96, 96), fine_crs="EPSG:32650", fine_transform=fine_tf, ratio=16
    )
    assert full.shape == (2, 96, 96) and np.isfinite(full).all()
    # bilinear reproduces a linear ramp exactly between coarse pixel centres
    r, c = 40, 56  # fine pixel centre -> coarse coordinates
    cx, cy = (c + 0.5) / 16 - 0.5, (r + 0.5) / 16 - 0.5
    expect = (1000 + 100 * cx + 10 * cy) * 1e-4
    assert full[0, r, c] == pytest.approx(expect, abs=2e-6)
    win = read_resampled(
        p,
        scale_factor=1e-4,
        fine_shape=(96, 96),
        fine_crs="EPSG:32650",
        fine_transform=fine_tf,
        ratio=16,
        window=(20, 30, 40, 25),
    )
    np.testing.assert_allclose(win, full[:, 30:55, 20:60], atol=1e-6)


def test_resample_by_ratio_and_errors(tmp_path):
    p, _ = _coarse_ramp(tmp_path, georef=False)
    out = read_resampled(
        p, scale_factor=1e-4, fine_shape=(96, 96), fine_crs=None, fine_transform=None, ratio=16
    )
    # same ramp, placed by the ratio with the upper-left corners aligned
    for r, c in ((8, 8), (40, 56), (70, 23)):
        cx, cy = (c + 0.5) / 16 - 0.5, (r + 0.5) / 16 - 0.5
        assert out[0, r, c] == pytest.approx((1000 + 100 * cx + 10 * cy) * 1e-4, abs=2e-6)
    with pytest.raises(DataError, match="ratio"):
        read_resampled(
            p, scale_factor=1e-4, fine_shape=(96, 96), fine_crs=None, fine_transform=None, ratio=None
        )
    with pytest.raises(DataError, match="do not cover"):
        read_resampled(
            p, scale_factor=1e-4, fine_shape=(200, 96), fine_crs=None, fine_transform=None, ratio=16
        )
    g, _ = _coarse_ramp(tmp_path, georef=True)
    with pytest.raises(DataError, match=r"c1\.tif: the coarse image does not overlap"):
        read_resampled(
            g,
            scale_factor=1e-4,
            fine_shape=(32, 32),
            fine_crs="EPSG:32650",
            fine_transform=[30, 0, 900000, 0, -30, 4000000],
            ratio=16,
        )


# --- real fixtures ----------------------------------------------------------------------------
CATALOG_DATASETS = Path(__file__).resolve().parents[1] / "catalog" / "datasets"


def _import_real(tmp_path, ds_id: str, folder: str):
    src = REAL / folder
    if not src.is_dir():
        pytest.skip(f"real test data absent: {src} (the shared fixtures live in ../shared/data/real)")
    yml = CATALOG_DATASETS / f"{ds_id}.yaml"
    if not yml.is_file():
        pytest.skip(f"{yml} not in the catalog yet")
    ds = Dataset.model_validate(yaml.safe_load(yml.read_text()))
    from stfcat.data.fetch import fetch

    cat = SimpleNamespace(datasets={ds_id: ds})
    res = fetch(ds_id, catalog=cat, data_dir=tmp_path, from_path=src, progress=False)
    assert res.ok
    return load_series(ds_id, data_dir=tmp_path)


def test_real_fsdaf_lgc_envi(tmp_path):
    s = _import_real(tmp_path, "fixture-lgc-fsdaf", "fsdaf-testdata-lgc")
    assert s.shape == (480, 480) and s.bands == ["green", "red", "nir"] and s.ratio == 16
    f1 = s.read_fine("2004-11-26")
    # SOURCE.md: band means 951, 1130, 2277 (x 10000)
    np.testing.assert_allclose(np.nanmean(f1, axis=(1, 2)), [0.0951, 0.1130, 0.2277], atol=2e-4)
    c1 = s.read_coarse("2004-11-26")  # MODIS file: no extension, upper-case .HDR
    np.testing.assert_allclose(
        c1[:, :16, :16].mean(axis=(1, 2)), f1[:, :16, :16].mean(axis=(1, 2)), atol=1e-4
    )
    (case,) = s.cases(1)
    inputs, target, valid = case.read()
    assert valid.all() and target.shape == (3, 480, 480)


def test_real_shenzhen_geotiff(tmp_path):
    s = _import_real(tmp_path, "fixture-shenzhen", "shenzhen-l7-modis")
    assert s.profile["crs"] == "EPSG:32649"
    assert s.profile["transform"] == pytest.approx((30, 0, 796065, 0, -30, 2510655))
    f = s.read_fine("2000-11-01")
    np.testing.assert_allclose(np.nanmean(f, axis=(1, 2)), [0.2439, 0.0980, 0.09015], atol=3e-4)
    assert s.bands[0] == "nir"


def test_real_kranj_per_role_scale(tmp_path):
    s = _import_real(tmp_path, "fixture-kranj", "imagefusion-kranj")
    fine = s.read_fine("2020-03-08")
    coarse = s.read_coarse("2020-03-08")
    # SOURCE.md: Landsat b1 mean 343.9 (x10000), MODIS b1 mean 0.03125 (x1): same units after reading
    assert np.nanmean(fine[0]) == pytest.approx(0.03439, abs=2e-4)
    assert np.nanmean(coarse[0]) == pytest.approx(0.03125, abs=2e-4)
    assert s.manifest.pairs[0].coarse.scale_factor == 1.0


def test_real_manifests_keep_facts(tmp_path):
    from stfcat.data import read_manifest

    s = _import_real(tmp_path, "fixture-shenzhen", "shenzhen-l7-modis")
    m = read_manifest(s.root)
    assert m.nodata == 32767 and m.scale_factor == pytest.approx(1e-4) and m.crs == "EPSG:32649"
    assert m.transform == pytest.approx([30, 0, 796065, 0, -30, 2510655])
    assert [p.date for p in m.pairs] == ["2000-11-01", "2002-11-07"]
    assert all(p.fine.path.startswith("files/") and p.coarse.grid == "fine" for p in m.pairs)
    lgc = read_manifest(_import_real(tmp_path / "lgc", "fixture-lgc-fsdaf", "fsdaf-testdata-lgc").root)
    assert lgc.crs is None and lgc.transform is None and lgc.ratio == 16 and lgc.nodata == 0
    # the SVM classification (role other) and the headers are not images of the series
    assert {p.fine.path.split("/")[-1] for p in lgc.pairs} == {"Landsat20041126", "Landsat20041228"}


def test_real_realset1_no_georef(tmp_path):
    s = _import_real(tmp_path, "fixture-realset1", "imagefusion-realset1")
    assert s.shape == (444, 444) and s.profile["crs"] is None and len(s.bands) == 4
    assert s.dates == ["2016-08-07", "2016-08-23", "2016-08-30"]
    # only the bilinear MODIS files are coarse images; the nearest-neighbour ones (role other) are not
    assert all("bilinear" in s.path(d, "coarse").name for d in s.dates)
    c = s.read_coarse("2016-08-07")
    assert np.isfinite(c).all() and 0.02 < float(np.nanmean(c)) < 0.4
    # the Landsat files are DN, not x10000 reflectance (SOURCE.md): the reading rule masks what falls
    # above 1.6 instead of passing impossible reflectance on
    f = s.read_fine("2016-08-07")
    assert 0.0 < np.isnan(f).mean() < 0.5 and np.nanmax(f) <= 1.6


def test_band_order_and_scale_come_from_the_manifest(tmp_path):
    import json

    folder = tmp_path / "s"
    data = np.stack([np.full((4, 4), v, np.int16) for v in (100, 200, 300)])
    write_geotiff(folder / "f.tif", data)
    write_geotiff(folder / "c.tif", data * 10)  # stored x1000 instead of x10000
    manifest = {
        "format": "stfcat-manifest",
        "name": "s",
        "bands": ["red", "nir"],
        "scale_factor": 1e-4,
        "shape": [4, 4],
        "pairs": [
            {
                "date": "2020-01-01",
                "fine": {"path": "f.tif", "bands": [3, 1]},
                "coarse": {"path": "c.tif", "bands": [3, 1], "scale_factor": 1e-5},
            }
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    s = load_series(folder)
    np.testing.assert_allclose(s.read_fine("2020-01-01")[:, 0, 0], [0.03, 0.01], rtol=1e-6)
    np.testing.assert_allclose(s.read_coarse("2020-01-01")[:, 0, 0], [0.03, 0.01], rtol=1e-6)
    manifest["pairs"][0]["fine"]["bands"] = [4, 1]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"f\.tif: band index 4 requested but the file has 3 bands"):
        load_series(folder).read_fine("2020-01-01")


def test_reads_are_windowed_not_whole_scenes(tmp_path, monkeypatch):
    """Memory follows the window: a tile read never asks GDAL for the whole fine or coarse scene."""
    import rasterio.io

    s = load_series("demo", data_dir=tmp_path)
    asked: list[tuple[int, int]] = []
    orig = rasterio.io.DatasetReader.read

    def spy(self, *args, window=None, **kw):
        assert window is not None, f"{self.name}: whole-file read"
        asked.append((int(window.height), int(window.width)))
        return orig(self, *args, window=window, **kw)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    case = s.cases(2)[0]
    inputs, target, valid = case.read((64, 96, 32, 32))
    assert inputs["c2"].shape == (6, 32, 32) and valid.shape == (32, 32)
    fine_reads = [a for a in asked if a == (32, 32)]
    coarse_reads = [a for a in asked if a != (32, 32)]
    assert len(fine_reads) == 3 and len(coarse_reads) == 3  # f1, f3, target; c1, c2, c3
    # 32 fine px = 2 coarse px, plus the bilinear margin: a few coarse pixels, not the 16x16 scene
    assert all(h <= 8 and w <= 8 for h, w in coarse_reads)


@pytest.mark.parametrize(
    "ds_id,folder,n_files",
    [
        ("fixture-kranj", "imagefusion-kranj", 6),
        ("fixture-lgc-fsdaf", "fsdaf-testdata-lgc", 10),
        ("fixture-realset1", "imagefusion-realset1", 9),
        ("fixture-shenzhen", "shenzhen-l7-modis", 4),
    ],
)
def test_cli_fetch_from_real_folder(tmp_path, ds_id, folder, n_files):
    """`stfcat fetch ID --from FOLDER --dir DIR` with the shipped catalog: sha256 verified, manifest built."""
    from typer.testing import CliRunner

    from stfcat.cli.main import app

    src = REAL / folder
    if not src.is_dir():
        pytest.skip(f"real test data absent: {src} (the shared fixtures live in ../shared/data/real)")
    r = CliRunner().invoke(app, ["fetch", ds_id, "--from", str(src), "--dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"{n_files} file(s) imported" in r.output
    s = load_series(ds_id, data_dir=tmp_path)
    assert s.read_fine(s.dates[0]).shape == (len(s.bands), *s.shape)
    # a second --from run after a file went bad locally at the source is refused with both hashes
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in src.rglob("*"):
        if p.is_file():
            dest = bad / p.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
    from stfcat.catalog import load_catalog

    listed = {f.name for f in load_catalog().datasets[ds_id].access.files}
    victim = next(p for p in sorted(bad.rglob("*")) if p.name in listed and p.stat().st_size > 1000)
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    r = CliRunner().invoke(app, ["fetch", ds_id, "--from", str(bad), "--dir", str(tmp_path / "again")])
    assert r.exit_code == 1 and "sha256 mismatch" in r.output and victim.name in r.output
