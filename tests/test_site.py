"""The survey website: escaping and link filters, page counts against the catalog, strict mkdocs
build, determinism, leaderboard rendering, and refusal to overwrite foreign folders."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from stfcat.site.context import (
    SiteError,
    load_leaderboard,
    rst_to_markdown,
    unlink_relative,
)
from stfcat.site.render import fenced, link, md, mkdocs_config, safe_url

REPO = Path(__file__).resolve().parents[1]


# --- filters ----------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["https://example.org/a?b=1&c=2", "http://doi.org/10.1/x", "HTTPS://EXAMPLE.ORG"])
def test_safe_url_keeps_http(url: str) -> None:
    assert safe_url(url) == url


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<script>x</script>", "//evil.org/x",
    "/relative", "ftp://host/file", "https://host/a b", 'https://host/"onmouseover="x', "https://host/<x>",
    "https://", None, 42, " javascript:alert(1)",
])
def test_safe_url_rejects_everything_else(url: object) -> None:
    assert safe_url(url) is None


def test_md_escapes_html_and_markdown() -> None:
    out = str(md("<script>alert('x')</script> *bold* [a](javascript:x) | pipe"))
    assert "<script" not in out and "&lt;script&gt;" in out
    assert r"\*bold\*" in out and r"\[a\]" in out and r"\|" in out


def test_link_only_for_http() -> None:
    assert str(link("code", "https://github.com/x/y")) == '<a href="https://github.com/x/y">code</a>'
    bad = str(link("code", "javascript:alert(1)"))
    assert "<a" not in bad and "javascript" not in bad
    assert "&amp;" in str(link("q", "https://h/?a=1&b=2"))


def test_fence_cannot_be_closed_by_content() -> None:
    text = "@misc{x,\n note = {```\n<script>}\n}"
    block = str(fenced(text, "bibtex"))
    fence = block.splitlines()[0].removesuffix("bibtex")
    assert len(fence) == 4 and block.endswith("\n" + fence)
    assert block.count(fence) == 2


def test_unlink_relative_and_rst() -> None:
    src = "see [schemas](stfcat/schemas.py), [web](https://x.org) and [here](#layout)"
    assert unlink_relative(src) == "see schemas, [web](https://x.org) and [here](#layout)"
    doc = "Title\n-----\nA ``literal``::\n\n    {\"a\": 1}\n\n``path``\n    relative, never absolute.\n"
    out = rst_to_markdown(doc)
    assert "### Title" in out and "A `literal`:" in out and '```text\n{"a": 1}\n```' in out
    assert "- `path`: relative, never absolute." in out


def test_repo_mkdocs_yml_is_the_rendered_template() -> None:
    """The committed mkdocs.yml (for `mkdocs serve` at the top after `stfcat site build`) is
    generated from the same template as the build folder's; regenerate it if this fails."""
    assert (REPO / "mkdocs.yml").read_text(encoding="utf-8") == mkdocs_config("site/_build/docs", "site/_build/html")


# --- leaderboard ------------------------------------------------------------------------------

def test_leaderboard_missing_file_is_empty(tmp_path: Path) -> None:
    assert load_leaderboard(tmp_path / "absent.json") == []


def test_leaderboard_tolerates_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "lb.json"
    path.write_text(json.dumps({"commit": "abc1234", "rows": [
        {"model": "delta", "dataset": "demo", "split": "test", "metrics": {"rmse": 0.05, "ssim": {"mean": 0.8}},
         "source": "reproduced here"},
        {"model": "x", "RMSE": 0.04, "psnr": 1e999, "ssim": "n/a"},
    ]}))
    rows = load_leaderboard(path)
    assert [r.model for r in rows] == ["delta", "x"]  # sorted by dataset; a missing one is '—'

    delta = next(r for r in rows if r.model == "delta")
    assert delta.metrics["rmse"] == 0.05 and delta.metrics["ssim"] == 0.8 and delta.metrics["sam"] is None
    assert delta.commit == "abc1234" and delta.reproduced
    x = next(r for r in rows if r.model == "x")
    assert x.metrics["rmse"] == 0.04 and x.dataset == "—" and not x.reproduced
    assert x.metrics["psnr"] is None and x.metrics["ssim"] is None  # inf and text are not numbers


