"""Options shared by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CatalogOpt = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        envvar="STFCAT_CATALOG",
        help="Catalog folder (with papers/ and datasets/); default: the catalog shipped with stfcat.",
        file_okay=False,
    ),
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr and return the exit to raise: ``raise fail("...")``."""
    typer.echo(message, err=True)
    return typer.Exit(code)


def open_catalog(root: Path | None):  # -> stfcat.catalog.Catalog (imported lazily)
    """Load the catalog or exit 1 listing every problem (``file:LINE: field: message``)."""
    from stfcat.catalog import CatalogError, load_catalog

    try:
        return load_catalog(root)
    except CatalogError as exc:
        for p in exc.problems:
            typer.echo(str(p), err=True)
        if root is not None and all(Path(p.file).resolve() == Path(root).resolve() for p in exc.problems):
            # The folder itself is wrong: say where the path came from.
            raise fail("the catalog folder is chosen with --catalog DIR or the STFCAT_CATALOG variable") from None
        msg = f"the catalog has {len(exc.problems)} problem(s); run `stfcat validate` after fixing them"
        raise fail(msg) from None
