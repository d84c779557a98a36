"""Per-run material for the model sections of the site: the quick-look images and the untrained
against trained scores of each run folder that ``results/leaderboard.json`` lists under ``runs``.

Everything is optional. A run folder that is absent (the leaderboard was copied without them), a
``metrics.json`` without an ``untrained`` block (models that do not train, or results older than
issue #12.3) or without quick-looks (``results/`` keeps ``metrics.json`` only in git) simply gives
less to show. A ``metrics.json`` that is not JSON is skipped with a warning, not a failed build.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RunSummary:
    model: str
    dataset: str
    label: str  # the run folder's name, made safe for a URL path
    folder: Path | None
    quicklooks: list[Path] = field(default_factory=list)
    trained: dict[str, float] = field(default_factory=dict)
    untrained: dict[str, float] | None = None

    def looks(self) -> list[tuple[Path, str, str]]:
        """``(source png, path under the docs folder, caption)`` of each quick-look image; file names
        like ``2021-08-08+2021-10-11->2021-09-09.png`` are made safe for a URL."""
        return [(p, f"assets/runs/{self.label}/{SAFE_NAME.sub('-', p.stem)}.png", p.stem) for p in self.quicklooks]


def _numbers(d: object) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _folder(board: Path, out: str) -> Path | None:
    p = Path(out)
    for cand in ([p] if p.is_absolute() else [board.parent.parent / p, board.parent / "runs" / p.name]):
        if cand.is_dir():
            return cand
    return None


def _summary(board: Path, run: dict) -> RunSummary | None:
    model, dataset, out = run.get("model"), run.get("dataset"), run.get("out")
    if not (isinstance(model, str) and isinstance(dataset, str) and isinstance(out, str)) or run.get("error"):
        return None
    folder = _folder(board, out)
    label = SAFE_NAME.sub("-", Path(out).name) or f"{model}-{dataset}"
    if folder is None:
        return RunSummary(model, dataset, label, None)
    trained, untrained = {}, None
    metrics = folder / "metrics.json"
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.warn(f"{metrics}: not readable JSON ({exc}); its run is shown without scores", stacklevel=2)
            data = {}
        if isinstance(data, dict):
            mean = data.get("mean")
            trained = _numbers(mean.get(model)) if isinstance(mean, dict) else {}
            block = data.get("untrained")
            if isinstance(block, dict):
                untrained = _numbers(block.get("mean")) or None
    looks = sorted(p for p in (folder / "quicklook").glob("*.png") if p.is_file()) if (folder / "quicklook").is_dir() else []
    return RunSummary(model, dataset, label, folder, looks, trained, untrained)


def load_runs(board: Path | None) -> list[RunSummary]:
    """The successful runs of the leaderboard file ``board`` (``[]`` without one)."""
    if board is None or not board.is_file():
        return []
    try:
        data = json.loads(board.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []  # load_board reports a malformed leaderboard
    runs = data.get("runs") if isinstance(data, dict) else None
    out = [s for r in (runs if isinstance(runs, list) else []) if isinstance(r, dict) and (s := _summary(board, r))]
    return sorted(out, key=lambda s: (s.model, s.dataset, s.label))


def runs_of(model: str, runs: list[RunSummary]) -> list[RunSummary]:
    """Runs of ``model`` and of its variants (``<model>-1ref``, ...)."""
    return [r for r in runs if r.model == model or r.model.startswith(f"{model}-")]
