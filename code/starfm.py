"""STARFM: Spatial and Temporal Adaptive Reflectance Fusion Model.

Gao, Masek, Schwaller, Hall (2006), "On the blending of the Landsat and MODIS surface reflectance:
predicting daily Landsat surface reflectance", IEEE TGRS 44(8):2207-2218.

Method. For each fine pixel, within a ``window x window`` moving window and for each reference
pair k, the neighbours spectrally similar to the central pixel in the fine reference F_k are
selected, per band, with the threshold ``|F_k(nb) - F_k(centre)| <= 2 * sigma / n_classes``.
Candidates are then filtered by the sample uncertainties: a neighbour is kept only if its spectral
distance ``S = |F_k - C_k|`` is below ``max_k S(centre) + sigma_lm`` and its temporal distance
``T = |C_2 - C_k|`` is below ``max_k T(centre) + sigma_mm`` (``sigma_lm = sqrt(sigma_l^2 +
sigma_m^2)``, ``sigma_mm = sqrt(2) sigma_m``). The combined distance is ``C = S * T * D`` with
``D = 1 + d / A`` (d: distance to the centre in fine pixels), the weights ``W = (1/C) / sum(1/C)``,
and the prediction ``F_2(centre) = sum W * (F_k(nb) + C_2(nb) - C_k(nb))`` over all selected
neighbours of all pairs. When the central pixel has ``S = 0`` or ``T = 0`` its own estimate
``F_k + C_2 - C_k`` is returned, as in the paper.

Parameters (constructor kwargs, defaults):

* ``window=31`` fine pixels (the search window of starfm4py; Gao's code takes it from a maximum
  search distance), ``n_classes=4`` (m in 2 sigma / m),
* ``fine_uncertainty=0.002``, ``coarse_uncertainty=0.002`` reflectance (sigma_l, sigma_m),
* ``spatial_importance=None`` (A; None = half the window, ``window / 2``),
* ``distance_eps=1e-4`` reflectance (added to S and T so that 1/C is finite; 1 DN at scale 1e-4,
  the "+1" of starfm4py on DN data),
* ``temporal_filter=True`` (the T uncertainty filter of the paper; starfm4py applies it only with
  ``temp=True``),
* ``threshold_scope="window"``: sigma is the standard deviation of F_k over the moving window
  (as starfm4py); ``"image"`` uses the whole input image (the paper's wording), which makes the
  result depend on how a scene is tiled.

Deviations and choices: sigma over the window by default (tile-independent, see above); A
defaults to half the window (the paper leaves A open; ESTARFM and Fit-FC use the half window,
starfm4py uses 150 with d in pixels, i.e. almost no distance weighting); the paper's optional
logarithmic weight is not implemented; neighbours outside the image are excluded, not padded.

``starfm`` is the one-pair model (``n_refs = 1``); ``starfm-2ref`` uses both pairs (t1, t3).

Runtime: ``threads=1`` torch intra-op threads while predicting (None keeps torch's setting),
restored afterwards: parallelism belongs to tiles/processes on a shared machine. The window loop
runs one row of offsets per op on cache-sized pixel blocks with float masks (see
``_classical_common``); results equal the per-offset formulation up to float32 summation order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stfcat.models.base import Batch
from stfcat.models.registry import register_model

from ._classical_common import (
    NAN,
    Padded,
    WindowMethod,
    check_batch,
    tiles,
    window_std,
)


class _STARFMBase(WindowMethod):
    uses_ratio = False  # windows and weights are on the fine grid only

    def __init__(
        self,
        bands: int = 6,
        ratio: int = 16,
        *,
        threads: int | None = 1,
        window: int = 31,
        n_classes: float = 4,
        fine_uncertainty: float = 0.002,
        coarse_uncertainty: float = 0.002,
        spatial_importance: float | None = None,
        distance_eps: float = 1e-4,
        temporal_filter: bool = True,
        threshold_scope: str = "window",
    ) -> None:
        super().__init__(bands, ratio, threads=threads, window=window, threshold_scope=threshold_scope)
        if n_classes <= 0:
            raise ValueError(f"n_classes must be > 0, got {n_classes}")
        self.n_classes = float(n_classes)
        self.sigma_lm = math.hypot(fine_uncertainty, coarse_uncertainty)
        self.sigma_mm = math.sqrt(2.0) * coarse_uncertainty
        self.spatial_importance = float(spatial_importance) if spatial_importance else window / 2.0
        self.distance_eps = distance_eps
        self.temporal_filter = temporal_filter

    def config(self) -> dict:
        return {
            **super().config(),
            "window": self.window,
            "n_classes": self.n_classes,
            "spatial_importance": self.spatial_importance,
            "temporal_filter": self.temporal_filter,
            "threshold_scope": self.threshold_scope,
        }

    def _forward(self, batch: Batch) -> Tensor:
        n, b, h, w = check_batch(batch, self.n_refs, type(self).__name__)
        r, eps = self.radius, self.distance_eps
        c2 = batch["c2"].float()
        refs = [("f1", "c1")] + ([("f3", "c3")] if self.n_refs == 2 else [])
        pairs = []
        for fk, ck in refs:
            f, c = batch[fk].float(), batch[ck].float()
            if self.threshold_scope == "window":
                thr = window_std(f, r)
            else:
                thr = f.std(dim=(-2, -1), unbiased=False, keepdim=True).expand_as(f)
            s, t = (f - c).abs(), (c2 - c).abs()
            pairs.append(
                {
                    "thr": thr * (2.0 / self.n_classes),
                    "s": s,
                    "t": t,
                    # NaN padding: comparisons with out-of-image neighbours are False
                    "fp": Padded(f, r, NAN),
                    "sp": Padded(s, r, NAN),
                    "tp": Padded(t, r, NAN),
                    "inv": Padded(1.0 / ((s + eps) * (t + eps)), r, 0.0),
                    "val": Padded(f + c2 - c, r, 0.0),
                }
            )
        # strict "<" as "<=" against the next float below: every test is then "x >= 0" on floats
        # (comparisons into bool tensors and bool-float products are several times slower)
        below = torch.tensor(-math.inf)
        s_max = torch.nextafter(torch.stack([p["s"] for p in pairs]).amax(0) + self.sigma_lm, below)
        t_max = torch.nextafter(torch.stack([p["t"] for p in pairs]).amax(0) + self.sigma_mm, below)
        k = 2 * r + 1
        grid = torch.arange(-r, r + 1, dtype=torch.float64)
        dist = torch.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2)
        inv_d = (1.0 / (1.0 + dist / self.spatial_importance)).float()  # (dy, dx)
        out = torch.empty_like(c2)
        # 2^17-element operands: measured fastest (per-call cost vs cache) on the 2-core Xeon
        for r0, r1, q0, q1 in tiles(h, w, n * b * k, 1 << 17):
            blk = (..., slice(r0, r1), slice(q0, q1))
            shape = (n, b, k, r1 - r0, q1 - q0)
            d, e = torch.empty(shape), torch.empty(shape)
            acc_w = torch.zeros(n * b, 1, (r1 - r0) * (q1 - q0))
            acc_v = torch.zeros_like(acc_w)
            smax, tmax = s_max[blk].unsqueeze(2), t_max[blk].unsqueeze(2)
            d3, e3 = d.view(n * b, k, -1), e.view(n * b, k, -1)
            for p in pairs:
                fc, thr = p["fp"].block(r0, r1, q0, q1).unsqueeze(2), p["thr"][blk].unsqueeze(2)
                views = zip(*(p[key].rows(r0, r1, q0, q1) for key in ("fp", "sp", "tp", "inv", "val")), strict=True)
                for dy, (f_nb, s_nb, t_nb, inv_nb, val_nb) in enumerate(views):
                    # d = min(thr - |dF|, smax - S, tmax - T) >= 0  <=>  similar and within the filters
                    torch.sub(f_nb, fc, out=d).abs_()
                    torch.sub(thr, d, out=d)
                    torch.minimum(d, torch.sub(smax, s_nb, out=e), out=d)
                    if self.temporal_filter:
                        torch.minimum(d, torch.sub(tmax, t_nb, out=e), out=d)
                    torch.ge(d, 0.0, out=d).mul_(inv_nb)
                    dw = inv_d[dy].expand(n * b, 1, k)
                    acc_w.baddbmm_(dw, d3)
                    torch.mul(d, val_nb, out=e)
                    acc_v.baddbmm_(dw, e3)
            out[blk] = (acc_v / acc_w).view(n, b, r1 - r0, q1 - q0)
        # a centre with no spectral or temporal difference is its own best estimate (paper, sec. II)
        for p in reversed(pairs):
            exact = (p["s"] == 0) | (p["t"] == 0)
            out = torch.where(exact, p["val"].centre(0, h), out)
        return out


@register_model("starfm", paper="starfm", family="classical", params=0)
class STARFM(_STARFMBase):
    """STARFM (Gao et al. 2006): similar-pixel weighted moving window, one reference pair."""

    n_refs = 1


@register_model("starfm-2ref", paper="starfm", family="classical", params=0, parent="starfm")
class STARFM2Ref(_STARFMBase):
    """STARFM (Gao et al. 2006) with two reference pairs (t1, t3) weighted jointly."""

    n_refs = 2
