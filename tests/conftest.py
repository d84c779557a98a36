"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture()
def model_registry():
    """A scoped model registry: what a test registers is gone afterwards (yields the registry module)."""
    from stfcat.models import registry

    with registry.scoped():
        yield registry


@pytest.fixture()
def fresh_discovery(model_registry, monkeypatch, tmp_path):
    """Discovery runs again (plugins from ``STFCAT_PLUGINS``, modules importable from ``tmp_path``),
    inside a scoped registry; the discovered state is restored afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(model_registry, "_DISCOVERED", False)
    return model_registry
