"""Accuracy metrics of a fused image against the true fine image: one definition each.

Every metric takes ``pred`` and ``truth`` as band-first arrays ``(B, H, W)`` of surface
reflectance (scale factor applied) and an optional ``mask`` ``(H, W)`` of valid pixels, and is
computed per band over valid pixels only, then averaged over bands (except SAM, which is a
per-pixel angle between spectra, and ERGAS, which is defined across bands). All computation is in
float64. The exact formulas and how they relate to other code bases are on the conventions page
(``stfcat/engine/CONVENTIONS.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

DATA_RANGE = 1.0
"""Data range of PSNR and SSIM: reflectance is unitless and nominally 0..1 (see conventions)."""

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # 2 * int(3.5 * 1.5 + 0.5) + 1 = 11-pixel Gaussian window
SSIM_K1, SSIM_K2 = 0.01, 0.03

METRIC_NAMES = ("rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "r2", "ad", "edge", "lbp")
"""Keys of :func:`compute_all`, in table order. ``ad``, ``edge`` and ``lbp`` are the APA features."""

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "cc": True, "uiqi": True, "r2": True,
                    "rmse": False, "mae": False, "sam": False, "ergas": False}
"""Direction of each ranking metric (``ad``, ``edge``, ``lbp`` are signed: 0 is best)."""


def _prepare(pred, truth, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.ndim == 2:
        p, t = p[None], t[None]
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"pred {p.shape} and truth {t.shape} must both be (B, H, W)")
    m = np.isfinite(p).all(0) & np.isfinite(t).all(0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != p.shape[1:]:
            raise ValueError(f"mask {mask.shape} must be (H, W) = {p.shape[1:]}")
        m &= mask
    if not m.any():
        raise ValueError("no valid pixel to compute metrics on")
    return p, t, m


def _bands(p: np.ndarray, t: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, n) arrays of the valid pixels."""
    return p[:, m], t[:, m]


def rmse_per_band(pred, truth, mask=None) -> np.ndarray:
    p, t = _bands(*_prepare(pred, truth, mask))
    return np.sqrt(np.mean((p - t) ** 2, axis=1))


def rmse(pred, truth, mask=None) -> float:
    """Root-mean-square error per band, averaged over bands."""
    return float(rmse_per_band(pred, truth, mask).mean())


def mae(pred, truth, mask=None) -> float:
    """Mean absolute error per band, averaged over bands."""
    p, t = _bands(*_prepare(pred, truth, mask))
    return float(np.mean(np.abs(p - t), axis=1).mean())


def ad(pred, truth, mask=None) -> float:
    """Average difference (signed bias) ``mean(pred - truth)`` per band, averaged: APA's AD."""
    p, t = _bands(*_prepare(pred, truth, mask))
    return float(np.mean(p - t, axis=1).mean())


def psnr(pred, truth, mask=None, data_range: float = DATA_RANGE) -> float:
    """``10 log10(data_range^2 / MSE_b)`` per band, averaged over bands (inf if a band is exact)."""
    p, t = _bands(*_prepare(pred, truth, mask))
    mse = np.mean((p - t) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return float(np.mean(10.0 * np.log10(data_range**2 / mse)))


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """SSIM map of one band: Gaussian window (sigma 1.5, 11 px), population covariances,
    reflect padding (the definition of Wang et al. 2004 as scikit-image computes it)."""

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    mx, my = filt(x), filt(y)
    vxy = filt(x * x + y * y) - mx * mx - my * my  # var_x + var_y in one filter pass
    cxy = filt(x * y) - mx * my
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vxy + c2))


def ssim(pred, truth, mask=None, data_range: float = DATA_RANGE) -> float:
    """Mean SSIM per band over valid pixels at least 5 px from the border, averaged over bands.
    Invalid pixels are expected to be filled (as ``Case.read`` does) so the windows stay finite."""
    p, t, m = _prepare(pred, truth, mask)
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    inner = np.zeros_like(m)
    inner[pad:-pad, pad:-pad] = True
    keep = m & inner
    if not keep.any():
        raise ValueError(f"image {m.shape} too small for SSIM's {2 * pad + 1}-pixel window")
    p = np.where(np.isfinite(p), p, 0.0)
    t = np.where(np.isfinite(t), t, 0.0)
    return float(np.mean([ssim_map(p[b], t[b], data_range)[keep].mean() for b in range(p.shape[0])]))


