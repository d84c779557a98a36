"""Random training patches from a list of cases.

Each sample picks a case and a ``patch x patch`` position uniformly at random (seeded), and, with
``augment``, one of the 8 flips/rotations (the same for every image of the sample). Patches whose
valid fraction is below ``min_valid`` are redrawn (up to 20 times); invalid target pixels are then
filled like the inputs so a loss never sees NaN.

Scenes are cached in memory when all cases together fit in ``cache_bytes`` (default 1 GiB);
otherwise each patch is read as a window, so memory stays bounded on large scenes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .series import Case, fill_invalid


class PatchSampler:
    def __init__(
        self,
        cases: Sequence[Case],
        patch: int,
        batch: int,
        *,
        seed: int = 0,
        augment: bool = True,
        min_valid: float = 0.5,
        cache_bytes: int = 1 << 30,
    ) -> None:
        if not cases:
            raise ValueError("PatchSampler: 'cases' is empty (no training cases in this split?)")
        if batch < 1:
            raise ValueError(f"PatchSampler: batch must be >= 1, got {batch}")
        self.cases = list(cases)
        h, w = self.cases[0].series.shape
        if patch < 1 or patch > min(h, w):
            raise ValueError(f"PatchSampler: patch={patch} does not fit the {h}x{w} scene")
        keys = {tuple(sorted(("f1", "c1", "c2", "f3", "c3")[: 3 + 2 * (c.n_refs - 1)])) for c in self.cases}
        if len(keys) != 1:
            raise ValueError("PatchSampler: mix of 1- and 2-reference cases")
        if any(not c.has_target for c in self.cases):
            bad = next(c for c in self.cases if not c.has_target)
            raise ValueError(f"PatchSampler: case {bad.id} has no fine target image")
        self.patch, self.batch, self.augment, self.min_valid = (
            int(patch),
            int(batch),
            augment,
            float(min_valid),
        )
        self.rng = np.random.default_rng(seed)
        n_img = 3 + 2 * (self.cases[0].n_refs - 1) + 1
        bands = len(self.cases[0].series.bands)
        need = len(self.cases) * n_img * bands * h * w * 4
        self._cache: dict[int, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] | None = (
            {} if need <= cache_bytes else None
        )

    def _read(self, i: int, r: int, c: int):
        case = self.cases[i]
        p = self.patch
        if self._cache is not None:
            if i not in self._cache:
                self._cache[i] = case.read()  # type: ignore[assignment]
            inputs, target, valid = self._cache[i]
            sl = (slice(None), slice(r, r + p), slice(c, c + p))
            return {k: v[sl] for k, v in inputs.items()}, target[sl], valid[r : r + p, c : c + p]
        return case.read((c, r, p, p))

    def _one(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        h, w = self.cases[0].series.shape
        for _ in range(20):
            i = int(self.rng.integers(len(self.cases)))
            r = int(self.rng.integers(h - self.patch + 1))
            c = int(self.rng.integers(w - self.patch + 1))
            inputs, target, valid = self._read(i, r, c)
            if valid.mean() >= self.min_valid:
                break
        target = fill_invalid(target)
        if self.augment:
            k = int(self.rng.integers(4))
            flip = bool(self.rng.integers(2))

            def tf(a: np.ndarray) -> np.ndarray:
                a = np.rot90(a, k, axes=(1, 2))
                return a[:, :, ::-1] if flip else a

            inputs = {key: tf(v) for key, v in inputs.items()}
            target = tf(target)
        return inputs, target

    def sample(self):
        """One batch: ``(Batch of (N,B,p,p) tensors, target (N,B,p,p))``."""
        import torch

        items = [self._one() for _ in range(self.batch)]
        keys = items[0][0].keys()
        batch = {
            k: torch.from_numpy(np.ascontiguousarray(np.stack([it[0][k] for it in items]))) for k in keys
        }
        target = torch.from_numpy(np.ascontiguousarray(np.stack([it[1] for it in items])))
        return batch, target

    def __iter__(self) -> Iterator:
        while True:
            yield self.sample()
