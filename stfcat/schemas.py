"""Pydantic v2 schemas of the catalog: one ``Paper`` per ``catalog/papers/<id>.yaml`` and one
``Dataset`` per ``catalog/datasets/<id>.yaml``.

Unknown keys are errors everywhere (``extra="forbid"``) so a typo in a YAML file never passes
silently. Cross-file checks (ids equal file names, unique DOIs, references that resolve) live in
:mod:`stfcat.catalog`, which reports every problem at once with ``file:line``.
"""

from __future__ import annotations

import datetime as _dt
import re
from enum import Enum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_id(value: str) -> str:
    if not ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a lower-case slug (a-z, 0-9, '-'; e.g. 'mlff-gan')")
    return value


def _check_doi(value: str) -> str:
    if value.lower().startswith(("http://", "https://", "doi:")):
        raise ValueError(f"{value!r}: write the bare DOI (10.NNNN/...), without a resolver prefix")
    if not DOI_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a DOI of the form 10.NNNN/suffix")
    return value


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _check_date(value: str) -> str:
    try:
        _dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"date {value!r} is not YYYY-MM-DD") from exc
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"date {value!r} is not YYYY-MM-DD")
    return value


def _check_year(value: int) -> int:
    last = _dt.date.today().year + 1
    if not 1990 <= value <= last:
        raise ValueError(f"year {value} is outside 1990..{last}")
    return value


Slug = Annotated[str, AfterValidator(_check_id)]
Doi = Annotated[str, AfterValidator(_check_doi)]
Url = Annotated[str, AfterValidator(_check_url)]
Year = Annotated[int, AfterValidator(_check_year)]
IsoDate = Annotated[str, AfterValidator(_check_date)]


class _Strict(BaseModel):
    # coerce_numbers_to_str: `volume: 126` in YAML is an int; the schema keeps such fields as text.
    model_config = ConfigDict(
        extra="forbid", frozen=False, str_strip_whitespace=True, coerce_numbers_to_str=True
    )


class Category(str, Enum):
    survey = "survey"
    cnn = "cnn"
    transformer = "transformer"
    gan = "gan"
    diffusion = "diffusion"
    sequence = "sequence"
    other = "other"
    classical = "classical"


class Task(str, Enum):
    """What is fused. ``reflectance`` is the classic fine/coarse surface-reflectance case."""

    reflectance = "reflectance"
    land_surface_temperature = "land-surface-temperature"
    sea_surface_temperature = "sea-surface-temperature"
    ocean = "ocean"  # subsurface thermohaline structure, ENSO indices, ...
    precipitation = "precipitation"
    air_quality = "air-quality"
    traffic = "traffic"
    soil_freeze_thaw = "soil-freeze-thaw"
    parcel_delineation = "parcel-delineation"
    pansharpening = "pansharpening"  # spatio-temporal-spectral fusion of one platform
    review = "review"  # surveys


class DatasetGroup(str, Enum):
    earth_observation = "earth-observation"
    ocean_meteorological = "ocean-meteorological"
    multi_source = "multi-source"
    synthetic = "synthetic"


class Implementation(_Strict):
    """Where the method runs in stfcat: a registered model id, or why not."""

    model: Slug | None = Field(None, description="registered model id in code/ (stfcat list models)")
    reason: str | None = Field(None, description="why there is no implementation (required when model is null)")
    notes: list[str] = Field(default_factory=list, description="deviations from the paper / official code")

    @model_validator(mode="after")
    def _model_or_reason(self) -> Implementation:
        if self.model is None and not self.reason:
            raise ValueError("give either 'model' (a registered id) or a 'reason' for having none")
        return self


class Paper(_Strict):
    id: Slug
    short_name: str = Field(description="name as the survey writes it, e.g. STFDCNN, MLFF-GAN")
    title: str
    authors: list[str] = Field(min_length=1, description="'Given Family' strings, in order")
    venue: str = Field(description="full journal or conference name")
    venue_abbr: str
    year: Year
    month: int | None = Field(None, ge=1, le=12)
    volume: str | None = None
    issue: str | None = None
    pages: str | None = Field(None, description="page range '821-829' or article number '103675'")
    doi: Doi
    url: Url | None = Field(None, description="paper landing page")
    code_url: Url | None = Field(None, description="official code repository, null when none")
    category: Category
    task: Task
    sensors: list[str] = Field(default_factory=list)
    datasets: list[Slug] = Field(default_factory=list, description="dataset ids used in the paper")
    summary: str = Field(min_length=40, description="2-4 sentences in our own words: what is new")
    tags: list[str] = Field(default_factory=list)
    implementation: Implementation
    bibtex_key: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_:.+/-]+$",
        description="override of the generated key (FamilyYearShort, e.g. Song2018STFDCNN)",
    )
    in_survey: bool = Field(True, description="listed in the survey README (false for extras)")


