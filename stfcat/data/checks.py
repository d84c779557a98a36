"""Up-front check of a series' files, so that ``stfcat run`` fails in its first second with one
line naming the file (missing, not a raster, wrong band count or grid, all nodata) instead of a
traceback minutes into training."""

from __future__ import annotations

import warnings

import numpy as np

from .errors import DataError
from .readers import apply_reading_rule, raster_info

SAMPLE = 256  # pixels per side of the decimated read that looks for one valid pixel


def _has_valid_pixel(path, n_bands: int, scale: float, nodata: float | None, bands: list[int] | None) -> bool:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            idx = list(bands) if bands else list(range(1, ds.count + 1))
            fill = nodata if nodata is not None else ds.nodata
            shape = (min(SAMPLE, ds.height), min(SAMPLE, ds.width))
            sample = apply_reading_rule(ds.read(idx, out_shape=(len(idx), *shape)), scale, fill)
            if np.isfinite(sample).any():
                return True
            # a decimated read can miss a small valid area: confirm on the full image
            return bool(np.isfinite(apply_reading_rule(ds.read(idx), scale, fill)).any())


def check_series(series):
    """Return ``series`` after checking every image its manifest lists; :class:`DataError` naming
    the file otherwise."""
    n = len(series.bands)
    for pair in series.manifest.pairs:
        for role in ("fine", "coarse"):
            entry = getattr(pair, role)
            if entry is None:
                continue
            path = series.root / entry.path
            where = f"{path} ({role} image of {pair.date} in {series.root / 'manifest.json'})"
            if not path.is_file():
                raise DataError(f"{where}: file not found")
            try:
                info = raster_info(path)
            except DataError as exc:
                raise DataError(f"{where}: not a readable raster ({str(exc).split(': ', 1)[-1][:120]})") from None
            if entry.bands:
                if max(entry.bands) > info.count:
                    raise DataError(f"{where}: band {max(entry.bands)} requested but the file has {info.count}")
            elif info.count != n:
                raise DataError(f"{where}: {info.count} bands, but the series has {n} ({', '.join(series.bands)})")
            if (role == "fine" or entry.grid == "fine") and info.shape != series.shape:
                raise DataError(f"{where}: grid {info.shape[0]}x{info.shape[1]}, but the series' fine grid is "
                                f"{series.shape[0]}x{series.shape[1]}")
            scale = entry.scale_factor if entry.scale_factor is not None else series.scale_factor
            nodata = entry.nodata if entry.nodata is not None else series.manifest.nodata
            try:
                ok = _has_valid_pixel(path, n, scale, nodata, entry.bands)
            except Exception as exc:  # noqa: BLE001 - a file GDAL cannot decode is a bad file
                raise DataError(f"{where}: cannot read its pixels ({str(exc)[:120]})") from None
            if not ok:
                raise DataError(f"{where}: no valid pixel (every value is nodata or not finite)")
    return series
