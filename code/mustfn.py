"""MUSTFN (Qin, Huang, Tang, Wang, Liu, JAG 115:103113, 2022): multi-scale, multi-sensor fusion CNN.

Inputs (two references, t1 < t2 < t3): the fine stack ``[F1, F3]`` and the coarse stack
``[C1, C2, C3]`` (coarse already on the fine grid, as in the paper: MUSTFN resamples MODIS to the
fine grid before the network, so ``ratio`` is not used inside). Output: F2 through a sigmoid
(official; the quick recipe uses a residual output, see the end).

Architecture (facts from the official code, github.com/qpyeah/MUSTFN @ 6456a6a; our own code):

* stem: two 3x3 conv-BN-ReLU on the fine stack and two on the coarse stack, concatenated
  (``c0 = 2*bands + 3*coarse_bands`` channels, 33 officially);
* feature1 = concat(x, 1x1 (2*c0) -> depthwise 3x3 -> 1x1 (c0)) -> 2*c0 channels, full resolution;
* feature2: dilated (rate 2) stride-2 conv -> 132 ch, plus a residual 1x1 (264) / 3x3 / 1x1 (132);
* feature3: dilated (rate 2) stride-2 conv -> 264 ch, plus a residual 1x1 (528) / 3x3 / 1x1 (264);
* pyramid pooling on feature2 (three average pools, each 1x1 conv -> 264, upsampled, 1x1 -> 264);
* parallel dilated 3x3 convs (rates 2, 4, 8; 396 ch each) on feature3, 1x1 -> 396, upsampled;
* concat (2*c0 + 264 + 396 = 726 officially) -> SE-style channel attention (1x1 726->150, ReLU,
  1x1 150->150, 1x1 150->726, sigmoid) -> 3x3 conv 128 -> 3x3 conv 64 -> 1x1 to ``bands`` -> sigmoid.
  Every conv is bias-free and followed by BN + ReLU except the attention and the output 1x1.
  Convs pad by replication (as the official ``ReplicationPad2d``; here ``padding_mode="replicate"``).

Parameter count: ``create_model("mustfn", bands=6, coarse_bands=7)`` (the official 6-band Landsat
with 7-band MODIS, i.e. the official ``MyNet(12)``) has exactly 8,660,730 trainable parameters,
the count of the official model. Our interface gives fine and coarse the same band count, so the
registered canonical count is the one for ``bands=6`` (coarse_bands = 6): 8,641,932.

Loss (official training script): sum over bands of MSE_b / sigma_b^2, plus MSE(NDVI) / 0.5^2, plus,
after epoch 20, 0.1 * (1 - SSIM) with one global (image-level) SSIM, c1 = (0.01*1.6384)^2,
c2 = (0.03*1.6384)^2. Training: Adam lr 1e-4, weight decay 5e-4, StepLR(1 epoch, gamma 0.92),
360 epochs, batch 6, 256x256 tiles. "After epoch 20" is expressed as two stages (20/360 of the
budget without SSIM, then with SSIM); forward() is the same fusion network after either stage.
The SSIM stage ``continues`` the first one: the same Adam moments and StepLR schedule go on, as
in the official run (lr 1e-4 * 0.92^20 = 1.9e-5 at epoch 20).

Deviations (also in catalog/papers/mustfn.yaml):

* Size-agnostic pyramid pooling: the official code adaptive-pools feature2 (128x128 for its
  256x256 tiles) to 64/32/16 and upsamples everything to a hard-coded 256x256. We average-pool
  feature2 by 2, 4 and 8 (output grids = input/4, /8, /16: identical to the official pools on
  256x256 tiles, and the same context at any tile size, so tiled prediction is consistent) and
  upsample to the input size.
* The official constructor builds a second 3x3 conv-BN-ReLU for the MODIS stack but its forward
  skips it (commented out); its 4,011 parameters are in the official count. We apply it (both
  stems then have two convs), so every counted parameter is trained.
* The official SSIM term computes the covariance through numpy (no gradient flows through it);
  ours is differentiable.
* sigma_b: the official fixed values (0.043, 0.059, 0.065, 0.176, 0.167, 0.099) are statistics of
  its 6-band Landsat training set; pass ``band_std=OFFICIAL_BAND_STD`` to use them. By default we
  use each band's standard deviation of the target batch (detached, floored at 0.01), which
  weights bands the same way on any data set and band count.
* NDVI term: red and NIR come from ``band_names`` ("red", "nir") or the ``red``/``nir``
  arguments; otherwise, with 4 or more bands, indices 2 and 3 (blue, green, red, NIR order, as
  the official code assumes for Landsat and GF-1). With fewer than 4 bands and no names/indices
  the NDVI term is skipped (no safe guess exists for a 3-band image). NDVI is clamped to [-1, 1]
  so near-zero or negative reflectance cannot blow it up.
* The official cloud mask (zeroing cloudy pixels of inputs, prediction and target) is not
  applied: stfcat fills invalid pixels before the model and excludes them from the metrics.

Quick budget only (``Recipe.quick_args``; ``--full-recipe`` and ``create_model`` defaults build the
official network above, ``norm="batch", output="sigmoid"``, with the same parameter count):

* ``norm="group"``: GroupNorm (8 groups, or gcd(width, 8)) instead of BatchNorm. Same affine
  parameters and names; BatchNorm's running statistics of a few batch-2 64 px patches did not match
  the training-mode statistics, so eval-mode output left the reflectance range (test RMSE ~0.23).
  GroupNorm normalises each sample over the tile, so tiled prediction of a scene larger than one tile
  depends a little more on the tile than with BatchNorm (``tile_exact`` is False already).
* ``output="residual"``: prediction = ``reference_start`` + head output (no sigmoid; the sigmoid
  saturated in a short budget). The head's last 1x1 conv starts at zero, so the untrained model
  predicts the start exactly. ``start="delta"`` (quick default): the mean of ``F_k + (C2 - C_k)``
  over both references; ``start="mean"``: the mean of the two fine references.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfcat.models import Budget, FusionModel, OptimSpec, Recipe, Stage, register_model
from stfcat.models.losses import global_ssim

OFFICIAL_BAND_STD = (0.043, 0.059, 0.065, 0.176, 0.167, 0.099)
EPOCHS = 360
SSIM_FROM_EPOCH = 20
_SSIM_L = 1.6384  # dynamic range used by the official SSIM constants
_NIR_NAMES = {"nir", "near-infrared", "near_infrared", "nir1"}
# quick budget only (--full-recipe builds the official BatchNorm + sigmoid network): see the docstring
QUICK_ARGS: dict[str, str] = {"norm": "group", "output": "residual", "start": "delta"}
QUICK_NOTES = ("GroupNorm instead of BatchNorm (running statistics of a few batch-2 patches made eval-mode "
               "output unstable) and a residual output (two-reference delta start, mean of F_k + C2 - C_k, "
               "plus a learned correction that is zero at init) instead of the sigmoid, which saturated in "
               "a short budget.")


Norm = Literal["batch", "group"]
Output = Literal["sigmoid", "residual"]
Start = Literal["mean", "delta"]
STARTS: tuple[str, ...] = ("mean", "delta")
NORMS: tuple[str, ...] = ("batch", "group")
OUTPUTS: tuple[str, ...] = ("sigmoid", "residual")
GROUPS = 8  # GroupNorm groups where the width allows (gcd with the width otherwise)


def _norm(ch: int, norm: Norm) -> nn.Module:
    """BatchNorm (official) or GroupNorm: the same affine parameters (weight and bias per channel),
    but statistics of each sample instead of running batch statistics, so small-batch training and
    eval-mode prediction normalise alike."""
    if norm == "batch":
        return nn.BatchNorm2d(ch)
    # gcd keeps every width valid (e.g. 2*bands + 3*bands channels for odd band counts)
    return nn.GroupNorm(math.gcd(ch, GROUPS), ch)


def _cbr(cin: int, cout: int, k: int = 3, *, stride: int = 1, dilation: int = 1, groups: int = 1,
         norm: Norm = "batch") -> nn.Sequential:
    """Bias-free conv + norm + ReLU with replication padding ('same' size at stride 1)."""
    pad = dilation * (k - 1) // 2
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, groups=groups,
                     bias=False, padding_mode="replicate" if pad else "zeros")
    return nn.Sequential(conv, _norm(cout, norm), nn.ReLU(inplace=True))


class _Bottleneck(nn.Sequential):
    """1x1 expand -> 3x3 (depthwise when ``depthwise``) -> 1x1 back, each conv-norm-ReLU."""

    def __init__(self, ch: int, expand: int, depthwise: bool = False, norm: Norm = "batch") -> None:
        mid = ch * expand
        super().__init__(_cbr(ch, mid, 1, norm=norm), _cbr(mid, mid, 3, groups=mid if depthwise else 1, norm=norm),
                         _cbr(mid, ch, 1, norm=norm))


class _ChannelAttention(nn.Module):
    def __init__(self, ch: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(ch, hidden, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1, bias=False),
            nn.Conv2d(hidden, ch, 1, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.net(x.mean(dim=(2, 3), keepdim=True))


def _resolve_ndvi_bands(bands: int, band_names: Sequence[str] | None, red: int | None,
                        nir: int | None) -> tuple[int, int] | None:
    if band_names is not None:
        names = [str(n).strip().lower() for n in band_names]
        if len(names) != bands:
            raise ValueError(f"band_names has {len(names)} names but bands={bands}")
        if red is None and "red" in names:
            red = names.index("red")
        if nir is None:
            nir = next((i for i, n in enumerate(names) if n in _NIR_NAMES), None)
    if red is None and nir is None and band_names is None and bands >= 4:
        red, nir = 2, 3
    if red is None or nir is None:
        return None
    for arg, idx in (("red", red), ("nir", nir)):
        if not 0 <= idx < bands:
            raise ValueError(f"{arg}={idx} is not a band index for bands={bands}")
    return red, nir


@register_model(
    "mustfn",
    paper="mustfn",
    family="cnn",
    params=8_641_932,
    recipe=Recipe(
        optim=OptimSpec("adam", lr=1e-4, weight_decay=5e-4, scheduler="step",
                        scheduler_args={"step_size": 1, "gamma": 0.92}),
        quick=Budget(epochs=4, patch=64, batch=2, steps_per_epoch=10),
        paper=Budget(epochs=EPOCHS, patch=256, batch=6, steps_per_epoch=50),
        notes="Official script: 360 epochs over its tile list, batch 6, 256x256 tiles; SSIM term from "
              "epoch 20 (stage 2). steps_per_epoch depends on the data set; 50 is ours.",
        quick_args=QUICK_ARGS,
        quick_notes=QUICK_NOTES,
    ),
)
class MUSTFN(FusionModel):
    """MUSTFN: two fine references and three coarse images, multi-level features, pyramid pooling,
    dilated context and channel attention."""

    n_refs = 2
    halo = 64  # dilated (rate 8 at 1/4 scale) context ~50 px plus the 1/16 pyramid cells
    receptive_field = None  # channel attention averages over the tile; align_corners resampling of pyramid cells
    min_size = 32  # the 1/16 pyramid level must keep more than one value per channel for BN
    # pyramid cells start at the tile origin and the upsampling spans the tile: tiles differ from one
    # pass (5e-3 on the contract's 424 px scene, measured once; too big a scene for the test suite)
    tile_exact = False
    tile_bound = 0.04  # RMSE tiled vs one pass: 0.027 on 32 px tiles (contract scene)

    def __init__(self, bands: int = 6, ratio: int = 16, *, coarse_bands: int | None = None,
                 band_names: Sequence[str] | None = None, red: int | None = None, nir: int | None = None,
                 band_std: Sequence[float] | None = None, norm: Norm = "batch", output: Output = "sigmoid",
                 start: Start = "mean") -> None:
        super().__init__(bands, ratio)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        self.norm, self.output, self.start = norm, output, start
        self.coarse_bands = bands if coarse_bands is None else int(coarse_bands)
        if self.coarse_bands < 1:
            raise ValueError(f"coarse_bands must be >= 1, got {coarse_bands}")
        if band_std is not None and len(band_std) != bands:
            raise ValueError(f"band_std has {len(band_std)} values but bands={bands}")
        self.band_names = list(band_names) if band_names is not None else None
        self.ndvi_bands = _resolve_ndvi_bands(bands, band_names, red, nir)
        self.register_buffer("band_std", None if band_std is None else torch.tensor(band_std, dtype=torch.float32),
                             persistent=False)
        self._red, self._nir, self._std_arg = red, nir, band_std

        fine_ch, coarse_ch = 2 * bands, 3 * self.coarse_bands
        c0 = fine_ch + coarse_ch
        def cbr(cin: int, cout: int, k: int = 3, **kw) -> nn.Sequential:
            return _cbr(cin, cout, k, norm=norm, **kw)

        self.fine_stem = nn.Sequential(cbr(fine_ch, fine_ch), cbr(fine_ch, fine_ch))
        self.coarse_stem = nn.Sequential(cbr(coarse_ch, coarse_ch), cbr(coarse_ch, coarse_ch))
        self.feature1 = nn.Sequential(cbr(c0, 2 * c0, 1), cbr(2 * c0, 2 * c0, 3, groups=2 * c0),
                                      cbr(2 * c0, c0, 1))
        w = 66  # the official width of feature1, kept as the base width whatever the input bands
        self.down2 = cbr(2 * c0, 2 * w, stride=2, dilation=2)
        self.feature2 = _Bottleneck(2 * w, 2, norm=norm)
        self.down3 = cbr(2 * w, 4 * w, stride=2, dilation=2)
        self.feature3 = _Bottleneck(4 * w, 2, norm=norm)
        self.pyramid = nn.ModuleList(cbr(2 * w, 4 * w, 1) for _ in (2, 4, 8))
        self.pyramid_merge = cbr(3 * 4 * w, 4 * w, 1)
        self.dilated = nn.ModuleList(cbr(4 * w, 6 * w, dilation=r) for r in (2, 4, 8))
        self.dilated_merge = cbr(3 * 6 * w, 6 * w, 1)
        merged = 2 * c0 + 4 * w + 6 * w
        self.attention = _ChannelAttention(merged, 150)
        # residual: the head's image is a correction of the reference start, unbounded (no sigmoid);
        # Identity keeps the module indices, so both outputs share state_dict keys
        last = nn.Sigmoid() if output == "sigmoid" else nn.Identity()
        self.head = nn.Sequential(cbr(merged, 128), cbr(128, 64), nn.Conv2d(64, bands, 1, bias=False), last)
        self._init_weights()

    def _init_weights(self) -> None:
        # as the official feature net: He-normal with fan-out (k*k*out), norm weight 1, bias 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.output == "residual":
            # zero correction at init: the untrained model predicts the reference start exactly,
            # instead of a He-scaled random image added to it
            nn.init.zeros_(self.head[2].weight)

    def config(self) -> dict:
        return {**super().config(), "coarse_bands": self.coarse_bands, "band_names": self.band_names,
                "red": self._red, "nir": self._nir,
                "band_std": list(self._std_arg) if self._std_arg is not None else None,
                "norm": self.norm, "output": self.output, "start": self.start}

    def reference_start(self, batch: dict[str, Tensor]) -> Tensor:
        """The image the residual output corrects: ``mean``, the average of the two fine references
        (no temporal change); ``delta``, the average of ``F_k + (C2 - C_k)`` over both references."""
        if self.start == "mean":
            return (batch["f1"] + batch["f3"]) / 2
        return (batch["f1"] - batch["c1"] + batch["f3"] - batch["c3"]) / 2 + batch["c2"]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        fine = torch.cat([batch["f1"], batch["f3"]], dim=1)
        coarse = torch.cat([batch["c1"], batch["c2"], batch["c3"]], dim=1)
        if coarse.shape[1] != 3 * self.coarse_bands:
            raise ValueError(f"coarse images have {coarse.shape[1] // 3} bands, model built with "
                             f"coarse_bands={self.coarse_bands}")
        size = fine.shape[-2:]
        x = torch.cat([self.fine_stem(fine), self.coarse_stem(coarse)], dim=1)
        f1 = torch.cat([x, self.feature1(x)], dim=1)
        x = self.down2(f1)
        f2 = x + self.feature2(x)
        x = self.down3(f2)
        f3 = x + self.feature3(x)

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=True)

        pools = [up(conv(F.avg_pool2d(f2, k, ceil_mode=True))) for conv, k in zip(self.pyramid, (2, 4, 8), strict=True)]
        p = self.pyramid_merge(torch.cat(pools, dim=1))
        d = up(self.dilated_merge(torch.cat([conv(f3) for conv in self.dilated], dim=1)))
        out = self.head(self.attention(torch.cat([f1, p, d], dim=1)))
        return out if self.output == "sigmoid" else self.reference_start(batch) + out

    # -- loss -------------------------------------------------------------------------------------
    def _spectral_ndvi(self, pred: Tensor, target: Tensor) -> Tensor:
        per_band = (pred - target).pow(2).mean(dim=(0, 2, 3))
        if self.band_std is not None:
            var = self.band_std.to(pred).pow(2)
        else:
            var = target.detach().std(dim=(0, 2, 3)).clamp_min(0.01).pow(2)
        loss = (per_band / var).sum()
        if self.ndvi_bands is not None:
            r, n = self.ndvi_bands
            loss = loss + F.mse_loss(_ndvi(pred, r, n), _ndvi(target, r, n)) / 0.5**2
        return loss

    def loss_without_ssim(self, batch: dict[str, Tensor], target: Tensor) -> Tensor:
        return self._spectral_ndvi(self(batch), target)

    def loss(self, batch: dict[str, Tensor], target: Tensor) -> Tensor:
        pred = self(batch)
        return self._spectral_ndvi(pred, target) + 0.1 * (1 - global_ssim(pred, target, data_range=_SSIM_L))

    def stages(self) -> list[Stage]:
        first = SSIM_FROM_EPOCH / EPOCHS
        return [Stage("spectral+ndvi", loss=self.loss_without_ssim, share=first),
                Stage("spectral+ndvi+ssim", loss=self.loss, share=1 - first, continues=True)]


def _ndvi(x: Tensor, red: int, nir: int) -> Tensor:
    r, n = x[:, red], x[:, nir]
    den = n + r
    den = torch.where(den.abs() < 1e-6, torch.full_like(den, 1e-6), den)
    return ((n - r) / den).clamp(-1.0, 1.0)
