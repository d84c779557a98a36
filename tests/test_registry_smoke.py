"""Smoke test of every registered model (timm style): forward with 3, 4 and 6 bands, output shape,
no NaN, determinism under a seed, backward reaches every parameter, canonical parameter count."""

from __future__ import annotations

import inspect

import pytest
import torch

from stfcat.models import count_parameters, create_model, list_models, model_info
from stfcat.models.base import REQUIRED_KEYS

RATIO = 8
# Every registered model (package, code/ zoo, STFCAT_PLUGINS modules) except the tiny engine models
# that test modules register for themselves, which would leak in depending on collection order
# (the same rule as tests/test_contract.py).
TEST_MODULES = ("_engine_models", "test_", "tests.", "conftest")
# Fusion models only: the batches below are image pairs (models of other tasks: tests/test_<task>.py).
MODELS = [m for m in list_models(task="fusion") if not model_info(m).cls.__module__.startswith(TEST_MODULES)]


def _create(name: str, bands: int):
    """The model with the smallest settings that keep its code paths: classical methods search a
    moving window of 31-51 px by default; 7 px still has neighbours and similar pixels to find,
    and makes their pure-python/numpy loops cheap on tiny inputs."""
    params = inspect.signature(model_info(name).cls.__init__).parameters
    small = {"window": 7} if "window" in params else {}
    return create_model(name, bands=bands, ratio=RATIO, **small)


def _size(model) -> int:
    # two coarse pixels across at least, and what the model declares it needs (min_size)
    return max(2 * RATIO, int(getattr(model, "min_size", 32)))


def _batch(n_refs: int, bands: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(1, bands, size, size, generator=g) * 0.5 for k in REQUIRED_KEYS[n_refs]}


def test_trivial_baselines_registered():
    for name in ("copy-f1", "upsample-c2", "delta"):
        assert name in MODELS
    assert len(MODELS) > 3, "no model from code/ is registered (is the stfcat_zoo package installed?)"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("bands", [3, 4, 6])
def test_forward_shape_finite_deterministic(name: str, bands: int):
    info = model_info(name)
    outs = []
    for _ in range(2):
        torch.manual_seed(1234)
        model = _create(name, bands).eval()
        size = _size(model)
        batch = _batch(info.n_refs, bands, size)
        with torch.no_grad():
            outs.append(model(batch))
    out = outs[0]
    assert out.shape == (1, bands, size, size), f"{name}: output {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"{name}: NaN/inf in output"
    assert torch.equal(outs[0], outs[1]), f"{name}: not deterministic under torch.manual_seed"


@pytest.mark.parametrize("name", [m for m in MODELS if model_info(m).trainable])
def test_backward_reaches_every_parameter(name: str):
    info = model_info(name)
    torch.manual_seed(0)
    model = _create(name, 4).train()
    size = _size(model)
    batch = _batch(info.n_refs, 4, size)
    target = torch.rand(1, 4, size, size) * 0.5
    params = [p for p in model.parameters() if p.requires_grad]
    assert params, f"{name} is trainable but has no trainable parameter"
    for stage in model.stages():
        if stage.loss is not None:
            stage.loss(batch, target).backward()
        else:  # custom step (GAN): give it throwaway optimisers over its parameter groups
            opts = {k: torch.optim.SGD(list(ps), lr=0.0) for k, (ps, _) in (stage.optimizers or {}).items()}
            stage.step(batch, target, opts)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradient in {bad[:5]}"


@pytest.mark.parametrize("name", [m for m in MODELS if model_info(m).params is not None])
def test_canonical_parameter_count(name: str):
    model = create_model(name, bands=6)
    assert count_parameters(model) == model_info(name).params