class Resolution(_Strict):
    value: float = Field(gt=0)
    unit: Literal["m", "km", "deg"]


class Sensor(_Strict):
    name: str = Field(description="e.g. 'Landsat-7 ETM+', 'MODIS Terra MOD09GA'")
    resolution: Resolution | None = Field(None, description="null for point (station) data")
    bands: list[str] = Field(default_factory=list, description="band names in file order")
    revisit: str | None = None


class RemoteFile(_Strict):
    """One downloadable file: pooch checks its sha256 before anything reads it."""

    name: str = Field(description="file name in the data folder")
    url: Url
    sha256: Annotated[str, Field(pattern=SHA256_RE.pattern)]
    size: int = Field(gt=0, description="bytes")
    archive: bool = Field(False, description="zip/tar to be extracted (safely) after download")
    role: Literal["fine", "coarse", "header", "mask", "other"] | None = Field(
        None, description="what the file is, so the manifest is built from facts, not file names"
    )
    date: IsoDate | None = Field(None, description="YYYY-MM-DD acquisition date of a fine/coarse image")
    scale_factor: float | None = Field(
        None, description="per-file override of the dataset's scale_factor (e.g. coarse files stored x1)"
    )


class MirrorFile(_Strict):
    """One file of a public git repository, pinned by its git blob SHA-1 (a content hash)."""

    path: str = Field(description="path inside the repository (POSIX), also its path under files/")
    blob_sha1: str = Field(
        pattern=SHA1_RE.pattern, description="git blob SHA-1: sha1(b'blob <size>\\0' + content)"
    )
    role: Literal["fine", "coarse", "header", "fine-stack", "coarse-stack", "other"]
    date: IsoDate | None = Field(None, description="acquisition date as the repository's file name states it")

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or "\\" in value or ".." in value.split("/") or not value:
            raise ValueError(f"path {value!r} must be a relative POSIX path inside the repository")
        return value


class Mirror(_Strict):
    """A copy of the data in a public GitHub repository at a fixed commit (``stfcat fetch`` downloads
    ``https://raw.githubusercontent.com/<repository>/<commit>/<path>`` and checks every blob hash)."""

    repository: str = Field(pattern=REPO_RE.pattern, description="owner/name on GitHub")
    commit: str = Field(pattern=SHA1_RE.pattern)
    licence: str = Field(description="the repository's licence (the imagery belongs to its publishers)")
    what: str = Field(description="what the copy is: full set, crop, arrays; which dates")
    files: list[MirrorFile] = Field(min_length=1)
    dates_from: Slug | None = Field(
        None, description="for date-less array stacks: the dataset whose dates the time axis follows, used only "
        "when the number of steps matches",
    )


LAYOUTS: dict[str, str] = {
    "csiro-envi": "CSIRO CIA/LGC archives: ENVI images in YYYY_DOY_MonDD date folders",
    "dated-geotiff": "GeoTIFFs named <L|F>_YYYY-MM-DD.tif (fine) and <M|C>_YYYY-MM-DD.tif (coarse)",
    "mirror": "a commit-pinned GitHub copy (access.mirror)",
    "geotiff-pairs": "declarative: GeoTIFFs whose role and date access.files states",
    "envi-pairs": "declarative: ENVI images whose role and date access.files states",
    "imagefusion-kranj": "declarative: the imagefusion Kranj rasters (access.files)",
    "files": "declarative: any readable rasters whose role and date access.files states",
}
"""The importer ids ``access.layout`` may name (see :mod:`stfcat.data.importers`); a closed list so a
misspelt layout fails validation instead of silently falling back to the declarative importer."""


