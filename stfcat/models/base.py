"""The one interface every runnable fusion method implements.

Tensor contract (see also the conventions page):

* A *batch* is a ``dict[str, Tensor]`` with keys ``f1``, ``c1``, ``c2`` (one reference pair) and,
  for two-reference methods, ``f3``, ``c3``. Every tensor is ``(N, B, H, W)`` float32 surface
  reflectance (the dataset's scale factor already applied, so typically 0..1), and coarse images
  are already resampled onto the fine grid (``ratio`` tells a model how many fine pixels one
  coarse pixel spans, for models that work on the native coarse grid internally).
* ``forward(batch)`` returns the fine prediction at the target date, ``(N, B, H, W)``.
* Training is described by :class:`Stage` objects: the engine runs them in order. A stage either
  gives a ``loss(batch, target)`` (the engine does backward and the optimiser step) or a custom
  ``step(batch, target, optimizers)`` (GANs: the model does its own backward passes).
  At test time the engine always calls ``forward``: a staged model must return the fusion
  network's prediction there, never an auxiliary network's output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

Batch = dict[str, Tensor]


@dataclass
class OptimSpec:
    """Optimiser and learning-rate schedule, as published."""

    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["none", "step", "plateau", "cosine", "exponential"] = "none"
    scheduler_args: dict[str, Any] = field(default_factory=dict)
    schedule_unit: Literal["epoch", "step"] = "epoch"
    """``epoch``: the scheduler steps once per epoch (``step_size``, ``T_max`` in epochs);
    ``step``: once per optimiser step (``step_size``, ``T_max`` in optimiser steps)."""
    warmup_steps: int = 0
    """Linear warm-up: optimiser step ``t`` (0-based) uses ``lr * (t + 1) / warmup_steps`` for
    ``t < warmup_steps``, times the schedule's decay (cosine decay starts after the warm-up)."""


@dataclass
class Budget:
    """How long to train: epochs of ``steps_per_epoch`` random patches of ``patch`` fine pixels."""

    epochs: int
    patch: int
    batch: int
    steps_per_epoch: int = 50
    accum_steps: int = 1
    """Gradient accumulation: each optimiser step averages the gradients of ``accum_steps``
    batches of ``batch`` patches (effective batch ``batch * accum_steps``; plain-loss stages)."""


@dataclass
class Recipe:
    """Training recipe of a model: the paper's optimiser, a quick budget (the default of
    ``stfcat run``) and the paper's full budget (``stfcat run --full-recipe``)."""

    optim: OptimSpec
    quick: Budget
    paper: Budget
    notes: str = ""
    clip_grad_norm: float | None = None
    """Clip the global gradient norm to this before each optimiser step (after the average over ranks)."""
    ema_decay: float | None = None
    """Exponential moving average of the weights (``ema = d * ema + (1 - d) * w`` after every step);
    evaluation and the checkpoint's ``model_state`` then use the averaged weights."""
    amp: Literal["bf16", "fp16"] | None = None
    """Mixed precision of plain-loss stages on CUDA (fp16 with a gradient scaler); off on CPU/MPS."""
    select: Literal["last", "best"] = "last"
    """``best``: keep the weights of the epoch with the lowest validation score (when the run has
    a validation callable; never the test data)."""
    patience: int | None = None
    """Stop early after this many epochs without a lower validation score (needs validation)."""
    quick_optim: OptimSpec | None = None
    """Optimiser of the quick budget where the paper's cannot move the weights in it (``None``: the
    paper's). ``stfcat run --full-recipe`` always uses ``optim``."""
    quick_args: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of the quick budget (e.g. a residual start or a normalisation that
    works at small batch); the full recipe builds the model as the paper does."""
    quick_notes: str = ""
    """What the quick recipe changes from the paper, and why (shown on the site and in the note)."""

    def for_budget(self, full: bool) -> tuple[OptimSpec, dict[str, Any]]:
        """The optimiser and constructor arguments of the quick (``full=False``) or full budget."""
        if full:
            return self.optim, {}
        return self.quick_optim or self.optim, dict(self.quick_args)

    def quick_changes(self) -> list[str]:
        """One line per difference of the quick recipe from the paper's (empty: none)."""
        out = []
        if self.quick_optim is not None and self.quick_optim != self.optim:
            q, p = self.quick_optim, self.optim
            diff = [f"{k} {getattr(p, k)!r} -> {getattr(q, k)!r}" for k in
                    ("name", "lr", "weight_decay", "scheduler", "scheduler_args", "warmup_steps")
                    if getattr(p, k) != getattr(q, k)]
            out.append("optimiser: " + ", ".join(diff))
        if self.quick_args:
            out.append("model: " + ", ".join(f"{k}={v!r}" for k, v in self.quick_args.items()))
        if self.quick_notes:
            out.append(self.quick_notes)
        return out


