"""StfNet specifics: parameter count, two streams, temporal-consistency loss, side weights."""

from __future__ import annotations

import torch

from stfcat.models import count_parameters, create_model, model_info


def _batch(size: int = 24, bands: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + torch.rand(2, bands, size, size, generator=g) * 0.4 for k in ("f1", "c1", "c2", "f3", "c3")}


def test_parameter_count():
    m = create_model("stfnet", bands=6)
    per_stream = (81 * 12 * 32 + 32) + (25 * 32 * 16 + 16) + (25 * 16 * 6 + 6)
    assert count_parameters(m.stream1) == count_parameters(m.stream2) == per_stream
    assert count_parameters(m) == 2 * per_stream == 92_716 == model_info("stfnet").params


def test_output_is_weighted_two_sided_prediction():
    torch.manual_seed(0)
    m = create_model("stfnet", bands=3, ratio=8).eval()
    b = _batch()
    with torch.no_grad():
        d12, d23 = m.differences(b)
        w = m.side_weight(b)
        out = m(b)
    assert w.shape == (2, 3, 1, 1) and ((w >= 0) & (w <= 1)).all()
    torch.testing.assert_close(out, w * (b["f1"] + d12) + (1 - w) * (b["f3"] - d23))


def test_threshold_picks_one_side():
    m = create_model("stfnet", bands=1, ratio=8)
    x = torch.full((1, 1, 8, 8), 0.2)
    b = {"f1": x, "c1": x, "c2": x, "f3": x, "c3": x + 0.3}  # t3 changed a lot, t1 did not
    assert torch.equal(m.side_weight(b), torch.ones(1, 1, 1, 1))
    b = {"f1": x, "c1": x - 0.3, "c2": x, "f3": x, "c3": x}
    assert torch.equal(m.side_weight(b), torch.zeros(1, 1, 1, 1))


def test_temporal_consistency_term_counts():
    torch.manual_seed(0)
    b = _batch()
    target = (b["f1"] + b["f3"]) / 2
    m0 = create_model("stfnet", bands=3, ratio=8, lam=0.0)
    m1 = create_model("stfnet", bands=3, ratio=8, lam=1.0)
    m1.load_state_dict(m0.state_dict())
    d12, d23 = m0.differences(b)
    extra = torch.nn.functional.mse_loss(d12 + d23, b["f3"] - b["f1"])
    torch.testing.assert_close(m1.loss(b, target) - m0.loss(b, target), extra)


def test_training_reduces_loss():
    torch.manual_seed(0)
    m = create_model("stfnet", bands=3, ratio=8)
    b = _batch(size=32)
    target = 0.5 * b["f1"] + 0.5 * b["f3"] + 0.3 * (b["c2"] - b["c1"])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = m.loss(b, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]
