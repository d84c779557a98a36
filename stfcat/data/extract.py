"""Safe extraction of zip and tar archives.

Every member is checked before anything is written: its path must resolve inside the target
folder (no absolute path, no drive letter, no ``..``), links must point inside the target
(outward symlinks and hard links are refused), device files and FIFOs are refused, and the
declared total size must stay under ``max_bytes``; the bytes actually written are counted too,
so an archive that lies about its sizes is stopped. Extraction goes into a temporary sibling
folder that is renamed into place at the end, and a stamp file (``.stfcat-extracted``) is then
written: a folder without a stamp is a half-finished extraction and is redone.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import UnsafeArchiveError
from .paths import publish_mode

STAMP = ".stfcat-extracted"
DEFAULT_MAX_BYTES = 64 * 1024**3  # 64 GiB: CIA + LGC unpacked are a few GiB


@dataclass
class _Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink"
    size: int
    link: str | None = None


def _clean_name(name: str, archive: Path) -> PurePosixPath:
    raw = name.replace("\\", "/")
    p = PurePosixPath(raw)
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or p.is_absolute():
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refused")
    if ".." in p.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} climbs out with '..'; refused")
    parts = [x for x in p.parts if x not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _link_inside(member: PurePosixPath, target: str, hard: bool) -> bool:
    t = target.replace("\\", "/")
    if t.startswith("/") or (len(t) > 1 and t[1] == ":"):
        return False
    base = PurePosixPath() if hard else member.parent
    depth = 0
    for part in (base / t).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def _zip_members(zf: zipfile.ZipFile, archive: Path) -> list[_Member]:
    out = []
    for info in zf.infolist():
        mode = (info.external_attr >> 16) & 0xFFFF
        if stat.S_ISLNK(mode):
            out.append(_Member(info.filename, "symlink", 0, zf.read(info).decode("utf-8", "replace")))
        elif info.is_dir():
            out.append(_Member(info.filename, "dir", 0))
        elif mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is not a regular file; refused")
        else:
            out.append(_Member(info.filename, "file", info.file_size))
    return out


def _tar_members(tf: tarfile.TarFile, archive: Path) -> list[_Member]:
    out = []
    for m in tf.getmembers():
        if m.isreg():
            out.append(_Member(m.name, "file", m.size))
        elif m.isdir():
            out.append(_Member(m.name, "dir", 0))
        elif m.issym():
            out.append(_Member(m.name, "symlink", 0, m.linkname))
        elif m.islnk():
            out.append(_Member(m.name, "hardlink", 0, m.linkname))
        else:
            raise UnsafeArchiveError(
                f"{archive}: member {m.name!r} is a device file, FIFO or other special file; refused"
            )
    return out


def _check_clashes(members: list[_Member], archive: Path) -> None:
    """Refuse, before writing, an archive whose members cannot all exist: a file and a folder of one
    name, or a member under a file or under a link (a link to a folder with members below it)."""
    kinds: dict[PurePosixPath, tuple[str, str]] = {}
    for m in members:
        path = _clean_name(m.name, archive)
        kind = "dir" if m.kind == "dir" else ("link" if m.link is not None else "file")
        prev = kinds.get(path)
        if prev is not None and "dir" in (prev[0], kind) and prev[0] != kind:
            raise UnsafeArchiveError(f"{archive}: {prev[1]!r} and {m.name!r} are a file and a folder of the same "
                                     "name; refused")
        if prev is None or kind == "dir":
            kinds.setdefault(path, (kind, m.name))
    for path, (_, name) in kinds.items():
        for parent in path.parents:
            above = kinds.get(parent)
            if above is not None and above[0] != "dir":
                what = "a link" if above[0] == "link" else "a file"
                raise UnsafeArchiveError(f"{archive}: member {name!r} lies under {above[1]!r}, which is {what}; "
                                         "refused")


def check_members(members: list[_Member], archive: Path, max_bytes: int) -> None:
    _check_clashes(members, archive)
    total = 0
    for m in members:
        path = _clean_name(m.name, archive)
        if m.link is not None and not _link_inside(path, m.link, m.kind == "hardlink"):
            raise UnsafeArchiveError(
                f"{archive}: member {m.name!r} is a link to {m.link!r}, outside the target folder; refused"
            )
        total += m.size
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive}: would extract {total} bytes, over the limit of {max_bytes} bytes (max_bytes)"
        )


def _create(dest: Path, archive: Path, name: str):
    try:
        return open(dest, "wb")
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:  # e.g. case-blind disks
        raise UnsafeArchiveError(f"{archive}: member {name!r} cannot be written ({exc.strerror or exc})") from None


def is_archive(path: Path) -> bool:
    path = Path(path)
    return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


def is_extracted(target: Path) -> bool:
    return (Path(target) / STAMP).is_file()


def safe_extract(
    archive: Path, target: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, force: bool = False
) -> Path:
    """Extract ``archive`` (zip or tar, any compression tarfile reads) into ``target``.

    Returns ``target``. Skips the work when ``target`` carries a complete-extraction stamp
    (unless ``force``). Raises :class:`UnsafeArchiveError` before writing anything when a member
    is unsafe, and leaves ``target`` untouched when extraction fails midway.
    """
    archive, target = Path(archive), Path(target)
    if is_extracted(target) and not force:
        return target
    if zipfile.is_zipfile(archive):
        opener, kind = zipfile.ZipFile, "zip"
    elif tarfile.is_tarfile(archive):
        opener, kind = tarfile.open, "tar"
    else:
        raise UnsafeArchiveError(f"{archive}: not a zip or tar archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    with opener(archive) as af:  # type: ignore[operator]
        members = _zip_members(af, archive) if kind == "zip" else _tar_members(af, archive)
        check_members(members, archive, max_bytes)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
        try:
            written = 0
            root = tmp.resolve()
            links: list[tuple[Path, str, bool]] = []
            for m in members:
                rel = _clean_name(m.name, archive)
                dest = tmp.joinpath(*rel.parts) if rel.parts else tmp
                if m.kind == "dir":
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                # a previously created link in the path could redirect the write: re-check
                if not dest.parent.resolve().is_relative_to(root):
                    raise UnsafeArchiveError(
                        f"{archive}: member {m.name!r} resolves outside the target; refused"
                    )
                if m.kind in ("symlink", "hardlink"):
                    links.append((dest, m.link or "", m.kind == "hardlink"))
                    continue
                src = af.open(m.name) if kind == "zip" else af.extractfile(m.name)
                if src is None:
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} cannot be read")
                with src, _create(dest, archive, m.name) as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise UnsafeArchiveError(
                                f"{archive}: extracted data exceeds the limit of {max_bytes} bytes (max_bytes)"
                            )
                        out.write(chunk)
            for dest, link, hard in links:
                source = (tmp / link) if hard else (dest.parent / link)
                if not source.resolve().is_relative_to(root):
                    raise UnsafeArchiveError(
                        f"{archive}: link {dest.name!r} -> {link!r} leaves the target; refused"
                    )
                # links are materialised as copies: nothing in the tree points anywhere
                if source.is_file():
                    shutil.copyfile(source, dest)
                elif source.is_dir():
                    shutil.copytree(source, dest)
            publish_mode(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
            # a name clash the member check did not foresee: still one line, nothing kept
            shutil.rmtree(tmp, ignore_errors=True)
            raise UnsafeArchiveError(f"{archive}: cannot extract {exc.filename or 'a member'} "
                                     f"({exc.strerror or exc}); refused") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    stamp = {"archive": archive.name, "members": len(members), "bytes": written}
    (target / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return target
