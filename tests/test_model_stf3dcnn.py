"""STF3DCNN specifics: derived parameter count, 3-D convolution over time, weighting, loss."""

from __future__ import annotations

import torch
from stfcat_zoo.stf3dcnn import conv3d_stack_params

from stfcat.models import count_parameters, create_model, model_info


def _batch(size: int = 24, bands: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + torch.rand(2, bands, size, size, generator=g) * 0.4 for k in ("f1", "c1", "c2", "f3", "c3")}


def test_parameter_count_derivation():
    assert conv3d_stack_params(6, 4, 32) == 5_216 + 2 * 27_680 + 5_190 == 65_766
    m = create_model("stf3dcnn", bands=6)
    assert count_parameters(m) == model_info("stf3dcnn").params == 65_766
    assert count_parameters(create_model("stf3dcnn", bands=4, depth=6, width=16)) == conv3d_stack_params(4, 6, 16)


def test_time_axis_mixes_both_differences():
    """The 3x3x3 kernels see both temporal differences: changing C3 changes the predicted D12."""
    torch.manual_seed(0)
    m = create_model("stf3dcnn", bands=3, ratio=8).eval()
    b = _batch()
    with torch.no_grad():
        d12, _ = m.differences(b)
        d12b, _ = m.differences(dict(b, c3=b["c3"] + 0.1))
    assert not torch.allclose(d12, d12b)


def test_output_combines_both_sides():
    torch.manual_seed(0)
    m = create_model("stf3dcnn", bands=3, ratio=8).eval()
    for conv in m.convs:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    b = _batch()
    b["c2"] = b["c1"].clone()  # no coarse change from t1: all weight on F1 + D12 = F1
    b["c3"] = b["c2"] + 0.2
    with torch.no_grad():
        out = m(b)
    torch.testing.assert_close(out, b["f1"], atol=1e-4, rtol=0)


def test_training_reduces_loss():
    torch.manual_seed(0)
    m = create_model("stf3dcnn", bands=3, ratio=8)
    b = _batch(size=32)
    target = b["f1"] + 0.8 * (b["c2"] - b["c1"])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = m.loss(b, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