def sam(pred, truth, mask=None) -> float:
    """Spectral angle mapper in DEGREES: mean over valid pixels of the angle between the
    predicted and the true spectrum (pixels where either spectrum is all zero are skipped)."""
    p, t = _bands(*_prepare(pred, truth, mask))
    dot = np.sum(p * t, axis=0)
    norm = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    ok = norm > 0
    if not ok.any():
        return float("nan")
    cos = np.clip(dot[ok] / norm[ok], -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def ergas(pred, truth, mask=None, resolution_ratio: float = 30 / 480) -> float:
    """``100 * (h / l) * sqrt(mean_b (RMSE_b / mean(truth_b))^2)`` with ``h / l`` the fine over
    coarse pixel size (e.g. 30 / 480 for Landsat / MODIS) taken from the dataset."""
    p, t = _bands(*_prepare(pred, truth, mask))
    r = np.sqrt(np.mean((p - t) ** 2, axis=1))
    mu = np.mean(t, axis=1)
    return float(100.0 * resolution_ratio * np.sqrt(np.mean((r / mu) ** 2)))


def _moments(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...]:
    mp, mt = p.mean(1), t.mean(1)
    dp, dt = p - mp[:, None], t - mt[:, None]
    return mp, mt, (dp * dp).mean(1), (dt * dt).mean(1), (dp * dt).mean(1)


def cc(pred, truth, mask=None) -> float:
    """Pearson correlation coefficient per band, averaged over bands."""
    p, t = _bands(*_prepare(pred, truth, mask))
    _, _, vp, vt, cov = _moments(p, t)
    return float(np.mean(cov / np.sqrt(vp * vt)))


def uiqi(pred, truth, mask=None) -> float:
    """Universal image quality index (Wang & Bovik 2002), computed globally per band
    (one window = all valid pixels): ``4 cov mu_p mu_t / ((var_p + var_t)(mu_p^2 + mu_t^2))``."""
    p, t = _bands(*_prepare(pred, truth, mask))
    mp, mt, vp, vt, cov = _moments(p, t)
    return float(np.mean(4 * cov * mp * mt / ((vp + vt) * (mp**2 + mt**2))))


def r2(pred, truth, mask=None) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` per band (not CC squared), averaged."""
    p, t = _bands(*_prepare(pred, truth, mask))
    ss_res = np.sum((t - p) ** 2, axis=1)
    ss_tot = np.sum((t - t.mean(1, keepdims=True)) ** 2, axis=1)
    return float(np.mean(1.0 - ss_res / ss_tot))


def roberts(x: np.ndarray) -> np.ndarray:
    """Roberts cross gradient magnitude of one band, ``(H-1, W-1)``: value at the top-left pixel of
    each 2x2 block, ``sqrt((x[i,j]-x[i+1,j+1])^2 + (x[i+1,j]-x[i,j+1])^2)``."""
    g1 = x[:-1, :-1] - x[1:, 1:]
    g2 = x[1:, :-1] - x[:-1, 1:]
    return np.sqrt(g1 * g1 + g2 * g2)


_LBP_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


#: Ties within this reflectance count as ">=" in LBP. Reflectance is stored to 1e-4 (int16 x 1e-4),
#: so this only absorbs float rounding (e.g. from tile blending), which would otherwise flip the
#: codes of flat areas at random.
LBP_TOLERANCE = 1e-6


def lbp(x: np.ndarray) -> np.ndarray:
    """Local binary pattern code (8 square neighbours, radius 1, clockwise from top-left) of the
    interior pixels of one band, ``(H-2, W-2)``: ``sum_k 2^k [neighbour_k >= centre - tol]``
    with ``tol`` = :data:`LBP_TOLERANCE`."""
    h, w = x.shape
    c = x[1:-1, 1:-1] - LBP_TOLERANCE
    code = np.zeros(c.shape, dtype=np.float64)
    for k, (dy, dx) in enumerate(_LBP_OFFSETS):
        code += (x[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] >= c) * float(2**k)
    return code


def _relative_feature_difference(
    feature: Callable[[np.ndarray], np.ndarray], crop: Callable[[np.ndarray], np.ndarray],
    pred, truth, mask,
) -> float:
    p, t, m = _prepare(pred, truth, mask)
    keep = crop(m)
    vals = []
    for b in range(p.shape[0]):
        fp, ft = feature(p[b])[keep], feature(t[b])[keep]
        vals.append((fp.sum() - ft.sum()) / ft.sum())
    return float(np.mean(vals))


def edge(pred, truth, mask=None) -> float:
    """APA's Edge feature: relative difference of the total Roberts edge magnitude,
    ``(sum E(pred) - sum E(truth)) / sum E(truth)`` per band over blocks whose 4 pixels are valid,
    averaged. 0 is perfect; negative = smoother than the truth, positive = more edges."""

    def crop(m: np.ndarray) -> np.ndarray:
        return m[:-1, :-1] & m[1:, 1:] & m[1:, :-1] & m[:-1, 1:]

    return _relative_feature_difference(roberts, crop, pred, truth, mask)


def lbp_difference(pred, truth, mask=None) -> float:
    """APA's LBP feature: relative difference of the total LBP code,
    ``(sum L(pred) - sum L(truth)) / sum L(truth)`` per band over interior pixels whose 3x3
    neighbourhood is valid, averaged. 0 is perfect."""

    def crop(m: np.ndarray) -> np.ndarray:
        return ndimage.binary_erosion(m, np.ones((3, 3), bool))[1:-1, 1:-1]

    return _relative_feature_difference(lbp, crop, pred, truth, mask)


def compute_all(
    pred, truth, mask=None, *, resolution_ratio: float = 30 / 480, data_range: float = DATA_RANGE
) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one image pair."""
    return {
        "rmse": rmse(pred, truth, mask),
        "mae": mae(pred, truth, mask),
        "psnr": psnr(pred, truth, mask, data_range),
        "ssim": ssim(pred, truth, mask, data_range),
        "sam": sam(pred, truth, mask),
        "ergas": ergas(pred, truth, mask, resolution_ratio),
        "cc": cc(pred, truth, mask),
        "uiqi": uiqi(pred, truth, mask),
        "r2": r2(pred, truth, mask),
        "ad": ad(pred, truth, mask),
        "edge": edge(pred, truth, mask),
        "lbp": lbp_difference(pred, truth, mask),
    }


def mean_metrics(per_case: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over cases (a case-level average, like most papers' tables)."""
    if not per_case:
        return {}
    return {k: float(np.mean([c[k] for c in per_case])) for k in per_case[0]}
