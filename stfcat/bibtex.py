"""BibTeX export (catalog -> ``.bib``) and import (``.bib`` -> YAML skeletons) with bibtexparser v2.

Catalog text is plain Unicode. On export the characters that mean something to (La)TeX are
escaped (``&`` -> ``\\&``, ``{`` -> ``\\{``, ...), accents stay as UTF-8 (biber and ``inputenc``
read them), and upper-case words of titles are wrapped in braces so bibliography styles keep
their case. :func:`latex_to_text` is the exact inverse, which is what the round-trip tests use.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import bibtexparser
from bibtexparser import model

from stfcat.schemas import Dataset, Paper

# Venues published as proceedings: their papers are @inproceedings with a booktitle.
_CONFERENCE_WORDS = re.compile(r"\b(conference|symposium|proceedings|workshop|congress|meeting)\b", re.I)
_CONFERENCE_ABBRS = {
    "IGARSS", "CVPR", "ICCV", "ECCV", "NEURIPS", "NIPS", "ICLR", "ICML", "AAAI", "IJCAI", "ICIP", "ICASSP",
    "WACV", "BMVC", "ACM MM", "KDD", "MULTITEMP", "WHISPERS", "ISPRS CONGRESS",
}

_ESCAPES = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
    "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_ESCAPE_RE = re.compile("|".join(re.escape(c) for c in _ESCAPES))
_UNESCAPE_RE = re.compile(r"\\textbackslash\{\}|\\textasciitilde\{\}|\\textasciicircum\{\}|\\[{}&%$#_]|[{}]")
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
# Words worth protecting from bibliography-style lower-casing: two or more capitals (STFDCNN,
# SwinSTFM, MODIS) or a capital after the first letter.
_PROTECT_RE = re.compile(r"(?<![\w\\{])([A-Za-z0-9]*[A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*|[a-z0-9]+[A-Z][A-Za-z0-9]*)")


def escape_latex(text: str) -> str:
    """Plain text -> BibTeX field text (the inverse of :func:`latex_to_text`)."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], text)


def latex_to_text(value: str) -> str:
    """Undo :func:`escape_latex` and drop grouping braces (case protection)."""
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(), ""), value)


def verbatim(value: str) -> str:
    """DOIs and URLs are verbatim fields (biblatex prints them as written): no LaTeX escapes,
    only the characters that would unbalance the BibTeX value are percent-encoded."""
    return value.replace("\\", "%5C").replace("{", "%7B").replace("}", "%7D")


def unverbatim(value: str) -> str:
    return value.replace("%7D", "}").replace("%7B", "{").replace("%5C", "\\")


def _protect_case(escaped: str) -> str:
    # Only touch stretches outside escapes: split on backslash commands first.
    parts = re.split(r"(\\[A-Za-z]+\{\}|\\.)", escaped)
    return "".join(p if i % 2 else _PROTECT_RE.sub(r"{\1}", p) for i, p in enumerate(parts))


def _ascii(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isascii() and c.isalnum())


def family_name(author: str) -> str:
    """Family name of a 'Given Family' author string (the last word)."""
    words = author.replace(",", " ").split()
    return words[-1] if words else author


def paper_key(paper: Paper) -> str:
    """Stable citation key ``FamilyYearShort`` (e.g. ``Song2018STFDCNN``); ``bibtex_key`` overrides."""
    if paper.bibtex_key:
        return paper.bibtex_key
    return f"{_ascii(family_name(paper.authors[0])) or 'Anon'}{paper.year}{_ascii(paper.short_name)}"


def is_conference(paper: Paper) -> bool:
    abbr = paper.venue_abbr.upper()
    return bool(_CONFERENCE_WORDS.search(paper.venue)) or any(
        re.search(rf"\b{re.escape(a)}\b", abbr) for a in _CONFERENCE_ABBRS
    )


