"""Importers: turn the files of a dataset into a manifest (see :mod:`stfcat.data.manifest`).

``access.layout`` in a dataset's YAML names the importer:

``csiro-envi`` (CIA, LGC)
    The CSIRO archives: ENVI files in per-date folders named ``YYYY_DOY_MonDD`` (for example
    ``CIA/Landsat/2001_281_08oct/L71093084_08420011007_HRF_modtran_surf_ref_agd66.bil`` and
    ``CIA/MODIS/2001_281_08oct/MOD09GA_A2001281.sur_refl.int``, each with a ``.hdr``). The date is
    the folder's year + day of year (Landsat file names may carry the previous UTC day); the
    MODIS file (``M[OY]D09GA_AYYYYDDD...``) is the coarse image, the other ENVI image in the date
    folder(s) (``L5...``/``L7...`` or ``YYYYMMDD_TM``) the fine one. Interleave, data type and
    byte order come from the headers.
``dated-geotiff`` (the CIA 250 x 250 fixture)
    GeoTIFFs whose names carry the role and the date: ``L_YYYY-MM-DD.tif`` or ``F_...`` for the
    fine image, ``M_YYYY-MM-DD.tif`` or ``C_...`` for the coarse one (``.tiff`` too), anywhere in the
    tree. Other files (notes, ``.aux.xml`` side files) are ignored; a GeoTIFF whose name does not
    parse is an error naming it, so a renamed or misplaced image is never silently left out.
The other ids of :data:`stfcat.schemas.LAYOUTS` (``geotiff-pairs``, ``envi-pairs``, ``files``, ``imagefusion-kranj``)
    The declarative importer: every file in ``access.files`` with ``role`` fine or coarse and a
    ``date`` becomes that date's fine or coarse image; headers, masks and others are kept but not
    listed. The layout id is a label; a file's own ``scale_factor`` overrides the dataset's (Kranj
    MODIS is stored as reflectance x 1 while Landsat is x 10000).

All check the result against the YAML's facts (dates, image size, band count) and fail with an
error that names the file or date at fault.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from stfcat.schemas import Dataset, Resolution

from .errors import DataError
from .manifest import ImageEntry, Manifest, PairEntry, SplitEntry, write_manifest
from .readers import raster_info

ENVI_DATE_DIR = re.compile(r"^(\d{4})_(\d{3})(?:_.*)?$")
MODIS_NAME = re.compile(r"^M[OY]D09GA_A(\d{4})(\d{3})", re.IGNORECASE)
LANDSAT_NAME = re.compile(r"^(L[4578]\d*_\d+|\d{8}_TM)", re.IGNORECASE)
HEADER_EXT = (".hdr", ".HDR")
GEOTIFF_EXT = (".tif", ".tiff")
DATED_NAME = re.compile(r"^(?P<prefix>[A-Za-z]+)_(?P<date>\d{4}-\d{2}-\d{2})\.tiff?$", re.IGNORECASE)
DATED_PREFIXES = {"L": "fine", "F": "fine", "M": "coarse", "C": "coarse"}
"""Name prefix -> role of the ``dated-geotiff`` layout: sensor-style (Landsat/MODIS) or generic."""


def metres(res: Resolution | None) -> float | None:
    if res is None:
        return None
    return {"m": res.value, "km": res.value * 1000.0}.get(res.unit)


def _ratio(ds: Dataset) -> int | None:
    f = metres(ds.fine.resolution)
    c = metres(ds.coarse.resolution) if ds.coarse else None
    return max(1, round(c / f)) if f and c else None


def _coarse_grid(ds: Dataset) -> str:
    return "fine" if ds.coarse_on_fine_grid is not False else "native"


def _finish(
    ds: Dataset,
    folder: Path,
    pairs: dict[str, dict[str, Path]],
    layout: str,
    file_scales: dict[str, float] | None = None,
    *,
    write: bool = True,
    source_extra: dict | None = None,
) -> Manifest:
    """Check the found images against the dataset's facts and write the manifest.

    ``file_scales`` maps a file name to its own scale factor (``access.files[].scale_factor``),
    for datasets whose sensors store reflectance differently (e.g. coarse x1, fine x10000).
    ``write=False`` only checks (the manifest is returned, nothing is written); ``source_extra`` is
    merged into the manifest's ``source`` (e.g. the imported archive's name and sha256)."""
    if not pairs:
        raise DataError(f"{folder}: no fine or coarse images found for dataset {ds.id!r} (layout {layout!r})")
    file_scales = file_scales or {}
    first_fine = next((p["fine"] for _, p in sorted(pairs.items()) if "fine" in p), None)
    if first_fine is None:
        raise DataError(f"{folder}: dataset {ds.id!r} has no fine image")
    if not ds.fine.bands:
        # band order is a fact of the dataset, never guessed from a file's band count
        raise DataError(f"dataset {ds.id!r}: fine.bands is empty; list the bands in file order in its YAML")
    info = raster_info(first_fine)
    bands = list(ds.fine.bands)
    n_bands = len(bands)
    if ds.image_size:
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", ds.image_size)
        if m and (int(m.group(1)), int(m.group(2))) != info.shape:
            raise DataError(
                f"{first_fine}: grid {info.shape[0]}x{info.shape[1]} differs from the dataset's image_size {ds.image_size}"
            )
    entries: list[PairEntry] = []
    for date, roles in sorted(pairs.items()):
        kw = {}
        for role, path in roles.items():
            ri = raster_info(path)
            if ri.count != n_bands:
                raise DataError(
                    f"{path}: {ri.count} bands, but dataset {ds.id!r} has {n_bands} ({', '.join(bands)})"
                )
            grid = "fine" if role == "fine" else _coarse_grid(ds)
            if grid == "fine" and ri.shape != info.shape:
                raise DataError(
                    f"{path}: grid {ri.shape[0]}x{ri.shape[1]} differs from the fine grid "
                    f"{info.shape[0]}x{info.shape[1]} of {first_fine.name}"
                )
            kw[role] = ImageEntry(
                path=path.relative_to(folder).as_posix(), grid=grid, scale_factor=file_scales.get(path.name)
            )
        entries.append(PairEntry(date=date, **kw))
    found = {e.date for e in entries}
    missing = [d for d in ds.dates if d not in found]
    if missing:
        raise DataError(
            f"{folder}: dataset {ds.id!r} lists dates with no image here: {', '.join(missing)} "
            f"(found: {', '.join(sorted(found))})"
        )
    split = SplitEntry()
    if ds.split:
        split = SplitEntry(
            train=[d for d in ds.split.train if d in found],
            val=[d for d in ds.split.val if d in found],
            test=[d for d in ds.split.test if d in found],
            spatial=ds.split.spatial,
            note=ds.split.note,
        )
    manifest = Manifest(
        name=ds.id,
        bands=bands,
        scale_factor=ds.scale_factor if ds.scale_factor is not None else 1.0,
        nodata=ds.nodata,
        fine_resolution=metres(ds.fine.resolution),
        coarse_resolution=metres(ds.coarse.resolution) if ds.coarse else None,
        ratio=_ratio(ds),
        shape=info.shape,
        crs=info.crs,
        transform=list(info.transform) if info.transform else None,
        split=split,
        pairs=entries,
        source={
            "dataset": ds.id,
            "layout": layout,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(source_extra or {}),
        },
    )
    if write:
        write_manifest(manifest, folder)
    return manifest


def import_declared(
    ds: Dataset, folder: Path, files_dir: Path, *, write: bool = True, source_extra: dict | None = None
) -> Manifest:
    """Declarative importer: roles and dates come from ``access.files``."""
    pairs: dict[str, dict[str, Path]] = {}
    for f in ds.access.files:
        if f.role not in ("fine", "coarse"):
            continue
        if not f.date:
            raise DataError(f"dataset {ds.id!r}: file {f.name!r} has role {f.role} but no 'date'")
        path = _find_declared(files_dir, f.name, ds.id)
        slot = pairs.setdefault(f.date, {})
        if f.role in slot:
            raise DataError(
                f"dataset {ds.id!r}: two {f.role} files on {f.date}: {slot[f.role].name} and {f.name}"
            )
        slot[f.role] = path
    scales = {Path(f.name).name: f.scale_factor for f in ds.access.files if f.scale_factor is not None}
    return _finish(
        ds, folder, pairs, ds.access.layout or "files", scales, write=write, source_extra=source_extra
    )


def _hidden(path: Path, root: Path) -> bool:
    """Inside a dot-folder (a staging or partial folder of a killed command) or a dot-file."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _find_declared(root: Path, name: str, ds_id: str) -> Path:
    """``root/name``, else the one file of that name in the tree (a manual archive usually wraps
    its files in a top folder)."""
    path = root / name
    if path.is_file():
        return path
    found = [p for p in sorted(root.rglob(Path(name).name)) if p.is_file() and not _hidden(p, root)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(f"{root}: {Path(name).name} occurs {len(found)} times ({found[0]}, {found[1]}); "
                        f"dataset {ds_id!r} lists it once")
    raise DataError(f"{path}: missing (listed in dataset {ds_id!r} access.files)")


def _has_header(path: Path) -> bool:
    return any(path.with_suffix(e).is_file() or Path(str(path) + e).is_file() for e in HEADER_EXT)


def _folder_date(path: Path, root: Path) -> str | None:
    for parent in [path.parent, *path.parent.parents]:
        if parent == root.parent:
            break
        m = ENVI_DATE_DIR.match(parent.name)
        if m:
            year, doy = int(m.group(1)), int(m.group(2))
            if not 1 <= doy <= 366:
                raise DataError(f"{parent}: day of year {doy} in the folder name is not 1..366")
            return (_dt.date(year, 1, 1) + _dt.timedelta(days=doy - 1)).isoformat()
    return None


def import_csiro_envi(
    ds: Dataset, folder: Path, root: Path, *, write: bool = True, source_extra: dict | None = None
) -> Manifest:
    """Importer of the CSIRO CIA/LGC archives (ENVI files in ``YYYY_DOY_MonDD`` folders)."""
    pairs: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or _hidden(path, root) or path.suffix in HEADER_EXT:
            continue
        if path.suffix.lower() in (".hdr", ".aux", ".xml", ".txt", ".pdf", ".doc", ".docx", ".zip"):
            continue
        if MODIS_NAME.match(path.name):
            role = "coarse"
        elif LANDSAT_NAME.match(path.name):
            role = "fine"
        else:
            continue
        if not _has_header(path):
            raise DataError(f"{path}: ENVI image without a .hdr header beside it")
        date = _folder_date(path, root)
        if date is None:
            if role == "coarse":
                m = MODIS_NAME.match(path.name)
                date = (_dt.date(int(m.group(1)), 1, 1) + _dt.timedelta(days=int(m.group(2)) - 1)).isoformat()
            else:
                raise DataError(f"{path}: not inside a YYYY_DOY_MonDD date folder, so its date is unknown")
        slot = pairs.setdefault(date, {})
        if role in slot:
            raise DataError(f"two {role} images for {date}: {slot[role]} and {path}")
        slot[role] = path
    return _finish(ds, folder, pairs, "csiro-envi", write=write, source_extra=source_extra)


def _dated_name(path: Path, shown: str) -> tuple[str, str]:
    """``(role, date)`` of a ``dated-geotiff`` file name, or a :class:`DataError` naming the file as ``shown``."""
    expected = "<L|F>_YYYY-MM-DD.tif (fine) or <M|C>_YYYY-MM-DD.tif (coarse)"
    m = DATED_NAME.match(path.name)
    role = DATED_PREFIXES.get(m.group("prefix").upper()) if m else None
    if m is None or role is None:
        raise DataError(f"{shown}: file name does not follow the dated-geotiff layout {expected}")
    try:
        date = _dt.date.fromisoformat(m.group("date")).isoformat()
    except ValueError:
        raise DataError(f"{shown}: {m.group('date')} in the file name is not a calendar date (YYYY-MM-DD)") from None
    return role, date


def import_dated_geotiff(
    ds: Dataset, folder: Path, root: Path, *, write: bool = True, source_extra: dict | None = None
) -> Manifest:
    """Importer of GeoTIFFs named ``<prefix>_YYYY-MM-DD.tif`` (see :data:`DATED_PREFIXES`)."""
    pairs: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        # only GeoTIFFs are images here: SOURCE.md, READMEs and .aux.xml side files are left alone
        if not path.is_file() or _hidden(path, root) or path.suffix.lower() not in GEOTIFF_EXT:
            continue
        # named as inside the user's folder or archive: a manual import reads a staging copy of it
        shown = path.relative_to(root).as_posix()
        role, date = _dated_name(path, shown)
        slot = pairs.setdefault(date, {})
        if role in slot:
            raise DataError(f"two {role} images for {date}: {slot[role].relative_to(root).as_posix()} and {shown}")
        slot[role] = path
    return _finish(ds, folder, pairs, "dated-geotiff", write=write, source_extra=source_extra)


def build_manifest(
    ds: Dataset, folder: Path, files_dir: Path, *, write: bool = True, source_extra: dict | None = None
) -> Manifest:
    """Run the importer named by ``ds.access.layout`` over ``files_dir`` and write ``folder/manifest.json``
    (only check, when ``write`` is False)."""
    if ds.access.layout == "csiro-envi":
        return import_csiro_envi(ds, folder, files_dir, write=write, source_extra=source_extra)
    if ds.access.layout == "dated-geotiff":
        return import_dated_geotiff(ds, folder, files_dir, write=write, source_extra=source_extra)
    if not any(f.role in ("fine", "coarse") for f in ds.access.files):
        raise DataError(
            f"dataset {ds.id!r}: layout {ds.access.layout!r} has no importer and access.files gives no "
            "fine/coarse roles; add role and date to each file"
        )
    return import_declared(ds, folder, files_dir, write=write, source_extra=source_extra)
