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
    can be built in several sittings (e.g. deep models, then classical ones)."""
    import json

    from .outputs import atomic_write_text, write_json
    from .run import BASELINES, git_commit, run_experiment

    out = Path(out)
    models = list(models) if models else default_models()
    datasets = list(datasets) if datasets else ["demo"]
    if budget not in ("quick", "paper"):
        raise ValueError(f"budget must be 'quick' or 'paper', got {budget!r}")
    from .outputs import refuse_finished_bench

    refuse_finished_bench(out, [out / "runs" / f"{m}-{Path(str(d)).name}" for d in datasets
                                for m in ["delta", *[m for m in models if m not in BASELINES]]],
                          overwrite=overwrite, merge=merge)
    reported: dict[str, Any] = {}
    if (out / "reported.json").is_file():
        reported = json.loads((out / "reported.json").read_text())
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for ds in datasets:
        baselines_done: set[int] = set()
        todo = ["delta", *[m for m in models if m not in BASELINES]]
        for model in todo:
            run_dir = out / "runs" / f"{model}-{Path(str(ds)).name}"
            entry: dict[str, Any] = {"model": model, "dataset": str(ds), "out": str(run_dir)}
            try:
                res = run_experiment(model, ds, epochs=epochs, device=device, seed=seed, out=run_dir,
                                     full_recipe=budget == "paper", catalog=catalog, data_dir=data_dir,
                                     progress=progress, images=False, overwrite=True)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - one failing model must not lose the others
                entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["traceback"] = traceback.format_exc(limit=8)
                runs.append(entry)
                if model not in BASELINES and progress:
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


def _rows_of_run(m: dict[str, Any], reported: dict[str, Any], baselines_done: set[int]) -> list[dict[str, Any]]:
    """Leaderboard rows of one run's metrics.json: the model, plus the trivial baselines the first
    time a case set (one- or two-reference test cases of a dataset) is seen, because one- and
    two-reference methods are scored on different cases and must be compared with the baselines
    of the same cases."""
    from .run import BASELINES

    model = m["model"]
    shown = [model] if model not in BASELINES else []
    n_refs = int(m.get("n_refs") or 1)
    if n_refs not in baselines_done:
        shown = [b for b in BASELINES if b in m["mean"]] + shown
        baselines_done.add(n_refs)
    return [_row(method, m, reported, model_row=method == model) for method in shown]


def rebuild_board(out: Path = Path("results")) -> dict[str, Any]:
    """Rebuild ``leaderboard.json``/``.md`` from the ``metrics.json`` of every run under
    ``out/runs`` (no training), keeping the failed runs the old leaderboard recorded."""
    import json

    from .outputs import atomic_write_text, write_json
    from .run import git_commit

    out = Path(out)
    reported = json.loads((out / "reported.json").read_text()) if (out / "reported.json").is_file() else {}
    old = json.loads((out / "leaderboard.json").read_text()) if (out / "leaderboard.json").is_file() else {}
    metrics = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/metrics.json"))]
    # baselines first (the delta run), then models, per dataset
    metrics.sort(key=lambda m: (m["dataset"], m["model"] != "delta", m["model"]))
    rows: list[dict[str, Any]] = []
    done: dict[str, set[int]] = {}
    for m in metrics:
        rows += _rows_of_run(m, reported, done.setdefault(m["dataset"], set()))
    ok = {(m["model"], m["dataset"]) for m in metrics}
    runs = [{"model": m["model"], "dataset": m["dataset"], "out": str(out / "runs" / f"{m['model']}-{m['dataset']}")}
            for m in metrics]
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


def _row(method: str, m: dict[str, Any], reported: dict[str, Any], *, model_row: bool) -> dict[str, Any]:
    from stfcat.models import model_info

    info = model_info(method)
    rep = (reported.get(method) or {}).get(m["dataset"]) or (reported.get(method) or {}).get(m["dataset_arg"])
    return {
        "model": method,
        "family": info.family,
        "paper": info.paper,
        "dataset": m["dataset"],
        "split": m["split"],
        "n_refs": int(m.get("n_refs") or 1),
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


def leaderboard_markdown(board: dict[str, Any]) -> str:
    lines = [
        "# Leaderboard",
        "",
        f"Generated {board['generated']} (commit {board['commit'] or 'unknown'}), budget `{board['budget']}`, "
        f"seed {board['seed']}. Metrics are means over the test cases; definitions on the conventions page. "
        "\"reported\" is the paper's own number where known (its protocol may differ), otherwise —.",
        "",
    ]
    by_ds: dict[str, list[dict[str, Any]]] = {}
    for r in board["rows"]:
        refs = int(r.get("n_refs") or 1)
        title = f"{r['dataset']}: {'one reference pair' if refs == 1 else 'two reference pairs'}, {r.get('cases', '?')} test case(s)"
        by_ds.setdefault(title, []).append(r)
    head = ["model", "split", *[k.upper() for k in BOARD_METRICS], "params", "train s", "infer s", "commit",
            "reproduced here", "reported in paper (RMSE / SSIM)"]
    for ds, rows in by_ds.items():
        lines += [f"## {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sorted(rows, key=lambda r: (r["family"] != "trivial", r["metrics"].get("rmse") or 9e9)):
            rep = r.get("reported") or {}
            rep_txt = "—" if not rep else f"{fmt(rep.get('rmse'))} / {fmt(rep.get('ssim'))}"
            lines.append("| " + " | ".join([
                r["model"], r["split"], *[fmt(r["metrics"].get(k)) for k in BOARD_METRICS],
                f"{r['params']:,}", fmt(float(r["train_seconds"] or 0.0)), fmt(r["infer_seconds"]),
                (r["commit"] or "—")[:12], "yes", rep_txt,
            ]) + " |")
        lines.append("")
    failed = [x for x in board["runs"] if x.get("error")]
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{x['model']}` on `{x['dataset']}`: {x['error']}" for x in failed] + [""]
    return "\n".join(lines)