@dataclass
class Stage:
    """One training stage. ``params`` defaults to all parameters of the model that require grad.

    ``share`` is the fraction of the epoch budget the stage gets. ``optimizers`` maps names to
    ``(params, OptimSpec)`` for custom steps (e.g. ``{"g": ..., "d": ...}``); plain stages use the
    recipe's optimiser on ``params``. ``continues=True`` keeps the previous stage's optimiser and
    scheduler (moments, step counts, learning rate): one optimisation whose loss changes, such as a
    term switched on from some epoch; it needs the same parameters and the recipe's optimiser.
    """

    name: str
    loss: Callable[[Batch, Tensor], Tensor] | None = None
    step: Callable[[Batch, Tensor, dict[str, torch.optim.Optimizer]], dict[str, float]] | None = None
    params: Iterable[nn.Parameter] | None = None
    optimizers: dict[str, tuple[Iterable[nn.Parameter], OptimSpec]] | None = None
    share: float = 1.0
    continues: bool = False

    def __post_init__(self) -> None:
        if (self.loss is None) == (self.step is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of 'loss' or 'step'")
        if self.continues and (self.optimizers is not None or self.params is not None):
            raise ValueError(f"stage {self.name!r}: 'continues' keeps the previous stage's optimiser; "
                             "it takes no 'optimizers' or 'params' of its own")


class FusionModel(nn.Module):
    """Base class of every registered method (deep, classical, trivial).

    Subclasses set ``n_refs`` (1 or 2) and ``trainable``, take ``bands`` and ``ratio`` in
    ``__init__`` and implement ``forward``. ``halo`` is the context (fine pixels) a prediction
    needs on each side for models without a finite ``receptive_field`` (then the tiled predictor
    crops ``halo`` and blends); ``receptive_field`` is the exact radius when there is one.
    """

    n_refs: ClassVar[int] = 1
    trainable: ClassVar[bool] = True
    halo: int = 16
    uses_ratio: ClassVar[bool] = True
    """False for methods whose output does not depend on ``ratio`` (``stfcat fuse`` then needs no
    ratio for coarse images already on the fine grid)."""
    receptive_field: int | None = None
    """Radius (fine pixels) of the inputs one output pixel depends on, derived from the architecture
    (kernel sizes, dilations, strides, windows), given tile origins on multiples of ``tile_align``.
    With it, tiles overlap by exactly ``2 * receptive_field`` and the tiled prediction equals the
    whole-scene one (tested for every registered model). ``None``: no finite bound (global
    statistics, attention over the tile, resampling that is not shift-equivariant); the predictor
    then crops ``halo`` and cross-fades, which is approximate."""
    min_size: int = 32
    """Smallest tile side (fine pixels) the model accepts, e.g. for pooling/downsampling depth."""
    tile_align: int = 1
    """Tile origins of whole-scene prediction fall on multiples of this (``ratio`` for methods
    that average ``ratio x ratio`` blocks, so no coarse pixel is split between tiles)."""
    tile_exact: ClassVar[bool] = True
    """Whether tiled whole-scene prediction equals one pass over the scene (to 1e-5; the contract
    tests check it). A method that uses image-level statistics or global attention sets False and
    declares ``tile_bound``."""
    tile_bound: ClassVar[float | None] = None
    """For models without a finite ``receptive_field`` or with ``tile_exact = False``: the largest RMSE
    (reflectance) between tiled and one-pass predictions the method accepts, on the contract tests'
    textured scene cut into 32 px tiles (the worst case; the engine's default tiles are larger)."""

    def __init__(self, bands: int = 6, ratio: int = 16) -> None:
        super().__init__()
        if bands < 1:
            raise ValueError(f"bands must be >= 1, got {bands}")
        if ratio < 1:
            raise ValueError(f"ratio must be >= 1, got {ratio}")
        self.bands = bands
        self.ratio = ratio

    def forward(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, batch: Batch, target: Tensor) -> Tensor:
        """Default training loss: MSE of the prediction."""
        return nn.functional.mse_loss(self(batch), target)

    def stages(self) -> list[Stage]:
        """Training stages in order; the default is one stage optimising ``loss``."""
        return [Stage("fusion", loss=self.loss)]

    def config(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild this model."""
        return {"bands": self.bands, "ratio": self.ratio}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


REQUIRED_KEYS = {1: ("f1", "c1", "c2"), 2: ("f1", "c1", "f3", "c3", "c2")}
