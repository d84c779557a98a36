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
