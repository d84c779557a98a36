"""Classical baselines (STARFM, ESTARFM, FSDAF, Fit-FC): registry facts, known-answer cases,
seamless tiling, input checks. Real-fixture RMSE checks are in test_classical_real.py."""

from __future__ import annotations

import math

import pytest
import torch

from stfcat.models import create_model, model_info

CLASSICAL = {"starfm": 1, "starfm-2ref": 2, "estarfm": 2, "fsdaf": 1, "fitfc": 1}
PAPER = {
    "starfm": "starfm",
    "starfm-2ref": "starfm",
    "estarfm": "estarfm",
    "fsdaf": "fsdaf",
    "fitfc": "fitfc",
}
# small windows keep the tests fast; the defaults are exercised on the real fixtures
SMALL = {
    "starfm": {"window": 9},
    "starfm-2ref": {"window": 9},
    "estarfm": {"window": 9},
    "fsdaf": {"window": 9, "n_similar": 8},
    "fitfc": {"window": 9, "n_similar": 8},
}


def blocky_scene(h: int, w: int, bands: int, block: int, seed: int = 0) -> torch.Tensor:
    """Piecewise-constant fine image: 4 well separated classes in square blocks, equal shares."""
    g = torch.Generator().manual_seed(seed)
    nby, nbx = math.ceil(h / block), math.ceil(w / block)
    classes = torch.arange(nby * nbx) % 4
    classes = classes[torch.randperm(nby * nbx, generator=g)].reshape(nby, nbx)
    lab = classes.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w]
    levels = torch.tensor([0.05, 0.2, 0.35, 0.5])[:, None] + 0.03 * torch.arange(bands)[None, :]
    return levels[lab].permute(2, 0, 1)[None].contiguous()  # (1, B, H, W)


def coarse_of(f: torch.Tensor, ratio: int) -> torch.Tensor:
    h, w = f.shape[-2:]
    ph, pw = (-h) % ratio, (-w) % ratio
    x = torch.nn.functional.pad(f, (0, pw, 0, ph), mode="replicate")
    c = torch.nn.functional.avg_pool2d(x, ratio)
    return c.repeat_interleave(ratio, -2).repeat_interleave(ratio, -1)[..., :h, :w]


