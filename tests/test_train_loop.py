"""The training loop on a tiny linear model: per-iteration schedules with warm-up, gradient
clipping, EMA, gradient accumulation, mixed precision (off on CPU), validation selection and early
stopping, DataLoader workers, and exact resume of all of it through TrainState."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from stfcat.engine.train import Hook, TrainingInterrupted, train_model
from stfcat.models import Budget, FusionModel, OptimSpec, Recipe

BANDS, P = 2, 4


class Linear(FusionModel):
    """y = W f1 (a 1x1 convolution): the loss is quadratic, so accumulation is exact arithmetic."""

    halo = 0

    def __init__(self) -> None:
        super().__init__(BANDS, 1)
        self.conv = nn.Conv2d(BANDS, BANDS, 1)

    def forward(self, b):
        return self.conv(b["f1"])


class Synthetic:
    """Batches of random f1 and target 2*f1 + 0.1, drawn item by item from a seeded generator."""

    def __init__(self, batch: int, seed: int = 0) -> None:
        self.batch, self.rng = batch, np.random.default_rng(seed)

    def sample(self):
        items = [self.rng.standard_normal((BANDS, P, P)).astype(np.float32) for _ in range(self.batch)]
        f1 = torch.from_numpy(np.stack(items))
        zeros = torch.zeros_like(f1)
        return {"f1": f1, "c1": zeros, "c2": zeros}, 2 * f1 + 0.1


def _recipe(**kw) -> Recipe:
    optim = kw.pop("optim", OptimSpec(name="sgd", lr=0.05, momentum=0.0))
    b = Budget(epochs=2, patch=P, batch=4, steps_per_epoch=3)
    return Recipe(optim, quick=b, paper=b, **kw)


def _train(recipe: Recipe | None = None, *, batch: int = 4, epochs: int = 2, steps: int = 3, accum: int = 1,
           seed: int = 0, **kw):
    torch.manual_seed(0)
    model = Linear()
    recipe = recipe or _recipe()
    budget = Budget(epochs=epochs, patch=P, batch=batch, steps_per_epoch=steps, accum_steps=accum)
    res = train_model(model, kw.pop("data", None) or Synthetic(batch, seed), recipe=recipe, budget=budget,
                      progress=False, **kw)
    return model, res


class Record(Hook):
    """Learning rate used by each step and the raw weights after it."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.epoch_weights: list[dict[str, torch.Tensor]] = []
        self._lr = None

    def on_epoch_start(self, loop):
        self._lr = loop.opts["main"].param_groups[0]["lr"]

    def on_step_end(self, loop, logs):
        self.lrs.append(self._lr)
        self._lr = loop.opts["main"].param_groups[0]["lr"]  # the lr the next step will use
        self.weights.append({k: v.detach().clone() for k, v in loop.model.state_dict().items()})

    def on_epoch_end(self, loop, entry):
        self.epoch_weights.append(loop.eval_state())


class StopAfterSteps(Hook):
    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def on_step_end(self, loop, logs):
        self.seen += 1
        if self.seen == self.n:
            loop.request_stop()


def test_linear_warmup_then_cosine_per_step():
    spec = OptimSpec(name="sgd", lr=0.1, momentum=0.0, scheduler="cosine", schedule_unit="step", warmup_steps=3)
    rec = Record()
    _train(_recipe(optim=spec), epochs=2, steps=4, hooks=[rec])  # 8 steps: 3 warm-up, 5 cosine
    want = [0.1 * (t + 1) / 3 for t in range(3)] + [0.1 * 0.5 * (1 + math.cos(math.pi * (t - 3) / 5))
                                                    for t in range(3, 8)]
    assert rec.lrs == pytest.approx(want, rel=1e-12)


def test_warmup_with_an_epoch_step_schedule():
    spec = OptimSpec(name="sgd", lr=0.1, momentum=0.0, scheduler="step", warmup_steps=2,
                     scheduler_args={"step_size": 1, "gamma": 0.5})
    rec = Record()
    _train(_recipe(optim=spec), epochs=2, steps=3, hooks=[rec])
    assert rec.lrs == pytest.approx([0.05, 0.1, 0.1, 0.05, 0.05, 0.05], rel=1e-12)
    with pytest.raises(ValueError, match="plateau"):
        _train(_recipe(optim=OptimSpec(scheduler="plateau", warmup_steps=2)))


def test_gradient_clipping_bounds_the_update():
    """SGD without momentum moves the weights by lr * clipped gradient: norm exactly lr * bound."""
    rec = Record()
    torch.manual_seed(0)
    w0 = {k: v.clone() for k, v in Linear().state_dict().items()}
    _train(_recipe(clip_grad_norm=0.01), epochs=1, steps=2, hooks=[rec])
    prev = w0
    for w in rec.weights:
        step = torch.cat([(w[k] - prev[k]).flatten() for k in w])
        assert float(step.norm()) == pytest.approx(0.05 * 0.01, rel=1e-4)
        prev = w
    _, free = _train(epochs=1, steps=2)  # unclipped, the gradient is far larger than the bound
    assert free.history[0]["loss"] > 1.0


