"""Issue 13: a hostile new user's inputs. Nothing on disk is lost, nothing untrusted is executed,
every bad input gives one line naming the file/flag (never a traceback). Each test runs a class of
inputs, not one example; everything is tiny (a 64 x 64 series, 1 training step)."""

from __future__ import annotations

import json
import os
import pickle
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
    # --merge keeps the leaderboard's rows but still may not replace a finished run folder
    with pytest.raises(EngineError, match="runs"):
        run_bench(models=["copy-f1"], datasets=[str(series)], out=out, device="cpu", progress=False, merge=True)
    assert _snapshot(out) == before
    res = _cli("bench", "--models", "copy-f1", "--datasets", series, "--out", out, "--device", "cpu")
    _one_line_error(res, "--overwrite", code=2)
    res = _cli("bench", "--models", "copy-f1", "--datasets", series, "--out", out, "--device", "cpu", "--overwrite")
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
    as a plain pickle (not torch's zip format), and a checkpoint holding a numpy object."""
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
    torch.save({"model_id": "tiny-test", "model_state": {}, "x": np.zeros(3)}, p)
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
    for other in ("tiny-plain", "tiny-two-stage"):
        res = _cli("fuse", "--model", other, *inputs, "--weights", finished_run / "checkpoint.pt",
                   "-o", tmp_path / f"{other}.tif")
        _one_line_error(res, "'tiny-test'", code=2)
        run_dir = tmp_path / f"resume-{other}"
        shutil.copytree(finished_run, run_dir)
        res = _cli("run", other, "--dataset", series, "--out", run_dir, "--resume", *RUN)
        _one_line_error(res, "belongs to model 'tiny-test'", code=2)
    # same model id, other shape of weights (a checkpoint whose state does not fit)
    import torch

    ck = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    ck["model_state"] = {k: v[:1] for k, v in ck["model_state"].items()}
    bad = tmp_path / "shrunk.pt"
    torch.save(ck, bad)
    res = _cli("fuse", "--model", "tiny-test", *inputs, "--weights", bad, "-o", tmp_path / "s.tif")
    _one_line_error(res, "do not fit", "'tiny-test'", code=2)
