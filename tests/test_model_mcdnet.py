"""MCDNet specifics: shared super-resolution net giving transitional images, difference
reconstruction in both directions with co-training features, learned merge, compound loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stfcat.models import count_parameters, create_model, model_info


def _batch(size: int = 24, bands: int = 2, n: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + 0.4 * torch.rand(n, bands, size, size, generator=g) for k in ("f1", "c1", "c2", "f3", "c3")}


def test_parameter_count_breakdown():
    m = create_model("mcdnet", bands=6)
    conv = lambda cin, cout, k=3: cin * cout * k * k + cout  # noqa: E731
    block = 3 * conv(64, 32) + conv(96, 64, 1)
    assert count_parameters(m.sr) == conv(6, 64) + 2 * block + conv(64, 6) == 130_182
    assert count_parameters(m.dr) == conv(12, 64) + conv(128, 64) + conv(64, 64) + conv(64, 6) == 121_158
    assert count_parameters(m.ct) == conv(12, 64) + conv(64, 64) == 43_904
    assert count_parameters(m.merge) == conv(76, 64) + conv(64, 6) == 47_302
    assert count_parameters(m) == model_info("mcdnet").params == 342_546
    assert model_info("mcdnet").n_refs == 2


def test_transitional_images_come_from_one_shared_sr_net():
    m = create_model("mcdnet", bands=2).eval()
    b = _batch()
    with torch.no_grad():
        parts = m._parts(b)
        for k in ("1", "2", "3"):
            torch.testing.assert_close(parts["t" + k], m.sr(b["c" + k]))


def test_zero_difference_and_merge_heads_average_the_references():
    m = create_model("mcdnet", bands=2).eval()
    for conv in (m.dr.body[-1], m.merge[-1]):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    b = _batch()
    with torch.no_grad():
        torch.testing.assert_close(m(b), 0.5 * (b["f1"] + b["f3"]))


def test_compound_loss_has_the_sr_dr_and_time_relevance_terms():
    m = create_model("mcdnet", bands=2)
    b = _batch(n=2)
    target = 0.05 + 0.4 * torch.rand(2, 2, 24, 24)
    with torch.no_grad():
        p = m._parts(b)
        main = F.mse_loss(p["out"], target)
        sr = F.mse_loss(p["t1"], b["f1"]) + F.mse_loss(p["t2"], target) + F.mse_loss(p["t3"], b["f3"])
        dr = F.mse_loss(p["p1"], target) + F.mse_loss(p["p3"], target)
        total = m.loss(b, target)
    assert total > main + sr + 0.5 * dr  # the time-relevance term is positive on random data
    # the SR net is trained by its own term even when the fusion output ignores it
    m.zero_grad()
    F.mse_loss(m.sr(b["c1"]), b["f1"]).backward()
    assert m.sr.head.weight.grad.abs().sum() > 0


def test_forward_after_training_returns_the_merged_fusion_output():
    torch.manual_seed(0)
    m = create_model("mcdnet", bands=2)
    b = _batch(size=16, n=2)
    target = b["f1"] + (b["c2"] - b["c1"])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = m.loss(b, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(b), m._parts(b)["out"])
