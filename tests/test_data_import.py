"""Importers: the CSIRO CIA/LGC layout (ENVI in YYYY_DOY_MonDD folders) from generated archives
that mimic the real ones, manual datasets (`--from`), the declarative role/date importer, and the
dated-geotiff layout (``L_YYYY-MM-DD.tif`` / ``M_YYYY-MM-DD.tif``) of the CIA 250 x 250 fixture."""

from __future__ import annotations

import datetime as dt
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_data_helpers import Server, dataset_yaml, sha256
from test_data_readers import write_envi

from stfcat.data import DataError, load_series
from stfcat.data.fetch import fetch

CIA_DATES = ["2001-10-08", "2001-10-17", "2001-11-02"]
MON = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def _cia_tree(root, dates=CIA_DATES, size=(24, 20), lgc=False):
    """The layout of the CSIRO downloads, at a small size:
    ``Landsat_and_MODIS_data_for_the_<site>-<id>/data/<CIA|LGC>/<Landsat|MODIS>/<YYYY_DOY_date>/<file>``.
    CIA: Landsat-7 ``L71093084_08420YYYYMMDD_HRF_modtran_surf_ref_agd66.bil`` (BIL; one ``L72...``),
    date folders like ``2001_281_08oct``; LGC: Landsat-5 ``YYYYMMDD_TM.int`` (BSQ), date folders like
    ``2004_331_Nov26``; MODIS ``MOD09GA_AYYYYDDD.sur_refl.int`` (BSQ); int16 x 10000, 6 bands,
    a few negative values (atmospheric-correction noise), ENVI headers beside each image."""
    rng = np.random.default_rng(3)
    truth = {}
    site = (
        "Landsat_and_MODIS_data_for_the_Lower_Gwydir_Catchment_study_site-Umpuxcm0-"
        if lgc
        else "Landsat_and_MODIS_data_for_the_Coleambally_Irrigation_Area-W_ks3jCn-"
    )
    top = root / site / "data" / ("LGC" if lgc else "CIA")
    for i, d in enumerate(dates):
        day = dt.date.fromisoformat(d)
        doy = day.timetuple().tm_yday
        if lgc:
            folder = f"{day.year}_{doy:03d}_{MON[day.month - 1].title()}{day.day:02d}"
        else:
            folder = f"{day.year}_{doy:03d}_{day.day:02d}{MON[day.month - 1]}"
        prev = day - dt.timedelta(days=1)  # Landsat names carry the previous (UTC) day
        fine = (rng.random((6, *size)) * 5000 + 100).astype(np.int16)
        fine[:, 0, :3] = -20  # small negative reflectance, clipped to 0 when read
        coarse = (
            fine.reshape(6, size[0] // 4, 4, size[1] // 4, 4)
            .mean(axis=(2, 4))
            .repeat(4, 1)
            .repeat(4, 2)
            .astype(np.int16)
        )
        if lgc:
            lname = f"{day:%Y%m%d}_TM.int"
            write_envi(top / "Landsat" / folder / lname, fine, "bsq")
        else:
            sat = "L72" if i == 1 else "L71"
            lname = f"{sat}093084_08420{prev:%Y%m%d}_HRF_modtran_surf_ref_agd66.bil"
            write_envi(top / "Landsat" / folder / lname, fine, "bil")
        mname = f"MOD09GA_A{day.year}{doy:03d}.sur_refl.int"
        mpath = top / "MODIS" / folder / mname
        # both header namings ENVI allows: image.int.hdr and image.hdr
        write_envi(mpath, coarse, "bsq", header=mpath.parent / (mname + ".hdr") if i % 2 == 0 else None)
        truth[d] = (np.maximum(fine, 0), coarse)
    (top.parent.parent / "readme.txt").write_text("CSIRO collection\n")
    return truth


def _manual_catalog(tmp_path, ds_id="cia", dates=CIA_DATES):
    cat = tmp_path / "catalog"
    dataset_yaml(
        cat,
        ds_id,
        {
            "kind": "manual",
            "layout": "csiro-envi",
            "instructions": "Download the collection from the CSIRO Data Access Portal as one zip.",
        },
        fine={
            "name": "Landsat-7 ETM+",
            "resolution": {"value": 30, "unit": "m"},
            "bands": ["blue", "green", "red", "nir", "swir1", "swir2"],
        },
        coarse={
            "name": "MODIS",
            "resolution": {"value": 500, "unit": "m"},
            "bands": ["blue", "green", "red", "nir", "swir1", "swir2"],
        },
        dates=dates,
        image_size="24x20",
        format="ENVI",
        landing_page="https://data.csiro.au/collection/csiro:5846",
        split={"train": dates[:2], "test": dates[2:]},
    )
    return cat


def _zip_folder(folder, out):
    import zipfile

    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return out


def test_manual_without_from_explains(tmp_path):
    cat = _manual_catalog(tmp_path)
    res = fetch("cia", catalog=cat, data_dir=tmp_path / "data")
    assert res.status == "manual" and not res.ok
    assert (
        "CSIRO Data Access Portal" in res.message and "csiro:5846" in res.message and "--from" in res.message
    )
    assert not (tmp_path / "data" / "cia").exists()


@pytest.mark.parametrize("as_archive", [True, False])
def test_csiro_envi_import(tmp_path, as_archive):
    src = tmp_path / "download"
    truth = _cia_tree(src)
    cat = _manual_catalog(tmp_path)
    from_path = _zip_folder(src, tmp_path / "cia.zip") if as_archive else src
    res = fetch("cia", catalog=cat, data_dir=tmp_path / "data", from_path=from_path)
    assert res.ok
    s = load_series("cia", data_dir=tmp_path / "data", catalog=cat)
    assert s.dates == CIA_DATES and len(s.bands) == 6 and s.shape == (24, 20)
    assert s.split == {"train": CIA_DATES[:2], "val": [], "test": CIA_DATES[2:]}
    for d, (fine, coarse) in truth.items():
        np.testing.assert_allclose(s.read_fine(d), fine * np.float32(1e-4), rtol=1e-6)  # BIL read right
        np.testing.assert_allclose(s.read_coarse(d), coarse * np.float32(1e-4), rtol=1e-6)  # BSQ read right
        assert "Landsat" in str(s.path(d, "fine")) and "MODIS" in str(s.path(d, "coarse"))
    assert s.manifest.source["layout"] == "csiro-envi"


def test_lgc_style_names(tmp_path):
    dates = ["2004-11-26", "2004-12-12"]
    src = tmp_path / "download"
    truth = _cia_tree(src, dates, lgc=True)
    cat = _manual_catalog(tmp_path, "lgc", dates)
    tar = tmp_path / "lgc.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(src, arcname=".")
    assert fetch("lgc", catalog=cat, data_dir=tmp_path / "data", from_path=tar).ok
    s = load_series("lgc", data_dir=tmp_path / "data", catalog=cat)
    assert s.dates == dates
    np.testing.assert_allclose(s.read_fine(dates[1]), truth[dates[1]][0] * np.float32(1e-4), rtol=1e-6)


def test_csiro_missing_date_and_header(tmp_path):
    src = tmp_path / "download"
    _cia_tree(src, CIA_DATES[:2])
    cat = _manual_catalog(tmp_path)
    with pytest.raises(DataError, match="2001-11-02"):
        fetch("cia", catalog=cat, data_dir=tmp_path / "d1", from_path=src)
    _cia_tree(src)
    next(src.rglob("MOD09GA_A2001290.sur_refl.hdr")).unlink()
    with pytest.raises(DataError, match=r"MOD09GA_A2001290\.sur_refl\.int: ENVI image without a \.hdr"):
        fetch("cia", catalog=cat, data_dir=tmp_path / "d2", from_path=src)


def test_csiro_band_count_mismatch_names_file(tmp_path):
    src = tmp_path / "download"
    _cia_tree(src)
    bad = next(src.rglob("MOD09GA_A2001290.sur_refl.int"))
    write_envi(bad, np.ones((4, 24, 20), np.int16), "bsq")  # its header is MOD09GA_A2001290.sur_refl.hdr
    cat = _manual_catalog(tmp_path)
    with pytest.raises(DataError, match=r"MOD09GA_A2001290\.sur_refl\.int: 4 bands.*6"):
        fetch("cia", catalog=cat, data_dir=tmp_path / "d", from_path=src)


def test_direct_archive_with_csiro_layout_over_http(tmp_path):
    src = tmp_path / "download"
    _cia_tree(src)
    data = _zip_folder(src, tmp_path / "cia.zip").read_bytes()
    srv = Server()
    try:
        srv.routes["/cia.zip"] = ("ok", data)
        cat = _manual_catalog(tmp_path)
        dataset_yaml(
            cat,
            "cia",
            {
                "kind": "direct",
                "layout": "csiro-envi",
                "files": [
                    {
                        "name": "cia.zip",
                        "url": srv.url("/cia.zip"),
                        "sha256": sha256(data),
                        "size": len(data),
                        "archive": True,
                    }
                ],
            },
            dates=CIA_DATES,
            fine={
                "name": "L7",
                "resolution": {"value": 30, "unit": "m"},
                "bands": ["b1", "b2", "b3", "b4", "b5", "b6"],
            },
        )
        res = fetch("cia", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0)
        assert res.ok and (tmp_path / "data/cia/files/cia/.stfcat-extracted").is_file()
        assert load_series("cia", data_dir=tmp_path / "data", catalog=cat).dates == CIA_DATES
        assert (
            fetch("cia", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0).downloaded == []
        )
        assert srv.hits["/cia.zip"] == 1
    finally:
        srv.close()


def test_declared_importer_checks(tmp_path):
    from stfcat.data.readers import write_geotiff

    files_dir = tmp_path / "src"
    write_geotiff(files_dir / "f1.tif", np.full((2, 8, 8), 100, np.int16))
    write_geotiff(files_dir / "c1.tif", np.full((2, 4, 4), 100, np.int16))
    files = []
    for name, role in (("f1.tif", "fine"), ("c1.tif", "coarse")):
        b = (files_dir / name).read_bytes()
        files.append(
            {
                "name": name,
                "url": f"https://example.org/{name}",
                "sha256": sha256(b),
                "size": len(b),
                "role": role,
                "date": "2020-01-01",
            }
        )
    cat = tmp_path / "catalog"
    dataset_yaml(cat, "grid", {"kind": "direct", "files": files, "layout": "geotiff-pairs"})
    with pytest.raises(DataError, match=r"c1\.tif: grid 4x4 differs from the fine grid 8x8"):
        fetch("grid", catalog=cat, data_dir=tmp_path / "d", from_path=files_dir)
    # coarse on its own grid: allowed when the YAML says so, resampled by the ratio (480/30 = 16 would not
    # cover 8x8 from 4x4 at ratio 2, so use 60 m coarse)
    dataset_yaml(
        cat,
        "grid",
        {"kind": "direct", "files": files, "layout": "geotiff-pairs"},
        coarse_on_fine_grid=False,
        coarse={"name": "c", "resolution": {"value": 60, "unit": "m"}, "bands": ["red", "nir"]},
    )
    assert fetch("grid", catalog=cat, data_dir=tmp_path / "d", from_path=files_dir).ok
    s = load_series("grid", data_dir=tmp_path / "d", catalog=cat)
    assert s.ratio == 2 and np.allclose(s.read_coarse("2020-01-01"), 0.01)


def test_bad_manual_archive_never_replaces_a_good_import(tmp_path):
    src = tmp_path / "download"
    truth = _cia_tree(src)
    cat = _manual_catalog(tmp_path)
    good = _zip_folder(src, tmp_path / "cia.zip")
    assert fetch("cia", catalog=cat, data_dir=tmp_path / "data", from_path=good).ok
    s = load_series("cia", data_dir=tmp_path / "data", catalog=cat)
    assert s.manifest.source["from"] == "cia.zip" and s.manifest.source["sha256"] == sha256(good.read_bytes())
    manifest_before = (s.root / "manifest.json").read_bytes()
    # a second archive that lacks a date: refused, naming the date, and the first import still works
    for p in list(src.rglob("2001_306_02nov")):
        shutil.rmtree(p)
    bad = _zip_folder(src, tmp_path / "cia-incomplete.zip")
    with pytest.raises(DataError, match="2001-11-02"):
        fetch("cia", catalog=cat, data_dir=tmp_path / "data", from_path=bad)
    assert (s.root / "manifest.json").read_bytes() == manifest_before
    files = s.root / "files"
    assert sorted(p.name for p in files.iterdir()) == ["archive"]  # no staging folder left behind
    s2 = load_series("cia", data_dir=tmp_path / "data", catalog=cat)
    np.testing.assert_allclose(
        s2.read_fine("2001-11-02"), truth["2001-11-02"][0] * np.float32(1e-4), rtol=1e-6
    )


def test_shipped_cia_lgc_entries_record_the_csiro_sources(tmp_path):
    from stfcat.catalog import load_catalog

    cat = load_catalog()
    for ds_id, collection, n_dates, n_train in (("cia", "csiro:5846", 17, 11), ("lgc", "csiro:5847", 14, 11)):
        ds = cat.datasets[ds_id]
        assert ds.access.kind == "manual" and ds.access.layout == "csiro-envi"
        assert ds.landing_page == f"https://data.csiro.au/collection/{collection}"
        assert (
            collection in ds.access.instructions and f"stfcat fetch {ds_id} --from" in ds.access.instructions
        )
        assert ds.doi and ds.doi.startswith("10.4225/08/")
        assert len(ds.dates) == n_dates and len(ds.split.train) == n_train
        assert set(ds.split.train) | set(ds.split.test) == set(ds.dates)
    cia = cat.datasets["cia"]
    assert cia.split.train == cia.dates[:11]  # the literature's split: first 11 pairs train
    res = fetch("cia", catalog=cat, data_dir=tmp_path)
    assert res.status == "manual" and "csiro:5846" in res.message


def test_archives_inside_the_download_are_extracted(tmp_path):
    """A portal zip that holds one zip per date folder imports like the unpacked tree."""
    src = tmp_path / "download"
    truth = _cia_tree(src)
    for date_dir in sorted(p for p in src.rglob("*") if p.is_dir() and p.parent.name == "MODIS"):
        _zip_folder(date_dir, date_dir.parent / f"{date_dir.name}.zip")
        shutil.rmtree(date_dir)
    assert not list(src.rglob("MOD09GA_*"))
    cat = _manual_catalog(tmp_path)
    res = fetch(
        "cia", catalog=cat, data_dir=tmp_path / "data", from_path=_zip_folder(src, tmp_path / "cia.zip")
    )
    assert res.ok
    s = load_series("cia", data_dir=tmp_path / "data", catalog=cat)
    assert s.dates == CIA_DATES
    np.testing.assert_allclose(
        s.read_coarse(CIA_DATES[2]), truth[CIA_DATES[2]][1] * np.float32(1e-4), rtol=1e-6
    )
    assert not list((s.root / "files").rglob("*.zip"))


def test_bands_are_never_guessed_from_the_file(tmp_path):
    src = tmp_path / "download"
    _cia_tree(src)
    cat = _manual_catalog(tmp_path)
    dataset_yaml(
        cat,
        "cia",
        {"kind": "manual", "layout": "csiro-envi", "instructions": "portal"},
        fine={"name": "L7", "resolution": {"value": 30, "unit": "m"}, "bands": []},
        dates=CIA_DATES,
    )
    with pytest.raises(DataError, match=r"'cia': fine\.bands is empty"):
        fetch("cia", catalog=cat, data_dir=tmp_path / "d", from_path=src)
    assert not (tmp_path / "d" / "cia" / "manifest.json").exists()
    assert not (tmp_path / "d" / "cia" / "files" / "archive").exists()


# --- the dated-geotiff layout: the CIA 250 x 250 fixture (L_YYYY-MM-DD.tif / M_YYYY-MM-DD.tif) -----------
REPO_CATALOG = Path(__file__).resolve().parents[1] / "catalog"
CIA250 = "fixture-cia-e2starfm-250"
CIA250_BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]
CIA250_TRANSFORM = [50.0, 0.0, 401012.5, 0.0, -50.0, 6152787.5]


