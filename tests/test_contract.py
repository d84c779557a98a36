"""Contract tests over the whole registry (timm style): every registered model, the moment it
registers, must

* come back from a checkpoint (``stfcat.engine.checkpoint``) with bit-identical output;
* predict a scene in tiles (the engine's whole-scene predictor) as in one pass, within 1e-5, or
  declare ``tile_exact = False`` with a ``tile_bound`` (largest absolute difference) that holds;
* return the fusion output from ``forward`` after each training stage: a stage that trains only an
  auxiliary network (loss autoencoder, discriminator) leaves it unchanged, one that trains the
  fusion network changes it, and it always depends on the target date's coarse image;
* run end to end (``run_experiment``: 1 epoch, 1 step per stage, 32 px patches, tiny scene) twice
  with the same seed and give the same metrics and weights.

Inputs are built per task (``ModelInfo.task``): fusion models get tiny scenes built here (the
checks above); every other task gives its own tiny in-memory data (``Task.example_data``) and its
models go, with 3 and 5 channels (stations), through the task-level contract: built from the
registry with the task's ``model_kwargs`` and ``prepare_model``, forward on CPU with the batch's
target shape and finite values, deterministic; trainable models get finite gradients on every
parameter that requires grad and a lower loss after a few steps of their recipe's optimiser;
baselines have nothing to train; a weights-only checkpoint round trip gives identical output. No
registered model is skipped for lack of inputs (a test asserts it), and no model source calls
``.cuda()`` or names a CUDA device. Sizes are tiny on purpose: the suite must stay within 15 min
on a 2-core CI machine with ~52 models.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from stfcat.models import FusionModel, Stage, create_model, list_models, model_info
from stfcat.models.base import REQUIRED_KEYS
from stfcat.models.forecast import ForecastModel, _Trivial
from stfcat.tasks import get_task

RATIO = 4
BANDS = 3
"""Largest scene the tiling check builds (a model whose receptive field needs more is skipped, named)."""
TEST_MODULES = ("_engine_models", "test_", "tests.", "conftest")
"""Modules of models the test suite registers for itself (tiny engine models): not part of the contract."""


def _contract_models() -> list[str]:
    return [m for m in list_models() if not model_info(m).cls.__module__.startswith(TEST_MODULES)]


def _has_example_data(task_name: str) -> bool:
    """Whether the task gives in-memory contract data (``Task.example_data``)."""
    try:
        get_task(task_name).example_data(1)
    except NotImplementedError:
        return False
    return True


MODELS = _contract_models()
FUSION = [m for m in MODELS if model_info(m).task == "fusion"]
FUSION_TRAINABLE = [m for m in FUSION if model_info(m).trainable]
EXAMPLE_MODELS = [m for m in MODELS if model_info(m).task != "fusion" and _has_example_data(model_info(m).task)]
"""Models of the tasks that give ``example_data``: the task-level contract below."""
WIDTHS = (3, 5)
"""Channel (station) counts every model of a task with example data must take."""


def _fusion_only(name: str):
    """The model's info; only called for models of ``FUSION`` (the parametrisations say so)."""
    info = model_info(name)
    assert info.task == "fusion", f"{name}: fusion-only check given a model of task {info.task!r}"
    return info


def lacking_inputs(names: list[str]) -> list[str]:
    """Models the contract has no inputs for: neither fusion nor of a task with example data."""
    return [f"{n} (task {model_info(n).task!r})" for n in names
            if model_info(n).task != "fusion" and not _has_example_data(model_info(n).task)]


SMALL = {"window": 7, "width": 8, "feats": 8}
"""Constructor settings that keep a model's code paths and receptive field but make it cheap: classical
moving windows of 7 px, 8 feature channels (widths do not change what tiling or checkpoints must do)."""


def _small(name: str) -> dict:
    params = inspect.signature(model_info(name).cls.__init__).parameters
    return {k: v for k, v in SMALL.items() if k in params and k not in model_info(name).fixed}


