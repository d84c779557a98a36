"""The manifest: one ``manifest.json`` beside the data of a dataset, the only thing the rest of
stfcat reads to learn what the files are.

Fetching or importing a dataset (``stfcat fetch``), generating the demo, or preparing a folder of
your own ends with a manifest. Everything downstream (pair series, cases, training, evaluation)
reads the manifest and never guesses dates, roles, bands or scales from file names or array
shapes.

Format (``format_version`` 2; 2 added ``split.val`` and ``split.spatial``)
--------------------------------------------------------------------------
A JSON object::

    {
      "format": "stfcat-manifest",          # constant, identifies the file
      "format_version": 2,                  # bumped on incompatible changes
      "name": "demo",                       # dataset id (or folder name for your own data)
      "bands": ["blue", "green", "red", "nir", "swir1", "swir2"],   # in the order arrays are returned
      "scale_factor": 0.0001,               # default: stored value x scale_factor = reflectance
      "nodata": -9999,                      # default stored no-data value (null: none)
      "fine_resolution": 30.0,              # metres (informative)
      "coarse_resolution": 480.0,           # metres (informative)
      "ratio": 16,                          # fine pixels per coarse pixel (required)
      "shape": [256, 256],                  # fine grid rows, cols (H, W)
      "crs": "EPSG:32650",                  # of the fine grid; null when not georeferenced
      "transform": [30, 0, 500000, 0, -30, 4000000],   # affine a,b,c,d,e,f of the fine grid, or null
      "split": {"train": [dates], "val": [dates], "test": [dates], "note": "...",
                "spatial": {"test": "right-third", "val": "auto", "guard": "auto"}},   # optional
      "pairs": [                            # one entry per acquisition date, sorted by date
        {"date": "2020-03-08",
         "fine":   {"path": "fine/2020-03-08.tif"},
         "coarse": {"path": "coarse/2020-03-08.tif", "grid": "native", "scale_factor": 1.0}}
      ],
      "source": {"dataset": "demo", "layout": "generated", "created": "2026-11-30T17:00:00Z"}
    }

Each image (``fine`` / ``coarse``; either may be absent on a date) has:

``path``
    relative to the manifest's folder (POSIX separators); never absolute, never leaving the folder.
``bands``
    optional 1-based band indices to read, in the order of the manifest's ``bands`` (default: all,
    in file order). This is how a file whose bands are in another order is mapped.
``scale_factor`` / ``nodata``
    optional per-file overrides of the manifest defaults (e.g. Kranj MODIS is stored x1, not x10000).
``grid``
    ``"fine"``: the image is already on the fine pixel grid and is used pixel for pixel, whatever
    its georeferencing says. ``"native"`` (coarse only): the image is on its own coarser grid and is
    resampled onto the fine grid when read, with its CRS/transform when the file has them,
    otherwise by the manifest's ``ratio`` with the two grids' upper-left corners aligned
    (a missing ratio is an error).

Reading rule (every reader applies it)
--------------------------------------
Values are converted to float32 reflectance (``value x scale_factor``). A pixel-band is
*invalid* (NaN) when the stored value equals ``nodata``, is NaN/inf, or the reflectance lies
outside ``[-0.01, 1.6]``. Small negative reflectance in ``[-0.01, 0)`` (atmospheric-correction
noise) is clipped to 0. Coarse images on a native grid are resampled with **bilinear**
interpolation: a coarse pixel is an area average, and bilinear interpolation reconstructs a
continuous field from those averages without inventing block edges at coarse-pixel borders
(nearest) or overshooting at sharp edges (cubic); it is also what most STF papers feed their
models. Invalid pixels never enter a metric: :meth:`stfcat.data.Case.read` returns a valid mask.

The file is always written atomically (a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stfcat.schemas import SpatialSplit

from .errors import ManifestError
from .paths import publish_mode

FORMAT = "stfcat-manifest"
FORMAT_VERSION = 2  # 2: split.val and split.spatial (version 1 files are read unchanged)
MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageEntry(_Strict):
    path: str
    bands: list[int] | None = Field(None, description="1-based band indices in manifest band order")
    scale_factor: float | None = None
    nodata: float | None = None
    grid: Literal["fine", "native"] = "fine"

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        p = PurePosixPath(value.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or not value:
            raise ValueError(f"path {value!r} must be relative to the manifest folder, without '..'")
        return p.as_posix()

    @field_validator("bands")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError(f"bands {value!r} must be 1-based band indices")
        return value


class PairEntry(_Strict):
    date: str
    fine: ImageEntry | None = None
    coarse: ImageEntry | None = None

    @field_validator("date")
    @classmethod
    def _iso(cls, value: str) -> str:
        try:
            _dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"date {value!r} is not YYYY-MM-DD") from exc
        return value

    @model_validator(mode="after")
    def _something(self) -> PairEntry:
        if self.fine is None and self.coarse is None:
            raise ValueError(f"date {self.date}: neither a fine nor a coarse image")
        if self.fine is not None and self.fine.grid != "fine":
            raise ValueError(f"date {self.date}: a fine image is always on the fine grid")
        return self


class SplitEntry(_Strict):
    train: list[str] = Field(default_factory=list)
    val: list[str] = Field(default_factory=list)
    test: list[str] = Field(default_factory=list)
    spatial: SpatialSplit | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> SplitEntry:
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if both:
                raise ValueError(f"split: dates {', '.join(both)} are both {a} and {b}")
        return self


class Manifest(_Strict):
    format: Literal["stfcat-manifest"] = FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    bands: list[str] = Field(min_length=1)
    scale_factor: float = 1.0
    nodata: float | None = None
    fine_resolution: float | None = None
    coarse_resolution: float | None = None
    ratio: int | None = Field(None, ge=1)
    shape: tuple[int, int]
    crs: str | None = None
    transform: list[float] | None = Field(None, min_length=6, max_length=6)
    split: SplitEntry = Field(default_factory=SplitEntry)
    pairs: list[PairEntry] = Field(min_length=1)
    source: dict = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value > FORMAT_VERSION:
            raise ValueError(
                f"format_version {value} is newer than this stfcat understands ({FORMAT_VERSION}); upgrade stfcat"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        dates = [p.date for p in self.pairs]
        if len(set(dates)) != len(dates):
            raise ValueError("pairs: a date appears twice")
        self.pairs.sort(key=lambda p: p.date)
        known = set(dates)
        for key in ("train", "val", "test"):
            missing = [d for d in getattr(self.split, key) if d not in known]
            if missing:
                raise ValueError(f"split.{key}: dates {missing} have no entry in pairs")
        for p in self.pairs:
            for role in ("fine", "coarse"):
                img: ImageEntry | None = getattr(p, role)
                if img is not None and img.bands is not None and len(img.bands) != len(self.bands):
                    raise ValueError(
                        f"pairs[{p.date}].{role}.bands has {len(img.bands)} indices but the manifest has "
                        f"{len(self.bands)} bands"
                    )
        return self

    @property
    def dates(self) -> list[str]:
        return [p.date for p in self.pairs]


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write ``folder/manifest.json`` atomically and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MANIFEST_NAME
    text = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        publish_mode(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_manifest(path: Path) -> Manifest:
    """Read a manifest (a ``manifest.json`` file or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here (a dataset folder needs a {MANIFEST_NAME})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ManifestError(f"{path}: 'format' must be {FORMAT!r}; this is not an stfcat manifest")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ManifestError("\n".join(lines)) from exc
