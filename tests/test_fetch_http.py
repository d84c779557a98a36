"""`stfcat fetch` against a local HTTP server on 127.0.0.1 (no network): downloads, hashes,
retries, every failure mode, offline --from, and the CLI."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
from test_data_helpers import Server, dataset_yaml, sha256, tif_bytes, zip_bytes
from typer.testing import CliRunner

from stfcat.data import FetchError, NotFetchedError, load_series
from stfcat.data.fetch import fetch

DATES = ["2020-01-01", "2020-01-17", "2020-02-02"]


@pytest.fixture()
def server():
    srv = Server()
    yield srv
    srv.close()


def _files(tmp_path, server, *, behaviours=None):
    """Six small GeoTIFFs (fine + coarse on 3 dates) served by ``server``; returns access.files."""
    behaviours = behaviours or {}
    rng = np.random.default_rng(0)
    files = []
    for i, d in enumerate(DATES):
        for role in ("fine", "coarse"):
            data = tif_bytes((rng.random((2, 32, 32)) * 3000 + 500 * i).astype(np.int16), tmp_path)
            name = f"{role}_{d}.tif"
            server.routes[f"/{name}"] = (behaviours.get(name, "ok"), data)
            files.append(
                {
                    "name": name,
                    "url": server.url(f"/{name}"),
                    "sha256": sha256(data),
                    "size": len(data),
                    "role": role,
                    "date": d,
                }
            )
    return files


def _catalog(tmp_path, server, **kw):
    cat = tmp_path / "catalog"
    files = _files(tmp_path, server, **kw)
    dataset_yaml(
        cat,
        "toy",
        {"kind": "direct", "files": files, "layout": "geotiff-pairs"},
        dates=DATES,
        split={"train": DATES[:2], "test": DATES[2:]},
    )
    return cat, files


def _files_left(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_hash_manifest_and_second_call(tmp_path, server):
    cat, files = _catalog(tmp_path, server)
    data = tmp_path / "data"
    res = fetch("toy", catalog=cat, data_dir=data, progress=False, retries=0)
    assert res.ok and sorted(res.downloaded) == sorted(f["name"] for f in files)
    s = load_series("toy", data_dir=data, catalog=cat)
    assert s.dates == DATES and s.bands == ["red", "nir"] and s.split["test"] == DATES[2:]
    assert s.read_fine(DATES[0]).shape == (2, 32, 32)
    hits = dict(server.hits)
    res2 = fetch("toy", catalog=cat, data_dir=data, progress=False, retries=0)
    assert res2.downloaded == [] and "already present" in res2.message
    assert {k: v for k, v in server.hits.items() if k.endswith(".tif")} == {
        k: v for k, v in hits.items() if k.endswith(".tif")
    }
    # --force downloads again
    fetch("toy", catalog=cat, data_dir=data, progress=False, retries=0, force=True)
    assert all(server.hits[f"/{f['name']}"] >= 2 for f in files)


def test_data_dir_from_environment(tmp_path, server, monkeypatch):
    cat, _ = _catalog(tmp_path, server)
    monkeypatch.setenv("STFCAT_DATA_DIR", str(tmp_path / "envdata"))
    res = fetch("toy", catalog=cat, progress=False, retries=0)
    assert res.folder == tmp_path / "envdata" / "toy" and (res.folder / "manifest.json").is_file()


def test_not_fetched_error_names_the_command(tmp_path, server):
    cat, _ = _catalog(tmp_path, server)
    with pytest.raises(NotFetchedError, match=f"`stfcat fetch toy --dir {tmp_path / 'empty'}`"):
        load_series("toy", catalog=cat, data_dir=tmp_path / "empty")


def test_hash_mismatch_removes_file_and_reports_both_hashes(tmp_path, server):
    cat, files = _catalog(tmp_path, server)
    name = files[1]["name"]
    server.routes[f"/{name}"] = ("ok", b"not the file you are looking for")
    with pytest.raises(FetchError) as err:
        fetch("toy", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0)
    msg = str(err.value)
    assert files[1]["sha256"] in msg and sha256(b"not the file you are looking for") in msg and name in msg
    left = _files_left(tmp_path / "data" / "toy")
    assert name not in left and files[0]["name"] in left  # the good one stays, no partial file
    assert not (tmp_path / "data" / "toy" / "manifest.json").exists()


@pytest.mark.parametrize(
    "behaviour,pattern", [("truncate", "cut short"), ("status404", "HTTP 404"), ("status500", "HTTP 500")]
)
def test_http_failures(tmp_path, server, behaviour, pattern):
    cat, files = _catalog(tmp_path, server)
    name = files[2]["name"]
    if behaviour == "truncate":
        server.routes[f"/{name}"] = ("truncate", server.routes[f"/{name}"][1])
    else:
        server.routes[f"/{name}"] = ("status", int(behaviour[-3:]))
    with pytest.raises(FetchError, match=pattern) as err:
        fetch("toy", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0)
    assert name in str(err.value)
    assert name not in _files_left(tmp_path / "data" / "toy")


def test_timeout(tmp_path, server):
    cat, files = _catalog(tmp_path, server)
    server.routes[f"/{files[0]['name']}"] = ("hang", 3)
    with pytest.raises(FetchError, match="timeout.*--from"):
        fetch("toy", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0, timeout=0.5)
    assert files[0]["name"] not in _files_left(tmp_path / "data" / "toy")


def test_connection_refused_suggests_from(tmp_path, server):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    cat = tmp_path / "catalog"
    dataset_yaml(
        cat,
        "gone",
        {
            "kind": "direct",
            "files": [
                {
                    "name": "x.tif",
                    "url": f"http://127.0.0.1:{port}/x.tif",
                    "sha256": "0" * 64,
                    "size": 10,
                    "role": "fine",
                    "date": "2020-01-01",
                }
            ],
        },
    )
    with pytest.raises(FetchError, match=r"cannot connect.*stfcat fetch gone --from PATH"):
        fetch("gone", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0, timeout=2)


def test_retry_with_backoff_recovers(tmp_path, server):
    cat, files = _catalog(tmp_path, server, behaviours={"fine_2020-01-01.tif": "flaky"})
    res = fetch("toy", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=1)
    assert res.ok and server.hits["/fine_2020-01-01.tif"] == 2


def test_offline_from_folder_and_archive(tmp_path, server):
    cat, files = _catalog(tmp_path, server)
    src = tmp_path / "downloaded"
    src.mkdir()
    for f in files:
        (src / f["name"]).write_bytes(server.routes[f"/{f['name']}"][1])
    server.routes.clear()  # the server knows nothing any more: everything must come from --from
    (src / "aaa-other-version").mkdir()  # same name, other content, found first: the hash decides
    (src / "aaa-other-version" / files[0]["name"]).write_bytes(b"an unfilled variant")
    res = fetch("toy", catalog=cat, data_dir=tmp_path / "d1", from_path=src, progress=False)
    assert res.ok and load_series("toy", data_dir=tmp_path / "d1", catalog=cat).dates == DATES
    shutil.rmtree(src / "aaa-other-version")
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(zip_bytes({f"some/dir/{f['name']}": (src / f["name"]).read_bytes() for f in files}))
    assert fetch("toy", catalog=cat, data_dir=tmp_path / "d2", from_path=archive, progress=False).ok
    # a corrupted file in the folder is refused with both hashes
    (src / files[0]["name"]).write_bytes(b"corrupt")
    with pytest.raises(FetchError, match=f"expected {files[0]['sha256']}, got {sha256(b'corrupt')}"):
        fetch("toy", catalog=cat, data_dir=tmp_path / "d3", from_path=src, progress=False)
    (src / files[0]["name"]).unlink()
    with pytest.raises(Exception, match=f"missing files.*{files[0]['name']}"):
        fetch("toy", catalog=cat, data_dir=tmp_path / "d4", from_path=src, progress=False)


def _tar_with_outward_symlink() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 4
        tf.addfile(ok, io.BytesIO(b"fine"))
        link = tarfile.TarInfo("escaped.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../escaped-target"
        tf.addfile(link)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: zip_bytes({"ok.txt": b"fine", "../../escaped.txt": b"evil"}), r"\.\./\.\./escaped\.txt"),
        (_tar_with_outward_symlink, r"escaped\.txt'? is a link to '\.\./\.\./\.\./escaped-target'"),
    ],
    ids=["zip-traversal", "tar-outward-symlink"],
)
def test_archive_with_traversal_is_refused_and_nothing_written_outside(tmp_path, server, make, pattern):
    bad = make()
    server.routes["/bad.zip"] = ("ok", bad)
    cat = tmp_path / "catalog"
    dataset_yaml(
        cat,
        "evil",
        {
            "kind": "direct",
            "layout": "csiro-envi",
            "files": [
                {
                    "name": "bad.zip",
                    "url": server.url("/bad.zip"),
                    "sha256": sha256(bad),
                    "size": len(bad),
                    "archive": True,
                }
            ],
        },
    )
    from stfcat.data import UnsafeArchiveError

    with pytest.raises(UnsafeArchiveError, match=pattern):
        fetch("evil", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0)
    assert not list(tmp_path.rglob("escaped*"))
    assert not (tmp_path / "data" / "evil" / "files" / "bad").exists()


def test_cli_fetch_messages(tmp_path, server):
    from stfcat.cli.main import app

    cat, _ = _catalog(tmp_path, server)
    dataset_yaml(
        cat,
        "manualset",
        {"kind": "manual", "instructions": "Log in at the portal and save the zip."},
        landing_page="https://example.org/portal",
    )
    dataset_yaml(cat, "extset", {"kind": "external"})
    runner = CliRunner()
    r = runner.invoke(
        app, ["fetch", "toy", "--catalog", str(cat), "--dir", str(tmp_path / "data"), "--retries", "0"]
    )
    assert r.exit_code == 0, r.output
    assert "manifest" in r.output
    r = runner.invoke(app, ["fetch", "manualset", "--catalog", str(cat), "--dir", str(tmp_path / "data")])
    assert r.exit_code == 3
    assert (
        "Log in at the portal" in r.output
        and "https://example.org/portal" in r.output
        and "--from" in r.output
    )
    r = runner.invoke(app, ["fetch", "extset", "--catalog", str(cat)])
    assert r.exit_code == 0 and "catalog-only" in r.output and "https://example.org/extset" in r.output
    r = runner.invoke(app, ["fetch", "tyo", "--catalog", str(cat)])
    assert r.exit_code == 1 and "toy" in r.output  # close-name suggestion
    before = {p.name: p.read_bytes() for p in (tmp_path / "data" / "toy" / "files").iterdir()}
    server.routes.clear()
    r = runner.invoke(
        app,
        ["fetch", "toy", "--force", "--catalog", str(cat), "--dir", str(tmp_path / "data"), "--retries", "0"],
    )
    assert r.exit_code == 1 and "HTTP 404" in r.output
    # a failed --force keeps the good files it had
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "toy" / "files").iterdir()} == before
    # a --force run killed after moving a file aside: the next run puts the good copy back, no download
    files_dir = tmp_path / "data" / "toy" / "files"
    name = sorted(before)[0]
    (files_dir / name).rename(files_dir / f".{name}.bak")
    r = runner.invoke(app, ["fetch", "toy", "--catalog", str(cat), "--dir", str(tmp_path / "data")])
    assert r.exit_code == 0, r.output
    assert {p.name: p.read_bytes() for p in files_dir.iterdir()} == before


def test_cli_fetch_demo(tmp_path):
    from stfcat.cli.main import app

    r = CliRunner().invoke(app, ["fetch", "demo", "--dir", str(tmp_path)])
    assert r.exit_code == 0 and "nothing to download" in r.output
    assert (tmp_path / "demo" / "manifest.json").is_file()


def test_default_data_dir_is_the_platform_cache_and_dir_beats_env(tmp_path, monkeypatch):
    import pooch

    from stfcat.data import data_root, dataset_dir

    monkeypatch.delenv("STFCAT_DATA_DIR", raising=False)
    assert data_root() == pooch.os_cache("stfcat")
    monkeypatch.setenv("STFCAT_DATA_DIR", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert dataset_dir("cia", tmp_path / "cli") == tmp_path / "cli" / "cia"


def test_progress_bar_is_shown(tmp_path, server, capfd):
    cat, _ = _catalog(tmp_path, server)
    fetch("toy", catalog=cat, data_dir=tmp_path / "data", retries=0, progress=True)
    err = capfd.readouterr().err
    assert "100%" in err  # tqdm's bar, one per file
    fetch("toy", catalog=cat, data_dir=tmp_path / "quiet", retries=0, progress=False, force=True)
    assert "100%" not in capfd.readouterr().err


def test_a_file_without_sha256_is_refused_by_the_catalog(tmp_path, server):
    cat, files = _catalog(tmp_path, server)
    for bad in (None, "", "abc"):
        broken = [dict(f) for f in files]
        broken[0]["sha256"] = bad
        dataset_yaml(cat, "toy", {"kind": "direct", "files": broken}, dates=DATES)
        with pytest.raises(Exception, match="sha256"):
            fetch("toy", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0)
    assert not (tmp_path / "data").exists()


def test_written_files_follow_the_umask(tmp_path, server):
    import os
    import stat

    cat, _ = _catalog(tmp_path, server)
    old = os.umask(0o022)
    try:
        res = fetch("toy", catalog=cat, data_dir=tmp_path / "data", progress=False, retries=0)
        demo = fetch("demo", data_dir=tmp_path / "data").folder
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in res.folder.rglob("*")}
    assert modes["manifest.json"] == 0o644 and modes["fine_2020-01-01.tif"] == 0o644, modes
    assert stat.S_IMODE(demo.stat().st_mode) == 0o755
    assert stat.S_IMODE((demo / "manifest.json").stat().st_mode) == 0o644


def test_cli_fetch_help_documents_exit_codes():
    from stfcat.cli.data_cmds import MANUAL_EXIT
    from stfcat.cli.main import app

    r = CliRunner().invoke(app, ["fetch", "--help"], terminal_width=200)
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert f"{MANUAL_EXIT} manual download needed" in text and "1 error" in text and "--from" in text