def _author_field(authors: Iterable[str]) -> str:
    out = []
    for a in authors:
        esc = escape_latex(a)
        # 'and' splits names and a comma reorders them: protect such names as one unit.
        if re.search(r"\band\b", a, re.I) or "," in a:
            esc = "{" + esc + "}"
        out.append(esc)
    return " and ".join(out)


def split_authors(value: str) -> list[str]:
    """Split a BibTeX author field on top-level ``and`` (braces protect)."""
    names, depth, start, i = [], 0, 0, 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0 and value[i:i + 5].lower() == " and ":
            names.append(value[start:i])
            start = i = i + 5
            continue
        i += 1
    names.append(value[start:])
    return [n.strip() for n in names if n.strip()]


def paper_entry(paper: Paper) -> model.Entry:
    conference = is_conference(paper)
    fields: list[tuple[str, str]] = [
        ("author", _author_field(paper.authors)),
        ("title", _protect_case(escape_latex(paper.title))),
        ("booktitle" if conference else "journal", escape_latex(paper.venue)),
        ("year", str(paper.year)),
    ]
    if paper.month:
        fields.append(("month", str(paper.month)))
    if paper.volume:
        fields.append(("volume", escape_latex(paper.volume)))
    if paper.issue:
        fields.append(("number", escape_latex(paper.issue)))
    if paper.pages:
        fields.append(("pages", escape_latex(re.sub(r"(?<=\w)\s*[-\u2013]\s*(?=\w)", "--", paper.pages, count=1))))
    fields.append(("doi", verbatim(paper.doi)))
    if paper.url:
        fields.append(("url", verbatim(paper.url)))
    return model.Entry("inproceedings" if conference else "article", paper_key(paper),
                       [model.Field(k, v) for k, v in fields])


def entry_to_fields(entry: model.Entry) -> dict[str, object]:
    """The catalog fields an exported entry carries, decoded back to plain text (for round trips)."""
    f = {k.lower(): v.value for k, v in entry.fields_dict.items()}
    out: dict[str, object] = {
        "authors": [latex_to_text(a) for a in split_authors(f["author"])],
        "title": latex_to_text(f["title"]),
        "venue": latex_to_text(f.get("journal") or f.get("booktitle", "")),
        "year": int(f["year"]),
        "doi": unverbatim(f["doi"]),
    }
    if "month" in f:
        out["month"] = int(f["month"])
    if "volume" in f:
        out["volume"] = latex_to_text(f["volume"])
    if "number" in f:
        out["issue"] = latex_to_text(f["number"])
    if "pages" in f:
        out["pages"] = latex_to_text(f["pages"]).replace("--", "-", 1)
    if "url" in f:
        out["url"] = unverbatim(f["url"])
    return out


def paper_fields(paper: Paper) -> dict[str, object]:
    """What :func:`entry_to_fields` must give back for ``paper``."""
    out: dict[str, object] = {"authors": list(paper.authors), "title": paper.title, "venue": paper.venue,
                              "year": paper.year, "doi": paper.doi}
    for name in ("month", "volume", "issue", "url"):
        if getattr(paper, name):
            out[name] = getattr(paper, name)
    if paper.pages:
        out["pages"] = re.sub(r"(?<=\w)\s*[-\u2013]\s*(?=\w)", "-", paper.pages, count=1)
    return out


def _parse(text: str, **kwargs) -> bibtexparser.Library:
    """``bibtexparser.parse_string`` without its logger warning about failed blocks: the caller
    reports each failed block itself (:func:`describe_failed_block`), once, with the file name."""
    log = logging.getLogger("bibtexparser")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return bibtexparser.parse_string(text, **kwargs)
    finally:
        log.setLevel(level)


def _raw_entries(bibtex: str, where: str) -> list[model.Entry]:
    lib = _parse(bibtex)
    if lib.failed_blocks:
        raise BibtexError([describe_failed_block(b, where) for b in lib.failed_blocks])
    return list(lib.entries)