class Access(_Strict):
    """How to get the data: ``direct`` (files below), ``mirror`` (a commit-pinned GitHub copy),
    ``manual`` (instructions, then ``stfcat fetch ID --from ARCHIVE``) or ``external`` (catalog-only)."""

    kind: Literal["direct", "mirror", "manual", "external", "embedded"]
    files: list[RemoteFile] = Field(default_factory=list)
    mirror: Mirror | None = None
    instructions: str | None = None
    layout: str | None = Field(None, description="importer id that normalises the files into a manifest "
                               f"({', '.join(LAYOUTS)})")

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, value: str | None) -> str | None:
        if value is not None and value not in LAYOUTS:
            raise ValueError(f"layout {value!r} has no importer; use one of {', '.join(LAYOUTS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Access:
        if self.kind == "direct" and not self.files:
            raise ValueError("access.kind 'direct' needs at least one file with url and sha256")
        if self.kind == "mirror" and self.mirror is None:
            raise ValueError("access.kind 'mirror' needs a 'mirror' (repository, commit, files)")
        if self.kind != "mirror" and self.mirror is not None:
            raise ValueError(f"access.mirror is only read for access.kind 'mirror', not {self.kind!r}")
        if self.kind == "manual" and not self.instructions:
            raise ValueError("access.kind 'manual' needs 'instructions'")
        return self


REGION_NAMES = tuple(f"{side}-{part}" for side in ("left", "right", "top", "bottom")
                     for part in ("half", "third", "quarter"))
"""Named regions of a scene for a spatial split (``right-third``: the right third of the columns)."""

Region = list[int] | str


def _check_region(value: Region | None, field: str) -> Region | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        if value not in REGION_NAMES:
            raise ValueError(f"{field}: {value!r} is not a region name ({', '.join(REGION_NAMES)}) "
                             "nor [row0, row1, col0, col1]")
        return value
    if len(value) != 4 or value[0] >= value[1] or value[2] >= value[3] or min(value) < 0:
        raise ValueError(f"{field}: {value!r} must be [row0, row1, col0, col1] with row0 < row1, col0 < col1 (>= 0)")
    return value


class SpatialSplit(_Strict):
    """A spatial split: train and validate on one part of the scene, test on a disjoint part,
    with a guard band between them (see :mod:`stfcat.data.splits`)."""

    kind: Literal["spatial"] = "spatial"
    test: Region = Field(description="test region: a name such as 'right-third' or [row0, row1, col0, col1] (end excluded)")
    val: Region = Field("auto", description="validation region, 'auto' (a strip of the training side) or none")
    guard: int | Literal["auto"] = Field("auto", description="guard band in fine pixels; 'auto': the model's receptive field")
    note: str | None = None

    @field_validator("test")
    @classmethod
    def _test(cls, value: Region) -> Region:
        if value == "auto":
            raise ValueError("test: give a region name or [row0, row1, col0, col1], not 'auto'")
        return _check_region(value, "test")

    @field_validator("val")
    @classmethod
    def _val(cls, value: Region) -> Region:
        return value if value == "none" else _check_region(value, "val")

    @field_validator("guard")
    @classmethod
    def _guard(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"guard: {value} must be >= 0 pixels or 'auto'")
        return value


class Split(_Strict):
    train: list[IsoDate] = Field(default_factory=list, description="dates (YYYY-MM-DD) of training pairs")
    val: list[IsoDate] = Field(default_factory=list, description="dates (YYYY-MM-DD) of validation targets")
    test: list[IsoDate] = Field(default_factory=list, description="dates (YYYY-MM-DD) of test targets")
    spatial: SpatialSplit | None = Field(None, description="a spatial split of the scene (few-date series)")
    note: str | None = None


class Dataset(_Strict):
    id: Slug
    name: str
    abbreviation: str
    group: DatasetGroup
    fine: Sensor
    coarse: Sensor | None = None
    region: str
    image_size: str | None = Field(None, description="'rows x cols' of the fine images, e.g. '2040x1720'")
    n_dates: int | None = Field(None, ge=1)
    dates: list[IsoDate] = Field(default_factory=list, description="YYYY-MM-DD acquisition dates")
    dtype: str | None = Field(None, description="numpy dtype of stored values, e.g. int16")
    scale_factor: float | None = Field(None, description="multiply stored values by this to get reflectance")
    nodata: float | None = None
    coarse_on_fine_grid: bool | None = Field(
        None, description="true when coarse files are already resampled onto the fine pixel grid"
    )
    format: str = Field(description="ENVI, GeoTIFF, NetCDF, HDF, CSV, ...")
    landing_page: Url
    doi: Doi | None = None
    licence: str
    citation: list[Slug] = Field(default_factory=list, description="paper ids to cite")
    bibtex: str | None = Field(None, description="BibTeX of the data publication when it is not a catalog paper")
    access: Access
    split: Split | None = None
    summary: str | None = None
    used_by: list[Slug] = Field(default_factory=list, description="informative; derived from papers.datasets")

    @field_validator("dates")
    @classmethod
    def _n_dates(cls, dates: list[str], info: ValidationInfo) -> list[str]:
        # A field validator (not a model validator) so the error points at `dates`.
        n = info.data.get("n_dates")
        if n is not None and dates and len(dates) != n:
            raise ValueError(f"n_dates is {n} but {len(dates)} dates are listed")
        return dates
