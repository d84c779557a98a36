"""The ``stfcat`` command. Sub-modules register their commands on ``app`` when imported; none of
them imports torch, rasterio or matplotlib at module level."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="stfcat",
    help="Spatiotemporal-fusion catalog: papers, datasets, reference models and one evaluation protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Imported for their side effect of adding commands to `app`.
from stfcat.cli import catalog_cmds, data_cmds, run_cmds, site_cmds  # noqa: E402,F401
