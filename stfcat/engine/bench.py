"""``stfcat bench``: the protocol for many models x datasets, into one leaderboard.

Every (model, dataset) run is isolated: an exception is recorded in the leaderboard and the bench
goes on. The trivial baselines are scored once per case set of a dataset (one-reference and
two-reference methods are tested on different cases, so each set gets its own baseline rows).
Values reported in papers can be put beside ours through ``<out>/reported.json``::

    {"<model>": {"<dataset>": {"rmse": 0.0123, "ssim": 0.91, "source": "Table 3"}}}

Missing values are shown as "—".
"""

from __future__ import annotations

import datetime as _dt
import traceback
from pathlib import Path
from typing import Any

from .report import fmt

BOARD_METRICS = ("rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "r2", "edge", "lbp")


def default_models() -> list[str]:
    from stfcat.models import list_models, model_info

    return [m for m in list_models() if model_info(m).family != "trivial"]


def run_bench(
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    *,
    budget: str = "quick",
    out: Path = Path("results"),
    device: str = "auto",
    seed: int = 0,
    epochs: int | None = None,
    catalog: Path | None = None,
    data_dir: Path | None = None,
    progress: bool = True,
    merge: bool = False,
) -> dict[str, Any]:
    """Run every model on every dataset; write ``leaderboard.json`` and ``leaderboard.md``.

    With ``merge`` the rows and runs of an existing ``leaderboard.json`` in ``out`` are kept
    unless this call produces a row (or run) for the same (model, dataset), so a leaderboard
    can be built in several sittings (e.g. deep models, then classical ones)."""
    import json

    from .outputs import atomic_write_text, write_json
    from .run import git_commit, run_experiment

    out = Path(out)
    explicit = bool(models)
    models = list(models) if models else default_models()
    datasets = list(datasets) if datasets else ["demo"]
    if budget not in ("quick", "paper"):
        raise ValueError(f"budget must be 'quick' or 'paper', got {budget!r}")
    reported: dict[str, Any] = {}
    if (out / "reported.json").is_file():
        reported = json.loads((out / "reported.json").read_text())
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for ds in datasets:
        baselines_done: set[str] = set()
        todo = _bench_order(models)
        if not explicit:  # every model by default: only those whose task reads this dataset
            todo = _models_for_dataset(todo, ds, catalog=catalog, data_dir=data_dir)
        for model in todo:
            run_dir = out / "runs" / f"{model}-{Path(str(ds)).name}"
            entry: dict[str, Any] = {"model": model, "dataset": str(ds), "out": str(run_dir)}
            try:
                res = run_experiment(model, ds, epochs=epochs, device=device, seed=seed, out=run_dir,
                                     full_recipe=budget == "paper", catalog=catalog, data_dir=data_dir,
                                     progress=progress, images=False)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - one failing model must not lose the others
                entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["traceback"] = traceback.format_exc(limit=8)
                runs.append(entry)
                if not _is_baseline(model) and progress:
                    print(f"bench: {model} on {ds} failed: {entry['error']}")
                continue
            runs.append(entry)
            rows += _rows_of_run(res.metrics, reported, baselines_done)
    if merge and (out / "leaderboard.json").is_file():
        old = json.loads((out / "leaderboard.json").read_text())
        rows, runs = _merge(old.get("rows", []), rows), _merge(old.get("runs", []), runs)
    board = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "budget": budget,
        "seed": seed,
        "metrics": list(BOARD_METRICS),
        "rows": rows,
        "runs": runs,
    }
    write_json(out / "leaderboard.json", board)
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(board))
    return board


def _key(e: dict[str, Any]) -> tuple[Any, ...]:
    return e.get("model"), e.get("dataset"), e.get("n_refs")


