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
restored afterwards: parallelism belongs to tiles/processes on a shared machine. Sums over the
similar pixels are matrix products: for each tile of 16 x 16 pixels, the similarity mask and the
weights are written (through a strided view, no copies) into two (pixels x window-union)
matrices, which multiply the neighbours' values; only the similarity test itself is elementwise
work (three passes per row of window offsets). The similarity test is ``dF^2 - thr^2 < 0``
(the same decision as ``|dF| < thr`` except at float32 ties). The regression values are
centred on a per-tile mean before they are summed, so the variance sums lose no digits: on
near-threshold F-tests (p within 1e-4 of ``p_value``) this version takes the decision a float64
computation takes, where plain float32 running sums did not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import fdtrc
from torch import Tensor

from stfcat.models.base import Batch
from stfcat.models.registry import register_model

from ._classical_common import NAN, WindowMethod, box_mean_any, check_batch, window_std


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


def _window_view(xp: Tensor, y0: int, x0: int, ty: int, tx: int, k: int) -> Tensor:
    """``(C, ty, tx, k, k)`` view of a ``(C, Hp, Wp)`` image padded by ``k // 2``:
    ``[c, y, x, i, j] = xp[c, y0 + y + i, x0 + x + j]``, the window of each pixel of a tile (no copy)."""
    st = xp.stride()
    return xp.as_strided(
        (xp.shape[0], ty, tx, k, k), (st[0], st[1], st[2], st[1], st[2]), xp.storage_offset() + y0 * st[1] + x0 * st[2]
    )


def _band_view(m: Tensor, ty: int, tx: int, k: int) -> Tensor:
    """``(ty, tx, k, k)`` view of a ``(ty*tx, U)`` pixel-by-union matrix (U the ``(ty+k-1) x (tx+k-1)``
    union of the tile's windows): ``[y, x, i, j]`` is the entry of pixel ``(y, x)`` and its window
    position ``(i, j)``. Distinct entries never overlap, so it can be written through."""
    uw = tx + k - 1
    u = (ty + k - 1) * uw
    return m.as_strided((ty, tx, k, k), (tx * u + uw, u + 1, uw, 1))


