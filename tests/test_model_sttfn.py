"""STTFN specifics: two direction-specific CNNs (forward from t1, backward from t3), the
spatio-temporal-consistency weighting of their predictions, and the derived parameter count."""

from __future__ import annotations

import torch
from stfcat_zoo.sttfn import stc_weights

from stfcat.models import count_parameters, create_model, model_info


def _batch(size: int = 32, bands: int = 2, n: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + 0.4 * torch.rand(n, bands, size, size, generator=g) for k in ("f1", "c1", "c2", "f3", "c3")}


def _per_direction(b: int) -> int:
    return (3 * b * 32 * (9 + 25 + 49) + 3 * 32) + (96 * 64 * 9 + 64) + (64 * 32 * 9 + 32) + (32 * b * 9 + b)


def test_parameter_count_two_directions():
    m = create_model("sttfn", bands=6)
    assert _per_direction(6) == 123_462
    assert count_parameters(m.forward_net) == count_parameters(m.backward_net) == _per_direction(6)
    assert count_parameters(m) == 2 * _per_direction(6) == model_info("sttfn").params
    assert count_parameters(create_model("sttfn", bands=1)) == 2 * _per_direction(1)  # the paper's 1-band LST
    assert model_info("sttfn").n_refs == 2


def test_stc_weights_sum_to_one_and_prefer_the_consistent_reference():
    b = _batch(bands=3)
    w1, w3 = stc_weights(b["c1"], b["c2"], b["c3"], window=4)
    torch.testing.assert_close(w1 + w3, torch.ones_like(w1))
    # t1 agrees with the target everywhere: it must dominate
    w1, w3 = stc_weights(b["c2"].clone(), b["c2"], b["c3"], window=4)
    assert (w1 > 0.99).all()
    # local window: a change confined to one 4x4 block only moves the weights near that block
    c3 = b["c2"].clone()
    c3[..., :4, :4] += 0.3
    w1, _ = stc_weights(b["c1"], b["c2"], c3, window=4)
    w1_ref, _ = stc_weights(b["c1"], b["c2"], b["c2"].clone(), window=4)
    assert not torch.allclose(w1[..., :4, :4], w1_ref[..., :4, :4])
    torch.testing.assert_close(w1[..., 12:, 12:], w1_ref[..., 12:, 12:])


def test_forward_is_the_stc_weighted_merge_of_the_two_directions():
    m = create_model("sttfn", bands=2, ratio=4).eval()
    b = _batch(bands=2)
    with torch.no_grad():
        p1, p3 = m.predictions(b)
        w1, w3 = stc_weights(b["c1"], b["c2"], b["c3"], 4)
        torch.testing.assert_close(m(b), w1 * p1 + w3 * p3)
    # forward net reads only the t1 pair, backward net only the t3 pair
    b2 = dict(b, f3=b["f3"] + 0.2, c3=b["c3"] + 0.1)
    with torch.no_grad():
        q1, q3 = m.predictions(b2)
    torch.testing.assert_close(q1, p1)
    assert not torch.allclose(q3, p3)


def test_zero_nets_reduce_to_weighted_references_and_training_reduces_loss():
    torch.manual_seed(0)
    m = create_model("sttfn", bands=2, ratio=4)
    for net in (m.forward_net, m.backward_net):
        torch.nn.init.zeros_(net.fuse[-1].weight)
        torch.nn.init.zeros_(net.fuse[-1].bias)
    b = _batch(size=16, bands=2, n=2)
    with torch.no_grad():
        w1, w3 = stc_weights(b["c1"], b["c2"], b["c3"], 4)
        torch.testing.assert_close(m(b), w1 * b["f1"] + w3 * b["f3"])
    target = b["f1"] + (b["c2"] - b["c1"])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = None
    for _ in range(6):
        opt.zero_grad()
        loss = m.loss(b, target)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first
