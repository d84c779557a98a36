"""Where data lives: ``--dir`` > ``STFCAT_DATA_DIR`` > the platform cache (``pooch.os_cache("stfcat")``)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "STFCAT_DATA_DIR"


def data_root(override: str | Path | None = None) -> Path:
    """The folder that holds one sub-folder per dataset."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("stfcat"))


def dataset_dir(dataset_id: str, override: str | Path | None = None) -> Path:
    return data_root(override) / dataset_id


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | Path) -> None:
    """Give a file or folder made by ``tempfile`` (mode 0600/0700) the mode a plain ``open``/``mkdir``
    would have given it, so a shared data folder stays readable by the group/others the umask allows."""
    p = Path(path)
    base = 0o777 if p.is_dir() else 0o666
    os.chmod(p, base & ~_umask())
