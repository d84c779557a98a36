"""Tiny synthetic scenes for tiling tests: textured fine images, coarse images that are exact block
means on the fine grid, and a window reader over them."""

from __future__ import annotations

import numpy as np

RATIO = 4
BANDS = 3


def _scene(shape: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Fine images with texture; coarse ones are exact block means on the fine grid (ratio 4)."""
    g = np.random.default_rng(seed)
    h, w = shape
    hc, wc = -(-h // RATIO), -(-w // RATIO)

    def fine():
        base = np.kron(g.uniform(0.05, 0.4, (BANDS, hc // 2 + 1, wc // 2 + 1)), np.ones((2 * RATIO, 2 * RATIO)))
        return (base[:, :h, :w] + g.normal(0, 0.02, (BANDS, h, w))).astype(np.float32)

    def coarse(f):
        pad = np.pad(f, ((0, 0), (0, hc * RATIO - h), (0, wc * RATIO - w)), mode="edge")
        means = pad.reshape(BANDS, hc, RATIO, wc, RATIO).mean((2, 4))
        return np.kron(means, np.ones((RATIO, RATIO)))[:, :h, :w].astype(np.float32)

    f1, f2, f3 = fine(), fine(), fine()
    return {"f1": f1, "c1": coarse(f1), "c2": coarse(f2), "f3": f3, "c3": coarse(f3)}


def _reader(scene):
    def read(win):
        r, c, hh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        return {k: v[:, r : r + hh, c : c + ww] for k, v in scene.items()}

    return read
