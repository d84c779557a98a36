"""Exceptions of the data layer. Each message names the file, field or argument at fault."""

from __future__ import annotations


class DataError(Exception):
    """Bad or inconsistent data: wrong band count, grids that do not overlap, missing dates, ..."""


class NotFetchedError(DataError):
    """A catalog dataset whose files are not in the data folder yet (run ``stfcat fetch ID``)."""


class ManifestError(DataError):
    """A ``manifest.json`` that is missing, unreadable or does not follow the format."""


class FetchError(DataError):
    """A download that failed (HTTP error, timeout, wrong hash, offline)."""


class UnsafeArchiveError(DataError):
    """An archive member that would land outside the target folder (or is a link/device)."""
