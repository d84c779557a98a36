"""MCDNet (Li, Yang, Peng, Zhang, IEEE JSTARS 14:10174-10188, 2021): multi-cooperative deep CNN.

Two references (t1 < t2 < t3). Several networks cooperate (facts from the abstract and the
survey's figure; the PDF's layer tables were not available, so every width, depth, kernel and
loss weight below is OUR CHOICE and is written down as such):

1. Super-resolution network (SR), shared by all coarse dates: lifts each coarse image C_k to a
   "transitional" image T_k that matches the fine image, with a multi-scale mechanism of dilated
   convolutions. Ours: 3x3 conv 64 -> 2 multi-scale blocks (three parallel 3x3 convs with
   dilation 1, 2, 3, 32 maps each, ReLU, 1x1 fusion back to 64, local skip) -> 3x3 conv to B,
   plus the input (global residual).
2. Difference-reconstruction network (DR), shared by both directions: "structural relevance" -
   the fine difference image between a reference and the target is rebuilt from the transitional
   difference (T2 - T_k) and the structure of the fine reference F_k. Ours: [T2 - T_k, F_k]
   -> 3x3 conv 64 -> ReLU -> (concat with the co-training features, 128) -> 3x3 conv 64 -> ReLU
   -> 3x3 conv 64 -> ReLU -> 3x3 conv B = fine difference D_k; P_k = F_k + D_k.
3. Co-training network (CT): extracts hidden information from the two fine references F1, F3 and
   restricts the DR training through time relevance. Ours: [F1, F3] -> 3x3 conv 64 -> ReLU ->
   3x3 conv 64 -> ReLU = features H, fed into DR (both directions) and into the merge; the
   time-relevance restriction is a loss term: DR must also turn the transitional change between
   the two references (T3 - T1) plus F1 into the observed fine change F3 - F1 (and back).
4. Feature merge: [P1, P3, H] -> 3x3 conv 64 -> ReLU -> 3x3 conv B -> sigmoid = w;
   F2 = w * P1 + (1 - w) * P3.

Compound loss (terms from the abstract's "new compound loss", weights our choice):
``MSE(F2_hat, F2) + MSE(T_k, F_k) over k = 1, 2, 3 (SR) + 0.5 * (MSE(P1, F2) + MSE(P3, F2)) (DR)
+ 0.5 * (MSE(F1 + D(T3 - T1, F1), F3) + MSE(F3 + D(T1 - T3, F3), F1)) (time relevance)``.
All networks train together in one stage (the abstract describes cooperative training).
Canonical parameter count (B = 6), derived from the config above: SR 130,182 (head 3,520, two
blocks of 61,600, tail 3,462), DR 121,158, CT 43,904, merge 47,302: 342,546 in all.
Optimiser not available: Adam, lr 1e-4 (our choice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfcat.models import Budget, FusionModel, OptimSpec, Recipe, register_model


def _conv(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation)


class MultiScaleDilatedBlock(nn.Module):
    def __init__(self, ch: int = 64, branch: int = 32, rates: tuple[int, ...] = (1, 2, 3)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv(ch, branch, 3, r) for r in rates)
        self.fuse = nn.Conv2d(branch * len(rates), ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fuse(torch.cat([F.relu(b(x)) for b in self.branches], dim=1))


class SRNet(nn.Module):
    """Coarse (on the fine grid) -> transitional image."""

    def __init__(self, bands: int, ch: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.head = _conv(bands, ch)
        self.body = nn.Sequential(*(MultiScaleDilatedBlock(ch) for _ in range(blocks)))
        self.tail = _conv(ch, bands)

    def forward(self, c: Tensor) -> Tensor:
        return c + self.tail(self.body(F.relu(self.head(c))))


class DifferenceNet(nn.Module):
    def __init__(self, bands: int, ch: int = 64) -> None:
        super().__init__()
        self.head = _conv(2 * bands, ch)
        self.body = nn.Sequential(_conv(2 * ch, ch), nn.ReLU(inplace=True), _conv(ch, ch), nn.ReLU(inplace=True),
                                  _conv(ch, bands))

    def forward(self, t_diff: Tensor, f_ref: Tensor, hidden: Tensor) -> Tensor:
        x = F.relu(self.head(torch.cat([t_diff, f_ref], dim=1)))
        return self.body(torch.cat([x, hidden], dim=1))


@register_model(
    "mcdnet",
    paper="mcdnet",
    family="cnn",
    params=342_546,
    recipe=Recipe(
        optim=OptimSpec("adam", lr=1e-4),
        quick=Budget(epochs=5, patch=64, batch=8, steps_per_epoch=20),
        paper=Budget(epochs=200, patch=64, batch=16, steps_per_epoch=100),
        notes="Optimiser, patch and epochs not available from the material read; our choices.",
    ),
)
class MCDNet(FusionModel):
    """MCDNet: super-resolution, difference-reconstruction and co-training CNNs merged into one prediction."""

    n_refs = 2

    def __init__(self, bands: int = 6, ratio: int = 16, *, width: int = 64) -> None:
        super().__init__(bands, ratio)
        self.width = width
        self.sr = SRNet(bands, width)
        self.dr = DifferenceNet(bands, width)
        self.ct = nn.Sequential(_conv(2 * bands, width), nn.ReLU(inplace=True), _conv(width, width),
                                nn.ReLU(inplace=True))
        self.merge = nn.Sequential(_conv(2 * bands + width, width), nn.ReLU(inplace=True), _conv(width, bands))
        # receptive radius: SR 1 + 2*3 + 1 = 8, then DR 4 (CT 2 in parallel), merge 2: 14
        self.halo = 16
        self.receptive_field = 14  # the radius just derived (dilations 1+2+3 per SR block)

    def config(self) -> dict:
        return {**super().config(), "width": self.width}

    def _parts(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        n = batch["c1"].shape[0]
        t1, t2, t3 = self.sr(torch.cat([batch["c1"], batch["c2"], batch["c3"]], dim=0)).split(n, dim=0)
        hidden = self.ct(torch.cat([batch["f1"], batch["f3"]], dim=1))
        p1 = batch["f1"] + self.dr(t2 - t1, batch["f1"], hidden)
        p3 = batch["f3"] + self.dr(t2 - t3, batch["f3"], hidden)
        w = torch.sigmoid(self.merge(torch.cat([p1, p3, hidden], dim=1)))
        return {"t1": t1, "t2": t2, "t3": t3, "hidden": hidden, "p1": p1, "p3": p3, "out": w * p1 + (1 - w) * p3}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self._parts(batch)["out"]

    def loss(self, batch: dict[str, Tensor], target: Tensor) -> Tensor:
        p = self._parts(batch)
        f1, f3 = batch["f1"], batch["f3"]
        sr = F.mse_loss(p["t1"], f1) + F.mse_loss(p["t2"], target) + F.mse_loss(p["t3"], f3)
        dr = F.mse_loss(p["p1"], target) + F.mse_loss(p["p3"], target)
        time_rel = (F.mse_loss(f1 + self.dr(p["t3"] - p["t1"], f1, p["hidden"]), f3)
                    + F.mse_loss(f3 + self.dr(p["t1"] - p["t3"], f3, p["hidden"]), f1))
        return F.mse_loss(p["out"], target) + sr + 0.5 * dr + 0.5 * time_rel
