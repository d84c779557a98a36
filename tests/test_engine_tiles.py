"""The whole-scene predictor: layout, seams when the overlap is too thin, shared reads, overlap cost
(the per-model "tiled equals one pass" check is in tests/test_contract.py)."""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
import torch
from _scenes import BANDS, RATIO, _reader, _scene

from stfcat.engine.predict import TileLayout, predict_scene, tile_layout
from stfcat.models import create_model, list_models, model_info
from stfcat.models.base import REQUIRED_KEYS

CORE = 16  # small tile cores, so even a tiny scene is cut into many tiles
MODELS = [m for m in list_models() if model_info(m).cls.__module__.split(".")[0] in {"stfcat", "stfcat_zoo"}]
# smallest settings that keep each model's structure (fewer channels / blocks, a 7 px window)
SMALL = {"window": 7, "width": 8, "feats": 8, "blocks": 1}
# ESTARFM's regression slopes come from float32 window sums (cumulative sums over the tile): their
# rounding depends on a pixel's offset in the tile, ~2e-5 here whatever the overlap (it is not a
# context cut: 10 px more overlap leaves the same size of difference)
ATOL = {"estarfm": 1e-4}


def _tiny(name: str):
    params = inspect.signature(model_info(name).cls.__init__).parameters
    torch.manual_seed(0)
    return create_model(name, bands=BANDS, ratio=RATIO, **{k: v for k, v in SMALL.items() if k in params}).eval()


def test_tiles_cut_by_less_than_the_receptive_field_show_seams() -> None:
    """The equality above can fail: tiles that overlap by less than 2 x the radius differ."""
    model = _tiny("edcstfn")
    shape = (70, 52)
    scene = _scene(shape)
    whole = model({k: torch.from_numpy(scene[k])[None] for k in REQUIRED_KEYS[2]})[0].detach().numpy()
    thin = TileLayout(core=CORE, overlap=2 * model.receptive_field - 2)
    preds, _ = predict_scene({"m": model}, _reader(scene), shape, BANDS, layout=thin)
    assert np.abs(preds["m"] - whole).max() > 1e-4


def test_several_models_share_one_read_per_tile() -> None:
    """Models with different radii in one pass (as `stfcat run` predicts with its baselines) each
    equal their own whole-scene prediction, and every tile is read once."""
    models = {"edcstfn": _tiny("edcstfn"), "delta": _tiny("delta"), "fitfc": _tiny("fitfc")}
    layout = replace(tile_layout(models), core=CORE)
    shape = (layout.overlap + 2 * CORE + 7, layout.overlap + 2 * CORE + 1)
    scene = _scene(shape)
    reads = []

    def read(win):
        reads.append(win)
        return _reader(scene)(win)

    preds, secs = predict_scene(models, read, shape, BANDS, layout=layout)
    assert len(reads) == len(layout.windows(shape)) >= 4 and set(secs) == set(models)
    for k, m in models.items():
        keys = REQUIRED_KEYS[m.n_refs]
        with torch.no_grad():
            whole = m({kk: torch.from_numpy(scene[kk])[None] for kk in keys})[0].numpy()
        np.testing.assert_allclose(preds[k], whole, atol=1e-5, rtol=0, err_msg=k)


@pytest.mark.parametrize("shape", [(2040, 1720), (1020, 860)])
def test_default_layout_costs_at_most_ten_percent_for_edcstfn(shape) -> None:
    """The overlap's price in network pixels (the time is measured by benchmarks/run.py)."""
    model = create_model("edcstfn", bands=6, ratio=16)
    layout = tile_layout(model)
    wins = layout.windows(shape)
    network = sum(int(w.height) * int(w.width) for w in wins)
    assert layout.overlap == 2 * model.receptive_field
    assert network / (shape[0] * shape[1]) <= 1.10, (layout, network)


@pytest.mark.parametrize("shape,core,overlap,align", [((230, 150), 16, 10, 1), ((97, 61), 20, 8, 4),
                                                      ((64, 64), 64, 0, 1), ((300, 33), 50, 24, 8)])
def test_even_tiles_cover_after_cropping_half_the_overlap(shape, core, overlap, align) -> None:
    from stfcat.engine.predict import crop_halo

    wins = TileLayout(core, overlap, align).windows(shape)
    hits = np.zeros(shape, dtype=int)
    for w in wins:
        assert int(w.row_off) % align == 0 and int(w.col_off) % align == 0
        inner, _ = crop_halo(w, shape, overlap // 2)
        hits[int(inner.row_off) : int(inner.row_off + inner.height), int(inner.col_off) : int(inner.col_off + inner.width)] += 1
    assert hits.min() >= 1
