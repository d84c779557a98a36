"""Whole-scene prediction with the tiled reader: bounded memory, seamless blending."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

DEFAULT_TILE = 256


def tile_layout(shape: tuple[int, int], model, tile: int = DEFAULT_TILE) -> tuple[int, int]:
    """``(tile, overlap)`` for ``model``: tiles overlap by ``2 * halo + BLEND`` so that, after
    :func:`crop_halo` drops the ``halo`` pixels whose context was cut, neighbours still share
    ``BLEND`` pixels to cross-fade (exact for a model whose receptive radius is <= halo). The tile
    is at least ``model.min_size`` and grows towards 3x the overlap (up to 512 px)."""
    halo = int(getattr(model, "halo", 0))
    overlap = 2 * halo + (BLEND if halo else 0)
    # wide halos (e.g. 96 px) would make 256 px tiles mostly overlap: grow the tile towards 3x the
    # overlap (at most 512 px: stfdcnn's peak memory on a 2040x1720x6 scene stays near 1 GB)
    tile = max(tile, int(getattr(model, "min_size", 1)), 2 * overlap + 16, min(3 * overlap, 512))
    tile = max(tile, overlap + tile_align(model))
    return tile, overlap


def tile_align(model) -> int:
    """Tile-origin alignment a model asks for (1: none)."""
    return max(1, int(getattr(model, "tile_align", 1)))


BLEND = 8
"""Pixels over which neighbouring tiles cross-fade, beyond the halo cropped from each side."""


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


def predict_windows(
    model,
    read: Callable[[Any], dict[str, np.ndarray]],
    shape: tuple[int, int],
    bands: int,
    *,
    device: Any = "cpu",
    tile: int = DEFAULT_TILE,
    progress: bool = False,
    desc: str = "predict",
    out: np.ndarray | None = None,
    windows: Iterable | None = None,
) -> np.ndarray:
    """Predict a ``shape`` scene: ``read(window)`` gives the inputs of one window (B, h, w) arrays;
    tiles are blended by :class:`stfcat.data.tiling.TileBlender`. ``out`` may be a memmap."""
    import torch
    from tqdm.auto import tqdm

    from stfcat.data.tiling import TileBlender, iter_tiles

    tile, overlap = tile_layout(shape, model, tile)
    halo = int(getattr(model, "halo", 0))
    wins = list(windows) if windows is not None else list(iter_tiles(shape, tile, overlap, tile_align(model)))
    blender = TileBlender(shape, bands, overlap - 2 * halo, out=out)
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    with torch.inference_mode():
        for win in tqdm(wins, desc=desc, disable=not progress, leave=False, unit="tile"):
            inputs = read(win)
            batch = {k: torch.from_numpy(np.ascontiguousarray(v))[None].to(device) for k, v in inputs.items()}
            pred = model(batch)[0].float().cpu().numpy()
            inner, (rs, cs) = crop_halo(win, shape, halo)
            blender.add(inner, pred[:, rs, cs])
    model.train(was_training)
    return blender.result()


def predict_case_multi(models: dict[str, Any], case, *, device: Any = "cpu", tile: int = DEFAULT_TILE,
                       progress: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray, dict[str, float]]:
    """Predict one case with several models, reading each tile once.

    Returns ``(predictions by model id, target (B,H,W) with NaN or None, valid mask (H,W),
    seconds spent in each model's forward)``. The tile layout is the widest any model needs."""
    import math
    import time

    import torch
    from tqdm.auto import tqdm

    from stfcat.data.tiling import TileBlender, iter_tiles

    series = case.series
    shape, bands = series.shape, len(series.bands)
    layouts = {k: tile_layout(shape, m, tile) for k, m in models.items()}
    t_size = max(t for t, _ in layouts.values())
    overlap = max(o for _, o in layouts.values())
    align = math.lcm(*(tile_align(m) for m in models.values()))
    t_size = max(t_size, overlap + align)
    halos = {k: int(getattr(m, "halo", 0)) for k, m in models.items()}
    blenders = {k: TileBlender(shape, bands, overlap - 2 * halos[k]) for k in models}
    target = np.full((bands, *shape), np.nan, dtype=np.float32) if case.has_target else None
    valid = np.zeros(shape, dtype=bool)
    seconds = dict.fromkeys(models, 0.0)
    device = torch.device(device)
    modes = {k: m.training for k, m in models.items()}
    for m in models.values():
        m.eval().to(device)
    wins = list(iter_tiles(shape, t_size, overlap, align))
    with torch.inference_mode():
        for win in tqdm(wins, desc=f"predict {case.target_date}", disable=not progress, leave=False, unit="tile"):
            inputs, tgt, val = case.read(win)
            r, c, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
            if target is not None:
                target[:, r : r + h, c : c + w] = tgt
            valid[r : r + h, c : c + w] = val
            batch = {k: torch.from_numpy(np.ascontiguousarray(v))[None].to(device) for k, v in inputs.items()}
            for k, m in models.items():
                t0 = time.perf_counter()
                out = m({kk: batch[kk] for kk in batch if kk in _needed(m)})[0].float().cpu().numpy()
                seconds[k] += time.perf_counter() - t0
                inner, (rs, cs) = crop_halo(win, shape, halos[k])
                blenders[k].add(inner, out[:, rs, cs])
    for k, m in models.items():
        m.train(modes[k])
    return {k: b.result() for k, b in blenders.items()}, target, valid, seconds


def _needed(model) -> tuple[str, ...]:
    from stfcat.models.base import REQUIRED_KEYS

    return REQUIRED_KEYS[int(getattr(model, "n_refs", 1))]


def predict_case(model, case, *, device: Any = "cpu", tile: int = DEFAULT_TILE, progress: bool = False,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Fine prediction ``(B, H, W)`` float32 for one :class:`stfcat.data.series.Case` (whole scene)."""
    series = case.series

    def read(win):
        inputs, _, _ = case.read(win)
        return inputs

    return predict_windows(model, read, series.shape, len(series.bands), device=device, tile=tile,
                           progress=progress, desc=f"predict {case.target_date}", out=out)
