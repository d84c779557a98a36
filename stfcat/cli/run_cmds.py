"""``stfcat run``, ``stfcat fuse``, ``stfcat bench``: the evaluation protocol.

torch and the engine are imported inside the commands so ``stfcat --help`` stays instant.
User errors (:class:`stfcat.engine.EngineError`) print one line and exit with code 2.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from stfcat.cli.main import app
from stfcat.cli.options import CatalogOpt, fail


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class BudgetName(str, Enum):
    quick = "quick"
    paper = "paper"


@app.command("run")
def run_cmd(
    model: Annotated[str | None, typer.Argument(help="Model id (see `stfcat list models`); optional with --config.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Catalog dataset id, 'demo' (default), or a series folder with manifest.json.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs in total (default: the recipe's budget).", min=1)] = None,
    patch: Annotated[int | None, typer.Option(help="Training patch size in fine pixels.", min=8)] = None,
    batch: Annotated[int | None, typer.Option(help="Global batch size (split across distributed ranks).", min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of every optimiser (default: the paper's).")] = None,
    steps: Annotated[int | None, typer.Option("--steps-per-epoch", help="Steps per epoch (default: the budget's).", min=1)] = None,
    device: Annotated[Device | None, typer.Option(help="auto (default) falls back to CPU with a message.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of weights, patches and augmentation (default 0).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader worker processes drawing training batches (default 0: in-process).", min=0)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Start from a run configuration (a run folder's config.yaml).", dir_okay=False)] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Override a config field: --set optim.lr=2e-4 --set budget.epochs=40 (repeat).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default runs/<model>-<dataset>-<time>/).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/checkpoint.pt (default: the latest run), configured by <out>/config.yaml.")] = False,
    full_recipe: Annotated[bool, typer.Option("--full-recipe", help="Train with the paper's budget instead of the quick one.")] = False,
    no_images: Annotated[bool, typer.Option("--no-images", help="Skip GeoTIFFs and PNGs (metrics and checkpoint only).")] = False,
    split: Annotated[str | None, typer.Option("--split", help="temporal or spatial (the dataset's declared spatial split); default: temporal where the dates allow.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the finished run in --out (else refused; --resume continues it).")] = False,
    catalog: CatalogOpt = None,
) -> None:
    """Train MODEL (if trainable) and evaluate it with the trivial baselines on DATASET's test cases.

    Every run writes its resolved configuration as config.yaml; `--config FILE` replays it and
    the flags and `--set key=value` change fields of it."""
    from stfcat.data.errors import DataError
    from stfcat.engine.errors import EngineError
    from stfcat.engine.train import TrainingInterrupted

    try:
        from stfcat.engine.config import build_config
        from stfcat.engine.run import run_experiment

        if resume and config is None and out is not None and (out / "config.yaml").is_file():
            config = out / "config.yaml"  # resume the run as it was configured (flags and --set still apply)
        cfg = build_config(model, config, dataset=dataset, full_recipe=full_recipe, epochs=epochs, patch=patch,
                           batch=batch, steps_per_epoch=steps, lr=lr, seed=seed,
                           device=device.value if device is not None else None, num_workers=workers,
                           sets=sets or ())
        model, dataset = cfg.model.id, cfg.data.dataset
        res = run_experiment(model, dataset, config=cfg, out=out, resume=resume, catalog=catalog,
                             images=not no_images, split=split, overwrite=overwrite)
    except (EngineError, DataError) as exc:
        raise fail(f"error: {exc}", 2) from None
    except TrainingInterrupted as exc:
        hint = f" --out {exc.checkpoint.parent}" if exc.checkpoint else ""
        again = f"--config {exc.checkpoint.parent / 'config.yaml'}" if exc.checkpoint else f"{model} --dataset {dataset}"
        raise fail(f"{exc}. Continue with: stfcat run {again} --resume{hint}", 130) from None
    if res.rank != 0:
        return
    from rich.console import Console

    from stfcat.engine.report import rich_table

    con = Console()
    con.print(rich_table(res.metrics))
    m = res.metrics
    con.print(f"params {m['params']:,}  train {m['train_seconds']:.1f} s  inference {m['infer_seconds']:.1f} s  "
              f"device {m['device']}  ->  {res.out_dir}")


@app.command("fuse")
def fuse_cmd(
    model: Annotated[str, typer.Option("--model", help="Model id.")],
    fine_ref: Annotated[Path, typer.Option("--fine-ref", help="Fine image at the reference date (F1).")],
    coarse_ref: Annotated[Path, typer.Option("--coarse-ref", help="Coarse image at the reference date (C1).")],
    coarse_target: Annotated[Path, typer.Option("--coarse-target", help="Coarse image at the target date (C2).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output GeoTIFF.")],
    weights: Annotated[Path | None, typer.Option("--weights", help="Checkpoint of a trained model (run folder's checkpoint.pt).")] = None,
    fine_ref2: Annotated[Path | None, typer.Option("--fine-ref2", help="Second fine reference (F3), 2-reference models.")] = None,
    coarse_ref2: Annotated[Path | None, typer.Option("--coarse-ref2", help="Second coarse reference (C3).")] = None,
    scale: Annotated[float | None, typer.Option("--scale", help="Scale factor of stored values (default: the checkpoint's, else 1).")] = None,
    tile: Annotated[int, typer.Option(help="Tile core in fine pixels (tiles add the overlap the model's receptive field needs).", min=16)] = 256,
    device: Annotated[Device, typer.Option(help="auto falls back to CPU with a message.")] = Device.auto,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
    ratio: Annotated[int | None, typer.Option("--ratio", help="Fine pixels per coarse pixel (default: coarse pixel size / fine pixel size from the inputs' georeferencing).")] = None,
    min_valid: Annotated[float, typer.Option("--min-valid", help="Warn when an input has a smaller fraction of valid pixels (0..1); an input with none is an error.")] = 0.5,
    nodata_rule: Annotated[str, typer.Option("--nodata-rule", help="Output nodata where no input is valid (no-input) or where any input is invalid (any-input).")] = "no-input",
    catalog: CatalogOpt = None,
) -> None:
    """Fuse your own scenes (GeoTIFF or ENVI) with a model; coarse images may be on their own grid."""
    from stfcat.engine.errors import EngineError

    try:
        from stfcat.engine.fuse import fuse_files

        path = fuse_files(model, fine_ref=fine_ref, coarse_ref=coarse_ref, coarse_target=coarse_target,
                          fine_ref2=fine_ref2, coarse_ref2=coarse_ref2, out=output, weights=weights, scale=scale,
                          tile=tile, device=device.value, overwrite=overwrite, progress=True,
                          catalog=catalog, ratio=ratio, min_valid=min_valid, nodata_rule=nodata_rule,
                          warn=lambda msg: typer.echo(f"warning: {msg}", err=True))
    except EngineError as exc:
        raise fail(f"error: {exc}", 2) from None
    typer.echo(f"wrote {path}")


@app.command("bench")
def bench_cmd(
    models: Annotated[list[str] | None, typer.Option("--models", help="Model ids (repeat; default: every trainable and classical model).")] = None,
    datasets: Annotated[list[str] | None, typer.Option("--datasets", help="Dataset ids or folders (repeat; default: demo).")] = None,
    budget: Annotated[BudgetName, typer.Option(help="quick or paper training budget.")] = BudgetName.quick,
    out: Annotated[Path, typer.Option("--out", help="Folder for leaderboard.json/.md and the runs.")] = Path("results"),
    device: Annotated[Device, typer.Option(help="auto falls back to CPU with a message.")] = Device.auto,
    seed: Annotated[int, typer.Option(help="Seed of every run.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Override the epochs of every model (smoke runs).", min=1)] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Keep rows of an existing leaderboard.json for (model, dataset) pairs not run now.")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Train nothing: rebuild the leaderboard from <out>/runs/*/metrics.json.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace finished runs and the leaderboard in --out (else refused).")] = False,
    catalog: CatalogOpt = None,
) -> None:
    """Run the protocol for many models and datasets; write a leaderboard (baselines always included)."""
    from stfcat.engine.errors import EngineError

    try:
        from stfcat.engine.bench import rebuild_board, run_bench

        if rebuild:
            board = rebuild_board(out)
            typer.echo(f"rebuilt {out / 'leaderboard.json'} and {out / 'leaderboard.md'}: {len(board['rows'])} rows")
            return
        board = run_bench(models=models, datasets=datasets or ["demo"], budget=budget.value, out=out,
                          device=device.value, seed=seed, epochs=epochs, catalog=catalog, merge=merge,
                          overwrite=overwrite)
    except EngineError as exc:
        raise fail(f"error: {exc}", 2) from None
    failed = [r for r in board["runs"] if r.get("error")]
    refused = board.get("refused") or []
    typer.echo(f"wrote {out / 'leaderboard.json'} and {out / 'leaderboard.md'}: {len(board['rows'])} rows"
               + (f", {len(failed)} failed run(s) recorded" if failed else "")
               + (f", {len(refused)} stale row(s) computed on other data dropped" if refused else ""))
    if failed:
        raise typer.Exit(1)
