"""Issue 13: a hostile new user's inputs. Nothing on disk is lost, nothing untrusted is executed,
every bad input gives one line naming the file/flag (never a traceback). Each test runs a class of
inputs, not one example; everything is tiny (a 64 x 64 series, 1 training step)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stfcat.cli.main import app

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(res, *words: str, code: int | None = None) -> None:
    """A refusal: non-zero exit, no traceback, the words in the message."""
    out = res.output
    assert res.exit_code != 0, out
    if code is not None:
        assert res.exit_code == code, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in out, out
    for w in words:
        assert w in out, (w, out)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    from _engine_models import make_small_series

    root = tmp_path_factory.mktemp("hostile-data")
    return make_small_series(root / "small", root / "cache")


RUN = ("--epochs", "1", "--steps-per-epoch", "1", "--patch", "16", "--batch", "2", "--device", "cpu", "--no-images")


@pytest.fixture(scope="module")
def finished_run(series, tmp_path_factory):
    import _engine_models  # noqa: F401  (registers tiny-test)

    out = tmp_path_factory.mktemp("runs") / "done"
    res = _cli("run", "tiny-test", "--dataset", series, "--out", out, *RUN)
    assert res.exit_code == 0, res.output
    return out


# --- 1. a finished result is never overwritten without --overwrite ---------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_refuses_to_overwrite_a_finished_run(series, finished_run, tmp_path):
    before = _snapshot(finished_run)
    res = _cli("run", "tiny-test", "--dataset", series, "--out", finished_run, *RUN)
    _one_line_error(res, "holds a run", "--overwrite", "--resume", code=2)
    assert _snapshot(finished_run) == before
    # the class: a folder holding only one of the two results (an interrupted run's checkpoint, or
    # metrics.json alone) is protected too
    for name in ("checkpoint.pt", "metrics.json"):
        partial = tmp_path / f"only-{name}"
        partial.mkdir()
        (partial / name).write_bytes(before[name])
        res = _cli("run", "tiny-test", "--dataset", series, "--out", partial, *RUN)
        _one_line_error(res, "holds a run", name)
        assert (partial / name).read_bytes() == before[name]
    # --overwrite replaces it
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    res = _cli("run", "tiny-test", "--dataset", series, "--out", copy, *RUN, "--seed", "7", "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads((copy / "metrics.json").read_text())["seed"] == 7


def test_bench_refuses_to_overwrite_results(series, tmp_path):
    from stfcat.engine.bench import run_bench
    from stfcat.engine.errors import EngineError

    out = tmp_path / "bench"
    run_bench(models=["copy-f1"], datasets=[str(series)], out=out, device="cpu", progress=False)
    before = _snapshot(out)
    with pytest.raises(EngineError, match="--overwrite"):
        run_bench(models=["copy-f1"], datasets=[str(series)], out=out, device="cpu", progress=False)
    # a finished run folder alone (no leaderboard) is protected too
    (out / "leaderboard.json").rename(tmp_path / "board.json")
    with pytest.raises(EngineError, match="runs"):
        run_bench(models=["copy-f1"], datasets=[str(series)], out=out, device="cpu", progress=False)
    (tmp_path / "board.json").rename(out / "leaderboard.json")
    assert _snapshot(out) == before
    res = _cli("bench", "--models", "copy-f1", "--datasets", series, "--out", out, "--device", "cpu")
    _one_line_error(res, "--overwrite", code=2)
    for flag in ("--overwrite", "--merge"):  # the two explicit ways to replace
        res = _cli("bench", "--models", "copy-f1", "--datasets", series, "--out", out, "--device", "cpu", flag)
        assert res.exit_code == 0, res.output


def test_site_output_folders_are_protected(tmp_path):
    from stfcat.site.build import _prepare_out
    from stfcat.site.context import SiteError

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    for bad, words in ((foreign, "not empty"), (a_file, "not a folder"), (a_file / "sub", "not a folder")):
        with pytest.raises(SiteError, match=words):
            _prepare_out(bad)
    assert (foreign / "notes.txt").read_text() == "keep" and a_file.read_text() == "keep"


# --- 5. checkpoints are read weights-only: a crafted pickle runs nothing ---------------------------

class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_checkpoints(folder: Path) -> list[Path]:
    """The class of hostile .pt files: code in the model state, in the config, at the top level,
    as a plain pickle (not torch's zip format), and inside a numpy object array."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, make in enumerate((
        lambda m: {"model_id": "tiny-test", "model_state": _Payload(m)},
        lambda m: {"model_id": "tiny-test", "model_state": {}, "config": {"bands": _Payload(m)}},
        lambda m: _Payload(m),
    )):
        p = folder / f"evil{i}.pt"
        torch.save(make(folder / f"pwned{i}"), p)
        out.append(p)
    p = folder / "evil-plain.pt"
    p.write_bytes(pickle.dumps({"model_id": "tiny-test", "model_state": _Payload(folder / "pwned-plain")}))
    out.append(p)
    p = folder / "numpy.pt"
    torch.save({"model_id": "tiny-test", "model_state": {}, "x": np.array([_Payload(folder / "pwned-np")])}, p)
    out.append(p)
    return out