def _create(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(name, bands=BANDS, ratio=RATIO, **_small(name))


def _batch(n_refs: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, BANDS, size, size, generator=g), 5, 1, 2) * 0.5 + 0.05
    return {k: (base + 0.05 * torch.rand(1, BANDS, size, size, generator=g)) for k in REQUIRED_KEYS[n_refs]}


def _size(model) -> int:
    return max(4 * RATIO, int(getattr(model, "min_size", 32)))


# --- tiny scenes ---------------------------------------------------------------------------------
def _write_series(folder, side: int, n_dates: int = 5):
    """A tiny series folder: smooth fine fields that change over time, coarse = ratio-block means
    on the fine grid. Dates 0-2 train, 3 is the one test date (date 4 is its later reference), so
    every model gets one test case with one or two references."""
    from stfcat.data.manifest import Manifest, write_manifest
    from stfcat.data.readers import write_geotiff

    rng = np.random.default_rng(side)
    coarse_side = math.ceil(side / 4)
    field = rng.random((BANDS, coarse_side, coarse_side)).repeat(4, 1).repeat(4, 2)[:, :side, :side]
    dates = [f"2020-0{m + 1}-01" for m in range(n_dates)]
    pairs = []
    for i, d in enumerate(dates):
        fine = (0.05 + 0.3 * field * (1 + 0.1 * i) + 0.02 * rng.random((BANDS, side, side))).astype(np.float32)
        nb = math.ceil(side / RATIO)
        pad = np.pad(fine, ((0, 0), (0, nb * RATIO - side), (0, nb * RATIO - side)), mode="edge")
        blocks = pad.reshape(BANDS, nb, RATIO, nb, RATIO).mean(axis=(2, 4))
        coarse = blocks.repeat(RATIO, 1).repeat(RATIO, 2)[:, :side, :side].astype(np.float32)
        write_geotiff(folder / "fine" / f"{d}.tif", fine)
        write_geotiff(folder / "coarse" / f"{d}.tif", coarse)
        pairs.append({"date": d, "fine": {"path": f"fine/{d}.tif"}, "coarse": {"path": f"coarse/{d}.tif"}})
    write_manifest(Manifest(name=folder.name, bands=[f"b{i}" for i in range(BANDS)], scale_factor=1.0,
                            fine_resolution=30.0, coarse_resolution=30.0 * RATIO, ratio=RATIO, shape=(side, side),
                            split={"train": dates[:3], "test": dates[3:4]}, pairs=pairs), folder)
    return folder


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    """``scene(side)`` -> the folder of a tiny series of that side (written once per side)."""
    made: dict[int, object] = {}
    root = tmp_path_factory.mktemp("contract-scenes")

    def get(side: int):
        if side not in made:
            made[side] = _write_series(root / f"s{side}", side)
        return made[side]

    return get


# --- checkpoint ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FUSION)
def test_checkpoint_roundtrip_gives_identical_output(name, tmp_path):
    from stfcat.engine.checkpoint import load_checkpoint, model_from_checkpoint, model_record, save_checkpoint

    info = _fusion_only(name)
    model = _create(name, seed=0).eval()
    with torch.no_grad():  # move the weights off their initial values: a reload must not re-initialise
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = _batch(info.n_refs, _size(model))
    with torch.no_grad():
        expect = model(batch)
    record = model_record(name, model, band_names=[f"b{i}" for i in range(BANDS)], scale_factor=1.0,
                          overrides=_small(name))
    path = save_checkpoint(tmp_path / "ckpt.pt", {**record, "model_state": model.state_dict()})
    torch.manual_seed(1)  # another initialisation: only the checkpoint can make the outputs equal
    loaded = model_from_checkpoint(load_checkpoint(path), name, bands=BANDS, path=path).eval()
    with torch.no_grad():
        got = loaded(batch)
    assert torch.equal(got, expect), f"{name}: output after checkpoint reload differs by {(got - expect).abs().max()}"


# --- tiled prediction ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FUSION)
def test_tiled_prediction_equals_one_pass(name, scene):
    check_tiling(name, scene)


