"""Data layer: manifest, readers (GeoTIFF/ENVI), fetch (pooch) with safe extraction, importers,
the embedded demo, pair series and cases, the patch sampler and tiling.

Heavy libraries (rasterio, pooch, torch) are imported inside functions, so importing
``stfcat.data`` stays cheap.
"""

from __future__ import annotations

from .errors import DataError, FetchError, ManifestError, NotFetchedError, UnsafeArchiveError
from .manifest import FORMAT_VERSION, Manifest, read_manifest, write_manifest
from .paths import data_root, dataset_dir
from .sampler import PatchSampler
from .series import Case, PairSeries, load_series
from .tiling import TileBlender, iter_tiles

__all__ = [
    "FORMAT_VERSION",
    "Case",
    "DataError",
    "FetchError",
    "Manifest",
    "ManifestError",
    "NotFetchedError",
    "PairSeries",
    "PatchSampler",
    "TileBlender",
    "UnsafeArchiveError",
    "data_root",
    "dataset_dir",
    "iter_tiles",
    "load_series",
    "read_manifest",
    "write_manifest",
]