@register_model("estarfm", paper="estarfm", family="classical", params=0)
class ESTARFM(WindowMethod):
    """ESTARFM (Zhu et al. 2010): two-pair similar-pixel fusion with conversion coefficients."""

    n_refs = 2
    uses_ratio = False  # windows, regressions and weights are on the fine grid only
    min_window = 3
    tile = (16, 16)  # pixels per similarity matrix: small keeps it dense, large feeds the GEMM

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
        # temporal weights from the window-mean coarse change of each pair
        m1, m2, m3 = (box_mean_any(x, r) for x in (c1, c2, c3))
        d1, d3 = (m2 - m1), (m2 - m3)
        i1, i3 = 1.0 / (d1.abs() + 1e-10), 1.0 / (d3.abs() + 1e-10)
        t1, t3 = i1 / (i1 + i3), i3 / (i1 + i3)
        del m1, m2, m3, i1, i3
        out = torch.empty_like(c2)
        for i in range(n):
            args = (f1[i], c1[i], f3[i], c3[i], c2[i], th1[i], th3[i], 1.0 - corr[i])
            # combined one row of tiles at a time: no scene-sized float64 sums
            for rows, cnt, sw, s_plain, s_weighted in self._window_sum_rows(*args):
                at = (slice(None), rows)
                out[i][at] = self._combine(
                    f1[i][at], f3[i][at], t1[i][at], t3[i][at], d1[i][at], d3[i][at], cnt, sw, s_plain, s_weighted
                )
        return out

    def _window_sums(self, *args: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All of :meth:`_window_sum_rows` for one image, stacked along the rows."""
        parts = list(zip(*(p[1:] for p in self._window_sum_rows(*args)), strict=True))
        return tuple(torch.cat(x, -2) for x in parts)  # type: ignore[return-value]

    def _window_sum_rows(self, f1, c1, f3, c3, c2, th1, th3, one_minus_r):
        """Sums over the similar pixels of every pixel's window, for one image ``(B, H, W)``.

        Yields, per row of tiles, ``(row slice, count (1, h, W), sum of weights (1, h, W),
        regression sums (6, B, h, W), weighted sums (4, B, h, W))`` (see ``_combine``).

        Each tile of ``ty x tx`` pixels gets two ``(pixels x window-union)`` matrices: the 0/1
        similarity mask and the weights, both written through a strided "band" view of the
        matrix, so the sums over the window are two matrix products with the neighbours' values.
        """
        b, h, w = f1.shape
        r, k = self.radius, self.window
        ty, tx = self.tile
        hp, wp = -(-h // ty) * ty, -(-w // tx) * tx
        uh, uw = ty + k - 1, tx + k - 1
        u, p = uh * uw, ty * tx

        def padded(x: Tensor, value: float) -> Tensor:
            return F.pad(x, (r, r + wp - w, r, r + hp - h), value=value)

        fs = padded(torch.cat([f1, f3]), NAN)  # NaN: never similar (outside the image)
        neg_th2 = -padded(torch.cat([th1, th3]), 0.0).square()
        denom = padded(one_minus_r, 0.0)[0]
        # values of the neighbours, zero outside the image and where missing: the mask excludes
        # those, but 0 * NaN would still poison every sum of the tile's matrix product
        vals = padded(torch.stack([c1, c3, f1, f3]).nan_to_num(0.0), 0.0)  # (4, b, ., .)
        weighted = padded(torch.cat([c2 - c1, c2 - c3, f1, f3, torch.ones_like(f1[:1])]).nan_to_num(0.0), 0.0)
        grid = torch.arange(-r, r + 1, dtype=torch.float64)
        dist = (1.0 + torch.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) / r).float()

        mask = torch.zeros(p, u)  # only the band of window positions is ever written
        wgt = torch.zeros(p, u)
        band_m, band_w = (_band_view(x, ty, tx, k) for x in (mask, wgt))
        mask_rows = band_m.unbind(2)  # one (ty, tx, k) view per row of offsets, made once
        buf = torch.empty(2 * b, ty, tx, k)
        tmp = torch.empty(ty, tx, k, k)

        for y0 in range(0, hp, ty):
            cnt = torch.empty(1, ty, wp)
            sw = torch.empty(1, ty, wp)
            s_plain = torch.empty(6, b, ty, wp)
            s_weighted = torch.empty(4, b, ty, wp)
            for x0 in range(0, wp, tx):
                centre = fs[:, r + y0 : r + y0 + ty, r + x0 : r + x0 + tx, None]
                nth2 = neg_th2[:, r + y0 : r + y0 + ty, r + x0 : r + x0 + tx, None]
                # one row of offsets per pass: (2b, ty, tx, k) stays in cache
                for nb, m_row in zip(_window_view(fs, y0, x0, ty, tx, k).unbind(3), mask_rows, strict=True):
                    # similar: |dF| < thr in every band of both dates, i.e. max (dF^2 - thr^2) < 0
                    torch.sub(nb, centre, out=buf)
                    torch.addcmul(nth2, buf, buf, out=buf)
                    torch.amax(buf, 0, out=m_row)
                # one test over the whole matrix: off the band it holds 0 (not < 0), outside the
                # image NaN (never < 0)
                torch.lt(mask, 0.0, out=mask)
                # W = 1 / ((1 - R) * D + 1e-7) on the similar pixels (Zhu's code)
                torch.mul(_window_view(denom[None], y0, x0, ty, tx, k)[0], dist, out=tmp)
                torch.div(band_m, tmp.add_(1e-7), out=band_w)

                # regression values centred per tile: the variance sums then lose no digits
                union = vals[..., y0 : y0 + uh, x0 : x0 + uw].reshape(4, b, u)
                ref = union.mean(-1, keepdim=True)
                xc = (union[:2] - (ref[0] + ref[1]) / 2).unbind(0)
                yc = (union[2:] - (ref[2] + ref[3]) / 2).unbind(0)
                plain = torch.cat(
                    [
                        xc[0] + xc[1],
                        yc[0] + yc[1],
                        xc[0] * xc[0] + xc[1] * xc[1],
                        xc[0] * yc[0] + xc[1] * yc[1],
                        yc[0] * yc[0] + yc[1] * yc[1],
                        union[0] - union[1],
                        torch.ones(1, u),
                    ]
                )  # (6b + 1, u)
                acc_p = (mask @ plain.T).T.reshape(6 * b + 1, ty, tx)
                wv = weighted[:, y0 : y0 + uh, x0 : x0 + uw].reshape(-1, u)
                acc_w = (wgt @ wv.T).T.reshape(4 * b + 1, ty, tx)
                cols = slice(x0, x0 + tx)
                cnt[..., cols] = acc_p[-1]
                s_plain[..., cols] = acc_p[:-1].reshape(6, b, ty, tx)
                sw[..., cols] = acc_w[-1]
                s_weighted[..., cols] = acc_w[:-1].reshape(4, b, ty, tx)
            rows = min(ty, h - y0)
            crop = (..., slice(0, rows), slice(0, w))
            yield slice(y0, y0 + rows), cnt[crop], sw[crop], s_plain[crop], s_weighted[crop]

    def _combine(self, f1, f3, t1, t3, d1, d3, cnt, sw, s_plain, s_weighted) -> Tensor:
        """Prediction of a block of rows from the accumulated sums over its similar pixels."""
        lo, hi = self.valid_range
        # conversion coefficient from the regression sums (float64: differences of large sums)
        sp = s_plain.double()
        k = 2.0 * cnt.double()
        sx, sy, sxx, sxy, syy, dc = sp.unbind(0)
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
        wd1, wd3, wf1, wf3 = (s_weighted[i] / sw for i in range(4))
        pred = t1 * (f1 + v * wd1) + t3 * (f3 + v * wd3)
        fallback = t1 * wf1 + t3 * wf3
        pred = torch.where((pred <= lo) | (pred >= hi), fallback, pred)
        few = t1 * (f1 + d1) + t3 * (f3 + d3)
        return torch.where(cnt < self.min_similar, few, pred)
