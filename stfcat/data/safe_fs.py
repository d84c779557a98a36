"""File-system guards shared by the commands that write: a folder that can be written, and the
removal of stale leftovers of killed commands.

A leftover (temporary file or folder a command makes beside its output, e.g. ``.stfcat-fuse-*``,
pooch's ``tmpXXXX``, ``.NAME.*.tmp``, ``.archive-incoming-*``) is *stale* when nothing has modified
it for :data:`STALE_SECONDS` and the process that made it is not running (when its name carries a
pid, as the ones stfcat names do: ``.<prefix>-<pid>-...``). A live command keeps writing into its
temporary files, so it never loses one; the next run of the same command removes the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError

STALE_SECONDS = 10 * 60
# the pid stfcat puts in its temporary names: ".<word>-<pid>-..." or "...partial-<pid>-..." (never a
# date's digits as in ".2020-01-01.png.x.png")
_PID = re.compile(r"(?:^\.+[a-z][a-z-]*|\.partial)-(\d+)-")


def ensure_dir(path: Path, what: str) -> Path:
    """Create ``path`` (and parents) or raise a one-line :class:`DataError` naming ``what``
    (the option it came from): a path under a file, a file in the way, no permission."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{what} {path}: exists and is not a folder") from None
    except NotADirectoryError:
        raise DataError(f"{what} {path}: a parent of this path is a file, not a folder") from None
    except OSError as exc:
        raise DataError(f"{what} {path}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataError(f"{what} {path}: no permission to write in this folder")
    return path


def check_writable_dir(path: Path, what: str) -> Path:
    """Like :func:`ensure_dir` without creating anything: ``path`` is a writable folder, or the
    nearest existing parent is one (so creating it later will work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{what} {path}: exists and is not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise DataError(f"{what} {path}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{what} {path}: no permission to write in {probe}")
    return path


def temp_prefix(name: str) -> str:
    """Prefix of a temporary file/folder that says which process made it (see :func:`clean_stale`)."""
    return f".{name}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _newest_mtime(path: Path, limit: int = 10_000) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for i, p in enumerate(path.rglob("*")):
            if i >= limit:
                break
            try:
                newest = max(newest, p.lstat().st_mtime)
            except OSError:
                continue
    return newest


def is_stale(path: Path, now: float | None = None, max_age: float = STALE_SECONDS) -> bool:
    now = time.time() if now is None else now
    try:
        if now - _newest_mtime(path) < max_age:
            return False
    except OSError:
        return False
    m = _PID.search(path.name)
    return not (m and _pid_alive(int(m.group(1))))


def clean_stale(folder: Path, patterns: Iterable[str], max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the stale entries of ``folder`` whose names match one of the glob ``patterns``;
    return what was removed. Never raises: a leftover that cannot be removed stays."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    seen: set[Path] = set()
    for pattern in patterns:
        for p in sorted(folder.glob(pattern)):
            if p in seen or not is_stale(p, now, max_age):
                continue
            seen.add(p)
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
            except OSError:
                continue
    return removed
