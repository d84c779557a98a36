"""Layers shared by the early CNN models (STFDCNN, StfNet): the three-layer SRCNN body, block
pooling onto an intermediate grid and the inverse-change temporal weights."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SRCNN3(nn.Module):
    """Three convolutions (feature extraction -> non-linear mapping -> reconstruction) with ReLU
    between them and "same" zero padding, the SRCNN body (Dong et al. 2016) the early STF CNNs
    are built on. ``residual=True`` adds the input back (global skip; needs ``cin == cout``)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        widths: tuple[int, int] = (64, 32),
        kernels: tuple[int, int, int] = (9, 5, 5),
        *,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and cin != cout:
            raise ValueError(f"residual SRCNN3 needs cin == cout, got cin={cin}, cout={cout}")
        k1, k2, k3 = kernels
        self.conv1 = nn.Conv2d(cin, widths[0], k1, padding=k1 // 2)
        self.conv2 = nn.Conv2d(widths[0], widths[1], k2, padding=k2 // 2)
        self.conv3 = nn.Conv2d(widths[1], cout, k3, padding=k3 // 2)
        self.residual = residual
        self.radius = (k1 // 2) + (k2 // 2) + (k3 // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return x + y if self.residual else y


def pad_to_multiple(x: Tensor, m: int) -> Tensor:
    """Replicate-pad the bottom/right edges so H and W are multiples of ``m``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def block_mean(x: Tensor, m: int) -> Tensor:
    """Average over non-overlapping ``m x m`` blocks (H, W must be multiples of ``m``)."""
    return x if m == 1 else F.avg_pool2d(x, m)


def upsample(x: Tensor, m: int, mode: str = "bicubic") -> Tensor:
    """Back onto the ``m``-times finer grid (pixel-centre aligned)."""
    return x if m == 1 else F.interpolate(x, scale_factor=m, mode=mode, align_corners=False)


def inverse_change_weight(d1: Tensor, d3: Tensor, eps: float = 1e-6) -> Tensor:
    """Weight of the t1 side when combining a forward (from t1) and a backward (from t3)
    prediction: proportional to 1/|change| of each side, normalised to sum to one."""
    a = 1.0 / (d1.abs() + eps)
    b = 1.0 / (d3.abs() + eps)
    return a / (a + b)
