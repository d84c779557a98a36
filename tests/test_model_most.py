"""MOST specifics: cascaded x4 EDSR stages chosen by ratio, native coarse grid by average
pooling, final resize for ratios that are not powers of 4, and the reference's role."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stfcat_zoo.most import n_stages

from stfcat.models import count_parameters, create_model, model_info

STAGE_6B = 3520 + 16 * 73_856 + 36_928 + 2 * 147_712 + 3462  # head, 16 blocks, body conv, upsampler, tail


def _batch(size: int = 32, bands: int = 2, n: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + 0.4 * torch.rand(n, bands, size, size, generator=g) for k in ("f1", "c1", "c2")}


def test_stage_count_and_parameters_follow_ratio():
    assert [n_stages(r) for r in (1, 2, 4, 8, 16, 30, 64)] == [1, 1, 1, 2, 2, 3, 3]
    m = create_model("most", bands=6, ratio=16)
    assert len(m.stages_sr) == 2
    assert count_parameters(m.stages_sr[0]) == STAGE_6B == 1_521_030
    assert count_parameters(m) == 2 * STAGE_6B == model_info("most").params
    assert count_parameters(create_model("most", bands=6, ratio=4)) == STAGE_6B
    for blk in m.stages_sr[0].body[:16]:
        assert blk.res_scale == 0.1


def test_works_on_the_native_coarse_grid():
    m = create_model("most", bands=2, ratio=8, mode="sr").eval()
    b = _batch()
    # replacing C2 by its 8x8 block means changes nothing: only the native grid is seen
    blocky = F.interpolate(F.avg_pool2d(b["c2"], 8), scale_factor=8, mode="nearest")
    with torch.no_grad():
        torch.testing.assert_close(m(b), m(dict(b, c2=blocky)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("ratio", "size"), [(4, 16), (8, 32), (16, 40), (5, 23)])
def test_any_ratio_and_size_lands_on_the_fine_grid(ratio: int, size: int):
    m = create_model("most", bands=3, ratio=ratio, blocks=1).eval()
    with torch.no_grad():
        out = m(_batch(size=size, bands=3))
    assert out.shape == (1, 3, size, size) and torch.isfinite(out).all()


def test_reference_role_change_vs_sr_mode():
    change = create_model("most", bands=2, ratio=4, blocks=1).eval()
    b = _batch(size=16)
    with torch.no_grad():
        torch.testing.assert_close(change(b), b["f1"])  # zero-initialised output conv: untrained = F1
        torch.nn.init.normal_(change.stages_sr[-1].tail.weight, std=0.1)
        out = change(b)
    assert not torch.allclose(out, b["f1"])
    # the change mode sees the coarse images only through C2 - C1
    with torch.no_grad():
        torch.testing.assert_close(change(dict(b, c1=b["c1"] + 0.1, c2=b["c2"] + 0.1)), out, rtol=1e-5, atol=1e-6)
    sr = create_model("most", bands=2, ratio=4, blocks=1, mode="sr").eval()
    with torch.no_grad():
        torch.testing.assert_close(sr(b), sr(dict(b, f1=b["f1"] + 1, c1=b["c1"] + 1)))  # C2 only
    with pytest.raises(ValueError, match="mode"):
        create_model("most", mode="nope")



def test_quick_recipe_can_move_the_zero_started_tail():
    # EDSR's lr 1e-4 hardly moved the zero-started tail in the quick budget (the quick model stayed
    # near the copy-f1 score): the quick optimiser warms up to a larger lr and decays it to zero
    # within the budget; patches hold 16 x 16 native cells, not 8 x 8 mostly padding
    from stfcat.engine.optim import iteration_factor

    recipe = model_info("most").recipe
    quick, args = recipe.for_budget(full=False)
    paper, _ = recipe.for_budget(full=True)
    assert paper.lr == 1e-4 and quick.lr >= 5 * paper.lr and args == {}
    steps = recipe.quick.epochs * recipe.quick.steps_per_epoch
    f = iteration_factor(quick, recipe.quick.epochs, recipe.quick.steps_per_epoch, quick.lr)
    assert f(0) < 0.1 and f(quick.warmup_steps) > 0.95 and f(steps - 1) < 0.01
    assert recipe.quick.patch // 16 >= 16 and recipe.select == "best"
