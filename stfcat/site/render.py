"""Render the catalog into the Markdown pages of the mkdocs docs folder with jinja2.

Catalog text is untrusted: the environment autoescapes everything (``<script>`` in a title
renders as text), the ``md`` filter additionally backslash-escapes Markdown syntax, only
http(s) URLs become links (:func:`safe_url`), and ``StrictUndefined`` turns a misspelt template
variable into an error instead of an empty string. Output depends only on the inputs (sorted
everywhere, no dates or random ids), so rendering twice gives identical files.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from stfcat.schemas import Dataset, Paper
from stfcat.site.charts import leaderboard_chart, training_chart
from stfcat.site.context import (
    HIGHER_IS_BETTER,
    METRICS,
    TRIVIAL_BASELINES,
    ZERO_IS_BEST,
    FailedRun,
    Models,
    ResultRow,
)
from stfcat.site.runs import runs_of

CATEGORIES: dict[str, tuple[str, str]] = {
    # id: (label as the survey's sections name it, colour on the timeline)
    "survey": ("Survey", "#6d4c41"),
    "cnn": ("CNN", "#1e88e5"),
    "transformer": ("Transformer", "#8e24aa"),
    "gan": ("GAN", "#e53935"),
    "diffusion": ("Diffusion", "#00897b"),
    "sequence": ("Sequence", "#f4511e"),
    "other": ("Others", "#546e7a"),
    "classical": ("Classical", "#7cb342"),
}
GROUPS: dict[str, str] = {
    "earth-observation": "Earth observation",
    "ocean-meteorological": "Ocean & meteorological",
    "multi-source": "Multi-source",
    "synthetic": "Synthetic",
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
METRIC_DIGITS = {"psnr": 2, "sam": 3, "ergas": 3}  # others: 4 decimals
SURVEY_TITLE_WORD = "decade"  # the survey this site accompanies: "A decade of deep learning ..."

_URL_RE = re.compile(r"^https?://[^\s/$.?#<>\"'`\\][^\s<>\"'`\\]*$", re.IGNORECASE)
_MAILTO_RE = re.compile(r"^mailto:[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", re.IGNORECASE)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}|~#!])")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_HTML_SPECIAL = re.compile(r"[<>&\"'`\\]")
_TEMPLATES = Path(__file__).resolve().parent / "templates"


# --- filters ----------------------------------------------------------------------------------

def safe_url(url: object) -> str | None:
    """``url`` when it is an absolute http(s) URL, or a ``mailto:`` address, without spaces, quotes or
    angle brackets, else None: ``javascript:``, ``data:``, relative or protocol-relative catalog URLs
    never become links (relative links come only from the templates themselves)."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    return url if _URL_RE.match(url) or _MAILTO_RE.match(url) else None


_RAW_ACTIVE = re.compile(r"([\\\[\]{}|])")


def finalize(value: object) -> object:
    """Applied by jinja to every ``{{ ... }}`` before autoescaping: a plain string that no filter
    (``md``, ``link``, ``tojson``, ``fenced``) has made safe is put on one line and has the Markdown
    characters that make links, images or attributes (``[ ] { }``, the backslash, table pipes)
    escaped, so a template that forgets ``|md`` cannot turn catalog text into a link or an
    ``onmouseover`` attribute. HTML is escaped afterwards by autoescape."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return Markup(_RAW_ACTIVE.sub(r"\\\1", str(escape(" ".join(value.split())))))
    return value


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", str(escape(text)))


def md(text: object) -> Markup:
    """Catalog text for a Markdown context: one line, HTML-escaped, Markdown syntax escaped.
    A `backticked` span (catalog instructions quote commands that way) becomes ``<code>``
    around the same escaped text, so it reads as code instead of showing the backticks."""
    if text is None:
        return Markup("—")
    flat = " ".join(str(text).split())
    parts = _CODE_SPAN.split(flat)  # odd indices: the inside of a `...` pair
    return Markup("".join(f"<code>{_md_escape(t)}</code>" if i % 2 else _md_escape(t)
                          for i, t in enumerate(parts)))


def plain(text: object) -> str:
    """Catalog text for page front matter (title, tags). MkDocs and the theme put these into
    the HTML without escaping, so every character with a meaning in HTML is dropped."""
    return _HTML_SPECIAL.sub("", " ".join(str(text).split()))


def link(text: object, url: object) -> Markup:
    """An ``<a>`` for http(s) URLs (opening in the same tab); the escaped text otherwise."""
    label = md(text)
    target = safe_url(url)
    if target is None:
        return label
    return Markup('<a href="{}">{}</a>').format(target, label)


def fenced(text: str, lang: str = "") -> Markup:
    """A fenced code block holding ``text`` verbatim. The fence is longer than any backtick
    run in the text, so catalog text cannot close it; the highlighter escapes the content."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return Markup(f"{fence}{lang}\n{text.rstrip()}\n{fence}")


def fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def fmt_num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"


def short_commit(commit: str | None) -> str:
    """A 40-hex commit as its first 12 digits, keeping the ``-dirty`` mark of a modified tree."""
    if not commit:
        return "—"
    head, dirty, _ = commit.partition("-dirty")
    if re.fullmatch(r"[0-9a-f]{13,40}", head):
        head = head[:12]
    return head + dirty


def fmt_size(n: int | None) -> str:
    if not n:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def fmt_res(res: Any) -> str:
    if res is None:  # point (station) data
        return "—"
    value = f"{res.value:g}"
    return f"{value} {res.unit}" if res.unit != "deg" else f"{value}°"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        finalize=finalize,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(md=md, plain=plain, url=safe_url, fmt_int=fmt_int, fmt_num=fmt_num, fmt_size=fmt_size,
                       fmt_res=fmt_res, fenced=fenced, short_commit=short_commit)
    env.globals.update(link=link, CATEGORIES=CATEGORIES, GROUPS=GROUPS, METRICS=METRICS,
                       HIGHER_IS_BETTER=sorted(HIGHER_IS_BETTER), ZERO_IS_BEST=sorted(ZERO_IS_BEST), MONTHS=MONTHS,
                       METRIC_DIGITS=METRIC_DIGITS)
    return env


# --- view models ------------------------------------------------------------------------------

@dataclass
class PaperView:
    p: Paper
    label: str
    color: str
    reference: str
    bibtex: str
    datasets: list[tuple[str, Dataset | None]]
    model: str | None
    runnable: bool
    params: int | None
    results: list[ResultRow]
    tags: list[str]
    runs: list[Any] = field(default_factory=list)  # stfcat.site.runs.RunSummary of the model and its variants
    quick_recipe: tuple[str, ...] = ()
    training_charts: list[Markup] = field(default_factory=list)


@dataclass
class DatasetView:
    d: Dataset
    bibtex: str
    citing: list[Paper]
    used_by: list[Paper]
    size: int | None
    fetch: str | None
    bands: list[tuple[int, str | None, str | None]]


@dataclass
class Site:
    papers: list[PaperView]
    datasets: list[DatasetView]
    models: Models
    results: list[ResultRow]
    survey: PaperView | None
    docs: dict[str, str | None] = field(default_factory=dict)
    failed: list[FailedRun] = field(default_factory=list)
    generated: str | None = None
    runs: list[Any] = field(default_factory=list)


def reference_text(p: Paper) -> str:
    """Plain-text full reference: authors, title, venue volume(issue): pages, year. DOI."""
    authors = ", ".join(p.authors)
    where = p.venue
    if p.volume:
        where += f" {p.volume}"
        if p.issue:
            where += f"({p.issue})"
    if p.pages:
        where += f": {p.pages}" if p.volume else f", {p.pages}"
    return f"{authors}. {p.title}. {where}, {p.year}. DOI: {p.doi}"


def _bibtex(items: Iterable[Paper | Dataset], papers: dict[str, Paper]) -> str:
    from stfcat.bibtex import entries_for, to_bibtex

    return to_bibtex(entries_for(list(items), papers)).strip() + "\n"


def paper_tags(p: Paper) -> list[str]:
    # "air-quality" (the task) and "air quality" (a catalog tag) are one tag.
    seen: dict[str, str] = {}
    for t in (CATEGORIES[p.category.value][0], p.task.value.replace("-", " "), *p.tags):
        t = plain(t)
        if t:
            seen.setdefault(t.lower().replace("-", " "), t)
    return list(seen.values())


