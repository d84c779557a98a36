"""ESTARFM's window sums (similarity mask and weights as matrix products) against a plain
per-pixel float64 evaluation of the same definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stfcat.models import create_model


def naive_sums(f1, c1, f3, c3, c2, th1, th3, one_minus_r, radius):
    """Per pixel, in float64: similar set (|dF| < thr in every band of both dates), its count,
    the centred regression statistics per band and the weighted sums."""
    b, h, w = f1.shape
    out = {"cnt": np.zeros((h, w)), "sw": np.zeros((h, w)), "vxx": np.zeros((b, h, w)),
           "vxy": np.zeros((b, h, w)), "vyy": np.zeros((b, h, w)), "dc": np.zeros((b, h, w)),
           "wsum": np.zeros((4, b, h, w))}
    weighted = np.stack([c2 - c1, c2 - c3, f1, f3])
    for y in range(h):
        for x in range(w):
            ys = slice(max(0, y - radius), min(h, y + radius + 1))
            xs = slice(max(0, x - radius), min(w, x + radius + 1))
            sim = np.ones((ys.stop - ys.start, xs.stop - xs.start), bool)
            for f, th in ((f1, th1), (f3, th3)):
                sim &= (np.abs(f[:, ys, xs] - f[:, y : y + 1, x : x + 1]) < th[:, y : y + 1, x : x + 1]).all(0)
            gy, gx = np.meshgrid(np.arange(ys.start, ys.stop), np.arange(xs.start, xs.stop), indexing="ij")
            dist = 1.0 + np.hypot(gy - y, gx - x) / radius
            wgt = np.where(sim, 1.0 / (one_minus_r[0, ys, xs] * dist + 1e-7), 0.0)
            out["cnt"][y, x] = sim.sum()
            out["sw"][y, x] = wgt.sum()
            out["wsum"][:, :, y, x] = (weighted[:, :, ys, xs] * wgt).sum((-2, -1))
            for i in range(b):
                xv = np.concatenate([c1[i, ys, xs][sim], c3[i, ys, xs][sim]])
                yv = np.concatenate([f1[i, ys, xs][sim], f3[i, ys, xs][sim]])
                out["vxx"][i, y, x] = ((xv - xv.mean()) ** 2).sum()
                out["vxy"][i, y, x] = ((xv - xv.mean()) * (yv - yv.mean())).sum()
                out["vyy"][i, y, x] = ((yv - yv.mean()) ** 2).sum()
                out["dc"][i, y, x] = (c1[i, ys, xs][sim] - c3[i, ys, xs][sim]).sum()
    return out


@pytest.mark.parametrize(("bands", "h", "w", "window"), [(2, 19, 23, 7), (3, 9, 30, 5), (1, 21, 17, 11)])
def test_window_sums_match_naive(bands: int, h: int, w: int, window: int) -> None:
    g = torch.Generator().manual_seed(bands * 100 + window)
    # quantised values make exact ties (dF == thr, R == 1) likely: the decisions must still agree
    f1, c1, f3, c3, c2 = (torch.randint(10, 60, (bands, h, w), generator=g).float() / 200 for _ in range(5))
    m = create_model("estarfm", bands=bands, ratio=4, window=window)
    th1, th3 = (torch.rand(bands, h, w, generator=g) * 0.15 + 0.05 for _ in range(2))
    one_minus_r = torch.rand(1, h, w, generator=g)
    one_minus_r[0, ::3, ::2] = 0.0  # perfectly correlated spectra: the 1e-7 guard must act
    cnt, sw, s_plain, s_weighted = m._window_sums(f1, c1, f3, c3, c2, th1, th3, one_minus_r)
    ref = naive_sums(*(t.double().numpy() for t in (f1, c1, f3, c3, c2, th1, th3, one_minus_r)), window // 2)

    np.testing.assert_array_equal(cnt[0].numpy(), ref["cnt"])
    assert ref["cnt"].min() >= 1 and ref["cnt"].max() > 3  # the case exercises real selections
    np.testing.assert_allclose(sw[0].numpy(), ref["sw"], rtol=1e-5)
    np.testing.assert_allclose(s_weighted.numpy(), ref["wsum"], rtol=1e-4, atol=1e-6 * ref["sw"].max())
    sx, sy, sxx, sxy, syy, dc = s_plain.double().unbind(0)
    k = 2.0 * cnt.double()
    atol = 1e-6 * math.sqrt(window * window)
    np.testing.assert_allclose((sxx - sx * sx / k).numpy(), ref["vxx"], rtol=1e-4, atol=atol)
    np.testing.assert_allclose((sxy - sx * sy / k).numpy(), ref["vxy"], rtol=1e-4, atol=atol)
    np.testing.assert_allclose((syy - sy * sy / k).numpy(), ref["vyy"], rtol=1e-4, atol=atol)
    np.testing.assert_allclose(dc.numpy(), ref["dc"], atol=1e-5)


def test_missing_pixels_stay_local() -> None:
    """A NaN hole changes no sum of a pixel farther than the window radius (the matrix products
    span a whole tile: a NaN value must not leak into them), and the hole itself comes out NaN."""
    g = torch.Generator().manual_seed(7)
    f1, c1, f3, c3, c2 = (torch.rand(3, 40, 44, generator=g) * 0.3 + 0.05 for _ in range(5))
    th = torch.full((3, 40, 44), 0.2)
    one_minus_r = torch.rand(1, 40, 44, generator=g)
    m = create_model("estarfm", bands=3, ratio=4, window=9)
    ref = m._window_sums(f1, c1, f3, c3, c2, th, th, one_minus_r)
    f1 = f1.clone()
    f1[:, 20:22, 20:22] = float("nan")
    got = m._window_sums(f1, c1, f3, c3, c2, th, th, one_minus_r)
    far = torch.ones(40, 44, dtype=torch.bool)
    far[20 - 4 : 22 + 4, 20 - 4 : 22 + 4] = False
    cnt, cnt_ref = got[0][0], ref[0][0]
    assert torch.equal(cnt[far], cnt_ref[far]) and cnt_ref.min() > 5
    def stats(sums):
        """What the prediction uses: shift-invariant regression statistics and weighted sums (the
        tile's centring constant moves with the hole)."""
        cnt, sw, sp, swt = sums
        k = 2.0 * cnt.double()
        sx, sy, sxx, sxy, syy, dc = sp.double().unbind(0)
        return sw, sxx - sx * sx / k, sxy - sx * sy / k, syy - sy * sy / k, dc, swt

    for a, b in zip(stats(got), stats(ref), strict=True):
        torch.testing.assert_close(a[..., far], b[..., far], atol=1e-5, rtol=1e-4)
    batch = {"f1": f1[None], "c1": c1[None], "f3": f3[None], "c3": c3[None], "c2": c2[None]}
    assert m(batch)[..., 20:22, 20:22].isnan().all()
