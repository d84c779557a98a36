"""Everything the site shows besides the catalog itself: leaderboard rows from
``results/leaderboard.json``, the registered models, and the repository's prose documents that
the site includes (CONTRIBUTING.md, the engine's CONVENTIONS.md, the data manifest docstring).

All of it is optional: a missing file gives an empty section with a note, never a failed build.
A *malformed* leaderboard is an error naming the file, because silently showing no results would
hide a broken ``stfcat bench`` run.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stfcat

# The columns of `stfcat bench`'s leaderboard (stfcat.engine.bench.BOARD_METRICS), in its order.
METRICS: tuple[str, ...] = ("rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "r2", "edge", "lbp")
HIGHER_IS_BETTER = frozenset({"psnr", "ssim", "cc", "uiqi", "r2"})
ZERO_IS_BEST = frozenset({"edge", "lbp"})  # signed APA errors: the sign says too smooth or too sharp
TRIVIAL_BASELINES: tuple[str, ...] = ("copy-f1", "upsample-c2", "delta")

_PACKAGE_DIR = Path(stfcat.__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent


class SiteError(RuntimeError):
    """The site cannot be built; the message names the file or option at fault."""


@dataclass(frozen=True)
class ResultRow:
    model: str
    dataset: str
    split: str
    metrics: dict[str, float | None]
    params: int | None = None
    train_seconds: float | None = None
    infer_seconds: float | None = None
    commit: str | None = None
    source: str | None = None
    protocol: str | None = None
    device: str | None = None
    cases: int | None = None

    @property
    def reproduced(self) -> bool:
        return (self.source or "").strip().lower() == "reproduced here"


def _first(row: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, dict):  # {"mean": x, "std": y} or per-band dicts
        value = _first(value, "mean", "value", "all")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    num = _number(value)
    return int(num) if num is not None else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _rows_of(data: Any, path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``data`` is a list of rows, or an object holding them under rows/results/entries (its
    other keys, e.g. ``commit`` or ``protocol``, are defaults for every row)."""
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict):
        for key in ("rows", "results", "entries", "leaderboard"):
            if isinstance(data.get(key), list):
                defaults = {k: v for k, v in data.items() if k != key and not isinstance(v, list | dict)}
                return data[key], defaults
    raise SiteError(f"{path}: expected a JSON list of result rows or an object with a 'rows' list")


@dataclass(frozen=True)
class FailedRun:
    model: str
    dataset: str
    error: str


@dataclass
class Leaderboard:
    rows: list[ResultRow] = field(default_factory=list)
    failed: list[FailedRun] = field(default_factory=list)
    generated: str | None = None


def _split_label(raw: dict) -> str:
    """The split, plus the case set: one- and two-reference methods are scored on different test
    cases (bench gives each set its own baseline rows), so they get separate tables."""
    split = _text(raw.get("split")) or "—"
    refs = _int(raw.get("n_refs"))
    if refs in (1, 2):
        return f"{split} ({'one reference pair' if refs == 1 else 'two reference pairs'})"
    return split


def _protocol(raw: dict[str, Any]) -> str | None:
    """``stfcat bench`` writes no protocol string; its budget and seed (board-level defaults
    for every row) say which protocol ran."""
    text = _text(raw.get("protocol"))
    if text:
        return text
    parts = []
    if _text(raw.get("budget")):
        parts.append(f"{_text(raw['budget'])} budget")
    if raw.get("seed") is not None:
        parts.append(f"seed {_text(raw['seed'])}")
    return "stfcat bench, " + ", ".join(parts) if parts else None


def load_board(path: Path | None) -> Leaderboard:
    """The leaderboard ``stfcat bench`` writes (an object with ``rows``, ``runs``, ``commit``,
    ``budget``, ``seed``, ``generated``; see :mod:`stfcat.engine.bench`), or a plain list of rows.
    Empty when ``path`` does not exist. A row's ``reported`` values (the paper's own numbers)
    become a separate row marked "reported in paper"."""
    if path is None or not path.is_file():
        return Leaderboard()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SiteError(f"{path}: not readable JSON ({exc})") from exc
    raw_rows, defaults = _rows_of(data, path)
    rows = []
    for i, raw in enumerate(raw_rows):
        if not isinstance(raw, dict):
            raise SiteError(f"{path}: row {i} is a {type(raw).__name__}, not an object")
        # Board-level values fill what a row leaves out or null (bench writes budget: null
        # on the baseline rows of a run).
        raw = {**defaults, **{k: v for k, v in raw.items() if v is not None}}
        model = _text(_first(raw, "model", "model_id", "method"))
        if model is None:
            raise SiteError(f"{path}: row {i} has no 'model'")
        metrics_src = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else raw
        row = ResultRow(
            model=model,
            dataset=_text(_first(raw, "dataset", "data")) or "—",
            split=_split_label(raw),
            metrics=_metrics(metrics_src),
            params=_int(_first(raw, "params", "parameters", "n_params")),
            train_seconds=_number(_first(raw, "train_seconds", "train_s", "train_time", "train_time_s")),
            infer_seconds=_number(_first(raw, "infer_seconds", "infer_s", "infer_time", "predict_seconds")),
            commit=_text(_first(raw, "commit", "git_commit")),
            source=_text(raw.get("source")),
            protocol=_protocol(raw),
            device=_text(raw.get("device")),
            cases=_int(raw.get("cases")),
        )
        rows.append(row)
        reported = raw.get("reported")
        if isinstance(reported, dict) and any(_number(reported.get(m)) is not None for m in METRICS):
            where = _text(reported.get("source"))
            rows.append(ResultRow(model=model, dataset=row.dataset, split=row.split, metrics=_metrics(reported),
                                  source="reported in paper" + (f" ({where})" if where else "")))
    rows.sort(key=lambda r: (r.dataset, r.split, r.model, r.source or ""))
    failed = []
    runs = data.get("runs") if isinstance(data, dict) else None
    for run in runs if isinstance(runs, list) else []:
        if isinstance(run, dict) and _text(run.get("error")):
            failed.append(FailedRun(_text(run.get("model")) or "—", _text(run.get("dataset")) or "—",
                                    _text(run["error"]) or ""))
    failed.sort(key=lambda f: (f.dataset, f.model, f.error))
    generated = _text(data.get("generated")) if isinstance(data, dict) else None
    return Leaderboard(rows, failed, generated)