def _fetch_command(d: Dataset) -> str | None:
    if d.access.kind in ("direct", "embedded", "mirror"):
        return f"stfcat fetch {d.id}"
    if d.access.kind == "manual":
        return f"stfcat fetch {d.id} --from ARCHIVE"
    return None


def _training_charts(model: str, runs: list[Any]) -> list[Markup]:
    charts = []
    for metric in ("rmse", "ssim"):
        rows = [(r.label, (r.untrained or {}).get(metric), r.trained.get(metric)) for r in runs]
        chart = training_chart(rows, metric, model=model)
        if chart is not None:
            charts.append(chart)
    return charts


def build_views(catalog: Any, models: Models, results: list[ResultRow], runs: Iterable[Any] = ()) -> Site:
    papers_by_id: dict[str, Paper] = catalog.papers
    runs = list(runs)
    registered = {m.id for m in models.rows}
    by_model: dict[str, list[ResultRow]] = {}
    for r in results:
        by_model.setdefault(r.model, []).append(r)

    pviews = []
    for pid in sorted(papers_by_id, key=lambda k: (papers_by_id[k].year, papers_by_id[k].month or 13, k)):
        p = papers_by_id[pid]
        label, color = CATEGORIES[p.category.value]
        model = p.implementation.model
        info = models.get(model)
        pviews.append(PaperView(
            p=p, label=label, color=color, reference=reference_text(p),
            bibtex=_bibtex([p], papers_by_id),
            datasets=[(d, catalog.datasets.get(d)) for d in p.datasets],
            model=model, runnable=bool(model and model in registered),
            params=info.params if info else None,
            quick_recipe=info.quick_recipe if info else (),
            results=by_model.get(model, []) if model else [],
            tags=paper_tags(p),
        ))
        if model:
            pviews[-1].runs = runs_of(model, runs)
            pviews[-1].training_charts = _training_charts(model, pviews[-1].runs)

    dviews = []
    for did in sorted(catalog.datasets):
        d = catalog.datasets[did]
        fine = d.fine.bands
        coarse = d.coarse.bands if d.coarse else []
        n = max(len(fine), len(coarse))
        bands = [(i + 1, fine[i] if i < len(fine) else None, coarse[i] if i < len(coarse) else None)
                 for i in range(n)]
        dviews.append(DatasetView(
            d=d,
            bibtex=_bibtex([d], papers_by_id) if (d.citation or d.bibtex) else "",
            citing=[papers_by_id[c] for c in d.citation if c in papers_by_id],
            used_by=sorted((p for p in papers_by_id.values() if did in p.datasets), key=lambda p: (p.year, p.id)),
            size=sum(f.size for f in d.access.files) or None,
            fetch=_fetch_command(d),
            bands=bands,
        ))

    survey = next((v for v in pviews if v.p.category.value == "survey"
                   and SURVEY_TITLE_WORD in v.p.title.lower()), None)
    return Site(papers=pviews, datasets=dviews, models=models, results=results, survey=survey, runs=runs)


# --- pages ------------------------------------------------------------------------------------

def _counts(site: Site) -> dict[str, Any]:
    years = sorted({v.p.year for v in site.papers})
    per = Counter((v.p.year, v.p.category.value) for v in site.papers)
    cats = [c for c in CATEGORIES if any(v.p.category.value == c for v in site.papers)]
    return {
        "years": years,
        "categories": cats,
        "cell": {f"{y}-{c}": per[(y, c)] for y in years for c in cats},
        "per_category": Counter(v.p.category.value for v in site.papers),
        "per_year": Counter(v.p.year for v in site.papers),
        "per_group": Counter(v.d.group.value for v in site.datasets),
    }


