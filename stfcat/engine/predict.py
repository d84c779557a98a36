"""The one whole-scene predictor (``run``, ``bench`` and ``fuse`` all call :func:`predict_scene`).

A scene is cut into tiles that overlap by what the models need, each tile's inputs are read as
windows, and the tile predictions are put back together with bounded memory (only the output is
scene-sized; pass a ``numpy.memmap`` to keep even that on disk).

How much overlap: a model whose output at a pixel depends only on inputs within
``receptive_field`` fine pixels (and, for models with coarse-grid steps, whose tiles start on
multiples of ``tile_align``) gives the same value in a tile as in the whole scene at every pixel at
least that far from a cut tile side. So tiles overlap by ``2 * receptive_field``, each tile's
prediction loses ``receptive_field`` pixels on its inner sides, and the kept parts tile the scene:
exact, seam-free, no blending. A model that declares no finite receptive field (``None``: global
statistics, attention over the tile, resampling that is not shift-equivariant) keeps the older,
approximate rule: ``halo`` pixels cropped plus :data:`BLEND` pixels of linear cross-fade.

Cost: with ``n`` tiles per axis the network sees ``(n - 1) * overlap`` extra pixels per axis.
Tiles are spread evenly (:func:`stfcat.data.tiling.iter_even_tiles`) and their core (``tile``,
default 256 px) grows to :data:`COST_FACTOR` x the overlap (up to :data:`MAX_TILE`), which keeps
the extra network pixels near ``2 / COST_FACTOR`` (about 10 %) for overlaps up to ~24 px.
``benchmarks/run.py --overlap-cost`` measures it against non-overlapping tiles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_TILE = 256
BLEND = 8
"""Cross-fade width (pixels) for models without a finite receptive field."""
COST_FACTOR = 20
"""The tile core grows to this many times the overlap: ``(core + overlap) / core <= 1.05`` per axis."""
MAX_TILE = 512
"""Largest tile the growth rule picks (bounds memory, e.g. 128-channel feature maps)."""
MAX_EXACT_OVERLAP = MAX_TILE // 2
"""Widest exact overlap (px); beyond it half of every tile would be overlap."""


def tile_align(model) -> int:
    """Tile-origin alignment a model asks for (1: none)."""
    return max(1, int(getattr(model, "tile_align", 1)))


def context(model) -> tuple[int, bool]:
    """``(pixels to crop on an inner tile side, exact)``: the receptive radius for a model that
    declares one (exact), else its ``halo`` (approximate, blended). A radius too wide for tiles of
    bounded memory (``2 * radius > MAX_EXACT_OVERLAP``, e.g. MOST at ratio 16: 751 px through its
    16-block super-resolution stages) also falls back to ``halo``."""
    rf = getattr(model, "receptive_field", None)
    if rf is not None and 2 * int(rf) <= MAX_EXACT_OVERLAP:
        return max(0, int(rf)), True
    return max(0, int(getattr(model, "halo", 0))), False


def overlap_needed(model) -> int:
    crop, exact = context(model)
    return 2 * crop if exact or crop == 0 else 2 * crop + BLEND


@dataclass(frozen=True)
class TileLayout:
    """Tiles of ``core + overlap`` px (roughly; see ``iter_even_tiles``) on multiples of ``align``."""

    core: int
    overlap: int
    align: int = 1

    def windows(self, shape: tuple[int, int]) -> list:
        from stfcat.data.tiling import iter_even_tiles

        return list(iter_even_tiles(shape, self.core, self.overlap, self.align))


def tile_layout(models: Mapping[str, Any] | Any, tile: int = DEFAULT_TILE) -> TileLayout:
    """The layout that serves every model of ``models`` (a dict, or one model)."""
    ms = list(models.values()) if isinstance(models, Mapping) else [models]
    overlap = max(overlap_needed(m) for m in ms)
    align = math.lcm(*(tile_align(m) for m in ms))
    min_size = max(int(getattr(m, "min_size", 1)) for m in ms)
    core = max(int(tile), min(COST_FACTOR * overlap, MAX_TILE - overlap), min_size - overlap, align, 1)
    return TileLayout(core=core, overlap=overlap, align=align)


def crop_halo(win, shape: tuple[int, int], halo: int):
    """The part of a tile's prediction that saw its full context: ``halo`` pixels are dropped on
    every side that is not the scene border. Returns ``(window, (row slice, col slice))``."""
    from rasterio.windows import Window

    r, c, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
    top = halo if r > 0 else 0
    left = halo if c > 0 else 0
    bottom = halo if r + h < shape[0] else 0
    right = halo if c + w < shape[1] else 0
    return (Window(c + left, r + top, w - left - right, h - top - bottom),
            (slice(top, h - bottom), slice(left, w - right)))


def _needed(model) -> tuple[str, ...]:
    from stfcat.models.base import REQUIRED_KEYS

    return REQUIRED_KEYS[int(getattr(model, "n_refs", 1))]


def predict_scene(
    models: Mapping[str, Any],
    read: Callable[[Any], Mapping[str, np.ndarray]],
    shape: tuple[int, int],
    bands: int,
    *,
    device: Any = "cpu",
    tile: int = DEFAULT_TILE,
    progress: bool = False,
    desc: str = "predict",
    out: Mapping[str, np.ndarray] | None = None,
    layout: TileLayout | None = None,
    stats: dict[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Predict a ``shape`` scene with every model of ``models``, reading each tile once.

    ``read(window)`` returns the (filled, finite) inputs of one window as ``(B, h, w)`` arrays by
    key (``f1``, ``c1``, ``c2`` ...); each model gets the keys it needs. ``out`` may give the
    output array (e.g. a memmap) of some models. Returns ``(prediction by model, seconds spent in
    each model's forward)``. ``stats``, if given, receives the layout and the pixel counts
    (``network_pixels`` / ``scene_pixels`` is what the overlap costs)."""
    import torch
    from tqdm.auto import tqdm

    from stfcat.data.tiling import TileBlender

    layout = layout or tile_layout(models, tile)
    crops = {k: min(context(m)[0], layout.overlap // 2) for k, m in models.items()}
    out = out or {}
    blenders = {k: TileBlender(shape, bands, layout.overlap - 2 * crops[k], out=out.get(k)) for k in models}
    seconds = dict.fromkeys(models, 0.0)
    dev = torch.device(device)
    modes = {k: m.training for k, m in models.items()}
    for m in models.values():
        m.eval().to(dev)
    wins = layout.windows(shape)
    try:
        with torch.inference_mode():
            for win in tqdm(wins, desc=desc, disable=not progress, leave=False, unit="tile"):
                inputs = read(win)
                batch = {k: torch.from_numpy(np.ascontiguousarray(v))[None].to(dev) for k, v in inputs.items()}
                for k, m in models.items():
                    t0 = time.perf_counter()
                    pred = m({kk: batch[kk] for kk in _needed(m) if kk in batch})[0].float().cpu().numpy()
                    seconds[k] += time.perf_counter() - t0
                    inner, (rs, cs) = crop_halo(win, shape, crops[k])
                    blenders[k].add(inner, pred[:, rs, cs])
    finally:
        for k, m in models.items():
            m.train(modes[k])
    if stats is not None:
        stats.update(tiles=len(wins), core=getattr(layout, "core", None), overlap=layout.overlap, align=layout.align,
                     network_pixels=int(sum(int(w.height) * int(w.width) for w in wins)),
                     scene_pixels=int(shape[0]) * int(shape[1]))
    return {k: b.result() for k, b in blenders.items()}, seconds


def predict_windows(model, read: Callable[[Any], Mapping[str, np.ndarray]], shape: tuple[int, int], bands: int,
                    *, device: Any = "cpu", tile: int = DEFAULT_TILE, progress: bool = False, desc: str = "predict",
                    out: np.ndarray | None = None, layout: TileLayout | None = None) -> np.ndarray:
    """One model over a scene: :func:`predict_scene` for a single model."""
    preds, _ = predict_scene({"model": model}, read, shape, bands, device=device, tile=tile, progress=progress,
                             desc=desc, out={"model": out} if out is not None else None, layout=layout)
    return preds["model"]


def predict_case_multi(models: dict[str, Any], case, *, device: Any = "cpu", tile: int = DEFAULT_TILE,
                       progress: bool = False, stats: dict[str, Any] | None = None,
                       layout: TileLayout | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray, dict[str, float]]:
    """Predict one case with several models, reading each tile once.

    Returns ``(predictions by model id, target (B,H,W) with NaN or None, valid mask (H,W),
    seconds spent in each model's forward)``. The tile layout serves every model."""
    series = case.series
    shape, bands = series.shape, len(series.bands)
    target = np.full((bands, *shape), np.nan, dtype=np.float32) if case.has_target else None
    valid = np.zeros(shape, dtype=bool)

    def read(win):
        inputs, tgt, val = case.read(win)
        r, c, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        if target is not None:
            target[:, r : r + h, c : c + w] = tgt
        valid[r : r + h, c : c + w] = val
        return inputs

    preds, seconds = predict_scene(models, read, shape, bands, device=device, tile=tile, progress=progress,
                                   desc=f"predict {case.target_date}", stats=stats, layout=layout)
    return preds, target, valid, seconds


def predict_case(model, case, *, device: Any = "cpu", tile: int = DEFAULT_TILE, progress: bool = False,
                 out: np.ndarray | None = None, layout: TileLayout | None = None) -> np.ndarray:
    """Fine prediction ``(B, H, W)`` float32 for one :class:`stfcat.data.series.Case` (whole scene)."""
    series = case.series

    def read(win):
        return case.read(win)[0]

    return predict_windows(model, read, series.shape, len(series.bands), device=device, tile=tile,
                           progress=progress, desc=f"predict {case.target_date}", out=out, layout=layout)
