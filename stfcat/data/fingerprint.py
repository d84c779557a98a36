"""Provenance: what data a result was computed on, with which libraries, on which device.

The *dataset fingerprint* is a sha256 over

* the manifest without its ``source`` and the split's notes (names, bands, scales, nodata, grid,
  split, every image entry): what the data *means*; ``source`` only says where it came from and when;
* every image's stored array as read from its file (dtype, shape, bytes), in manifest order.

It hashes the arrays, not the files, so the same data fetched, imported or regenerated gives the
same fingerprint whatever the GeoTIFF compression or the GDAL version wrote; and any change of a
pixel, a date, a split or a scale changes it. The demo's generator computes the same fingerprint
from its in-memory arrays (:func:`stfcat.data.demo.generator_fingerprint`), which is how a cached
demo is checked before it is trusted.

:func:`provenance` is the block ``metrics.json`` records: the fingerprint, the versions of the
numeric libraries, the device and thread count, and the run's configuration.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import Manifest, read_manifest

FINGERPRINT_VERSION = 1  # bump when the definition changes (every stored fingerprint becomes stale)

_ARRAY_CACHE: dict[tuple[str, int, int], str] = {}


def manifest_payload(manifest: Manifest) -> bytes:
    """Canonical JSON of the manifest without ``source`` (sorted keys, no whitespace)."""
    data = manifest.model_dump(mode="json")
    data.pop("source", None)
    # notes explain; they do not change the data (rewording one must not make results stale)
    split = data.get("split") or {}
    split.pop("note", None)
    if split.get("spatial"):
        split["spatial"].pop("note", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def array_digest(arr: np.ndarray) -> str:
    """sha256 of one stored array: little-endian dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(arr)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    h = hashlib.sha256(f"{a.dtype.str}{tuple(a.shape)}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _file_array_digest(path: Path) -> str:
    """:func:`array_digest` of a raster file's stored values (memoised by path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _ARRAY_CACHE:
        import rasterio

        with rasterio.open(path) as ds:
            _ARRAY_CACHE[key] = array_digest(ds.read())
    return _ARRAY_CACHE[key]


def _images(manifest: Manifest) -> Iterator[tuple[str, str, str]]:
    for p in manifest.pairs:
        for role in ("fine", "coarse"):
            entry = getattr(p, role)
            if entry is not None:
                yield p.date, role, entry.path


def combine(manifest: Manifest, digests: Iterable[tuple[str, str, str]]) -> str:
    """The fingerprint from the manifest and ``(date, role, array digest)`` in manifest order."""
    h = hashlib.sha256(f"stfcat-fingerprint-{FINGERPRINT_VERSION}\n".encode())
    h.update(manifest_payload(manifest))
    for date, role, digest in digests:
        h.update(f"\n{date}:{role}:{digest}".encode())
    return h.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Fingerprint of the dataset in ``folder`` (its manifest.json and the images it lists)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    return combine(manifest, ((d, r, _file_array_digest(folder / p)) for d, r, p in _images(manifest)))


def dataset_fingerprint(series: Any) -> str:
    """Fingerprint of a :class:`~stfcat.data.series.PairSeries` (of its files: a cropped view
    has the fingerprint of the whole series)."""
    return folder_fingerprint(series.root)


def environment(device: Any = None) -> dict[str, Any]:
    """Versions of the numeric stack, the device and the thread count."""
    from importlib import metadata

    import stfcat

    versions: dict[str, str | None] = {"python": platform.python_version(), "stfcat": stfcat.__version__}
    for dist in ("torch", "numpy", "scipy", "rasterio"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    env: dict[str, Any] = {"versions": versions, "platform": platform.platform(), "device": str(device)}
    try:
        import torch

        env["threads"] = torch.get_num_threads()
        if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
            env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    except ImportError:  # pragma: no cover - torch is a dependency
        env["threads"] = None
    try:
        import rasterio

        env["versions"]["gdal"] = rasterio.__gdal_version__
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return env


def provenance(series: Any, *, device: Any = None, config: dict[str, Any] | None = None,
               fingerprint: str | None = None) -> dict[str, Any]:
    """The ``provenance`` block of ``metrics.json``: the data (name, fingerprint), the
    environment (:func:`environment`) and the run's ``config``."""
    return {
        "data": {"dataset": series.name,
                 "fingerprint": fingerprint if fingerprint is not None else dataset_fingerprint(series),
                 "fingerprint_version": FINGERPRINT_VERSION},
        **environment(device),
        "config": config,
    }
