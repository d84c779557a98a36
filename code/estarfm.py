"""ESTARFM: Enhanced Spatial and Temporal Adaptive Reflectance Fusion Model.

Zhu, Chen, Gao, Chen, Masek (2010), "An enhanced spatial and temporal adaptive reflectance fusion
model for complex heterogeneous regions", Remote Sensing of Environment 114(11):2610-2623.

Method (two reference pairs (F1, C1) at t1 and (F3, C3) at t3, coarse C2 at the target t2). For
each fine pixel, within a ``window x window`` moving window:

1. Similar pixels: neighbours with ``|F_k(nb) - F_k(centre)| < 2 * sigma_k / n_classes`` in every
   band and in both fine references (the centre is always one).
2. Weights: ``W = (1 / C) / sum(1 / C)`` with ``C = (1 - R) * D``, R the correlation between the
   neighbour's fine and coarse spectra (all bands of both dates), ``D = 1 + d / (window // 2)``.
3. Conversion coefficient V (per band): slope of the linear regression of fine on coarse
   reflectance over the similar pixels of both dates; V = 1 when the coarse change among the
   similar pixels is below ``min_coarse_change``, the regression is not significant
   (F-test p > ``p_value``) or the slope is outside (0, ``max_slope``].
4. Predictions from each pair ``F_k(centre) + V * sum W * (C2 - C_k)`` are merged with temporal
   weights ``T_k = (1 / |mean C2 - mean C_k|) / sum_k(...)`` (means over the window).

Parameters (constructor kwargs, defaults of Zhu's IDL/Python code, reflectance units):
``window=51`` (half window w = 25), ``n_classes=4``, ``min_similar=6`` (the code needs more than 5
similar pixels; otherwise the centre gets the window-mean coarse change of each pair, temporally
weighted), ``min_coarse_change=0.02`` (DN_max * 0.02 with DN_max = 10000 at scale 1e-4),
``p_value=0.05``, ``max_slope=5``, ``valid_range=(0.0, 1.0)`` (DN_min, DN_max: a prediction
outside it falls back to the weighted mean of the similar fine pixels, temporally weighted),
``threshold_scope="window"``.

Deviations and choices: the code computes sigma over each 500-pixel processing block; here sigma is
the standard deviation of F_k over the moving window (``threshold_scope="window"``, the default),
which makes a prediction depend on its window only, so tiles join without seams; ``"image"``
uses the whole input instead (closest to the code on inputs up to one block). Out-of-image
neighbours are excluded, as at the code's image borders. For one band the correlation uses the
code's single-band substitute ``1 - 0.5 * sum_k |F_k - C_k| / (F_k + C_k)``.

Runtime: ``threads=1`` torch intra-op threads while predicting (None keeps torch's setting),
restored afterwards: parallelism belongs to tiles/processes on a shared machine. The window loop
runs per offset on cache-sized row blocks with float masks (see ``_classical_common``), keeping
the per-offset float32 summation order of the regression sums: their differences cancel
heavily, so batching the offsets would move results by ~1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import fdtrc
from torch import Tensor

from stfcat.models.base import Batch
from stfcat.models.registry import register_model

from ._classical_common import (
    NAN,
    Padded,
    WindowMethod,
    block_rows,
    box_mean_any,
    check_batch,
    offsets,
    row_blocks,
    window_std,
)


def spectral_correlation(f1: Tensor, f3: Tensor, c1: Tensor, c3: Tensor) -> Tensor:
    """Per-pixel correlation between the fine and coarse spectra of both dates, ``(N, 1, H, W)``."""
    b = f1.shape[1]
    if b == 1:
        r = 1.0 - 0.5 * ((f1 - c1).abs() / (f1 + c1) + (f3 - c3).abs() / (f3 + c3))
    else:
        x = torch.cat([f1, f3], 1).double()
        y = torch.cat([c1, c3], 1).double()
        xm, ym = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
        r = (xm * ym).sum(1, keepdim=True) / torch.sqrt(
            (xm * xm).sum(1, keepdim=True) * (ym * ym).sum(1, keepdim=True)
        )
        r = r.float()
    return torch.nan_to_num(r, nan=0.5)


@register_model("estarfm", paper="estarfm", family="classical", params=0)
class ESTARFM(WindowMethod):
    """ESTARFM (Zhu et al. 2010): two-pair similar-pixel fusion with conversion coefficients."""

    n_refs = 2
    min_window = 3

    def __init__(
        self,
        bands: int = 6,
        ratio: int = 16,
        *,
        threads: int | None = 1,
        window: int = 51,
        n_classes: float = 4,
        min_similar: int = 6,
        min_coarse_change: float = 0.02,
        p_value: float = 0.05,
        max_slope: float = 5.0,
        valid_range: tuple[float, float] = (0.0, 1.0),
        threshold_scope: str = "window",
    ) -> None:
        super().__init__(bands, ratio, threads=threads, window=window, threshold_scope=threshold_scope)
        self.n_classes = float(n_classes)
        self.min_similar = min_similar
        self.min_coarse_change = min_coarse_change
        self.p_value = p_value
        self.max_slope = max_slope
        self.valid_range = (float(valid_range[0]), float(valid_range[1]))

    def config(self) -> dict:
        return {
            **super().config(),
            "window": self.window,
            "n_classes": self.n_classes,
            "threshold_scope": self.threshold_scope,
        }

    def _threshold(self, f: Tensor) -> Tensor:
        if self.threshold_scope == "window":
            sd = window_std(f, self.radius)
        else:
            sd = f.std(dim=(-2, -1), unbiased=False, keepdim=True).expand_as(f)
        return sd * (2.0 / self.n_classes)

    def _forward(self, batch: Batch) -> Tensor:
        n, b, h, w = check_batch(batch, 2, "ESTARFM")
        r = self.radius
        f1, c1, f3, c3, c2 = (batch[k].float() for k in ("f1", "c1", "f3", "c3", "c2"))
        th1, th3 = self._threshold(f1), self._threshold(f3)
        corr = spectral_correlation(f1, f3, c1, c3)
        # sums over similar pixels for the regression (x = coarse, y = fine, both dates) ...
        plain = torch.stack(
            [c1 + c3, f1 + f3, c1 * c1 + c3 * c3, c1 * f1 + c3 * f3, f1 * f1 + f3 * f3, c1 - c3], 1
        )
        # ... and weighted sums for the predictions
        weighted = torch.stack([c2 - c1, c2 - c3, f1, f3], 1)
        p_f1, p_f3 = Padded(f1, r, NAN), Padded(f3, r, NAN)
        p_corr = Padded(1.0 - corr, r, 0.0)
        p_plain, p_weighted = Padded(plain, r, 0.0), Padded(weighted, r, 0.0)
        dist = {o: 1.0 + math.hypot(*o) / r for o in offsets(r)}
        # temporal weights from the window-mean coarse change of each pair
        m1, m2, m3 = (box_mean_any(x, r) for x in (c1, c2, c3))
        d1, d3 = (m2 - m1), (m2 - m3)
        i1, i3 = 1.0 / (d1.abs() + 1e-10), 1.0 / (d3.abs() + 1e-10)
        t1, t3 = i1 / (i1 + i3), i3 / (i1 + i3)
        del m1, m2, m3, i1, i3
        out = torch.empty_like(c2)
        for r0, r1 in row_blocks(h, block_rows(w, n * b, 1 << 14)):
            c1c, c3c = p_f1.centre(r0, r1), p_f3.centre(r0, r1)
            h1, h3 = th1[..., r0:r1, :], th3[..., r0:r1, :]
            a_cnt = torch.zeros(n, 1, r1 - r0, w)
            a_sw = torch.zeros_like(a_cnt)
            a_plain = torch.zeros(n, plain.shape[1], b, r1 - r0, w)
            a_weighted = torch.zeros(n, weighted.shape[1], b, r1 - r0, w)
            sim = torch.empty(n, 1, r1 - r0, w)
            tmp = torch.empty(n, b, r1 - r0, w)
            for (dy, dx), d in dist.items():
                # float mask: min over bands and dates of (thr - |dF|) > 0 (NaN outside: 0);
                # bool tensors and bool-float products are several times slower
                torch.sub(h1, torch.sub(p_f1.nb(dy, dx, r0, r1), c1c, out=tmp).abs_(), out=tmp)
                torch.amin(tmp, 1, keepdim=True, out=sim)
                torch.sub(h3, torch.sub(p_f3.nb(dy, dx, r0, r1), c3c, out=tmp).abs_(), out=tmp)
                torch.minimum(sim, tmp.amin(1, keepdim=True), out=sim)
                m = torch.gt(sim, 0.0, out=sim)
                a_cnt += m
                a_plain.addcmul_(m[:, None], p_plain.nb(dy, dx, r0, r1))
                wgt = m / (p_corr.nb(dy, dx, r0, r1) * d + 1e-7)
                a_sw += wgt
                a_weighted.addcmul_(wgt[:, None], p_weighted.nb(dy, dx, r0, r1))
            rows = slice(r0, r1)
            out[..., rows, :] = self._combine(
                c1c,
                c3c,
                t1[..., rows, :],
                t3[..., rows, :],
                d1[..., rows, :],
                d3[..., rows, :],
                a_cnt,
                a_sw,
                a_plain,
                a_weighted,
            )
        return out

    def _combine(self, f1, f3, t1, t3, d1, d3, cnt, sw, s_plain, s_weighted) -> Tensor:
        """Prediction of a block of rows from the accumulated sums over its similar pixels."""
        lo, hi = self.valid_range
        # conversion coefficient from the regression sums (float64: differences of large sums)
        sp = s_plain.double()
        k = 2.0 * cnt.double()
        sx, sy, sxx, sxy, syy, dc = sp.unbind(1)
        vxx = sxx - sx * sx / k
        vxy = sxy - sx * sy / k
        vyy = syy - sy * sy / k
        slope = vxy / vxx
        r2 = (vxy * vxy / (vxx * vyy)).clamp(0.0, 1.0)
        dof = (k - 2.0).clamp_min(1.0)
        fstat = r2 * dof / (1.0 - r2).clamp_min(1e-300)
        pval = torch.from_numpy(
            fdtrc(np.ones(1), dof.expand_as(fstat).numpy(), np.nan_to_num(fstat.numpy(), nan=0.0))
        )
        ok = (
            ((dc / cnt.double()).abs() >= self.min_coarse_change)
            & (pval <= self.p_value)
            & (slope > 0)
            & (slope <= self.max_slope)
        )
        v = torch.where(ok, slope, torch.ones_like(slope)).float()
        wd1, wd3, wf1, wf3 = (s_weighted[:, i] / sw for i in range(4))
        pred = t1 * (f1 + v * wd1) + t3 * (f3 + v * wd3)
        fallback = t1 * wf1 + t3 * wf3
        pred = torch.where((pred <= lo) | (pred >= hi), fallback, pred)
        few = t1 * (f1 + d1) + t3 * (f3 + d3)
        return torch.where(cnt < self.min_similar, few, pred)
