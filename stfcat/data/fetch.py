"""``stfcat fetch``: download (or import) a catalog dataset and normalise it into a manifest.

* ``access.kind: direct``: every file of ``access.files`` is downloaded by pooch from its URL
  into ``<data>/<id>/files/``, its sha256 checked (a null hash is impossible: the schema requires
  one), with retries and back-off (``retry_if_failed``) and a progress bar. pooch streams into a
  temporary file and moves it into place only after the hash matched, so a failed or corrupt
  download never leaves a file where a complete one is expected. Archives (``archive: true``) are
  extracted safely (:mod:`stfcat.data.extract`). A second call finds the files (pooch re-checks
  their hashes) and downloads nothing.
* ``manual``: the host does not allow direct download. Without ``--from`` the instructions and
  the landing page are shown; ``--from ARCHIVE_OR_FOLDER`` verifies, imports and normalises:
  the archive is extracted safely (archives inside it too, one level) into a staging folder, the
  importer checks it against the YAML's facts (dates, image size, bands), and only then does it
  replace ``files/archive``, so a bad archive never destroys a good import. The archive's name and
  sha256 are recorded in the manifest's ``source``.
* ``mirror``: a copy in a public GitHub repository at a fixed commit, each file checked against its
  git blob SHA-1 before it is moved into place (:mod:`stfcat.data.mirrors`).
* ``external``: catalog-only; the landing page is shown.
* ``embedded`` (``demo``): nothing to download; the demo is generated.

``--from`` also works for ``direct`` datasets (offline machines): the files are looked up by name
in the folder or archive (when a name occurs twice, the copy with the right hash is taken), their
sha256 checked, and copied into place (hard-linked when on the same file system).

Files and folders are created with the permissions the umask gives (not ``tempfile``'s 0600/0700),
so a shared ``STFCAT_DATA_DIR`` stays readable.

The data folder is ``--dir`` / ``data_dir``, else ``STFCAT_DATA_DIR``, else
``pooch.os_cache("stfcat")``; each dataset lives in its own sub-folder with its ``manifest.json``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stfcat.schemas import Dataset, RemoteFile

from .errors import DataError, FetchError
from .extract import DEFAULT_MAX_BYTES, is_archive, safe_extract
from .importers import build_manifest
from .manifest import MANIFEST_NAME
from .paths import dataset_dir, publish_mode

FILES = "files"


@dataclass
class FetchResult:
    dataset: str
    status: str  # "embedded", "external", "manual", "ready"
    folder: Path | None
    message: str
    downloaded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("embedded", "ready")


def _archive_dir(files_dir: Path, name: str) -> Path:
    stem = re.sub(r"(\.tar\.gz|\.tar\.bz2|\.tar\.xz|\.tgz|\.zip|\.tar)$", "", name, flags=re.IGNORECASE)
    return files_dir / (stem if stem != name else f"{name}.d")


def _offline_hint(ds_id: str) -> str:
    return f"If this machine is offline, get the files elsewhere and run `stfcat fetch {ds_id} --from PATH`."


def _download_one(
    ds: Dataset, f: RemoteFile, dest_dir: Path, *, progress: bool, timeout: float, retries: int
) -> bool:
    """Download ``f`` into ``dest_dir`` through pooch; return True when bytes were transferred."""
    import pooch
    import requests

    target = dest_dir / f.name
    existed = target.is_file()
    pup = pooch.create(
        path=dest_dir,
        base_url="",
        registry={f.name: f"sha256:{f.sha256}"},
        urls={f.name: f.url},
        retry_if_failed=retries,
    )
    before = target.stat().st_mtime_ns if existed else None
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    try:
        pup.fetch(f.name, downloader=downloader)
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "error"
        raise FetchError(f"{ds.id}: {f.name}: HTTP {code} from {f.url}") from exc
    except requests.exceptions.Timeout as exc:
        raise FetchError(
            f"{ds.id}: {f.name}: no answer from {f.url} within {timeout:g} s (timeout). {_offline_hint(ds.id)}"
        ) from exc
    except requests.exceptions.ChunkedEncodingError as exc:
        raise FetchError(
            f"{ds.id}: {f.name}: transfer from {f.url} was cut short (truncated); try again"
        ) from exc
    except requests.exceptions.ConnectionError as exc:
        if _is_read_timeout(exc):  # requests reports a stall in the body as a ConnectionError
            raise FetchError(
                f"{ds.id}: {f.name}: {f.url} answered, then sent nothing for {timeout:g} s (read timeout during "
                "the transfer); try again or raise --timeout"
            ) from exc
        raise FetchError(f"{ds.id}: {f.name}: cannot connect to {f.url}. {_offline_hint(ds.id)}") from exc
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"{ds.id}: {f.name}: download from {f.url} failed: {exc}") from exc
    except ValueError as exc:
        got = re.search(r"but got ([0-9a-f]{64})", str(exc))
        raise FetchError(
            f"{ds.id}: {f.name}: sha256 mismatch for {f.url}: expected {f.sha256}, got "
            f"{got.group(1) if got else 'another hash'}; the corrupt download was removed"
        ) from exc
    size = target.stat().st_size
    if size != f.size:
        raise FetchError(
            f"{ds.id}: {f.name}: {size} bytes but the catalog says size {f.size} (the sha256 matched, so "
            "the catalog entry's size is wrong)"
        )
    transferred = not existed or target.stat().st_mtime_ns != before
    if transferred:
        publish_mode(target)  # pooch's temporary file is 0600
    return transferred


def _is_read_timeout(exc: BaseException) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, ReadTimeoutError) or any(isinstance(a, ReadTimeoutError) for a in seen.args):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Read timed out" in str(exc)


def _check_options(timeout: float, retries: int, max_bytes: int) -> None:
    import math

    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DataError(f"--retries {retries}: must be a whole number, 0 or more")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise DataError(f"--timeout {timeout}: must be a positive number of seconds")
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise DataError(f"max_bytes {max_bytes}: must be a positive number of bytes")


def _sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _copy_into(src: Path, dest: Path) -> None:
    """Copy a file into place atomically (hard link when possible)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_tree(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-{os.getpid()}-", dir=dest.parent))
    try:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            if path.is_symlink():
                raise DataError(f"{path}: symbolic links are not imported; copy the real file there")
            if path.is_dir():
                (tmp / rel).mkdir(parents=True, exist_ok=True)
            elif path.is_file():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, tmp / rel)
                except OSError:
                    shutil.copyfile(path, tmp / rel)
        publish_mode(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _import_direct(ds: Dataset, source: Path, files_dir: Path, max_bytes: int) -> list[str]:
    """``--from`` for a direct dataset: find each listed file by name, check its sha256, copy it."""
    staging: Path | None = None
    try:
        if source.is_file():
            if not is_archive(source):
                raise DataError(f"{source}: --from needs a folder or a zip/tar archive")
            staging = Path(tempfile.mkdtemp(prefix=f".from-{os.getpid()}-", dir=files_dir.parent))
            safe_extract(source, staging / "x", max_bytes=max_bytes)
            root = staging / "x"
        elif source.is_dir():
            root = source
        else:
            raise DataError(f"{source}: --from path does not exist")
        index: dict[str, list[Path]] = {}
        for p in sorted(root.rglob("*")):
            if p.is_file():
                index.setdefault(p.name, []).append(p)
        missing = [f.name for f in ds.access.files if f.name not in index]
        if missing:
            raise DataError(f"{source}: missing files of dataset {ds.id!r}: {', '.join(missing)}")
        chosen: dict[str, Path] = {}
        for f in ds.access.files:
            # the same name may sit in several sub-folders (e.g. filled/ and unfilled/): take the one
            # whose hash is right
            hashes = {p: _sha256(p) for p in index[f.name]}
            good = [p for p, h in hashes.items() if h == f.sha256]
            if not good:
                p, got = next(iter(hashes.items()))
                raise FetchError(f"{p}: sha256 mismatch: expected {f.sha256}, got {got}")
            chosen[f.name] = good[0]
        for f in ds.access.files:
            _copy_into(chosen[f.name], files_dir / f.name)
        return [f.name for f in ds.access.files]
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _extract_nested(root: Path, max_bytes: int) -> None:
    """Portal downloads often wrap per-folder archives in the outer one: extract those (one level,
    safely, by their file extension so raw images are never mistaken for tar files) beside
    themselves, into a folder named after the archive, and drop the inner archive."""
    for inner in sorted(root.rglob("*")):
        name = inner.name.lower()
        if inner.is_file() and name.endswith(ARCHIVE_SUFFIXES) and is_archive(inner):
            safe_extract(inner, _archive_dir(inner.parent, inner.name), max_bytes=max_bytes, force=True)
            inner.unlink()


ARCHIVE = "archive"
# leftovers of killed fetches in files/ (removed when stale, see stfcat.data.safe_fs): staging and
# swap folders of manual imports, partial extractions and copies, pooch's partial downloads
FILES_LEFTOVERS = (".archive-incoming*", "..archive-incoming*", ".archive-old*", ".from-*", ".*.partial-*",
                   ".*.????????.tmp", "tmp*")


def _recover(files_dir: Path, ds: Dataset) -> None:
    """Undo what a killed fetch left half-done, then drop stale leftovers: a manual import killed
    between its two renames left the previous ``archive`` aside (put back); a ``--force``
    download killed midway left the good copy as ``.NAME.bak`` (put back), or a finished one left
    the ``.bak`` beside the new file (removed)."""
    from .safe_fs import clean_stale, is_stale

    target = files_dir / ARCHIVE
    if not target.exists():
        olds = [p for p in sorted(files_dir.glob(".archive-old*")) if p.is_dir() and is_stale(p, max_age=0)]
        if olds:
            os.replace(olds[-1], target)
    for f in ds.access.files:
        bak, path = files_dir / f".{f.name}.bak", files_dir / f.name
        if bak.is_file() and not path.exists():
            os.replace(bak, path)
        elif bak.is_file() and path.is_file():
            bak.unlink()
    clean_stale(files_dir, FILES_LEFTOVERS)
    clean_stale(files_dir.parent, (".from-*", ".manifest-*.tmp"))


def _import_manual(ds: Dataset, source: Path, folder: Path, files_dir: Path, max_bytes: int) -> dict:
    """``--from`` for a manual dataset: unpack/copy into a staging folder of this process, check it
    with the importer, and only then swap it in for ``files/archive``, so a bad or interrupted
    import never replaces a good one (a killed import leaves only a staging folder, removed by the
    next fetch). Returns where the data came from (with the archive's sha256), recorded in the
    manifest's source."""
    from .safe_fs import temp_prefix

    target = files_dir / ARCHIVE
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix("archive-incoming"), dir=files_dir))
    try:
        if source.is_dir():
            _copy_tree(source, staging)
            origin = {"from": source.name, "kind": "folder"}
        elif is_archive(source):
            safe_extract(source, staging, max_bytes=max_bytes, force=True)
            origin = {"from": source.name, "kind": "archive", "sha256": _sha256(source)}
        else:
            raise DataError(f"{source}: --from needs a folder or a zip/tar archive")
        _extract_nested(staging, max_bytes)
        build_manifest(ds, folder, staging, write=False)  # raises, naming the file, before anything moves
        old = Path(tempfile.mkdtemp(prefix=temp_prefix("archive-old"), dir=files_dir))
        try:
            if target.exists():
                os.replace(target, old)  # (a folder may be renamed onto an empty one)
            os.replace(staging, target)
        except BaseException:
            if not target.exists() and any(old.iterdir()):
                os.replace(old, target)  # put the previous import back
            shutil.rmtree(old, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return origin


def fetch(
    dataset_id: str,
    *,
    catalog: Any = None,
    data_dir: str | Path | None = None,
    from_path: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 3,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FetchResult:
    """Fetch or import ``dataset_id`` into the data folder and write its manifest."""
    from .catalog_access import get_dataset
    from .safe_fs import ensure_dir

    _check_options(timeout, retries, max_bytes)

    ds = get_dataset(dataset_id, catalog)
    kind = ds.access.kind
    folder = dataset_dir(ds.id, data_dir)
    if kind == "embedded":
        if ds.id == "demo":
            from .demo import ensure_demo

            ensure_dir(folder, "--dir")
            ensure_demo(folder)
            return FetchResult(
                ds.id,
                "embedded",
                folder,
                f"{ds.id}: embedded dataset, nothing to download; generated in {folder}",
            )
        return FetchResult(ds.id, "embedded", None, f"{ds.id}: embedded dataset, nothing to download")
    if kind == "external":
        return FetchResult(
            ds.id,
            "external",
            None,
            f"{ds.id}: catalog-only dataset; stfcat does not download or import it. See {ds.landing_page}",
        )
    if kind == "mirror":  # a commit-pinned GitHub copy: stfcat.data.mirrors does all of it
        from .mirrors import fetch_mirror

        return fetch_mirror(ds, folder, catalog=catalog, force=force, progress=progress, timeout=timeout,
                            retries=retries, from_path=Path(from_path).expanduser() if from_path else None)
    if kind == "manual" and from_path is None:
        text = (ds.access.instructions or "").strip()
        return FetchResult(
            ds.id,
            "manual",
            None,
            f"{ds.id}: the host does not allow direct download.\n{text}\nLanding page: {ds.landing_page}\n"
            f"Then run: stfcat fetch {ds.id} --from PATH (the archive or its unpacked folder)",
        )
    files_dir = ensure_dir(folder / FILES, "--dir")
    _recover(files_dir, ds)
    downloaded: list[str] = []
    origin: dict | None = None
    if from_path is not None:
        source = Path(from_path).expanduser()
        if not source.exists():
            raise DataError(f"{source}: --from path does not exist")
        if kind == "manual":
            origin = _import_manual(ds, source, folder, files_dir, max_bytes)
            downloaded = [source.name]
        else:
            downloaded = _import_direct(ds, source, files_dir, max_bytes)
    else:
        # --force: keep the old copies aside until every new download succeeded, so a failed
        # re-download loses nothing
        backups: list[tuple[Path, Path]] = []
        if force:
            for f in ds.access.files:
                path = files_dir / f.name
                if path.is_file():
                    bak = files_dir / f".{f.name}.bak"
                    os.replace(path, bak)
                    backups.append((bak, path))
        try:
            for f in ds.access.files:
                if _download_one(ds, f, files_dir, progress=progress, timeout=timeout, retries=retries):
                    downloaded.append(f.name)
        except BaseException:
            for bak, path in backups:
                os.replace(bak, path)
            raise
        for bak, _ in backups:
            bak.unlink(missing_ok=True)
    for f in ds.access.files:
        if f.archive:
            safe_extract(
                files_dir / f.name,
                _archive_dir(files_dir, f.name),
                max_bytes=max_bytes,
                force=force or f.name in downloaded,
            )
    if downloaded or force or not (folder / MANIFEST_NAME).is_file():
        # a manual import lives in files/archive (its own tree); direct files sit in files/
        root = files_dir / ARCHIVE if kind == "manual" else files_dir
        build_manifest(ds, folder, root, source_extra=origin)
    verb = "imported" if from_path is not None else ("downloaded" if downloaded else "already present")
    return FetchResult(
        ds.id,
        "ready",
        folder,
        f"{ds.id}: {len(downloaded) if downloaded else len(ds.access.files)} file(s) {verb}; manifest {folder / MANIFEST_NAME}",
        downloaded,
    )
