"""Fit-FC: regression model Fitting, spatial Filtering and residual Compensation.

Wang & Atkinson (2018), "Spatio-temporal fusion for daily Sentinel-2 images", Remote Sensing of
Environment 204:31-42.

Method (one pair F1, C1 and the target coarse C2):

1. RM fitting: on the coarse grid, a local linear regression ``C2 = a * C1 + b`` per coarse pixel
   and band, fitted over the ``(2 * rm_radius + 1)^2`` coarse pixels around it (guided-filter
   form ``a = cov(C1, C2) / var(C1)``); the coefficients, copied to the fine pixels, give
   ``F_RM = a * F1 + b``.
2. Spatial filtering: ``F_SF = sum W * F_RM(nb)`` over the ``n_similar`` neighbours most similar to
   the centre in F1 (smallest ``sum_b (F1(nb) - F1(c))^2``) within a ``window x window`` window,
   ``W ~ 1 / (1 + d / A)``, ``A = window / 2``.
3. Residual compensation: the coarse regression residual ``C2 - (a * C1 + b)`` is interpolated to
   the fine grid with bicubic interpolation and added: ``F2 = F_SF + R``.

Parameters (kwargs; defaults of the authors' MATLAB code): ``rm_radius=1`` (3 x 3 coarse pixels;
the code asks the user, the paper's Landsat/MODIS example), ``window=41`` (w0 = 20),
``n_similar=20``, ``spatial_importance=None`` (A; None = window / 2 = (2 w0 + 1) / 2),
``min_variance=1e-10`` (reflectance^2), ``filter_residual=False``.

Deviations and choices:

* Order of steps 2 and 3: the paper filters the RM prediction and then adds the residual (the
  default); the authors' code filters the residual-compensated image ``F_RM + R`` instead
  (``filter_residual=True``).
* Where var(C1) <= ``min_variance`` (a flat coarse window) the slope is undetermined; the code's
  ``cov / (var + eps)`` then gives a = 0, i.e. F_RM = mean C2 without any fine detail. Here a = 1
  (F_RM = F1 + mean C2 - mean C1), the temporal-change model.
* Similarity uses all bands (band-count agnostic); the code uses the red and NIR bands only.
* Ties at the n-th most similar pixel are all kept; neighbours outside the image are excluded
  (the code replicates the border).
* Bicubic kernel: Keys a = -0.5 (MATLAB ``imresize``), pixel-centre aligned, edges replicated.
* H, W need not be multiples of ``ratio``: edge coarse pixels average the fine pixels they have.

Tiling: the coarse-grid steps look ``rm_radius + 2`` coarse pixels around a pixel, the filter
``window // 2`` fine pixels, so ``halo = window // 2 + (rm_radius + 2) * ratio``; tiles whose
origins are multiples of ``ratio`` join without seams.

Runtime: ``threads=1`` torch intra-op threads while predicting (None keeps torch's setting),
restored afterwards: parallelism belongs to tiles/processes on a shared machine. The window loop
runs one row of offsets per op on cache-sized pixel blocks with float masks (see
``_classical_common``); results equal the per-offset formulation up to float32 summation order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stfcat.models.base import Batch
from stfcat.models.registry import register_model

from ._classical_common import (
    FLT_MAX,
    NAN,
    Padded,
    WindowMethod,
    box_mean_any,
    check_batch,
    keys_cubic_upsample,
    kth_smallest,
    tiles,
    to_coarse,
    to_fine,
)


@register_model("fitfc", paper="fitfc", family="classical", params=0)
class FitFC(WindowMethod):
    """Fit-FC (Wang & Atkinson 2018): local regression, similar-pixel filtering, residual compensation."""

    n_refs = 1

    def __init__(
        self,
        bands: int = 6,
        ratio: int = 16,
        *,
        threads: int | None = 1,
        rm_radius: int = 1,
        window: int = 41,
        n_similar: int = 20,
        spatial_importance: float | None = None,
        min_variance: float = 1e-10,
        filter_residual: bool = False,
    ) -> None:
        super().__init__(bands, ratio, threads=threads, window=window)
        self.row_align = ratio  # coarse-grid steps: chunks start on coarse pixel boundaries
        if rm_radius < 0 or n_similar < 1:
            raise ValueError(f"rm_radius must be >= 0 and n_similar >= 1, got {rm_radius}, {n_similar}")
        self.rm_radius = rm_radius
        self.halo = self.radius + (rm_radius + 2) * ratio
        self.n_similar = n_similar
        self.spatial_importance = float(spatial_importance) if spatial_importance else window / 2.0
        self.min_variance = min_variance
        self.filter_residual = filter_residual

    def config(self) -> dict:
        return {
            **super().config(),
            "rm_radius": self.rm_radius,
            "window": self.window,
            "n_similar": self.n_similar,
            "filter_residual": self.filter_residual,
        }

    def _forward(self, batch: Batch) -> Tensor:
        n, b, h, w = check_batch(batch, 1, "FitFC")
        f1, c1, c2 = (batch[k].float() for k in ("f1", "c1", "c2"))
        ratio = self.ratio
        c1c, c2c = to_coarse(c1, ratio).double(), to_coarse(c2, ratio).double()
        rr = self.rm_radius
        m1, m2 = box_mean_any(c1c, rr), box_mean_any(c2c, rr)
        cov = box_mean_any(c1c * c2c, rr) - m1 * m2
        var = box_mean_any(c1c * c1c, rr) - m1 * m1
        # a flat coarse window leaves the slope undetermined: keep the plain change (a = 1)
        a = torch.where(var > self.min_variance, cov / var, torch.ones_like(var))
        bb = m2 - a * m1
        resid = (c2c - (a * c1c + bb)).float()
        f_rm = to_fine(a.float(), ratio, h, w) * f1 + to_fine(bb.float(), ratio, h, w)
        res_f = keys_cubic_upsample(resid, ratio, h, w)
        if self.filter_residual:
            return self._filter(f1, f_rm + res_f)
        return self._filter(f1, f_rm) + res_f

    def _filter(self, f1: Tensor, x: Tensor) -> Tensor:
        n, b, h, w = f1.shape
        r = self.radius
        k = 2 * r + 1
        pf = Padded(f1, r, NAN)
        px = Padded(x, r, 0.0)
        grid = torch.arange(-r, r + 1, dtype=torch.float64)
        dist = torch.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2)
        inv_d = (1.0 / (1.0 + dist / self.spatial_importance)).float()  # (dy, dx)
        out = torch.empty_like(x)
        for r0, r1, q0, q1 in tiles(h, w, n * k * k, 1 << 20):
            blk = (r0, r1, q0, q1)
            hh, ww = r1 - r0, q1 - q0
            fc = pf.block(*blk).unsqueeze(2)
            d = torch.empty(n, b, k, hh, ww)

            def score_row(dy: int, blk=blk, fc=fc, d=d) -> Tensor:
                torch.sub(pf.row(dy, *blk), fc, out=d)
                # FLT_MAX for "no score": sel below is then a subtraction (>= 0), exact also where
                # the window has fewer than n_similar scores (tau = FLT_MAX selects them all)
                return torch.nan_to_num((d * d).sum(1), nan=FLT_MAX, posinf=FLT_MAX)

            tau, rows = kth_smallest(score_row, r, self.n_similar, (n,), hh, ww, FLT_MAX)
            tau = tau[:, None, None]
            acc_w = torch.zeros(n, 1, hh, ww)
            acc_v = torch.zeros(n, b, hh, ww)
            sel = torch.empty(n, 1, k, hh, ww)
            for dy in range(-r, r + 1):
                torch.sub(tau, rows(dy)[:, None], out=sel)
                torch.ge(sel, 0.0, out=sel).mul_(inv_d[dy + r].view(k, 1, 1))
                acc_w += sel.sum(2)
                acc_v += torch.mul(px.row(dy, *blk), sel, out=d).sum(2)
            out[..., r0:r1, q0:q1] = acc_v / acc_w
        return out
