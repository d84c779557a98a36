"""Optimisers and learning-rate schedulers from a model's :class:`~stfcat.models.OptimSpec`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

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


def make_scheduler(optimizer, spec: OptimSpec, epochs: int):
    """Schedulers step once per epoch (``plateau`` on the epoch's mean loss). ``cosine`` defaults
    ``T_max`` to the stage's epochs so a quick budget still anneals fully."""
    import torch.optim.lr_scheduler as S

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


def with_lr(spec: OptimSpec, lr: float | None) -> OptimSpec:
    return spec if lr is None else replace(spec, lr=lr)
