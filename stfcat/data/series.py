"""Pair series and cases: the API the runner and the models use.

A :class:`PairSeries` is one dataset read through its manifest: a fine grid, a list of dates
with a fine and/or a coarse image, bands, scale and a train/validation/test split (by dates; a
spatial split by regions is declared in ``split.spatial``, see :mod:`stfcat.data.splits`). A :class:`Case` is one
fusion problem: predict the fine image at ``target_date`` from the coarse image at that date
and one or two reference pairs.

Case building (``PairSeries.cases``)
------------------------------------
* ``split="test"``: every test date that has a coarse image is a target. ``n_refs=1``: the
  reference is the nearest *earlier* date with a complete pair (any date, train or test; the
  nearest later one when no earlier exists). ``n_refs=2``: the nearest earlier and the nearest
  later complete pairs; targets without both are skipped. Targets without a fine image still give
  a case (``target`` is None: prediction only).
* ``split="val"``: every validation date with a fine image is a target; references (same rules
  as test) come from train and validation dates only, so no test image is seen before testing.
  Recipes may select a checkpoint or stop early on validation cases; test is scored once.
* ``split="train"``: only train dates are used, as targets and as references. ``n_refs=1``:
  consecutive complete pairs in both directions (t_i -> t_i+1 and t_i+1 -> t_i). ``n_refs=2``:
  each inner train date with its two train neighbours.
* When a manifest has no split, the last date with a fine image is the test date and all
  earlier dates are train dates.
* Another split is selected with :meth:`PairSeries.with_split` (e.g. a paper's own split).

Invalid pixels in the inputs returned by :meth:`Case.read` are filled with the band mean of the
valid pixels of that image in the window (0 when none) so models never see NaN; the valid mask
(valid in every input and the target) says which pixels a metric may use.
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, ManifestError, NotFetchedError
from .manifest import MANIFEST_NAME, ImageEntry, Manifest, read_manifest
from .readers import WindowLike, as_window, read_reflectance, read_resampled


def _days(a: str, b: str) -> int:
    return abs((_dt.date.fromisoformat(a) - _dt.date.fromisoformat(b)).days)


def fill_invalid(image: np.ndarray) -> np.ndarray:
    """Replace NaN by the band mean of the valid pixels (0 for an all-invalid band)."""
    out = image.copy()
    bad = ~np.isfinite(out)
    if bad.any():
        for b in range(out.shape[0]):
            m = bad[b]
            if m.any():
                valid = out[b][~m]
                out[b][m] = float(valid.mean()) if valid.size else 0.0
    return out


class PairSeries:
    """A fine/coarse image series described by a manifest (see :mod:`stfcat.data.manifest`)."""

    def __init__(self, manifest: Manifest, root: Path) -> None:
        self.manifest = manifest
        self.root = Path(root)
        self.name: str = manifest.name
        self.bands: list[str] = list(manifest.bands)
        self.scale_factor: float = manifest.scale_factor
        self.ratio: int = int(manifest.ratio) if manifest.ratio else 1
        self.fine_resolution: float = float(manifest.fine_resolution or 0.0)
        self.coarse_resolution: float = float(
            manifest.coarse_resolution or (self.fine_resolution * self.ratio if self.fine_resolution else 0.0)
        )
        self.dates: list[str] = manifest.dates
        self.shape: tuple[int, int] = (int(manifest.shape[0]), int(manifest.shape[1]))
        self.profile: dict[str, Any] = {
            "crs": manifest.crs,
            "transform": tuple(manifest.transform) if manifest.transform else None,
            "height": self.shape[0],
            "width": self.shape[1],
            "count": len(self.bands),
        }
        self._pairs = {p.date: p for p in manifest.pairs}
        self.split: dict[str, list[str]] = self._default_split()
        self.spatial = manifest.split.spatial  # a SpatialSplit declaration, or None
        # a cropped view (see crop) reads the rectangle at _origin of the _full_shape grid
        self._origin: tuple[int, int] = (0, 0)
        self._full_shape: tuple[int, int] = self.shape

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: Path) -> PairSeries:
        folder = Path(folder)
        return cls(read_manifest(folder), folder)

    def _default_split(self) -> dict[str, list[str]]:
        s = self.manifest.split
        if s.train or s.test:
            return {"train": sorted(s.train), "val": sorted(s.val), "test": sorted(s.test)}
        with_fine = [d for d in self.dates if self._pairs[d].fine is not None]
        if not with_fine:
            return {"train": [], "val": [], "test": []}
        return {"train": [d for d in with_fine[:-1]], "val": [], "test": [with_fine[-1]]}

    def with_split(self, train: list[str], test: list[str], val: list[str] | None = None) -> PairSeries:
        """The same series with another split (the manifest's, from the dataset's YAML, is the default).

        Every date must be in the manifest; a date may be in one part only."""
        train, test, val = sorted(train), sorted(test), sorted(val or [])
        for key, dates in (("train", train), ("val", val), ("test", test)):
            unknown = [d for d in dates if d not in self._pairs]
            if unknown:
                raise DataError(
                    f"with_split({key}=...): dates {', '.join(unknown)} are not in {self.root / MANIFEST_NAME} "
                    f"(dates: {', '.join(self.dates)})"
                )
        for (ka, a), (kb, b) in ((("train", train), ("test", test)), (("train", train), ("val", val)),
                                 (("val", val), ("test", test))):
            both = sorted(set(a) & set(b))
            if both:
                raise DataError(f"with_split: dates {', '.join(both)} are both {ka} and {kb}")
        other = copy.copy(self)
        other.split = {"train": train, "val": val, "test": test}
        return other

    def crop(self, rect: tuple[int, int, int, int]) -> PairSeries:
        """A view of the rectangle ``(row0, row1, col0, col1)`` (end excluded) of this series:
        same dates and files, ``shape`` the rectangle's, windows relative to its corner. Used for
        the training region of a spatial split (:mod:`stfcat.data.splits`)."""
        r0, r1, c0, c1 = (int(v) for v in rect)
        if not (0 <= r0 < r1 <= self.shape[0] and 0 <= c0 < c1 <= self.shape[1]):
            raise DataError(f"crop {rect!r} is outside the {self.shape[0]}x{self.shape[1]} grid of {self.name}")
        other = copy.copy(self)
        other._origin = (self._origin[0] + r0, self._origin[1] + c0)
        other.shape = (r1 - r0, c1 - c0)
        tf = self.profile.get("transform")
        if tf is not None:  # the affine of the crop's upper-left corner
            a, b, c, d, e, f = tf[:6]
            tf = (a, b, c + a * c0 + b * r0, d, e, f + d * c0 + e * r0)
        other.profile = {**self.profile, "transform": tf, "height": other.shape[0], "width": other.shape[1]}
        return other

    @property
    def origin(self) -> tuple[int, int]:
        """(row, col) of this view's upper-left pixel on the files' fine grid ((0, 0) unless cropped)."""
        return self._origin

    def _file_window(self, window: WindowLike | None):
        from rasterio.windows import Window

        win = as_window(window, self.shape)
        if self._origin == (0, 0):
            return win
        return Window(win.col_off + self._origin[1], win.row_off + self._origin[0], win.width, win.height)

    def __repr__(self) -> str:
        return (
            f"PairSeries({self.name!r}, {len(self.dates)} dates, {len(self.bands)} bands, "
            f"{self.shape[0]}x{self.shape[1]}, ratio {self.ratio})"
        )

    # -- facts --------------------------------------------------------------------------------
    def has_fine(self, date: str) -> bool:
        return date in self._pairs and self._pairs[date].fine is not None

    def has_coarse(self, date: str) -> bool:
        return date in self._pairs and self._pairs[date].coarse is not None

    def is_pair(self, date: str) -> bool:
        return self.has_fine(date) and self.has_coarse(date)

    def path(self, date: str, role: str) -> Path:
        entry = self._entry(date, role)
        return self.root / entry.path

    def _entry(self, date: str, role: str) -> ImageEntry:
        if date not in self._pairs:
            raise DataError(
                f"date {date!r} is not in {self.root / MANIFEST_NAME} (dates: {', '.join(self.dates)})"
            )
        entry = getattr(self._pairs[date], role)
        if entry is None:
            have = [d for d in self.dates if getattr(self._pairs[d], role) is not None]
            raise DataError(
                f"date {date}: no {role} image in {self.root / MANIFEST_NAME} "
                f"(dates with a {role} image: {', '.join(have) or 'none'})"
            )
        return entry

    # -- reading ------------------------------------------------------------------------------
    def _scale(self, entry: ImageEntry) -> float:
        return entry.scale_factor if entry.scale_factor is not None else self.scale_factor

    def _nodata(self, entry: ImageEntry) -> float | None:
        return entry.nodata if entry.nodata is not None else self.manifest.nodata

    def read_fine(self, date: str, window: WindowLike | None = None) -> np.ndarray:
        """Fine image ``(B, h, w)`` float32 reflectance, NaN = invalid."""
        entry = self._entry(date, "fine")
        return read_reflectance(
            self.root / entry.path,
            scale_factor=self._scale(entry),
            nodata=self._nodata(entry),
            bands=entry.bands,
            n_bands=len(self.bands),
            window=self._file_window(window),
            expect_shape=self._full_shape,
        )

    def read_coarse(self, date: str, window: WindowLike | None = None) -> np.ndarray:
        """Coarse image on the fine grid ``(B, h, w)`` float32 reflectance, NaN = invalid."""
        entry = self._entry(date, "coarse")
        win = self._file_window(window)
        if entry.grid == "fine":
            return read_reflectance(
                self.root / entry.path,
                scale_factor=self._scale(entry),
                nodata=self._nodata(entry),
                bands=entry.bands,
                n_bands=len(self.bands),
                window=win,
                expect_shape=self._full_shape,
            )
        return read_resampled(
            self.root / entry.path,
            scale_factor=self._scale(entry),
            nodata=self._nodata(entry),
            bands=entry.bands,
            n_bands=len(self.bands),
            window=win,
            fine_shape=self._full_shape,
            fine_crs=self.manifest.crs,
            fine_transform=self.manifest.transform,
            ratio=self.manifest.ratio,
        )

    # -- cases --------------------------------------------------------------------------------
    def cases(self, n_refs: int, split: str = "test", *, kind: str = "temporal",
              receptive_field: int | None = None) -> list[Case]:
        """Fusion cases of ``split`` ("train", "val" or "test") with ``n_refs`` (1 or 2) reference
        pairs. ``kind="spatial"`` gives the cases of the declared spatial split
        (:func:`stfcat.data.splits.spatial_split_cases`; training and validation regions need the
        model's ``receptive_field``)."""
        if n_refs not in (1, 2):
            raise ValueError(f"n_refs must be 1 or 2, got {n_refs!r}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if kind == "spatial":
            from .splits import spatial_split_cases

            return spatial_split_cases(self, n_refs, split, receptive_field)
        if kind != "temporal":
            raise ValueError(f"kind must be 'temporal' or 'spatial', got {kind!r}")
        out: list[Case] = []
        if split == "train":
            train = [d for d in self.dates if d in set(self.split["train"]) and self.is_pair(d)]
            if n_refs == 1:
                for a, b in zip(train, train[1:], strict=False):
                    out.append(Case(self, b, (a,)))
                    out.append(Case(self, a, (b,)))
            else:
                for a, t, b in zip(train, train[1:], train[2:], strict=False):
                    out.append(Case(self, t, (a, b)))
            return out
        if split == "val":
            # references from train and validation dates only: a test image is never seen before the test
            seen = set(self.split["train"]) | set(self.split.get("val", []))
            pairs = [d for d in self.dates if d in seen and self.is_pair(d)]
            targets = [d for d in self.split.get("val", []) if self.has_fine(d)]
        else:
            pairs = [d for d in self.dates if self.is_pair(d)]
            targets = self.split["test"]
        for t in targets:
            if not self.has_coarse(t):
                continue
            before = [d for d in pairs if d < t]
            after = [d for d in pairs if d > t]
            if n_refs == 1:
                if before:
                    out.append(Case(self, t, (before[-1],)))
                elif after:
                    out.append(Case(self, t, (after[0],)))
            elif before and after:
                out.append(Case(self, t, (before[-1], after[0])))
        return out


@dataclass
class Case:
    """One fusion problem: ``ref_dates`` (1 or 2, earlier first) -> ``target_date``.

    ``region`` ``(row0, row1, col0, col1)`` restricts the valid mask (what a metric may use) to a
    rectangle of the scene: the validation or test region of a spatial split."""

    series: PairSeries
    target_date: str
    ref_dates: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    region: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        self.ref_dates = tuple(self.ref_dates)
        if len(self.ref_dates) not in (1, 2):
            raise ValueError(f"a case needs 1 or 2 reference dates, got {self.ref_dates!r}")
        for d in self.ref_dates:
            if not self.series.is_pair(d):
                raise DataError(f"reference date {d} has no complete fine/coarse pair in {self.series.name}")
        if not self.series.has_coarse(self.target_date):
            raise DataError(f"target date {self.target_date} has no coarse image in {self.series.name}")

    @property
    def n_refs(self) -> int:
        return len(self.ref_dates)

    @property
    def id(self) -> str:
        return f"{'+'.join(self.ref_dates)}->{self.target_date}"

    def __repr__(self) -> str:
        return f"Case({self.series.name}: {self.id})"

    @property
    def has_target(self) -> bool:
        return self.series.has_fine(self.target_date)

    def read(
        self, window: WindowLike | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
        """``(inputs, target, valid)``: inputs ``f1, c1, c2`` (+ ``f3, c3``) filled, target with NaN
        (None without a fine image at the target date), valid mask ``(h, w)``."""
        s = self.series
        win = as_window(window, s.shape)
        raw: dict[str, np.ndarray] = {
            "f1": s.read_fine(self.ref_dates[0], win),
            "c1": s.read_coarse(self.ref_dates[0], win),
            "c2": s.read_coarse(self.target_date, win),
        }
        if self.n_refs == 2:
            raw["f3"] = s.read_fine(self.ref_dates[1], win)
            raw["c3"] = s.read_coarse(self.ref_dates[1], win)
        target = s.read_fine(self.target_date, win) if self.has_target else None
        valid = np.ones(raw["f1"].shape[1:], dtype=bool)
        for arr in [*raw.values(), *([target] if target is not None else [])]:
            valid &= np.isfinite(arr).all(axis=0)
        if self.region is not None:
            r0, r1, c0, c1 = self.region
            wr, wc = int(win.row_off), int(win.col_off)
            inside = np.zeros_like(valid)
            inside[max(0, r0 - wr) : max(0, r1 - wr), max(0, c0 - wc) : max(0, c1 - wc)] = True
            valid &= inside
        inputs = {k: fill_invalid(v) for k, v in raw.items()}
        return inputs, target, valid

    def tensors(self, window: WindowLike | None = None):
        """Like :meth:`read` but torch tensors with a leading batch dimension of 1:
        ``(batch, target (1,B,h,w) or None, valid (1,h,w) bool)``. The target keeps NaN where invalid."""
        import torch

        inputs, target, valid = self.read(window)
        batch = {k: torch.from_numpy(v).unsqueeze(0) for k, v in inputs.items()}
        tgt = torch.from_numpy(target).unsqueeze(0) if target is not None else None
        return batch, tgt, torch.from_numpy(valid).unsqueeze(0)


def load_series(
    dataset: str | Path, *, catalog: Any = None, data_dir: str | Path | None = None
) -> PairSeries:
    """Open a pair series: ``"demo"``, a catalog dataset id (fetched), or a folder with a manifest.json."""
    from .paths import dataset_dir

    if isinstance(dataset, Path) or (isinstance(dataset, str) and ("/" in dataset or "\\" in dataset)):
        folder = Path(dataset)
        if not (folder / MANIFEST_NAME).is_file():
            raise ManifestError(
                f"{folder}: no {MANIFEST_NAME} (a series folder needs one; see stfcat.data.manifest)"
            )
        return PairSeries.from_folder(folder)
    if dataset == "demo":
        from .demo import ensure_demo

        return PairSeries.from_folder(ensure_demo(dataset_dir("demo", data_dir)))
    folder = dataset_dir(dataset, data_dir)
    if (folder / MANIFEST_NAME).is_file():
        return PairSeries.from_folder(folder)
    if Path(dataset).is_dir() and (Path(dataset) / MANIFEST_NAME).is_file():
        return PairSeries.from_folder(Path(dataset))
    from .catalog_access import get_dataset

    ds = get_dataset(dataset, catalog)  # KeyError with suggestions for an unknown id
    if ds.access.kind == "external":
        raise NotFetchedError(
            f"dataset {dataset!r} is catalog-only (not downloadable through stfcat); see {ds.landing_page}"
        )
    where = "" if data_dir is None else f" --dir {data_dir}"
    hint = " (add --dir DIR if you keep data elsewhere)" if data_dir is None else ""
    raise NotFetchedError(
        f"dataset {dataset!r} is not in {folder}; run `stfcat fetch {dataset}{where}`{hint}"
    )
