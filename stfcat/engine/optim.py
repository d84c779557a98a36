"""Optimisers and learning-rate schedulers from a model's :class:`~stfcat.models.OptimSpec`.

Two kinds of scheduler:

* the published per-epoch schedulers (``schedule_unit="epoch"`` without warm-up): torch's own
  ``StepLR``/``CosineAnnealingLR``/... stepped once per epoch, exactly as before;
* per-iteration schedules (``schedule_unit="step"`` or ``warmup_steps > 0``): one ``LambdaLR``
  stepped after every optimiser step, whose factor is computed in closed form from the number of
  steps taken (so resuming only needs its step count). Such a scheduler has ``per_step = True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from stfcat.models.base import OptimSpec


def make_optimizer(params: Iterable, spec: OptimSpec, lr: float | None = None):
    import torch

    params = [p for p in params if p.requires_grad]
    lr = spec.lr if lr is None else lr
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=spec.betas, weight_decay=spec.weight_decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=spec.betas, weight_decay=spec.weight_decay)
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    raise ValueError(f"OptimSpec.name {spec.name!r} is not supported")


def make_scheduler(optimizer, spec: OptimSpec, epochs: int, steps_per_epoch: int | None = None):
    """Per-epoch schedulers step once per epoch (``plateau`` on the epoch's mean loss); ``cosine``
    defaults ``T_max`` to the stage's epochs (or steps) so a quick budget still anneals fully.
    ``steps_per_epoch`` is needed by per-iteration schedules."""
    import torch.optim.lr_scheduler as S

    if spec.schedule_unit == "step" or spec.warmup_steps > 0:
        if steps_per_epoch is None:
            raise ValueError("per-iteration schedules need steps_per_epoch")
        sched = S.LambdaLR(optimizer, iteration_factor(spec, epochs, steps_per_epoch, optimizer.param_groups[0]["lr"]))
        sched.per_step = True
        return sched
    args = dict(spec.scheduler_args)
    if spec.scheduler == "none":
        return None
    if spec.scheduler == "step":
        return S.StepLR(optimizer, step_size=args.pop("step_size", 30), **args)
    if spec.scheduler == "plateau":
        return S.ReduceLROnPlateau(optimizer, **args)
    if spec.scheduler == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=args.pop("T_max", max(1, epochs)), **args)
    if spec.scheduler == "exponential":
        return S.ExponentialLR(optimizer, gamma=args.pop("gamma", 0.95), **args)
    raise ValueError(f"OptimSpec.scheduler {spec.scheduler!r} is not supported")


def iteration_factor(spec: OptimSpec, epochs: int, steps_per_epoch: int, base_lr: float) -> Callable[[int], float]:
    """``t -> lr factor`` of optimiser step ``t`` (0-based): linear warm-up times the decay."""
    args = dict(spec.scheduler_args)
    if spec.scheduler == "plateau":
        raise ValueError("OptimSpec: the 'plateau' scheduler reacts to epoch losses; it has no "
                         "per-iteration form (schedule_unit='step' or warmup_steps)")
    if spec.scheduler not in ("none", "step", "cosine", "exponential"):
        raise ValueError(f"OptimSpec.scheduler {spec.scheduler!r} is not supported")
    per_step = spec.schedule_unit == "step"
    total = max(1, epochs * steps_per_epoch if per_step else epochs)
    warm = int(spec.warmup_steps)
    eta = float(args.get("eta_min", 0.0)) / base_lr if base_lr else 0.0

    def decay(t: int) -> float:
        u = t if per_step else t // steps_per_epoch  # the schedule's clock: steps or epochs
        if spec.scheduler == "step":
            return float(args.get("gamma", 0.1)) ** (u // int(args.get("step_size", 30)))
        if spec.scheduler == "exponential":
            return float(args.get("gamma", 0.95)) ** u
        if spec.scheduler == "cosine":
            t_max = int(args.get("T_max", total))
            start = warm if per_step else 0  # per-step cosine anneals over the steps after warm-up
            frac = min(1.0, max(0.0, (u - start) / max(1, t_max - start)))
            return eta + (1.0 - eta) * 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0

    def factor(t: int) -> float:
        w = min(1.0, (t + 1) / warm) if warm > 0 else 1.0
        return w * decay(t)

    return factor


class EMA:
    """Exponential moving average of a model's floating-point state (integer buffers are copied)."""

    def __init__(self, model, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"Recipe.ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model) -> None:
        import torch

        with torch.no_grad():
            for k, v in model.state_dict().items():
                s = self.shadow[k]
                if s.dtype.is_floating_point:
                    s.mul_(self.decay).add_(v.detach().to(s.dtype), alpha=1.0 - self.decay)
                else:
                    s.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)


def with_lr(spec: OptimSpec, lr: float | None) -> OptimSpec:
    return spec if lr is None else replace(spec, lr=lr)
