"""Shared losses against independent values: scikit-image SSIM, a numpy MS-SSIM and spectral angle,
hand-computed Charbonnier and adversarial losses, the WGAN-GP penalty of a linear critic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stfcat.models import losses as L


def _images(shape=(1, 3, 40, 48), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(shape, generator=g, dtype=dtype), 3, 1, 1)  # some spatial structure
    y = (x + 0.05 * torch.randn(shape, generator=g, dtype=dtype)).clamp(0, 1)
    return x, y


def test_ssim_per_band_equals_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    x, y = _images()
    got = L.ssim(x, y, data_range=1.0, reduction="none")
    assert got.shape == (1, 3)
    for b in range(3):
        ref = skm.structural_similarity(x[0, b].numpy(), y[0, b].numpy(), gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=1.0)
        assert got[0, b].item() == pytest.approx(ref, abs=1e-9)
    # data_range enters the constants: stored-integer scale with range 10000 gives the same value
    np.testing.assert_allclose(L.ssim(x * 1e4, y * 1e4, data_range=1e4, reduction="none"), got, atol=1e-9)
    assert L.ssim(x, x).item() == pytest.approx(1.0)


def test_ssim_is_differentiable_and_checks_shapes():
    x, y = _images(dtype=torch.float32)
    p = y.clone().requires_grad_(True)
    L.ssim_loss(p, x).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shapes differ"):
        L.ssim(x, y[..., :-1])


def _np_ssim_cs(x: np.ndarray, y: np.ndarray, data_range=1.0) -> tuple[float, float]:
    """Independent SSIM and contrast-structure means (numpy windows, float64), valid positions."""
    k = min(11, *x.shape[-2:])
    t = np.arange(k) - k // 2
    g = np.exp(-(t**2) / (2 * 1.5**2))
    w = np.outer(g, g) / g.sum() ** 2
    win = np.lib.stride_tricks.sliding_window_view

    def filt(a):
        return np.einsum("...ij,ij->...", win(a, (k, k), axis=(-2, -1)), w)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return float(((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean()), float(cs.mean())


@pytest.mark.parametrize("normalize", [False, True])
def test_ms_ssim_equals_numpy_product_over_scales(normalize):
    x, y = _images((2, 2, 64, 64), seed=1)
    weights = (0.2, 0.3, 0.5)
    xs, ys, vals = x.numpy(), y.numpy(), []
    for _ in weights:
        vals.append(_np_ssim_cs(xs, ys))
        xs = xs.reshape(*xs.shape[:-2], xs.shape[-2] // 2, 2, xs.shape[-1] // 2, 2).mean(axis=(-3, -1))
        ys = ys.reshape(*ys.shape[:-2], ys.shape[-2] // 2, 2, ys.shape[-1] // 2, 2).mean(axis=(-3, -1))
    f = (lambda v: (v + 1) / 2) if normalize else (lambda v: max(v, 0.0))  # noqa: E731
    ref = math.prod(f(cs) ** w for (_, cs), w in zip(vals[:-1], weights[:-1], strict=True)) * f(vals[-1][0]) ** 0.5
    got = L.ms_ssim(x, y, weights=weights, normalize=normalize).item()
    assert got == pytest.approx(ref, abs=1e-9)
    # one scale is plain SSIM; identical images give 1 with the 5 standard scales
    assert L.ms_ssim(x, y, weights=(1.0,)).item() == pytest.approx(L.ssim(x, y).item(), abs=1e-12)
    assert L.ms_ssim(x, x).item() == pytest.approx(1.0)


def test_global_ssim_equals_the_formula_with_sample_moments():
    x, y = _images((2, 3, 8, 8), seed=2)
    a, b = x.numpy().ravel(), y.numpy().ravel()
    c1, c2 = (0.01 * 1.6384) ** 2, (0.03 * 1.6384) ** 2
    cov = np.cov(a, b)  # sample (n - 1) covariances
    ref = ((2 * a.mean() * b.mean() + c1) * (2 * cov[0, 1] + c2)
           / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
    assert L.global_ssim(x, y, data_range=1.6384).item() == pytest.approx(ref, abs=1e-12)


def test_charbonnier_hand_values():
    x, y = torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, -1.0]])
    e0, e1 = 1e-3, math.sqrt(16 + 1e-6)
    assert L.charbonnier(x, y).item() == pytest.approx((e0 + e1) / 2, rel=1e-6)
    assert L.charbonnier(x, y, reduction="sum").item() == pytest.approx(e0 + e1, rel=1e-6)
    assert L.charbonnier(x, y, eps=0.1, reduction="none")[0].tolist() == pytest.approx([0.1, math.sqrt(16.01)])
    with pytest.raises(ValueError, match="reduction"):
        L.charbonnier(x, y, reduction="max")


def test_spectral_angle_equals_numpy_and_has_finite_gradients():
    g = torch.Generator().manual_seed(3)
    p, t = torch.rand(2, 4, 5, 6, generator=g, dtype=torch.float64), torch.rand(2, 4, 5, 6, generator=g, dtype=torch.float64)
    pn, tn = p.numpy(), t.numpy()
    ref = np.arccos((pn * tn).sum(1) / (np.linalg.norm(pn, axis=1) * np.linalg.norm(tn, axis=1))).mean()
    assert L.sam_loss(p, t).item() == pytest.approx(ref, abs=1e-9)
    e1, e2 = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1), torch.tensor([0.0, 3.0]).view(1, 2, 1, 1)
    assert L.sam_loss(e1, e2).item() == pytest.approx(math.pi / 2)
    q = t.clone().float().requires_grad_(True)
    L.sam_loss(q, t.float() * 2).backward()  # same spectra up to scale: angle ~0, gradient finite
    assert L.sam_loss(t * 2, t).item() < 1e-3 and torch.isfinite(q.grad).all()


REAL, FAKE = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize(("kind", "d", "g"), [
    ("hinge", (0 + 2) / 2 + (1.5 + 0) / 2, 1.25),
    ("lsgan", 0.5 * (1 + 4) / 2 + 0.5 * (0.25 + 9) / 2, 0.5 * (0.25 + 16) / 2),
    ("wgan", -1.25 - 0.5, 1.25),
    ("vanilla", (_softplus(-2) + _softplus(1)) / 2 + (_softplus(0.5) + _softplus(-3)) / 2,
     (_softplus(-0.5) + _softplus(3)) / 2),
])
def test_adversarial_losses_hand_values(kind, d, g):
    assert L.discriminator_loss(REAL, FAKE, kind).item() == pytest.approx(d, rel=1e-6)
    assert L.generator_loss(FAKE, kind).item() == pytest.approx(g, rel=1e-6)


def test_unknown_adversarial_kind_is_named():
    with pytest.raises(ValueError, match="'relativistic'"):
        L.generator_loss(FAKE, "relativistic")


@pytest.mark.parametrize(("norm", "expect"), [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_of_a_linear_critic(norm, expect):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(3 * 4 * 4, generator=g, dtype=torch.float64)
    w = (w / w.norm() * norm).requires_grad_(True)
    real = torch.rand(5, 3, 4, 4, generator=g, dtype=torch.float64)
    fake = torch.rand(5, 3, 4, 4, generator=g, dtype=torch.float64)
    gp = L.gradient_penalty(lambda x: x.flatten(1) @ w, real, fake, generator=g)
    assert gp.item() == pytest.approx(expect, abs=1e-12)
    gp.backward()  # the penalty trains the critic: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm)


def test_feature_loss_uses_the_encoder_and_freezes_it():
    enc = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Dropout(0.5))
    x, y = torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8)
    assert L.feature_loss(lambda t: t, x, y).item() == pytest.approx(F.mse_loss(x, y).item())
    two = L.feature_loss(lambda t: [t, 2 * t], x, y, criterion=F.l1_loss, weights=(1.0, 0.5))
    assert two.item() == pytest.approx(2 * F.l1_loss(x, y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="2 weights for 1"):
        L.feature_loss(lambda t: [t], x, y, weights=(1.0, 2.0))
    loss = L.FeatureLoss(enc).train()
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    p = x.clone().requires_grad_(True)
    v = loss(p, y)
    assert v.item() == pytest.approx(F.mse_loss(enc(x), enc(y)).item())  # eval: no dropout noise
    v.backward()
    assert p.grad.abs().sum() > 0 and all(q.grad is None for q in enc.parameters())
