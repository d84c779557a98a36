"""Spatial splits: train and validate on one part of a scene, test on a disjoint part.

A series with too few dates for temporal cases (2-3 dates) can still train a model: the scene is
cut into a *test* region, a *guard band* around it, and the rest, which holds a *training* region
and (by default) a *validation* region separated from it by another guard band. The split is
declared per dataset (catalog ``split.spatial`` -> manifest ``split.spatial``)::

    split:
      spatial: {test: right-third, val: auto, guard: auto}   # or test: [row0, row1, col0, col1]

* ``test``: a region name (``left|right|top|bottom-half|third|quarter``) or a rectangle
  ``[row0, row1, col0, col1]`` of the fine grid (end excluded).
* ``guard``: fine pixels between the test (and validation) region and any training pixel;
  ``auto`` (and any declared value smaller than it) becomes the model's receptive field, so no
  training patch ever holds a test pixel nor a pixel whose prediction would see one.
* ``val``: ``auto`` takes the last quarter of the non-test side along its longer axis, ``none``
  gives no validation region, or a rectangle (not overlapping the test region).

Test and validation regions are fixed by the declaration (the same pixels for every model and
baseline). The training region is the largest rectangle left outside the test and validation
regions dilated by the guard band, so it alone shrinks for a model with a wider receptive field. Training cases are cases of
a *cropped view* of the series (:meth:`PairSeries.crop`), so a patch sampler can only draw
pixels of the training rectangle; validation and test cases are whole-scene cases whose valid
mask is restricted to their region (``Case.region``), so every method, trivial baselines and
classical methods included, is scored on exactly the same pixels.

What a spatial split gives away: the model has seen the target date's fine image in its training
region, which no real user of fusion has; it can learn that date's radiometric change. Its rows
are labelled "spatial split" and kept apart from temporally split rows.

Cases: the test cases are the temporal test cases (targets: the split's test dates, references:
the nearest complete pairs of any date). Training and validation cases use every complete pair:
one reference, consecutive pairs in both directions; two references, each inner date with its
two neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    from stfcat.schemas import SpatialSplit

    from .series import Case, PairSeries

Rect = tuple[int, int, int, int]
"""``(row0, row1, col0, col1)`` on the fine grid, end excluded."""

MIN_TRAIN = 8  # fine pixels: a training rectangle narrower than this cannot hold a patch
SPATIAL_LABEL = "spatial split"
TEMPORAL_LABEL = "test"  # the temporal split keeps the historical label of metrics.json / the board
_FRACTIONS = {"half": 2, "third": 3, "quarter": 4}


def named_region(name: str, shape: tuple[int, int]) -> Rect:
    """``right-third`` etc. as a rectangle of a ``shape`` scene."""
    h, w = shape
    side, part = name.split("-")
    n = _FRACTIONS[part]
    if side in ("left", "right"):
        k = max(1, w // n)
        return (0, h, 0, k) if side == "left" else (0, h, w - k, w)
    k = max(1, h // n)
    return (0, k, 0, w) if side == "top" else (h - k, h, 0, w)


def region_rect(spec: Any, shape: tuple[int, int], field: str) -> Rect:
    if isinstance(spec, str):
        return named_region(spec, shape)
    r0, r1, c0, c1 = (int(v) for v in spec)
    if r1 > shape[0] or c1 > shape[1]:
        raise DataError(f"split.spatial.{field}: {list(spec)} lies outside the {shape[0]}x{shape[1]} grid")
    return r0, r1, c0, c1


def dilate(rect: Rect, g: int, shape: tuple[int, int]) -> Rect:
    r0, r1, c0, c1 = rect
    return max(0, r0 - g), min(shape[0], r1 + g), max(0, c0 - g), min(shape[1], c1 + g)


def intersects(a: Rect, b: Rect) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def area(rect: Rect) -> int:
    return max(0, rect[1] - rect[0]) * max(0, rect[3] - rect[2])


def largest_outside(bounds: Rect, obstacle: Rect) -> Rect | None:
    """The largest of the (up to four) strips of ``bounds`` that do not touch ``obstacle``."""
    r0, r1, c0, c1 = bounds
    o0, o1, p0, p1 = obstacle
    if not intersects(bounds, obstacle):
        return bounds
    strips = [(r0, min(r1, o0), c0, c1), (max(r0, o1), r1, c0, c1),
              (r0, r1, c0, min(c1, p0)), (r0, r1, max(c0, p1), c1)]
    strips = [s for s in strips if area(s) > 0]
    return max(strips, key=area) if strips else None


def rect_mask(rect: Rect, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rect[0] : rect[1], rect[2] : rect[3]] = True
    return m


@dataclass(frozen=True)
class SpatialRegions:
    shape: tuple[int, int]
    test: Rect
    train: Rect
    val: Rect | None
    guard: int

    def as_dict(self) -> dict[str, Any]:
        """For ``metrics.json``: every rectangle as ``[row0, row1, col0, col1]``."""
        return {"kind": "spatial", "test": list(self.test), "train": list(self.train),
                "val": list(self.val) if self.val else None, "guard": self.guard}


def _guard(spec: SpatialSplit, receptive_field: int | None, dataset: str) -> int:
    declared = spec.guard if isinstance(spec.guard, int) else 0
    if receptive_field is None:
        if spec.guard == "auto":
            raise DataError(f"{dataset}: split.spatial.guard is 'auto': the model's receptive field is needed "
                            "to place the training and validation regions")
        return declared
    return max(declared, int(receptive_field))


def spatial_regions(spec: SpatialSplit, shape: tuple[int, int], receptive_field: int | None,
                    dataset: str = "dataset") -> SpatialRegions:
    """Test, training and validation rectangles of a ``shape`` scene with a guard band at least
    ``receptive_field`` wide between the training region and the test and validation regions.

    The test and validation regions do not depend on the model (so every model and baseline is
    validated and tested on the same pixels); only the training rectangle shrinks with a wider
    receptive field. Raises :class:`DataError` when the scene is too small for it."""
    g = _guard(spec, receptive_field, dataset)
    h, w = shape
    whole = (0, h, 0, w)
    test = region_rect(spec.test, shape, "test")
    if area(test) >= h * w:
        raise DataError(f"{dataset}: split.spatial.test covers the whole scene")
    declared = spec.guard if isinstance(spec.guard, int) else 0
    side = largest_outside(whole, dilate(test, declared, shape))  # where validation goes, model-independent
    free = largest_outside(whole, dilate(test, g, shape))
    if side is None or free is None:
        raise DataError(f"{dataset}: nothing of the {h}x{w} scene is left for training outside the test region "
                        f"and a {g}-pixel guard band (the model's receptive field)")
    val: Rect | None
    if spec.val == "none":
        val, train = None, free
    else:
        if spec.val == "auto":  # the last quarter of the other side, along its longer axis
            sr0, sr1, sc0, sc1 = side
            if sr1 - sr0 >= sc1 - sc0:
                k = max(1, (sr1 - sr0) // 4)
                val = (sr1 - k, sr1, sc0, sc1)
            else:
                k = max(1, (sc1 - sc0) // 4)
                val = (sr0, sr1, sc1 - k, sc1)
        else:
            val = region_rect(spec.val, shape, "val")
            if intersects(val, test):
                raise DataError(f"{dataset}: split.spatial.val {list(val)} overlaps the test region {list(test)}")
        train = largest_outside(free, dilate(val, g, shape))
    if train is None or min(train[1] - train[0], train[3] - train[2]) < MIN_TRAIN:
        raise DataError(
            f"{dataset}: the {h}x{w} scene leaves no training region of at least {MIN_TRAIN}x{MIN_TRAIN} px outside "
            f"the test region {list(test)}" + (f", the validation region {list(val)}" if val else "")
            + f" and a {g}-pixel guard band (the model's receptive field); declare a smaller test/validation region"
        )
    return SpatialRegions(shape=shape, test=test, train=train, val=val, guard=g)


def receptive_field(model: Any) -> int:
    """The model's receptive radius in fine pixels (``receptive_field``; for a model without a
    finite one, e.g. image-level statistics, its tiling ``halo``, the context it is tiled with)."""
    rf = getattr(model, "receptive_field", None)
    return int(rf if rf is not None else getattr(model, "halo", 0) or 0)


def _all_pair_cases(series: PairSeries, n_refs: int) -> list[tuple[str, tuple[str, ...]]]:
    pairs = [d for d in series.dates if series.is_pair(d)]
    if n_refs == 1:
        out = []
        for a, b in zip(pairs, pairs[1:], strict=False):
            out += [(b, (a,)), (a, (b,))]
        return out
    return [(t, (a, b)) for a, t, b in zip(pairs, pairs[1:], pairs[2:], strict=False)]


def spatial_split_cases(series: PairSeries, n_refs: int, split: str,
                        receptive_field: int | None = None) -> list[Case]:
    """Cases of ``split`` ("train", "val" or "test") under the series' spatial split.

    Test cases need no receptive field (the test region is fixed by the declaration); training
    and validation regions depend on the guard, i.e. on the model's receptive field."""
    from .series import Case

    spec = series.spatial
    if spec is None:
        raise DataError(f"{series.name}: no spatial split declared (manifest split.spatial)")
    if split == "test":
        test = region_rect(spec.test, series.shape, "test")
        out = []
        for c in series.cases(n_refs, "test"):
            out.append(Case(series, c.target_date, c.ref_dates, meta={"split": SPATIAL_LABEL}, region=test))
        return out
    regions = spatial_regions(spec, series.shape, receptive_field, series.name)
    todo = _all_pair_cases(series, n_refs)
    if split == "train":
        view = series.crop(regions.train)
        return [Case(view, t, refs, meta={"split": SPATIAL_LABEL}) for t, refs in todo]
    if regions.val is None:
        return []
    return [Case(series, t, refs, meta={"split": SPATIAL_LABEL}, region=regions.val) for t, refs in todo]


def available_splits(series: PairSeries, n_refs: int, *, trainable: bool = True) -> list[str]:
    """The split kinds ("temporal", "spatial") under which a model with ``n_refs`` references has
    test cases with ground truth (and, when ``trainable``, training cases)."""
    kinds = []
    test = [c for c in series.cases(n_refs, "test") if c.has_target]
    if test and (not trainable or series.cases(n_refs, "train")):
        kinds.append("temporal")
    if series.spatial is not None and test and (not trainable or _all_pair_cases(series, n_refs)):
        kinds.append("spatial")
    return kinds


def default_split(series: PairSeries, n_refs: int, *, trainable: bool = True) -> str:
    """Temporal where the dates allow it, else spatial (when declared); "temporal" when neither
    (the caller's case check then explains what is missing)."""
    kinds = available_splits(series, n_refs, trainable=trainable)
    return kinds[0] if kinds else "temporal"
