"""``stfcat run``: train a model with its recipe, predict every test case on the whole scene,
score it and the trivial baselines with one set of metrics, write everything into one folder."""

from __future__ import annotations

import datetime as _dt
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import EngineError

BASELINES = ("copy-f1", "upsample-c2", "delta")


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
    from stfcat.models import UnknownModelError, model_info

    try:
        return model_info(model_id)
    except UnknownModelError as exc:
        raise EngineError(str(exc)) from None


def open_series(dataset: str | Path, *, catalog: Path | None = None, data_dir: Path | None = None):
    """``load_series`` with its errors turned into one-line messages (unknown id with close names,
    not fetched with the fetch command, bad manifest)."""
    from stfcat.data.errors import DataError
    from stfcat.data.series import load_series

    try:
        cat = None
        if catalog is not None:
            from stfcat.catalog import load_catalog

            cat = load_catalog(Path(catalog))
        from stfcat.data.checks import check_series

        return check_series(load_series(dataset, catalog=cat, data_dir=data_dir))  # bad files named up front
    except KeyError as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise EngineError(f"--dataset: {msg} (or give the path of a series folder with manifest.json)") from None
    except DataError as exc:
        raise EngineError(f"--dataset {dataset}: {exc}") from None
    except Exception as exc:
        from stfcat.catalog import CatalogError

        if isinstance(exc, CatalogError):
            raise EngineError(f"--catalog: the catalog is invalid ({len(exc.problems)} problem(s)); "
                              "run `stfcat validate`") from None
        raise


def _default_out(model_id: str, dataset_name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model_id}-{dataset_name}-{stamp}"


def _latest_run(model_id: str, dataset_name: str) -> Path | None:
    runs = sorted(Path("runs").glob(f"{model_id}-{dataset_name}-*"))
    runs = [r for r in runs if (r / "checkpoint.pt").is_file()]
    return runs[-1] if runs else None


def _cases_or_error(series, n_refs: int, split: str, model_id: str):
    cases = series.cases(n_refs=n_refs, split=split)
    if split == "test":
        cases = [c for c in cases if c.has_target]
    if not cases:
        need = "two reference pairs (one before and one after each target date)" if n_refs == 2 else "one reference pair"
        raise EngineError(
            f"model {model_id!r} needs {need}, but dataset {series.name!r} has no {split} case with that "
            f"({len(series.dates)} dates: {', '.join(series.dates)}; {split} dates: "
            f"{', '.join(series.split.get(split, [])) or 'none'}). Choose a dataset with more dates or a 1-reference model."
        )
    return cases


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
    stop_after_epochs: int | None = None,
    overwrite: bool = False,
) -> RunResult:
    """The protocol for one model on one dataset (see the conventions page). Returns the
    ``metrics.json`` content; raises :class:`EngineError` for bad requests and
    :class:`~stfcat.engine.train.TrainingInterrupted` when stopped (checkpoint written)."""
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
                    steps_per_epoch=steps_per_epoch, overrides=overrides or {}, progress=progress, images=images,
                    stop_after_epochs=stop_after_epochs)
    finally:
        shutdown(dist)