def _dated_folder(root: Path, dates=CIA_DATES, shape=(250, 250), n_bands=6) -> dict[str, tuple]:
    """Generated data in the layout of ../shared/data/real/cia-e2starfm-250: ``L_<date>.tif`` (fine) and
    ``M_<date>.tif`` (coarse, already on the fine grid: 10x10 block means), float32 reflectance 0..1,
    UTM 55 S with 50 m pixels, no nodata, and a SOURCE.md beside the images."""
    from stfcat.data.readers import write_geotiff

    rng = np.random.default_rng(11)
    h, w = shape
    truth = {}
    for d in dates:
        fine = rng.uniform(0.0, 0.6, (n_bands, h, w)).astype(np.float32)
        coarse = fine.reshape(n_bands, h // 10, 10, w // 10, 10).mean(axis=(2, 4)).repeat(10, 1).repeat(10, 2)
        for name, img in ((f"L_{d}.tif", fine), (f"M_{d}.tif", coarse)):
            write_geotiff(root / name, img.astype(np.float32), crs="EPSG:32755", transform=CIA250_TRANSFORM)
        truth[d] = (fine, coarse)
    (root / "SOURCE.md").write_text("# generated stand-in for the CIA 250 x 250 fixture\n")
    return truth


def _cli_fetch(*args: str):
    from typer.testing import CliRunner

    from stfcat.cli.main import app

    # the repository's catalog, whatever checkout the installed package points at
    return CliRunner().invoke(app, ["fetch", *args, "--catalog", str(REPO_CATALOG)])


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_cia250_fetch_from_a_dated_geotiff_folder(tmp_path, form):
    src = tmp_path / "cia-e2starfm-250"
    truth = _dated_folder(src)
    from_path = src if form == "folder" else _zip_folder(src, tmp_path / "cia250.zip")
    r = _cli_fetch(CIA250, "--from", str(from_path), "--dir", str(tmp_path / "data"))
    assert r.exit_code == 0, r.output
    s = load_series(CIA250, data_dir=tmp_path / "data")
    m = s.manifest
    assert s.dates == CIA_DATES and s.bands == CIA250_BANDS and s.shape == (250, 250)
    assert m.ratio == 10 and m.fine_resolution == 50 and m.coarse_resolution == 500
    assert m.crs == "EPSG:32755" and m.transform == pytest.approx(CIA250_TRANSFORM)
    assert s.split == {"train": ["2001-10-08", "2001-11-02"], "val": [], "test": ["2001-10-17"]}
    assert s.spatial is not None and s.spatial.test == "right-third" and s.spatial.guard == "auto"
    assert m.source["layout"] == "dated-geotiff"
    for d, (fine, coarse) in truth.items():
        assert s.path(d, "fine").name == f"L_{d}.tif" and s.path(d, "coarse").name == f"M_{d}.tif"
        np.testing.assert_allclose(s.read_fine(d), fine, rtol=1e-6)
        np.testing.assert_allclose(s.read_coarse(d), coarse, rtol=1e-6)
    # the two-reference case of the split: F1 = 10-08, F3 = 11-02 -> 10-17
    assert [(c.ref_dates, c.target_date) for c in s.cases(2, "test")] == [
        (("2001-10-08", "2001-11-02"), "2001-10-17")]


@pytest.mark.parametrize(
    ("bad", "why"),
    [("M_20011017.tif", "does not follow the dated-geotiff layout"),
     ("X_2001-10-17.tif", "does not follow the dated-geotiff layout"),
     ("M_2001-10-32.tif", "not a calendar date")],
)
def test_cia250_bad_file_name_is_a_one_line_error_naming_the_file(tmp_path, bad, why):
    src = tmp_path / "src"
    _dated_folder(src, shape=(250, 250))
    (src / "M_2001-10-17.tif").rename(src / bad)
    r = _cli_fetch(CIA250, "--from", str(src), "--dir", str(tmp_path / "data"))
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and bad in lines[0] and why in lines[0], r.output
    # refused before anything moved: no manifest and no imported archive
    folder = tmp_path / "data" / CIA250
    assert not (folder / "manifest.json").exists() and not (folder / "files" / "archive").exists()


def _dated_catalog(tmp_path, dates) -> Path:
    cat = tmp_path / "catalog"
    dataset_yaml(cat, "dated", {"kind": "manual", "layout": "dated-geotiff", "instructions": "Ask the authors."},
                 dates=dates, scale_factor=1.0)
    return cat


def test_dated_geotiff_prefixes_side_files_and_duplicates(tmp_path):
    from stfcat.data.readers import write_geotiff

    dates = ["2020-01-01", "2020-02-01"]
    src = tmp_path / "src" / "top"
    write_geotiff(src / "F_2020-01-01.tiff", np.full((2, 8, 8), 0.1, np.float32))
    write_geotiff(src / "C_2020-01-01.TIF", np.full((2, 8, 8), 0.2, np.float32))
    write_geotiff(src / "sub" / "L_2020-02-01.tif", np.full((2, 8, 8), 0.3, np.float32))
    write_geotiff(src / "sub" / "M_2020-02-01.tif", np.full((2, 8, 8), 0.4, np.float32))
    (src / "L_2020-02-01.tif.aux.xml").write_text("<PAMDataset/>")  # GDAL side file: not an image
    (src / "notes.txt").write_text("not an image")
    cat = _dated_catalog(tmp_path, dates)
    assert fetch("dated", catalog=cat, data_dir=tmp_path / "data", from_path=src.parent).ok
    s = load_series("dated", data_dir=tmp_path / "data")
    assert s.dates == dates
    np.testing.assert_allclose(s.read_coarse("2020-01-01"), 0.2, rtol=1e-6)
    np.testing.assert_allclose(s.read_fine("2020-02-01"), 0.3, rtol=1e-6)
    # a second fine image of a date (another prefix, same date) is refused, naming both files
    write_geotiff(src / "F_2020-02-01.tif", np.full((2, 8, 8), 0.3, np.float32))
    with pytest.raises(DataError, match=r"two fine images for 2020-02-01: top/F_2020-02-01\.tif and top/sub/L_2020-02-01\.tif"):
        fetch("dated", catalog=cat, data_dir=tmp_path / "data", from_path=src.parent)


def test_unknown_layout_fails_validation(tmp_path):
    from stfcat.catalog import CatalogError, load_catalog

    dataset_yaml(tmp_path / "catalog", "typo", {"kind": "manual", "layout": "dated-geotif", "instructions": "x"})
    with pytest.raises(CatalogError, match=r"layout 'dated-geotif' has no importer; use one of .*dated-geotiff"):
        load_catalog(tmp_path / "catalog")


def test_cia250_real_folder_imports(tmp_path):
    """The real fixture (skipped where ../shared/data/real is absent): SOURCE.md's facts."""
    from test_data_helpers import REAL

    src = REAL / "cia-e2starfm-250"
    if not src.is_dir():
        pytest.skip(f"real test data absent: {src} (the shared fixtures live in ../shared/data/real)")
    r = _cli_fetch(CIA250, "--from", str(src), "--dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    s = load_series(CIA250, data_dir=tmp_path)
    assert s.dates == CIA_DATES and s.bands == CIA250_BANDS and s.ratio == 10 and s.shape == (250, 250)
    assert s.manifest.crs == "EPSG:32755" and s.manifest.transform == pytest.approx(CIA250_TRANSFORM)
    assert s.split["test"] == ["2001-10-17"]
    # SOURCE.md: file means 0.1251 (L 10-08) and 0.1238 (M 10-17); the reading rule masks the few water
    # pixels below -0.01 and clips the rest of the negatives to 0, which moves the mean by far less than 1e-3
    assert float(np.nanmean(s.read_fine("2001-10-08"))) == pytest.approx(0.1251, abs=1e-3)
    assert float(np.nanmean(s.read_coarse("2001-10-17"))) == pytest.approx(0.1238, abs=1e-3)
    (case,) = s.cases(2, "test")
    assert case.ref_dates == ("2001-10-08", "2001-11-02") and case.target_date == "2001-10-17"
