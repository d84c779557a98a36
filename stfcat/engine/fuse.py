"""``stfcat fuse``: one prediction from a user's own files, tiled, with bounded memory.

The fine reference defines the output grid (shape, CRS, transform, nodata, band descriptions,
dtype). Coarse inputs on their own grid are resampled (bilinear) onto each fine tile through their
georeferencing (``stfcat.data.readers.read_resampled``); without georeferencing the ratio follows
from the image sizes. Each tile's inputs are read as windows; blended tiles accumulate in a
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


def _load_model(model_id: str, weights: Path | None, bands: int, ratio_hint: int):
    from stfcat.models import create_model

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .run import resolve_model

    info = resolve_model(model_id)
    if weights is None:
        if info.trainable:
            raise EngineError(f"model {model_id!r} is trainable: give --weights (the checkpoint.pt of a "
                              f"`stfcat run {model_id}` folder)")
        return create_model(model_id, bands=bands, ratio=ratio_hint), {}
    ckpt = load_checkpoint(Path(weights))
    return model_from_checkpoint(ckpt, model_id, bands=bands, path=weights), ckpt


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
) -> Path:
    """Predict the fine image at the coarse target's date and write it to ``out`` (GeoTIFF)."""
    import rasterio
    import torch
    from affine import Affine

    from stfcat.data import readers
    from stfcat.data.errors import DataError
    from stfcat.data.series import fill_invalid
    from stfcat.data.tiling import TileBlender, iter_tiles

    from .device import resolve_device, use_all_cores
    from .outputs import check_output_file
    from .predict import crop_halo, tile_align, tile_layout
    from .run import resolve_model

    resolve_model(model_id)  # an unknown id is the first thing to report
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
    dev = resolve_device(device)
    use_all_cores()
    model, ckpt = _load_model(model_id, weights, bands, 16)
    if scale is None:
        scale = ckpt.get("scale_factor") if ckpt else None
        if scale is None:
            if np.issubdtype(np.dtype(fine.dtype), np.integer):
                raise EngineError(f"{fine_ref}: integer values ({fine.dtype}); give --scale (e.g. 0.0001) "
                                  "to convert them to reflectance")
            scale = 1.0
    if not any(descriptions) and ckpt and ckpt.get("band_names") and len(ckpt["band_names"]) == bands:
        descriptions = list(ckpt["band_names"])
    paths = {"f1": fine_ref, "c1": coarse_ref, "c2": coarse_target}
    if model.n_refs == 2:
        if fine_ref2 is None or coarse_ref2 is None:
            raise EngineError(f"model {model_id!r} needs two reference pairs: give --fine-ref2 and --coarse-ref2")
        paths.update(f3=fine_ref2, c3=coarse_ref2)
    readers_by_key = {}
    for key, p in paths.items():
        try:
            readers_by_key[key] = _reader(Path(p), fine=fine, scale=float(scale), n_bands=bands)
        except DataError as exc:
            raise EngineError(str(exc)) from None

    tile, overlap = tile_layout(fine.shape, model, tile)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".stfcat-fuse-{os.getpid()}-", dir=out.parent) as tmpdir:
        acc = np.memmap(Path(tmpdir) / "acc.f32", dtype=np.float32, mode="w+", shape=(bands, *fine.shape))
        halo = int(getattr(model, "halo", 0))
        blender = TileBlender(fine.shape, bands, overlap - 2 * halo, out=acc)
        valid = np.zeros(fine.shape, dtype=bool)
        model.eval().to(dev)
        from tqdm.auto import tqdm

        wins = list(iter_tiles(fine.shape, tile, overlap, tile_align(model)))
        with torch.inference_mode():
            for win in tqdm(wins, desc="fuse", disable=not progress, unit="tile"):
                try:
                    raw = {k: r(win) for k, r in readers_by_key.items()}
                except DataError as exc:
                    raise EngineError(str(exc)) from None
                ok = np.ones(raw["f1"].shape[1:], dtype=bool)
                for v in raw.values():
                    ok &= np.isfinite(v).all(0)
                r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
                valid[r0 : r0 + h, c0 : c0 + w] |= ok
                batch = {k: torch.from_numpy(fill_invalid(v))[None].to(dev) for k, v in raw.items()}
                inner, (rs, cs) = crop_halo(win, fine.shape, halo)
                blender.add(inner, model(batch)[0].float().cpu().numpy()[:, rs, cs])
        pred = blender.result()
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
                    dst.update_tags(**tags)
                    for i, d in enumerate(descriptions, start=1):
                        if d:
                            dst.set_band_description(i, d)
            publish(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        del acc, pred, blender
    return out
