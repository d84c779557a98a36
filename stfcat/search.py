"""Ranked search over the catalog: weighted token scoring, exact short-name/id/DOI hits first."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from stfcat.catalog import Catalog
from stfcat.schemas import Dataset, Paper

# Weight of a query token found in each field (exact token; a prefix scores 60 %, a substring of
# a name 40 %).
WEIGHTS = {"short_name": 8.0, "id": 6.0, "tags": 4.0, "title": 3.0, "authors": 3.0, "doi": 3.0,
           "venue": 1.0, "sensors": 1.0, "summary": 1.0}
EXACT_BONUS = 100.0  # the whole query is the short name, id, abbreviation or DOI


@dataclass(frozen=True)
class Hit:
    score: float
    kind: str  # "paper" | "dataset"
    id: str
    label: str  # short name / abbreviation
    title: str


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", _fold(text))


def _compact(text: str) -> str:
    return "".join(tokens(text))


def _fields(item: Paper | Dataset) -> dict[str, list[str]]:
    if isinstance(item, Paper):
        return {"short_name": [item.short_name], "id": [item.id], "tags": item.tags, "title": [item.title],
                "authors": item.authors, "doi": [item.doi], "venue": [item.venue, item.venue_abbr],
                "sensors": item.sensors, "summary": [item.summary]}
    return {"short_name": [item.abbreviation], "id": [item.id], "title": [item.name], "doi": [item.doi or ""],
            "sensors": [item.fine.name] + ([item.coarse.name] if item.coarse else []),
            "summary": [item.summary or "", item.region]}


def score(query: str, item: Paper | Dataset) -> float:
    q_tokens = tokens(query)
    if not q_tokens:
        return 0.0
    fields = _fields(item)
    total = 0.0
    q_compact = _compact(query)
    for name in ("short_name", "id", "doi"):
        if any(q_compact and q_compact == _compact(v) for v in fields.get(name, [])):
            total += EXACT_BONUS
    for field_name, values in fields.items():
        weight = WEIGHTS[field_name]
        field_tokens = [t for v in values for t in tokens(v)]
        names = [_compact(v) for v in values] if field_name in ("short_name", "id", "tags") else []
        for q in q_tokens:
            if q in field_tokens:
                total += weight
            elif len(q) >= 3 and any(t.startswith(q) for t in field_tokens):
                total += 0.6 * weight
            elif len(q) >= 3 and any(q in n for n in names):
                total += 0.4 * weight
    return total


def search(catalog: Catalog, query: str, limit: int | None = 20) -> list[Hit]:
    """Matches best first (ties by id); items that match no query token are left out."""
    hits = []
    for item in [*catalog.papers.values(), *catalog.datasets.values()]:
        s = score(query, item)
        if s > 0:
            if isinstance(item, Paper):
                hits.append(Hit(s, "paper", item.id, item.short_name, item.title))
            else:
                hits.append(Hit(s, "dataset", item.id, item.abbreviation, item.name))
    hits.sort(key=lambda h: (-h.score, h.id))
    return hits[:limit] if limit else hits
