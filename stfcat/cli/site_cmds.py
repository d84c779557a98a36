"""``stfcat site build|serve|figure``: the survey website. Heavy imports (jinja2, matplotlib,
torch through the model registry) happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stfcat.cli.main import app
from stfcat.cli.options import CatalogOpt

site_app = typer.Typer(help="Build, serve or draw the survey website.", no_args_is_help=True)
app.add_typer(site_app, name="site")

OutOpt = Annotated[
    Path,
    typer.Option("--out", help="Build folder: gets docs/ (generated Markdown), mkdocs.yml and html/.",
                 file_okay=False),
]
ResultsOpt = Annotated[
    Path,
    typer.Option("--results", help="Leaderboard written by `stfcat bench` (a missing file shows 'no results yet').",
                 dir_okay=False),
]


def _build(out: Path, catalog: Path | None, results: Path, html: bool):
    from stfcat.catalog import CatalogError
    from stfcat.site.build import build_site
    from stfcat.site.context import SiteError

    try:
        return build_site(out, catalog, results, html=html)
    except CatalogError as exc:
        typer.echo(f"the catalog does not validate:\n{exc}", err=True)
        raise typer.Exit(1) from None
    except SiteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@site_app.command("build")
def build(
    out: OutOpt = Path("site/_build"),
    catalog: CatalogOpt = None,
    results: ResultsOpt = Path("results/leaderboard.json"),
    html: Annotated[bool, typer.Option("--html/--no-html", help="Also run `mkdocs build --strict`.")] = True,
) -> None:
    """Render the catalog into Markdown pages and build the HTML site (broken links fail)."""
    res = _build(out, catalog, results, html)
    where = res.html_dir if res.html_dir else res.docs_dir
    typer.echo(f"{res.n_pages} pages ({res.n_papers} papers, {res.n_datasets} datasets, "
               f"{res.n_results} leaderboard rows) -> {where}")


@site_app.command("serve")
def serve(
    out: OutOpt = Path("site/_build"),
    catalog: CatalogOpt = None,
    results: ResultsOpt = Path("results/leaderboard.json"),
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")] = 8000,
    build_first: Annotated[bool, typer.Option("--build/--no-build", help="Rebuild before serving.")] = True,
) -> None:
    """Build (unless --no-build) and serve the site on http://127.0.0.1:PORT until Ctrl-C."""
    import functools
    import http.server

    html_dir = _build(out, catalog, results, True).html_dir if build_first else out / "html"
    if html_dir is None or not (html_dir / "index.html").is_file():
        typer.echo(f"error: no built site in {out / 'html'}; run `stfcat site build --out {out}` first", err=True)
        raise typer.Exit(1)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html_dir))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        typer.echo(f"serving {html_dir} at http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


@site_app.command("figure")
def figure(
    out: Annotated[Path, typer.Option("--out", help="PNG to write.", dir_okay=False)] = Path("site/assets/timeline.png"),
    catalog: CatalogOpt = None,
) -> None:
    """Draw the static timeline figure (papers per year by category) that the README embeds."""
    from stfcat.catalog import CatalogError, load_catalog
    from stfcat.site.figure import write_timeline_png

    try:
        cat = load_catalog(catalog)
    except CatalogError as exc:
        typer.echo(f"the catalog does not validate:\n{exc}", err=True)
        raise typer.Exit(1) from None
    write_timeline_png(cat.papers.values(), out)
    typer.echo(f"{len(cat.papers)} papers -> {out}")