def entries_for(items: Iterable[Paper | Dataset], papers: dict[str, Paper]) -> list[model.Entry]:
    """Entries citing ``items`` in order, without duplicate keys. A dataset cites its
    ``citation`` papers and its own ``bibtex``."""
    out: dict[str, model.Entry] = {}
    for item in items:
        if isinstance(item, Paper):
            out.setdefault(paper_key(item), paper_entry(item))
            continue
        for pid in item.citation:
            p = papers[pid]
            out.setdefault(paper_key(p), paper_entry(p))
        if item.bibtex:
            for e in _raw_entries(item.bibtex, f"dataset {item.id}: bibtex"):
                out.setdefault(e.key, e)
    return list(out.values())


def to_bibtex(entries: Iterable[model.Entry]) -> str:
    lib = bibtexparser.Library()
    for e in entries:
        lib.add(e)
    return bibtexparser.write_string(lib)


def parse_bibtex(text: str) -> list[model.Entry]:
    """Entries of ``text`` with enclosing braces removed (raw LaTeX kept); raises on bad blocks."""
    return _raw_entries(text, "<string>")


class BibtexError(ValueError):
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("\n".join(messages))


def describe_failed_block(block: object, where: str) -> str:
    """``where:LINE: malformed BibTeX block '@article{foo, ti...'`` (1-based line)."""
    line = getattr(block, "start_line", None)
    raw = " ".join(str(getattr(block, "raw", "")).split())
    snippet = raw[:40] + ("..." if len(raw) > 40 else "")
    loc = f"{where}:{line + 1}" if isinstance(line, int) else where
    error = getattr(block, "error", None)
    reason = f" ({' '.join(str(error).split())})" if error and str(error) else ""
    return f"{loc}: malformed BibTeX block starting {snippet!r}{reason}"


@dataclass
class ImportedEntry:
    key: str
    fields: dict[str, str]  # lower-case names, LaTeX decoded to Unicode


def read_bib_file(text: str, where: str) -> list[ImportedEntry]:
    """Parse a user's .bib for import: LaTeX decoded (pylatexenc, via bibtexparser), every
    malformed block an error naming it."""
    from bibtexparser.middlewares import LatexDecodingMiddleware

    lib = _parse(text, append_middleware=[LatexDecodingMiddleware()])
    if lib.failed_blocks:
        raise BibtexError([describe_failed_block(b, where) for b in lib.failed_blocks])
    out = []
    for e in lib.entries:
        fields = {k.lower(): " ".join(str(v.value).split()) for k, v in e.fields_dict.items()}
        fields["__type"] = e.entry_type.lower()
        out.append(ImportedEntry(e.key, fields))
    return out


# --------------------------------------------------------------------------- import (stfcat add)

_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}


def slugify(text: str) -> str:
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if c.isascii()).lower()
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


def given_family(name: str) -> str:
    """BibTeX 'Family, Given' (or 'Family, Jr, Given') -> the catalog's 'Given Family'."""
    parts = [p.strip() for p in name.replace("{", "").replace("}", "").split(",")]
    if len(parts) == 2:
        return f"{parts[1]} {parts[0]}".strip()
    if len(parts) == 3:
        return f"{parts[2]} {parts[0]} {parts[1]}".strip()
    return " ".join(name.replace("{", "").replace("}", "").split())


def short_name_of(fields: dict[str, str]) -> str | None:
    """A method's short name: an explicit shorthand/shortname, else a title prefix like
    'SwinSTFM: ...'."""
    for key in ("shorthand", "shortname", "short_name"):
        if fields.get(key):
            return fields[key]
    title = fields.get("title", "")
    head, sep, _ = title.partition(":")
    if sep and len(head) <= 30 and len(head.split()) <= 3:
        return head.strip()
    return None


def bare_doi(doi: str) -> str:
    return re.sub(r"^(https?://(dx\.)?doi\.org/|doi:\s*)", "", doi.strip(), flags=re.I)