def _fuse_inputs(series, folder: Path) -> list[str]:
    from stfcat.data.series import load_series

    s = load_series(series)
    d = s.dates[0]
    return ["--fine-ref", str(s.path(d, "fine")), "--coarse-ref", str(s.path(d, "coarse")),
            "--coarse-target", str(s.path(s.dates[1], "coarse")), "--scale", "0.0001", "--device", "cpu"]


def test_crafted_checkpoints_are_refused_and_never_executed(series, finished_run, tmp_path):
    import _engine_models  # noqa: F401

    evil = _crafted_checkpoints(tmp_path / "evil")
    inputs = _fuse_inputs(series, tmp_path)
    tried = 0
    for p in evil:
        res = _cli("fuse", "--model", "tiny-test", *inputs, "--weights", p, "-o", tmp_path / "o.tif")
        _one_line_error(res, str(p), code=2)
        assert "refused" in res.output or "not an stfcat checkpoint" in res.output, res.output
        run_dir = tmp_path / f"resume-{p.stem}"
        run_dir.mkdir()
        shutil.copyfile(p, run_dir / "checkpoint.pt")
        res = _cli("run", "tiny-test", "--dataset", series, "--out", run_dir, "--resume", *RUN)
        _one_line_error(res, "checkpoint.pt", code=2)
        tried += 2
    assert not list((tmp_path / "evil").glob("pwned*")), "a pickle was executed"
    assert tried == 10
    # a genuine checkpoint still loads weights-only, and holds plain data only
    import torch

    ck = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    assert ck["model_id"] == "tiny-test" and isinstance(ck["config"], dict)
    # a checkpoint of the earlier format (numpy RNG state as an array) still resumes
    from stfcat.engine.checkpoint import load_checkpoint

    ck["train"]["rng"]["numpy"] = np.random.get_state()
    old = tmp_path / "old-format" / "checkpoint.pt"
    old.parent.mkdir()
    torch.save(ck, old)
    assert load_checkpoint(old)["train"]["rng"]["numpy"][0] == "MT19937"


def test_every_torch_load_is_weights_only():
    root = Path(__file__).resolve().parents[1]
    for sub in ("stfcat", "code", "tests", "benchmarks"):
        for py in (root / sub).rglob("*.py"):
            text = py.read_text(encoding="utf-8")
            for i, line in enumerate(text.splitlines(), 1):
                if "torch.load(" in line and "weights_only=True" not in line:
                    raise AssertionError(f"{py}:{i}: torch.load without weights_only=True")


# --- 13. fuse -o that cannot be a file ------------------------------------------------------------

def test_fuse_output_that_is_a_folder_or_under_a_file(series, tmp_path):
    inputs = _fuse_inputs(series, tmp_path)
    a_file = tmp_path / "plain.txt"
    a_file.write_text("keep")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [(folder, "is a folder"), (a_file / "x.tif", "not a folder"), (a_file / "a" / "b.tif", "is a file"),
             (a_file, "exists")]
    for out, words in cases:
        for extra in ((), ("--overwrite",)) if out != a_file else ((),):
            res = _cli("fuse", "--model", "delta", *inputs, "-o", out, *extra)
            _one_line_error(res, words, code=2)
    assert a_file.read_text() == "keep" and folder.is_dir() and not any(folder.iterdir())


# --- 14. a checkpoint of another model names its model --------------------------------------------

def test_another_models_checkpoint_names_its_owner(series, finished_run, tmp_path):
    import _engine_models  # noqa: F401

    inputs = _fuse_inputs(series, tmp_path)
    # --weights with another --model, and --resume of a run folder with another model
    for other in ("tiny-plain", "tiny-continued"):
        res = _cli("fuse", "--model", other, *inputs, "--weights", finished_run / "checkpoint.pt",
                   "-o", tmp_path / f"{other}.tif")
        _one_line_error(res, "'tiny-test'", code=2)
        run_dir = tmp_path / f"resume-{other}"
        shutil.copytree(finished_run, run_dir)
        if other == "tiny-continued":  # without the run's config.yaml the checkpoint itself must say it
            (run_dir / "config.yaml").unlink()
        res = _cli("run", other, "--dataset", series, "--out", run_dir, "--resume", *RUN)
        _one_line_error(res, "'tiny-test'", code=2)
        if other == "tiny-continued":
            _one_line_error(res, "belongs to model 'tiny-test'", code=2)
    # same model id, other shape of weights (a checkpoint whose state does not fit)
    import torch

    ck = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    ck["model_state"] = {k: v[:1] for k, v in ck["model_state"].items()}
    bad = tmp_path / "shrunk.pt"
    torch.save(ck, bad)
    res = _cli("fuse", "--model", "tiny-test", *inputs, "--weights", bad, "-o", tmp_path / "s.tif")
    _one_line_error(res, "do not fit", "'tiny-test'", code=2)


# --- 2, 3, 4. manual imports: atomic, layout-agnostic, and leftovers of killed runs cleaned ---------

DEAD_PID = 999_999_999  # above any pid_max: "a process that is not running"
OLD = time.time() - 3600