def _run(info, dataset, *, dist, dev, epochs, patch, batch, lr, seed, out, resume, full_recipe, catalog,
         data_dir, tile, steps_per_epoch, overrides, progress, images, stop_after_epochs) -> RunResult:
    import stfcat
    from stfcat.metrics import compute_all, mean_metrics
    from stfcat.models import count_parameters, create_model

    from .checkpoint import model_record, save_checkpoint
    from .device import use_all_cores
    from .predict import predict_case_multi
    from .train import TrainResult, seed_everything, train_model

    use_all_cores(dist.world_size)
    series = open_series(dataset, catalog=catalog, data_dir=data_dir)
    model_id = info.id
    test_cases = _cases_or_error(series, info.n_refs, "test", model_id)
    if out is None:
        out = (_latest_run(model_id, series.name) if resume else None) or _default_out(model_id, series.name)
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.is_file():
        raise EngineError(f"--resume: no checkpoint at {ckpt_path} (give the run folder with --out)")

    seed_everything(seed)
    bands = len(series.bands)
    model = create_model(model_id, bands=bands, ratio=series.ratio, **overrides)
    record = model_record(model_id, model, band_names=series.bands, scale_factor=series.scale_factor,
                          overrides=overrides)
    budget = None
    train_res = TrainResult()
    if info.trainable:
        recipe = info.recipe
        budget = recipe.paper if full_recipe else recipe.quick
        budget = replace(
            budget,
            epochs=epochs if epochs is not None else budget.epochs,
            patch=min(patch if patch is not None else budget.patch, *series.shape),
            batch=batch if batch is not None else budget.batch,
            steps_per_epoch=steps_per_epoch if steps_per_epoch is not None else budget.steps_per_epoch,
        )
        if budget.batch % dist.world_size:
            raise EngineError(f"--batch {budget.batch} must be divisible by the {dist.world_size} ranks")
        train_cases = _cases_or_error(series, info.n_refs, "train", model_id)
        train_res = train_model(model, train_cases, recipe=recipe, budget=budget, seed=seed, device=dev, lr=lr,
                                checkpoint=ckpt_path, resume=resume, record=record, dist=dist, progress=progress,
                                stop_after_epochs=stop_after_epochs)
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
    if not dist.is_main:
        return RunResult(None, {}, dist.rank)
    if not info.trainable:
        save_checkpoint(ckpt_path, {**record, "model_state": model.state_dict(), "train": None})

    methods = {model_id: model}
    for b in BASELINES:
        if b != model_id:
            methods[b] = create_model(b, bands=bands, ratio=series.ratio)
    res_ratio = (series.fine_resolution / series.coarse_resolution
                 if series.fine_resolution and series.coarse_resolution else 1.0 / max(series.ratio, 1))
    per_case: list[dict[str, Any]] = []
    infer = dict.fromkeys(methods, 0.0)
    for case in test_cases:
        preds, target, valid, secs = predict_case_multi(methods, case, device=dev, tile=tile, progress=progress)
        for k, s in secs.items():
            infer[k] += s
        scores = {k: compute_all(p, target, valid, resolution_ratio=res_ratio) for k, p in preds.items()}
        entry = {"id": case.id, "target_date": case.target_date, "ref_dates": list(case.ref_dates),
                 "valid_fraction": float(valid.mean()), "metrics": scores}
        per_case.append(entry)
        if images:
            from .outputs import quicklook_png, write_prediction

            stem = f"{case.target_date}"
            write_prediction(out / "predictions" / f"{model_id}_{stem}.tif", preds[model_id], series.profile,
                             series.bands)
            inputs, _, _ = _downsampled_inputs(case)
            quicklook_png(out / "quicklook" / f"{stem}.png", {"F1": inputs["f1"], "C1": inputs["c1"], "C2": inputs["c2"]},
                          _masked(target, valid), preds[model_id], series.bands,
                          f"{model_id} on {series.name}: {case.id}")
        del preds
    mean = {k: mean_metrics([c["metrics"][k] for c in per_case]) for k in methods}
    result = {
        "model": model_id,
        "dataset": series.name,
        "dataset_arg": str(dataset),
        "split": "test",
        "n_refs": info.n_refs,
        "bands": series.bands,
        "resolution_ratio": res_ratio,
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
        "infer_seconds": infer[model_id],
        "infer_seconds_by_method": infer,
        "resumed": train_res.resumed,
        "history": train_res.history,
        "cases": per_case,
        "mean": mean,
        "stfcat_version": stfcat.__version__,
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from .outputs import loss_curve_png, write_json

    write_json(out / "metrics.json", result)
    if images:
        loss_curve_png(out / "loss.png", train_res.history, f"{model_id} on {series.name}")
    return RunResult(out, result, 0)


def _masked(target, valid):
    if target is None:
        return None
    import numpy as np

    t = target.copy()
    t[:, ~valid] = np.nan
    return t


def _downsampled_inputs(case):
    """Inputs of the whole scene for the quick-look (read once; the scene already fits as output)."""
    return case.read()