@pytest.mark.parametrize("text, words", [("{not json", "not readable JSON"), ('{"a": 1}', "list of result rows"),
                                          ('[{"dataset": "d"}]', "no 'model'"), ("[3]", "row 0")])
def test_leaderboard_errors_name_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "lb.json"
    path.write_text(text)
    with pytest.raises(SiteError, match=re.escape(words)) as exc:
        load_leaderboard(path)
    assert str(path) in str(exc.value)


# --- the real catalog -------------------------------------------------------------------------

def _tree_hashes(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def real_site(tmp_path_factory: pytest.TempPathFactory):
    from stfcat.catalog import load_catalog
    from stfcat.site.build import build_site

    out = tmp_path_factory.mktemp("real") / "build"
    res = build_site(out, None, out.parent / "no-leaderboard.json")
    return res, load_catalog()


def test_real_catalog_builds_strict_with_one_page_per_entry(real_site) -> None:
    res, catalog = real_site
    html = res.html_dir
    paper_pages = {p.stem for p in (html / "papers").glob("*.html")} - {"index"}
    dataset_pages = {p.stem for p in (html / "datasets").glob("*.html")} - {"index"}
    assert paper_pages == set(catalog.papers)
    assert dataset_pages == set(catalog.datasets)
    assert res.n_papers == len(catalog.papers) and res.n_datasets == len(catalog.datasets)
    for cat in ("survey", "cnn", "transformer", "gan", "diffusion", "sequence", "other", "classical"):
        assert (html / "categories" / f"{cat}.html").is_file()
    for page in ("index", "timeline", "models", "conventions", "contributing", "data-manifest", "tags"):
        assert (html / f"{page}.html").is_file()
    # the downloads
    data = json.loads((html / "catalog.json").read_text(encoding="utf-8"))
    assert set(data["papers"]) == set(catalog.papers) and set(data["datasets"]) == set(catalog.datasets)
    from stfcat.bibtex import paper_key, parse_bibtex

    keys = {e.key for e in parse_bibtex((html / "catalog.bib").read_text(encoding="utf-8"))}
    assert {paper_key(p) for p in catalog.papers.values()} <= keys
    # no results file: the leaderboard says so
    assert "No results yet" in (html / "models.html").read_text(encoding="utf-8")


def test_every_page_carries_its_doi_and_bibtex(real_site) -> None:
    from stfcat.bibtex import paper_key

    res, catalog = real_site
    for pid, paper in catalog.papers.items():
        text = (res.html_dir / "papers" / f"{pid}.html").read_text(encoding="utf-8")
        assert paper.doi in text, pid
        assert paper_key(paper) in text, pid
    index = json.loads((res.html_dir / "search" / "search_index.json").read_text(encoding="utf-8"))
    indexed = " ".join(d["text"] for d in index["docs"])
    assert all(p.doi in indexed for p in catalog.papers.values())


def test_timeline_and_table_list_every_paper(real_site) -> None:
    res, catalog = real_site
    timeline = (res.html_dir / "timeline.html").read_text(encoding="utf-8")
    assert len(re.findall(r'class="stl-item"', timeline)) == len(catalog.papers)
    for pid in catalog.papers:
        assert f'href="papers/{pid}.html"' in timeline
    table = (res.html_dir / "papers" / "index.html").read_text(encoding="utf-8")
    assert len(re.findall(r"<tr data-cat=", table)) == len(catalog.papers)
    assert (res.docs_dir / "assets" / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_is_deterministic(real_site, tmp_path: Path) -> None:
    from stfcat.site.build import NONDETERMINISTIC, build_site

    res, _ = real_site
    again = build_site(tmp_path / "again", None, tmp_path / "no-leaderboard.json")
    assert _tree_hashes(again.docs_dir) == _tree_hashes(res.docs_dir)
    first, second = _tree_hashes(res.html_dir, NONDETERMINISTIC), _tree_hashes(again.html_dir, NONDETERMINISTIC)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    assert (res.out / "mkdocs.yml").read_bytes() == (again.out / "mkdocs.yml").read_bytes()


def test_committed_readme_figure_exists() -> None:
    """The README embeds site/assets/timeline.png (regenerate: `stfcat site figure`)."""
    png = REPO / "site" / "assets" / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000


def test_timeline_figure_is_deterministic(tmp_path: Path) -> None:
    from stfcat.catalog import load_catalog
    from stfcat.site.figure import timeline_png, write_timeline_png

    papers = list(load_catalog().papers.values())
    a = timeline_png(papers)
    assert a == timeline_png(list(reversed(papers)))
    assert b"Software" not in a and b"matplotlib" not in a
    path = write_timeline_png(papers, tmp_path / "fig" / "timeline.png")
    assert path.read_bytes() == a
    assert timeline_png(papers[:1]) != a


# --- a hostile catalog through the CLI --------------------------------------------------------

def _paper(pid: str, **kw: object) -> dict:
    base = {
        "id": pid, "short_name": pid.upper(), "title": f"A title for {pid}", "authors": ["A. Author", "B. Author"],
        "venue": "Remote Sensing of Environment", "venue_abbr": "RSE", "year": 2020, "month": 5,
        "doi": f"10.1000/{pid}", "url": "https://example.org/paper", "code_url": None, "category": "cnn",
        "task": "reflectance", "datasets": ["tiny"], "summary": "A summary long enough to pass the schema check.",
        "implementation": {"model": None, "reason": "no code"},
    }
    return {**base, **kw}


@pytest.fixture(scope="module")
def hostile_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "papers").mkdir()
    (root / "datasets").mkdir()
    evil = _paper("evil", title="Fusion <script>alert('pwned')</script> & *stars* | pipes",
                  short_name="EVIL<b>", summary="Summary with <img src=x onerror=alert(1)> and [a link](javascript:x).",
                  code_url="https://github.com/example/evil", tags=["<i>tag</i>"])
    plain = _paper("plain", category="transformer", year=2022, month=None, implementation={"model": "delta"})
    for p in (evil, plain):
        (root / "papers" / f"{p['id']}.yaml").write_text(yaml.safe_dump(p, sort_keys=False), encoding="utf-8")
    tiny = {
        "id": "tiny", "name": "Tiny <script>x</script>", "abbreviation": "TINY", "group": "earth-observation",
        "fine": {"name": "Landsat-8 OLI", "resolution": {"value": 30, "unit": "m"}, "bands": ["red", "nir"]},
        "coarse": {"name": "MODIS", "resolution": {"value": 500, "unit": "m"}, "bands": ["red", "nir"]},
        "region": "Nowhere | Somewhere", "dates": ["2020-01-01", "2020-02-01"], "format": "GeoTIFF",
        "landing_page": "https://example.org/data", "licence": "CC BY 4.0", "citation": ["evil"],
        "access": {"kind": "manual", "instructions": "Click <b>download</b>."},
        "split": {"train": ["2020-01-01"], "test": ["2020-02-01"]},
    }
    (root / "datasets" / "tiny.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False), encoding="utf-8")
    return root


def test_hostile_catalog_renders_as_text(hostile_catalog: Path, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from stfcat.cli.main import app
    from stfcat.site import context

    # The engine's CONVENTIONS.md is included; its links into the repository must not break --strict.
    conventions = tmp_path / "CONVENTIONS.md"
    conventions.write_text("# Conventions\n\nSee [metrics](../metrics.py) and [below](#masks).\n\n## Masks\n\nRMSE ...\n")
    monkeypatch.setattr(context, "conventions_path", lambda: conventions)

    results = tmp_path / "leaderboard.json"
    results.write_text(json.dumps([
        {"model": "delta", "dataset": "tiny", "split": "test", "metrics": {"rmse": 0.031, "psnr": 29.9},
         "commit": "0123abc", "source": "reproduced here", "protocol": "stfcat bench v1"},
        {"model": "someone-else", "dataset": "tiny", "split": "test", "rmse": 0.02, "source": "reported in paper"},
    ]))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["site", "build", "--out", str(out), "--catalog", str(hostile_catalog),
                                 "--results", str(results)])
    assert r.exit_code == 0, r.output
    html = out / "html"
    # Every page and everything the theme's scripts insert as HTML (search index, tag index):
    # titles and tags travel through MkDocs' front matter, which the theme does not escape.
    checked = [p for p in html.rglob("*") if p.suffix in (".html", ".json") and p.name != "catalog.json"]
    assert len(checked) > 15
    for page in checked:
        text = page.read_text(encoding="utf-8")
        for bad in ("<script>alert", "<img src=x", "<b>download", "EVIL<b>", "<i>tag"):
            assert bad not in text, (page, bad)
        assert 'href="javascript' not in text.lower(), page
    evil = (html / "papers" / "evil.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(" in evil and "&lt;img src=x" in evil
    assert '<a href="https://github.com/example/evil">' in evil
    models = (html / "models.html").read_text(encoding="utf-8")
    assert "reproduced here" in models and "0123abc" in models and "0.0310" in models
    assert "reported in paper" in models and "someone-else" in models
    for baseline in ("copy-f1", "upsample-c2"):  # absent from the results: placeholder rows
        assert re.search(rf"<code>{baseline}</code></td>\s*<td>not in results", models), baseline
    conv = (html / "conventions.html").read_text(encoding="utf-8")
    assert "RMSE ..." in conv and 'href="#masks"' in conv
    assert "See metrics and" in conv and "metrics.py" not in conv
    # runnable here: `plain` names the registered trivial model `delta`
    plain = (html / "papers" / "plain.html").read_text(encoding="utf-8")
    plain_text = re.sub(r"<[^>]+>", "", plain)
    assert "stfcat run delta" in plain_text and "0.0310" in plain_text


def test_refuses_foreign_folder_and_reports_catalog_errors(hostile_catalog: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stfcat.cli.main import app

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(app, ["site", "build", "--out", str(foreign), "--catalog", str(hostile_catalog), "--no-html"])
    assert r.exit_code == 1 and "not empty" in r.output
    assert (foreign / "notes.txt").read_text() == "keep me" and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    broken = tmp_path / "broken"
    (broken / "papers").mkdir(parents=True)
    (broken / "datasets").mkdir()
    (broken / "papers" / "bad.yaml").write_text(yaml.safe_dump(_paper("bad", url="javascript:alert(1)", datasets=[])))
    r = CliRunner().invoke(app, ["site", "build", "--out", str(tmp_path / "o"), "--catalog", str(broken)])
    assert r.exit_code == 1 and "bad.yaml" in r.output and "url" in r.output


def test_broken_link_fails_the_strict_build(hostile_catalog: Path, tmp_path: Path) -> None:
    from stfcat.site.build import render_site, run_mkdocs

    res = render_site(tmp_path / "b", hostile_catalog, None)
    page = res.docs_dir / "papers" / "evil.md"
    page.write_text(page.read_text(encoding="utf-8") + "\n[gone](../papers/missing.md) [x](#no-such-anchor)\n")
    with pytest.raises(SiteError, match="missing.md"):
        run_mkdocs(res.out / "mkdocs.yml")


def test_serve_serves_the_built_site(real_site) -> None:
    """`stfcat site serve --no-build` on a free port answers with the built home page."""
    import subprocess
    import sys
    import urllib.request

    res, _ = real_site
    proc = subprocess.Popen(
        [sys.executable, "-m", "stfcat", "site", "serve", "--no-build", "--out", str(res.out), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        with urllib.request.urlopen(url.group(0) + "index.html", timeout=10) as resp:
            body = resp.read().decode("utf-8")
        assert "Papers per category and year" in body
    finally:
        proc.terminate()
        proc.wait(10)
