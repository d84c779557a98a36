"""The shipped catalog against the survey's README (``../shared/seed/survey-readme.txt``): every
listed paper and dataset is catalogued with the README's title, authors, volume, issue, pages,
year, DOI and code availability, in the README's section. Skipped when the seed is absent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stfcat.catalog import load_catalog

SEED = Path(__file__).resolve().parents[1].parent / "shared" / "seed" / "survey-readme.txt"
SECTIONS = {"Survey": "survey", "CNN": "cnn", "Transformer": "transformer", "GAN": "gan",
            "Diffusion Model": "diffusion", "Sequence Model": "sequence", "Others": "other"}
DATASET_SECTIONS = {"Earth Observation Datasets": "earth-observation",
                    "Ocean and Meteorological Datasets": "ocean-meteorological",
                    "Multi-source Integrations": "multi-source"}
# Section sizes the README states in its badges (CNN 16, Transformer 5, ...) plus 6 surveys.
COUNTS = {"survey": 6, "cnn": 16, "transformer": 5, "gan": 5, "diffusion": 4, "sequence": 3, "other": 6}


def _seed_text() -> str:
    if not SEED.is_file():
        pytest.skip(f"survey README seed not found at {SEED}")
    return SEED.read_text(encoding="utf-8")


def _readme_papers() -> list[dict]:
    out, section = [], None
    for line in _seed_text().splitlines():
        head = line.strip()
        if head in SECTIONS:
            section = SECTIONS[head]
        elif head == "Datasets":
            section = None
        m = re.match(r"\s*•\s*\[(?P<tag>[^\]]+)\]\s*\[paper\](?P<rest>.*)$", line)
        if not m or section is None:
            continue
        rest = m["rest"]
        t = re.search(r'"(?P<title>.+?),"', rest)
        authors = rest[: t.start()].replace("[code]", "").replace("Stars", "").replace("No Official Code", "")
        tail = rest[t.end():]
        out.append({
            "tag": m["tag"], "category": section, "title": t["title"],
            "families": _families(authors),
            "has_code": "[code]" in rest[: t.start()],
            "year": int(re.search(r"\b(19|20)\d\d\b", m["tag"]).group()),
            "volume": _num(r"vol\. (\d+)", tail), "issue": _num(r"no\. (\d+)", tail),
            "pages": _num(r"pp\. ([\d-]+)", tail),
            "doi": re.search(r"doi: (\S+?)\.?$", tail.strip())[1],
        })
    return out


def _num(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    return m[1] if m else None


def _families(authors: str) -> list[str]:
    """Family names from the README's author list ('X. Zhu, F. Cai and T. Williams' or
    'Lian, Z., Zhan, Y., & Huang, X.')."""
    parts = re.split(r",\s*(?:and\s+|&\s*)?|\s+and\s+", authors.strip().rstrip(","))
    return [p.split()[-1] for p in parts if p.strip() and re.search(r"[a-z]", p)]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def readme():
    return _readme_papers()


def test_readme_parse_found_every_section(readme):
    counts = {c: sum(1 for p in readme if p["category"] == c) for c in COUNTS}
    assert counts == COUNTS


def test_every_readme_paper_is_catalogued_exactly(catalog, readme):
    by_doi = {p.doi.lower(): p for p in catalog.papers.values()}
    wrong = []
    for entry in readme:
        paper = by_doi.get(entry["doi"].lower())
        if paper is None:
            wrong.append(f"{entry['tag']}: DOI {entry['doi']} not in the catalog")
            continue
        got = {"category": paper.category.value, "title": paper.title, "doi": paper.doi, "year": paper.year,
               "families": [a.split()[-1] for a in paper.authors], "has_code": paper.code_url is not None,
               "volume": paper.volume, "issue": paper.issue if entry["issue"] else None,
               "pages": paper.pages if entry["pages"] else None}
        want = {k: entry[k] for k in got}
        for k in got:
            if got[k] != want[k]:
                wrong.append(f"{paper.id}.{k}: catalog {got[k]!r} != README {want[k]!r}")
        if not paper.in_survey:
            wrong.append(f"{paper.id}: listed by the README but in_survey is false")
    assert not wrong, "\n".join(wrong)


def test_extras_are_the_survey_srsf_gan_and_the_classical_baselines(catalog, readme):
    listed = {e["doi"].lower() for e in readme}
    extras = {p.id for p in catalog.papers.values() if p.doi.lower() not in listed}
    assert extras >= {"survey-sun-2026", "srsf-gan", "starfm", "estarfm", "fsdaf", "fitfc"}
    assert {p.id for p in catalog.papers.values() if p.category.value == "classical"} >= {
        "starfm", "estarfm", "fsdaf", "fitfc"}
    sun = catalog.papers["survey-sun-2026"]
    bib = _seed_text()
    assert f"title = {{{sun.title}}}" in bib and f"doi = {{https://doi.org/{sun.doi}}}" in bib
    assert (sun.volume, sun.pages, sun.year) == ("126", "103675", 2026)


def test_every_readme_dataset_is_catalogued(catalog):
    section, wrong, seen = None, [], 0
    lines = _seed_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() in DATASET_SECTIONS:
            section = DATASET_SECTIONS[line.strip()]
        m = re.match(r"\s*•\s*(?P<name>[^[\n]+?)\s*\[Link\]", line)
        if not m or section is None:
            continue
        seen += 1
        first = m["name"].split()[0].lower()
        hits = [d for d in catalog.datasets.values()
                if d.abbreviation.lower() == first or d.name.lower().startswith(first) or d.id == first]
        if len(hits) != 1:
            wrong.append(f"{m['name']}: {len(hits)} catalog datasets match")
            continue
        ds = hits[0]
        if ds.group.value != section:
            wrong.append(f"{ds.id}: group {ds.group.value} != README section {section}")
        res = next(ln for ln in lines[i + 1:i + 6] if "Resolution:" in ln)
        r = re.search(r"([\d.]+)\s*(m\b|°)", res)
        if r and ds.fine.resolution is not None:
            unit = "deg" if r[2] == "°" else "m"
            if (float(r[1]), unit) != (ds.fine.resolution.value, ds.fine.resolution.unit):
                wrong.append(f"{ds.id}: fine resolution {ds.fine.resolution} != README {r[1]}{r[2]}")
    assert seen == 21
    assert not wrong, "\n".join(wrong)
    assert "demo" in catalog.datasets


def test_summaries_have_two_to_four_sentences(catalog):
    # A sentence ends with . ! or ? before a space/end, not after an abbreviation like 'e.g.'.
    ends = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bet al)(?<!\bvs)[.!?](?=\s|$)")
    wrong = {pid: len(ends.findall(p.summary)) for pid, p in catalog.papers.items()
             if not 2 <= len(ends.findall(p.summary)) <= 4}
    assert not wrong, f"summaries must have 2-4 sentences: {wrong}"


def test_code_urls_are_repository_roots(catalog):
    wrong = [f"{p.id}: {p.code_url}" for p in catalog.papers.values()
             if p.code_url and not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", p.code_url)]
    assert not wrong, wrong


@pytest.mark.parametrize(("did", "collection", "doi", "n", "first", "last", "size"), [
    ("cia", "csiro:5846", "10.4225/08/5111AC0BF1229", 17, "2001-10", "2002-05", "2040x1720"),
    ("lgc", "csiro:5847", "10.4225/08/5111AD2B7FEE6", 14, "2004-04", "2005-04", "2720x3200"),
])
def test_cia_and_lgc_facts(catalog, did, collection, doi, n, first, last, size):
    """The facts the issue states for the two CSIRO benchmark collections."""
    ds = catalog.datasets[did]
    assert ds.landing_page.endswith(collection) and ds.doi == doi
    assert ds.n_dates == len(ds.dates) == n and ds.dates == sorted(ds.dates)
    assert ds.dates[0].startswith(first) and ds.dates[-1].startswith(last)
    assert (ds.image_size, ds.format, ds.dtype, ds.scale_factor) == (size, "ENVI", "int16", 1e-4)
    assert len(ds.fine.bands) == len(ds.coarse.bands) == 6
    assert set(ds.split.train).isdisjoint(ds.split.test) and set(ds.split.train + ds.split.test) <= set(ds.dates)