# ESTARFM's regression slopes come from float32 window sums (cumulative sums over the tile): their
# rounding depends on a pixel's offset in the tile, ~2e-5 whatever the overlap (not a context cut)
TILE_ATOL = {"estarfm": 1e-4}
TILE_CORE = 16  # small tile cores, so even a tiny scene is cut into many tiles


def check_tiling(name: str, scene=None) -> None:
    """Tiles overlapping by the model's receptive field give the one-pass prediction (1e-5); a model
    without a finite receptive field, or with ``tile_exact = False``, stays within its ``tile_bound``."""
    from dataclasses import replace

    from _scenes import BANDS as SB
    from _scenes import _reader, _scene

    from stfcat.engine.predict import predict_scene, tile_layout

    info = _fusion_only(name)
    model = _create(name)
    exact = model.receptive_field is not None and getattr(model, "tile_exact", True)
    # the smallest tiles, many seams: exact models match at any tile size; a declared bound is the
    # worst case, so it is checked on the smallest tiles too
    layout = replace(tile_layout(model), core=max(TILE_CORE if exact else 32, int(getattr(model, "tile_align", 1))))
    shape, min_tiles = (layout.overlap + 3 * layout.core + 5, layout.overlap + 2 * layout.core + 3), 6
    data = _scene(shape)
    stats: dict = {}
    preds, _ = predict_scene({name: model}, _reader(data), shape, SB, layout=layout, stats=stats)
    assert stats["tiles"] >= min_tiles, f"{name}: {stats}: the scene must really be tiled for the check to mean anything"
    with torch.no_grad():
        whole = model.eval()({k: torch.from_numpy(data[k])[None] for k in REQUIRED_KEYS[info.n_refs]})[0].numpy()
    diff = float(np.abs(preds[name] - whole).max())
    if exact:
        tol = TILE_ATOL.get(name, 1e-5)
        assert diff <= tol, f"{name}: tiled prediction differs from one pass by {diff:.3g} (receptive field {model.receptive_field})"
    else:
        bound = getattr(model, "tile_bound", None)
        assert bound is not None, (f"{name}: no finite receptive field (or tile_exact = False): declare tile_bound, "
                                   "the RMSE between tiled and one-pass predictions it allows")
        diff = float(np.sqrt(np.mean((preds[name] - whole) ** 2)))
        assert diff <= bound, f"{name}: tiled prediction differs by {diff:.3g}, over its declared bound {bound}"


# --- stages ------------------------------------------------------------------------------------------
def _stage_optimizers(model, stage, prev: dict | None) -> dict:
    """The stage's optimisers (SGD, so an update is plain and fast), built as the engine does: at
    the stage's start, over the parameters that require grad then."""
    if stage.continues and prev is not None:
        return prev
    if stage.optimizers:
        groups = {k: ps for k, (ps, _) in stage.optimizers.items()}
    else:
        groups = {"main": stage.params if stage.params is not None else model.parameters()}
    return {k: torch.optim.SGD([p for p in ps if p.requires_grad], lr=1e-4) for k, ps in groups.items()}


def _stage_step(stage, batch, target, opts: dict) -> None:
    if stage.loss is not None:
        opts["main"].zero_grad()
        stage.loss(batch, target).backward()
        opts["main"].step()
    else:
        stage.step(batch, target, opts)


