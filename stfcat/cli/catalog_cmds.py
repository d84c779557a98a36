"""catalog commands (filled in by the catalog work)."""

from __future__ import annotations

from stfcat.cli.main import app  # noqa: F401
