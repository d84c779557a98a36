"""``stfcat fuse``: one prediction from a user's own files, tiled, with bounded memory.

The fine reference defines the output grid (shape, CRS, transform, nodata, band descriptions,
dtype). Coarse inputs on their own grid are resampled (bilinear) onto each fine tile through their
georeferencing (``stfcat.data.readers.read_resampled``); without georeferencing the ratio follows
from the image sizes. Non-trainable methods are built with that ratio (:func:`derive_ratio`,
``--ratio`` overrides). Prediction is :func:`stfcat.engine.predict.predict_scene`, the predictor
of ``run`` and ``bench``; invalid input pixels are filled as for every model and the output is
nodata only where the ``nodata_rule`` says (conventions page, "Output of stfcat fuse"). Each tile's inputs are read as windows; blended tiles accumulate in a
disk-backed array, so memory grows with the tile size, not the scene. The output is written in the
fine reference's units and dtype (reflectance / scale) to a temporary file, then moved into place.

The catalog (``--catalog`` / ``STFCAT_CATALOG``, default the shipped one) says which paper the
model implements: its id, DOI and short name are written as GeoTIFF tags (``STFCAT_*``) next to the
model id and stfcat version, so a fused file names the method that made it. A catalog that does
not load, or that lacks the model's paper, is an error before anything is computed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EngineError
from .outputs import publish

OPTION = {"f1": "--fine-ref", "c1": "--coarse-ref", "c2": "--coarse-target", "f3": "--fine-ref2", "c3": "--coarse-ref2"}
"""The CLI option that names each input, for messages."""
NODATA_RULES = ("no-input", "any-input")
"""Where the output is nodata: where no input has a valid value (default), or where any input is invalid."""
MIN_VALID = 0.5
"""Default ``--min-valid``: a warning names an input with a smaller fraction of valid pixels."""
RATIO_TOL = 1e-3
"""Relative tolerance of an integer coarse/fine pixel-size ratio on one CRS (2 % across CRSs)."""


def _pixel_size(transform) -> tuple[float, float]:
    a, b, _, d, e, _ = transform[:6]
    return float(np.hypot(a, d)), float(np.hypot(b, e))


def _ratio_of(fine, info) -> tuple[float, float, float] | None:
    """``(x ratio, y ratio, tolerance)`` of one coarse input to the fine grid, or None when the
    input lies on the fine grid itself (nothing to learn from it)."""
    if info.shape == fine.shape:
        return None
    if fine.crs is None or info.crs is None:
        # upper-left corners aligned (as the reader places it): the rows give the ratio, the last
        # column may be a partial coarse pixel
        ry = fine.shape[0] / info.shape[0]
        n = max(1, round(ry))
        rx = float(n) if -(-fine.shape[1] // n) == info.shape[1] else fine.shape[1] / info.shape[1]
        return rx, ry, 1e-6
    fx, fy = _pixel_size(fine.transform)
    if info.crs == fine.crs:
        cx, cy = _pixel_size(info.transform)
        return cx / fx, cy / fy, RATIO_TOL
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(info.crs, fine.crs, *_bounds(info, array_bounds))
    return (east - west) / info.shape[1] / fx, (north - south) / info.shape[0] / fy, 0.02


def _bounds(info, array_bounds) -> tuple[float, float, float, float]:
    from affine import Affine

    south, west, north, east = array_bounds(info.shape[0], info.shape[1], Affine(*info.transform[:6]))
    return west, south, east, north


def derive_ratio(fine, coarse: dict[str, Any]) -> int | None:
    """Fine pixels per coarse pixel from the inputs' georeferencing (coarse pixel size / fine
    pixel size, rounded; image sizes without georeferencing). ``coarse`` maps input keys to
    :class:`~stfcat.data.readers.RasterInfo`. None when every coarse input is on the fine grid.
    A non-integer ratio, different x/y ratios or inputs that disagree are errors naming the file."""
    found: dict[str, int] = {}
    for key, info in coarse.items():
        r = _ratio_of(fine, info)
        if r is None:
            continue
        rx, ry, tol = r
        n = round(rx)
        if n < 1 or abs(rx - n) > tol * n or abs(ry - n) > tol * n:
            raise EngineError(f"{OPTION[key]} {info.path}: coarse/fine pixel size ratio is {rx:.4g} x {ry:.4g}, "
                              "not one integer; give --ratio N")
        found[key] = n
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{OPTION[k]} {v}" for k, v in found.items())
        raise EngineError(f"the coarse inputs disagree on the coarse/fine ratio ({listed}); give --ratio N")
    return next(iter(found.values()), None)


def check_number(name: str, value: float | None, *, low: float, low_open: bool = True,
                 high: float | None = None) -> None:
    """Refuse NaN, infinities and values outside the range, naming the option."""
    if value is None:
        return
    v = float(value)
    bad = not np.isfinite(v) or v < low or (low_open and v == low) or (high is not None and v > high)
    if bad:
        rng = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise EngineError(f"{name} must be a finite number {rng}, got {value}")


def _reader(path: Path, *, fine, scale: float, n_bands: int):
    """A ``read(window) -> (B, h, w)`` reflectance function for one input file."""
    from stfcat.data import readers

    info = readers.raster_info(path)
    if info.count != n_bands:
        raise EngineError(f"{path}: has {info.count} bands but the fine reference has {n_bands}")
    if info.shape == fine.shape:
        if info.transform is not None and fine.transform is not None and not np.allclose(info.transform, fine.transform):
            raise EngineError(f"{path}: same size as the fine reference but a different grid (transform)")
        return lambda win: readers.read_reflectance(path, scale_factor=scale, window=win)
    if fine.crs is None or info.crs is None:
        ratio = fine.shape[0] / info.shape[0]
        if abs(ratio - round(ratio)) > 1e-6 or abs(fine.shape[1] / info.shape[1] - ratio) > 1.0:
            raise EngineError(f"{path}: {info.shape[0]}x{info.shape[1]} is not an integer fraction of the fine "
                              f"{fine.shape[0]}x{fine.shape[1]} grid and there is no georeferencing to place it")
        ratio_i: int | None = int(round(ratio))
    else:
        ratio_i = None
    return lambda win: readers.read_resampled(path, scale_factor=scale, fine_shape=fine.shape, fine_crs=fine.crs,
                                              fine_transform=fine.transform, ratio=ratio_i, window=win)


def provenance_tags(model_id: str, catalog: Path | None) -> dict[str, str]:
    """GeoTIFF tags naming the model, its catalog paper and the stfcat version."""
    import stfcat
    from stfcat.catalog import CatalogError, load_catalog

    from .run import resolve_model

    info = resolve_model(model_id)
    tags = {"STFCAT_MODEL": model_id, "STFCAT_VERSION": str(getattr(stfcat, "__version__", "unknown"))}
    try:
        cat = load_catalog(Path(catalog) if catalog is not None else None)
    except CatalogError as exc:
        where = f"--catalog {catalog}" if catalog is not None else "the shipped catalog"
        raise EngineError(f"{where}: the catalog is invalid ({len(exc.problems)} problem(s)); "
                          f"run `stfcat validate`: {exc.problems[0]}") from None
    if info.paper is None:  # trivial baselines implement no paper
        return tags
    paper = cat.papers.get(info.paper)
    if paper is None:
        raise EngineError(f"--catalog {cat.root}: model {model_id!r} implements paper {info.paper!r}, which this "
                          "catalog lacks (add catalog/papers/<id>.yaml or use the shipped catalog)")
    tags.update(STFCAT_PAPER=paper.id, STFCAT_PAPER_DOI=str(paper.doi), STFCAT_METHOD=paper.short_name)
    return tags


def _load_model(model_id: str, weights: Path | None, bands: int, ratio: int | None, warn):
    """The model to run: non-trainable ones are built with the data's ``ratio`` (trivial baselines
    ignore it); trained ones keep their checkpoint's ratio, with a warning when the data's differs."""
    from stfcat.models import create_model

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .run import resolve_model

    info = resolve_model(model_id)
    if weights is None:
        if info.trainable:
            raise EngineError(f"model {model_id!r} is trainable: give --weights (the checkpoint.pt of a "
                              f"`stfcat run {model_id}` folder)")
        if ratio is None and getattr(info.cls, "uses_ratio", True):
            raise EngineError(f"model {model_id!r} needs the coarse/fine ratio and every coarse input is on the "
                              "fine grid (nothing to derive it from): give --ratio N")
        return create_model(model_id, bands=bands, ratio=ratio or 1), {}
    ckpt = load_checkpoint(Path(weights))
    model = model_from_checkpoint(ckpt, model_id, bands=bands, path=weights)
    if ratio is not None and ratio != model.ratio:
        warn(f"{weights}: the model was trained at ratio {model.ratio}, the inputs have ratio {ratio}")
    return model, ckpt


def fuse_files(
    model_id: str,
    *,
    fine_ref: Path,
    coarse_ref: Path,
    coarse_target: Path,
    out: Path,
    fine_ref2: Path | None = None,
    coarse_ref2: Path | None = None,
    weights: Path | None = None,
    scale: float | None = None,
    tile: int = 256,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    catalog: Path | None = None,
    ratio: int | None = None,
    min_valid: float = MIN_VALID,
    nodata_rule: str = "no-input",
    warn: Any = None,
) -> Path:
    """Predict the fine image at the coarse target's date and write it to ``out`` (GeoTIFF).

    ``ratio`` overrides the coarse/fine ratio derived from the inputs (:func:`derive_ratio`).
    An input with no valid pixel is an error; one whose valid fraction is below ``min_valid`` gets
    a warning (``warn(message)``, default :func:`warnings.warn`). Invalid input pixels are filled
    as for every model (band mean of the tile); ``nodata_rule`` says where the output is nodata:
    ``"no-input"`` where no input is valid, ``"any-input"`` where any input is invalid."""
    import rasterio
    from affine import Affine

    from stfcat.data import readers
    from stfcat.data.errors import DataError
    from stfcat.data.series import fill_invalid

    from .device import resolve_device, use_all_cores
    from .outputs import check_output_file
    from .predict import predict_scene
    from .run import resolve_model

    info = resolve_model(model_id)  # an unknown id is the first thing to report
    check_number("--scale", scale, low=0.0)
    check_number("--ratio", ratio, low=1.0, low_open=False)
    check_number("--min-valid", min_valid, low=0.0, low_open=False, high=1.0)
    check_number("--tile", tile, low=1.0, low_open=False)
    if ratio is not None and int(ratio) != ratio:
        raise EngineError(f"--ratio must be a whole number of fine pixels per coarse pixel, got {ratio}")
    if nodata_rule not in NODATA_RULES:
        raise EngineError(f"--nodata-rule must be one of {', '.join(NODATA_RULES)}, got {nodata_rule!r}")
    if warn is None:
        import warnings as _w

        def warn(msg: str) -> None:
            _w.warn(msg, stacklevel=2)
    if info.task != "fusion":
        raise EngineError(f"--model {model_id}: a model of task {info.task!r}; `stfcat fuse` fuses images "
                          f"(see `stfcat list models --task fusion`; run it with `stfcat run {model_id}`)")
    tags = provenance_tags(model_id, catalog)
    out = check_output_file(out, overwrite=overwrite, flag="-o/--output")  # not a folder, not under a file
    try:
        fine = readers.raster_info(Path(fine_ref))
    except DataError as exc:
        raise EngineError(f"--fine-ref: {exc}") from None
    bands = fine.count
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():  # a fine reference without georeferencing is allowed (sizes give the ratio)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(fine_ref) as ds:
            descriptions = list(ds.descriptions)
            out_dtype = ds.dtypes[0]
    paths = {"f1": fine_ref, "c1": coarse_ref, "c2": coarse_target}
    if info.n_refs == 2:
        if fine_ref2 is None or coarse_ref2 is None:
            raise EngineError(f"model {model_id!r} needs two reference pairs: give --fine-ref2 and --coarse-ref2")
        paths.update(f3=fine_ref2, c3=coarse_ref2)
    infos = {}
    for key, p in paths.items():
        try:
            infos[key] = readers.raster_info(Path(p))
        except DataError as exc:
            raise EngineError(f"{OPTION[key]}: {exc}") from None
    data_ratio = derive_ratio(fine, {k: v for k, v in infos.items() if k.startswith("c")})
    dev = resolve_device(device)
    use_all_cores()
    model, ckpt = _load_model(model_id, weights, bands, int(ratio) if ratio is not None else data_ratio, warn)
    if scale is None:
        scale = ckpt.get("scale_factor") if ckpt else None
        if scale is None:
            if np.issubdtype(np.dtype(fine.dtype), np.integer):
                raise EngineError(f"{fine_ref}: integer values ({fine.dtype}); give --scale (e.g. 0.0001) "
                                  "to convert them to reflectance")
            scale = 1.0
    if not any(descriptions) and ckpt and ckpt.get("band_names") and len(ckpt["band_names"]) == bands:
        descriptions = list(ckpt["band_names"])
    check_number("--scale", scale, low=0.0)  # also a checkpoint's
    readers_by_key = {}
    for key, p in paths.items():
        try:
            readers_by_key[key] = _reader(Path(p), fine=fine, scale=float(scale), n_bands=bands)
        except DataError as exc:
            raise EngineError(str(exc)) from None

    # per input: where it holds a valid value (tiles overlap, so OR rather than count)
    seen = {k: np.zeros(fine.shape, dtype=bool) for k in readers_by_key}

    def read(win):
        try:
            raw = {k: r(win) for k, r in readers_by_key.items()}
        except DataError as exc:
            raise EngineError(str(exc)) from None
        r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        for k, v in raw.items():
            seen[k][r0 : r0 + h, c0 : c0 + w] |= np.isfinite(v).all(0)
        return {k: fill_invalid(v) for k, v in raw.items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".stfcat-fuse-{os.getpid()}-", dir=out.parent) as tmpdir:
        acc = np.memmap(Path(tmpdir) / "acc.f32", dtype=np.float32, mode="w+", shape=(bands, *fine.shape))
        preds, _ = predict_scene({model_id: model}, read, fine.shape, bands, device=dev, tile=tile,
                                 progress=progress, desc="fuse", out={model_id: acc})
        pred = preds[model_id]
        valid = _check_inputs(seen, paths, min_valid, nodata_rule, warn)
        nodata = fine.nodata
        if nodata is None:
            nodata = float("nan") if np.issubdtype(np.dtype(out_dtype), np.floating) else None
        profile: dict[str, Any] = {"driver": "GTiff", "height": fine.shape[0], "width": fine.shape[1], "count": bands,
                                   "dtype": out_dtype, "compress": "deflate", "tiled": True,
                                   "blockxsize": 256, "blockysize": 256}
        if fine.crs is not None:
            profile["crs"] = fine.crs
        if fine.transform is not None:
            profile["transform"] = Affine(*fine.transform[:6])
        if nodata is not None:
            profile["nodata"] = nodata
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp.tif", dir=out.parent)
        os.close(fd)
        try:
            from rasterio.windows import Window

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(tmp, "w", **profile) as dst:
                    for r0 in range(0, fine.shape[0], 256):
                        h = min(256, fine.shape[0] - r0)
                        block = np.array(pred[:, r0 : r0 + h], dtype=np.float64) / scale
                        bad = ~valid[r0 : r0 + h]
                        if np.issubdtype(np.dtype(out_dtype), np.integer):
                            lim = np.iinfo(out_dtype)
                            block = np.clip(np.rint(block), lim.min, lim.max)
                        if nodata is not None:
                            block[:, bad] = nodata
                        dst.write(block.astype(out_dtype), window=Window(0, r0, fine.shape[1], h))
                    dst.update_tags(**tags, STFCAT_NODATA_RULE=nodata_rule)
                    for i, d in enumerate(descriptions, start=1):
                        if d:
                            dst.set_band_description(i, d)
            publish(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        del acc, pred, preds
    return out


def _check_inputs(seen: dict[str, np.ndarray], paths: dict[str, Any], min_valid: float, nodata_rule: str,
                  warn) -> np.ndarray:
    """Refuse an input without a valid pixel, warn below ``min_valid``; the output's valid mask."""
    for k, m in seen.items():
        frac = float(m.mean())
        if frac == 0.0:
            raise EngineError(f"{OPTION[k]} {paths[k]}: no valid pixel (all nodata, NaN or outside the "
                              "reflectance range at this --scale); nothing to fuse")
        if frac < min_valid:
            warn(f"{OPTION[k]} {paths[k]}: only {100 * frac:.1f} % of its pixels are valid "
                 f"(below --min-valid {min_valid:g}); the others were filled")
    masks = list(seen.values())
    valid = np.logical_or.reduce(masks) if nodata_rule == "no-input" else np.logical_and.reduce(masks)
    if not valid.any():
        raise EngineError(f"no pixel has all inputs valid (--nodata-rule {nodata_rule}): the output would be "
                          "empty; check that the inputs overlap, or use --nodata-rule no-input")
    return valid
