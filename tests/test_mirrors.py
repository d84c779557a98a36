"""``stfcat fetch`` of the commit-pinned GitHub mirrors (AHB, Daxing, Tianjin, Wuhan, the CIA crop and
the CIA numpy series), end to end against a local HTTP server on 127.0.0.1.

The server plays raw.githubusercontent.com: it serves GENERATED files at the catalog's real paths
(``/<owner>/<repo>/<commit>/<path>``); the test computes their git blob hashes and writes them into a
copy of the real catalog, so everything but the file contents is the shipped catalog entry."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_data_helpers import REAL, Server, dataset_yaml, tif_bytes
from typer.testing import CliRunner

from stfcat.catalog import load_catalog
from stfcat.data import DataError, FetchError, load_series
from stfcat.data.fetch import fetch
from stfcat.data.manifest import read_manifest
from stfcat.data.mirrors import blob_sha1, file_blob_sha1

REPO = Path(__file__).resolve().parents[1]
MIRRORED = ["ahb", "daxing", "tianjin", "wuhan", "cia-mirror", "cia-npy"]


@pytest.fixture()
def server(monkeypatch):
    srv = Server()
    monkeypatch.setenv("STFCAT_MIRROR_BASE_URL", srv.url(""))
    monkeypatch.setattr("stfcat.data.mirrors.time.sleep", lambda s: None)  # no back-off waits in tests
    yield srv
    srv.close()


def _fake_content(f: dict, i: int, tmp: Path, *, float_fine: bool, steps: int) -> bytes:
    rng = np.random.default_rng(i)
    if f["role"] == "fine":
        if float_fine:
            return tif_bytes(rng.uniform(0.02, 0.5, (3, 32, 32)).astype(np.float32), tmp)
        return tif_bytes((rng.random((3, 32, 32)) * 3000 + 200).astype(np.int16), tmp)
    if f["role"] == "coarse":
        return tif_bytes((rng.random((3, 8, 8)) * 3000 + 200).astype(np.int16), tmp)
    if f["role"].endswith("-stack"):
        buf = io.BytesIO()
        np.save(buf, (rng.random((steps, 3, 16, 16)) * 3000 + 200).astype(np.int16))
        return buf.getvalue()
    return f"ENVI\nsamples = 32\nlines = 32\nbands = 3\n; {f['path']}\n".encode()


def mirror_catalog(tmp_path: Path, srv: Server, ds_id: str, *, float_fine: bool = False, steps: int = 17):
    """Copy of the real catalog whose ``ds_id`` mirror hashes match generated files served by ``srv``."""
    cat = tmp_path / "catalog"
    shutil.copytree(REPO / "catalog", cat, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = cat / "datasets" / f"{ds_id}.yaml"
    doc = yaml.safe_load(path.read_text())
    m = doc["access"]["mirror"]
    contents = {}
    for i, f in enumerate(m["files"]):
        data = _fake_content(f, i, tmp_path, float_fine=float_fine, steps=steps)
        f["blob_sha1"] = blob_sha1(data)
        contents[f["path"]] = data
        srv.routes[f"/{m['repository']}/{m['commit']}/{f['path']}"] = ("ok", data)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cat, m, contents


def _route(m: dict, path: str) -> str:
    return f"/{m['repository']}/{m['commit']}/{path}"


def test_blob_hash_is_gits():
    # values of `git hash-object --stdin`
    assert blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_every_mirrored_dataset_is_pinned_in_the_catalog():
    cat = load_catalog(REPO / "catalog")
    for ds_id in MIRRORED:
        ds = cat.datasets[ds_id]
        assert ds.access.kind == "mirror" and len(ds.access.mirror.commit) == 40, ds_id
        assert all(len(f.blob_sha1) == 40 for f in ds.access.mirror.files), ds_id
    for ds_id in ("ahb", "daxing", "tianjin", "wuhan"):  # 8 dates each, as the repositories name them
        ds = cat.datasets[ds_id]
        assert len(ds.dates) == 8 and {f.date for f in ds.access.mirror.files} == set(ds.dates), ds_id
    assert cat.datasets["ahb"].dates[0] == "2014-04-15" and cat.datasets["wuhan"].dates[-1] == "2022-12-24"
    crop = cat.datasets["cia-mirror"]
    assert "CROP" in crop.access.mirror.what
    assert len({f.date for f in crop.access.mirror.files if f.role == "fine"}) == 4 and len(crop.dates) == 6
    assert "cia-mirror" in cat.datasets["cia"].access.instructions


def test_good_download_lands_and_manifest_reads_the_files(tmp_path, server):
    cat, m, _ = mirror_catalog(tmp_path, server, "ahb")
    data = tmp_path / "data"
    res = fetch("ahb", catalog=cat, data_dir=data, progress=False, retries=0)
    assert res.ok and len(res.downloaded) == 16
    assert "HPSCIL/cuFSDAF" in res.message and m["commit"] in res.message and "GPL-3.0" in res.message
    assert "stfcat cite survey-li-2020" in res.message
    man = read_manifest(data / "ahb")
    ds = load_catalog(cat).datasets["ahb"]
    assert man.dates == ds.dates  # the catalog's dates, as the repository names them
    assert man.bands == ["b1", "b2", "b3"]  # band count read from the files
    assert man.shape == (32, 32) and man.scale_factor == pytest.approx(1e-4)  # int16 x 10000
    assert all(p.coarse.grid == "native" for p in man.pairs) and man.ratio == 4  # 32 / 8 px
    assert man.source["repository"] == "HPSCIL/cuFSDAF" and man.source["commit"] == m["commit"]
    assert "x 10000" in man.source["read"]["scale"]
    assert man.pairs[0].fine.path == "files/Testdata/AHB/Landsat/L_2014-4-15.tif"
    s = load_series("ahb", data_dir=data, catalog=cat)
    fine = s.read_fine(s.dates[0])
    assert fine.shape == (3, 32, 32) and 0.0 < float(np.nanmax(fine)) < 0.5
    hits = dict(server.hits)
    again = fetch("ahb", catalog=cat, data_dir=data, progress=False, retries=0)
    assert again.downloaded == [] and "already present" in again.message and server.hits == hits


def test_float_reflectance_on_the_fine_grid(tmp_path, server):
    cat, _, _ = mirror_catalog(tmp_path, server, "wuhan", float_fine=True)
    fetch("wuhan", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    man = read_manifest(tmp_path / "d" / "wuhan")
    assert len(man.dates) == 8 and man.scale_factor == 1.0
    assert all(p.coarse.scale_factor == pytest.approx(1e-4) for p in man.pairs)  # per-file override


def test_cia_crop_keeps_modis_only_dates(tmp_path, server):
    cat, _, _ = mirror_catalog(tmp_path, server, "cia-mirror")
    res = fetch("cia-mirror", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    assert "CROP" in res.message and "doi:10.1016/j.rse.2013.02.007" in res.message
    assert "Assessing the accuracy of blending Landsat-MODIS" in res.message
    man = read_manifest(tmp_path / "d" / "cia-mirror")
    assert len(man.dates) == 6 and sum(p.fine is not None for p in man.pairs) == 4
    assert (tmp_path / "d" / "cia-mirror" / "files" / "TestData" / "L_2001_10_07.hdr").is_file()


def test_corrupt_file_is_refused_and_nothing_moves_into_place(tmp_path, server):
    cat, m, contents = mirror_catalog(tmp_path, server, "daxing")
    bad = "Testdata/Daxing/MODIS/M-2017-9-12.tif"
    server.routes[_route(m, bad)] = ("ok", contents[bad][:-10] + b"0123456789")
    with pytest.raises(FetchError) as err:
        fetch("daxing", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    msg = str(err.value)
    assert bad in msg and blob_sha1(contents[bad]) in msg and "mismatch" in msg
    folder = tmp_path / "d" / "daxing"
    left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert f"files/{bad}" not in left and not any(p.endswith(".part") for p in left)
    assert not (folder / "manifest.json").exists()
    # the server is fixed: the files that landed before the failure are not fetched again
    server.routes[_route(m, bad)] = ("ok", contents[bad])
    landed = [p for p in left if p.startswith("files/")]
    res = fetch("daxing", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    assert res.downloaded[0] == bad and file_blob_sha1(folder / "files" / bad) == blob_sha1(contents[bad])
    assert len(landed) + len(res.downloaded) == len(m["files"])


def test_damaged_copy_on_disk_is_replaced(tmp_path, server):
    cat, m, contents = mirror_catalog(tmp_path, server, "tianjin")
    fetch("tianjin", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    victim = tmp_path / "d" / "tianjin" / "files" / m["files"][0]["path"]
    victim.write_bytes(b"bit rot")
    res = fetch("tianjin", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    assert res.downloaded == [m["files"][0]["path"]] and victim.read_bytes() == contents[m["files"][0]["path"]]


def test_transient_server_error_is_retried(tmp_path, server):
    cat, m, contents = mirror_catalog(tmp_path, server, "ahb")
    p = m["files"][3]["path"]
    server.routes[_route(m, p)] = ("flaky", contents[p])
    assert fetch("ahb", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=1).ok
    assert server.hits[_route(m, p)] == 2


def test_missing_file_names_it(tmp_path, server):
    cat, m, _ = mirror_catalog(tmp_path, server, "ahb")
    p = m["files"][5]["path"]
    server.routes[_route(m, p)] = ("status", 404)
    with pytest.raises(FetchError, match=f"{p}: HTTP 404"):
        fetch("ahb", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=2)
    assert server.hits[_route(m, p)] == 1  # a 404 is not retried


def test_git_lfs_pointer_is_followed_to_the_media_url(tmp_path, server):
    import hashlib

    cat, m, contents = mirror_catalog(tmp_path, server, "ahb")
    p = m["files"][0]["path"]
    real = contents[p]
    pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(real).hexdigest()}\n"
               f"size {len(real)}\n").encode()
    server.routes[_route(m, p)] = ("ok", pointer)
    server.routes["/media" + _route(m, p)] = ("ok", real)
    doc_path = cat / "datasets" / "ahb.yaml"
    doc_path.write_text(doc_path.read_text().replace(blob_sha1(real), blob_sha1(pointer)))
    fetch("ahb", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    assert (tmp_path / "d" / "ahb" / "files" / p).read_bytes() == real
    again = fetch("ahb", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    assert again.downloaded == []
    # wrong media content is refused
    server.routes["/media" + _route(m, p)] = ("ok", real[:-1] + b"x")
    with pytest.raises(FetchError, match="does not match its pointer"):
        fetch("ahb", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0, force=True)
    assert (tmp_path / "d" / "ahb" / "files" / p).read_bytes() == real  # the good copy stays


def test_numpy_series_with_the_cia_step_count_gets_the_cia_dates(tmp_path, server):
    cat, _, _ = mirror_catalog(tmp_path, server, "cia-npy", steps=17)
    res = fetch("cia-npy", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    assert "shuangchencc/ROBOT" in res.message
    man = read_manifest(tmp_path / "d" / "cia-npy")
    cia = load_catalog(cat).datasets["cia"]
    assert man.dates == cia.dates and man.shape == (16, 16) and man.bands == ["b1", "b2", "b3"]
    assert "assumed" in man.source["read"]["dates"]
    s = load_series("cia-npy", data_dir=tmp_path / "d", catalog=cat)
    assert s.read_coarse(cia.dates[3]).shape == (3, 16, 16)


def test_numpy_series_without_matching_dates_stops_after_verifying(tmp_path, server):
    cat, m, _ = mirror_catalog(tmp_path, server, "cia-npy", steps=5)
    with pytest.raises(DataError, match="carry no dates"):
        fetch("cia-npy", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    files = tmp_path / "d" / "cia-npy" / "files"
    assert all((files / f["path"]).is_file() for f in m["files"])
    assert not (tmp_path / "d" / "cia-npy" / "manifest.json").exists()


def test_from_a_clone_of_the_repository(tmp_path, server):
    cat, m, contents = mirror_catalog(tmp_path, server, "tianjin")
    clone = tmp_path / "clone"
    for p, data in contents.items():
        (clone / p).parent.mkdir(parents=True, exist_ok=True)
        (clone / p).write_bytes(data)
    res = fetch("tianjin", catalog=cat, data_dir=tmp_path / "d", progress=False, from_path=clone)
    assert res.ok and len(res.downloaded) == 16 and server.hits == {}
    (clone / m["files"][2]["path"]).write_bytes(b"edited")
    with pytest.raises(FetchError, match="git blob SHA-1 mismatch"):
        fetch("tianjin", catalog=cat, data_dir=tmp_path / "e", progress=False, from_path=clone)


def test_cli_fetch_shows_source_and_licence(tmp_path, server):
    from stfcat.cli.main import app

    cat, m, contents = mirror_catalog(tmp_path, server, "wuhan")
    r = CliRunner().invoke(app, ["fetch", "wuhan", "--dir", str(tmp_path / "d"), "--catalog", str(cat)])
    assert r.exit_code == 0, r.output
    assert "lixinghua5540/Wuhan-dataset" in r.output and "no licence file" in r.output
    assert "10.1109/LGRS.2024.3432285" in r.output and "git blob SHA-1" in r.output
    p = m["files"][1]["path"]
    server.routes[_route(m, p)] = ("ok", b"junk")
    r = CliRunner().invoke(app, ["fetch", "wuhan", "--dir", str(tmp_path / "e"), "--catalog", str(cat)])
    assert r.exit_code == 1 and p in r.output and "Traceback" not in r.output


def test_real_cia_geotiffs_through_a_mirror(tmp_path, server):
    """Real CIA Landsat-7/MODIS GeoTIFFs (float reflectance, UTM, 6 bands) served as a mirror: the
    facts the catalog leaves open are read from them."""
    import rasterio

    src = REAL / "cia-e2starfm-250"
    if not src.is_dir():
        pytest.skip(f"real test data absent: {src} (the shared fixtures live in ../shared/data/real)")
    repo, commit = "someone/cia-copy", "0123456789abcdef0123456789abcdef01234567"
    files = []
    for p in sorted(src.glob("*.tif")):
        data = p.read_bytes()
        path = f"TestData/{p.name.replace('-', '_')}"
        server.routes[f"/{repo}/{commit}/{path}"] = ("ok", data)
        files.append({"path": path, "blob_sha1": blob_sha1(data), "role": "fine" if p.name[0] == "L" else "coarse",
                      "date": p.stem[2:]})
    cat = tmp_path / "catalog"
    dates = sorted({f["date"] for f in files})
    sensor = {"name": "s", "resolution": {"value": 30, "unit": "m"}, "bands": []}
    dataset_yaml(cat, "real-crop", {"kind": "mirror", "mirror": {
        "repository": repo, "commit": commit, "licence": "GPL-3.0", "what": "a crop", "files": files}},
        fine=sensor, coarse={**sensor, "resolution": {"value": 500, "unit": "m"}}, scale_factor=None,
        coarse_on_fine_grid=None, dates=dates, n_dates=len(dates))
    fetch("real-crop", catalog=cat, data_dir=tmp_path / "d", progress=False, retries=0)
    man = read_manifest(tmp_path / "d" / "real-crop")
    assert man.dates == ["2001-10-08", "2001-10-17", "2001-11-02"]
    assert man.bands == [f"b{i}" for i in range(1, 7)] and man.shape == (250, 250) and man.crs == "EPSG:32755"
    assert man.scale_factor == 1.0 and "stored as reflectance" in man.source["read"]["scale"]
    assert all(p.coarse.grid == "fine" and p.coarse.scale_factor is None for p in man.pairs)
    s = load_series("real-crop", data_dir=tmp_path / "d", catalog=cat)
    from stfcat.data.readers import apply_reading_rule

    with rasterio.open(src / "L_2001-10-17.tif") as ref:  # the values arrive unchanged (reading rule applied)
        expected = apply_reading_rule(ref.read(), 1.0, None)
    got = s.read_fine("2001-10-17")
    assert np.isfinite(got).mean() > 0.9
    np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("change,words", [
    (lambda m: m.pop("mirror"), "needs a 'mirror'"),
    (lambda m: m["mirror"]["files"][0].update(blob_sha1="abc"), "blob_sha1"),
    (lambda m: m["mirror"]["files"][0].update(path="../../etc/passwd"), "relative POSIX path"),
    (lambda m: m["mirror"].update(commit="main"), "commit"),
])
def test_schema_refuses_bad_mirror_entries(change, words):
    from pydantic import ValidationError

    from stfcat.schemas import Access

    access = {"kind": "mirror", "mirror": {"repository": "o/r", "commit": "a" * 40, "licence": "MIT", "what": "x",
                                           "files": [{"path": "a/b.tif", "blob_sha1": "b" * 40, "role": "fine",
                                                      "date": "2020-01-01"}]}}
    Access.model_validate(access)
    change(access)
    with pytest.raises(ValidationError, match=words):
        Access.model_validate(access)
