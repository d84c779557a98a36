"""Catalog loading and validation: the broken fixtures must fail with the exact file:LINE: field."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stfcat.catalog import (
    Catalog,
    CatalogError,
    Problem,
    UnknownIdError,
    default_catalog_dir,
    load_catalog,
    validate_catalog,
)
from stfcat.cli.main import app

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "catalog_broken"
OK = FIXTURES / "catalog_ok"

# case -> the lines `stfcat validate` must print (paths relative to the case folder)
EXPECTED = {
    "wrong_type": ["papers/alpha-net.yaml:9: year: Input should be a valid integer"],
    "unknown_key": ["papers/alpha-net.yaml:24: implementation.modle: unknown key"],
    "bad_doi": ["papers/alpha-net.yaml:12: doi: '10.12/abc' is not a DOI"],
    "dangling_dataset": ["papers/alpha-net.yaml:20: datasets.1: unknown dataset 'nosuch'"],
    "dangling_model": ["papers/alpha-net.yaml:23: implementation.model: no registered model 'no-such-model'"],
    "duplicate_id": ["datasets/toy.yaml:1: id: duplicate id 'toy'"],
    "duplicate_doi": ["papers/gamma.yaml:12: doi: duplicate DOI '10.1016/J.RSE.2020.000001'"],
    "duplicate_key": ["papers/alpha-net.yaml:10: YAML syntax error: duplicate key 'year' (first on line 9)"],
    "yaml_syntax": ["papers/alpha-net.yaml:9: YAML syntax error: while parsing a flow sequence"],
    "bad_url": [
        "papers/alpha-net.yaml:13: url: 'ftp://example.org/alpha-net' is not an http(s) URL",
        "papers/alpha-net.yaml:14: code_url: 'javascript:alert(1)' is not an http(s) URL",
    ],
    "id_mismatch": ["papers/delta.yaml:1: id: id 'alpha-net' differs from the file name 'delta'"],
    "several": [
        "datasets/toy.yaml:13: landing_page: 'ftp://example.org/toy' is not an http(s) URL",
        "datasets/toy.yaml:17: access: access.kind 'manual' needs 'instructions'",
        "papers/alpha-net.yaml:9: year: year 1850 is outside 1990..",
        "papers/alpha-net.yaml:12: doi: 'https://doi.org/10.1016/j.rse.2020.000001': write the bare DOI",
        "papers/alpha-net.yaml:20: datasets.1: unknown dataset 'toy2'",
        "papers/alpha-net.yaml:27: abstract: unknown key",
    ],
}


def _validate(path: Path, cwd: Path) -> tuple[int, list[str]]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, ["validate", "--catalog", str(path)])
    finally:
        os.chdir(old)
    return result.exit_code, result.stderr.splitlines()


def test_every_broken_case_is_checked():
    assert sorted(p.name for p in BROKEN.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_broken_case_fails_with_file_line_field(case):
    code, lines = _validate(BROKEN / case, BROKEN / case)  # cwd = the case: paths print relative
    assert code == 1, lines
    problems = [ln for ln in lines if not ln.startswith("catalog invalid")]
    for want in EXPECTED[case]:
        assert any(ln.startswith(want) for ln in problems), f"{want!r} not in {problems}"
    # nothing else: every reported problem is one we expect (no cascades)
    assert len(problems) == len(EXPECTED[case]), problems
    assert lines[-1] == f"catalog invalid: {len(problems)} problem(s)"


def test_paths_print_relative_to_cwd_else_absolute(tmp_path):
    case = BROKEN / "bad_doi"
    _, lines = _validate(case, FIXTURES)
    assert lines[0].startswith("catalog_broken/bad_doi/papers/alpha-net.yaml:12: doi:")
    _, lines = _validate(case, tmp_path)
    assert lines[0].startswith(f"{case / 'papers' / 'alpha-net.yaml'}:12: doi:")


def test_several_errors_are_all_reported_by_the_api():
    with pytest.raises(CatalogError) as info:
        load_catalog(BROKEN / "several")
    fields = [p.field for p in info.value.problems]
    assert fields == ["landing_page", "access", "year", "doi", "datasets.1", "abstract"]
    assert all(isinstance(p, Problem) and p.line for p in info.value.problems)
    assert str(info.value).count("\n") == len(fields) - 1


def test_valid_catalog_loads():
    cat = load_catalog(OK)
    assert isinstance(cat, Catalog)
    assert sorted(cat.papers) == ["alpha-net", "beta-gan"] and sorted(cat.datasets) == ["toy"]
    assert cat.get("toy").abbreviation == "TOY"
    assert cat.get("alpha-net").implementation.model == "copy-f1"
    assert cat.summary() == "2 papers, 1 datasets, 1 implemented"
    code, _ = _validate(OK, OK)
    assert code == 0


def test_unknown_id_suggests_close_names():
    cat = load_catalog(OK)
    with pytest.raises(UnknownIdError, match="Did you mean: alpha-net") as info:
        cat.get("alpha-nett")
    assert isinstance(info.value, KeyError) and info.value.suggestions == ["alpha-net"]
    with pytest.raises(KeyError, match="unknown paper or dataset 'zzz'.$|unknown paper or dataset 'zzz'\\. See"):
        cat.get("zzz")


def test_cache_is_invalidated_when_a_file_changes(tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    first = load_catalog(root)
    assert load_catalog(root) is first  # cached
    f = root / "papers" / "beta-gan.yaml"
    f.write_text(f.read_text().replace("year: 2021", "year: 2019"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    second = load_catalog(root)
    assert second is not first and second.papers["beta-gan"].year == 2019
    f.write_text(f.read_text().replace("year: 2019", "year: 1900"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 2 * 10**9))
    with pytest.raises(CatalogError, match=r"beta-gan.yaml:\d+: year: year 1900"):
        load_catalog(root)


def test_missing_field_todo_placeholder_and_yml(tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    f = root / "papers" / "beta-gan.yaml"
    text = f.read_text().replace("  reason: toy entry", "  reason: TODO").replace("category: gan\n", "")
    f.write_text(text)
    (root / "datasets" / "extra.yml").write_text("id: extra\n")
    _, problems = validate_catalog(root, models=False)
    msgs = [str(p).replace(str(root) + "/", "") for p in problems]
    assert any(m.startswith("papers/beta-gan.yaml:1: category: required field is missing") for m in msgs), msgs
    assert any(m.startswith("papers/beta-gan.yaml:14: implementation.reason: still the TODO placeholder")
               for m in msgs), msgs
    assert any(m.startswith("datasets/extra.yml: catalog files end in .yaml") for m in msgs), msgs


def test_dates_are_kept_as_text_and_checked(tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    f = root / "datasets" / "toy.yaml"
    f.write_text(f.read_text() + "n_dates: 2\ndates:\n- 2002-04-11\n- 2002-13-01\n")
    _, problems = validate_catalog(root, models=False)
    assert [(p.line, p.field) for p in problems] == [(24, "dates.1")], problems
    f.write_text(f.read_text().replace("2002-13-01", "2002-05-13"))
    cat, problems = validate_catalog(root, models=False)
    assert problems == [] and cat.datasets["toy"].dates == ["2002-04-11", "2002-05-13"]
    f.write_text(f.read_text().replace("n_dates: 2", "n_dates: 3"))
    _, problems = validate_catalog(root, models=False)
    assert [(p.line, p.field) for p in problems] == [(22, "dates")], problems


def test_not_a_catalog(tmp_path):
    with pytest.raises(CatalogError, match="catalog folder not found"):
        load_catalog(tmp_path / "nope")
    with pytest.raises(CatalogError, match="neither papers/ nor datasets/"):
        load_catalog(tmp_path)


def test_default_catalog_dir_is_the_shipped_catalog():
    root = default_catalog_dir()
    assert (root / "papers").is_dir() and (root / "datasets").is_dir()


def test_shipped_catalog_validates():
    cat, problems = validate_catalog()
    assert problems == [], "\n".join(map(str, problems))
    assert len(cat.papers) >= 47 and len(cat.datasets) >= 22
    for pid in ("stfdcnn", "swinstfm", "mlff-gan", "starfm", "survey-sun-2026"):
        assert pid in cat.papers
    for did in ("cia", "lgc", "demo"):
        assert did in cat.datasets
    code, lines = _validate(default_catalog_dir(), Path.cwd())
    assert code == 0 and lines == []


def test_registered_models_point_at_catalog_papers():
    """The registry's paper= ids are catalog papers (the other direction is `validate`'s job)."""
    from stfcat.models import list_models, model_info

    cat = load_catalog()
    wrong = {mid: model_info(mid).paper for mid in list_models()
             if model_info(mid).paper is not None and model_info(mid).paper not in cat.papers}
    assert wrong == {}, "models naming papers that are not in the catalog"


def test_dataset_bibtex_and_key_collisions_are_checked(tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    f = root / "datasets" / "toy.yaml"
    f.write_text(f.read_text() + "bibtex: '@misc{Toy2020 title={x}}'\n")
    _, problems = validate_catalog(root, models=False)
    assert [(p.line, p.field) for p in problems] == [(21, "bibtex")]
    assert "malformed BibTeX block starting '@misc{Toy2020 title=" in problems[0].message
    f.write_text(f.read_text().replace("@misc{Toy2020 title", "@misc{Lovelace2020AlphaNet, title"))
    _, problems = validate_catalog(root, models=False)
    assert [(p.line, p.field) for p in problems] == [(21, "bibtex")]
    assert "also the key of paper 'alpha-net'" in problems[0].message
    f.write_text(f.read_text().replace("Lovelace2020AlphaNet", "Toy2020"))
    assert validate_catalog(root, models=False)[1] == []
    g = root / "papers" / "beta-gan.yaml"
    g.write_text(g.read_text() + "bibtex_key: Lovelace2020AlphaNet\n")
    _, problems = validate_catalog(root, models=False)
    assert [(p.file.name, p.line, p.field) for p in problems] == [("beta-gan.yaml", 17, "bibtex_key")]


@pytest.mark.parametrize(("field", "old", "new", "line"), [
    ("category", "category: gan", "category: gans", 11),
    ("task", "task: reflectance", "task: temperature", 12),
])
def test_category_and_task_must_be_enum_values(tmp_path, field, old, new, line):
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    f = root / "papers" / "beta-gan.yaml"
    f.write_text(f.read_text().replace(old, new))
    _, problems = validate_catalog(root, models=False)
    assert [(p.file.name, p.line, p.field) for p in problems] == [("beta-gan.yaml", line, field)], problems
    assert "Input should be" in problems[0].message and repr(new.split(": ")[1]) in problems[0].message


def test_dataset_references_to_papers_must_resolve(tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    f = root / "datasets" / "toy.yaml"
    f.write_text(f.read_text().replace("citation:\n- alpha-net", "citation:\n- alpha-nett"))
    _, problems = validate_catalog(root, models=False)
    assert [(p.line, p.field) for p in problems] == [(16, "citation.0")], problems
    assert problems[0].message == "unknown paper 'alpha-nett'; did you mean alpha-net?"


def test_direct_access_needs_files_with_checksums(tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    f = root / "datasets" / "toy.yaml"
    f.write_text(f.read_text().replace("  kind: external", "  kind: direct"))
    _, problems = validate_catalog(root, models=False)
    assert [(p.line, p.field) for p in problems] == [(17, "access")], problems
    assert "needs at least one file with url and sha256" in problems[0].message
    f.write_text(f.read_text().replace("  kind: direct", "  kind: direct\n  files:\n  - name: a.tif\n"
                                       "    url: https://example.org/a.tif\n    sha256: abc\n    size: 10"))
    _, problems = validate_catalog(root, models=False)
    assert [p.field for p in problems] == ["access.files.0.sha256"], problems
