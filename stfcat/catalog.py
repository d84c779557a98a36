"""Load and validate the YAML catalog (``papers/<id>.yaml``, ``datasets/<id>.yaml``).

Every problem is collected before anything is raised, and each one names the file and the line
of the offending key (``catalog/papers/x.yaml:12: doi: ...``) so a contributor fixes them all in
one pass. Line numbers come from :func:`yaml.compose`, which keeps the start mark of every node;
the node tree is only built for files that have errors, so loading a valid catalog stays fast.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stfcat.schemas import Dataset, Paper

KINDS: dict[str, type[Paper] | type[Dataset]] = {"papers": Paper, "datasets": Dataset}
PLACEHOLDER = "TODO"

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CatalogLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loader that keeps dates as strings (the schemas want ``YYYY-MM-DD`` text, and an
    unquoted date would otherwise become a ``datetime.date``) and rejects duplicate keys, which
    PyYAML would silently resolve to the last value."""


CatalogLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


CatalogLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


MAX_FILE_BYTES = 1024 * 1024  # a catalog entry is a few KB
MAX_NODES = 100_000  # nodes of a document once aliases are expanded (an entry has a few hundred)


class YamlTooBig(yaml.YAMLError):
    """A document that would expand past :data:`MAX_NODES` (an alias "bomb"); ``line`` is 1-based."""

    def __init__(self, line: int, size: int) -> None:
        super().__init__(f"aliases expand the document to more than {MAX_NODES} values ({size} at this "
                         "anchor); catalog files never need that: write the values out")
        self.line = line


def _bounded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Number of values ``node`` stands for with every alias expanded, computed once per node (so
    the cost is linear in the text) and raising :class:`YamlTooBig` at the first node past the bound."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = 1  # a recursive alias counts once (the constructor rejects nothing, but validation will)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _bounded_size(child, sizes)
            if total > MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _bounded_size(k, sizes) + _bounded_size(v, sizes)
            if total > MAX_NODES:
                break
    if total > MAX_NODES:
        raise YamlTooBig(node.start_mark.line + 1, total)
    sizes[key] = total
    return total


