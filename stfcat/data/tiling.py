"""Whole-scene prediction in tiles: overlapping windows and seamless blending.

``iter_tiles`` covers a grid with ``tile x tile`` windows overlapping by ``overlap`` pixels (the
last row/column of tiles is shifted back to end at the border, so every tile has full size when
the scene is at least one tile large). :class:`TileBlender` accumulates per-tile predictions with
weights that ramp linearly from ``1/(overlap+1)`` at a tile border to 1 at ``overlap`` pixels
inside it, and divides by the summed weights: neighbouring tiles cross-fade over the overlap, so
no seam appears, and at the scene border (where no neighbour exists) the normalisation makes the
small weights harmless. Inputs are read window by window; only the output is scene-sized (pass a
``numpy.memmap`` as ``out`` to keep even that on disk).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .readers import as_window


def _starts(size: int, tile: int, stride: int, align: int = 1) -> list[int]:
    if size <= tile:
        return [0]
    if align <= 1:
        starts = list(range(0, size - tile, stride))
        starts.append(size - tile)
        return starts
    # aligned: every start a multiple of align; the last tile ends at the border (it may be
    # up to align - 1 pixels longer than tile) and still overlaps its neighbour by >= overlap
    stride = max(align, stride // align * align)
    starts = list(range(0, size - tile, stride))
    last = (size - tile) // align * align
    if last > starts[-1]:
        starts.append(last)
    return starts


def iter_tiles(shape: tuple[int, int], tile: int, overlap: int = 0, align: int = 1) -> Iterator:
    """Yield ``rasterio.windows.Window`` tiles covering ``shape`` (H, W).

    ``align > 1`` puts every tile origin on a multiple of ``align`` (the coarse grid, for methods
    that average ``ratio x ratio`` blocks): the last tile of a row or column then ends at the
    border and may be up to ``align - 1`` pixels longer than ``tile``."""
    from rasterio.windows import Window

    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap} with tile={tile}")
    if align < 1 or (align > 1 and tile - overlap < align):
        raise ValueError(f"align must be in [1, tile - overlap], got align={align} with tile={tile}, overlap={overlap}")
    h, w = int(shape[0]), int(shape[1])
    stride = tile - overlap
    rows, cols = _starts(h, tile, stride, align), _starts(w, tile, stride, align)
    for i, r in enumerate(rows):
        height = h - r if i == len(rows) - 1 else min(tile, h - r)
        for j, c in enumerate(cols):
            width = w - c if j == len(cols) - 1 else min(tile, w - c)
            yield Window(c, r, width, height)


def _even_starts(size: int, core: int, overlap: int, align: int) -> tuple[list[int], int]:
    """Tile starts along one axis and the tile length: as few tiles as ``core`` allows, spread
    evenly (stride = the smallest multiple of ``align`` that covers the axis in that many tiles),
    so the overlap costs ``(n - 1) * overlap`` pixels and no more."""
    if size <= core + overlap:
        return [0], size
    n = -(-(size - overlap) // core)
    stride = -(-(size - overlap) // n)
    stride = -(-stride // align) * align
    tile = stride + overlap
    last = max(0, (size - tile) // align * align)  # the last tile ends at the border, full length
    return sorted({min(i * stride, last) for i in range(n)}), tile


def iter_even_tiles(shape: tuple[int, int], core: int, overlap: int = 0, align: int = 1) -> Iterator:
    """Yield windows covering ``shape`` with ``ceil((size - overlap) / core)`` tiles per axis, each
    ``stride + overlap`` long (``stride <= core`` rounded up to ``align``) and overlapping its
    neighbour by at least ``overlap`` pixels; origins fall on multiples of ``align`` and the last
    tile of a row or column ends at the border. Consecutive starts are at most ``stride`` apart,
    so cropping up to ``overlap // 2`` pixels from each inner side still covers every pixel."""
    from rasterio.windows import Window

    if core < 1 or overlap < 0 or align < 1:
        raise ValueError(f"need core >= 1, overlap >= 0, align >= 1; got {core}, {overlap}, {align}")
    h, w = int(shape[0]), int(shape[1])
    rows, th = _even_starts(h, core, overlap, align)
    cols, tw = _even_starts(w, core, overlap, align)
    for i, r in enumerate(rows):
        height = h - r if i == len(rows) - 1 else th
        for j, c in enumerate(cols):
            width = w - c if j == len(cols) - 1 else tw
            yield Window(c, r, width, height)


def ramp_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """Blending weights of one tile: a linear ramp over ``overlap`` pixels from each border."""
    if overlap <= 0:
        return np.ones((height, width), dtype=np.float32)

    def ramp(n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float32)
        edge = np.minimum(i, n - 1 - i) + 1.0
        return np.minimum(edge / (overlap + 1.0), 1.0)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


class TileBlender:
    """Accumulate tile predictions ``(B, h, w)`` and return the blended scene ``(B, H, W)``."""

    def __init__(
        self, shape: tuple[int, int], bands: int, overlap: int = 0, out: np.ndarray | None = None
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.bands = int(bands)
        self.overlap = int(overlap)
        if out is not None and out.shape != (self.bands, *self.shape):
            raise ValueError(f"out has shape {out.shape}, expected {(self.bands, *self.shape)}")
        self._sum = out if out is not None else np.zeros((self.bands, *self.shape), dtype=np.float32)
        self._sum[...] = 0
        self._weight = np.zeros(self.shape, dtype=np.float32)
        self._done = False

    def add(self, window, prediction: np.ndarray) -> None:
        if self._done:
            raise ValueError("TileBlender.add: result() was already taken; make a new TileBlender")
        win = as_window(window, self.shape)
        r, c, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        pred = np.asarray(prediction, dtype=np.float32)
        if pred.ndim == 4 and pred.shape[0] == 1:
            pred = pred[0]
        if pred.shape != (self.bands, h, w):
            raise ValueError(
                f"prediction has shape {pred.shape}, expected {(self.bands, h, w)} for window {tuple(win.flatten())}"
            )
        wt = ramp_weights(h, w, self.overlap)
        self._sum[:, r : r + h, c : c + w] += pred * wt
        self._weight[r : r + h, c : c + w] += wt

    def result(self) -> np.ndarray:
        """The blended scene (normalised in place once; later calls return the same array)."""
        if not self._done:
            uncovered = np.argwhere(self._weight <= 0)
            if uncovered.size:
                r, c = (int(v) for v in uncovered[0])
                raise ValueError(
                    f"TileBlender.result: {len(uncovered)} pixels were covered by no tile (first: row {r}, col {c})"
                )
            self._sum /= self._weight
            self._done = True
        return self._sum
