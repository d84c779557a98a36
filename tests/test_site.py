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


def test_md_backticks_become_escaped_code() -> None:
    out = str(md("run `stfcat fetch x --from a_b.zip` or `<script>x</script>`; a lone ` stays"))
    assert "<code>stfcat fetch x --from a\\_b.zip</code>" in out
    assert "<code>&lt;script&gt;x&lt;/script&gt;</code>" in out and "<script" not in out
    assert out.endswith("a lone \\` stays")


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


BENCH_BOARD = REPO / "tests" / "fixtures" / "site" / "leaderboard_bench.json"


def test_fixture_is_what_stfcat_bench_writes() -> None:
    """The fixture is `stfcat bench --models starfm --epochs 1` output (demo series) with a
    `reported` value and a failed run added; the engine's own Markdown writer still reads it,
    and the site shows the engine's metric columns."""
    from stfcat.engine.bench import BOARD_METRICS, leaderboard_markdown
    from stfcat.site.context import METRICS

    board = json.loads(BENCH_BOARD.read_text(encoding="utf-8"))
    assert "| starfm |" in leaderboard_markdown(board)
    assert tuple(BOARD_METRICS) == METRICS == tuple(board["metrics"])


def test_leaderboard_reads_the_bench_format() -> None:
    from stfcat.site.context import load_board

    board = load_board(BENCH_BOARD)
    measured = [r for r in board.rows if r.reproduced]
    assert sorted(r.model for r in measured) == ["copy-f1", "delta", "starfm", "upsample-c2"]
    for r in measured:
        # budget is null on the baseline rows; the board-level value fills it
        assert r.protocol == "stfcat bench, quick budget, seed 0", r
        assert r.cases == 3 and r.device == "cpu" and r.commit and r.commit.endswith("-dirty")
        assert r.metrics["rmse"] is not None and r.metrics["edge"] is not None
    reported = [r for r in board.rows if not r.reproduced]
    assert [(r.model, r.source, r.metrics["rmse"], r.metrics["ssim"], r.metrics["psnr"]) for r in reported] == [
        ("starfm", "reported in paper (Table 3)", 0.0187, 0.912, None)]
    assert [(f.model, f.dataset) for f in board.failed] == [("stfdcnn", "demo")]
    assert board.generated == "2026-11-30T17:52:06+00:00"


def test_site_renders_the_bench_leaderboard(hostile_catalog: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stfcat.cli.main import app

    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["site", "build", "--out", str(out), "--catalog", str(hostile_catalog),
                                 "--results", str(BENCH_BOARD)])
    assert r.exit_code == 0, r.output
    assert "5 leaderboard rows" in r.output
    models = (out / "html" / "models.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", models)
    assert "Protocol: stfcat bench, quick budget, seed 0" in text
    assert "Reproduced here at commit 612af3d49cfc-dirty, 89ea1acb54a5-dirty" in text
    assert "612af3d49cfcd780" not in text  # commits shortened
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", models)
    assert heads[heads.index("Model", 5):][:4] == ["Model", "Source", "Cases", "RMSE"] and "EDGE" in heads
    assert "reported in paper (Table 3)" in text and "0.0187" in text
    assert "not in results" not in text  # the bench wrote all three baselines
    # trivial baselines first, then by RMSE
    order = re.findall(r"<td><code>([\w-]+)</code></td>", models.split("<h2 id=\"leaderboard\"")[1])
    assert order[:5] == ["delta", "copy-f1", "upsample-c2", "starfm", "starfm"], order
    assert "Failed runs" in text and "stfdcnn on demo: RuntimeError: out of memory &lt;while&gt;" in models
    # `plain` names the registered model `delta`: its page shows delta's measured row
    plain = re.sub(r"<[^>]+>", "", (out / "html" / "papers" / "plain.html").read_text(encoding="utf-8"))
    assert "reproduced here" in plain and "0.0195" in plain and "0.0260" not in plain


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


