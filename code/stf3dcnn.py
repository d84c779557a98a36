"""STF3DCNN — Peng, Zhang, Sun, Cen, Zhao, "A Fast Three-Dimensional Convolutional Neural
Network-Based Spatiotemporal Fusion Method (STF3DCNN) Using a Spatial-Temporal-Spectral
Dataset", Remote Sensing 12(23):3888, 2020 (correction 2022).

No official code. Facts from the abstract and the paper's overview figure (as reproduced in the
survey): the coarse and fine series are arranged as 4-D arrays (time x H x W x bands); a "4-D
residual series" is formed by subtracting each date from the next (``X_l - X_f``); a plain stack
of Conv3D + LeakyReLU layers (Keras) maps the coarse temporal-difference cube to the fine
temporal-difference cube; predictions are combined with temporal weights.

In stfcat's two-reference interface (t1 < t2 < t3) the series has three dates: the coarse
difference cube is ``[C2 - C1, C3 - C2]`` (depth 2 along time, bands as channels) and the network
predicts the fine cube ``[F2 - F1, F3 - F2]``. Training: MSE between the predicted and the true
fine difference cubes (the target date's fine image is known in training). Output:
``F2 = w (F1 + D12) + (1 - w) (F3 - D23)`` with per-pixel weights ``~ 1/|C2 - Ci|``.

Layer count and widths: the paper's table was not available here, so they are our choice,
recorded as provisional: ``depth = 4`` Conv3D layers with 3x3x3 kernels ("same" padding),
``width = 32`` filters, LeakyReLU (Keras default slope 0.3) after every Conv3D as the figure
draws it, the last one included. Canonical parameter count (6 bands):
``(27*6*32 + 32) + 2*(27*32*32 + 32) + (27*32*6 + 6) = 5,216 + 2*27,680 + 5,190 = 65,766``.
Adam lr 1e-3 (Keras default optimiser; the paper's value was not available here).

Other deviations: coarse images arrive on the fine grid (as in the paper, which resamples the
coarse series before arranging the cube); the series is limited to the three dates of a case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfcat.models import Batch, Budget, FusionModel, OptimSpec, Recipe, register_model

from ._blocks import inverse_change_weight


def conv3d_stack_params(bands: int, depth: int, width: int, k: int = 3) -> int:
    """Parameter count of the Conv3D stack (weights + biases)."""
    kk = k**3
    if depth == 1:
        return kk * bands * bands + bands
    return (kk * bands * width + width) + (depth - 2) * (kk * width * width + width) + (kk * width * bands + bands)


@register_model(
    "stf3dcnn",
    paper="stf3dcnn",
    family="cnn",
    params=conv3d_stack_params(6, 4, 32),
    recipe=Recipe(
        optim=OptimSpec(name="adam", lr=1e-3),
        quick=Budget(epochs=3, patch=96, batch=4, steps_per_epoch=25),
        paper=Budget(epochs=100, patch=128, batch=16, steps_per_epoch=50),
        notes="one stage, MSE on the fine temporal-difference cube",
    ),
)
class STF3DCNN(FusionModel):
    """Conv3D stack mapping the coarse temporal-difference cube to the fine one."""

    n_refs = 2

    def __init__(self, bands: int = 6, ratio: int = 16, *, depth: int = 4, width: int = 32,
                 slope: float = 0.3) -> None:
        super().__init__(bands, ratio)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth, self.width, self.slope = depth, width, slope
        chans = [bands] + [width] * (depth - 1) + [bands]
        self.convs = nn.ModuleList(nn.Conv3d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.halo = depth + 8
        self.receptive_field = depth  # depth 3x3x3 convs (radius 1 in space each); the side weight is per pixel

    def config(self) -> dict:
        return {**super().config(), "depth": self.depth, "width": self.width, "slope": self.slope}

    def differences(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Predicted ``(F2 - F1, F3 - F2)`` from the coarse difference cube."""
        x = torch.stack((batch["c2"] - batch["c1"], batch["c3"] - batch["c2"]), 2)  # (N, B, T=2, H, W)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
        return x[:, :, 0], x[:, :, 1]

    def forward(self, batch: Batch) -> Tensor:
        d12, d23 = self.differences(batch)
        w = inverse_change_weight(batch["c2"] - batch["c1"], batch["c2"] - batch["c3"])
        return w * (batch["f1"] + d12) + (1.0 - w) * (batch["f3"] - d23)

    def loss(self, batch: Batch, target: Tensor) -> Tensor:
        d12, d23 = self.differences(batch)
        return F.mse_loss(torch.stack((d12, d23)), torch.stack((target - batch["f1"], batch["f3"] - target)))
