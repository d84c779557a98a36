"""FSDAF: Flexible Spatiotemporal DAta Fusion.

Zhu, Helmer, Gao, Liu, Chen, Lefsky (2016), "A flexible spatiotemporal method for fusing satellite
images with different resolutions", Remote Sensing of Environment 172:165-177.

Method (one pair F1, C1 and the target coarse C2):

1. Classify F1 (k-means with ``n_classes`` clusters, deterministic initialisation) and compute the
   class fractions of every coarse pixel (``ratio x ratio`` fine pixels).
2. Class-level temporal change: for every class take the ``n_pure`` purest coarse pixels
   (fraction > 0.01), drop those whose coarse change C2 - C1 is outside its 10-90 % percentiles,
   and solve ``dC = fractions @ dF_class`` by least squares bounded to
   ``[min dC - std dC, max dC + std dC]`` (per band). Temporal prediction ``F_TP = F1 + dF_class``.
3. Spatial prediction ``F_SP``: thin-plate spline through the coarse C2 values at the coarse pixel
   centres, evaluated on the fine grid.
4. Residual distribution: the coarse residual ``R = dC - mean(F_TP - F1)`` is spread over the fine
   pixels of each coarse pixel with weights ``CW = |E_ho| * HI + |R| * (1 - HI)`` (``E_ho = F_SP -
   F_TP`` with the sign of R kept, HI the fraction of same-class pixels in the window), normalised
   to mean 1 per coarse pixel (weights above 10 reset to the mean). The change is clipped so that
   F1 + change stays within ``[max(min(C2, F_TP), lo), min(max(C2, F_TP), hi)]``.
5. Final smoothing: ``F2 = F1 + sum W * change(nb)`` over the ``n_similar`` most similar pixels in
   the window (candidates: ``|F1(nb) - F1(c)| < 2 sigma / n_classes`` in every band; ranked by
   ``(sum_b |dF1| / F1(c) + 1e-5) * (10 + d / w)``; ``W ~ 1 / ((1 + d / w) * (similarity + 1))``).
   Out-of-range results fall back to ``F1 + C2 - C1`` clipped to the valid range.

Parameters (kwargs; defaults of Zhu's IDL code, reflectance units): ``window=41`` (w = 20),
``n_similar=20``, ``n_classes=4`` (the code's ISODATA minimum), ``n_pure=100``,
``valid_range=(0.0, 1.0)`` (DN_min, DN_max), ``hi_radius=None`` (half window of the homogeneity
index; None = w as in the IDL code), ``kmeans_iters=20``, ``threshold_scope="image"``.

Deviations and choices:

* Classification: deterministic k-means (initial centres at brightness quantiles) instead of ENVI
  or ISODATA; the code's 0.01/99.99 % clipping of F1 before classification is kept. A user
  classification can be given to :meth:`FSDAF.global_step` (``labels=``), like the IDL code's
  ``FSDAF_preclassification``.
* Steps 1-4 are global over the input tile, as over one processing block of the IDL code (which
  runs them per block of ``block_size = 30`` coarse pixels). They therefore depend on the tile:
  predicting a scene in tiles is not identical to predicting it whole (the seams are the IDL's
  own block seams). Step 5 is local (``halo`` = w): given the same global products
  (:meth:`FSDAF.global_step`), tiles join exactly; the tests check this.
* The thin-plate spline interpolates exactly (IDL ``MIN_CURVE_SURF(/TPS)``; the public Python port
  uses a multiquadric RBF instead), computed for the whole tile via FFT convolution.
* Ties at the n-th most similar pixel are all kept (the IDL takes the first in sort order).
* H, W need not be multiples of ``ratio``: edge coarse pixels average the fine pixels they have.

Runtime: ``threads=1`` torch intra-op threads while predicting (None keeps torch's setting),
restored afterwards: parallelism belongs to tiles/processes on a shared machine. The window loop
runs one row of offsets per op on cache-sized pixel blocks with float masks (see
``_classical_common``); results equal the per-offset formulation up to float32 summation order.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import lsq_linear
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
    kmeans,
    kth_smallest,
    tiles,
    to_coarse,
    to_fine,
    tps_fine,
    window_std,
)


def percentile_idl(values: np.ndarray, q: float) -> float:
    """The IDL code's percentile: the sorted value at ``value_locate(findgen(n+1)/n, q)``."""
    n = len(values)
    idx = int(np.searchsorted(np.arange(n + 1) / n, q, side="right") - 1)
    return float(np.sort(values, kind="mergesort")[min(max(idx, 0), n - 1)])