def _forward_params(model, batch) -> set[int]:
    """Parameters the prediction depends on (the fusion network)."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    out = model(batch)
    live = [p for p in params if p.requires_grad]  # forward() may freeze a loss network itself
    grads = torch.autograd.grad(out.sum(), live, allow_unused=True) if out.requires_grad else [None] * len(live)
    for p, f in zip(params, flags, strict=True):
        p.requires_grad_(f)
    return {id(p) for p, g in zip(live, grads, strict=True) if g is not None}


@pytest.mark.parametrize("name", FUSION_TRAINABLE)
def test_forward_is_the_fusion_output_after_each_stage(name):
    check_stages(name)


def check_stages(name: str) -> None:
    info = _fusion_only(name)
    model = _create(name)
    size = _size(model)
    batch, target = _batch(info.n_refs, size), _batch(1, size, seed=1)["f1"]
    moved = {k: v + 0.1 if k == "c2" else v for k, v in batch.items()}
    opts = None
    for stage in model.stages():
        opts = _stage_optimizers(model, stage, opts)
        trained = {id(p) for o in opts.values() for g in o.param_groups for p in g["params"]}
        fusion = _forward_params(model.eval(), batch)
        with torch.no_grad():
            before = model(batch)
        buffers = [b.clone() for b in model.buffers()]
        model.train()
        _stage_step(stage, batch, target, opts)
        model.eval()
        with torch.no_grad():
            after, shifted = model(batch), model(moved)
        assert after.shape == target.shape and torch.isfinite(after).all(), f"{name}/{stage.name}: bad output"
        assert not torch.equal(after, shifted), f"{name}/{stage.name}: forward ignores C2 (not a fusion output)"
        same_buffers = all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
        if not trained & fusion and same_buffers:
            assert torch.equal(after, before), f"{name}/{stage.name}: trains no fusion parameter but moves forward()"
        elif trained & fusion:
            assert not torch.equal(after, before), f"{name}/{stage.name}: trains the fusion network, forward() unchanged"


# --- end to end ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FUSION)
def test_tiny_run_end_to_end_is_deterministic(name, scene, tmp_path):
    from stfcat.engine.checkpoint import load_checkpoint
    from stfcat.engine.run import run_experiment

    _fusion_only(name)
    folder = scene(32)
    results = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        res = run_experiment(name, folder, device="cpu", seed=7, out=out, epochs=1, steps_per_epoch=1, batch=1,
                             patch=32, overrides=_small(name), progress=False, images=False)
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["model"] == name and len(saved["cases"]) >= 1
        scores = saved["mean"][name]
        assert all(math.isfinite(scores[k]) for k in ("rmse", "ssim", "sam")), f"{name}: {scores}"
        results.append((scores, load_checkpoint(out / "checkpoint.pt")["model_state"], res))
    (s0, w0, _), (s1, w1, _) = results
    assert s0 == s1, f"{name}: two runs with seed 7 differ: {s0} vs {s1}"
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0), f"{name}: weights differ"


# --- the checks can fail ---------------------------------------------------------------------------
class _GlobalShift(FusionModel):
    """F1 + the scene-mean coarse change: an image-level statistic, so tiles differ."""

    trainable = False
    halo = 0
    receptive_field = 0  # claimed (wrongly: the mean is over the whole input), so the exact check applies

    def forward(self, b):
        return b["f1"] + (b["c2"] - b["c1"]).mean(dim=(2, 3), keepdim=True) * 10


class _AuxOutput(FusionModel):
    """A staged model whose forward wrongly returns its auxiliary network's output."""

    def __init__(self, bands: int = 6, ratio: int = 16) -> None:
        super().__init__(bands, ratio)
        self.fusion = torch.nn.Conv2d(3 * bands, bands, 3, padding=1)
        self.aux = torch.nn.Conv2d(bands, bands, 3, padding=1)

    def forward(self, b):
        return self.aux(b["f1"])

    def stages(self):
        return [Stage("aux", loss=lambda b, t: (self(b) - t).pow(2).mean(), params=list(self.aux.parameters()))]


def test_the_tiling_and_stage_checks_catch_broken_models(model_registry, scene):
    from stfcat.models import Budget, OptimSpec, Recipe, register_model

    register_model("toy-global", paper=None, family="trivial", params=0)(_GlobalShift)
    with pytest.raises(AssertionError, match="toy-global: tiled prediction differs from one pass"):
        check_tiling("toy-global", scene)
    _GlobalShift.tile_exact, _GlobalShift.tile_bound = False, 1e-9
    try:
        with pytest.raises(AssertionError, match="over its declared bound 1e-09"):
            check_tiling("toy-global", scene)
    finally:
        del _GlobalShift.tile_exact, _GlobalShift.tile_bound
    recipe = Recipe(OptimSpec(), quick=Budget(1, 32, 1, 1), paper=Budget(1, 32, 1, 1))
    register_model("toy-aux", paper=None, family="cnn", params=None, recipe=recipe)(_AuxOutput)
    with pytest.raises(AssertionError, match="toy-aux/aux: forward ignores C2"):
        check_stages("toy-aux")