def _age(path: Path, when: float = OLD) -> Path:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (when, when), follow_symlinks=False)
    return path


def _cia(tmp_path):
    from test_data_import import _cia_tree, _manual_catalog, _zip_folder

    src = tmp_path / "download"
    truth = _cia_tree(src)
    cat = _manual_catalog(tmp_path)
    return src, truth, cat, _zip_folder(src, tmp_path / "cia.zip")


def _state(ds_root: Path) -> tuple[bytes, dict[str, bytes]]:
    return (ds_root / "manifest.json").read_bytes(), _snapshot(ds_root / "files" / "archive")


@pytest.mark.parametrize("where", ["_copy_tree", "safe_extract", "_extract_nested", "build_manifest", "replace"])
def test_interrupted_manual_import_keeps_the_previous_one(tmp_path, monkeypatch, where):
    from stfcat.data import fetch as fetch_mod
    from stfcat.data import load_series

    src, truth, cat, good = _cia(tmp_path)
    data = tmp_path / "data"
    assert fetch_mod.fetch("cia", catalog=cat, data_dir=data, from_path=good).ok
    ds_root = data / "cia"
    before = _state(ds_root)

    real = {"_copy_tree": fetch_mod._copy_tree, "safe_extract": fetch_mod.safe_extract,
            "_extract_nested": fetch_mod._extract_nested, "build_manifest": fetch_mod.build_manifest}

    def killed(*a, **k):
        if where != "build_manifest" or k.get("write") is False:
            raise KeyboardInterrupt  # Ctrl-C (kill -9 is the leftover test below)
        return real[where](*a, **k)

    if where == "replace":
        real_replace, calls = os.replace, []

        def killed_replace(a, b):
            if Path(b).name == "archive" and not calls:  # Ctrl-C once, as the new import moves in
                calls.append(b)
                raise KeyboardInterrupt
            return real_replace(a, b)

        monkeypatch.setattr(fetch_mod.os, "replace", killed_replace)
    else:
        monkeypatch.setattr(fetch_mod, where, killed)
    from_path = src if where == "_copy_tree" else good
    with pytest.raises(KeyboardInterrupt):
        fetch_mod.fetch("cia", catalog=cat, data_dir=data, from_path=from_path)
    monkeypatch.undo()
    assert _state(ds_root) == before
    # the next import succeeds and describes the new import
    assert fetch_mod.fetch("cia", catalog=cat, data_dir=data, from_path=src).ok
    s = load_series("cia", data_dir=data, catalog=cat)
    assert s.manifest.source["kind"] == "folder" and s.dates == sorted(truth)
    assert sorted(p.name for p in (ds_root / "files").iterdir()) == ["archive"]


def test_killed_import_leftovers_do_not_break_the_next_one(tmp_path):
    """kill -9 leaves a staging folder, a partial copy and the old archive aside (hundreds of MB in
    the issue): the next import removes the stale ones, keeps a live process's, and succeeds."""
    from stfcat.data import load_series
    from stfcat.data.fetch import fetch

    src, truth, cat, good = _cia(tmp_path)
    data = tmp_path / "data"
    assert fetch("cia", catalog=cat, data_dir=data, from_path=good).ok
    files = data / "cia" / "files"
    stale = []
    for name in (f".archive-incoming-{DEAD_PID}-ab12", f"..archive-incoming-{DEAD_PID}-ab12.partial-{DEAD_PID}-x",
                 f".archive-old-{DEAD_PID}-zz", ".archive-incoming", "..archive-incoming.partial-q1w2e3"):
        shutil.copytree(src, files / name)
        stale.append(_age(files / name))
    for name in ("tmpk2j3h4l5", f".L71.bil.{'a' * 8}.tmp"):  # pooch's and our partial files
        (files / name).write_bytes(b"partial")
        stale.append(_age(files / name))
    live = files / f".archive-incoming-{os.getpid()}-live"  # a running import of this process: kept
    live.mkdir()
    _age(live)
    fresh = files / "tmpfresh123"  # being written now by someone: kept
    fresh.write_bytes(b"x")
    assert fetch("cia", catalog=cat, data_dir=data, from_path=src).ok
    for p in stale:
        assert not p.exists(), p
    assert live.exists() and fresh.exists()
    assert load_series("cia", data_dir=data, catalog=cat).manifest.source["kind"] == "folder"


def test_killed_between_the_renames_restores_the_old_archive(tmp_path):
    from stfcat.data import DataError, load_series
    from stfcat.data.fetch import fetch

    src, truth, cat, good = _cia(tmp_path)
    data = tmp_path / "data"
    assert fetch("cia", catalog=cat, data_dir=data, from_path=good).ok
    files = data / "cia" / "files"
    before = _state(data / "cia")
    os.replace(files / "archive", files / f".archive-old-{DEAD_PID}-k")  # the kill's state
    bad = tmp_path / "empty"
    bad.mkdir()
    with pytest.raises(DataError):
        fetch("cia", catalog=cat, data_dir=data, from_path=bad)  # refused, and the old import is back
    assert _state(data / "cia") == before
    d = sorted(truth)[-1]
    np.testing.assert_allclose(load_series("cia", data_dir=data, catalog=cat).read_fine(d),
                               truth[d][0] * np.float32(1e-4), rtol=1e-6)


