"""Result tables (rich for the terminal, Markdown for the leaderboard)."""

from __future__ import annotations

from typing import Any

TABLE_METRICS = ("rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "r2", "edge", "lbp")
ARROWS = {"rmse": "↓", "mae": "↓", "psnr": "↑", "ssim": "↑", "sam": "↓", "ergas": "↓", "cc": "↑",
          "uiqi": "↑", "r2": "↑", "edge": "→0", "lbp": "→0", "ad": "→0"}


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) == float("inf"):
            return "inf"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def rich_table(result: dict[str, Any]):
    """Mean metrics of the model and the trivial baselines of one run: one row per metric, one
    column per method (fits an 80-column terminal)."""
    from rich.table import Table

    t = Table(title=f"{result['model']} on {result['dataset']} ({result['split']}, {len(result['cases'])} case(s), "
                    f"mean over cases)")
    t.add_column("metric", style="bold", no_wrap=True)
    mean = dict(result["mean"])
    untrained = (result.get("untrained") or {}).get("mean")
    methods = list(mean)
    if untrained:  # the same model before training, beside the trained one
        methods.insert(methods.index(result["model"]) + 1, "untrained")
        mean["untrained"] = untrained
    for method in methods:
        t.add_column(method, justify="right", no_wrap=True,
                     style="bold cyan" if method == result["model"] else None)
    for m in _table_metrics(result):
        t.add_row(f"{m.upper()} {ARROWS.get(m.split('_')[0], '')}".rstrip(),
                  *(fmt(mean[k].get(m)) for k in methods))
    return t


def _table_metrics(result: dict[str, Any]) -> tuple[str, ...]:
    """The fusion metrics, or the leaderboard columns of the run's task."""
    task = result.get("task", "fusion")
    if task == "fusion":
        return TABLE_METRICS
    from stfcat.tasks import get_task

    return get_task(task).board_columns