def _metrics(src: dict[str, Any]) -> dict[str, float | None]:
    return {m: _number(_first(src, m, m.upper())) for m in METRICS}


def load_leaderboard(path: Path | None) -> list[ResultRow]:
    """Rows of ``path`` (``[]`` when it does not exist). Missing fields become ``None``."""
    return load_board(path).rows


@dataclass(frozen=True)
class ModelRow:
    id: str
    family: str
    paper: str | None
    params: int | None
    n_refs: int | None
    trainable: bool | None
    description: str
    quick_recipe: tuple[str, ...] = ()  # what `stfcat run`'s quick budget changes from the paper's recipe


@dataclass
class Models:
    rows: list[ModelRow] = field(default_factory=list)
    problem: str | None = None

    def get(self, model_id: str | None) -> ModelRow | None:
        return next((m for m in self.rows if m.id == model_id), None)


def collect_models() -> Models:
    """The registered models. Importing the zoo needs torch, so it happens here, lazily; a zoo
    module that fails to import is reported on the models page instead of breaking the site."""
    problem = None
    try:
        from stfcat.models import list_models, model_info
    except ImportError as exc:
        return Models([], f"stfcat.models is not importable: {exc}")
    try:
        infos = [model_info(name) for name in list_models()]
    except Exception as exc:  # noqa: BLE001 - one broken model module must not hide the others
        problem = f"some model modules failed to import: {type(exc).__name__}: {exc}"
        warnings.warn(problem, stacklevel=2)
        from stfcat.models import registry

        infos = [info for _, info in sorted(registry.registered().items())]
    rows = []
    for info in infos:
        rows.append(ModelRow(
            id=info.id, family=info.family, paper=info.paper, params=info.params,
            n_refs=info.n_refs, trainable=info.trainable, description=info.description,
            quick_recipe=tuple(info.recipe.quick_changes()) if info.trainable and info.recipe else (),
        ))
    rows.sort(key=lambda m: (m.family != "trivial", m.id))  # baselines first, as in every table
    return Models(rows, problem)


# --- prose documents --------------------------------------------------------------------------

_MD_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]*)(?:\s+\"[^\"]*\")?\)")


def unlink_relative(markdown: str) -> str:
    """Turn Markdown links that point into the repository (not http(s), not ``#anchor``) into
    their text: the site has no such pages, and ``mkdocs --strict`` would reject them."""

    def fix(m: re.Match[str]) -> str:
        target = m.group(3)
        if target.startswith(("http://", "https://", "#")):
            return m.group(0)
        return m.group(2) if not m.group(1) else ""

    return _MD_LINK.sub(fix, markdown)


def demote_headings(markdown: str, levels: int = 1) -> str:
    """Push every ATX heading down ``levels`` (the including page owns the single H1)."""
    out, fence = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        if not fence and re.match(r"#{1,5} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out) + "\n"


def read_doc(path: Path) -> str | None:
    """A repository Markdown file prepared for inclusion, or None when absent."""
    if not path.is_file():
        return None
    return demote_headings(unlink_relative(path.read_text(encoding="utf-8")))


def contributing_path() -> Path:
    return _REPO_DIR / "CONTRIBUTING.md"


def conventions_path() -> Path:
    return _PACKAGE_DIR / "engine" / "CONVENTIONS.md"


def manifest_module_path() -> Path:
    return _PACKAGE_DIR / "data" / "manifest.py"


def rst_to_markdown(text: str) -> str:
    """The small reStructuredText subset of our module docstrings as Markdown: ``literal``,
    ``Title`` + underline headings, ``::`` literal blocks and definition-list items."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"(-{3,}|={3,}|~{3,})", nxt.strip()) and len(nxt.strip()) >= len(line.strip()):
            out += [f"### {line.strip()}", ""]
            i += 2
            continue
        if line.rstrip().endswith("::"):
            head = line.rstrip()[:-2].rstrip()
            if head:
                out.append(_inline_rst(head) + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            out += ["", "```text", *[b[indent:] for b in block], "```", ""]
            continue
        if re.fullmatch(r"``[^`]+``(\s*/\s*``[^`]+``)*", line.strip()) and nxt.startswith("    "):
            term = _inline_rst(line.strip())
            i += 1
            body = []
            while i < len(lines) and lines[i].startswith("    "):
                body.append(lines[i].strip())
                i += 1
            out.append(f"- {term}: {_inline_rst(' '.join(body))}")
            continue
        out.append(_inline_rst(line))
        i += 1
    return "\n".join(out).strip() + "\n"


def _inline_rst(text: str) -> str:
    text = re.sub(r":(?:meth|func|class|mod|attr):`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def manifest_doc() -> str | None:
    """The data-manifest documentation (the docstring of :mod:`stfcat.data.manifest`), read
    with :mod:`ast` so the data package is not imported."""
    path = manifest_module_path()
    if not path.is_file():
        return None
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    return rst_to_markdown(doc) if doc else None
