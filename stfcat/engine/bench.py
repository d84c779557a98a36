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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run every model on every dataset; write ``leaderboard.json`` and ``leaderboard.md``.

    With ``merge`` the rows and runs of an existing ``leaderboard.json`` in ``out`` are kept
    unless this call produces a row (or run) for the same (model, dataset), so a leaderboard
    can be built in several sittings (e.g. deep models, then classical ones). Rows are only
    merged when computed on the same data: an old row whose dataset fingerprint differs from the
    dataset's fingerprint now (or that has none) is stale; its model is re-run on that dataset in
    this call, and a stale row that could not be re-run is dropped (listed in ``refused``)."""
    import json

    from .outputs import atomic_write_text, write_json
    from .run import git_commit, run_experiment

    out = Path(out)
    explicit = bool(models)
    models = list(models) if models else default_models()
    datasets = list(datasets) if datasets else ["demo"]
    if budget not in ("quick", "paper"):
        raise ValueError(f"budget must be 'quick' or 'paper', got {budget!r}")
    from .outputs import refuse_finished_bench

    refuse_finished_bench(out, [out / "runs" / f"{m}-{Path(str(d)).name}{suffix}" for d in datasets
                                for m in _bench_order(models) for suffix in ("", "-spatial")],
                          overwrite=overwrite, merge=merge)
    reported: dict[str, Any] = {}
    if (out / "reported.json").is_file():
        reported = json.loads((out / "reported.json").read_text())
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    old = json.loads((out / "leaderboard.json").read_text()) if merge and (out / "leaderboard.json").is_file() else None
    fingerprints = _Fingerprints(catalog, data_dir)
    stale = _stale_models(old, fingerprints) if old else {}
    datasets += [ds for ds in stale if ds not in datasets]
    for ds in datasets:
        baselines_done: set[Any] = set()
        todo = _bench_order(list(dict.fromkeys([*models, *stale.get(ds, [])])))
        if not explicit:  # every model by default: only those whose task reads this dataset
            todo = _models_for_dataset(todo, ds, catalog=catalog, data_dir=data_dir)
        kinds_of = _split_kinds_of(ds, catalog, data_dir)
        for model, kind in ((m, k) for m in todo for k in kinds_of(m)):
            run_dir = out / "runs" / (f"{model}-{Path(str(ds)).name}" + ("-spatial" if kind == "spatial" else ""))
            entry: dict[str, Any] = {"model": model, "dataset": str(ds), "out": str(run_dir)}
            if kind:
                entry["split_kind"] = kind
            try:
                res = run_experiment(model, ds, epochs=epochs, device=device, seed=seed, out=run_dir,
                                     full_recipe=budget == "paper", catalog=catalog, data_dir=data_dir,
                                     progress=progress, images=False, split=kind, overwrite=True)
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
    refused: list[dict[str, Any]] = []
    if old is not None:
        rows, runs = _merge(old.get("rows", []), rows), _merge(old.get("runs", []), runs)
        rows, refused = _same_data(rows, fingerprints)
        for r in refused if progress else []:
            print(f"bench: dropped {r['model']} on {r['dataset']} ({r['split']}): {r['reason']}")
    board = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "budget": budget,
        "seed": seed,
        "metrics": list(BOARD_METRICS),
        "rows": rows,
        "runs": runs,
    }
    if refused:
        board["refused"] = refused
    write_json(out / "leaderboard.json", board)
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(board))
    return board


class _Fingerprints:
    """Dataset fingerprints now (:mod:`stfcat.data.fingerprint`), by the row's dataset argument;
    None when the dataset cannot be opened here."""

    def __init__(self, catalog: Path | None, data_dir: Path | None) -> None:
        self.catalog, self.data_dir, self._memo = catalog, data_dir, {}

    def __call__(self, row: dict[str, Any]) -> str | None:
        arg = row.get("dataset_arg") or row.get("dataset")
        if arg not in self._memo:
            from stfcat.data.fingerprint import dataset_fingerprint

            from .errors import EngineError
            from .run import open_series

            try:
                self._memo[arg] = dataset_fingerprint(open_series(arg, catalog=self.catalog, data_dir=self.data_dir))
            except EngineError:
                self._memo[arg] = None
        return self._memo[arg]


def _stale_models(old: dict[str, Any], fingerprint: _Fingerprints) -> dict[str, list[str]]:
    """``dataset argument -> models to re-run``: the old rows computed on other data than the
    dataset holds now. A stale baseline row is re-made by the delta run (one reference) or by
    re-running a two-reference model of the same dataset."""
    from stfcat.models import model_info


    out: dict[str, list[str]] = {}
    rows = old.get("rows", [])
    for r in rows:
        now = fingerprint(r)
        if now is None or r.get("fingerprint") == now:
            continue
        ds = r.get("dataset_arg") or r["dataset"]
        todo = out.setdefault(ds, [])
        if not _is_baseline(r["model"]):
            todo.append(r["model"])
        elif int(r.get("n_refs") or 1) == 2:
            two = [x["model"] for x in rows if x["dataset"] == r["dataset"] and not _is_baseline(x["model"])
                   and int(x.get("n_refs") or 1) == 2]
            todo += two[:1]
        else:
            todo.append("delta")
    for ds, todo in out.items():
        out[ds] = [m for m in dict.fromkeys(todo) if _known(m, model_info)]
    return out


def _known(model: str, model_info) -> bool:
    try:
        model_info(model)
        return True
    except Exception:  # noqa: BLE001 - a model that no longer exists is not re-run
        return False


def _same_data(rows: list[dict[str, Any]], fingerprint: _Fingerprints) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows computed on the data each dataset holds now, and the refused others (with a reason)."""
    keep, refused = [], []
    for r in rows:
        now = fingerprint(r)
        if now is not None and r.get("fingerprint") != now:
            why = ("no data fingerprint recorded" if not r.get("fingerprint") else
                   f"computed on other data (fingerprint {str(r['fingerprint'])[:12]}, now {now[:12]})")
            refused.append({"model": r["model"], "dataset": r["dataset"], "split": r.get("split"),
                            "n_refs": r.get("n_refs"), "reason": why + "; its re-run failed or was not possible"})
            continue
        keep.append(r)
    return keep, refused


