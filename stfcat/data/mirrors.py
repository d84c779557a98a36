"""Benchmark data from commit-pinned GitHub mirrors (``access.kind: mirror``).

Several public repositories keep copies (or crops) of the survey's benchmark sets in their git trees.
The catalog pins each copy to a commit and lists every file's path and **git blob SHA-1**
(``sha1(b"blob <size>\\0" + content)``, a content hash as sha256 is). ``stfcat fetch <id>``:

1. downloads ``https://raw.githubusercontent.com/<repository>/<commit>/<path>`` for each file into a
   temporary file beside its destination, with retries and back-off;
2. checks the blob hash (a Git LFS pointer that hashes right is followed to
   ``https://media.githubusercontent.com/media/...`` and the real file checked against the pointer's
   sha256 and size); only then moves it to ``<data>/<id>/files/<path>``. A corrupt download is
   deleted and the error names the file; nothing half-written is ever in place;
3. reads what the catalog cannot know (band count, dtype, grid, CRS, scale, no-data) from the
   downloaded files and writes the manifest, recording how each fact was found in ``source.read``.

Dates, sensors and DOIs stay the catalog's (as the repositories' file names and papers state them).
``STFCAT_MIRROR_BASE_URL`` replaces ``https://raw.githubusercontent.com`` (tests serve generated files
from 127.0.0.1; a local proxy works too) and ``STFCAT_MIRROR_MEDIA_URL`` the LFS media host
(default: ``<base>/media`` when the base is replaced). ``--from FOLDER`` takes the files from a git
clone or a copy of the repository instead (each still hash-checked).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stfcat.schemas import Dataset, Mirror, MirrorFile

from .errors import DataError, FetchError
from .manifest import MANIFEST_NAME, ImageEntry, Manifest, PairEntry, SplitEntry, write_manifest
from .paths import publish_mode

RAW_BASE = "https://raw.githubusercontent.com"
MEDIA_BASE = "https://media.githubusercontent.com/media"
FILES = "files"
CHUNK = 1 << 20
LFS_HEAD = b"version https://git-lfs.github.com/spec/v1"
# Reflectance never exceeds 1.6 (manifest reading rule); stored x 10000 it stays below 16000.
MAX_REFLECTANCE = 1.6


def blob_sha1(data: bytes) -> str:
    """Git's blob hash of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def base_urls() -> tuple[str, str]:
    raw = os.environ.get("STFCAT_MIRROR_BASE_URL", "").rstrip("/")
    media = os.environ.get("STFCAT_MIRROR_MEDIA_URL", "").rstrip("/")
    return raw or RAW_BASE, media or (f"{raw}/media" if raw else MEDIA_BASE)


def raw_url(m: Mirror, path: str) -> str:
    return f"{base_urls()[0]}/{m.repository}/{m.commit}/{path}"


def media_url(m: Mirror, path: str) -> str:
    return f"{base_urls()[1]}/{m.repository}/{m.commit}/{path}"


def describe(ds: Dataset) -> str:
    """Source, licences and citation of a mirrored dataset: shown on every fetch."""
    m = ds.access.mirror
    cite = [f"stfcat cite {c}" for c in ds.citation]
    if ds.doi:
        cite.append(f"doi:{ds.doi}")
    if ds.bibtex:
        title = re.search(r"title\s*=\s*[{\"](.+?)[}\"],?\s*$", ds.bibtex, re.M)
        doi = re.search(r"doi\s*=\s*[{\"](.+?)[}\"]", ds.bibtex)
        cite.append((title.group(1) if title else "see the BibTeX in the catalog") + (f" (doi:{doi.group(1)})" if doi else ""))
    return "\n".join([
        f"{ds.id}: {m.what}",
        f"  source: https://github.com/{m.repository}/tree/{m.commit} (files pinned to this commit)",
        f"  repository licence: {m.licence}",
        f"  data licence: {ds.licence}",
        f"  cite: {'; '.join(cite) if cite else 'see ' + ds.landing_page}",
    ])


