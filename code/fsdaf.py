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
restored afterwards: parallelism belongs to tiles/processes on a shared machine. Step 5 computes
the ranking scores densely (several rows of offsets per op on cache-sized pixel blocks, float
masks, see ``_classical_common``), selects the n most similar pixels exactly in two stages
(group minima bound the n-th score, then only ~n groups per pixel are searched) and computes the
weights for the selected pixels only. The relative differences are formed as
``|F(nb) * (1 / F(c)) - 1|`` (one fused multiply-add per band) and the candidate threshold is
scaled by ``1 / F(c)`` alike: the same tests as ``|dF| / F(c)`` and ``|dF| < thr`` up to float
rounding, which can move a pixel across an exact tie (measured: 23 of 691,200 values moved by
more than 1e-4 on the 480 x 480 x 3 bench scene, mean change 1.3e-7). The weighted sums are
accumulated in float64. Measured (2-core Xeon, 1 thread, ``benchmarks/bench_classical.py``):
480 x 480 x 3 in ~3.5 s and ~0.12 GB above the inputs, 1000 x 1000 x 6 in ~25 s and ~0.41 GB.
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
    pad,
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


def quantiles(x: Tensor, qs: tuple[float, ...]) -> list[Tensor]:
    """``torch.quantile(x, q, dim=1)`` (linear interpolation) for each q, bit for bit, from two
    order statistics found by ``np.partition`` (torch sorts every row: ~10x slower)."""
    xn = x.contiguous().numpy()
    n = xn.shape[1]
    out = []
    for q in qs:
        rank = torch.tensor(q, dtype=x.dtype) * (n - 1)  # in x's dtype, as torch.quantile
        lo, hi = int(rank.floor()), int(rank.ceil())
        v = torch.from_numpy(np.partition(xn, [lo, hi], axis=1)[:, [lo, hi]])
        out.append(torch.lerp(v[:, 0], v[:, 1], rank - lo))
    return out