def _merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Old entries whose (model, dataset, n_refs) is not in ``new``, then ``new``."""
    done = {_key(e) for e in new}
    return [e for e in old if _key(e) not in done] + new


def _task_of(model: str):
    from stfcat.models import model_info
    from stfcat.tasks import get_task

    return get_task(model_info(model).task)


def _is_baseline(model: str) -> bool:
    try:
        return model in _task_of(model).baselines
    except Exception:  # noqa: BLE001 - an unknown id is reported by its run, not here
        return False


def _bench_order(models: list[str]) -> list[str]:
    """The reference baseline of each task among ``models`` first (its run scores every baseline
    of the task), then the models that are not baselines."""
    first: list[str] = []
    for m in models:
        try:
            ref = _task_of(m).reference_baseline
        except Exception:  # noqa: BLE001 - an unknown id is reported by its run
            continue
        if ref not in first:
            first.append(ref)
    if not first:
        first = ["delta"]
    return [*first, *[m for m in models if not _is_baseline(m)]]


def _models_for_dataset(models: list[str], ds: str, *, catalog, data_dir) -> list[str]:
    """``models`` less those whose task cannot open ``ds`` while another one's can (a station
    series is no image pair series). When no task opens it, all stay, so each run records why."""
    from stfcat.tasks import TaskError

    opens: dict[str, bool] = {}
    for m in models:
        task = _task_of(m)
        if task.name not in opens:
            try:
                task.open(ds, catalog=catalog, data_dir=data_dir)
                opens[task.name] = True
            except TaskError:
                opens[task.name] = False
    if not any(opens.values()):
        return models
    return [m for m in models if opens[_task_of(m).name]]


def _rows_of_run(m: dict[str, Any], reported: dict[str, Any], baselines_done: set[str]) -> list[dict[str, Any]]:
    """Leaderboard rows of one run's metrics.json: the model, plus the trivial baselines the first
    time a case set (the task's :meth:`~stfcat.tasks.Task.board_group`, e.g. one- or
    two-reference test cases of a dataset) is seen, because methods scored on different cases
    must be compared with the baselines of the same cases."""
    from stfcat.tasks import get_task

    task = get_task(m.get("task", "fusion"))
    model = m["model"]
    shown = [model] if model not in task.baselines else []
    group = task.board_group(m)
    if group not in baselines_done:
        shown = [b for b in task.baselines if b in m["mean"]] + shown
        baselines_done.add(group)
    return [_row(method, m, reported, model_row=method == model, group=group) for method in shown]


def rebuild_board(out: Path = Path("results")) -> dict[str, Any]:
    """Rebuild ``leaderboard.json``/``.md`` from the ``metrics.json`` of every run under
    ``out/runs`` (no training), keeping the failed runs the old leaderboard recorded."""
    import json

    from .outputs import atomic_write_text, write_json
    from .run import git_commit

    out = Path(out)
    reported = json.loads((out / "reported.json").read_text()) if (out / "reported.json").is_file() else {}
    old = json.loads((out / "leaderboard.json").read_text()) if (out / "leaderboard.json").is_file() else {}
    metrics = []
    for p in sorted((out / "runs").glob("*/metrics.json")):
        m = json.loads(p.read_text())
        m["_dir"] = str(p.parent)  # the folder is named after the dataset argument, not its name
        metrics.append(m)
    # baselines first (the reference baseline's run), then models, per dataset
    metrics.sort(key=lambda m: (m["dataset"], not _is_baseline(m["model"]), m["model"]))
    rows: list[dict[str, Any]] = []
    done: dict[str, set[str]] = {}
    for m in metrics:
        rows += _rows_of_run(m, reported, done.setdefault(m["dataset"], set()))
    ok = {(m["model"], m["dataset"]) for m in metrics}
    runs = [{"model": m["model"], "dataset": m["dataset"], "out": m["_dir"]} for m in metrics]
    runs += [r for r in old.get("runs", []) if r.get("error") and (r["model"], Path(r["dataset"]).name) not in ok]
    board = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "budget": old.get("budget", "quick"),
        "seed": old.get("seed", 0),
        "metrics": list(BOARD_METRICS),
        "rows": rows,
        "runs": runs,
    }
    write_json(out / "leaderboard.json", board)
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(board))
    return board


def _row(method: str, m: dict[str, Any], reported: dict[str, Any], *, model_row: bool, group: str) -> dict[str, Any]:
    from stfcat.models import model_info

    info = model_info(method)
    rep = (reported.get(method) or {}).get(m["dataset"]) or (reported.get(method) or {}).get(m["dataset_arg"])
    return {
        "model": method,
        "task": m.get("task", "fusion"),
        "group": group,
        "family": info.family,
        "paper": info.paper,
        "dataset": m["dataset"],
        "split": m["split"],
        "n_refs": int(m["n_refs"]) if m.get("n_refs") else (1 if m.get("task", "fusion") == "fusion" else None),
        "cases": len(m["cases"]),
        "metrics": m["mean"][method],
        "params": m["params"] if model_row else 0,
        "train_seconds": m["train_seconds"] if model_row else 0.0,
        "infer_seconds": m["infer_seconds_by_method"].get(method),
        "device": m["device"],
        "commit": m["git_commit"],
        "budget": (m.get("budget") or {}).get("which"),
        "source": "reproduced here",
        "reported": rep,
    }


def _fusion_title(r: dict[str, Any]) -> str:
    """Table title of a row written before rows recorded their group (fusion only then)."""
    refs = int(r.get("n_refs") or 1)
    return (f"{r['dataset']}: {'one reference pair' if refs == 1 else 'two reference pairs'}, "
            f"{r.get('cases', '?')} test case(s)")


def leaderboard_markdown(board: dict[str, Any]) -> str:
    lines = [
        "# Leaderboard",
        "",
        f"Generated {board['generated']} (commit {board['commit'] or 'unknown'}), budget `{board['budget']}`, "
        f"seed {board['seed']}. Metrics are means over the test cases; definitions on the conventions page. "
        "\"reported\" is the paper's own number where known (its protocol may differ), otherwise —.",
        "",
    ]
    from stfcat.tasks import get_task

    by_ds: dict[str, list[dict[str, Any]]] = {}
    for r in board["rows"]:
        by_ds.setdefault(r.get("group") or _fusion_title(r), []).append(r)
    for ds, rows in by_ds.items():
        task = get_task(rows[0].get("task", "fusion"))
        cols = task.board_columns
        head = ["model", "split", *[k.upper() for k in cols], "params", "train s", "infer s", "commit",
                "reproduced here", f"reported in paper ({' / '.join(k.upper() for k in task.reported_metrics)})"]
        lines += [f"## {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sorted(rows, key=lambda r: (r["family"] != "trivial", r["metrics"].get(task.primary_metric) or 9e9)):
            rep = r.get("reported") or {}
            rep_txt = "—" if not rep else " / ".join(fmt(rep.get(k)) for k in task.reported_metrics)
            lines.append("| " + " | ".join([
                r["model"], r["split"], *[fmt(r["metrics"].get(k)) for k in cols],
                f"{r['params']:,}", fmt(float(r["train_seconds"] or 0.0)), fmt(r["infer_seconds"]),
                (r["commit"] or "—")[:12], "yes", rep_txt,
            ]) + " |")
        lines.append("")
    failed = [x for x in board["runs"] if x.get("error")]
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{x['model']}` on `{x['dataset']}`: {x['error']}" for x in failed] + [""]
    return "\n".join(lines)