def _declared_manual(tmp_path, n_dates: int = 2):
    from test_data_helpers import dataset_yaml, sha256

    from stfcat.data.readers import write_geotiff

    src = tmp_path / "download" / "top-folder"
    dates = [f"2020-0{i + 1}-01" for i in range(n_dates)]
    files = []
    for i, d in enumerate(dates):
        for role, size in (("fine", 8), ("coarse", 8)):
            name = f"{role}_{d}.tif"
            write_geotiff(src / name, np.full((2, size, size), 100 + i, np.int16))
            b = (src / name).read_bytes()
            files.append({"name": name, "url": f"https://example.org/{name}", "sha256": sha256(b), "size": len(b),
                          "role": role, "date": d})
    cat = tmp_path / "catalog"
    dataset_yaml(cat, "decl", {"kind": "manual", "layout": "geotiff-pairs", "files": files,
                               "instructions": "Ask the authors."}, dates=dates)
    return src, cat, dates


@pytest.mark.parametrize("form", ["folder", "top-folder", "zip"])
def test_manual_dataset_with_declarative_layout_imports(tmp_path, form):
    from test_data_import import _zip_folder

    from stfcat.data import load_series
    from stfcat.data.fetch import fetch

    src, cat, dates = _declared_manual(tmp_path)
    from_path = {"folder": src, "top-folder": src.parent, "zip": _zip_folder(src.parent, tmp_path / "d.zip")}[form]
    assert fetch("decl", catalog=cat, data_dir=tmp_path / "data", from_path=from_path).ok
    s = load_series("decl", data_dir=tmp_path / "data", catalog=cat)
    assert s.dates == dates and all("files/archive/" in str(s.path(d, "fine")) for d in dates)
    np.testing.assert_allclose(s.read_fine(dates[1]), 101e-4, rtol=1e-6)
    # and a second import replaces it
    assert fetch("decl", catalog=cat, data_dir=tmp_path / "data", from_path=from_path).ok


def test_stale_leftovers_of_direct_fetch_fuse_and_run_are_cleaned(series, finished_run, tmp_path):
    from test_data_helpers import dataset_yaml, sha256

    from stfcat.data.fetch import fetch
    from stfcat.data.readers import write_geotiff

    # fetch (direct, offline --from): pooch's partial download, a .bak beside a good file
    src = tmp_path / "src"
    write_geotiff(src / "f.tif", np.full((2, 8, 8), 100, np.int16))
    write_geotiff(src / "c.tif", np.full((2, 8, 8), 100, np.int16))
    files = [{"name": n, "url": f"https://example.org/{n}", "sha256": sha256((src / n).read_bytes()),
              "size": (src / n).stat().st_size, "role": r, "date": "2020-01-01"} for n, r in (("f.tif", "fine"),
                                                                                             ("c.tif", "coarse"))]
    cat = tmp_path / "catalog"
    dataset_yaml(cat, "toy", {"kind": "direct", "files": files, "layout": "geotiff-pairs"}, dates=["2020-01-01"])
    data = tmp_path / "data"
    assert fetch("toy", catalog=cat, data_dir=data, from_path=src).ok
    fd = data / "toy" / "files"
    leftovers = [fd / "tmpa1b2c3d4", fd / ".f.tif.bak", fd / ".c.tif.abcdefgh.tmp", data / "toy" / f".from-{DEAD_PID}-x"]
    for p in leftovers:
        p.write_bytes(b"old") if not p.name.startswith(".from") else p.mkdir()
        _age(p)
    assert fetch("toy", catalog=cat, data_dir=data, from_path=src).ok
    assert [p for p in leftovers if p.exists()] == []
    # fuse: a killed fuse's work folder and partial output beside -o; a live one is kept
    out_dir = tmp_path / "fused"
    out_dir.mkdir()
    dead = out_dir / f".stfcat-fuse-{DEAD_PID}-abc"
    dead.mkdir()
    (dead / "acc.f32").write_bytes(b"0" * 64)
    live = out_dir / f".stfcat-fuse-{os.getpid()}-live"
    live.mkdir()
    partial, keep = out_dir / ".x.tif.abcdefgh.tmp.tif", out_dir / ".my-notes.tif"  # keep: a user's own file
    partial.write_bytes(b"p")
    keep.write_bytes(b"mine")
    for p in (dead, live, partial, keep):
        _age(p)
    res = _cli("fuse", "--model", "delta", *_fuse_inputs(series, tmp_path), "-o", out_dir / "x.tif")
    assert res.exit_code == 0, res.output
    assert not dead.exists() and not partial.exists() and live.exists() and keep.read_bytes() == b"mine"
    # run: a killed run's temporary metrics/checkpoint files in --out
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "quicklook").mkdir(exist_ok=True)
    tmps = [run_dir / ".metrics.json.abcdefgh.tmp", run_dir / ".checkpoint.pt.12345678.tmp",
            run_dir / "quicklook" / ".2020-01-01.png.a1b2c3d4.png"]
    for p in tmps:
        p.write_bytes(b"partial")
        _age(p)
    res = _cli("run", "tiny-test", "--dataset", series, "--out", run_dir, "--overwrite", *RUN)
    assert res.exit_code == 0, res.output
    assert [p.name for p in tmps if p.exists()] == []


