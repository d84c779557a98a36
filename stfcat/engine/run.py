"""``stfcat run``: train a model with its recipe, predict every test case, score it and the
trivial baselines of its task with the task's metrics, write everything into one folder.

Everything specific to a kind of data (cases, samples, baselines, predictor, metrics, figures)
comes from the model's task (:mod:`stfcat.tasks`); :func:`evaluate` scores any list of cases."""

from __future__ import annotations

import copy
import datetime as _dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EngineError


@dataclass
class RunResult:
    out_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)  # the content of metrics.json (rank 0)
    rank: int = 0


def git_commit() -> str | None:
    """Commit of the stfcat source tree, when it is a git checkout with commits."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    if out.returncode != 0 or len(sha) != 40:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return sha + ("-dirty" if dirty else "")


def resolve_model(model_id: str):
    from stfcat.models import RegistryError, UnknownModelError, model_info

    try:
        return model_info(model_id)
    except (UnknownModelError, RegistryError) as exc:
        raise EngineError(str(exc)) from None


def resolve_task(info):
    """The :class:`~stfcat.tasks.Task` of a registered model."""
    from stfcat.tasks import TaskError, get_task

    try:
        return get_task(info.task)
    except TaskError as exc:
        raise EngineError(f"model {info.id!r}: {exc}") from None


def open_data(task, dataset: str | Path, *, catalog: Path | None = None, data_dir: Path | None = None):
    """``task.open`` with its errors as :class:`EngineError`."""
    from stfcat.tasks import TaskError

    try:
        return task.open(dataset, catalog=catalog, data_dir=data_dir)
    except TaskError as exc:
        raise EngineError(str(exc)) from None


def open_series(dataset: str | Path, *, catalog: Path | None = None, data_dir: Path | None = None):
    """A fusion pair series for ``dataset`` (one-line errors: unknown id with close names, not
    fetched with the fetch command, bad manifest)."""
    from stfcat.tasks import get_task

    return open_data(get_task("fusion"), dataset, catalog=catalog, data_dir=data_dir)


def task_cases(task, data, split: str, info, plan=None) -> list:
    """``task.cases`` with its errors as :class:`EngineError`."""
    from stfcat.tasks import TaskError

    try:
        return task.cases(data, split, info, plan)
    except TaskError as exc:
        raise EngineError(str(exc)) from None


def _default_out(model_id: str, dataset_name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model_id}-{dataset_name}-{stamp}"


def _latest_run(model_id: str, dataset_name: str) -> Path | None:
    runs = sorted(Path("runs").glob(f"{model_id}-{dataset_name}-*"))
    runs = [r for r in runs if (r / "checkpoint.pt").is_file()]
    return runs[-1] if runs else None


def run_experiment(
    model_id: str,
    dataset: str | Path = "demo",
    *,
    epochs: int | None = None,
    patch: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    seed: int = 0,
    out: Path | None = None,
    resume: bool = False,
    full_recipe: bool = False,
    catalog: Path | None = None,
    data_dir: Path | None = None,
    tile: int = 256,
    steps_per_epoch: int | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    images: bool = True,
    config=None,
    hooks=(),
    split: str | None = None,
    overwrite: bool = False,
) -> RunResult:
    """The protocol for one model on one dataset (see the conventions page). Returns the
    ``metrics.json`` content; raises :class:`EngineError` for bad requests and
    :class:`~stfcat.engine.train.TrainingInterrupted` when stopped (checkpoint written).
    ``config`` (a :class:`~stfcat.engine.config.RunConfig`) replaces the keyword arguments that
    describe the run; ``hooks`` are extra :class:`~stfcat.engine.train.Hook` objects.
    ``split``: the task's split kind (fusion: "temporal" or "spatial", the dataset's declared
    spatial split); default: the task's choice (fusion: temporal where the dates allow it)."""
    # run config (engine/config.py): one resolved description of the run, written as config.yaml
    from .config import build_config

    if config is None:
        config = build_config(model_id, dataset=str(dataset), full_recipe=full_recipe, epochs=epochs, patch=patch,
                              batch=batch, steps_per_epoch=steps_per_epoch, lr=lr, seed=seed, device=device,
                              tile=tile, overrides=overrides)
    if split is not None:
        config = config.model_copy(deep=True)
        config.data.split_kind = split
    model_id, dataset, device, seed, tile = (config.model.id, config.data.dataset, config.device, config.seed,
                                             config.tile)
    split = config.data.split_kind
    info = resolve_model(model_id)
    from .outputs import refuse_finished_run

    refuse_finished_run(out, overwrite=overwrite, resume=resume)  # never replace a finished run silently
    from .device import resolve_device
    from .distributed import init_from_env, shutdown

    dev = resolve_device(device)
    dist = init_from_env(dev.type)
    if dist.enabled and dev.type == "cuda":  # one GPU per rank
        import torch

        dev = torch.device(f"cuda:{dist.local_rank}")
        torch.cuda.set_device(dev)
    try:
        return _run(info, dataset, dist=dist, dev=dev, epochs=epochs, patch=patch, batch=batch, lr=lr, seed=seed,
                    out=out, resume=resume, full_recipe=full_recipe, catalog=catalog, data_dir=data_dir, tile=tile,
                    steps_per_epoch=steps_per_epoch, overrides=config.model.args, progress=progress, images=images,
                    config=config, hooks=hooks, split=split)
    finally:
        shutdown(dist)