def smooth_scene(h: int, w: int, bands: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, bands, h // 4 + 2, w // 4 + 2, generator=g) * 0.4 + 0.05
    x = torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    return (x[..., :h, :w] + 0.01 * torch.rand(1, bands, h, w, generator=g)).contiguous()


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_registered_as_classical(name: str) -> None:
    info = model_info(name)
    assert info.family == "classical"
    assert info.trainable is False
    assert info.params == 0
    assert info.paper == PAPER[name]
    assert info.n_refs == CLASSICAL[name]
    m = create_model(name, bands=3, ratio=4, **SMALL[name])
    assert sum(p.numel() for p in m.parameters()) == 0
    assert m.halo >= SMALL[name]["window"] // 2


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_homogeneous_scene_gets_the_coarse_change(name: str) -> None:
    h = w = 24
    f1 = torch.full((1, 2, h, w), 0.2)
    batch = {"f1": f1, "c1": f1 * 0 + 0.21, "c2": f1 * 0 + 0.26}
    if CLASSICAL[name] == 2:
        batch |= {"f3": f1 * 0 + 0.3, "c3": f1 * 0 + 0.31}
    out = create_model(name, bands=2, ratio=4, **SMALL[name])(batch)
    assert out.shape == f1.shape
    torch.testing.assert_close(out, torch.full_like(f1, 0.25), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_uniform_change_is_reproduced_exactly(name: str) -> None:
    ratio = 4
    f1 = blocky_scene(48, 40, 3, block=8, seed=1)
    c1 = coarse_of(f1, ratio)
    d = torch.tensor([0.04, -0.03, 0.06])[None, :, None, None]
    batch = {"f1": f1, "c1": c1, "c2": c1 + d}
    if CLASSICAL[name] == 2:
        d3 = torch.tensor([0.01, 0.005, -0.01])[None, :, None, None]  # below ESTARFM's 0.02: V = 1
        batch |= {"f3": f1 + d3, "c3": c1 + d3}
    out = create_model(name, bands=3, ratio=ratio, **SMALL[name])(batch)
    torch.testing.assert_close(out, f1 + d, atol=2e-5, rtol=0)
    # and it is not the trivial copy
    assert (out - f1).abs().mean() > 0.01


def test_estarfm_temporal_weighting() -> None:
    """With V = 1 the two pair predictions are merged with weights 1/|dC| (paper eq. 11)."""
    f1 = torch.full((1, 1, 20, 20), 0.2)
    batch = {"f1": f1, "c1": f1.clone(), "f3": f1 + 0.03, "c3": f1 + 0.01, "c2": f1 + 0.002}
    out = create_model("estarfm", bands=1, ratio=4, window=9)(batch)
    t1 = (1 / 0.002) / (1 / 0.002 + 1 / 0.008)
    expected = t1 * (0.2 + 0.002) + (1 - t1) * (0.23 + (0.202 - 0.21))
    torch.testing.assert_close(out, torch.full_like(f1, expected), atol=1e-5, rtol=0)


def test_estarfm_conversion_coefficient() -> None:
    """Fine change 2x the coarse change among similar pixels: V = 2 is found by the regression."""
    g = torch.Generator().manual_seed(3)
    base = 0.2 + 0.05 * torch.rand(1, 2, 30, 30, generator=g)
    c1 = base.clone()
    c3 = base + 0.05
    f1 = 2 * base - 0.2
    f3 = 2 * c3 - 0.2
    c2 = base + 0.02
    out = create_model("estarfm", bands=2, ratio=1, window=7, n_classes=0.5)(
        {"f1": f1, "c1": c1, "f3": f3, "c3": c3, "c2": c2}
    )
    torch.testing.assert_close(out, 2 * c2 - 0.2, atol=1e-4, rtol=0)


def test_starfm_two_pair_weighting() -> None:
    """Homogeneous scene: each pair's candidates weigh 1 / ((S + eps)(T + eps)), summed over pairs."""
    ones = torch.ones(1, 1, 16, 16)
    f1, c1, f3, c3, c2 = 0.20 * ones, 0.19 * ones, 0.30 * ones, 0.32 * ones, 0.25 * ones
    m = create_model("starfm-2ref", bands=1, ratio=4, window=5)
    out = m({"f1": f1, "c1": c1, "f3": f3, "c3": c3, "c2": c2})
    eps = m.distance_eps
    w1 = 1 / ((0.01 + eps) * (0.06 + eps))
    w3 = 1 / ((0.02 + eps) * (0.07 + eps))
    expected = (w1 * (0.20 + 0.06) + w3 * (0.30 - 0.07)) / (w1 + w3)
    torch.testing.assert_close(out, torch.full_like(f1, expected), atol=1e-5, rtol=0)
    one = create_model("starfm", bands=1, ratio=4, window=5)({"f1": f1, "c1": c1, "c2": c2})
    torch.testing.assert_close(one, torch.full_like(f1, 0.26), atol=1e-5, rtol=0)


def test_starfm_exact_centre_rule() -> None:
    """A centre whose fine and coarse values agree (S = 0) returns F1 + C2 - C1 (paper, sec. II)."""
    g = torch.Generator().manual_seed(5)
    f1 = 0.2 + 0.1 * torch.rand(1, 1, 12, 12, generator=g)
    c1 = f1 + 0.02
    c1[0, 0, 6, 6] = f1[0, 0, 6, 6]
    c2 = c1 + 0.05 * torch.rand(1, 1, 12, 12, generator=g)
    out = create_model("starfm", bands=1, ratio=4, window=7)({"f1": f1, "c1": c1, "c2": c2})
    assert out[0, 0, 6, 6] == pytest.approx(float(f1[0, 0, 6, 6] + c2[0, 0, 6, 6] - c1[0, 0, 6, 6]), abs=1e-6)



def _matlab_bicubic_matrix(n_in: int, ratio: int) -> torch.Tensor:
    """MATLAB ``imresize(..., 'bicubic')`` upsampling as a matrix: Keys a = -0.5, input coordinate
    u = x / s + (1 - 1 / s) / 2 (1-based), weights normalised, out-of-range inputs mirrored."""
    m = torch.zeros(n_in * ratio, n_in, dtype=torch.float64)
    mirror = list(range(n_in)) + list(range(n_in - 1, -1, -1))
    for x in range(1, n_in * ratio + 1):
        u = x / ratio + 0.5 * (1 - 1 / ratio)
        idx = [math.floor(u - 2) + j for j in range(6)]
        t = [abs(u - i) for i in idx]
        wts = [1.5 * a**3 - 2.5 * a**2 + 1 if a <= 1 else (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2 if a < 2 else 0.0)
               for a in t]
        for i, wt in zip(idx, wts, strict=True):
            m[x - 1, mirror[(i - 1) % (2 * n_in)]] += wt / sum(wts)
    return m


def _fitfc_by_the_equations(f1, c1, c2, ratio, window, n_sim, filter_residual=True):
    """Fit-FC written out pixel by pixel from the paper's equations 1-8 (one image, float64), with
    stfcat's documented choices: regression windows and filter windows cut at the image edge, the
    first n_sim neighbours by score, ties in column-major window order (dx, then dy)."""
    b, h, w = f1.shape
    hc, wc = h // ratio, w // ratio
    coarse = lambda x: x.reshape(b, hc, ratio, wc, ratio).mean((2, 4))  # noqa: E731
    k1, k2 = coarse(c1), coarse(c2)
    a, off = torch.zeros_like(k1), torch.zeros_like(k1)
    for i in range(hc):
        for j in range(wc):
            x = k1[:, max(0, i - 1) : i + 2, max(0, j - 1) : j + 2].reshape(b, -1)
            y = k2[:, max(0, i - 1) : i + 2, max(0, j - 1) : j + 2].reshape(b, -1)
            xm, ym = x.mean(1), y.mean(1)
            a[:, i, j] = ((x - xm[:, None]) * (y - ym[:, None])).mean(1) / ((x - xm[:, None]) ** 2).mean(1)
            off[:, i, j] = ym - a[:, i, j] * xm
    rep = lambda z: z.repeat_interleave(ratio, -2).repeat_interleave(ratio, -1)  # noqa: E731
    f_rm = rep(a) * f1 + rep(off)
    res = _matlab_bicubic_matrix(hc, ratio) @ (k2 - a * k1 - off) @ _matlab_bicubic_matrix(wc, ratio).T
    x = f_rm + res if filter_residual else f_rm
    rad, out, ties = window // 2, torch.empty_like(f1), 0
    for i in range(h):
        for j in range(w):
            cand = []
            for dx in range(-rad, rad + 1):
                for dy in range(-rad, rad + 1):
                    if 0 <= i + dy < h and 0 <= j + dx < w:
                        score = float(((f1[:, i + dy, j + dx] - f1[:, i, j]) ** 2).sum())
                        cand.append((score, len(cand), dy, dx))  # stable: column-major order
            cand.sort()
            ties += sum(c[0] <= cand[n_sim - 1][0] for c in cand) > n_sim
            wts = [1 / (1 + math.hypot(dy, dx) / (window / 2)) for _, _, dy, dx in cand[:n_sim]]
            vals = [x[:, i + dy, j + dx] for _, _, dy, dx in cand[:n_sim]]
            out[:, i, j] = sum(wt * v for wt, v in zip(wts, vals, strict=True)) / sum(wts)
    return (out if filter_residual else out + res), ties


@pytest.mark.parametrize("filter_residual", [True, False])
def test_fitfc_matches_its_equations(filter_residual: bool) -> None:
    """Against an independent per-pixel write-up of the paper: the residual is filtered with the
    same similar-pixel weights (eqs. 7-8), exactly n_similar neighbours with ties broken in
    column-major window order, MATLAB-imresize bicubic with mirrored edges. F1 is quantised to
    multiples of 1/64 so that the float32 scores tie exactly where the float64 ones do."""
    ratio, h, w, window, n_sim = 4, 20, 16, 7, 6
    g = torch.Generator().manual_seed(3)
    f1 = (torch.randint(6, 14, (1, 2, h, w), generator=g) / 64).double()
    c1 = coarse_of(f1, ratio)
    c2 = coarse_of(f1 * (1.0 + 0.3 * torch.rand(1, 2, h, w, generator=g)), ratio)
    want, ties = _fitfc_by_the_equations(f1[0], c1[0], c2[0], ratio, window, n_sim, filter_residual)
    assert ties > h * w // 4  # the tie rule is exercised
    batch = {"f1": f1.float(), "c1": c1.float(), "c2": c2.float()}
    m = create_model("fitfc", bands=2, ratio=ratio, window=window, n_similar=n_sim, filter_residual=filter_residual)
    got = m(batch)[0].double()
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    # the check can fail: keeping every tie at the n-th score gives another answer
    other = create_model("fitfc", bands=2, ratio=ratio, window=window, n_similar=n_sim,
                         filter_residual=filter_residual, keep_ties=True)(batch)[0].double()
    assert (other - want).abs().max() > 1e-3


def test_fitfc_window_with_fewer_pixels_than_n_similar() -> None:
    """A 4 x 4 image has 16 < n_similar pixels in every window: the neighbours outside the image
    must not be averaged in (they once entered as zeros)."""
    g = torch.Generator().manual_seed(0)
    f1 = 0.3 + 0.01 * torch.rand(1, 2, 4, 4, generator=g)
    out = create_model("fitfc", bands=2, ratio=4)({"f1": f1, "c1": f1.clone(), "c2": f1.clone()})
    assert out.min() >= f1.min() - 1e-6 and out.max() <= f1.max() + 1e-6

def _case(name: str, h: int, w: int, ratio: int) -> dict[str, torch.Tensor]:
    f1 = smooth_scene(h, w, 3, seed=11)
    f2 = f1 * 1.1 + 0.02 * smooth_scene(h, w, 3, seed=12)
    batch = {"f1": f1, "c1": coarse_of(f1, ratio), "c2": coarse_of(f2, ratio)}
    if CLASSICAL[name] == 2:
        f3 = f1 * 1.25 + 0.01
        batch |= {"f3": f3, "c3": coarse_of(f3, ratio)}
    return batch


@pytest.mark.parametrize("name", ["starfm", "starfm-2ref", "estarfm", "fitfc"])
def test_tiles_join_without_seams(name: str) -> None:
    ratio, h, w = 4, 64, 36
    batch = _case(name, h, w, ratio)
    m = create_model(name, bands=3, ratio=ratio, **SMALL[name])
    whole = m(batch)
    halo = math.ceil(m.halo / ratio) * ratio  # tiles start on the coarse grid
    cut = h // 2
    top = m({k: v[..., : cut + halo, :] for k, v in batch.items()})
    bottom = m({k: v[..., cut - halo :, :] for k, v in batch.items()})
    joined = torch.cat([top[..., :cut, :], bottom[..., halo:, :]], -2)
    torch.testing.assert_close(joined, whole, atol=1e-5, rtol=0)
    # the comparison can fail: without the halo the cut shows
    naive = torch.cat(
        [
            m({k: v[..., :cut, :] for k, v in batch.items()}),
            m({k: v[..., cut:, :] for k, v in batch.items()}),
        ],
        -2,
    )
    assert (naive - whole).abs().max() > 1e-4


def test_fsdaf_local_step_joins_without_seams_and_is_deterministic() -> None:
    """FSDAF's classification/unmixing/TPS are tile-level (as the IDL's blocks); given the same
    global products, the similar-pixel step depends on the halo only."""
    ratio, h, w = 4, 64, 36
    batch = _case("fsdaf", h, w, ratio)
    m = create_model("fsdaf", bands=3, ratio=ratio, **SMALL["fsdaf"])
    g = m.global_step(batch)
    whole = m.local_step(batch, g)
    torch.testing.assert_close(whole, m(batch), atol=0, rtol=0)  # forward = both steps; deterministic
    cut, halo = h // 2, m.halo
    crop = lambda d, a, b: {k: v[..., a:b, :] for k, v in d.items()}  # noqa: E731
    top = m.local_step(crop(batch, 0, cut + halo), crop(g, 0, cut + halo))
    bottom = m.local_step(crop(batch, cut - halo, h), crop(g, cut - halo, h))
    joined = torch.cat([top[..., :cut, :], bottom[..., halo:, :]], -2)
    torch.testing.assert_close(joined, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_sizes_not_multiple_of_ratio_and_batches(name: str) -> None:
    ratio = 4
    b1 = _case(name, 30, 27, ratio)
    b2 = {k: v.flip(-1) for k, v in b1.items()}
    both = {k: torch.cat([b1[k], b2[k]]) for k in b1}
    m = create_model(name, bands=3, ratio=ratio, **SMALL[name])
    out = m(both)
    assert out.shape == (2, 3, 30, 27)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], m(b2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_bad_input_names_the_key(name: str) -> None:
    m = create_model(name, bands=3, ratio=4, **SMALL[name])
    batch = _case(name, 16, 16, 4)
    with pytest.raises(KeyError, match="c2"):
        m({k: v for k, v in batch.items() if k != "c2"})
    bad = dict(batch)
    bad["c1"] = bad["c1"][..., :8]
    with pytest.raises(ValueError, match="c1"):
        m(bad)


def test_bad_kwargs() -> None:
    with pytest.raises(ValueError, match="window"):
        create_model("starfm", window=4)
    with pytest.raises(ValueError, match="threshold_scope"):
        create_model("estarfm", threshold_scope="tile")


@pytest.mark.parametrize("name", ["starfm", "estarfm", "fitfc"])
def test_row_chunks_for_whole_scenes_are_exact(name: str) -> None:
    """Large inputs are processed in row chunks (bounded memory); the result must not change."""
    from stfcat_zoo._classical_common import by_row_chunks

    ratio = 4
    batch = _case(name, 72, 28, ratio)
    m = create_model(name, bands=3, ratio=ratio, **SMALL[name])
    whole = m._forward(batch)
    chunked = by_row_chunks(m._forward, batch, m.halo, align=ratio if name == "fitfc" else 1, pixels=28 * 8)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    # chunks without any halo would differ: the check can fail
    bare = by_row_chunks(m._forward, batch, 0, align=ratio, pixels=28 * 8)
    assert (bare - whole).abs().max() > 1e-4


def _fsdaf_smoothing_by_the_equations(m, f1, change, thr):
    """FSDAF step 5 pixel by pixel, as the docstring states it (float32, one pixel at a time)."""
    b, h, w = f1.shape
    r, n_sim = m.radius, m.n_similar
    out = torch.empty_like(f1)
    for y in range(h):
        for x in range(w):
            fc = f1[:, y, x]
            inv = 1.0 / (fc + 1e-8)
            rels, scores, wd, chs = [], [], [], []
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if not (0 <= y + dy < h and 0 <= x + dx < w):
                        continue
                    diff = (f1[:, y + dy, x + dx] - fc).abs()
                    if not (bool((diff < thr[:, y, x]).all()) or dy == dx == 0):
                        continue
                    d = torch.tensor(math.sqrt(dy * dy + dx * dx) / r)
                    rel = (diff * inv).sum()
                    rels.append(rel)
                    scores.append((rel + 1e-5) * (10.0 + d).float())
                    wd.append((1.0 + d).float())
                    chs.append(change[:, y + dy, x + dx])
            scores_t = torch.stack(scores)
            tau = scores_t.sort().values[n_sim - 1] if len(scores) >= n_sim else scores_t.max()
            keep = scores_t <= tau
            wgt = 1.0 / ((torch.stack(rels) + 1.0) * torch.stack(wd))
            wgt = wgt[keep].double()
            out[:, y, x] = fc + ((torch.stack(chs)[keep].double() * wgt[:, None]).sum(0) / wgt.sum()).float()
    return out


@pytest.mark.parametrize(
    ("scene", "window", "n_similar", "scope"),
    [
        ("blocky", 5, 4, "image"),  # ties: many neighbours share the n-th score
        ("smooth", 7, 6, "window"),
        ("smooth", 5, 60, "image"),  # n_similar > window^2: every candidate
        ("blocky", 7, 200, "window"),
    ],
)
def test_fsdaf_smoothing_matches_its_equations(scene: str, window: int, n_similar: int, scope: str) -> None:
    """The vectorised step 5 (dense scores, two-stage selection, sparse weights) against a
    per-pixel transcription of the equations, including image edges, ties at the n-th score and
    windows with fewer candidates than n_similar."""
    h, w, ratio = 15, 13, 4
    f1 = blocky_scene(h, w, 3, 3, seed=5) if scene == "blocky" else smooth_scene(h, w, 3, seed=5)
    f1 = f1 + 0.1  # keep F1 + change inside the valid range: no fallback
    change = 0.02 * smooth_scene(h, w, 3, seed=6)
    batch = {"f1": f1, "c1": coarse_of(f1, ratio), "c2": coarse_of(f1 + change, ratio)}
    m = create_model("fsdaf", bands=3, ratio=ratio, window=window, n_similar=n_similar, threshold_scope=scope)
    g = m.global_step(batch)
    g = {"change": change, "thr": g["thr"]}
    got = m.local_step(batch, g)[0]
    want = _fsdaf_smoothing_by_the_equations(m, f1[0], change[0], g["thr"][0])
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    # the comparison can fail: the unsmoothed change field differs from the result
    assert (got - (f1[0] + change[0])).abs().max() > 1e-4
    # a zero threshold (flat image) leaves the centre as the only similar pixel
    flat = m.local_step(batch, {"change": change, "thr": torch.zeros_like(g["thr"])})
    torch.testing.assert_close(flat, f1 + change, atol=1e-6, rtol=0)


def test_fsdaf_quantiles_equal_torch_quantile() -> None:
    from stfcat_zoo.fsdaf import quantiles

    x = torch.rand(3, 10_001, generator=torch.Generator().manual_seed(0))
    x[1, ::7] = 0.5  # repeated values
    got = quantiles(x, (0.0, 0.0001, 0.3, 0.9999, 1.0))
    for q, v in zip((0.0, 0.0001, 0.3, 0.9999, 1.0), got, strict=True):
        assert torch.equal(v, torch.quantile(x, q, dim=1))


def test_kmeans_chunked_distances_give_the_unchunked_labels() -> None:
    from stfcat_zoo._classical_common import kmeans

    g = torch.Generator().manual_seed(1)
    x = torch.rand(70_000, 3, generator=g)  # more rows than one distance chunk
    labels, centres = kmeans(x, 4, iters=20)
    # the same iteration with one cdist over all rows
    xd = x.double()
    order = torch.argsort(xd.sum(1), stable=True)
    c = xd[order[((torch.arange(4, dtype=torch.float64) + 0.5) / 4 * len(x)).long()]].clone()
    lab = torch.zeros(len(x), dtype=torch.long)
    for it in range(20):
        new = torch.cdist(xd, c).argmin(1)
        if torch.equal(new, lab) and it > 0:
            break
        lab = new
        for j in range(4):
            if (lab == j).any():
                c[j] = xd[lab == j].mean(0)
    assert torch.equal(labels, lab)
    torch.testing.assert_close(centres, c.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("hc", "wc"), [(4, 5), (1, 6), (5, 1)])
def test_tps_interpolates_the_coarse_centres(hc: int, wc: int) -> None:
    """Exact interpolation at the coarse pixel centres, also when they lie on one line (the
    polynomial term along the constant coordinate is dropped, not left singular)."""
    from stfcat_zoo._classical_common import tps_fine

    ratio = 3  # odd: fine pixel 1 of each block sits on the coarse centre
    zc = torch.rand(2, hc, wc, generator=torch.Generator().manual_seed(2))
    fine = tps_fine(zc, ratio, hc * ratio, wc * ratio)
    torch.testing.assert_close(fine[:, 1::ratio, 1::ratio], zc, atol=1e-5, rtol=0)
    assert torch.equal(fine, tps_fine(zc, ratio, hc * ratio, wc * ratio))  # deterministic
