"""Training losses used by several papers, written once: SSIM and MS-SSIM, Charbonnier, feature
(perceptual) losses from a trained encoder, adversarial losses and the spectral-angle loss.

Every function takes ``(N, B, H, W)`` tensors (band-first, reflectance), is differentiable and
device/dtype agnostic. The test suite checks each one against an independent value
(scikit-image's SSIM, hand-computed cases, a numpy spectral angle).

Feature losses need a *trained* encoder. stfcat depends on no torchvision and ships no ImageNet
weights (a VGG trained on RGB photographs does not fit 4- to 13-band reflectance anyway): pass any
``nn.Module`` whose weights you provide, or, as the papers that use one do (e.g. EDCSTFN, whose
autoencoder stage trains it), the encoder of an autoencoder trained on the fine images first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Per-scale exponents of MS-SSIM (Wang, Simoncelli, Bovik 2003), finest scale first."""

Reduction = Literal["mean", "none"]


# --- SSIM ---------------------------------------------------------------------------------------
def gaussian_window(size: int, channels: int, *, sigma: float = 1.5, device=None, dtype=None) -> Tensor:
    """Normalised 2-D Gaussian, one copy per channel: ``(channels, 1, size, size)`` for a grouped conv."""
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_maps(x: Tensor, y: Tensor, *, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
              k1: float = 0.01, k2: float = 0.03) -> tuple[Tensor, Tensor]:
    """SSIM and contrast-structure maps ``(N, B, H - w + 1, W - w + 1)`` of Wang et al. (2004):
    Gaussian window (shrunk to the image on small inputs), population covariances, valid
    positions only (no padding: every value sees a full window)."""
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    c = x.shape[1]
    size = min(window, x.shape[-2], x.shape[-1])
    w = gaussian_window(size, c, sigma=sigma, device=x.device, dtype=x.dtype)
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    cs_map = (2 * sxy + c2) / (sxx + syy + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map, cs_map


def _reduce(v: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return v.mean()
    if reduction == "none":
        return v.mean(dim=(-2, -1))
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def ssim(x: Tensor, y: Tensor, *, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
         reduction: Reduction = "mean") -> Tensor:
    """Mean SSIM (``reduction="none"``: per image and band, ``(N, B)``). Per band, with 11 px /
    sigma 1.5 this is scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)`` (its mean over positions at least 5 px from the border)."""
    return _reduce(ssim_maps(x, y, data_range=data_range, window=window, sigma=sigma)[0], reduction)


def ssim_loss(x: Tensor, y: Tensor, **kwargs) -> Tensor:
    """``1 - ssim(x, y)``."""
    return 1.0 - ssim(x, y, **kwargs)


def ms_ssim(x: Tensor, y: Tensor, *, data_range: float = 1.0, weights: Sequence[float] = MS_SSIM_WEIGHTS,
            window: int = 11, normalize: bool = False) -> Tensor:
    """Multi-scale SSIM: ``prod_{i<M} cs_i^w_i * ssim_M^w_M`` over ``M = len(weights)`` dyadic
    scales (2x2 average pooling between scales, stopping once a side is 1 px; the window shrinks to
    the image on small scales). Per-scale values are means over images, bands and positions.

    ``normalize=True`` maps each scale's value to ``(v + 1) / 2`` before the powers (keeps them
    defined when a term goes negative early in training, as EDCSTFN's official code does);
    otherwise negative values are clamped to 0 (as pytorch-msssim does)."""
    ssims, css = [], []
    for i in range(len(weights)):
        s_map, cs_map = ssim_maps(x, y, data_range=data_range, window=window)
        ssims.append(s_map.mean())
        css.append(cs_map.mean())
        if i < len(weights) - 1 and min(x.shape[-2:]) >= 2:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    s, cs = torch.stack(ssims), torch.stack(css)
    if normalize:
        s, cs = (s + 1) / 2, (cs + 1) / 2
    else:
        s, cs = s.clamp_min(0), cs.clamp_min(0)
    w = torch.tensor(tuple(weights), dtype=x.dtype, device=x.device)
    return torch.prod(cs[:-1] ** w[:-1]) * s[-1] ** w[-1]


def global_ssim(x: Tensor, y: Tensor, *, data_range: float = 1.0) -> Tensor:
    """One SSIM over all pixels and bands of the batch (an 'image-level' SSIM: means, sample
    variances and covariance of the whole tensors, no window), as MUSTFN's official loss."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a, b = x.reshape(-1), y.reshape(-1)
    ma, mb = a.mean(), b.mean()
    n = max(a.numel() - 1, 1)
    cov = ((a - ma) * (b - mb)).sum() / n
    return (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (a.var() + b.var() + c2))


# --- pixel and spectral losses ------------------------------------------------------------------
def charbonnier(x: Tensor, y: Tensor, *, eps: float = 1e-3, reduction: Reduction | Literal["sum"] = "mean") -> Tensor:
    """Charbonnier (smooth L1) penalty ``sqrt((x - y)^2 + eps^2)``, mean (or sum, or per element)."""
    v = torch.sqrt((x - y) ** 2 + eps**2)
    if reduction == "mean":
        return v.mean()
    if reduction == "sum":
        return v.sum()
    if reduction == "none":
        return v
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def spectral_angle(x: Tensor, y: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Per-pixel angle (radians) between the band vectors of ``x`` and ``y``: ``(N, H, W)``.
    The cosine is clamped inside (-1, 1) so the gradient stays finite for identical spectra."""
    dot = (x * y).sum(dim=1)
    norms = x.norm(dim=1) * y.norm(dim=1)
    cos = dot / norms.clamp_min(eps)
    return torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))