def _run(info, dataset, *, dist, dev, epochs, patch, batch, lr, seed, out, resume, full_recipe, catalog,
         data_dir, tile, steps_per_epoch, overrides, progress, images, config, hooks, split=None) -> RunResult:
    import stfcat
    from stfcat.models import count_parameters, create_model

    from .checkpoint import model_record, save_checkpoint
    from .device import use_all_cores
    from .train import TrainResult, seed_everything, train_model

    use_all_cores(dist.world_size)
    task = resolve_task(info)
    data = open_data(task, dataset, catalog=catalog, data_dir=data_dir)
    model_id = info.id
    if out is None:
        out = (_latest_run(model_id, data.name) if resume else None) or _default_out(model_id, data.name)
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.is_file():
        raise EngineError(f"--resume: no checkpoint at {ckpt_path} (give the run folder with --out)")

    seed_everything(seed)
    model = create_model(model_id, **task.model_kwargs(data), **overrides)
    task.prepare_model(model, data)
    plan = split_plan(task, data, info, model, split)  # e.g. fusion: temporal, or spatial with a guard band
    test_cases = task_cases(task, data, "test", info, plan)
    val_cases = task_cases(task, data, "val", info, plan)
    extra = dict(task.record_fields(data))
    record = {**model_record(model_id, model, band_names=extra.pop("band_names", None),
                             scale_factor=extra.pop("scale_factor", None), overrides=overrides), **extra}
    budget = None
    train_res = TrainResult()
    # the same weights before training: scored on the test cases beside the trained model, so a
    # row shows whether training moved the score (on --resume the checkpoint is loaded later, in
    # train_model, so this is the seeded initialisation there too)
    untrained = copy.deepcopy(model) if info.trainable else None
    # run config: resolved against the data and device, written before training (resume/replay)
    from .config import CONFIG_NAME, recipe_and_budget, resolve, write_config

    config = resolve(config, data, dev)
    if dist.is_main:
        write_config(out / CONFIG_NAME, config)
    lr, full_recipe = config.lr, config.budget is not None and config.budget.which == "paper"
    if info.trainable:
        train_cases = task_cases(task, data, "train", info, plan)
        recipe, budget = recipe_and_budget(config, info.recipe)
        budget = task.fit_budget(budget, data, train_cases)
        if budget.batch % dist.world_size:
            raise EngineError(f"--batch {budget.batch} must be divisible by the {dist.world_size} ranks")
        sampler = task.training_sampler(data, train_cases, budget, seed=seed)
        validate = validation_score(task, data, model_id, val_cases, recipe, device=dev, tile=tile)
        train_res = train_model(model, sampler, recipe=recipe, budget=budget, seed=seed, device=dev, lr=lr,
                                checkpoint=ckpt_path, resume=resume, record=record, dist=dist, progress=progress,
                                hooks=hooks, num_workers=config.training.num_workers if config.training else 0,
                                validate=validate)
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
    if not dist.is_main:
        return RunResult(None, {}, dist.rank)
    if not info.trainable:
        save_checkpoint(ckpt_path, {**record, "model_state": model.state_dict(), "train": None})

    methods = {model_id: model, **baseline_models(task, data, exclude=model_id)}
    ev = evaluate(task, data, methods, test_cases, device=dev, tile=tile, progress=progress,
                  figures_of=model_id if images else None, out=out)
    val = evaluate(task, data, methods, val_cases, device=dev, tile=tile) if val_cases else None
    before = None
    if untrained is not None:
        before = evaluate(task, data, {model_id: untrained}, test_cases, device=dev, tile=tile)
        before = {"mean": before.mean[model_id], "cases": [c["metrics"][model_id] for c in before.cases]}
    result = {
        "model": model_id,
        "task": task.name,
        "dataset": data.name,
        "dataset_arg": str(dataset),
        "split": "test",
        **task.describe(data, info, plan=plan, cases=test_cases),
        "params": count_parameters(model),
        "trainable": info.trainable,
        "budget": None if budget is None else {"epochs": budget.epochs, "patch": budget.patch,
                                               "batch": budget.batch, "steps_per_epoch": budget.steps_per_epoch,
                                               "which": "paper" if full_recipe else "quick"},
        "lr": lr,
        "seed": seed,
        "device": str(dev),
        "world_size": dist.world_size,
        "train_seconds": train_res.seconds,
        "infer_seconds": ev.infer_seconds[model_id],
        "infer_seconds_by_method": ev.infer_seconds,
        "resumed": train_res.resumed,
        "selected": getattr(train_res, "best", None),  # {"epoch", "score"}: checkpoint picked on validation
        "history": train_res.history,
        "cases": ev.cases,
        "mean": ev.mean,
        "val": None if val is None else {"cases": val.cases, "mean": val.mean},  # reported apart from test
        "untrained": before,  # the model's test scores with its initial weights (trainable models)
        "stfcat_version": stfcat.__version__,
        "git_commit": git_commit(),
        "config": config.model_dump(mode="json"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    # provenance: data fingerprint, library versions, device, threads, the run config
    result["provenance"] = run_provenance(task, data, dev, config)
    result["data_fingerprint"] = result["provenance"]["data"]["fingerprint"]
    from .outputs import loss_curve_png, write_json

    write_json(out / "metrics.json", result)
    if images:
        loss_curve_png(out / "loss.png", train_res.history, f"{model_id} on {data.name}")
    return RunResult(out, result, 0)


def validation_score(task, data, model_id: str, val_cases: list, recipe, *, device, tile: int):
    """``validate(model)`` for the training loop: the task's primary metric (lower is better) over
    the validation cases, when the recipe selects a checkpoint or stops early on it; test cases
    never reach it."""
    if not val_cases or (recipe.select != "best" and recipe.patience is None):
        return None
    import torch

    metric = task.primary_metric

    def score(model) -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            ev = evaluate(task, data, {model_id: model}, val_cases, device=device, tile=tile)
        model.train(was)
        return float(ev.mean[model_id][metric])

    return score


def run_provenance(task, data, device, config) -> dict[str, Any]:
    """:func:`stfcat.data.fingerprint.provenance`: the data's fingerprint (the task's), the
    library versions, device and threads, and the run's resolved config."""
    from stfcat.data.fingerprint import provenance

    return provenance(data, device=device, config=config.model_dump(mode="json"),
                      fingerprint=task.fingerprint(data))


def split_plan(task, data, info, model, requested: str | None):
    """``task.split_plan`` with its errors as :class:`EngineError`."""
    from stfcat.tasks import TaskError

    try:
        return task.split_plan(data, info, model, requested)
    except TaskError as exc:
        raise EngineError(str(exc)) from None


def baseline_models(task, data, *, exclude: str | None = None) -> dict[str, Any]:
    """The task's trivial baselines, built for ``data`` (and given what they learn from its
    training part), in the task's order."""
    from stfcat.models import create_model

    out: dict[str, Any] = {}
    for b in task.baselines:
        if b != exclude:
            m = create_model(b, **task.model_kwargs(data))
            task.prepare_model(m, data)
            out[b] = m
    return out


@dataclass
class Evaluation:
    cases: list[dict[str, Any]]  # per case: the task's case record + {"metrics": {method: {...}}}
    mean: dict[str, dict[str, float]]  # method -> summary over cases
    infer_seconds: dict[str, float]  # method -> seconds in its forward passes, all cases


def evaluate(task, data, methods: dict[str, Any], cases: list, *, device: Any = "cpu", tile: int = 256,
             progress: bool = False, figures_of: str | None = None, out: Path | None = None) -> Evaluation:
    """Predict and score every case with every method (one pass over each case for all of them).
    With ``figures_of`` (a method id) and ``out``, the task writes that method's figures per case."""
    per_case: list[dict[str, Any]] = []
    infer = dict.fromkeys(methods, 0.0)
    for case in cases:
        preds, target, valid, secs = task.predict(methods, case, device=device, tile=tile, progress=progress)
        for k, s in secs.items():
            infer[k] += s
        scores = {k: task.metrics(p, target, valid, data) for k, p in preds.items()}
        per_case.append({**task.case_record(case, valid), "metrics": scores})
        if figures_of is not None and out is not None:
            task.write_case_outputs(out, data, case, figures_of, preds, target, valid)
        del preds
    mean = {k: task.mean_metrics([c["metrics"][k] for c in per_case]) for k in methods}
    return Evaluation(per_case, mean, infer)
