"""EDCSTFN specifics: official parameter counts, two-reference weighting, staged training with a
frozen loss autoencoder, forward() always the fusion network, MS-SSIM sanity."""

from __future__ import annotations

import torch
from stfcat_zoo.edcstfn import ms_ssim

from stfcat.models import count_parameters, create_model, model_info


def _batch(size: int = 32, bands: int = 4, seed: int = 0, n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + torch.rand(n, bands, size, size, generator=g) * 0.4 for k in ("f1", "c1", "c2", "f3", "c3")}


def test_parameter_counts_equal_official_code():
    # theonegis/edcstfn: FusionNet 284,134 (master e4bbd14), AutoEncoder 481,734 and its encoder
    # 241,696 (branch autoencoder), all with NUM_BANDS = 6
    m = create_model("edcstfn", bands=6)
    assert count_parameters(m) == 284_134 == model_info("edcstfn").params
    assert count_parameters(m.autoencoder, trainable_only=False) == 481_734
    assert count_parameters(m.autoencoder.encoder, trainable_only=False) == 241_696
    assert not any(p.requires_grad for p in m.autoencoder.parameters())


def test_ms_ssim_bounds_and_order():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    assert torch.isclose(ms_ssim(x, x), torch.tensor(1.0), atol=1e-5)
    near = ms_ssim(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))
    far = ms_ssim(x, torch.rand(1, 3, 64, 64))
    assert far < near < 1.0


def test_two_reference_weighting_follows_residual_features():
    torch.manual_seed(0)
    m = create_model("edcstfn", bands=3, ratio=8).eval()
    b = _batch(size=24, bands=3)
    with torch.no_grad():
        out = m(b)
        p1, p3 = m.predict_each(b)
        # identical references -> identical weights -> the same as either single prediction
        same = dict(b, f3=b["f1"], c3=b["c1"])
        torch.testing.assert_close(m(same), m.predict_each(same)[0])
    assert out.shape == b["f1"].shape
    assert not torch.allclose(out, p1) and not torch.allclose(out, p3)


def test_stages_and_forward_is_fusion_output_after_each_stage():
    torch.manual_seed(0)
    m = create_model("edcstfn", bands=3, ratio=8)
    b = _batch(size=24, bands=3, n=1)
    target = b["c2"] * 0.8 + 0.05
    stages = m.stages()
    assert [s.name for s in stages] == ["autoencoder", "fusion"]
    assert {id(p) for p in stages[0].params} == {id(p) for p in m.autoencoder.parameters()}
    assert {id(p) for p in stages[1].params} == {id(p) for p in m.fusion_parameters()}
    for stage in stages:
        opt = torch.optim.Adam([p for p in stage.params if p.requires_grad], lr=1e-3)
        losses = []
        for _ in range(4):
            opt.zero_grad()
            loss = stage.loss(b, target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], f"{stage.name}: {losses}"
        m.eval()
        with torch.no_grad():
            out = m(b)
            ae_out = m.autoencoder(b["f1"])
            fused = m.decoder(m._features(b["f1"], b["c1"], b["c2"])[0])
        # the test-time output is the fusion network's, never the autoencoder's reconstruction
        assert out.shape == b["f1"].shape
        assert not torch.allclose(out, ae_out)
        w_same = dict(b, f3=b["f1"], c3=b["c1"])
        with torch.no_grad():
            torch.testing.assert_close(m(w_same), fused)
        m.train()
    # stage 2 froze the loss encoder: no gradient reaches it
    assert all(p.grad is None or not p.requires_grad for p in m.autoencoder.parameters())
    assert not any(p.requires_grad for p in m.autoencoder.parameters())


def test_trainable_count_is_the_fusion_net_again_after_prediction():
    m = create_model("edcstfn", bands=6)
    m.stages()  # stage 1's optimiser needs the autoencoder trainable
    assert count_parameters(m) == 284_134 + 481_734
    with torch.no_grad():
        m.eval()(_batch(size=16, bands=6))
    assert count_parameters(m) == 284_134


def test_one_reference_variant_is_the_same_network_on_one_pair():
    import torch

    from stfcat.models import count_parameters, create_model, model_info

    assert model_info("edcstfn-1ref").n_refs == 1 and model_info("edcstfn").n_refs == 2
    torch.manual_seed(0)
    one = create_model("edcstfn-1ref", bands=4).eval()
    two = create_model("edcstfn", bands=4).eval()
    two.load_state_dict(one.state_dict())
    assert count_parameters(create_model("edcstfn-1ref", bands=6)) == 284_134
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(1, 4, 32, 32, generator=g) for k in ("f1", "c1", "c2")}
    with torch.no_grad():
        assert torch.equal(one(batch), two(batch))  # without f3/c3 the 2-ref net is the 1-ref one


def test_quick_recipe_starts_at_the_fine_reference_and_full_recipe_as_published():
    # the quick budget's identity start: the untrained network already reproduces F1 (one pair) and
    # the mean of the references (two pairs, equal weights while the residual features are zero),
    # so the short budget is spent on the change, not on relearning F1 through six convolutions
    from stfcat.models import model_info

    recipe = model_info("edcstfn").recipe
    optim, args = recipe.for_budget(full=False)
    assert args["init"] == "identity" and optim.warmup_steps > 0 and recipe.select == "best"
    b = _batch(size=20, bands=6, n=1)
    one = {k: b[k] for k in ("f1", "c1", "c2")}
    torch.manual_seed(0)
    quick = create_model("edcstfn", bands=6, **args).eval()
    quick1 = create_model("edcstfn-1ref", bands=6, **args).eval()
    with torch.no_grad():
        torch.testing.assert_close(quick1(one), b["f1"])
        torch.testing.assert_close(quick(b), (b["f1"] + b["f3"]) / 2)
    # same parameters; the config rebuilds the quick model (checkpoints, stfcat fuse --weights)
    assert count_parameters(quick) == 284_134
    rebuilt = create_model("edcstfn", **quick.config())
    assert (rebuilt.init, rebuilt.pad, rebuilt.ae_share) == ("identity", "replicate", 0.1)
    assert [s.share for s in quick.stages()] == [0.1, 0.9]
    # the full recipe builds the published network: default init, which does not start at F1
    assert recipe.for_budget(full=True)[1] == {}
    paper = create_model("edcstfn-1ref", bands=6).eval()
    with torch.no_grad():
        assert (paper(one) - b["f1"]).abs().mean() > 0.05
    # the zeroed conv still learns: one step moves the residual features off zero
    quick1.train()
    opt = torch.optim.Adam(quick1.fusion_parameters(), lr=1e-3)
    loss = torch.nn.functional.mse_loss(quick1(one), b["c2"])
    loss.backward()
    opt.step()
    assert quick1.residual[-1].weight.abs().sum() > 0
