"""`stfcat run` through the CLI: outputs, and clear errors with exit code 2 (no traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _engine_models import make_small_series
from typer.testing import CliRunner

from stfcat.cli.main import app

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    return make_small_series(root / "small", root / "cache")


@pytest.fixture(scope="module")
def short_series(tmp_path_factory, series):
    """3 dates: one test date with only an earlier pair, so 2-reference models have no case."""
    root = tmp_path_factory.mktemp("cli-short")
    return make_small_series(root / "short", series.parent / "cache", n_dates=3, n_test=1)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_run_cli_writes_metrics_json(series, tmp_path):
    out = tmp_path / "out"
    res = _invoke("run", "delta", "--dataset", str(series), "--device", "cpu", "--out", str(out))
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["mean"]) == {"delta", "copy-f1", "upsample-c2"}
    for scores in m["mean"].values():
        assert {"rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "r2"} <= set(scores)
    assert "RMSE" in res.output and "upsample-c2" in res.output  # the rich table


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "delt"], "Did you mean: delta"),
        (["run", "delta", "--dataset", "demoo"], "did you mean demo"),
        (["run", "delta", "--dataset", "toy", "--catalog", str(FIXTURES / "catalog_ok")], "catalog-only"),
        (["run", "delta", "--dataset", "/nonexistent/folder"], "manifest.json"),
    ],
)
def test_run_errors_exit_2(args, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("STFCAT_DATA_DIR", str(tmp_path))
    res = _invoke(*args, "--device", "cpu")
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert "Traceback" not in res.output


def test_not_fetched_dataset_says_how(tmp_path, monkeypatch):
    cat = tmp_path / "catalog"
    shutil.copytree(FIXTURES / "catalog_ok", cat)
    text = (cat / "datasets" / "toy.yaml").read_text().replace("id: toy", "id: toyfetch").replace(
        "access:\n  kind: external",
        "access:\n  kind: direct\n  files:\n  - name: a.zip\n    url: https://example.org/a.zip\n"
        "    sha256: '" + "0" * 64 + "'\n    size: 10\n    archive: true",
    )
    (cat / "datasets" / "toyfetch.yaml").write_text(text)
    monkeypatch.setenv("STFCAT_DATA_DIR", str(tmp_path / "data"))
    res = _invoke("run", "delta", "--dataset", "toyfetch", "--catalog", str(cat), "--device", "cpu")
    assert res.exit_code == 2, res.output
    assert "stfcat fetch toyfetch" in res.output


def test_two_reference_model_on_too_few_dates(short_series):
    import _engine_models  # noqa: F401

    res = _invoke("run", "tiny-two-stage", "--dataset", str(short_series), "--device", "cpu")
    assert res.exit_code == 2, res.output
    assert "two reference pairs" in res.output and "Traceback" not in res.output


def test_cuda_requested_but_absent(series, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = _invoke("run", "delta", "--dataset", str(series), "--device", "cuda")
    assert res.exit_code == 2 and "CUDA is not available" in res.output and "Traceback" not in res.output
    # --device auto (the default) falls back, says so, and records the device it used
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "auto"
    res = _invoke("run", "delta", "--dataset", str(series), "--no-images", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "no CUDA or MPS device found: running on CPU" in res.output
    assert json.loads((out / "metrics.json").read_text())["device"] == "cpu"


def test_device_auto_falls_back_to_cpu(monkeypatch, capsys):
    import torch

    from stfcat.engine.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert "running on CPU" in capsys.readouterr().err


def test_cli_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, stfcat.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_interrupted_run_says_how_to_resume(series, tmp_path, monkeypatch):
    """A Ctrl-C (SIGINT to the process, during the third step) stops between steps; exit 130 with
    the resume command; resuming finishes the run."""
    import os
    import signal

    import _engine_models  # noqa: F401

    import stfcat.engine.train as T

    out = tmp_path / "r"
    real, calls = T._to_device, {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(T, "_to_device", interrupting)
    res = _invoke("run", "tiny-test", "--dataset", str(series), "--device", "cpu", "--out", str(out), "--no-images")
    assert res.exit_code == 130, res.output
    assert "--resume" in res.output and (out / "checkpoint.pt").is_file()
    assert f"--config {out / 'config.yaml'}" in res.output and (out / "config.yaml").is_file()
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(T, "_to_device", real)
    # the run folder's config.yaml describes the run: no need to repeat --dataset or --device
    res = _invoke("run", "tiny-test", "--out", str(out), "--no-images", "--resume")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed"] and len(m["history"]) == 3