# --- 10. a data folder that cannot be written -------------------------------------------------------

def test_unwritable_data_folder_is_one_line(tmp_path):
    from test_data_import import _cia_tree, _manual_catalog

    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    src = tmp_path / "download"
    _cia_tree(src)
    cat = _manual_catalog(tmp_path)
    for d in (a_file, a_file / "sub", a_file / "a" / "b"):
        for args in (("demo",), ("cia", "--from", src, "--catalog", cat)):
            res = _cli("fetch", *args, "--dir", d)
            if d == a_file:  # typer's own check (file_okay=False): a usage error
                _one_line_error(res, "--dir", code=2)
            else:
                _one_line_error(res, "--dir", str(d), code=1)
    assert a_file.read_text() == "keep"
    # the other commands' output folders under a file
    for args in (("run", "delta", "--out", a_file / "run"), ("bench", "--models", "copy-f1", "--out", a_file / "b"),
                 ("site", "build", "--no-html", "--out", a_file / "site")):
        res = _cli(*args)
        _one_line_error(res, str(a_file))


@pytest.mark.skipif(ROOT_USER or os.name != "posix", reason="root ignores permissions (chmod does not block it)")
def test_data_folder_without_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = _cli("fetch", "demo", "--dir", locked / "data")
        _one_line_error(res, "--dir", "permission", code=1)
    finally:
        locked.chmod(0o700)


# --- 12. archives whose members clash -------------------------------------------------------------