def sam_loss(x: Tensor, y: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Mean spectral angle in **radians** (stfcat's ``sam`` metric reports degrees)."""
    return spectral_angle(x, y, eps=eps).mean()


# --- feature (perceptual) loss ------------------------------------------------------------------
def feature_loss(encoder: Callable[[Tensor], Tensor | Sequence[Tensor]], x: Tensor, y: Tensor, *,
                 criterion: Callable[[Tensor, Tensor], Tensor] = F.mse_loss,
                 weights: Sequence[float] | None = None) -> Tensor:
    """Distance between the features of ``x`` and ``y`` under a trained ``encoder`` (one tensor,
    or a sequence of feature maps whose distances are summed, weighted by ``weights``). Whether
    the encoder learns is the caller's business (freeze it with ``requires_grad_(False)``)."""
    fx, fy = encoder(x), encoder(y)
    if isinstance(fx, Tensor):
        return criterion(fx, fy)
    fx, fy = list(fx), list(fy)
    ws = [1.0] * len(fx) if weights is None else list(weights)
    if len(ws) != len(fx):
        raise ValueError(f"feature_loss: {len(ws)} weights for {len(fx)} feature maps")
    return sum(w * criterion(a, b) for w, a, b in zip(ws, fx, fy, strict=True))


class FeatureLoss(nn.Module):
    """:func:`feature_loss` with a frozen encoder (weights provided by the caller: see the module
    docstring). The encoder is kept in eval mode so batch norm/dropout do not move the target."""

    def __init__(self, encoder: nn.Module, *, criterion: Callable[[Tensor, Tensor], Tensor] = F.mse_loss,
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.criterion, self.weights = criterion, weights

    def train(self, mode: bool = True) -> FeatureLoss:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return feature_loss(self.encoder, x, y, criterion=self.criterion, weights=self.weights)


# --- adversarial losses -------------------------------------------------------------------------
GanKind = Literal["vanilla", "lsgan", "hinge", "wgan"]
GAN_KINDS = ("vanilla", "lsgan", "hinge", "wgan")


def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"GAN loss kind must be one of {', '.join(GAN_KINDS)}, got {kind!r}")


def discriminator_loss(real: Tensor, fake: Tensor, kind: GanKind = "vanilla") -> Tensor:
    """Discriminator (critic) loss from its raw outputs (logits) on real and generated samples.

    * ``vanilla``: BCE with logits, real -> 1, fake -> 0 (Goodfellow et al. 2014);
    * ``lsgan``: ``0.5 E[(D(real) - 1)^2] + 0.5 E[D(fake)^2]`` (Mao et al. 2017, a=0, b=c=1);
    * ``hinge``: ``E[relu(1 - D(real))] + E[relu(1 + D(fake))]`` (Lim & Ye 2017; Miyato et al. 2018);
    * ``wgan``: ``E[D(fake)] - E[D(real)]`` (Arjovsky et al. 2017; add :func:`gradient_penalty` for WGAN-GP).
    """
    _check_kind(kind)
    if kind == "vanilla":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    if kind == "lsgan":
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()


def generator_loss(fake: Tensor, kind: GanKind = "vanilla") -> Tensor:
    """Generator loss from the discriminator's logits on generated samples: ``vanilla`` is the
    non-saturating BCE(fake -> 1); ``lsgan`` ``0.5 E[(D(fake) - 1)^2]``; ``hinge`` and ``wgan``
    ``-E[D(fake)]``."""
    _check_kind(kind)
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return 0.5 * ((fake - 1) ** 2).mean()
    return -fake.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *,
                     generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): ``E[(||grad D(x_hat)||_2 - 1)^2]`` at random points
    ``x_hat`` between real and (detached) fake samples, one mixing weight per sample. Multiply by
    the paper's lambda (10 in WGAN-GP). A conditional critic is passed as a closure."""
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator,
                       dtype=real.dtype).to(real.device)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
