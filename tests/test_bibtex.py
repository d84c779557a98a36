"""BibTeX export round trips (whole shipped catalog + generated papers) and import skeletons."""

from __future__ import annotations

import shutil
from pathlib import Path

import bibtexparser
import pytest
from hypothesis import given, settings
from test_catalog_strategies import paper_dicts

from stfcat.bibtex import (
    BibtexError,
    entries_for,
    entry_to_fields,
    escape_latex,
    is_conference,
    latex_to_text,
    paper_entry,
    paper_fields,
    paper_key,
    plan_import,
    to_bibtex,
)
from stfcat.catalog import load_catalog, validate_catalog
from stfcat.schemas import Dataset, Paper

OK = Path(__file__).parent / "fixtures" / "catalog_ok"


def _round_trip(papers: list[Paper]) -> None:
    text = to_bibtex(paper_entry(p) for p in papers)
    lib = bibtexparser.parse_string(text)
    assert lib.failed_blocks == []
    assert [e.key for e in lib.entries] == [paper_key(p) for p in papers]
    for paper, entry in zip(papers, lib.entries, strict=True):
        assert entry_to_fields(entry) == paper_fields(paper), entry.key
        assert entry.entry_type == ("inproceedings" if is_conference(paper) else "article")


def test_keys_and_entry_types():
    cat = load_catalog(OK)
    alpha, beta = cat.papers["alpha-net"], cat.papers["beta-gan"]
    assert paper_key(alpha) == "Lovelace2020AlphaNet"
    assert paper_key(beta) == "Muller2021BetaGAN"  # accents folded, '-' dropped
    assert paper_key(beta.model_copy(update={"bibtex_key": "Mine2021"})) == "Mine2021"
    assert paper_entry(alpha).entry_type == "article"
    assert paper_entry(beta).entry_type == "inproceedings"
    fields = paper_entry(beta).fields_dict
    assert "booktitle" in fields and "journal" not in fields
    assert fields["title"].value == r"Beta-{GAN}: another toy entry for \{braces\} \& 100\% special\_chars"


@pytest.mark.parametrize("plain", ["a & b", "{x}", "50%", r"\alpha", "~^", "$x_1$", "ü & {MODIS}", "#1"])
def test_escape_inverse(plain):
    assert latex_to_text(escape_latex(plain)) == plain
    assert bibtexparser.parse_string("@misc{k, title={" + escape_latex(plain) + "}}").failed_blocks == []


def test_fixture_catalog_round_trips():
    _round_trip(list(load_catalog(OK).papers.values()))


def test_shipped_catalog_round_trips():
    cat, problems = validate_catalog(models=False)
    assert cat is not None, "\n".join(map(str, problems))
    _round_trip(sorted(cat.papers.values(), key=lambda p: p.id))
    if "stfdcnn" in cat.papers:
        assert paper_key(cat.papers["stfdcnn"]) == "Song2018STFDCNN"
    # datasets cite their papers (and their own bibtex): everything parses
    text = to_bibtex(entries_for(cat.datasets.values(), cat.papers))
    assert bibtexparser.parse_string(text).failed_blocks == []


@settings(max_examples=80, deadline=None)
@given(paper_dicts())
def test_generated_papers_round_trip(data):
    _round_trip([Paper.model_validate(data)])


def _dataset(**extra) -> Dataset:
    cat = load_catalog(OK)
    return cat.datasets["toy"].model_copy(update=extra)


def test_dataset_cites_its_papers_and_own_bibtex():
    cat = load_catalog(OK)
    ds = _dataset(bibtex="@misc{Toy2020Data, title={The toy data}, year={2020}}")
    keys = [e.key for e in entries_for([ds, cat.papers["alpha-net"]], cat.papers)]
    assert keys == ["Lovelace2020AlphaNet", "Toy2020Data"]  # no duplicate for alpha-net
    with pytest.raises(BibtexError, match=r"dataset toy: bibtex:1: malformed BibTeX block starting '@misc\{x"):
        entries_for([_dataset(bibtex="@misc{x, title={unclosed\n@misc{y, title={ok}}")], cat.papers)


BIB = r"""
@article{Chen2022,
  author = {Chen, Guanyu and Jiao, Peng and M{\"u}ller, Jo},
  title = {{SwinSTFM}: Remote sensing spatiotemporal fusion using {S}win transformer},
  journal = {IEEE Transactions on Geoscience and Remote Sensing},
  year = {2022}, month = jun, volume = {60}, pages = {1--18},
  doi = {https://doi.org/10.1109/TGRS.2022.3182809},
}
@inproceedings{Nobody2021,
  author = {Nobody, A.},
  title = {A fusion method without a short name},
  booktitle = {IGARSS 2021},
  year = {2021},
  doi = {10.1016/j.rse.2020.000001},
}
"""


def _catalog_copy(tmp_path: Path) -> Path:
    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    return root


def test_import_plan_builds_skeletons_that_fail_until_filled(tmp_path):
    root = _catalog_copy(tmp_path)
    bib = tmp_path / "new.bib"
    bib.write_text(BIB)
    plan = plan_import(bib, root, "transformer")
    assert [m.split(":")[0] for m in plan.skipped] == ["skipped Nobody2021"]  # DOI of alpha-net
    assert "papers/alpha-net.yaml" in plan.skipped[0]
    [(path, text, todo)] = plan.files
    assert path == root / "papers" / "swinstfm.yaml"
    assert todo == ["venue_abbr", "task", "summary", "implementation.reason"]
    path.write_text(text)
    _, problems = validate_catalog(root, models=False)
    assert sorted(p.field for p in problems if p.file == path) == sorted(todo)
    for p in problems:
        assert "TODO" in p.message or "task" in p.field
    # fill them in: it validates
    filled = (text.replace("venue_abbr: TODO", "venue_abbr: TGRS").replace("task: TODO", "task: reflectance")
              .replace("summary: TODO", "summary: Swin transformer blocks extract multi-scale features of the "
                                        "fine and coarse images and fuse them.")
              .replace("reason: TODO", "reason: not yet"))
    path.write_text(filled)
    cat, problems = validate_catalog(root, models=False)
    assert problems == [], problems
    paper = cat.papers["swinstfm"]
    assert paper.authors == ["Guanyu Chen", "Peng Jiao", "Jo Müller"]
    assert paper.title.startswith("SwinSTFM: Remote sensing") and paper.doi == "10.1109/TGRS.2022.3182809"
    assert (paper.month, paper.volume, paper.pages, paper.category.value) == (6, "60", "1-18", "transformer")
    # a second import refuses to overwrite, the DOI is known now: skipped
    plan = plan_import(bib, root)
    assert plan.files == [] and len(plan.skipped) == 2


def test_import_refuses_to_overwrite(tmp_path):
    root = _catalog_copy(tmp_path)
    bib = tmp_path / "a.bib"
    bib.write_text("@article{k, title={Alpha-Net: again}, author={X, Y}, year={2020}, doi={10.1/zz}}")
    with pytest.raises(BibtexError, match="alpha-net.yaml exists; refusing to overwrite"):
        plan_import(bib, root)


def test_import_malformed_block_names_it(tmp_path):
    root = _catalog_copy(tmp_path)
    bib = tmp_path / "bad.bib"
    bib.write_text("@article{good, title={Fine}, year={2020}}\n\n@article{broken, title = {no end\n"
                   "@misc{z, title={ok}}\n")
    with pytest.raises(BibtexError) as info:
        plan_import(bib, root)
    assert str(info.value).startswith(f"{bib}:3: malformed BibTeX block starting '@article{{broken, title = {{no end")
