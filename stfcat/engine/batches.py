"""Sample sources of the training loop.

A sample source is any object with ``sample() -> (batch, target)`` (or an iterator of such
pairs); for exact resume it also has ``state_dict()``/``load_state_dict()``, or a numpy
``rng`` generator whose state is saved (as :class:`stfcat.data.PatchSampler`).
:class:`WorkerBatches` draws a source's batches in DataLoader worker processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def sampler_state(sampler) -> dict[str, Any]:
    """A sample source's state: its ``state_dict()``, or the numpy generator of a plain sampler."""
    if hasattr(sampler, "state_dict"):
        return sampler.state_dict()
    return {"rng": sampler.rng.bit_generator.state}


def load_sampler_state(sampler, state: dict[str, Any]) -> None:
    if hasattr(sampler, "load_state_dict"):
        sampler.load_state_dict(state)
    else:
        sampler.rng.bit_generator.state = state["rng"]


def next_batch(sampler):
    return sampler.sample() if hasattr(sampler, "sample") else next(sampler)


def _reseed(sampler, seed: int, index: int) -> None:
    if hasattr(sampler, "reseed"):
        sampler.reseed(seed, index)
    else:
        sampler.rng = np.random.default_rng([seed, index])


def _indexed_batches(sampler, seed: int, start: int):
    import torch.utils.data as tud

    class _Batches(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            wid, n = (info.id, info.num_workers) if info is not None else (0, 1)
            i = start + wid
            while True:  # worker w draws batches w, w+n, ...; the loader returns them in order
                _reseed(sampler, seed, i)
                yield sampler.sample()
                i += n

    return _Batches()


class WorkerBatches:
    """Draws a sampler's batches in ``num_workers`` DataLoader worker processes.

    Batch ``i`` of the run is drawn with a generator seeded by ``(seed, i)``, by worker
    ``i % num_workers``; the loader hands batches back in index order. So the stream is fixed by
    the seed (the same for any worker count >= 1, different from the in-process stream of
    ``num_workers=0``) and resuming needs only the number of batches consumed. The sampler needs a
    numpy ``rng`` attribute or a ``reseed(seed, index)`` method.
    """

    def __init__(self, sampler, num_workers: int, seed: int, *, pin_memory: bool = False) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.sampler, self.num_workers, self.seed, self.pin_memory = sampler, num_workers, seed, pin_memory
        self.consumed = 0
        self._it = None

    def sample(self):
        if self._it is None:
            import torch.utils.data as tud

            loader = tud.DataLoader(_indexed_batches(self.sampler, self.seed, self.consumed), batch_size=None,
                                    num_workers=self.num_workers, pin_memory=self.pin_memory)
            self._it = iter(loader)
        batch = next(self._it)
        self.consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "num_workers": self.num_workers, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.consumed = int(state["consumed"])

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
