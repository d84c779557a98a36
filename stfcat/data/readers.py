"""Raster readers: GeoTIFF and ENVI (BSQ/BIL/BIP, any byte order, ``map info`` when present),
both through rasterio/GDAL, which keeps CRS, transform and nodata.

Every read returns float32 reflectance ``(B, h, w)`` after the reading rule of
:mod:`stfcat.data.manifest` (scale, nodata, NaN, range mask, clip of small negatives).
Band order and scale always come from the caller (the manifest), never from the array shape.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

VALID_MIN = -0.01
VALID_MAX = 1.6

WindowLike = Any  # rasterio.windows.Window or a (col_off, row_off, width, height) tuple


def as_window(window: WindowLike | None, shape: tuple[int, int]):
    """Normalise ``window`` into a ``rasterio.windows.Window`` inside ``shape`` (H, W)."""
    from rasterio.windows import Window

    h, w = shape
    if window is None:
        return Window(0, 0, w, h)
    if not isinstance(window, Window):
        col, row, width, height = (int(v) for v in window)
        window = Window(col, row, width, height)
    col, row = int(window.col_off), int(window.row_off)
    width, height = int(window.width), int(window.height)
    if col < 0 or row < 0 or width <= 0 or height <= 0 or col + width > w or row + height > h:
        raise DataError(
            f"window {(col, row, width, height)} (col, row, width, height) is outside the {h}x{w} grid"
        )
    return Window(col, row, width, height)


def apply_reading_rule(raw: np.ndarray, scale_factor: float, nodata: float | None) -> np.ndarray:
    """Stored values -> float32 reflectance with NaN for invalid pixels (the documented rule)."""
    data = raw.astype(np.float32, copy=True)
    invalid = ~np.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        # float32 nodata such as -3.4e38 is stored rounded: compare in the file's precision
        invalid |= data == np.float32(nodata)
    elif nodata is not None:
        invalid |= np.isnan(data)
    data *= np.float32(scale_factor)
    invalid |= (data < VALID_MIN) | (data > VALID_MAX)
    np.clip(data, 0.0, None, out=data)
    data[invalid] = np.nan
    return data


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    driver: str
    count: int
    shape: tuple[int, int]
    dtype: str
    crs: str | None
    transform: tuple[float, ...] | None
    nodata: float | None


def _open(path: Path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    if not Path(path).exists():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise DataError(f"{path}: not a readable raster (GeoTIFF or ENVI with .hdr): {exc}") from exc


def raster_info(path: Path) -> RasterInfo:
    """Facts about a raster without reading its pixels."""
    with _open(path) as ds:
        georef = ds.crs is not None
        return RasterInfo(
            path=Path(path),
            driver=ds.driver,
            count=ds.count,
            shape=(ds.height, ds.width),
            dtype=ds.dtypes[0],
            crs=ds.crs.to_string() if georef else None,
            transform=tuple(ds.transform)[:6] if georef else None,
            nodata=ds.nodata,
        )


def _band_indexes(path: Path, count: int, bands: list[int] | None, n_expected: int | None) -> list[int]:
    if bands is None:
        if n_expected is not None and count != n_expected:
            raise DataError(f"{path}: has {count} bands but the dataset has {n_expected}")
        return list(range(1, count + 1))
    if max(bands) > count:
        raise DataError(f"{path}: band index {max(bands)} requested but the file has {count} bands")
    return list(bands)


def read_reflectance(
    path: Path,
    *,
    scale_factor: float,
    nodata: float | None = None,
    bands: list[int] | None = None,
    n_bands: int | None = None,
    window: WindowLike | None = None,
    expect_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read ``path`` (optionally a window) as float32 reflectance ``(B, h, w)``, NaN = invalid.

    ``nodata`` overrides the file's own nodata; when both are None no value is treated as fill.
    ``expect_shape`` (H, W) is checked against the file so mismatched grids fail loudly.
    """
    with _open(path) as ds:
        shape = (ds.height, ds.width)
        if expect_shape is not None and tuple(expect_shape) != shape:
            raise DataError(
                f"{path}: grid is {shape[0]}x{shape[1]} but the fine grid is {expect_shape[0]}x{expect_shape[1]}"
            )
        idx = _band_indexes(Path(path), ds.count, bands, n_bands)
        win = as_window(window, shape)
        raw = ds.read(idx, window=win)
        fill = nodata if nodata is not None else ds.nodata
    return apply_reading_rule(raw, scale_factor, fill)