def _leaderboard_tables(site: Site) -> list[dict[str, Any]]:
    """One table per (dataset, split); trivial baselines get a placeholder row when the
    results lack them, so they are always visible."""
    tables: dict[tuple[str, str], list[ResultRow]] = {}
    for r in site.results:
        tables.setdefault((r.dataset, r.split), []).append(r)
    out = []
    for (dataset, split), rows in sorted(tables.items()):
        # As `stfcat bench` orders them: baselines first, then by RMSE (missing last).
        rows = sorted(rows, key=lambda r: (r.model not in TRIVIAL_BASELINES, r.metrics.get("rmse") is None,
                                           r.metrics.get("rmse") or 0.0, r.model, r.source or ""))
        present = {r.model for r in rows}
        missing = [b for b in TRIVIAL_BASELINES if b not in present]
        commits = sorted({r.commit for r in rows if r.commit and r.reproduced})
        protocols = sorted({r.protocol for r in rows if r.protocol})
        metrics = [m for m in METRICS if any(r.metrics.get(m) is not None for r in rows)]
        charts = [c for m in ("rmse", "ssim") if m in metrics
                  and (c := leaderboard_chart(rows, m, dataset=dataset, split=split)) is not None]
        out.append({"dataset": dataset, "split": split, "rows": rows, "missing": missing, "metrics": metrics, "charts": charts,
                    "commits": commits, "protocols": protocols,
                    "known_dataset": dataset in {v.d.id for v in site.datasets}})
    return out


def pages(site: Site, env: jinja2.Environment | None = None) -> dict[str, str]:
    """Relative path in the docs folder -> Markdown text, for every generated page."""
    env = env or environment()
    paper_ids = {v.p.id for v in site.papers}
    common = {"site": site, "counts": _counts(site), "paper_ids": paper_ids,
              "dataset_ids": {v.d.id for v in site.datasets}}
    out: dict[str, str] = {}

    def put(path: str, template: str, **extra: Any) -> None:
        out[path] = env.get_template(template).render(**common, **extra)

    put("index.md", "home.md.j2")
    put("timeline.md", "timeline.md.j2")
    put("papers/index.md", "papers.md.j2")
    for cat, (label, _) in CATEGORIES.items():
        put(f"categories/{cat}.md", "category.md.j2", cat=cat, label=label,
            views=[v for v in site.papers if v.p.category.value == cat])
    for v in site.papers:
        put(f"papers/{v.p.id}.md", "paper.md.j2", v=v)
    put("datasets/index.md", "datasets.md.j2")
    for group, label in GROUPS.items():
        put(f"groups/{group}.md", "group.md.j2", group=group, label=label,
            views=[v for v in site.datasets if v.d.group.value == group])
    tables = _leaderboard_tables(site)
    for v in site.datasets:
        put(f"datasets/{v.d.id}.md", "dataset.md.j2", v=v, tables=[t for t in tables if t["dataset"] == v.d.id])
    put("models.md", "models.md.j2", tables=tables)
    put("conventions.md", "conventions.md.j2", text=_doc(site, "conventions"))
    put("data-manifest.md", "manifest.md.j2", text=_doc(site, "manifest"))
    put("contributing.md", "contributing.md.j2", text=_doc(site, "contributing"))
    put("tags.md", "tags.md.j2")
    return out


def _doc(site: Site, name: str) -> Markup | None:
    # Repository prose (ours, not catalog text): included as Markdown, not escaped.
    text = site.docs.get(name)
    return Markup(text) if text else None


def catalog_json(catalog: Any) -> str:
    data = {
        "papers": {k: catalog.papers[k].model_dump(mode="json") for k in sorted(catalog.papers)},
        "datasets": {k: catalog.datasets[k].model_dump(mode="json") for k in sorted(catalog.datasets)},
    }
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def catalog_bib(catalog: Any) -> str:
    items: list[Paper | Dataset] = [catalog.papers[k] for k in sorted(catalog.papers)]
    items += [catalog.datasets[k] for k in sorted(catalog.datasets)]
    return _bibtex(items, catalog.papers)


def render_docs(site: Site, catalog: Any, docs_dir: Path) -> list[Path]:
    """Write every page, the downloads and the static assets into ``docs_dir`` (which must be
    empty or absent). Returns the written files."""
    written = []
    files = dict(pages(site))
    files["catalog.json"] = catalog_json(catalog)
    files["catalog.bib"] = catalog_bib(catalog)
    for rel, text in sorted(files.items()):
        path = docs_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    assets = docs_dir / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for src in sorted((_TEMPLATES / "assets").iterdir()):
        if src.is_file():
            (assets / src.name).write_bytes(src.read_bytes())
            written.append(assets / src.name)
    return written


def mkdocs_config(docs_dir: str, site_dir: str) -> str:
    return environment().get_template("mkdocs.yml.j2").render(docs_dir=docs_dir, site_dir=site_dir)
