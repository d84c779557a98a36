"""Run configs: every run writes config.yaml; `stfcat run --config` replays it; `--set` overrides
fields with one-line errors naming an unknown key or a wrongly typed value."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from _engine_models import make_small_series
from typer.testing import CliRunner

from stfcat.cli.main import app
from stfcat.engine.config import RunConfig, apply_sets, build_config, default_config, load_config, resolve
from stfcat.engine.errors import EngineError


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg-data")
    return make_small_series(root / "small", root / "cache")


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _cfg(out):
    return yaml.safe_load((out / "config.yaml").read_text())


def test_run_writes_config_and_replay_reproduces_metrics(series, tmp_path):
    a = tmp_path / "a"
    res = _invoke("run", "tiny-test", "--dataset", str(series), "--device", "cpu", "--seed", "5", "--epochs", "2",
                  "--steps-per-epoch", "2", "--no-images", "--out", str(a))
    assert res.exit_code == 0, res.output
    cfg = _cfg(a)
    assert cfg["model"] == {"id": "tiny-test", "args": {}}
    assert cfg["budget"] == {"which": "quick", "epochs": 2, "patch": 32, "batch": 4, "steps_per_epoch": 2,
                             "accum_steps": 1}
    assert cfg["optim"]["name"] == "adam" and cfg["optim"]["scheduler"] == "step" and cfg["optim"]["lr"] == 1e-3
    assert cfg["seed"] == 5 and cfg["device"] == "cpu" and cfg["tile"] == 256 and cfg["lr"] is None
    assert cfg["data"]["dataset"] == str(series) and cfg["data"]["split"] == "test"
    assert cfg["data"]["bands"][0] == "blue" and cfg["data"]["ratio"] == 16 and len(cfg["data"]["dates"]["test"]) == 2
    assert not list(a.glob(".config.yaml.*"))  # written through a temporary file
    b = tmp_path / "b"
    res = _invoke("run", "--config", str(a / "config.yaml"), "--no-images", "--out", str(b))
    assert res.exit_code == 0, res.output
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert mb["mean"] == ma["mean"] and mb["history"] == ma["history"]
    assert _cfg(b) == cfg and mb["config"] == cfg
    # a different seed on the same config is a different run
    c = tmp_path / "c"
    res = _invoke("run", "--config", str(a / "config.yaml"), "--set", "seed=6", "--no-images", "--out", str(c))
    assert res.exit_code == 0, res.output
    assert json.loads((c / "metrics.json").read_text())["mean"]["tiny-test"] != ma["mean"]["tiny-test"]


def test_set_overrides_fields_and_flags_map_onto_the_config(series, tmp_path):
    out = tmp_path / "s"
    res = _invoke("run", "tiny-test", "--dataset", str(series), "--device", "cpu", "--no-images", "--out", str(out),
                  "--set", "optim.lr=2e-4", "--set", "budget.epochs=1", "--set", "budget.steps_per_epoch=2",
                  "--set", "optim.scheduler=none", "--set", "training.clip_grad_norm=0.5", "--lr", "3e-4",
                  "--workers", "1")
    assert res.exit_code == 0, res.output
    cfg = _cfg(out)
    assert cfg["optim"]["lr"] == 2e-4 and cfg["optim"]["scheduler"] == "none" and cfg["lr"] == 3e-4
    assert cfg["budget"]["epochs"] == 1 and cfg["training"]["clip_grad_norm"] == 0.5
    assert cfg["training"]["num_workers"] == 1
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["history"]) == 1 and m["budget"]["epochs"] == 1 and m["lr"] == 3e-4
    ck = torch.load(out / "checkpoint.pt", weights_only=True)["train"]
    assert ck["optimizers"]["main"]["param_groups"][0]["lr"] == pytest.approx(3e-4)  # --lr wins over optim.lr
    assert ck["schedulers"] == {} and ck["sampler"] == {"consumed": 2, "num_workers": 1, "seed": 0}


@pytest.mark.parametrize(("sets", "expected"), [
    (["optim.lrr=1e-3"], "--set optim.lrr: unknown key (did you mean optim.lr"),
    (["budget.epoch=3"], "did you mean budget.epochs"),
    (["budget.epochs=abc"], "budget.epochs: Input should be a valid integer"),
    (["optim.name=adamx"], "optim.name: Input should be 'adam', 'adamw', 'sgd' or 'rmsprop'"),
    (["training.amp=fp8"], "training.amp"),
    (["budget.epochs"], "write key=value"),
])
def test_set_errors_name_the_key(series, sets, expected):
    args = [x for s in sets for x in ("--set", s)]
    res = _invoke("run", "tiny-test", "--dataset", str(series), "--device", "cpu", *args)
    assert res.exit_code == 2, res.output
    assert expected in res.output and "Traceback" not in res.output


def test_set_on_a_model_without_training(series):
    res = _invoke("run", "delta", "--dataset", str(series), "--device", "cpu", "--set", "budget.epochs=3")
    assert res.exit_code == 2 and "not trainable" in res.output


def test_config_file_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"model": {"id": "tiny-test"}, "optm": {"lr": 1}}))
    with pytest.raises(EngineError, match=r"c.yaml: optm: unknown key \(did you mean optim"):
        load_config(bad)
    bad.write_text("model: [\n")
    with pytest.raises(EngineError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(EngineError, match="file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(EngineError, match="give a MODEL id or --config"):
        build_config()


def test_set_values_are_yaml_scalars_and_free_dicts_take_new_keys():
    cfg = default_config("tiny-test")
    new = apply_sets(cfg, ["optim.scheduler_args.gamma=5e-1", "model.args.width=4", "training.amp=null",
                           "optim.betas=[0.5, 0.9]", "device=cpu"])
    assert new.optim.scheduler_args == {"step_size": 1, "gamma": 0.5}
    assert new.model.args == {"width": 4} and new.training.amp is None and new.optim.betas == (0.5, 0.9)
    assert cfg.model.args == {}  # the original is untouched


def test_replayed_config_on_other_data_is_refused(series):
    from stfcat.data.series import load_series

    s = load_series(series)
    cfg = resolve(default_config("tiny-test", str(series)), s, "cpu")
    assert cfg.data.bands == list(s.bands) and cfg.budget.patch == 32
    other = cfg.model_copy(deep=True)
    other.data.bands = ["red"]
    with pytest.raises(EngineError, match="data.bands"):
        resolve(other, s, "cpu")
    assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # the YAML round trip is lossless