# --- task-level contract: models of tasks with example data (timeseries) --------------------------
EXAMPLE_BATCH = 8
RECIPE_STEPS = 5
CUDA_CALL = re.compile(r"\.cuda\(|[\"']cuda(:\d+)?[\"']")
"""A hard-wired GPU: ``.cuda()`` or a ``"cuda"`` device literal (the engine picks the device)."""


@dataclass
class Example:
    """A model built and prepared on its task's example data, with one fixed training batch."""

    task: Any
    data: Any
    model: torch.nn.Module
    batch: dict[str, torch.Tensor]
    target: torch.Tensor


def _example(name: str, width: int, seed: int = 0) -> Example:
    """Build ``name`` as the engine does (registry + ``model_kwargs`` + ``prepare_model``) on the
    task's example data with ``width`` channels, and draw one batch from the task's sampler.
    ``seed`` only seeds the initialisation: data and batch are the same for every seed."""
    from dataclasses import replace

    from stfcat.models import Budget

    info = model_info(name)
    task = get_task(info.task)
    data = task.example_data(width, seed=0)
    torch.manual_seed(seed)
    model = create_model(name, **task.model_kwargs(data))
    task.prepare_model(model, data)
    cases = task.cases(data, "train", info)
    budget = info.recipe.quick if info.recipe is not None else Budget(epochs=1, patch=1, batch=EXAMPLE_BATCH)
    budget = replace(task.fit_budget(budget, data, cases), batch=EXAMPLE_BATCH)
    batch, target = task.training_sampler(data, cases, budget, seed=0).sample()
    return Example(task, data, model, batch, target)


def _eval_output(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batch)


def check_example_forward(name: str, width: int) -> None:
    """Target-shaped, finite, deterministic output; a baseline has nothing to train (its output does
    not depend on the initialisation seed), a trainable model is reproducible under its seed."""
    info = model_info(name)
    ex = _example(name, width)
    out = _eval_output(ex.model, ex.batch)
    assert out.shape == ex.target.shape, f"{name}: output shape {tuple(out.shape)}, target {tuple(ex.target.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite output"
    assert torch.equal(out, _eval_output(ex.model, ex.batch)), f"{name}: two forwards of one batch differ"
    if not info.trainable:
        trainable = [n for n, p in ex.model.named_parameters() if p.requires_grad]
        assert not trainable, f"{name}: a baseline with parameters to train: {trainable[:5]}"
    twin = _example(name, width, seed=0 if info.trainable else 1)
    assert torch.equal(out, _eval_output(twin.model, twin.batch)), (
        f"{name}: output not deterministic ({'same seed' if info.trainable else 'a baseline under another seed'})")


def _stage_opts(model: torch.nn.Module, stage, spec, lr: float | None = None) -> dict:
    """The stage's optimisers from the recipe's spec (or the stage's own), as the engine builds them."""
    from stfcat.engine.optim import make_optimizer

    if stage.optimizers:
        return {k: make_optimizer(ps, own or spec, lr) for k, (ps, own) in stage.optimizers.items()}
    return {"main": make_optimizer(stage.params if stage.params is not None else model.parameters(), spec, lr)}


def check_example_gradients(name: str, width: int) -> None:
    """One backward per stage reaches every parameter that requires grad, with finite values."""
    ex = _example(name, width)
    model = ex.model.train()
    assert any(p.requires_grad for p in model.parameters()), f"{name}: trainable but no parameter to train"
    for stage in model.stages():
        if stage.loss is not None:
            loss = stage.loss(ex.batch, ex.target)
            assert torch.isfinite(loss), f"{name}/{stage.name}: non-finite loss {loss}"
            loss.backward()
        else:  # custom step: lr 0, only the gradients matter here
            stage.step(ex.batch, ex.target, _stage_opts(model, stage, model_info(name).recipe.optim, lr=0.0))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradient in {bad[:5]}"