@dataclass
class ImportPlan:
    files: list[tuple[object, str, list[str]]]  # (path, YAML text, fields still to fill)
    skipped: list[str]


def plan_import(bib_path, root, category: str | None = None) -> ImportPlan:
    """Work out the YAML skeletons for the entries of ``bib_path`` without writing anything.

    Raises :class:`BibtexError` (nothing should be written then) for malformed blocks, an
    existing file or two entries wanting the same id; entries whose DOI is already catalogued
    are skipped with a message."""
    from pathlib import Path

    import yaml

    bib_path, root = Path(bib_path), Path(root)
    try:
        text = bib_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BibtexError([f"{bib_path}: cannot read it as UTF-8 text ({exc})"]) from None
    from stfcat.catalog import load_yaml_bounded

    entries = read_bib_file(text, str(bib_path))
    known: dict[str, str] = {}
    for sub in ("papers", "datasets"):
        for f in sorted((root / sub).glob("*.yaml")):
            try:
                data = load_yaml_bounded(f.read_text(encoding="utf-8"))
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("doi"), str):
                known[data["doi"].lower()] = f"{sub}/{f.name}"
    plan = ImportPlan([], [])
    errors: list[str] = []
    taken: set[str] = set()
    for e in entries:
        f = e.fields
        doi = bare_doi(f.get("doi", ""))
        if doi and doi.lower() in known:
            plan.skipped.append(f"skipped {e.key}: DOI {doi} is already catalogued ({known[doi.lower()]})")
            continue
        short = short_name_of(f)
        pid = slugify(short or e.key) or "paper"
        if not pid[0].isalnum():
            pid = "p" + pid
        path = root / "papers" / f"{pid}.yaml"
        if path.exists():
            errors.append(f"{e.key}: {path} exists; refusing to overwrite it (give the entry a "
                          "'shorthand' field to choose another id)")
            continue
        if pid in taken:
            errors.append(f"{e.key}: two entries would become papers/{pid}.yaml; give one a 'shorthand' field")
            continue
        taken.add(pid)
        todo: list[str] = []

        def need(name: str, value: object, todo=todo) -> object:
            if value in (None, ""):
                todo.append(name)
                return "TODO"
            return value

        month = f.get("month", "").lower()[:3]
        data = {
            "id": pid,
            "short_name": need("short_name", short),
            "title": need("title", f.get("title")),
            "authors": [given_family(a) for a in split_authors(f.get("author", ""))] or [need("authors", None)],
            "venue": need("venue", f.get("journal") or f.get("booktitle")),
            "venue_abbr": need("venue_abbr", None),
            "year": int(f["year"]) if f.get("year", "").isdigit() else need("year", None),
            "month": _MONTHS.get(month) or (int(month) if month.isdigit() and 1 <= int(month) <= 12 else None),
            "volume": f.get("volume"),
            "issue": f.get("number") or f.get("issue"),
            "pages": re.sub(r"\s*(--|\u2013|\u2014)\s*", "-", f["pages"]) if f.get("pages") else None,
            "doi": need("doi", doi),
            "url": f.get("url"),
            "code_url": None,
            "category": need("category", category),
            "task": need("task", None),
            "sensors": [],
            "datasets": [],
            "summary": need("summary", None),
            "tags": [],
            "implementation": {"model": None, "reason": need("implementation.reason", None), "notes": []},
            "in_survey": False,
        }
        data = {k: v for k, v in data.items() if v is not None or k in ("code_url",)}
        header = (f"# Imported from {bib_path.name} ({e.key}) by `stfcat add`.\n"
                  f"# Replace every TODO ({', '.join(todo)}); `stfcat validate` fails until then.\n"
                  "# category: survey cnn transformer gan diffusion sequence other classical\n"
                  "# task: reflectance land-surface-temperature ... (see stfcat/schemas.py)\n")
        text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        plan.files.append((path, text, todo))
    if errors:
        raise BibtexError(errors)
    return plan
