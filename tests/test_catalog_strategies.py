"""hypothesis strategies for catalog entries, shared by the schema and BibTeX property tests
(no tests here; the name only keeps it next to its users)."""

from __future__ import annotations

import datetime as dt
import string

from hypothesis import strategies as st

from stfcat.schemas import Category, Task

# Any printable text: letters with accents, CJK, LaTeX specials, braces, quotes. Control and
# separator characters are left out: YAML and BibTeX fold them into spaces/new lines.
_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Co", "Cn"), blacklist_characters="\ufeff")
text = st.text(_chars, min_size=1, max_size=40).map(str.strip).filter(bool)
latexy = st.sampled_from(["{", "}", "\\", "&", "%", "$", "#", "_", "~", "^", "ü", "É", "ø", "{MODIS}", "and"])


@st.composite
def rich_text(draw, min_size=1) -> str:
    parts = draw(st.lists(st.one_of(text, latexy), min_size=min_size, max_size=6))
    out = " ".join(parts).strip()
    return out or "x"


slug = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
doi = st.builds(
    lambda reg, suffix: f"10.{reg}/{suffix}",
    st.integers(1000, 999999999),
    st.text(string.ascii_letters + string.digits + "._-;()/<>:{}\\", min_size=1, max_size=30),
)
url = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}.org/{path}",
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True),
    st.text(string.ascii_letters + string.digits + "/_-.?=&~{}", max_size=30),
)
year = st.integers(1990, dt.date.today().year + 1)


@st.composite
def paper_dicts(draw) -> dict:
    pages = draw(st.one_of(st.none(), st.integers(1, 99999).map(str),
                           st.tuples(st.integers(1, 999), st.integers(1, 999)).map(lambda t: f"{t[0]}-{t[1]}")))
    implemented = draw(st.booleans())
    return {
        "id": draw(slug),
        "short_name": draw(rich_text()),
        "title": draw(rich_text()),
        "authors": draw(st.lists(rich_text(), min_size=1, max_size=4)),
        "venue": draw(rich_text()),
        "venue_abbr": draw(st.sampled_from(["RSE", "TGRS", "IGARSS", "JSTARS", "CVPR", "Remote Sens."])),
        "year": draw(year),
        "month": draw(st.one_of(st.none(), st.integers(1, 12))),
        "volume": draw(st.one_of(st.none(), st.integers(1, 500).map(str))),
        "issue": draw(st.one_of(st.none(), st.integers(1, 24).map(str))),
        "pages": pages,
        "doi": draw(doi),
        "url": draw(st.one_of(st.none(), url)),
        "code_url": draw(st.one_of(st.none(), url)),
        "category": draw(st.sampled_from(list(Category))).value,
        "task": draw(st.sampled_from(list(Task))).value,
        "sensors": draw(st.lists(text, max_size=3)),
        "datasets": draw(st.lists(slug, max_size=3)),
        "summary": draw(rich_text()) + " " + "a summary long enough to pass the minimum length check",
        "tags": draw(st.lists(text, max_size=3)),
        "implementation": {"model": draw(slug), "notes": []} if implemented
        else {"reason": draw(rich_text())},
        "in_survey": draw(st.booleans()),
    }
