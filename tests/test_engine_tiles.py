"""Whole-scene prediction in tiles: methods with coarse-grid steps get tiles on the coarse grid."""

from __future__ import annotations

import numpy as np
import torch

from stfcat.engine.predict import predict_windows
from stfcat.models import create_model


def test_fitfc_in_aligned_tiles_equals_whole_scene() -> None:
    # Fit-FC averages ratio x ratio blocks: a tile origin off the coarse grid would change them
    ratio, h, w = 4, 230, 150
    g = torch.Generator().manual_seed(3)
    base = torch.rand(3, h // 10 + 1, w // 10 + 1, generator=g) * 0.3 + 0.05
    f1 = base.repeat_interleave(10, 1).repeat_interleave(10, 2)[:, :h, :w] + torch.rand(3, h, w, generator=g) * 0.01
    up = lambda x: x.repeat_interleave(ratio, 1).repeat_interleave(ratio, 2)[:, :h, :w]  # noqa: E731
    cc1 = torch.nn.functional.avg_pool2d(f1[None], ratio, ceil_mode=True)[0]
    c1, c2 = up(cc1), up(cc1 * 1.1 + 0.01 * torch.rand(cc1.shape, generator=g))
    scene = {"f1": f1.numpy(), "c1": c1.numpy(), "c2": c2.numpy()}
    model = create_model("fitfc", bands=3, ratio=ratio, window=9, n_similar=8)
    assert model.tile_align == ratio

    def read(win):
        r, c, hh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        return {k: v[:, r : r + hh, c : c + ww] for k, v in scene.items()}

    tiled = predict_windows(model, read, (h, w), 3, tile=64)
    whole = model({k: torch.from_numpy(v)[None] for k, v in scene.items()})[0].numpy()
    np.testing.assert_allclose(tiled, whole, atol=2e-6)