# ---------------------------------------------------------------- download and verify


def _stream(url: str, tmp: Path, *, timeout: float, progress: bool, label: str) -> None:
    import requests

    with requests.get(url, stream=True, timeout=timeout) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)
        try:
            with open(tmp, "wb") as fh:
                for chunk in resp.iter_content(CHUNK):
                    fh.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and tmp.stat().st_size != total:
            raise requests.exceptions.ChunkedEncodingError(f"{tmp.stat().st_size} of {total} bytes")


def _with_retries(ds_id: str, name: str, url: str, action: Callable[[], None], *, retries: int, timeout: float) -> None:
    """Run ``action`` (one download); retry transfer failures and 5xx with back-off, explain the last one."""
    import requests

    for attempt in range(retries + 1):
        try:
            action()
            return
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code < 500 or attempt == retries:
                raise FetchError(f"{ds_id}: {name}: HTTP {code or 'error'} from {url}") from exc
        except requests.exceptions.Timeout as exc:
            if attempt == retries:
                raise FetchError(f"{ds_id}: {name}: no answer from {url} within {timeout:g} s (timeout)") from exc
        except requests.exceptions.ChunkedEncodingError as exc:
            if attempt == retries:
                raise FetchError(f"{ds_id}: {name}: transfer from {url} was cut short (truncated); try again") from exc
        except requests.exceptions.ConnectionError as exc:
            if attempt == retries:
                raise FetchError(
                    f"{ds_id}: {name}: cannot connect to {url}. Offline? Clone or copy the repository elsewhere "
                    f"and run `stfcat fetch {ds_id} --from FOLDER`"
                ) from exc
        except requests.exceptions.RequestException as exc:
            if attempt == retries:
                raise FetchError(f"{ds_id}: {name}: download from {url} failed: {exc}") from exc
        time.sleep(min(8.0, 0.5 * 2**attempt))


def _lfs_pointer(path: Path) -> tuple[str, int] | None:
    """``(sha256, size)`` when ``path`` is a Git LFS pointer file, else None."""
    if path.stat().st_size > 1024:
        return None
    text = path.read_bytes()
    if not text.startswith(LFS_HEAD):
        return None
    oid = re.search(rb"^oid sha256:([0-9a-f]{64})$", text, re.M)
    size = re.search(rb"^size (\d+)$", text, re.M)
    if not (oid and size):
        raise FetchError(f"{path.name}: a Git LFS pointer without oid/size")
    return oid.group(1).decode(), int(size.group(1))