@register_model("fsdaf", paper="fsdaf", family="classical", params=0)
class FSDAF(WindowMethod):
    """FSDAF (Zhu et al. 2016): class unmixing + TPS + residual distribution + smoothing."""

    n_refs = 1
    min_window = 3
    row_align = None  # steps 1-4 are global over the tile

    def __init__(
        self,
        bands: int = 6,
        ratio: int = 16,
        *,
        threads: int | None = 1,
        window: int = 41,
        n_similar: int = 20,
        n_classes: int = 4,
        n_pure: int = 100,
        valid_range: tuple[float, float] = (0.0, 1.0),
        hi_radius: int | None = None,
        kmeans_iters: int = 20,
        threshold_scope: str = "image",
    ) -> None:
        super().__init__(bands, ratio, threads=threads, window=window, threshold_scope=threshold_scope)
        if n_classes < 1 or n_similar < 1 or n_pure < 1:
            raise ValueError("n_classes, n_similar and n_pure must be >= 1")
        self.n_similar = n_similar
        self.n_classes = n_classes
        self.n_pure = n_pure
        self.valid_range = (float(valid_range[0]), float(valid_range[1]))
        self.hi_radius = self.radius if hi_radius is None else hi_radius
        self.kmeans_iters = kmeans_iters

    def config(self) -> dict:
        return {
            **super().config(),
            "window": self.window,
            "n_similar": self.n_similar,
            "n_classes": self.n_classes,
            "n_pure": self.n_pure,
            "threshold_scope": self.threshold_scope,
        }

    def _forward(self, batch: Batch) -> Tensor:
        check_batch(batch, 1, "FSDAF")
        return self.local_step(batch, self.global_step(batch))

    # ---- steps 1-4: tile-level --------------------------------------------------------------
    @torch.no_grad()
    def global_step(self, batch: Batch, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Change field (F2 estimate - F1) before smoothing, and the similarity thresholds.

        ``labels`` ``(N, H, W)`` (integers ``0..n_classes-1``) replaces the k-means classification
        of F1, like the IDL code's pre-classification variant (``FSDAF_preclassification``).
        """
        n, b, h, w = check_batch(batch, 1, "FSDAF")
        if labels is not None and tuple(labels.shape) != (n, h, w):
            raise ValueError(f"FSDAF: labels must have shape {(n, h, w)}, got {tuple(labels.shape)}")
        f1, c1, c2 = (batch[k].float() for k in ("f1", "c1", "c2"))
        changes = [
            self._change(f1[i], c1[i], c2[i], None if labels is None else labels[i].long()) for i in range(n)
        ]
        if self.threshold_scope == "window":
            thr = window_std(f1, self.radius)
        else:
            thr = f1.std(dim=(-2, -1), unbiased=False, keepdim=True).expand_as(f1)
        return {"change": torch.stack(changes), "thr": thr * (2.0 / self.n_classes)}

    def _change(self, f1: Tensor, c1: Tensor, c2: Tensor, labels: Tensor | None) -> Tensor:
        b, h, w = f1.shape
        lo, hi = self.valid_range
        k, ratio = self.n_classes, self.ratio
        if labels is None:
            # robust copy of F1 for the classification (the code clips 0.01 / 99.99 % tails)
            flat = f1.reshape(b, -1)
            step = max(1, flat.shape[1] // 1_000_000)
            qlo = torch.quantile(flat[:, ::step], 0.0001, dim=1)
            qhi = torch.quantile(flat[:, ::step], 0.9999, dim=1)
            fc = torch.maximum(torch.minimum(flat, qhi[:, None]), qlo[:, None])
            labels = kmeans(fc.T.contiguous(), k, self.kmeans_iters)[0].reshape(h, w)
        else:
            k = int(labels.max()) + 1
        onehot = torch.nn.functional.one_hot(labels, k).permute(2, 0, 1).float()
        frac = to_coarse(onehot, ratio)  # (k, hc, wc)
        f1c, c1c, c2c = to_coarse(f1, ratio), to_coarse(c1, ratio), to_coarse(c2, ratio)
        dc = (c2c - c1c).double()
        # class change by bounded least squares on the purest coarse pixels
        fr = frac.reshape(k, -1).double().numpy()
        rate = np.zeros((b, k))
        for ib in range(b):
            d = dc[ib].reshape(-1).numpy()
            bound = (d.min() - d.std(), d.max() + d.std())
            rows, ys = [], []
            for ic in range(k):
                order = np.argsort(-fr[ic], kind="stable")
                num = min(int((fr[ic] > 0.01).sum()), self.n_pure)
                if num == 0:
                    continue
                sel = order[:num]
                ch = d[sel]
                keep = (ch >= percentile_idl(ch, 0.1)) & (ch <= percentile_idl(ch, 0.9))
                rows.append(fr[:, sel[keep]].T)
                ys.append(ch[keep])
            x, y = np.concatenate(rows), np.concatenate(ys)
            if bound[1] - bound[0] <= 0:
                rate[ib] = bound[0]
            else:
                rate[ib] = lsq_linear(x, y, bounds=bound, method="bvls").x
        rate_t = torch.from_numpy(rate).float()  # (b, k)
        f_tp = f1 + rate_t[:, labels]
        # residual of the coarse change the class changes do not explain
        res = (dc - (to_coarse(f_tp, ratio) - f1c).double()).float()
        res_f = to_fine(res, ratio, h, w)
        f_sp = tps_fine(c2c, ratio, h, w)
        # homogeneity index: share of same-class pixels in the window
        hi_idx = torch.gather(box_mean_any(onehot, self.hi_radius), 0, labels[None])[0]
        e = f_sp - f_tp
        e = torch.where(res_f <= 0, e.clamp_max(0), e.clamp_min(0)).abs()
        cw = e * hi_idx + res_f.abs() * (1 - hi_idx) + 1e-6
        cw = cw / to_fine(to_coarse(cw, ratio), ratio, h, w)
        cw = torch.where(cw > 10, torch.ones_like(cw), cw)
        cw = cw / to_fine(to_coarse(cw, ratio), ratio, h, w)
        f2 = f_tp + cw * res_f
        amin = torch.maximum(torch.minimum(c2.amin((1, 2)), f_tp.amin((1, 2))), torch.tensor(lo))
        amax = torch.minimum(torch.maximum(c2.amax((1, 2)), f_tp.amax((1, 2))), torch.tensor(hi))
        f2 = torch.maximum(torch.minimum(f2, amax[:, None, None]), amin[:, None, None])
        return f2 - f1

    # ---- step 5: local -----------------------------------------------------------------------
    @torch.no_grad()
    def local_step(self, batch: Batch, products: dict[str, Tensor]) -> Tensor:
        """Similar-pixel smoothing of the change field; depends only on pixels within ``halo``."""
        n, b, h, w = check_batch(batch, 1, "FSDAF")
        r, lo, hi = self.radius, *self.valid_range
        f1, c1, c2 = (batch[k].float() for k in ("f1", "c1", "c2"))
        change, thr = products["change"], products["thr"]
        pf = Padded(f1, r, NAN)
        pch = Padded(change, r, 0.0)
        k = 2 * r + 1
        grid = torch.arange(-r, r + 1, dtype=torch.float64)
        dist = torch.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) / r
        rank_d = (10.0 + dist).float()  # (dy, dx)
        wgt_d = (1.0 + dist).float()
        out = torch.empty_like(f1)
        for r0, r1, q0, q1 in tiles(h, w, n * k * k, 1 << 20):
            blk = (r0, r1, q0, q1)
            hh, ww = r1 - r0, q1 - q0
            fc, th = pf.block(*blk).unsqueeze(2), thr[..., r0:r1, q0:q1].unsqueeze(2)
            inv_fc = 1.0 / (fc + 1e-8)
            diff = torch.empty(n, b, k, hh, ww)
            # per offset (dy, dx) and pixel: relative spectral difference and candidacy (1.0 / 0.0;
            # bool tensors and torch.where are several times slower), kept for both passes
            rel = torch.empty(n, k, k, hh, ww)
            cand = torch.empty(n, k, k, hh, ww)
            for dy in range(-r, r + 1):
                torch.sub(pf.row(dy, *blk), fc, out=diff).abs_()
                torch.sum(torch.mul(diff, inv_fc), 1, out=rel[:, dy + r])
                # candidate: |dF| < thr in every band  <=>  min_b (thr - |dF|) > 0 (NaN outside: no)
                torch.gt(torch.sub(th, diff, out=diff).amin(1), 0.0, out=cand[:, dy + r])
            cand[:, r, r] = 1.0  # the centre always counts (a flat window has a zero threshold)
            sc = (rel + 1e-5).mul_(rank_d.view(k, k, 1, 1))
            # ranking score; not a candidate (or outside the image): FLT_MAX
            score = torch.mul(sc, cand).add_(1.0 - cand, alpha=FLT_MAX).nan_to_num_(nan=FLT_MAX)
            tau = kth_smallest(
                lambda dy, score=score: score[:, dy + r], r, self.n_similar, (n,), hh, ww, FLT_MAX
            )[0]
            del score
            sel = torch.ge(torch.sub(tau[:, None, None], sc, out=sc), 0.0, out=sc).mul_(cand)
            wgt = rel.add_(1.0).mul_(wgt_d.view(k, k, 1, 1)).reciprocal_().mul_(sel).nan_to_num_(nan=0.0)
            acc_w = wgt.sum((1, 2))[:, None]
            acc_v = torch.zeros(n, b, hh, ww)
            for dy in range(-r, r + 1):
                acc_v += torch.mul(wgt[:, None, dy + r], pch.row(dy, *blk), out=diff).sum(2)
            out[..., r0:r1, q0:q1] = fc[:, :, 0] + acc_v / acc_w
        bad = (out < lo) | (out > hi)
        return torch.where(bad, (f1 + c2 - c1).clamp(lo, hi), out)
