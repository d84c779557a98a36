"""Property tests of the schemas: generated valid papers validate and survive a YAML round trip;
bad DOIs, URLs and years are rejected."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_catalog_strategies import paper_dicts

from stfcat.catalog import CatalogLoader
from stfcat.schemas import Paper

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(paper_dicts())
def test_valid_papers_validate_and_round_trip_through_yaml(data):
    paper = Paper.model_validate(data)
    dumped = yaml.safe_dump(paper.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    again = Paper.model_validate(yaml.load(dumped, Loader=CatalogLoader))
    assert again == paper


@SETTINGS
@given(paper_dicts(), st.one_of(
    st.sampled_from(["10.12/abc", "doi:10.1234/x", "https://doi.org/10.1234/x", "10.1234/", "10.1234/a b",
                     "11.1234/x", "1234/x", ""]),
    st.text(max_size=20).filter(lambda s: not s.strip().startswith("10.")),
))
def test_bad_doi_is_rejected(data, bad):
    data["doi"] = bad
    with pytest.raises(ValidationError) as info:
        Paper.model_validate(data)
    assert [e["loc"] for e in info.value.errors()] == [("doi",)]


@SETTINGS
@given(paper_dicts(), st.sampled_from(["url", "code_url"]), st.one_of(
    st.sampled_from(["ftp://example.org/x", "javascript:alert(1)", "file:///etc/passwd", "data:text/html,x",
                     "example.org", "http://", "https:// spaced.org", "//example.org/x"]),
    st.text(max_size=20).filter(lambda s: not s.strip().lower().startswith(("http://", "https://"))),
))
def test_non_http_url_is_rejected(data, field, bad):
    data[field] = bad
    with pytest.raises(ValidationError) as info:
        Paper.model_validate(data)
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


@SETTINGS
@given(paper_dicts(), st.one_of(st.integers(max_value=1989), st.integers(min_value=dt.date.today().year + 2)))
def test_year_out_of_range_is_rejected(data, bad):
    data["year"] = bad
    with pytest.raises(ValidationError, match="outside 1990"):
        Paper.model_validate(data)


@SETTINGS
@given(paper_dicts(), st.text(min_size=1, max_size=10).filter(lambda k: k not in Paper.model_fields))
def test_unknown_key_is_rejected(data, key):
    data[key] = "x"
    with pytest.raises(ValidationError) as info:
        Paper.model_validate(data)
    assert [e["type"] for e in info.value.errors()] == ["extra_forbidden"]