def test_ema_is_the_hand_computed_average_and_is_what_evaluation_uses(tmp_path):
    rec = Record()
    torch.manual_seed(0)
    ema = {k: v.clone() for k, v in Linear().state_dict().items()}
    model, _ = _train(_recipe(ema_decay=0.9), epochs=2, steps=3, hooks=[rec], checkpoint=tmp_path / "c.pt")
    for w in rec.weights:
        ema = {k: 0.9 * ema[k] + 0.1 * w[k] for k in ema}
    last_raw = rec.weights[-1]
    for k in ema:
        torch.testing.assert_close(model.state_dict()[k], ema[k], rtol=0, atol=1e-6)
        assert not torch.allclose(ema[k], last_raw[k])
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    for k in ema:
        torch.testing.assert_close(ck["model_state"][k], ema[k], rtol=0, atol=1e-6)
        assert torch.equal(ck["train"]["raw_model_state"][k], last_raw[k])


def test_accumulating_two_batches_equals_one_double_batch():
    spec = OptimSpec(name="adam", lr=0.01)
    a, ra = _train(_recipe(optim=spec), batch=2, accum=2)
    b, rb = _train(_recipe(optim=spec), batch=4, accum=1)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=1e-6)
    assert ra.history[-1]["loss"] == pytest.approx(rb.history[-1]["loss"], abs=1e-6)
    c, _ = _train(_recipe(optim=spec), batch=2, accum=1)  # without accumulation: another result
    assert not torch.allclose(c.conv.weight, a.conv.weight, atol=1e-4)


def test_amp_is_off_on_cpu_with_a_note(capsys):
    a, _ = _train(_recipe(amp="fp16"))
    assert "mixed precision is for CUDA" in capsys.readouterr().err
    b, _ = _train(_recipe())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_validation_selects_the_best_epoch_and_stops_early():
    scores = iter([3.0, 1.0, 2.0, 4.0])
    rec = Record()
    model, res = _train(_recipe(select="best"), epochs=4, steps=2, hooks=[rec], validate=lambda m: next(scores))
    assert [h["val"] for h in res.history] == [3.0, 1.0, 2.0, 4.0] and res.best == {"epoch": 2, "score": 1.0}
    for k, v in model.state_dict().items():
        assert torch.equal(v, rec.epoch_weights[1][k])
    scores = iter([1.0, 2.0, 2.5, 0.5])
    _, res = _train(_recipe(patience=2), epochs=4, steps=2, validate=lambda m: next(scores))
    assert res.stopped_early and len(res.history) == 3  # epochs 2 and 3 did not improve on epoch 1
    _, res = _train(_recipe(select="best"), epochs=2, steps=2)  # no validation data: last epoch, said so
    assert res.best is None and len(res.history) == 2


def test_dataloader_workers_give_the_same_stream_for_any_count():
    a, _ = _train(num_workers=1)
    b, _ = _train(num_workers=2)
    c, _ = _train(num_workers=0)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.conv.weight, c.conv.weight)  # in-process sampling is its own stream


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_restores_every_piece_of_state(tmp_path, workers):
    """Interrupted mid-epoch and resumed == uninterrupted, bit for bit, with a per-step schedule,
    EMA, accumulation, clipping, validation selection and (optionally) loader workers."""
    spec = OptimSpec(name="adam", lr=0.02, scheduler="cosine", schedule_unit="step", warmup_steps=2)
    recipe = _recipe(optim=spec, ema_decay=0.8, clip_grad_norm=1.0, select="best")

    def val(m):
        return float(m.conv.weight.sum() ** 2)

    kw = dict(epochs=3, steps=3, accum=2, batch=2, validate=val, num_workers=workers, record={"model_id": "linear"})
    full, rfull = _train(recipe, checkpoint=tmp_path / "full.pt", **kw)
    with pytest.raises(TrainingInterrupted):
        _train(recipe, checkpoint=tmp_path / "part.pt", hooks=[StopAfterSteps(5)], **kw)
    ck = torch.load(tmp_path / "part.pt", weights_only=True)["train"]
    assert ck["pos"] == {"stage": 0, "epoch": 1, "step": 2} and not ck["done"]
    part, rpart = _train(recipe, checkpoint=tmp_path / "part.pt", resume=True, **kw)
    assert rpart.resumed and rpart.history == rfull.history and rpart.best == rfull.best
    for k, v in full.state_dict().items():
        assert torch.equal(v, part.state_dict()[k]), k


def test_mixed_precision_path_with_gradient_scaler(monkeypatch, tmp_path):
    """The CUDA code path (autocast + GradScaler: scale, unscale, clip, step) exercised on CPU with
    bf16 autocast and a CPU scaler: it trains close to float32 and the scaler is checkpointed."""
    import stfcat.engine.train as T

    monkeypatch.setattr(T, "_amp_setup", lambda amp, device: (torch.bfloat16, torch.amp.GradScaler("cpu")))
    a, ra = _train(_recipe(amp="fp16", clip_grad_norm=10.0), checkpoint=tmp_path / "a.pt",
                   record={"model_id": "linear"})
    monkeypatch.undo()
    b, rb = _train(_recipe(clip_grad_norm=10.0))
    assert not torch.equal(a.conv.weight, b.conv.weight)  # bf16 forward: not the float32 arithmetic
    torch.testing.assert_close(a.conv.weight, b.conv.weight, rtol=0.05, atol=0.02)
    assert ra.history[-1]["loss"] < ra.history[0]["loss"]
    assert torch.load(tmp_path / "a.pt", weights_only=True)["train"]["scaler"]["scale"] > 0