def _split_kinds_of(ds: Any, catalog: Path | None, data_dir: Path | None):
    """``model -> [split kinds to run]``: temporal and/or spatial, as the dataset's dates and its
    declared spatial split allow (:func:`stfcat.data.splits.available_splits`); ``[None]`` (the
    run's default, which then records why it cannot run) when neither or the dataset is unreadable."""
    from stfcat.data.splits import available_splits
    from stfcat.models import model_info

    from .errors import EngineError
    from .run import open_series

    try:
        series = open_series(ds, catalog=catalog, data_dir=data_dir)
    except EngineError:
        return lambda model: [None]

    def kinds(model: str) -> list[str | None]:
        try:
            info = model_info(model)
        except Exception:  # noqa: BLE001 - an unknown model id is recorded by its run
            return [None]
        if info.task != "fusion":  # split kinds are a fusion notion; other tasks have their own split
            return [None]
        return list(available_splits(series, info.n_refs, trainable=info.trainable)) or [None]

    return kinds


def _split_of(e: dict[str, Any]) -> str:
    """A row's / run's split label: "test" (temporal) or "spatial split"."""
    if e.get("split_kind") == "spatial" or e.get("split") == "spatial split":
        return "spatial split"
    return "test"


def _key(e: dict[str, Any]) -> tuple[Any, ...]:
    return e.get("model"), e.get("dataset"), e.get("n_refs"), _split_of(e)


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
    found = [(p.parent, json.loads(p.read_text())) for p in sorted((out / "runs").glob("*/metrics.json"))]
    # baselines first (the delta run), then models, per dataset
    found.sort(key=lambda pm: (pm[1]["dataset"], not _is_baseline(pm[1]["model"]), pm[1]["model"]))
    metrics = [m for _, m in found]
    by_data: dict[str, dict[str, list[str]]] = {}
    for d, m in found:
        by_data.setdefault(m["dataset"], {}).setdefault(str(m.get("data_fingerprint")), []).append(d.name)
    mixed = {ds: fps for ds, fps in by_data.items() if len(fps) > 1}
    if mixed:
        from .errors import EngineError

        ds, fps = next(iter(mixed.items()))
        raise EngineError(f"{out / 'runs'}: runs on {ds!r} were computed on different data: "
                          + "; ".join(f"fingerprint {fp[:12]}: {', '.join(names)}" for fp, names in fps.items())
                          + " (re-run the stale ones with `stfcat bench --merge`)")
    rows: list[dict[str, Any]] = []
    done: dict[str, set[Any]] = {}
    for m in metrics:
        rows += _rows_of_run(m, reported, done.setdefault(m["dataset"], set()))
    ok = {(m["model"], m["dataset"]) for m in metrics}
    runs = [{"model": m["model"], "dataset": m["dataset"], "out": str(d), "split_kind": m.get("split_kind", "temporal")}
            for d, m in found]
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
        "dataset_arg": m.get("dataset_arg"),
        "fingerprint": m.get("data_fingerprint"),
        "split": m["split"],
        "n_refs": int(m["n_refs"]) if m.get("n_refs") else (1 if m.get("task", "fusion") == "fusion" else None),
        "cases": len(m["cases"]),
        "metrics": m["mean"][method],
        "val_metrics": ((m.get("val") or {}).get("mean") or {}).get(method),  # validation, reported apart
        "val_cases": len((m.get("val") or {}).get("cases") or []),
        # the same model with its untrained weights on the same test cases (trainable models)
        "untrained_metrics": ((m.get("untrained") or {}).get("mean") if model_row else None),
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
        "\"reported\" is the paper's own number where known (its protocol may differ), otherwise —. "
        "\"untrained\" is the same network with its seeded initial weights on the same test cases: "
        "training must move it.",
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
                "reproduced here", f"reported in paper ({' / '.join(k.upper() for k in task.reported_metrics)})",
                f"validation {task.primary_metric.upper()}", f"untrained {task.primary_metric.upper()}"]
        lines += [f"## {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sorted(rows, key=lambda r: (r["family"] != "trivial", r["metrics"].get(task.primary_metric) or 9e9)):
            rep = r.get("reported") or {}
            rep_txt = "—" if not rep else " / ".join(fmt(rep.get(k)) for k in task.reported_metrics)
            lines.append("| " + " | ".join([
                r["model"], r["split"], *[fmt(r["metrics"].get(k)) for k in cols],
                f"{r['params']:,}", fmt(float(r["train_seconds"] or 0.0)), fmt(r["infer_seconds"]),
                (r["commit"] or "—")[:12], "yes", rep_txt, fmt((r.get("val_metrics") or {}).get(task.primary_metric)),
                fmt((r.get("untrained_metrics") or {}).get(task.primary_metric)),
            ]) + " |")
        lines.append("")
    failed = [x for x in board["runs"] if x.get("error")]
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{x['model']}` on `{x['dataset']}`: {x['error']}" for x in failed] + [""]
    return "\n".join(lines)
