"""Catalog commands: validate, list, show, search, cite, add.

Nothing heavy at module level (``stfcat --help`` must stay instant): the catalog, bibtexparser,
rich and the model zoo are imported inside the commands.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from stfcat.cli.main import app
from stfcat.cli.options import CatalogOpt, JsonOpt, fail, open_catalog


class ListWhat(str, Enum):
    papers = "papers"
    datasets = "datasets"
    models = "models"


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def _write_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command()
def validate(catalog: CatalogOpt = None) -> None:
    """Check every catalog file (schema, ids, DOIs, URLs, references, registered models)."""
    from stfcat.catalog import validate_catalog

    cat, problems = validate_catalog(catalog)
    for p in problems:
        typer.echo(str(p), err=True)
    if problems:
        raise fail(f"catalog invalid: {len(problems)} problem(s)")
    typer.echo(f"catalog OK: {cat.summary()}")


def _model_rows() -> list[dict]:
    from stfcat.models import RegistryError, list_models, model_info

    try:
        ids = list_models()
    except RegistryError as exc:
        raise fail(str(exc)) from None
    rows = []
    for mid in ids:
        info = model_info(mid)
        rows.append({"id": info.id, "task": info.task, "family": info.family, "paper": info.paper, "n_refs": info.n_refs,
                     "trainable": info.trainable, "params": info.params, "description": info.description,
                     "parent": info.parent, "fixed": dict(info.fixed)})
    return rows


@app.command("list")
def list_cmd(
    what: Annotated[ListWhat, typer.Argument(help="papers, datasets or models")],
    category: Annotated[str | None, typer.Option(help="paper category (cnn, gan, ...) or model family")] = None,
    year: Annotated[int | None, typer.Option(help="papers of this year")] = None,
    task: Annotated[str | None, typer.Option(help="papers of this task (reflectance, ...); models of this task (fusion, timeseries)")] = None,
    has_code: Annotated[bool, typer.Option("--has-code", help="papers with official code")] = False,
    implemented: Annotated[bool, typer.Option("--implemented", help="papers runnable in stfcat")] = False,
    json_out: JsonOpt = False,
    catalog: CatalogOpt = None,
) -> None:
    """List papers, datasets or registered models (a table, or JSON with --json)."""
    from stfcat.schemas import Category, Task

    if what is ListWhat.models:
        if year or has_code or implemented:
            raise fail("list models: only --category (the model family) and --task (fusion, timeseries, ...) apply")
        if task is not None:
            from stfcat.tasks import list_tasks

            if task not in list_tasks():
                raise fail(_choice_error("--task", task, list_tasks()))
        rows = [r for r in _model_rows()
                if (category is None or r["family"] == category) and (task is None or r["task"] == task)]
        if json_out:
            typer.echo(json.dumps(rows, indent=2))
            return
        _table(["id", "task", "family", "paper", "parent", "n_refs", "trainable", "params"], rows, f"{len(rows)} models")
        return

    cat = open_catalog(catalog)
    if what is ListWhat.datasets:
        if category or year or task or has_code or implemented:
            raise fail("list datasets takes no --category/--year/--task/--has-code/--implemented filter")
        items = sorted(cat.datasets.values(), key=lambda d: d.id)
        if json_out:
            typer.echo(json.dumps([d.model_dump(mode="json") for d in items], indent=2, ensure_ascii=False))
            return
        rows = [{"id": d.id, "abbr": d.abbreviation, "fine": d.fine.name,
                 "coarse": d.coarse.name if d.coarse else "-", "region": d.region, "access": d.access.kind}
                for d in items]
        _table(["id", "abbr", "fine", "coarse", "region", "access"], rows, f"{len(rows)} datasets")
        return

    if category is not None and category not in {c.value for c in Category}:
        raise fail(_choice_error("--category", category, [c.value for c in Category]))
    if task is not None and task not in {t.value for t in Task}:
        raise fail(_choice_error("--task", task, [t.value for t in Task]))
    papers = sorted(cat.papers.values(), key=lambda p: (p.year, p.id))
    papers = [p for p in papers
              if (category is None or p.category.value == category)
              and (year is None or p.year == year)
              and (task is None or p.task.value == task)
              and (not has_code or p.code_url)
              and (not implemented or p.implementation.model)]
    if json_out:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in papers], indent=2, ensure_ascii=False))
        return
    rows = [{"id": p.id, "name": p.short_name, "year": p.year, "venue": p.venue_abbr,
             "category": p.category.value, "code": "yes" if p.code_url else "-",
             "model": p.implementation.model or "-"} for p in papers]
    _table(["id", "name", "year", "venue", "category", "code", "model"], rows, f"{len(rows)} papers")


def _choice_error(option: str, value: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{option}: {value!r} is not one of {', '.join(choices)}.{hint}"


def _table(columns: list[str], rows: list[dict], caption: str) -> None:
    from rich.table import Table

    table = Table(*columns, caption=caption)
    for r in rows:
        table.add_row(*("-" if r[c] is None else str(r[c]) for c in columns))
    _console().print(table)


def _get(cat, item_id: str):
    from stfcat.catalog import UnknownIdError

    try:
        return cat.get(item_id)
    except UnknownIdError as exc:
        raise fail(str(exc)) from None


def how_to_get(dataset) -> list[str]:
    """Lines telling how to obtain ``dataset``."""
    acc = dataset.access
    if acc.kind == "direct":
        size = sum(f.size for f in acc.files)
        return [f"stfcat fetch {dataset.id}    ({len(acc.files)} file(s), {size / 1e6:.1f} MB, sha256-checked)"]
    if acc.kind == "mirror":
        m = acc.mirror
        return [f"stfcat fetch {dataset.id}    ({len(m.files)} file(s) from github.com/{m.repository} at commit "
                f"{m.commit[:10]}, git-blob-hash-checked)"]
    if acc.kind == "embedded":
        return [f"built in: generated on first use (stfcat fetch {dataset.id} writes it to the data folder)"]
    if acc.kind == "manual":
        text = " ".join(acc.instructions.split())
        return [text] if "stfcat fetch" in text else [text, f"then: stfcat fetch {dataset.id} --from ARCHIVE"]
    return [f"catalog-only, see {dataset.landing_page}"]


def how_to_run(paper, cat) -> list[str]:
    """Commands that run ``paper``'s implementation: on the offline demo, then on the paper's
    own datasets that stfcat can get."""
    model = paper.implementation.model
    lines = [f"stfcat run {model}    (demo series, offline)"]
    for did in paper.datasets:
        ds = cat.datasets.get(did)
        if ds is not None and ds.access.kind != "external" and did != "demo":
            lines.append(f"stfcat fetch {did} && stfcat run {model} --dataset {did}")
    return lines


@app.command()
def show(
    item_id: Annotated[str, typer.Argument(metavar="ID", help="paper or dataset id")],
    json_out: JsonOpt = False,
    catalog: CatalogOpt = None,
) -> None:
    """Everything about one paper or dataset: facts, BibTeX, how to run or fetch it."""
    from stfcat.bibtex import entries_for, to_bibtex
    from stfcat.schemas import Paper

    cat = open_catalog(catalog)
    item = _get(cat, item_id)
    bib = to_bibtex(entries_for([item], cat.papers))
    if isinstance(item, Paper):
        action = how_to_run(item, cat) if item.implementation.model else [_not_runnable(item.implementation.reason)]
        used = item.datasets
    else:
        action = how_to_get(item)
        used = sorted(set(item.used_by) | {p.id for p in cat.papers.values() if item.id in p.datasets})
    if json_out:
        typer.echo(json.dumps({"kind": "paper" if isinstance(item, Paper) else "dataset",
                               **item.model_dump(mode="json"), "bibtex_entries": bib,
                               "how_to": action}, indent=2, ensure_ascii=False))
        return
    from rich.markup import escape
    from rich.table import Table

    con = _console()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    notes: list[str] = []
    for key, value in item.model_dump(mode="json", exclude_none=True).items():
        if key in ("bibtex", "summary") or value in ([], {}):
            continue
        if key == "implementation":
            # the deviation notes are paragraphs: listed below the table, not squeezed into a cell
            notes = value.pop("notes", [])
        table.add_row(key, escape(_fmt(value)))
    con.print(table)
    if item.summary:
        con.print(f"\n[bold]summary[/bold]\n{escape(item.summary)}")
    if notes:
        con.print("\n[bold]implementation notes[/bold] (deviations from the paper / official code)")
        for note in notes:
            con.print(f"  - {escape(note)}")
    if isinstance(item, Paper):
        con.print(f"\n[bold]datasets[/bold]: {', '.join(used) or '-'}")
        con.print("\n[bold]run[/bold]")
    else:
        con.print(f"\n[bold]used by[/bold]: {', '.join(used) or '-'}")
        con.print("\n[bold]get the data[/bold]")
    for line in action:
        con.print("  " + escape(line))
    con.print("\n[bold]BibTeX[/bold]")
    typer.echo(bib.rstrip())


def _not_runnable(reason: str) -> str:
    # Reasons often already say "not yet implemented in stfcat; ...": don't say it twice.
    return reason if reason.lower().startswith("not ") else f"not implemented in stfcat: {reason}"


def _fmt(value) -> str:
    if isinstance(value, list):
        return "; ".join(_fmt(v) for v in value)
    if isinstance(value, dict) and set(value) == {"value", "unit"}:
        return f"{value['value']:g} {value['unit']}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if v not in (None, [], {}))
    return str(value)


@app.command("search")
def search_cmd(
    text: Annotated[list[str], typer.Argument(help="words to look for")],
    limit: Annotated[int, typer.Option(help="show at most this many matches")] = 20,
    json_out: JsonOpt = False,
    catalog: CatalogOpt = None,
) -> None:
    """Ranked search over titles, authors, short names, tags, summaries and DOIs."""
    from stfcat.search import search

    cat = open_catalog(catalog)
    hits = search(cat, " ".join(text), limit=limit)
    if json_out:
        typer.echo(json.dumps([h.__dict__ for h in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        raise fail(f"no match for {' '.join(text)!r}")
    rows = [{"score": f"{h.score:.1f}", "kind": h.kind, "id": h.id, "name": h.label, "title": h.title}
            for h in hits]
    _table(["score", "kind", "id", "name", "title"], rows, f"{len(hits)} match(es)")


@app.command()
def cite(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", help="paper or dataset ids")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every paper and dataset")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write to this .bib file",
                                                dir_okay=False)] = None,
    catalog: CatalogOpt = None,
) -> None:
    """BibTeX for papers and datasets (a dataset cites its papers and its own data publication)."""
    from stfcat.bibtex import BibtexError, entries_for, to_bibtex

    if bool(ids) == all_:
        raise fail("give paper/dataset ids or --all (not both)", 2)
    cat = open_catalog(catalog)
    if all_:
        items = [*sorted(cat.papers.values(), key=lambda p: p.id), *sorted(cat.datasets.values(), key=lambda d: d.id)]
    else:
        items = [_get(cat, i) for i in ids]
    try:
        entries = entries_for(items, cat.papers)
    except BibtexError as exc:
        raise fail(str(exc)) from None
    text = to_bibtex(entries)
    if output is None:
        typer.echo(text.rstrip())
        return
    _write_atomic(output, text)
    typer.echo(f"wrote {len(entries)} entries to {output}", err=True)


@app.command()
def add(
    bibtex: Annotated[Path, typer.Option("--bibtex", exists=True, dir_okay=False, help=".bib file to import")],
    category: Annotated[str | None, typer.Option(help="category of the new papers (cnn, gan, ...)")] = None,
    catalog: CatalogOpt = None,
) -> None:
    """Import BibTeX entries as paper skeletons (papers/<id>.yaml) to complete by hand."""
    from stfcat.bibtex import BibtexError, plan_import
    from stfcat.catalog import default_catalog_dir
    from stfcat.schemas import Category

    if category is not None and category not in {c.value for c in Category}:
        raise fail(_choice_error("--category", category, [c.value for c in Category]))
    root = catalog or default_catalog_dir()
    try:
        plan = plan_import(bibtex, root, category)
    except BibtexError as exc:
        raise fail(f"{exc}\nnothing was written to {root / 'papers'}") from None
    if not plan.files and not plan.skipped:
        raise fail(f"error: {bibtex}: holds no BibTeX entry (expected blocks like @article{{key, ...}}); "
                   f"nothing was written to {root / 'papers'}")
    for message in plan.skipped:
        typer.echo(message)
    for path, text, todo in plan.files:
        _write_atomic(path, text)
        typer.echo(f"wrote {path}: fill in {', '.join(todo)} (then run `stfcat validate`)")
    if not plan.files:
        typer.echo("nothing to add")