def _tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """members: (name, kind, link target or content)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tf:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
                tf.addfile(info)
            else:
                data = extra.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


CLASHES = {
    "file-then-folder": [("a", "file", "x"), ("a", "dir", "")],
    "folder-then-file": [("a", "dir", ""), ("a", "file", "x")],
    "member-under-a-file": [("a", "file", "x"), ("a/b.txt", "file", "y")],
    "file-after-member": [("a/b.txt", "file", "y"), ("a", "file", "x")],
    "member-under-a-folder-link": [("sub", "dir", ""), ("d", "symlink", "sub"), ("d/x.txt", "file", "z")],
    "member-under-a-file-link": [("f.txt", "file", "x"), ("l", "symlink", "f.txt"), ("l/x.txt", "file", "z")],
    "deep-under-a-file": [("a/b", "file", "x"), ("a/b/c/d.txt", "file", "y")],
}


@pytest.mark.parametrize("case", sorted(CLASHES))
def test_archive_name_clashes_are_refused(tmp_path, case):
    from stfcat.data.errors import UnsafeArchiveError
    from stfcat.data.extract import safe_extract

    arc = _tar(tmp_path / f"{case}.tar", CLASHES[case])
    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == [arc.name]
    # and through the CLI, as a manual import
    from test_data_import import _manual_catalog

    cat = _manual_catalog(tmp_path / "c")
    res = _cli("fetch", "cia", "--from", arc, "--dir", tmp_path / "data", "--catalog", cat)
    _one_line_error(res, arc.name, "refused", code=1)


def test_zip_file_and_folder_of_one_name(tmp_path):
    import zipfile

    from stfcat.data.errors import UnsafeArchiveError
    from stfcat.data.extract import safe_extract

    for i, names in enumerate((["a", "a/"], ["a/", "a"], ["a", "a/b"])):
        arc = tmp_path / f"z{i}.zip"
        with zipfile.ZipFile(arc, "w") as zf:
            for n in names:
                zf.writestr(n, "" if n.endswith("/") else "x")
        with pytest.raises(UnsafeArchiveError, match="refused"):
            safe_extract(arc, tmp_path / f"out{i}")
        assert not (tmp_path / f"out{i}").exists()


# --- 15. fetch options, timeouts, and an empty .bib -------------------------------------------------

@pytest.fixture()
def toy_server(tmp_path):
    from test_data_helpers import Server, dataset_yaml, sha256, tif_bytes

    srv = Server()
    files = []
    for role in ("fine", "coarse"):
        data = tif_bytes(np.full((2, 16, 16), 500, np.int16), tmp_path)
        name = f"{role}.tif"
        srv.routes[f"/{name}"] = ("ok", data)
        files.append({"name": name, "url": srv.url(f"/{name}"), "sha256": sha256(data), "size": len(data),
                      "role": role, "date": "2020-01-01"})
    cat = tmp_path / "catalog"
    dataset_yaml(cat, "toy", {"kind": "direct", "files": files, "layout": "geotiff-pairs"}, dates=["2020-01-01"])
    yield srv, cat, files
    srv.close()


def test_fetch_option_values_are_checked(tmp_path, toy_server):
    srv, cat, _ = toy_server
    bad = [("--retries", "-1", "--retries -1"), ("--retries", "-7", "--retries -7"),
           ("--timeout", "0", "--timeout 0"), ("--timeout", "-3", "--timeout -3"),
           ("--timeout", "nan", "--timeout nan"), ("--timeout", "inf", "--timeout inf")]
    for flag, value, words in bad:
        res = _cli("fetch", "toy", "--catalog", cat, "--dir", tmp_path / "d", flag, value)
        _one_line_error(res, words, code=1)
        assert "sha256" not in res.output and "FileNotFound" not in res.output
    assert srv.hits == {}  # refused before any request
    res = _cli("fetch", "toy", "--catalog", cat, "--dir", tmp_path / "d", "--retries", "0", "--timeout", "5")
    assert res.exit_code == 0, res.output


def test_read_timeout_after_the_headers_is_not_offline(tmp_path, toy_server):
    from test_data_helpers import sha256, tif_bytes

    from stfcat.data.errors import FetchError
    from stfcat.data.fetch import fetch

    srv, cat, files = toy_server
    data = tmp_path / "d"
    body = tif_bytes(np.random.default_rng(0).integers(0, 3000, (2, 128, 128)).astype(np.int16), tmp_path)
    files[0].update(sha256=sha256(body), size=len(body))
    from test_data_helpers import dataset_yaml

    dataset_yaml(cat, "toy", {"kind": "direct", "files": files, "layout": "geotiff-pairs"}, dates=["2020-01-01"])
    srv.routes["/fine.tif"] = ("stall", (body, 3))  # headers and half the body, then silence
    with pytest.raises(FetchError) as err:
        fetch("toy", catalog=cat, data_dir=data, retries=0, timeout=0.5, progress=False)
    assert "read timeout" in str(err.value) and "fine.tif" in str(err.value)
    assert "offline" not in str(err.value) and "cannot connect" not in str(err.value)
    assert not (data / "toy" / "files" / "fine.tif").exists()
    srv.routes["/fine.tif"] = ("hang", 3)  # no answer at all: a timeout too
    with pytest.raises(FetchError, match="timeout"):
        fetch("toy", catalog=cat, data_dir=data, retries=0, timeout=0.5, progress=False)


@pytest.mark.parametrize("text", ["", "\n\n", "% only a comment\n", "@comment{nothing here}\n",
                                  "Just some prose, no entry.\n", "@preamble{\"x\"}\n"])
def test_add_bibtex_without_entries_fails(tmp_path, text):
    cat = tmp_path / "catalog"
    (cat / "papers").mkdir(parents=True)
    (cat / "datasets").mkdir()
    bib = tmp_path / "refs.bib"
    bib.write_text(text)
    res = _cli("add", "--bibtex", bib, "--catalog", cat)
    _one_line_error(res, "no BibTeX entry", str(bib))
    assert list((cat / "papers").iterdir()) == []


# --- 7. every catalog string that reaches a page is escaped, with one link policy -----------------

MARK = "1337"
PAYLOADS = (
    f"<script>alert({MARK})</script>",
    f"[x](javascript:alert({MARK}))",
    f"![i](javascript:alert({MARK}))",
    f'" onmouseover="alert({MARK})',
    f"' onfocus='alert({MARK})",
    f"<img src=x onerror=alert({MARK})>",
    f'{{ onclick="alert({MARK})" }}',
    f"<javascript:alert({MARK})>",
    f"[r]\n\n[r]: javascript:alert({MARK})",
    f"<a href='data:text/html,{MARK}'>d</a>",
    f"\\[y](vbscript:alert({MARK}))",
)
HOSTILE = " ".join(PAYLOADS)


def _str_fields(model, base: dict, path: tuple = ()):
    """(path, is_list) of every field of ``model`` (recursively) whose type holds text."""
    import typing

    from pydantic import BaseModel

    def leaves(t):
        args = typing.get_args(t)
        if typing.get_origin(t) is typing.Annotated:
            return leaves(args[0])
        if args and typing.get_origin(t) is not typing.Literal:
            return [x for a in args for x in leaves(a)]
        return [t]

    for name, f in model.model_fields.items():
        types = leaves(f.annotation)
        sub = next((t for t in types if isinstance(t, type) and issubclass(t, BaseModel)), None)
        is_list = typing.get_origin(f.annotation) is list or any(
            typing.get_origin(a) is list for a in typing.get_args(f.annotation))
        if sub is not None:
            value = base.get(name)
            if isinstance(value, list) and value:
                yield from _str_fields(sub, value[0], (*path, name, 0))
            elif isinstance(value, dict):
                yield from _str_fields(sub, value, (*path, name))
        elif str in types:
            yield (*path, name), is_list


def _set(doc: dict, path: tuple, value):
    import copy

    doc = copy.deepcopy(doc)
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _plant(model, base: dict) -> tuple[dict, list[str], list[str]]:
    """``base`` with hostile text in every text field the schema accepts it in; the names of the
    fields that took it and of those the schema refuses (ids, DOIs, URLs, dates: validated)."""
    from pydantic import ValidationError

    doc, taken, refused = base, [], []
    for path, is_list in _str_fields(model, base):
        name = ".".join(map(str, path))
        for text in (HOSTILE, *PAYLOADS):
            trial = _set(doc, path, [text, "plain"] if is_list else text)
            try:
                model.model_validate(trial)
            except ValidationError:
                continue
            doc = trial
            taken.append(name)
            break
        else:
            refused.append(name)
    return doc, taken, refused


class _Audit:
    """html.parser walk of one document: script tags carrying the marker, event-handler attributes,
    links/sources whose scheme is not http(s)/mailto (relative and #anchors are fine)."""

    def __init__(self) -> None:
        from html.parser import HTMLParser

        self.bad: list[str] = []
        audit = self

        class P(HTMLParser):
            in_script = False

            def handle_starttag(self, tag, attrs):
                if tag == "script":
                    P.in_script = True
                for name, value in attrs:
                    if name.lower().startswith("on"):
                        audit.bad.append(f"<{tag} {name}=...>")
                    if name.lower() in ("href", "src", "action", "formaction", "xlink:href", "poster") and value:
                        v = "".join(value.split()).lower()
                        if re.match(r"^[a-z][a-z0-9+.-]*:", v) and not v.startswith(("http:", "https:", "mailto:")):
                            audit.bad.append(f"<{tag} {name}={value!r}>")

            def handle_endtag(self, tag):
                if tag == "script":
                    P.in_script = False

            def handle_data(self, data):
                if P.in_script and MARK in data:
                    audit.bad.append(f"<script>{data[:60]}")

        self.parser = P(convert_charrefs=True)

    def feed(self, text: str) -> list[str]:
        self.parser.feed(text)
        self.parser.close()
        return self.bad


def test_hostile_text_in_every_catalog_field_stays_text(tmp_path):
    import yaml

    from stfcat.schemas import Dataset, Paper

    paper = {
        "id": "evil", "short_name": "EVIL", "title": "A title", "authors": ["A. Author"], "venue": "Venue",
        "venue_abbr": "V", "year": 2020, "month": 5, "volume": "1", "issue": "2", "pages": "1-2",
        "doi": "10.1000/evil", "url": "https://example.org/p", "code_url": "https://github.com/x/y",
        "category": "cnn", "task": "reflectance", "sensors": ["MODIS"], "datasets": ["evilds"],
        "summary": "A summary long enough to pass the schema check of forty characters.", "tags": ["t"],
        "implementation": {"model": None, "reason": "no code", "notes": ["n"]}, "bibtex_key": "evil2020",
    }
    dataset = {
        "id": "evilds", "name": "Evil data", "abbreviation": "EVD", "group": "earth-observation",
        "fine": {"name": "L8", "resolution": {"value": 30, "unit": "m"}, "bands": ["red", "nir"], "revisit": "16 d"},
        "coarse": {"name": "MODIS", "resolution": {"value": 500, "unit": "m"}, "bands": ["red", "nir"],
                   "revisit": "1 d"},
        "region": "R", "image_size": "8x8", "dates": ["2020-01-01", "2020-02-01"], "dtype": "int16",
        "format": "GeoTIFF", "landing_page": "https://example.org/d", "licence": "CC0", "citation": ["evil"],
        "bibtex": "@misc{d, title={D}}", "summary": "s",
        "access": {"kind": "direct", "layout": "geotiff-pairs", "instructions": "i", "files": [
            {"name": "f.tif", "url": "https://example.org/f.tif", "sha256": "0" * 64, "size": 1, "role": "fine",
             "date": "2020-01-01"}]},
        "split": {"train": ["2020-01-01"], "test": ["2020-02-01"], "note": "n"},
    }
    paper, p_taken, p_refused = _plant(Paper, paper)
    dataset, d_taken, d_refused = _plant(Dataset, dataset)
    # the catalog checks that bibtex parses: hostile text inside a real entry
    dataset["bibtex"] = "@misc{d,\n  title = {" + " ".join(p for p in PAYLOADS if "{" not in p) + "},\n}"
    # the schema lets free text into most fields; the rest (ids, DOIs, URLs, dates) refuse it
    assert {"title", "summary", "venue_abbr", "authors", "tags", "implementation.notes"} <= set(p_taken)
    assert {"name", "dtype", "region", "licence", "fine.bands", "access.files.0.name", "split.note"} <= set(d_taken)
    assert {"doi", "url", "id"} <= set(p_refused) and {"landing_page", "id"} <= set(d_refused)
    cat = tmp_path / "catalog"
    for sub, doc in (("papers", paper), ("datasets", dataset)):
        (cat / sub).mkdir(parents=True)
        (cat / sub / f"{doc['id']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    out = tmp_path / "site"
    res = _cli("site", "build", "--out", out, "--catalog", cat, "--results", tmp_path / "none.json")
    assert res.exit_code == 0, res.output
    pages = [p for p in (out / "html").rglob("*.html")] + [p for p in (out / "docs").rglob("*.md")]
    assert len(pages) > 20
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if page.suffix == ".md":  # fenced blocks are shown verbatim as code (the highlighter escapes them)
            text = re.sub(r"(?ms)^(`{3,})[^\n]*\n.*?^\1\s*$", "", text)
            # front matter is YAML the theme shows as text (the `plain` filter drops HTML characters)
            text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
        problems += [f"{page.name}: {b}" for b in _Audit().feed(text)]
        if page.suffix == ".md":  # a Markdown link or image that Markdown would turn into one
            problems += [f"{page.name}: md link" for _ in re.finditer(
                r"(?<!\\)\]\(\s*(javascript|vbscript|data):", text, re.IGNORECASE)]
            problems += [f"{page.name}: md ref" for _ in re.finditer(r"(?m)^\s*\[[^\]]*\]:\s*javascript:", text)]
    for index in (out / "html").rglob("*.json"):  # the theme's search index is inserted as HTML
        if index.name == "catalog.json":
            continue
        data = json.loads(index.read_text(encoding="utf-8"))
        for doc in data.get("docs", []) if isinstance(data, dict) else []:
            problems += [f"{index.name}: {b}" for b in _Audit().feed(doc.get("text", "") + doc.get("title", ""))]
    assert problems == [], problems[:10]
    # the text is shown, not dropped
    for page in (out / "html" / "papers" / "evil.html", out / "html" / "datasets" / "evilds.html"):
        assert f"alert({MARK})" in page.read_text(encoding="utf-8")


# --- 6. YAML alias bombs in the catalog are bounded and located -----------------------------------

def _bomb(kind: str, levels: int = 9) -> tuple[str, int]:
    """A document whose aliases expand 9**levels times; returns it and the first line that an
    expansion bound may name (any anchor line from the second level on)."""
    lines = ["id: bomb"]
    if kind == "sequence":
        lines.append('a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    elif kind == "mapping":
        lines.append("a0: &a0 {" + ", ".join(f"k{j}: lol" for j in range(9)) + "}")
        lines += [f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(9)) + "}" for i in range(1, levels)]
    elif kind == "nested-in-field":  # the bomb inside a real field of the schema
        lines.append("tags: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]")
        lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
        lines.append(f"summary: *a{levels - 1}")
    return "\n".join(lines) + "\n", 2


@pytest.mark.parametrize("kind", ["sequence", "mapping", "nested-in-field"])
@pytest.mark.parametrize("where", ["papers", "datasets"])
def test_yaml_alias_bomb_is_refused_with_file_and_line(tmp_path, kind, where):
    cat = tmp_path / "catalog"
    (cat / "papers").mkdir(parents=True)
    (cat / "datasets").mkdir()
    text, first = _bomb(kind)
    f = cat / where / "bomb.yaml"
    f.write_text(text)
    res = _cli("validate", "--catalog", cat)
    _one_line_error(res, "alias", code=1)
    m = re.search(re.escape(str(f)) + r":(\d+): ", res.output)
    assert m and first <= int(m.group(1)) <= len(text.splitlines()), res.output


def test_oversized_catalog_file_is_refused(tmp_path):
    cat = tmp_path / "catalog"
    (cat / "papers").mkdir(parents=True)
    (cat / "datasets").mkdir()
    f = cat / "papers" / "huge.yaml"
    f.write_text("id: huge\nsummary: " + "x" * (2 * 1024 * 1024) + "\n")
    res = _cli("validate", "--catalog", cat)
    _one_line_error(res, str(f), "limit", code=1)


def test_small_aliases_still_work(tmp_path):
    from stfcat.catalog import load_yaml_bounded

    assert load_yaml_bounded("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


# --- 11. a series whose files are wrong is named up front ------------------------------------------

def _broken_series(series: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    """A copy of ``series`` with one image broken ``how``; returns it and the broken file's name."""
    from stfcat.data.manifest import read_manifest
    from stfcat.data.readers import write_geotiff

    dst = tmp_path / how
    shutil.copytree(series, dst)
    m = read_manifest(dst / "manifest.json")
    pair = m.pairs[-1]
    target = dst / (pair.coarse.path if how == "coarse-missing" else pair.fine.path)
    n = len(m.bands)
    h, w = m.shape
    if how in ("missing", "coarse-missing"):
        target.unlink()
    elif how == "not-a-raster":
        target.write_text("this is not a GeoTIFF\n")
    elif how == "empty-file":
        target.write_bytes(b"")
    elif how == "wrong-shape":
        target.unlink()
        write_geotiff(target, np.zeros((n, h // 2, w), np.float32))
    elif how == "wrong-bands":
        target.unlink()
        write_geotiff(target, np.zeros((n + 1, h, w), np.float32))
    elif how == "all-nodata":
        target.unlink()
        write_geotiff(target, np.full((n, h, w), np.nan, np.float32), nodata=float("nan"))
    return dst, target.name


@pytest.mark.parametrize("how", ["missing", "coarse-missing", "not-a-raster", "empty-file", "wrong-shape",
                                 "wrong-bands", "all-nodata"])
def test_run_on_a_broken_series_names_the_file(series, tmp_path, how):
    broken, name = _broken_series(series, tmp_path, how)
    for model in ("delta", "tiny-test"):
        res = _cli("run", model, "--dataset", broken, "--out", tmp_path / f"out-{model}", *RUN)
        _one_line_error(res, name, code=2)
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / f"out-{model}" / "metrics.json").exists()