def _dummy_crs():
    from rasterio.crs import CRS

    # Only used to give both grids of a non-georeferenced pair the same (any) CRS.
    return CRS.from_epsg(3857)


def read_resampled(
    path: Path,
    *,
    scale_factor: float,
    fine_shape: tuple[int, int],
    fine_crs: str | None,
    fine_transform: tuple[float, ...] | list[float] | None,
    ratio: int | None,
    nodata: float | None = None,
    bands: list[int] | None = None,
    n_bands: int | None = None,
    window: WindowLike | None = None,
) -> np.ndarray:
    """Read a coarse image stored on its own grid, resampled (bilinear) onto a window of the fine grid.

    With georeferencing on both sides the file's CRS/transform place it; otherwise ``ratio`` does,
    with the upper-left corners aligned. Only the coarse pixels under the window (plus a margin of
    two) are read, so memory follows the window, not the scene.
    """
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.warp import Resampling, reproject, transform_bounds
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    win = as_window(window, fine_shape)
    with _open(path) as ds:
        idx = _band_indexes(Path(path), ds.count, bands, n_bands)
        fill = nodata if nodata is not None else ds.nodata
        georef = ds.crs is not None and fine_crs is not None and fine_transform is not None
        if georef:
            dst_crs = CRS.from_user_input(fine_crs)
            src_crs = ds.crs
            dst_tf = window_transform(win, Affine(*fine_transform[:6]))
            src_tf_full = ds.transform
        else:
            if not ratio:
                raise DataError(
                    f"{path}: coarse image on its own grid without georeferencing; the manifest needs "
                    "'ratio' (fine pixels per coarse pixel) to place it on the fine grid"
                )
            if ds.height * ratio < fine_shape[0] or ds.width * ratio < fine_shape[1]:
                raise DataError(
                    f"{path}: {ds.height}x{ds.width} coarse pixels x ratio {ratio} do not cover the "
                    f"{fine_shape[0]}x{fine_shape[1]} fine grid"
                )
            dst_crs = src_crs = _dummy_crs()
            # a grid in fine-pixel units; GDAL's warper misbehaves with an origin at exactly (0, 0)
            x0, y0 = 100000.0, 1000000.0
            dst_tf = window_transform(win, Affine(1, 0, x0, 0, -1, y0))
            src_tf_full = Affine(ratio, 0, x0, 0, -ratio, y0)
        h, w = int(win.height), int(win.width)
        left, top = dst_tf @ (0, 0)
        right, bottom = dst_tf @ (w, h)
        bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        if georef and dst_crs != src_crs:
            bounds = transform_bounds(dst_crs, src_crs, *bounds, densify_pts=21)
        cwin = from_bounds(*bounds, transform=src_tf_full)
        col0 = int(np.floor(cwin.col_off)) - 2
        row0 = int(np.floor(cwin.row_off)) - 2
        col1 = int(np.ceil(cwin.col_off + cwin.width)) + 2
        row1 = int(np.ceil(cwin.row_off + cwin.height)) + 2
        col0, row0 = max(col0, 0), max(row0, 0)
        col1, row1 = min(col1, ds.width), min(row1, ds.height)
        if col1 <= col0 or row1 <= row0:
            raise DataError(
                f"{path}: the coarse image does not overlap the fine grid (window {tuple(win.flatten())})"
            )
        cw = Window(col0, row0, col1 - col0, row1 - row0)
        raw = ds.read(idx, window=cw)
        src_tf = window_transform(cw, src_tf_full)
    src = apply_reading_rule(raw, scale_factor, fill)
    out = np.full((src.shape[0], h, w), np.nan, dtype=np.float32)
    reproject(
        source=src,
        destination=out,
        src_transform=src_tf,
        src_crs=src_crs,
        dst_transform=dst_tf,
        dst_crs=dst_crs,
        src_nodata=np.nan,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    return out


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = None,
    transform: tuple[float, ...] | list[float] | None = None,
    nodata: float | None = None,
    dtype: str | None = None,
) -> Path:
    """Write ``data`` (B, H, W) as a GeoTIFF atomically (temporary file, then ``os.replace``)."""
    import os
    import tempfile

    import rasterio
    from affine import Affine

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": arr.shape[1],
        "width": arr.shape[2],
        "count": arr.shape[0],
        "dtype": dtype or arr.dtype.name,
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = Affine(*transform[:6])
    if nodata is not None:
        profile["nodata"] = nodata
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.tif", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            from rasterio.errors import NotGeoreferencedWarning

            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr.astype(profile["dtype"], copy=False))
        from .paths import publish_mode

        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
