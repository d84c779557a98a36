"""Ranked search: exact short names / DOIs first, prefixes and accents tolerated."""

from __future__ import annotations

from pathlib import Path

import pytest

from stfcat.catalog import load_catalog
from stfcat.search import search

OK = Path(__file__).parent / "fixtures" / "catalog_ok"


@pytest.fixture(scope="module")
def cat():
    return load_catalog(OK)


@pytest.mark.parametrize(("query", "first"), [
    ("AlphaNet", "alpha-net"),
    ("alpha", "alpha-net"),            # prefix of the short name
    ("beta gan", "beta-gan"),
    ("10.1109/IGARSS.2021.000002", "beta-gan"),  # DOI, exact
    ("10.1109/igarss.2021.000002", "beta-gan"),  # DOIs are case-insensitive
    ("muller", "beta-gan"),            # accent-folded author
    ("Lovelace", "alpha-net"),
    ("TOY", "toy"),                    # dataset abbreviation beats the 'toy' tag of alpha-net
    ("nowhere", "toy"),
])
def test_first_hit(cat, query, first):
    hits = search(cat, query)
    assert hits and hits[0].id == first, hits


def test_exact_short_name_outranks_word_matches(cat):
    hits = search(cat, "AlphaNet")
    assert hits[0].score >= 100 and all(h.score < 100 for h in hits[1:])


def test_no_match_and_limit(cat):
    assert search(cat, "zzzz qqqq") == []
    assert search(cat, "   ") == []
    assert len(search(cat, "toy", limit=1)) == 1


def test_shipped_catalog_swin_finds_swinstfm():
    hits = search(load_catalog(), "swin")
    assert hits[0].id == "swinstfm"
    assert search(load_catalog(), "STFDCNN")[0].id == "stfdcnn"


@pytest.mark.parametrize(("query", "first"), [
    ("high-pass modulation", "stfdcnn"),   # words of a summary
    ("Chanussot", "stfnet"),               # an author (of stfnet and survey-li-2022)
    ("10.1016/j.jag.2022.103113", "mustfn"),
    ("diffusion", "diffstf"),
])
def test_shipped_catalog_queries(query, first):
    hits = search(load_catalog(), query)
    assert hits and first in [h.id for h in hits[:3]], hits[:5]