def check_example_training(name: str, width: int) -> None:
    """A few steps of the recipe's optimiser lower a loss stage's loss on the fixed batch; a custom
    step stage runs and leaves a finite forward."""
    ex = _example(name, width)
    model = ex.model.train()
    for stage in model.stages():
        opts = _stage_opts(model, stage, model_info(name).recipe.optim)
        if stage.loss is None:
            for _ in range(RECIPE_STEPS):
                stage.step(ex.batch, ex.target, opts)
            assert torch.isfinite(_eval_output(model, ex.batch)).all(), f"{name}/{stage.name}: non-finite output"
            model.train()
            continue
        with torch.no_grad():
            first = float(stage.loss(ex.batch, ex.target))
        for _ in range(RECIPE_STEPS):
            opts["main"].zero_grad()
            stage.loss(ex.batch, ex.target).backward()
            opts["main"].step()
        with torch.no_grad():
            last = float(stage.loss(ex.batch, ex.target))
        assert last < first, f"{name}/{stage.name}: loss {first:.4g} -> {last:.4g} after {RECIPE_STEPS} recipe steps"


def check_example_checkpoint(name: str, width: int, folder) -> None:
    """Weights-only save/load through the engine's checkpoint functions gives the same output; the
    reloaded model is neither seeded alike nor prepared, so weights and statistics must be saved."""
    from stfcat.engine.checkpoint import load_checkpoint, load_model_state, model_record, save_checkpoint

    ex = _example(name, width)
    with torch.no_grad():  # off the initial values: a reload must not re-initialise
        for p in ex.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    expect = _eval_output(ex.model, ex.batch)
    extra = dict(ex.task.record_fields(ex.data))
    record = {**model_record(name, ex.model, band_names=extra.pop("band_names", None),
                             scale_factor=extra.pop("scale_factor", None)), **extra}
    path = save_checkpoint(folder / "ckpt.pt", {**record, "model_state": ex.model.state_dict()})
    torch.manual_seed(1)
    loaded = create_model(name, **ex.task.model_kwargs(ex.data))
    load_model_state(loaded, load_checkpoint(path), path, name)
    got = _eval_output(loaded, ex.batch)
    assert torch.equal(got, expect), f"{name}: output after checkpoint reload differs by {(got - expect).abs().max()}"


@pytest.fixture()
def engine_threads():
    """Torch threads as the engine sets them (``STFCAT_NUM_THREADS`` on shared machines), restored
    after: tiny recurrent models are ~300x slower when two threads fight over busy cores."""
    from stfcat.engine.device import use_all_cores

    before = torch.get_num_threads()
    use_all_cores()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_example_forward_shape_finite_deterministic(name, width, engine_threads):
    check_example_forward(name, width)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", [m for m in EXAMPLE_MODELS if model_info(m).trainable])
def test_example_backward_gives_finite_gradients_everywhere(name, width, engine_threads):
    check_example_gradients(name, width)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", [m for m in EXAMPLE_MODELS if model_info(m).trainable])
def test_example_recipe_steps_lower_the_loss(name, width, engine_threads):
    check_example_training(name, width)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_example_checkpoint_roundtrip_gives_identical_output(name, width, tmp_path, engine_threads):
    check_example_checkpoint(name, width, tmp_path)


def test_every_registered_model_has_contract_inputs():
    assert not lacking_inputs(MODELS), f"no contract inputs for {lacking_inputs(MODELS)}: give the task example_data"
    assert set(MODELS) == set(FUSION) | set(EXAMPLE_MODELS)
    # the models this section was written for: a task losing its example data must not go unnoticed
    assert {"gru-forecast", "persistence", "same-hour-yesterday", "hour-of-day-mean"} <= set(EXAMPLE_MODELS)


def device_bound_lines(source: str) -> list[str]:
    """Code lines (comments dropped) that pin a model to CUDA."""
    lines = (ln.split("#", 1)[0] for ln in source.splitlines())
    return [ln.strip() for ln in lines if CUDA_CALL.search(ln)]