def _fetch_file(ds: Dataset, f: MirrorFile, dest: Path, *, timeout: float, retries: int, progress: bool) -> None:
    """Download ``f`` to a temporary file beside ``dest``, verify it, then move it into place."""
    m = ds.access.mirror
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        url = raw_url(m, f.path)
        _with_retries(ds.id, f.path, url, lambda: _stream(url, tmp, timeout=timeout, progress=progress, label=dest.name),
                      retries=retries, timeout=timeout)
        got = file_blob_sha1(tmp)
        if got != f.blob_sha1:
            raise FetchError(
                f"{ds.id}: {f.path}: git blob SHA-1 mismatch for {url}: expected {f.blob_sha1}, got {got}; "
                "the download was deleted and nothing was moved into place"
            )
        pointer = _lfs_pointer(tmp)
        if pointer is not None:  # the commit holds a Git LFS pointer: get the content it names
            sha, size = pointer
            murl = media_url(m, f.path)
            _with_retries(ds.id, f.path, murl, lambda: _stream(murl, tmp, timeout=timeout, progress=progress,
                                                                 label=dest.name), retries=retries, timeout=timeout)
            got_sha, got_size = _file_sha256(tmp), tmp.stat().st_size
            if (got_sha, got_size) != (sha, size):
                raise FetchError(
                    f"{ds.id}: {f.path}: Git LFS content from {murl} does not match its pointer (sha256 {sha}, "
                    f"{size} bytes; got {got_sha}, {got_size} bytes); nothing was moved into place"
                )
        publish_mode(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _verified(path: Path, f: MirrorFile) -> bool:
    # a file already in place was verified when it arrived; its blob hash (or, after an LFS download,
    # its presence) is checked again so a damaged copy is replaced
    return path.is_file() and (file_blob_sha1(path) == f.blob_sha1 or _lfs_sized(path, f))


def _lfs_sized(path: Path, f: MirrorFile) -> bool:
    marker = path.with_name(f".{path.name}.lfs")
    return marker.is_file() and marker.read_text().strip() == f"{f.blob_sha1} {_file_sha256(path)}"


def _copy_from(source: Path, ds: Dataset, f: MirrorFile, dest: Path) -> None:
    """``--from FOLDER``: take ``f`` from a clone/copy of the repository (by path, else by name), hash-checked."""
    candidates = [source / f.path] + sorted(p for p in source.rglob(Path(f.path).name) if p != source / f.path)
    candidates = [p for p in candidates if p.is_file()]
    if not candidates:
        raise DataError(f"{source}: no file {f.path} (or {Path(f.path).name}) for dataset {ds.id!r}")
    good = next((p for p in candidates if file_blob_sha1(p) == f.blob_sha1), None)
    if good is None:
        raise FetchError(
            f"{candidates[0]}: git blob SHA-1 mismatch: expected {f.blob_sha1}, got {file_blob_sha1(candidates[0])}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(good, name)
        publish_mode(name)
        os.replace(name, dest)
    finally:
        Path(name).unlink(missing_ok=True)


def download_mirror(
    ds: Dataset, folder: Path, *, force: bool = False, from_path: Path | None = None,
    timeout: float = 60.0, retries: int = 3, progress: bool = True,
) -> list[str]:
    """Bring every mirror file into ``folder/files/<path>``; return the paths transferred."""
    files_dir = folder / FILES
    done: list[str] = []
    for f in ds.access.mirror.files:
        dest = files_dir / f.path
        if not force and _verified(dest, f):
            continue
        if from_path is not None:
            _copy_from(from_path, ds, f, dest)
        else:
            _fetch_file(ds, f, dest, timeout=timeout, retries=retries, progress=progress)
            if file_blob_sha1(dest) != f.blob_sha1:  # came through Git LFS: remember what was verified
                dest.with_name(f".{dest.name}.lfs").write_text(f"{f.blob_sha1} {_file_sha256(dest)}\n")
        done.append(f.path)
    return done


# ---------------------------------------------------------------- facts read from the files


def _scale_of(path: Path) -> tuple[float, str]:
    """The file's scale factor and how it was found: a GeoTIFF scale tag, else the value range."""
    from .readers import _open

    with _open(path) as src:
        scales = [s for s in (src.scales or ()) if s not in (None, 1.0)]
        if scales:
            return float(scales[0]), "scale tag of the file"
        step = max(1, max(src.height, src.width) // 256)
        sample = src.read(out_shape=(src.count, max(1, src.height // step), max(1, src.width // step)))
        nodata = src.nodata
    vals = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if nodata is not None:
        vals = vals[vals != nodata]
    top = float(np.percentile(vals, 99)) if vals.size else 0.0
    if top <= 2.0:
        return 1.0, f"values up to {top:.3g}: stored as reflectance"
    if top <= MAX_REFLECTANCE * 10000:
        return 1e-4, f"values up to {top:.0f}: reflectance x 10000"
    raise DataError(
        f"{path}: values up to {top:.0f} (99th percentile) fit neither reflectance nor reflectance x 10000; "
        "its scale is unknown, so no manifest was written"
    )


def _image(folder: Path, path: Path, scale: float, default_scale: float, nodata, default_nodata, grid: str) -> ImageEntry:
    return ImageEntry(
        path=path.relative_to(folder).as_posix(),
        grid=grid,
        scale_factor=None if scale == default_scale else scale,
        nodata=None if nodata == default_nodata else nodata,
    )


def _band_names(ds: Dataset, count: int, where: Path) -> tuple[list[str], str]:
    if ds.fine.bands:
        if len(ds.fine.bands) != count:
            raise DataError(f"{where}: {count} bands, but dataset {ds.id!r} lists {len(ds.fine.bands)}")
        return list(ds.fine.bands), "catalog"
    return [f"b{i}" for i in range(1, count + 1)], "not stated by the repository: named b1..bN in file order"


def _ratio(fine, coarse, ds: Dataset) -> tuple[int | None, str]:
    from .importers import _ratio as catalog_ratio

    if coarse is not None and fine.transform and coarse.transform and coarse.shape != fine.shape:
        return max(1, round(abs(coarse.transform[0]) / abs(fine.transform[0]))), "pixel sizes of the files"
    if coarse is not None and coarse.shape != fine.shape:
        return max(1, round(fine.shape[0] / coarse.shape[0])), "grid sizes of the files"
    return catalog_ratio(ds), "catalog resolutions (coarse images are on the fine grid)"


def _manifest(ds: Dataset, folder: Path, images: dict[str, dict[str, Path]], read: dict) -> Manifest:
    from .readers import raster_info

    first_date = next(d for d in sorted(images) if "fine" in images[d])
    fine0 = raster_info(images[first_date]["fine"])
    bands, read["bands"] = _band_names(ds, fine0.count, fine0.path)
    scale0, read["scale"] = _scale_of(fine0.path)
    coarse0 = next((raster_info(r["coarse"]) for _, r in sorted(images.items()) if "coarse" in r), None)
    ratio, read["ratio"] = _ratio(fine0, coarse0, ds)
    pairs, grids, coarse_rules = [], set(), set()
    for date, roles in sorted(images.items()):
        kw = {}
        for role, path in roles.items():
            info = raster_info(path)
            if info.count != fine0.count:
                raise DataError(f"{path}: {info.count} bands, but {fine0.path.name} has {fine0.count}")
            grid = "fine" if info.shape == fine0.shape else "native"
            if role == "fine" and grid != "fine":
                raise DataError(f"{path}: grid {info.shape} differs from the fine grid {fine0.shape} of {fine0.path.name}")
            scale, rule = _scale_of(path)
            if role == "coarse":
                grids.add(grid)
                coarse_rules.add(rule.split(":")[-1].strip())
            kw[role] = _image(folder, path, scale, scale0, info.nodata, fine0.nodata, grid)
        pairs.append(PairEntry(date=date, **kw))
    read["coarse_grid"] = "/".join(sorted(grids)) or "no coarse images"
    if coarse_rules:
        read["coarse_scale"] = "; ".join(sorted(coarse_rules))
    read["grid"] = f"{fine0.shape[0]}x{fine0.shape[1]} ({fine0.dtype}, {fine0.crs or 'no CRS'})"
    m = ds.access.mirror
    split = SplitEntry()
    if ds.split:
        split = SplitEntry(train=[d for d in ds.split.train if d in images], test=[d for d in ds.split.test if d in images],
                           note=ds.split.note)
    from .importers import metres

    return Manifest(
        name=ds.id, bands=bands, scale_factor=scale0, nodata=fine0.nodata,
        fine_resolution=metres(ds.fine.resolution),
        coarse_resolution=metres(ds.coarse.resolution) if ds.coarse else None,
        ratio=ratio, shape=fine0.shape, crs=fine0.crs,
        transform=list(fine0.transform) if fine0.transform else None, split=split, pairs=pairs,
        source={
            "dataset": ds.id, "layout": "mirror", "repository": m.repository, "commit": m.commit,
            "url": f"https://github.com/{m.repository}/tree/{m.commit}", "licence": m.licence, "what": m.what,
            "read": read, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _stack_images(ds: Dataset, folder: Path, files_dir: Path, dates_of: Callable[[str], list[str]], read: dict) -> dict:
    """Date-less numpy stacks (time, band, rows, cols): one GeoTIFF per step under ``files/steps/``,
    dated by ``mirror.dates_from`` when the number of steps matches, else no manifest."""
    from .readers import write_geotiff

    m = ds.access.mirror
    stacks = {}
    for f in m.files:
        if f.role in ("fine-stack", "coarse-stack"):
            arr = np.load(files_dir / f.path, mmap_mode="r", allow_pickle=False)  # never unpickle
            if arr.ndim != 4:
                raise DataError(f"{files_dir / f.path}: shape {arr.shape}, expected (time, band, rows, cols)")
            stacks[f.role.split("-")[0]] = (f.path, arr)
    shapes = {role: a.shape for role, (_, a) in stacks.items()}
    steps = {s[0] for s in shapes.values()}
    dates = dates_of(m.dates_from) if m.dates_from else []
    if len(steps) != 1 or not dates or steps.pop() != len(dates):
        raise DataError(
            f"{ds.id}: files verified in {files_dir}, but the arrays ({shapes}) carry no dates and their time axis "
            f"does not match the {len(dates)} dates of {m.dates_from or 'any dataset'}; no manifest written "
            "(read them with numpy.load(..., allow_pickle=False))"
        )
    read["dates"] = f"{len(dates)} steps, assumed to be the {len(dates)} dates of dataset {m.dates_from!r}, in order"
    read["stacks"] = {role: f"{p}: {list(a.shape)} {a.dtype}" for role, (p, a) in stacks.items()}
    images: dict[str, dict[str, Path]] = {}
    for role, (_, arr) in stacks.items():
        for i, date in enumerate(dates):
            path = files_dir / "steps" / role / f"{date}.tif"
            write_geotiff(path, np.ascontiguousarray(arr[i]))  # rewritten: the stack may be a new download
            images.setdefault(date, {})[role] = path
    return images


def build_mirror_manifest(ds: Dataset, folder: Path, dates_of: Callable[[str], list[str]] = lambda _: []) -> Manifest:
    """Write ``folder/manifest.json`` from the downloaded files (facts read from them, see ``source.read``)."""
    files_dir = folder / FILES
    read: dict = {}
    m = ds.access.mirror
    if any(f.role.endswith("-stack") for f in m.files):
        images = _stack_images(ds, folder, files_dir, dates_of, read)
    else:
        images = {}
        for f in m.files:
            if f.role in ("fine", "coarse"):
                if not f.date:
                    raise DataError(f"dataset {ds.id!r}: mirror file {f.path} has role {f.role} but no date")
                images.setdefault(f.date, {})[f.role] = files_dir / f.path
        if not any("fine" in r for r in images.values()):
            raise DataError(f"dataset {ds.id!r}: the mirror lists no fine image")
    manifest = _manifest(ds, folder, images, read)
    write_manifest(manifest, folder)
    return manifest


def fetch_mirror(
    ds: Dataset, folder: Path, *, catalog=None, force: bool = False, from_path: Path | None = None,
    timeout: float = 60.0, retries: int = 3, progress: bool = True,
):
    """``stfcat fetch`` for ``access.kind: mirror``: download/verify, then the manifest."""
    from .catalog_access import get_dataset
    from .fetch import FetchResult

    if from_path is not None and not Path(from_path).is_dir():
        raise DataError(f"{from_path}: --from for a mirrored dataset needs a folder (a clone or copy of the repository)")
    done = download_mirror(ds, folder, force=force, from_path=from_path, timeout=timeout, retries=retries,
                           progress=progress)
    if done or force or not (folder / MANIFEST_NAME).is_file():
        build_mirror_manifest(ds, folder, lambda other: list(get_dataset(other, catalog).dates))
    n = len(ds.access.mirror.files)
    verb = "imported" if from_path is not None else "downloaded"
    state = f"{len(done)} of {n} file(s) {verb}" if done else f"{n} file(s) already present"
    return FetchResult(
        ds.id, "ready", folder,
        f"{describe(ds)}\n{ds.id}: {state}, each checked against its git blob SHA-1; manifest {folder / MANIFEST_NAME}",
        done,
    )