@register_model("fsdaf", paper="fsdaf", family="classical", params=0)
class FSDAF(WindowMethod):
    """FSDAF (Zhu et al. 2016): class unmixing + TPS + residual distribution + smoothing."""

    n_refs = 1
    min_window = 3
    block_pixels = 512  # pixels per block of the similar-pixel step
    select_group = 7  # offset columns per group in the selection's first stage (see _select)
    op_elems = 1 << 17  # elements per operand of the similar-pixel step's element-wise ops
    row_align = None  # steps 1-4 are global over the tile
    tile_exact = False  # ... so tiles differ from one pass (the IDL code's own block seams)
    tile_bound = 0.015  # RMSE tiled vs one pass: 0.0095 on 32 px tiles, 0.0105 on the default 280 px tiles (synthetic scene)

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
        # first: the spline's solve and FFTs are the memory peak, reached with little else alive
        f_sp = tps_fine(to_coarse(c2, ratio), ratio, h, w)
        if labels is None:
            # robust copy of F1 for the classification (the code clips 0.01 / 99.99 % tails)
            flat = f1.reshape(b, -1)
            step = max(1, flat.shape[1] // 1_000_000)
            qlo, qhi = quantiles(flat[:, ::step], (0.0001, 0.9999))
            fc = torch.maximum(torch.minimum(flat, qhi[:, None]), qlo[:, None]).T.contiguous()
            labels = kmeans(fc, k, self.kmeans_iters)[0].reshape(h, w)
            del fc
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
        lo, hi = self.valid_range
        f1, c1, c2 = (batch[k].float() for k in ("f1", "c1", "c2"))
        change, thr = products["change"].float(), products["thr"].float()
        out = torch.stack([self._smooth(f1[i], change[i], thr[i]) for i in range(n)])
        bad = (out < lo) | (out > hi)
        return torch.where(bad, (f1 + c2 - c1).clamp(lo, hi), out)

    def _smooth(self, f1: Tensor, change: Tensor, thr: Tensor) -> Tensor:
        """``F1 + sum W * change(nb) / sum W`` over the selected similar pixels of one image.

        Per block of ``block_pixels`` pixels: (1) the ranking score of every (offset, pixel),
        dense, offset-major (pixels innermost: long vectorised loops, several offset rows per
        op), written straight into the block's score buffer; (2) the exact selection
        (:meth:`_select`). The weights are then computed for the selected pairs only (about
        ``n_similar`` per pixel, gathered by index, batched over blocks): no dense weight pass
        over all offsets."""
        b, h, w = f1.shape
        r = self.radius
        k = 2 * r + 1
        pf = Padded(f1, r, NAN)
        wp = w + 2 * r
        grid = torch.arange(-r, r + 1, dtype=torch.float64)
        dist = torch.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) / r
        rank_d = (10.0 + dist).float().view(k, k, 1, 1)
        rank_eps = rank_d * 1e-5
        wgt_d = (1.0 + dist).float().reshape(-1)
        group = self.select_group
        kp = -(-k // group) * group
        # numpy for the gathers (np.take is ~4x faster than tensor indexing); float32 operations
        # in the order of the dense formulation
        f1n = pf.xp.reshape(b, -1).numpy()
        chn = pad(change, r, 0.0).reshape(b, -1).numpy()
        invn = (1.0 / (f1 + 1e-8)).reshape(b, -1).numpy()
        wgt_dn = wgt_d.numpy()
        acc_w = np.zeros(h * w)
        acc_v = np.zeros((b, h * w))
        pending: list[tuple[np.ndarray, ...]] = []
        npend = 0

        def accumulate() -> None:
            """Weights of the selected (pixel, neighbour) pairs, accumulated, in batches of ~1M
            pairs (not per block: fewer calls)."""
            nonlocal npend
            if not pending:
                return
            pix, cen, nb, o = (np.concatenate(a) for a in zip(*pending, strict=True))
            pending.clear()
            npend = 0
            rel = None
            for i in range(b):
                d = np.abs(f1n[i].take(nb) - f1n[i].take(cen)) * invn[i].take(pix)
                rel = d if rel is None else rel + d
            wgt = np.float32(1.0) / ((rel + np.float32(1.0)) * wgt_dn.take(o))
            np.add(acc_w, np.bincount(pix, wgt, minlength=h * w), out=acc_w)
            for i in range(b):
                acc_v[i] += np.bincount(pix, chn[i].take(nb) * wgt, minlength=h * w)

        xp = pf.xp
        st = xp.stride()
        blocks = list(tiles(h, w, 1, self.block_pixels))
        most = max((r1 - r0) * (q1 - q0) for r0, r1, q0, q1 in blocks)
        # offset rows per op: operands of about op_elems elements (cache-resident; larger ops
        # spill, smaller ones are dominated by the per-call cost)
        nd = max(1, min(k, self.op_elems // (b * k * most)))
        # buffers shared by all blocks (fresh multi-MB allocations per block cost page faults)
        diff_buf, gap_buf = torch.empty(b * nd * k * most), torch.empty(nd * k * most)
        score_buf = torch.empty(k * kp * most)
        for r0, r1, q0, q1 in blocks:
            blk = (r0, r1, q0, q1)
            hh, ww = r1 - r0, q1 - q0
            npx = hh * ww
            fc = pf.block(*blk)
            inv_fc = 1.0 / (fc + 1e-8)
            # differences relative to the centre, |F(nb) / F(c) - 1|, in one fused op per band;
            # the candidate threshold on the same scale
            neg_one = torch.mul(fc, inv_fc).neg_()[:, None, None]
            invu = inv_fc[:, None, None]
            th = torch.mul(thr[:, r0:r1, q0:q1], inv_fc)[:, None, None]
            diff = diff_buf[: b * nd * k * npx].view(b, nd, k, hh, ww)
            gap = gap_buf[: nd * k * npx].view(nd, k, hh, ww)
            score = score_buf[: k * kp * npx].view(k, kp, hh, ww)
            score[:, k:] = np.inf  # columns that pad the last group of offset columns
            for d0 in range(0, k, nd):
                d1 = min(k, d0 + nd)
                m = d1 - d0
                # neighbours at offset rows d0..d1-1 (0-based), all columns: a strided view
                nbv = xp.as_strided(
                    (b, m, k, hh, ww), (st[0], st[1], st[2], st[1], st[2]),
                    xp.storage_offset() + (r0 + d0) * st[1] + q0 * st[2],
                )
                dif, g, rel = diff[:, :m], gap[:m], score[d0:d1, :k]
                torch.addcmul(neg_one, nbv, invu, out=dif).abs_()
                torch.sum(dif, 0, out=rel)
                # candidate: |dF| < thr in every band <=> min_b (thr - |dF|) > 0 (both relative
                # to F(c)); NaN (outside the image) gives NaN scores, which sort after every
                # finite one
                torch.amin(torch.sub(th, dif, out=dif), 0, out=g)
                torch.addcmul(rank_eps[d0:d1], rel, rank_d[d0:d1], out=rel)  # (rel + 1e-5) * rank
                torch.le(g, 0.0, out=g)  # 1.0: not a candidate
                if d0 <= r < d1:
                    g[r - d0, r] = 0.0  # the centre always counts (a flat window has a zero threshold)
                # score of a non-candidate: >= FLT_MAX (rel + FLT_MAX rounds to FLT_MAX)
                rel.add_(g, alpha=FLT_MAX)
            p, oy, ox = self._select(score.view(k, kp, npx).numpy(), group)
            y, x = np.divmod(p, ww)
            cen = (r0 + r + y) * wp + (q0 + r + x)
            pending.append((((r0 + y) * w + q0 + x), cen, cen + (oy - r) * wp + (ox - r), oy * k + ox))
            npend += len(p)
            if npend > 1 << 20:
                accumulate()
        accumulate()
        with np.errstate(invalid="ignore"):  # no selected pixel (NaN centre): NaN, as F1 is
            smooth = acc_v / acc_w
        return f1 + torch.from_numpy(smooth).float().view(b, h, w)

    def _select(self, score: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (pixel, offset row, offset column) of every score ``<= tau``, tau = the pixel's
        ``n_similar``-th smallest score (ties all kept; fewer candidates than ``n_similar``: all
        of them). ``score`` is ``(k, kp, P)`` (offset row, offset column, pixel; ``kp`` columns,
        a multiple of ``group``, padded with inf; NaN: no score).

        Exact in two stages, so that no full pixel-major copy and partial sort of all
        ``P x k^2`` scores is needed: (1) the minimum of each group of ``group`` offset columns
        in one offset row; the n-th smallest group minimum ``U`` bounds tau from above (n groups
        hold n scores ``<= U``); (2) only the groups with minimum ``<= U`` (about ``n_similar``
        per pixel) are gathered, and tau is the n-th smallest of their scores."""
        k, kp, npx = score.shape
        n = self.n_similar
        top = np.float32(np.nextafter(np.float32(FLT_MAX), np.float32(0)))
        gr = kp // group  # groups per offset row
        ng = k * gr
        gmin = np.fmin.reduce(score.reshape(ng, group, npx), axis=1)
        gpm = np.ascontiguousarray(gmin.T)  # (P, groups)
        if n <= ng:
            # fewer than n groups hold a candidate (n-th minimum >= FLT_MAX or NaN): all of them
            bound = np.fmin(np.partition(gpm, n - 1, axis=1)[:, n - 1], top)
        else:
            bound = np.full(npx, top, np.float32)
        p, gi = np.divmod(np.flatnonzero(gpm <= bound[:, None]), ng)  # pixel-major pairs
        counts = np.bincount(p, minlength=npx)
        slot = np.arange(len(p)) - (np.cumsum(counts) - counts)[p]
        # a group's members are npx apart in the score buffer
        vals = score.reshape(-1)[(gi * (group * npx) + p)[:, None] + np.arange(0, group * npx, npx)]
        # tau: n-th smallest of each pixel's gathered scores, in a dense (P, m) array
        m = int(counts.max())
        if n <= m * group:
            dense = np.full((npx * m, group), np.inf, np.float32)
            dense[p * m + slot] = vals
            dense = dense.reshape(npx, m * group)
            dense.partition(n - 1, axis=1)
            tau = np.fmin(dense[:, n - 1], top)
        else:
            tau = np.full(npx, top, np.float32)
        pair, member = np.divmod(np.flatnonzero(vals <= tau[p][:, None]), group)
        oy, j = np.divmod(gi[pair], gr)
        return p[pair], oy, j * group + member
