"""Look a dataset up in the catalog (a ``Catalog`` object, a catalog folder, or the default one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stfcat.schemas import Dataset


def get_dataset(dataset_id: str, catalog: Any = None) -> Dataset:
    """Return the :class:`~stfcat.schemas.Dataset` ``dataset_id``.

    ``catalog`` is a loaded catalog (anything with a ``datasets`` dict), a catalog folder, or None
    for the catalog shipped with stfcat (or ``STFCAT_CATALOG``).
    """
    if catalog is not None and hasattr(catalog, "datasets"):
        datasets = catalog.datasets
    else:
        import os

        from stfcat.catalog import load_catalog

        if catalog is None and os.environ.get("STFCAT_CATALOG"):
            catalog = os.environ["STFCAT_CATALOG"]
        datasets = load_catalog(Path(catalog) if catalog is not None else None).datasets
    if dataset_id not in datasets:
        import difflib

        close = difflib.get_close_matches(dataset_id, list(datasets), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no dataset {dataset_id!r} in the catalog{hint} (see `stfcat list datasets`)")
    return datasets[dataset_id]
