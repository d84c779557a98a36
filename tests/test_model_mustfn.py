"""MUSTFN specifics: official parameter count, size-agnostic pyramid pooling, NDVI band rule,
global SSIM, the two loss stages (SSIM from epoch 20) and fusion output after each stage, and the
quick recipe's model (GroupNorm, residual output) that learns at batch 2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stfcat_zoo.mustfn import EPOCHS, OFFICIAL_BAND_STD, SSIM_FROM_EPOCH, global_ssim

from stfcat.engine.checkpoint import model_from_checkpoint, model_record
from stfcat.models import count_parameters, create_model, model_info


def _batch(size: int = 32, bands: int = 4, coarse_bands: int | None = None, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cb = coarse_bands or bands
    b = {k: 0.05 + 0.4 * torch.rand(n, bands, size, size, generator=g) for k in ("f1", "f3")}
    b.update({k: 0.05 + 0.4 * torch.rand(n, cb, size, size, generator=g) for k in ("c1", "c2", "c3")})
    return b


def test_official_parameter_count_with_seven_band_modis():
    # official MyNet(12) (6-band Landsat x2 + 7-band MODIS x3), qpyeah/MUSTFN @ 6456a6a
    assert count_parameters(create_model("mustfn", bands=6, coarse_bands=7)) == 8_660_730
    canonical = create_model("mustfn", bands=6)
    assert canonical.coarse_bands == 6
    assert count_parameters(canonical) == model_info("mustfn").params == 8_641_932
    assert model_info("mustfn").n_refs == 2


def test_coarse_band_override_and_mismatch_error():
    m = create_model("mustfn", bands=4, coarse_bands=5).eval()
    with torch.no_grad():
        out = m(_batch(bands=4, coarse_bands=5, n=1))
    assert out.shape == (1, 4, 32, 32)
    with pytest.raises(ValueError, match="coarse_bands"):
        m(_batch(bands=4, coarse_bands=4, n=1))
    with pytest.raises(ValueError, match="coarse_bands"):
        create_model("mustfn", coarse_bands=0)


def test_size_agnostic_and_output_in_unit_range():
    m = create_model("mustfn", bands=3).eval()
    b = _batch(bands=3, n=1)
    b = {k: F.interpolate(v, size=(40, 72)) for k, v in b.items()}  # not a multiple of 16
    with torch.no_grad():
        out = m(b)
    assert out.shape == (1, 3, 40, 72)
    assert (out > 0).all() and (out < 1).all()  # sigmoid head


def test_fixed_pool_kernels_equal_official_adaptive_pools_on_256_tiles():
    # feature2 of a 256x256 tile is 128x128; the official adaptive pools to 64/32/16 are our kernels 2/4/8
    x = torch.rand(1, 5, 128, 128)
    for k, size in ((2, 64), (4, 32), (8, 16)):
        torch.testing.assert_close(F.avg_pool2d(x, k, ceil_mode=True), F.adaptive_avg_pool2d(x, size))


def test_ndvi_band_rule():
    assert create_model("mustfn", bands=6).ndvi_bands == (2, 3)  # blue, green, red, nir, ... order
    assert create_model("mustfn", bands=3).ndvi_bands is None  # < 4 bands: skipped
    names = ["nir", "red", "green"]
    assert create_model("mustfn", bands=3, band_names=names).ndvi_bands == (1, 0)
    assert create_model("mustfn", bands=2, red=1, nir=0).ndvi_bands == (1, 0)
    assert create_model("mustfn", bands=4, band_names=["b", "g", "r", "n"]).ndvi_bands is None
    with pytest.raises(ValueError, match="nir"):
        create_model("mustfn", bands=4, red=2, nir=7)
    with pytest.raises(ValueError, match="band_names"):
        create_model("mustfn", bands=4, band_names=["red", "nir"])


def test_ndvi_term_changes_the_loss_only_when_bands_are_known():
    with_ndvi = create_model("mustfn", bands=4)
    without = create_model("mustfn", bands=4, band_names=["a", "b", "c", "d"])
    target = 0.05 + 0.4 * torch.rand(2, 4, 8, 8)
    pred = 0.05 + 0.4 * torch.rand(2, 4, 8, 8)
    assert with_ndvi._spectral_ndvi(pred, target) > without._spectral_ndvi(pred, target)
    torch.testing.assert_close(with_ndvi._spectral_ndvi(target, target), torch.tensor(0.0))


def test_official_band_std_weights_bands():
    m = create_model("mustfn", bands=6, band_std=OFFICIAL_BAND_STD, band_names=["a"] * 6)
    pred, target = torch.zeros(1, 6, 4, 4), torch.zeros(1, 6, 4, 4)
    pred[:, 0] = 0.1  # error 0.1 in band 0 only
    expect = 0.1**2 / OFFICIAL_BAND_STD[0] ** 2
    torch.testing.assert_close(m._spectral_ndvi(pred, target), torch.tensor(expect))
    with pytest.raises(ValueError, match="band_std"):
        create_model("mustfn", bands=4, band_std=OFFICIAL_BAND_STD)


def test_global_ssim_is_one_for_equal_images_and_differentiable_in_covariance():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(global_ssim(x, x, data_range=1.6384), torch.tensor(1.0))
    # same mean and variance, opposite structure: only the covariance can lower SSIM
    y = x.mean() - (x - x.mean())
    assert global_ssim(y, x) < 0.9
    p = y.clone().requires_grad_(True)
    (1 - global_ssim(p, x)).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_two_stages_ssim_from_epoch_20_and_fusion_output_after_each():
    m = create_model("mustfn", bands=4)
    stages = m.stages()
    assert [s.name for s in stages] == ["spectral+ndvi", "spectral+ndvi+ssim"]
    assert stages[0].share == pytest.approx(SSIM_FROM_EPOCH / EPOCHS)
    assert sum(s.share for s in stages) == pytest.approx(1.0)
    b, target = _batch(bands=4, n=1), 0.05 + 0.4 * torch.rand(1, 4, 32, 32)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)
    for stage in stages:
        m.train()
        opt.zero_grad()
        stage.loss(b, target).backward()
        opt.step()
        m.eval()
        with torch.no_grad():
            out = m(b)
        # forward is the fusion network: the head's sigmoid image, never a loss or a partial output
        assert out.shape == target.shape and ((out > 0) & (out < 1)).all()
    with torch.no_grad():
        s1, s2 = m.loss_without_ssim(b, target), m.loss(b, target)
        expect = 0.1 * (1 - global_ssim(m(b), target, data_range=1.6384))  # the official constants
    torch.testing.assert_close(s2 - s1, expect, rtol=1e-4, atol=1e-5)


def _quick_model(bands: int = 4) -> torch.nn.Module:
    return create_model("mustfn", bands=bands, **model_info("mustfn").recipe.for_budget(False)[1])


def test_quick_recipe_builds_group_norm_residual_model_and_full_recipe_the_official_one():
    recipe = model_info("mustfn").recipe
    assert recipe.for_budget(True)[1] == {}  # --full-recipe: the paper's BatchNorm + sigmoid network
    official = create_model("mustfn", bands=6)
    assert (official.norm, official.output) == ("batch", "sigmoid")
    quick = _quick_model(6)
    assert (quick.norm, quick.output) == ("group", "residual")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in quick.modules())
    # GroupNorm has BatchNorm's affine parameters: the same count and parameter names
    assert count_parameters(quick) == count_parameters(official) == 8_641_932
    assert [n for n, _ in quick.named_parameters()] == [n for n, _ in official.named_parameters()]
    with pytest.raises(ValueError, match="norm"):
        create_model("mustfn", norm="layer")
    with pytest.raises(ValueError, match="output"):
        create_model("mustfn", output="tanh")


@pytest.mark.parametrize("start", ["mean", "delta"])
def test_residual_output_equals_its_reference_start_at_init(start):
    m = create_model("mustfn", bands=4, norm="group", output="residual", start=start).eval()
    b = _batch(bands=4, n=1)
    expect = {"mean": (b["f1"] + b["f3"]) / 2,
              "delta": ((b["f1"] + b["c2"] - b["c1"]) + (b["f3"] + b["c2"] - b["c3"])) / 2}[start]
    with torch.no_grad():
        torch.testing.assert_close(m(b), expect)
        torch.testing.assert_close(m.reference_start(b), expect)


def test_quick_model_predicts_in_eval_mode_as_in_training_after_batch2_steps():
    # the issue: BatchNorm's running statistics of a few batch-2 patches do not match the patch
    # statistics the network trained with, so eval-mode output left the reflectance range
    torch.manual_seed(0)
    m = _quick_model(4)
    b, target = _batch(bands=4, n=2, seed=1), 0.05 + 0.4 * torch.rand(2, 4, 32, 32)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(2):  # enough: BatchNorm (either output) then differs by > 0.04 in eval mode
        opt.zero_grad()
        m.loss_without_ssim(b, target).backward()
        opt.step()
    with torch.no_grad():
        train_out = m.train()(b)
        eval_out = m.eval()(b)
    torch.testing.assert_close(eval_out, train_out, rtol=0, atol=1e-5)
    assert eval_out.min() > -0.5 and eval_out.max() < 1.5  # near reflectance, far from saturation
    assert (eval_out - m.reference_start(b)).abs().max() < 0.5


def test_checkpoint_rebuilds_the_quick_model():
    quick_args = model_info("mustfn").recipe.for_budget(False)[1]
    m = _quick_model(4).eval()
    record = model_record("mustfn", m, band_names=None, scale_factor=None, overrides=quick_args)
    assert {k: record["config"][k] for k in ("norm", "output", "start")} == {
        "norm": m.norm, "output": m.output, "start": m.start}
    ckpt = {**record, "model_state": m.state_dict()}
    rebuilt = model_from_checkpoint(ckpt, "mustfn", bands=4).eval()
    assert (rebuilt.norm, rebuilt.output, rebuilt.start) == (m.norm, m.output, m.start)
    b = _batch(bands=4, n=1)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(b), m(b))