def _text_of(path: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8")))


def test_home_has_counts_quick_start_and_citation(real_site) -> None:
    from collections import Counter

    from stfcat.bibtex import paper_key

    res, catalog = real_site
    home = (res.html_dir / "index.html").read_text(encoding="utf-8")
    text = _text_of(res.html_dir / "index.html")
    assert f"{len(catalog.papers)} papers and {len(catalog.datasets)} datasets" in text
    # the totals row links each category page with its count
    for cat, n in Counter(p.category.value for p in catalog.papers.values()).items():
        assert re.search(rf'<a href="categories/{cat}\.html">{n}</a>', home), cat
    per_year = Counter(p.year for p in catalog.papers.values())
    for year, n in per_year.items():
        assert re.search(rf"<td>{year}</td>(\s*<td>\d*</td>)+\s*<td>{n}</td>\s*</tr>", home), year
    for cmd in ("pip install stfcat", "stfcat fetch", "stfcat run"):
        assert cmd in text, cmd
    survey = next(p for p in catalog.papers.values() if "decade" in p.title.lower())
    assert "How to cite" in text and paper_key(survey) in home


def test_paper_and_dataset_pages_show_their_facts(real_site) -> None:
    from stfcat.models import list_models, model_info

    res, catalog = real_site
    registered = set(list_models())
    for pid, p in catalog.papers.items():
        text = _text_of(res.html_dir / "papers" / f"{pid}.html")
        assert p.summary.split()[0] in text and p.authors[0] in text, pid
        for did in p.datasets:
            assert f'href="../datasets/{did}.html"' in (res.html_dir / "papers" / f"{pid}.html").read_text(), (pid, did)
        model = p.implementation.model
        if model in registered:
            assert f"stfcat run {model}" in text, pid
            assert f"{model_info(model).params:,} trainable parameters" in text, pid
        elif model is None:
            assert "Not implemented" in text, pid
    table = _text_of(res.html_dir / "datasets" / "index.html")
    for did, d in catalog.datasets.items():
        page = _text_of(res.html_dir / "datasets" / f"{did}.html")
        assert d.licence.split()[0] in page and d.fine.name in page, did
        if d.access.kind in ("direct", "embedded"):
            assert f"stfcat fetch {did}" in table and f"stfcat fetch {did}" in page, did
        elif d.access.kind == "manual":
            assert f"stfcat fetch {did} --from ARCHIVE" in table, did


def test_conventions_and_contributing_pages_include_the_repository_docs(real_site) -> None:
    res, _ = real_site
    contributing = _text_of(res.html_dir / "contributing.html")
    assert "Catalog API" in contributing  # a section of CONTRIBUTING.md
    conventions = REPO / "stfcat" / "engine" / "CONVENTIONS.md"
    if not conventions.is_file():
        pytest.skip("stfcat/engine/CONVENTIONS.md is not written yet")
    headings = re.findall(r"^#{1,3} (.+)$", conventions.read_text(encoding="utf-8"), flags=re.M)
    page = _text_of(res.html_dir / "conventions.html")
    headings = [h.replace("`", "").strip() for h in headings]
    assert headings and all(h in page for h in headings), headings


def test_theme_has_palette_toggle_copy_buttons_and_search(real_site) -> None:
    res, _ = real_site
    home = (res.html_dir / "index.html").read_text(encoding="utf-8")
    schemes = re.findall(r'data-md-color-scheme="(\w+)"', home.split('data-md-component="palette"')[1])
    assert {"default", "slate"} <= set(schemes)
    assert '"content.code.copy"' in home and (res.html_dir / "search" / "search_index.json").is_file()


def test_jinja_environment_escapes_and_rejects_undefined() -> None:
    import jinja2

    from stfcat.site.render import environment

    env = environment()
    assert env.from_string("{{ x }}").render(x="<script>") == "&lt;script&gt;"
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ not_defined }}").render()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ x.missing }}").render(x={})


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
        "access": {"kind": "manual", "instructions": "Click <b>download</b>, then `stfcat fetch tiny --from <x>.zip`."},
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
    tiny = (html / "datasets" / "tiny.html").read_text(encoding="utf-8")
    assert "<code>stfcat fetch tiny --from &lt;x&gt;.zip</code>" in tiny
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


@pytest.mark.parametrize("broken, words", [("[gone](../papers/missing.md)", "missing.md"),
                                            ("[x](#no-such-anchor)", "no-such-anchor"),
                                            ("[y](../papers/plain.md#no-such-section)", "no-such-section")])
def test_broken_link_fails_the_strict_build(hostile_catalog: Path, tmp_path: Path, broken: str, words: str) -> None:
    from stfcat.site.build import render_site, run_mkdocs

    res = render_site(tmp_path / "b", hostile_catalog, None)
    run_mkdocs(res.out / "mkdocs.yml")  # the generated site itself is clean
    page = res.docs_dir / "papers" / "evil.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\n{broken}\n")
    with pytest.raises(SiteError, match=words):
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


def test_templates_are_package_data() -> None:
    """Every template and asset matches the `stfcat.site` package-data globs of pyproject.toml,
    so `stfcat site build` works from a wheel (a new template folder would be left out)."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["stfcat.site"]
    site_pkg = REPO / "stfcat" / "site"
    files = [p.relative_to(site_pkg).as_posix() for p in (site_pkg / "templates").rglob("*") if p.is_file()]
    assert len(files) > 10
    # setuptools globs do not cross "/": match the folder part exactly
    def shipped(f: str) -> bool:
        return any(f.rsplit("/", 1)[0] == g.rsplit("/", 1)[0] and fnmatch.fnmatch(f, g) for g in globs)

    assert [f for f in files if not shipped(f)] == []


def test_one_and_two_reference_rows_are_separate_tables():
    from stfcat.site.context import _split_label

    assert _split_label({"split": "test", "n_refs": 1}) == "test (one reference pair)"
    assert _split_label({"split": "test", "n_refs": 2}) == "test (two reference pairs)"
    assert _split_label({"split": "test"}) == "test"


def test_paper_pages_state_what_the_quick_recipe_changes(real_site) -> None:
    """A model whose quick budget starts differently from the paper says how on its paper page;
    one without changes has no such section."""
    from stfcat.models import model_info

    res, catalog = real_site
    checked = 0
    for pid, paper in catalog.papers.items():
        model = paper.implementation.model
        if not model:
            continue
        info = model_info(model)
        changes = info.recipe.quick_changes() if info.trainable and info.recipe else []
        text = (res.html_dir / "papers" / f"{pid}.html").read_text(encoding="utf-8")
        assert ("Quick recipe" in text) == bool(changes), pid
        for line in changes:
            assert line.split(":")[0].split()[0] in text, (pid, line)
        checked += 1
    assert checked >= 8
