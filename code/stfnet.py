"""StfNet — Liu, Deng, Chanussot, Hong, Zhao, "StfNet: A Two-Stream Convolutional Neural Network
for Spatiotemporal Image Fusion", IEEE TGRS 57(9):6552-6564, 2019.

No official code exists. Facts from the abstract (a neighbouring fine image helps super-resolve
the coarse change; a temporal constraint across the series makes the prediction unique and
temporally consistent) and from the third-party PyTorch port ``prowDIY/STF``
(``src/model/stfnet`` + ``src/trainer/stfnet_trainer.py``, commit 22a1c99).

Two streams (t1 < t2 < t3), each an SRCNN-like "DCNN mapping" (9x9/32 -> 5x5/16 -> 5x5/B, ReLU,
"same" padding) with its own weights:

* stream I:  ``cat(C2 - C1, F1)`` -> fine difference ``D12 ~ F2 - F1``;
* stream II: ``cat(C3 - C2, F3)`` -> fine difference ``D23 ~ F3 - F2``.

Loss (one stage): ``MSE(D12, F2-F1) + MSE(D23, F3-F2) + lambda * MSE(D12 + D23, F3-F1)``, the last
term being the temporal-consistency constraint (lambda = 1 as in the port).

Output: ``F2 = w (F1 + D12) + (1 - w) (F3 - D23)`` with a per-image, per-band weight
``w ~ 1/mean|C2 - C1|`` against ``1/mean|C3 - C2|``, set to 1 (or 0) when one side's mean coarse
change exceeds the other's by more than ``threshold`` (0.1 reflectance; the port's 0.2 on data
scaled to [-1, 1]).

Deviations / choices (also in catalog/papers/stfnet.yaml): widths, kernels, lambda, weighting
and the optimiser come from the port because the paper text was not available here; the weights
are computed per image of the batch (the port averages over the whole batch), so in tiled
whole-scene prediction they are per tile; coarse images arrive on the fine grid (as in the port).
Optimiser: SGD lr 1e-2, momentum 0.9, StepLR(40 epochs, 0.1) — one of the port's configurations
(``SGD_1e-2~StepLR_40``); its momentum is not recorded, we use 0.9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stfcat.models import Batch, Budget, FusionModel, OptimSpec, Recipe, register_model

from ._blocks import SRCNN3


@register_model(
    "stfnet",
    paper="stfnet",
    family="cnn",
    params=92_716,
    recipe=Recipe(
        optim=OptimSpec(name="sgd", lr=1e-2, momentum=0.9, scheduler="step",
                        scheduler_args={"step_size": 40, "gamma": 0.1}),
        quick=Budget(epochs=3, patch=96, batch=4, steps_per_epoch=25),
        paper=Budget(epochs=120, patch=128, batch=16, steps_per_epoch=50),
        notes="one stage: two fine-difference losses + temporal-consistency loss (lambda 1)",
    ),
)
class StfNet(FusionModel):
    """Two-stream CNN predicting fine differences from both sides with a temporal constraint."""

    n_refs = 2
    tile_exact = False  # the side weight is an image-level mean of |C change|: per tile when tiled
    tile_bound = 5e-3  # RMSE tiled vs one pass: 2.9e-3 on 32 px tiles, 6.7e-4 on the default 472 px tiles

    def __init__(self, bands: int = 6, ratio: int = 16, *, lam: float = 1.0, threshold: float = 0.1) -> None:
        super().__init__(bands, ratio)
        self.lam, self.threshold = lam, threshold
        self.stream1 = SRCNN3(2 * bands, bands, widths=(32, 16))
        self.stream2 = SRCNN3(2 * bands, bands, widths=(32, 16))
        self.halo = self.stream1.radius + 8
        self.receptive_field = None  # the side weight averages |C2 - C1| over the whole tile

    def config(self) -> dict:
        return {**super().config(), "lam": self.lam, "threshold": self.threshold}

    def differences(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(D12, D23)``: predicted ``F2 - F1`` and ``F3 - F2``."""
        d12 = self.stream1(torch.cat((batch["c2"] - batch["c1"], batch["f1"]), 1))
        d23 = self.stream2(torch.cat((batch["c3"] - batch["c2"], batch["f3"]), 1))
        return d12, d23

    def side_weight(self, batch: Batch) -> Tensor:
        """Weight of the t1 side, ``(N, B, 1, 1)``."""
        m12 = (batch["c2"] - batch["c1"]).abs().mean(dim=(2, 3), keepdim=True)
        m23 = (batch["c3"] - batch["c2"]).abs().mean(dim=(2, 3), keepdim=True)
        a, b = 1.0 / (m12 + 1e-6), 1.0 / (m23 + 1e-6)
        w = a / (a + b)
        w = torch.where(m23 - m12 > self.threshold, torch.ones_like(w), w)
        return torch.where(m12 - m23 > self.threshold, torch.zeros_like(w), w)

    def forward(self, batch: Batch) -> Tensor:
        d12, d23 = self.differences(batch)
        w = self.side_weight(batch)
        return w * (batch["f1"] + d12) + (1.0 - w) * (batch["f3"] - d23)

    def loss(self, batch: Batch, target: Tensor) -> Tensor:
        d12, d23 = self.differences(batch)
        f1, f3 = batch["f1"], batch["f3"]
        return (F.mse_loss(d12, target - f1) + F.mse_loss(d23, f3 - target)
                + self.lam * F.mse_loss(d12 + d23, f3 - f1))
