"""Each metric against an independent computation (closed forms, loops, scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stfcat import metrics as M

TOL = 1e-6


@pytest.fixture()
def pair():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.5, size=(4, 40, 36))
    pred = truth + rng.normal(0, 0.02, size=truth.shape)
    return pred, truth


def test_rmse_mae_ad_closed_form():
    truth = np.zeros((2, 4, 4))
    pred = np.zeros((2, 4, 4))
    pred[0] += 0.1   # band 0: constant error 0.1
    pred[1, :2] = 0.2  # band 1: half the pixels off by 0.2, half exact
    pred[1, 2:] = -0.2
    assert M.rmse(pred, truth) == pytest.approx((0.1 + 0.2) / 2, abs=TOL)
    assert M.mae(pred, truth) == pytest.approx((0.1 + 0.2) / 2, abs=TOL)
    assert M.ad(pred, truth) == pytest.approx((0.1 + 0.0) / 2, abs=TOL)


def test_mask_excludes_pixels():
    truth = np.zeros((1, 2, 2))
    pred = np.array([[[0.1, 0.1], [0.1, 5.0]]])
    mask = np.array([[True, True], [True, False]])
    assert M.rmse(pred, truth, mask) == pytest.approx(0.1, abs=TOL)
    nan_pred = pred.copy()
    nan_pred[0, 1, 1] = np.nan  # NaN pixels are invalid too
    assert M.mae(nan_pred, truth) == pytest.approx(0.1, abs=TOL)
    with pytest.raises(ValueError, match="no valid pixel"):
        M.rmse(pred, truth, np.zeros((2, 2), bool))


def test_psnr_matches_skimage(pair):
    from skimage.metrics import peak_signal_noise_ratio

    pred, truth = pair
    ref = np.mean([peak_signal_noise_ratio(truth[b], pred[b], data_range=1.0) for b in range(4)])
    assert M.psnr(pred, truth) == pytest.approx(ref, abs=TOL)
    # closed form: MSE 0.01 everywhere -> 20 dB
    assert M.psnr(np.full((1, 3, 3), 0.1), np.zeros((1, 3, 3))) == pytest.approx(20.0, abs=TOL)


def test_ssim_matches_skimage(pair):
    from skimage.metrics import structural_similarity

    pred, truth = pair
    ref = np.mean([
        structural_similarity(truth[b], pred[b], data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for b in range(4)
    ])
    assert M.ssim(pred, truth) == pytest.approx(ref, abs=TOL)
    assert M.ssim(truth, truth) == pytest.approx(1.0, abs=TOL)


def test_sam_degrees_closed_form():
    truth = np.zeros((2, 1, 2))
    pred = np.zeros((2, 1, 2))
    truth[:, 0, 0] = [1, 0]
    pred[:, 0, 0] = [1, 1]      # 45 degrees
    truth[:, 0, 1] = [0.3, 0.4]
    pred[:, 0, 1] = [0.6, 0.8]  # same direction: 0 degrees
    assert M.sam(pred, truth) == pytest.approx(22.5, abs=TOL)


def test_ergas_closed_form():
    truth = np.stack([np.full((3, 3), 0.2), np.full((3, 3), 0.4)])
    pred = truth + np.array([0.02, 0.02])[:, None, None]  # RMSE_b/mean_b = 0.1, 0.05
    expected = 100 * (30 / 480) * math.sqrt((0.1**2 + 0.05**2) / 2)
    assert M.ergas(pred, truth, resolution_ratio=30 / 480) == pytest.approx(expected, abs=TOL)


def test_cc_uiqi_r2_against_numpy(pair):
    pred, truth = pair
    cc = np.mean([np.corrcoef(pred[b].ravel(), truth[b].ravel())[0, 1] for b in range(4)])
    assert M.cc(pred, truth) == pytest.approx(cc, abs=TOL)
    q = []
    r2 = []
    for b in range(4):
        x, y = pred[b].ravel(), truth[b].ravel()
        sxy = np.cov(x, y, bias=True)
        q.append(4 * sxy[0, 1] * x.mean() * y.mean() / ((sxy[0, 0] + sxy[1, 1]) * (x.mean() ** 2 + y.mean() ** 2)))
        r2.append(1 - np.sum((y - x) ** 2) / np.sum((y - y.mean()) ** 2))
    assert M.uiqi(pred, truth) == pytest.approx(np.mean(q), abs=TOL)
    assert M.r2(pred, truth) == pytest.approx(np.mean(r2), abs=TOL)
    # UIQI drops with a bias even when CC stays 1
    assert M.cc(truth + 0.1, truth) == pytest.approx(1.0, abs=TOL)
    assert M.uiqi(truth + 0.1, truth) < 0.99


def test_edge_closed_form():
    truth = np.zeros((1, 4, 4))
    truth[0, :, 2:] = 1.0  # vertical step: Roberts magnitude sqrt(2) on the column before the step
    pred = truth * 0.5     # half the contrast -> half the edges -> relative difference -0.5
    assert M.edge(pred, truth) == pytest.approx(-0.5, abs=TOL)
    assert M.edge(truth, truth) == pytest.approx(0.0, abs=TOL)
    assert M.roberts(truth[0])[0, 1] == pytest.approx(math.sqrt(2), abs=TOL)


def _lbp_loop(x):
    h, w = x.shape
    out = np.zeros((h - 2, w - 2))
    nb = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            out[i - 1, j - 1] = sum(2**k for k, (dy, dx) in enumerate(nb) if x[i + dy, j + dx] >= x[i, j])
    return out


def test_lbp_against_loop(pair):
    pred, truth = pair
    np.testing.assert_allclose(M.lbp(truth[0]), _lbp_loop(truth[0]), atol=TOL)
    lp, lt = _lbp_loop(pred[1]), _lbp_loop(truth[1])
    # one band, all valid -> relative difference of the sums
    assert M.lbp_difference(pred[1:2], truth[1:2]) == pytest.approx((lp.sum() - lt.sum()) / lt.sum(), abs=TOL)


def test_compute_all_keys_and_perfect_prediction(pair):
    _, truth = pair
    res = M.compute_all(truth, truth)
    assert tuple(res) == M.METRIC_NAMES
    assert res["rmse"] == 0 and res["sam"] == pytest.approx(0, abs=1e-5)
    assert res["ssim"] == pytest.approx(1) and res["cc"] == pytest.approx(1) and res["r2"] == pytest.approx(1)
    assert res["psnr"] == math.inf
    assert M.mean_metrics([{"a": 1.0}, {"a": 3.0}]) == {"a": 2.0}


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="must both be"):
        M.rmse(np.zeros((2, 3, 3)), np.zeros((3, 3, 3)))
