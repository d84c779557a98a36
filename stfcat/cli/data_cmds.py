"""``stfcat fetch``: download or import a dataset and write its manifest.

pooch, rasterio and the data layer are imported inside the command so ``stfcat --help`` stays instant.
Exit codes: 0 done (or nothing to do), 1 failure (message on stderr), 3 a manual step is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stfcat.cli.main import app
from stfcat.cli.options import CatalogOpt, fail, open_catalog

MANUAL_EXIT = 3


@app.command()
def fetch(
    dataset: Annotated[str, typer.Argument(help="Dataset id (see `stfcat list datasets`).")],
    dir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            envvar="STFCAT_DATA_DIR",
            help="Data folder (default: the platform cache).",
            file_okay=False,
        ),
    ] = None,
    from_: Annotated[
        Path | None,
        typer.Option(
            "--from", help="Import from a downloaded archive (zip/tar) or folder instead of downloading."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download / import again even if present.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the server (more than 0).")] = 60.0,
    retries: Annotated[int, typer.Option("--retries", help="Retries per file, with back-off (0 or more).")] = 3,
    catalog: CatalogOpt = None,
) -> None:
    """Download (or import with --from) a dataset, check every sha256 (git blob SHA-1 for GitHub mirrors), and write its manifest.json.

    Exit codes: 0 ready (also: embedded demo generated, catalog-only dataset explained), 1 error (message on stderr), 3 manual download needed (instructions printed; then use --from).
    """
    from stfcat.data.errors import DataError
    from stfcat.data.fetch import fetch as do_fetch

    cat = open_catalog(catalog)
    try:
        result = do_fetch(
            dataset,
            catalog=cat,
            data_dir=dir,
            from_path=from_,
            force=force,
            timeout=timeout,
            retries=retries,
        )
    except KeyError as exc:
        raise fail(str(exc.args[0]) if exc.args else str(exc)) from None
    except DataError as exc:
        raise fail(f"error: {exc}") from None
    except OSError as exc:  # anything the data layer did not foresee still gets one line naming the path
        where = exc.filename or dir or "the data folder"
        raise fail(f"error: {where}: {exc.strerror or exc}") from None
    typer.echo(result.message)
    if result.status == "manual":
        raise typer.Exit(MANUAL_EXIT)