def load_yaml_bounded(text: str) -> Any:
    """``yaml.load`` with :class:`CatalogLoader`, refusing a document whose aliases would expand
    past :data:`MAX_NODES` values before anything walks the expanded data."""
    loader = CatalogLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _bounded_size(node, {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


@dataclass(frozen=True)
class Problem:
    """One validation problem; ``str()`` is the ``file:LINE: field.path: message`` line."""

    file: Path
    line: int | None
    field: str
    message: str

    def location(self) -> str:
        return f"{display_path(self.file)}:{self.line}" if self.line else display_path(self.file)

    def __str__(self) -> str:
        return f"{self.location()}: {self.field}: {self.message}" if self.field else (
            f"{self.location()}: {self.message}"
        )


class CatalogError(Exception):
    """The catalog does not validate; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (str(p.file), p.line or 0, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))


class UnknownIdError(KeyError):
    """An id that is neither a paper nor a dataset; the message suggests close names."""

    def __init__(self, name: str, known: Iterable[str], what: str = "paper or dataset") -> None:
        self.name = name
        self.suggestions = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {what} {name!r}.{hint} See `stfcat list papers` / `stfcat search`.")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


@dataclass
class Catalog:
    root: Path
    papers: dict[str, Paper] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    paper_files: dict[str, Path] = field(default_factory=dict, repr=False)
    dataset_files: dict[str, Path] = field(default_factory=dict, repr=False)

    def get(self, id: str) -> Paper | Dataset:
        if id in self.papers:
            return self.papers[id]
        if id in self.datasets:
            return self.datasets[id]
        raise UnknownIdError(id, [*self.papers, *self.datasets])

    def paper(self, id: str) -> Paper:
        if id not in self.papers:
            raise UnknownIdError(id, self.papers, "paper")
        return self.papers[id]

    def dataset(self, id: str) -> Dataset:
        if id not in self.datasets:
            raise UnknownIdError(id, self.datasets, "dataset")
        return self.datasets[id]

    @property
    def implemented(self) -> dict[str, str]:
        """paper id -> registered model id, for papers with an implementation."""
        return {k: p.implementation.model for k, p in self.papers.items() if p.implementation.model}

    def summary(self) -> str:
        return (f"{len(self.papers)} papers, {len(self.datasets)} datasets, "
                f"{len(self.implemented)} implemented")


def default_catalog_dir() -> Path:
    """The catalog shipped with stfcat (package ``stfcat_catalog``: the repository's ``catalog/``
    folder in an editable install, package data in a wheel)."""
    return Path(str(resources.files("stfcat_catalog")))


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (clickable in editors)."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (ValueError, OSError):  # another drive on Windows, deleted cwd
        return str(path)


# --------------------------------------------------------------------------- YAML -> lines


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, list[str], int]:
    """Walk ``loc`` down the composed tree. Returns the deepest node reached (the key node for a
    mapping entry, so the line is the key's), the path components that exist, and how many
    components of ``loc`` were consumed."""
    node, found, used = root, [], 0
    target: yaml.Node | None = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if hit is None:
                break
            target, node = hit
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            target = node = node.value[part]
        else:
            break
        found.append(str(part))
        used += 1
    return target, found, used


def _field_path(loc: tuple[Any, ...], used: int) -> str:
    # pydantic appends internal tags to a loc (e.g. 'function-after[...]' or a union member's
    # type); keep only the parts a YAML author can act on.
    parts = [str(p) for p in loc[:used]]
    for p in loc[used:]:
        if isinstance(p, int) or re.fullmatch(r"[a-z_][a-z0-9_]*", str(p)):
            parts.append(str(p))
    return ".".join(parts)


def _pydantic_problems(path: Path, text: str, err: ValidationError) -> list[Problem]:
    try:
        root = yaml.compose(text, Loader=CatalogLoader)
    except yaml.YAMLError:
        root = None
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        node, _, used = _node_at(root, loc)
        line = node.start_mark.line + 1 if node is not None else None
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not in the schema; check the spelling)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not isinstance(
            e["input"], dict | list
        ) and repr(e["input"]) not in msg:
            msg = f"{msg} (got {e['input']!r})"
        out.append(Problem(path, line, _field_path(loc, used), msg))
    return out


def _line_of(path_text: str, loc: tuple[Any, ...]) -> int | None:
    try:
        node, _, _ = _node_at(yaml.compose(path_text, Loader=CatalogLoader), loc)
    except yaml.YAMLError:
        return None
    return node.start_mark.line + 1 if node is not None else None


def _placeholders(data: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Fields still holding the ``TODO`` placeholder that ``stfcat add`` writes."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _placeholders(v, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _placeholders(v, (*loc, i))
    elif isinstance(data, str) and data.strip().upper().startswith(PLACEHOLDER):
        yield loc


# --------------------------------------------------------------------------- loading


@dataclass
class _Parsed:
    path: Path
    text: str
    kind: str
    obj: Paper | Dataset | None
    problems: list[Problem]
    data: Any = None

    def line(self, *loc: Any) -> int | None:
        return _line_of(self.text, loc)


def _parse_file(path: Path, kind: str) -> _Parsed:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return _Parsed(path, "", kind, None, [Problem(
                path, None, "", f"{size} bytes, over the limit of {MAX_FILE_BYTES} for one catalog file")])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _Parsed(path, "", kind, None, [Problem(path, None, "", f"cannot read: {exc}")])
    try:
        data = load_yaml_bounded(text)
    except YamlTooBig as exc:
        return _Parsed(path, text, kind, None, [Problem(path, exc.line, "", f"YAML alias bomb: {exc}")])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        ctx = getattr(exc, "context_mark", None)
        if ctx is not None and mark is not None and ctx.line != mark.line:
            what += f" (the construct starts on line {ctx.line + 1})"
        return _Parsed(path, text, kind, None, [
            Problem(path, mark.line + 1 if mark else None, "", f"YAML syntax error: {what or exc}")
        ])
    parsed = _Parsed(path, text, kind, None, [], data)
    if not isinstance(data, dict):
        parsed.problems.append(Problem(path, 1, "", f"expected a mapping of fields, got {type(data).__name__}"))
        return parsed
    for loc in _placeholders(data):
        parsed.problems.append(Problem(
            path, parsed.line(*loc), ".".join(map(str, loc)), f"still the {PLACEHOLDER} placeholder: fill it in"
        ))
    try:
        parsed.obj = KINDS[kind].model_validate(data)
    except ValidationError as exc:
        # One message per field: a placeholder's own schema error (too short, not an enum) is noise.
        todo = {p.field for p in parsed.problems}
        parsed.problems.extend(p for p in _pydantic_problems(path, text, exc) if p.field not in todo)
    return parsed


def _catalog_files(root: Path) -> tuple[list[tuple[Path, str]], list[Problem]]:
    files, problems = [], []
    if not root.is_dir():
        raise CatalogError([Problem(root, None, "", "catalog folder not found (expected papers/ and datasets/)")])
    if not any((root / kind).is_dir() for kind in KINDS):
        raise CatalogError([Problem(root, None, "", "not a catalog: it has neither papers/ nor datasets/")])
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix == ".yaml":
                files.append((p, kind))
            elif p.suffix == ".yml":
                problems.append(Problem(p, None, "", "catalog files end in .yaml: rename it"))
    return files, problems


def _check(parsed: list[_Parsed], extra: list[Problem]) -> tuple[Catalog, list[Problem]]:
    """Cross-file checks on the files that parsed."""
    problems = list(extra)
    for f in parsed:
        problems.extend(f.problems)
    ok = [f for f in parsed if f.obj is not None]
    papers = {f.obj.id: f for f in ok if f.kind == "papers"}
    datasets = {f.obj.id: f for f in ok if f.kind == "datasets"}

    seen_id: dict[str, _Parsed] = {}
    seen_doi: dict[tuple[str, str], _Parsed] = {}
    for f in ok:
        obj = f.obj
        if obj.id != f.path.stem:
            problems.append(Problem(f.path, f.line("id"), "id",
                                    f"id {obj.id!r} differs from the file name {f.path.stem!r}"))
        elif obj.id in seen_id:  # same file name under papers/ and datasets/: `stfcat show` is ambiguous
            first = seen_id[obj.id]
            problems.append(Problem(f.path, f.line("id"), "id", f"duplicate id {obj.id!r}: papers and "
                                    f"datasets share one namespace (also in {display_path(first.path)}:"
                                    f"{first.line('id')})"))
        else:
            seen_id[obj.id] = f
        if obj.doi:
            # A dataset may legitimately carry the DOI of its data paper, so DOIs are unique per kind.
            key = (f.kind, obj.doi.lower())
            if key in seen_doi:
                first = seen_doi[key]
                problems.append(Problem(f.path, f.line("doi"), "doi", f"duplicate DOI {obj.doi!r} "
                                        f"(also in {display_path(first.path)}:{first.line('doi')})"))
            else:
                seen_doi[key] = f

    # Files that exist but failed to parse still define their id: no cascade of "unknown" errors.
    broken = {kind: {f.path.stem for f in parsed if f.obj is None and f.kind == kind} for kind in KINDS}

    def dangling(f: _Parsed, field_name: str, refs: list[str], known: dict, what: str) -> None:
        for i, ref in enumerate(refs):
            if ref not in known and ref not in broken[what + "s"]:
                close = difflib.get_close_matches(ref, sorted(known), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                problems.append(Problem(f.path, f.line(field_name, i), f"{field_name}.{i}",
                                        f"unknown {what} {ref!r}{hint}"))

    # References are checked on the raw data, so a file with schema errors still gets them.
    refs = {"papers": [("datasets", datasets, "dataset")],
            "datasets": [("citation", papers, "paper"), ("used_by", papers, "paper")]}
    for f in parsed:
        if not isinstance(f.data, dict):
            continue
        for field_name, known, what in refs[f.kind]:
            values = f.data.get(field_name)
            if isinstance(values, list) and all(isinstance(v, str) for v in values):
                dangling(f, field_name, values, known, what)

    catalog = Catalog(
        root=Path(),
        papers={k: v.obj for k, v in papers.items()},  # type: ignore[misc]
        datasets={k: v.obj for k, v in datasets.items()},  # type: ignore[misc]
        paper_files={k: v.path for k, v in papers.items()},
        dataset_files={k: v.path for k, v in datasets.items()},
    )
    return catalog, problems


def _check_bibtex_keys(catalog: Catalog) -> list[Problem]:
    from stfcat.bibtex import BibtexError, paper_key, parse_bibtex

    seen: dict[str, str] = {}
    out = []
    for pid, paper in catalog.papers.items():
        key = paper_key(paper)
        if key in seen:
            path = catalog.paper_files[pid]
            out.append(Problem(path, _line_of(path.read_text(encoding="utf-8"), ("bibtex_key",)) or 1,
                               "bibtex_key", f"BibTeX key {key!r} is also the key of paper {seen[key]!r}; "
                               "set a distinct bibtex_key"))
        else:
            seen[key] = pid
    for did, ds in catalog.datasets.items():
        if not ds.bibtex:
            continue
        path = catalog.dataset_files[did]
        line = _line_of(path.read_text(encoding="utf-8"), ("bibtex",))
        try:
            entries = parse_bibtex(ds.bibtex)
        except BibtexError as exc:
            out += [Problem(path, line, "bibtex", m.replace("<string>:", "block at line ", 1))
                    for m in exc.messages]
            continue
        if not entries:
            out.append(Problem(path, line, "bibtex", "no BibTeX entry found"))
        for e in entries:
            if e.key in seen:
                out.append(Problem(path, line, "bibtex", f"key {e.key!r} is also the key of paper "
                                   f"{seen[e.key]!r}; cite the paper in 'citation' instead"))
    return out


def check_models(catalog: Catalog) -> list[Problem]:
    """Every ``implementation.model`` must be a registered model (imports the model zoo)."""
    from stfcat.models import list_models  # heavy (torch): only when validating

    known = list_models()
    out = []
    for pid, paper in catalog.papers.items():
        model = paper.implementation.model
        if model and model not in known:
            path = catalog.paper_files[pid]
            close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `stfcat list models`"
            out.append(Problem(path, _line_of(path.read_text(encoding="utf-8"), ("implementation", "model")),
                               "implementation.model", f"no registered model {model!r}{hint}"))
    return out + check_model_tasks(catalog)


def check_model_tasks(catalog: Catalog) -> list[Problem]:
    """A paper's ``task`` must be one the task of the model implementing it serves, both for
    ``implementation.model`` and for a registered model's ``paper=`` (see ``Task.paper_tasks``)."""
    from stfcat.models import list_models, model_info
    from stfcat.tasks import TaskError, get_task

    links: dict[tuple[str, str], str] = {}  # (paper id, model id) -> field that links them
    for pid, paper in catalog.papers.items():
        if paper.implementation.model:
            links[(pid, paper.implementation.model)] = "implementation.model"
    for mid in list_models():
        pid = model_info(mid).paper
        if pid in catalog.papers:
            links.setdefault((pid, mid), "task")
    out = []
    for (pid, mid), fld in sorted(links.items()):
        try:
            info = model_info(mid)
        except KeyError:
            continue  # reported by check_models
        path = catalog.paper_files[pid]
        ptask = catalog.papers[pid].task.value
        try:
            served = get_task(info.task).paper_tasks
        except TaskError as exc:
            out.append(Problem(path, None, fld, f"model {mid!r}: {exc}"))
            continue
        if ptask not in served:
            out.append(Problem(path, _line_of(path.read_text(encoding="utf-8"), ("task",)), "task",
                               f"task {ptask!r} does not match model {mid!r} of task {info.task!r} "
                               f"(which serves: {', '.join(served) or 'none'})"))
    return out


_CACHE: dict[Path, tuple[tuple, Catalog]] = {}


def _fingerprint(files: list[tuple[Path, str]]) -> tuple:
    out = []
    for p, _ in files:
        st = p.stat()
        out.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def load_catalog(root: Path | str | None = None) -> Catalog:
    """Load and check the catalog at ``root`` (default: the shipped one).

    Raises :class:`CatalogError` listing every problem. Registered-model references are checked
    by :func:`validate_catalog` only, because that needs the model zoo (torch)."""
    root = Path(root) if root is not None else default_catalog_dir()
    root = root.resolve()
    files, extra = _catalog_files(root)
    fp = _fingerprint(files)
    hit = _CACHE.get(root)
    if hit is not None and hit[0] == fp and not extra:
        return hit[1]
    catalog, problems = _check([_parse_file(p, kind) for p, kind in files], extra)
    catalog.root = root
    if not problems:
        problems = _check_bibtex_keys(catalog)
    if problems:
        raise CatalogError(problems)
    _CACHE[root] = (fp, catalog)
    return catalog


def validate_catalog(root: Path | str | None = None, *, models: bool = True) -> tuple[Catalog | None, list[Problem]]:
    """Everything :func:`load_catalog` checks plus (``models=True``) that every
    ``implementation.model`` is registered. Returns the catalog (None when it does not load)
    and the problems; never raises :class:`CatalogError`."""
    root = Path(root) if root is not None else default_catalog_dir()
    root = root.resolve()
    try:
        files, extra = _catalog_files(root)
    except CatalogError as exc:
        return None, exc.problems
    catalog, problems = _check([_parse_file(p, kind) for p, kind in files], extra)
    catalog.root = root
    problems += _check_bibtex_keys(catalog)
    if models:
        problems += check_models(catalog)
    problems = CatalogError(problems).problems  # sorted
    return (None if problems else catalog), problems
