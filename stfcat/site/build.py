"""``stfcat site build``: catalog -> Markdown (our jinja2 generator) -> HTML (``mkdocs build --strict``).

The output folder holds three things, all regenerated on every build:

* ``docs/``: the generated mkdocs docs folder (pages, ``catalog.bib``, ``catalog.json``, assets),
* ``mkdocs.yml``: the configuration (``docs_dir: docs``, ``site_dir: html``),
* ``html/``: the built site.

Nothing else in the folder is touched. A non-empty folder that was not made by this command
(no ``.stfcat-site`` marker) is refused rather than overwritten.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stfcat.site import context
from stfcat.site.context import SiteError
from stfcat.site.figure import timeline_png
from stfcat.site.render import build_views, mkdocs_config, render_docs

MARKER = ".stfcat-site"
DEFAULT_OUT = Path("site/_build")
DEFAULT_RESULTS = Path("results/leaderboard.json")
# Files mkdocs writes with the build date in them: not comparable between two builds.
NONDETERMINISTIC = frozenset({"sitemap.xml", "sitemap.xml.gz"})


@dataclass(frozen=True)
class BuildResult:
    out: Path
    docs_dir: Path
    html_dir: Path | None
    n_papers: int
    n_datasets: int
    n_pages: int
    n_results: int


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SiteError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SiteError(f"--out {out}: folder is not empty and was not made by `stfcat site build`; "
                        "choose an empty or new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, or no permission
        raise SiteError(f"--out {out}: cannot create the folder: a parent is not a folder or not writable "
                        f"({exc.strerror or exc})") from None
    (out / MARKER).write_text("made by `stfcat site build`; regenerated on every build\n", encoding="utf-8")


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _copy_quicklooks(runs, docs: Path) -> None:
    """The quick-look PNGs of the runs the paper pages show, under ``assets/runs/<run>/``."""
    for run in runs:
        for png, rel, _ in run.looks():
            dest = docs / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, dest)


def render_site(out: Path, catalog_root: Path | None = None, results: Path | None = DEFAULT_RESULTS) -> BuildResult:
    """Generate ``out/docs`` and ``out/mkdocs.yml`` (no HTML)."""
    from stfcat.catalog import load_catalog

    catalog = load_catalog(catalog_root)
    board = context.load_board(results)
    rows = board.rows
    from stfcat.site.runs import load_runs

    runs = load_runs(results)
    site = build_views(catalog, context.collect_models(), rows, runs)
    site.failed, site.generated = board.failed, board.generated
    site.docs = {
        "contributing": context.read_doc(context.contributing_path()),
        "conventions": context.read_doc(context.conventions_path()),
        "manifest": context.manifest_doc(),
    }
    _prepare_out(out)
    docs = out / "docs"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".docs."))
    try:
        written = render_docs(site, catalog, tmp)
        (tmp / "assets" / "timeline.png").write_bytes(timeline_png(catalog.papers.values()))
        _copy_quicklooks(runs, tmp)
        if docs.exists():
            shutil.rmtree(docs)
        os.replace(tmp, docs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text(out / "mkdocs.yml", mkdocs_config("docs", "html"))
    n_pages = sum(1 for p in written if p.suffix == ".md")
    return BuildResult(out, docs, None, len(catalog.papers), len(catalog.datasets), n_pages, len(rows))


def run_mkdocs(config: Path) -> str:
    """``mkdocs build --strict`` of ``config``; SiteError with mkdocs' own messages on failure."""
    missing = [m for m in ("mkdocs", "material") if importlib.util.find_spec(m) is None]
    if missing:
        raise SiteError(f"{' and '.join(missing)} not installed: pip install 'stfcat[docs]' "
                        "(mkdocs<2 and mkdocs-material), or build only the Markdown with --no-html")
    # Material 9.7+ prints a banner about MkDocs 2 on every build; we pin mkdocs<2.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--config-file", str(config)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        raise SiteError("mkdocs build --strict failed:\n" + "\n".join(lines[-40:]))
    return proc.stdout + proc.stderr


def build_site(out: Path = DEFAULT_OUT, catalog_root: Path | None = None,
               results: Path | None = DEFAULT_RESULTS, *, html: bool = True) -> BuildResult:
    """Render the docs folder and (``html=True``) build the HTML site with mkdocs --strict."""
    res = render_site(out, catalog_root, results)
    if not html:
        return res
    run_mkdocs(out / "mkdocs.yml")
    return BuildResult(res.out, res.docs_dir, out / "html", res.n_papers, res.n_datasets, res.n_pages,
                       res.n_results)
