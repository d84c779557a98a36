"""STFDCNN specifics: parameter count, LSR grid, HPM fusion with temporal weights, two stages."""

from __future__ import annotations

import pytest
import torch

from stfcat.models import count_parameters, create_model, model_info


def _batch(size: int = 64, bands: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + torch.rand(2, bands, size, size, generator=g) * 0.4 for k in ("f1", "c1", "c2", "f3", "c3")}


def test_parameter_count_two_srcnn_bodies():
    m = create_model("stfdcnn", bands=6, ratio=16)
    # per CNN: 9x9 6->64, 5x5 64->32, 5x5 32->6 with biases (third-party port's 6-band count)
    per_cnn = (81 * 6 * 64 + 64) + (25 * 64 * 32 + 32) + (25 * 32 * 6 + 6)
    assert per_cnn == 87_206
    assert count_parameters(m.nlm) == count_parameters(m.sr) == per_cnn
    assert count_parameters(m) == 2 * per_cnn == model_info("stfdcnn").params
    assert model_info("stfdcnn").n_refs == 2


def test_lsr_grid_follows_ratio_and_odd_sizes_work():
    assert create_model("stfdcnn", ratio=16).lsr == 8
    assert create_model("stfdcnn", ratio=8).lsr == 4
    assert create_model("stfdcnn", ratio=1).lsr == 1
    m = create_model("stfdcnn", bands=3, ratio=8).eval()
    b = _batch(size=37, bands=3)  # not a multiple of the LSR block
    with torch.no_grad():
        out = m(b)
    assert out.shape == (2, 3, 37, 37) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="fusion"):
        create_model("stfdcnn", fusion="nope")


def test_identity_cnns_reduce_to_weighted_two_sided_prediction():
    """With both CNNs at the identity and ratio 1 (no LSR pooling), the output is the weighted
    combination of the forward (from t1) and backward (from t3) predictions."""
    m = create_model("stfdcnn", bands=2, ratio=1, fusion="additive").eval()
    for net in (m.nlm, m.sr):
        for conv in (net.conv1, net.conv2, net.conv3):
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.zeros_(conv.bias)
    b = _batch(size=16, bands=2)
    with torch.no_grad():
        out = m(b)
    d1, d3 = (b["c2"] - b["c1"]).abs() + 1e-6, (b["c2"] - b["c3"]).abs() + 1e-6
    w = (1 / d1) / (1 / d1 + 1 / d3)
    expect = w * (b["f1"] + b["c2"] - b["c1"]) + (1 - w) * (b["f3"] + b["c2"] - b["c3"])
    # stage 1 fuses the identity-mapped coarse images into L2 = expect; stage 2 (identity SR)
    # sees S1 = F1, S3 = F3, so both additive predictions equal S2 = L2 whatever the weights
    torch.testing.assert_close(out, expect)


def test_temporal_weight_prefers_the_unchanged_side():
    m = create_model("stfdcnn", bands=1, ratio=1, fusion="hpm").eval()
    for net in (m.nlm, m.sr):
        for conv in (net.conv1, net.conv2, net.conv3):
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.zeros_(conv.bias)
    x = torch.full((1, 1, 8, 8), 0.2)
    b = {"f1": x.clone(), "c1": x.clone(), "c2": x.clone(), "f3": torch.full_like(x, 0.5), "c3": torch.full_like(x, 0.4)}
    b["f1"][..., 4:, :] = 0.3  # fine detail the coarse image does not show
    with torch.no_grad():
        out = m(b)
    # no coarse change between t1 and t2: the t1 side gets all the weight, F2 = F1
    torch.testing.assert_close(out, b["f1"], atol=1e-4, rtol=0)


def test_stages_train_their_own_network_and_forward_stays_fusion():
    torch.manual_seed(0)
    m = create_model("stfdcnn", bands=3, ratio=8)
    b = _batch(size=64, bands=3)
    target = b["c2"] * 0.9 + 0.02
    stages = m.stages()
    assert [s.name for s in stages] == ["nlm", "sr"]
    ids = [{id(p) for p in s.params} for s in stages]
    assert ids[0] == {id(p) for p in m.nlm.parameters()}
    assert ids[1] == {id(p) for p in m.sr.parameters()}
    m.eval()
    with torch.no_grad():
        before = m(b)
    for stage in stages:
        opt = torch.optim.SGD(stage.params, lr=0.5, momentum=0.9)
        losses = []
        for _ in range(15):
            opt.zero_grad()
            loss = stage.loss(b, target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], f"stage {stage.name} did not reduce its loss: {losses}"
        # after every stage forward() is the full fusion pipeline: a fine image of the input's
        # size, not the stage network's output (NLM output lives on the LSR grid)
        m.eval()
        with torch.no_grad():
            out = m(b)
        assert out.shape == b["f1"].shape and torch.isfinite(out).all()
        assert not torch.equal(out, before)
        m.train()
