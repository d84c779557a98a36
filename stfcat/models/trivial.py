"""Trivial baselines, always reported next to every model (they need no training).

* ``copy-f1``: the fine reference unchanged (no temporal change at all).
* ``upsample-c2``: the coarse target on the fine grid (no spatial detail added).
* ``delta``: ``F1 + (C2 - C1)``, the coarse temporal change added to the fine reference.

All three use the first reference pair (t1) also for two-reference cases, so they stay the same
numbers whichever model they are compared with.
"""

from __future__ import annotations

from torch import Tensor

from .base import Batch, FusionModel
from .registry import register_model


class _Trivial(FusionModel):
    trainable = False
    halo = 0
    receptive_field = 0  # per-pixel arithmetic
    uses_ratio = False


@register_model("copy-f1", paper=None, family="trivial", params=0)
class CopyF1(_Trivial):
    """Fine reference F1 unchanged."""

    def forward(self, batch: Batch) -> Tensor:
        return batch["f1"].clone()


@register_model("upsample-c2", paper=None, family="trivial", params=0)
class UpsampleC2(_Trivial):
    """Coarse target C2 as resampled onto the fine grid."""

    def forward(self, batch: Batch) -> Tensor:
        return batch["c2"].clone()


@register_model("delta", paper=None, family="trivial", params=0)
class Delta(_Trivial):
    """F1 + (C2 - C1): the coarse change added to the fine reference."""

    def forward(self, batch: Batch) -> Tensor:
        return batch["f1"] + (batch["c2"] - batch["c1"])


TRIVIAL_BASELINES = ("copy-f1", "upsample-c2", "delta")