def test_model_sources_are_device_agnostic():
    files = {inspect.getsourcefile(model_info(m).cls) for m in MODELS}
    bound = {f: hits for f in sorted(files) if (hits := device_bound_lines(open(f, encoding="utf-8").read()))}
    assert not bound, f"models must not pick their device (the engine moves them): {bound}"
    assert device_bound_lines("x = x.cuda()  # bad\ny = torch.zeros(1, device='cuda:0')") == [
        "x = x.cuda()", "y = torch.zeros(1, device='cuda:0')"]
    assert device_bound_lines("ok = torch.cuda.is_available()  # 'cuda' in a comment is fine") == []


def test_a_task_without_example_data_is_named(monkeypatch):
    from stfcat.tasks.timeseries import TimeseriesTask

    def none(self, width=3, *, seed=0):
        raise NotImplementedError

    monkeypatch.setattr(TimeseriesTask, "example_data", none)
    assert lacking_inputs(["persistence", "delta"]) == ["persistence (task 'timeseries')"]


# broken forecasters: each fails one check of the task-level contract
class _ShortForecast(_Trivial):
    """One horizon step short."""

    def forward(self, b):
        return b["x"][:, -1:, :].expand(-1, self.horizon - 1, -1).clone()


class _NaNForecast(_Trivial):
    """Persistence poisoned with NaN."""

    def forward(self, b):
        return b["x"][:, -1:, :].expand(-1, self.horizon, -1) * float("nan")


class _NoisyBaseline(_Trivial):
    """A 'baseline' that draws random numbers: not deterministic."""

    def forward(self, b):
        return b["x"][:, -1:, :].expand(-1, self.horizon, -1) + torch.rand(1)


class _ForgetfulClimatology(_Trivial):
    """Hour-of-day mean kept in a buffer that checkpoints do not save."""

    def __init__(self, n_stations: int = 12, window: int = 24, horizon: int = 6) -> None:
        super().__init__(n_stations, window, horizon)
        self.register_buffer("clim", torch.zeros(24, self.n_stations), persistent=False)

    def fit_statistics(self, values, hours) -> None:
        super().fit_statistics(values, hours)
        self.clim.copy_(self.climatology)

    def forward(self, b):
        return self.clim[b["hours_out"].long() % 24]


class _DeadWeight(ForecastModel):
    """A trainable forecaster with a parameter its output never uses, and nothing it can learn."""

    def __init__(self, n_stations: int = 12, window: int = 24, horizon: int = 6) -> None:
        super().__init__(n_stations, window, horizon)
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, b):
        return b["x"][:, -1:, :].expand(-1, self.horizon, -1) + 0.0 * self.scale


def test_the_task_level_checks_catch_broken_models(model_registry, tmp_path, engine_threads):
    from stfcat.models import Budget, OptimSpec, Recipe, register_model

    recipe = Recipe(OptimSpec(), quick=Budget(1, 1, EXAMPLE_BATCH, 1), paper=Budget(1, 1, EXAMPLE_BATCH, 1))
    for cls, rec in ((_ShortForecast, None), (_NaNForecast, None), (_NoisyBaseline, None),
                     (_ForgetfulClimatology, None), (_DeadWeight, recipe)):
        register_model(f"toy{cls.__name__.lower()}", paper=None, family="trivial", params=0, recipe=rec,
                       task="timeseries")(cls)
    cases = [(check_example_forward, "toy_shortforecast", "output shape"),
             (check_example_forward, "toy_nanforecast", "non-finite output"),
             (check_example_forward, "toy_noisybaseline", "differ|not deterministic"),
             (check_example_gradients, "toy_deadweight", "no gradient reaches \\['unused'\\]"),
             (check_example_training, "toy_deadweight", "after 5 recipe steps")]
    for check, name, why in cases:
        with pytest.raises(AssertionError, match=f"{name}.*({why})"):
            check(name, 3)
    with pytest.raises(AssertionError, match="toy_forgetfulclimatology: output after checkpoint reload differs"):
        check_example_checkpoint("toy_forgetfulclimatology", 3, tmp_path)
