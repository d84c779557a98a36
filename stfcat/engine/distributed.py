"""Data-parallel training under ``torchrun``.

Semantics: the global batch of ``B`` patches is the same on every rank (the sampler is seeded by
the run seed, not the rank); rank ``r`` of ``W`` trains on its slice ``[r*B/W, (r+1)*B/W)`` and
gradients are averaged over ranks before each optimiser step. With a mean-reduced loss this makes
``W`` ranks x ``B/W`` patches compute the same update as 1 rank x ``B`` patches (up to float
summation order; batch-norm statistics are per rank, as with DistributedDataParallel).

Gradients are all-reduced here rather than by wrapping the model in ``DistributedDataParallel``:
stages call the model's own ``loss``/``step`` closures, which bypass a DDP wrapper's forward, and
GAN steps run several backward passes per optimiser. Averaging in the optimiser's ``step`` covers
both cases and is the same arithmetic as DDP's all-reduce.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str = "cpu") -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group (gloo on CPU,
    nccl on CUDA). Without them, a single-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def local_slice(n: int, info: DistInfo) -> slice:
    if n % info.world_size:
        raise ValueError(f"batch {n} is not divisible by the {info.world_size} ranks (--batch)")
    k = n // info.world_size
    return slice(info.rank * k, (info.rank + 1) * k)


def average_gradients(params, info: DistInfo) -> None:
    if not info.enabled:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    i = 0
    for g in grads:
        g.copy_(flat[i : i + g.numel()].view_as(g))
        i += g.numel()


def broadcast_parameters(model, info: DistInfo) -> None:
    if not info.enabled:
        return
    import torch.distributed as dist

    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


class SyncedOptimizer:
    """Wraps an optimiser so that ``step`` first averages its parameters' gradients over ranks."""

    def __init__(self, optimizer, info: DistInfo) -> None:
        self._opt = optimizer
        self._info = info

    def step(self, *args, **kwargs):
        average_gradients([p for g in self._opt.param_groups for p in g["params"]], self._info)
        return self._opt.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._opt, name)
