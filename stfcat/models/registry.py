"""timm-style model registry: ``@register_model``, ``create_model``, ``list_models``.

Methods register themselves when their module is imported. Discovery imports
:mod:`stfcat.models.trivial` and every module of the ``stfcat_zoo`` package (the repository's
``code/`` folder), so adding a model is one module in ``code/`` plus its catalog entry.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from .base import FusionModel, Recipe

PLUGINS_ENV = "STFCAT_PLUGINS"
_REGISTRY: dict[str, ModelInfo] = {}
_DISCOVERED = False


@dataclass(frozen=True)
class ModelInfo:
    id: str
    cls: type[FusionModel]
    paper: str | None
    family: str
    n_refs: int
    trainable: bool
    recipe: Recipe | None
    params: int | None
    description: str
    task: str = "fusion"
    """Kind of data the model works on (a module of :mod:`stfcat.tasks`)."""
    parent: str | None = None
    """For a variant (same code, other fixed settings), the id of the model it derives from."""


class UnknownModelError(KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(f"unknown model {name!r}.{hint} See `stfcat list models`.")
        self.name = name
        self.suggestions = close

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


def register_model(
    name: str,
    *,
    paper: str | None,
    family: str,
    params: int | None = None,
    recipe: Recipe | None = None,
    task: str = "fusion",
    parent: str | None = None,
) -> Callable[[type[FusionModel]], type[FusionModel]]:
    """Class decorator. ``params`` is the canonical trainable-parameter count (6 bands, the
    paper's widths), asserted by the test suite."""

    def wrap(cls: type[FusionModel]) -> type[FusionModel]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"model id {name!r} registered twice ({_REGISTRY[name].cls} and {cls})")
        if cls.trainable and recipe is None:
            raise ValueError(f"trainable model {name!r} needs a training recipe")
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelInfo(
            id=name,
            cls=cls,
            paper=paper,
            family=family,
            n_refs=cls.n_refs,
            trainable=cls.trainable,
            recipe=recipe,
            params=params,
            description=doc[0] if doc else "",
            task=task,
            parent=parent,
        )
        return cls

    return wrap


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    importlib.import_module("stfcat.models.trivial")
    importlib.import_module("stfcat.models.forecast")
    zoo = importlib.import_module("stfcat_zoo")
    for mod in sorted(pkgutil.iter_modules(zoo.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"stfcat_zoo.{mod.name}")
    # Extra modules that register models (a user's own methods; the tests' tiny models in
    # subprocesses such as torchrun): comma-separated importable module names.
    for name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def list_models(pattern: str | None = None, *, task: str | None = None, family: str | None = None) -> list[str]:
    """Registered ids, optionally filtered by a shell-style ``pattern`` (``"edc*"``), task and family."""
    import fnmatch

    _discover()
    return sorted(k for k, v in _REGISTRY.items()
                  if (pattern is None or fnmatch.fnmatchcase(k, pattern))
                  and (task is None or v.task == task) and (family is None or v.family == family))


def model_info(name: str) -> ModelInfo:
    _discover()
    if name not in _REGISTRY:
        raise UnknownModelError(name, sorted(_REGISTRY))
    return _REGISTRY[name]


def create_model(name: str, bands: int | None = None, ratio: int | None = None, **overrides) -> FusionModel:
    """Build a registered model; ``overrides`` go to the model's constructor. Fusion models get
    ``bands`` (default 6) and ``ratio`` (default 16); models of other tasks take their task's
    arguments (:meth:`stfcat.tasks.Task.model_kwargs`) as keywords."""
    info = model_info(name)
    if info.task == "fusion":
        overrides = {"bands": 6 if bands is None else bands, "ratio": 16 if ratio is None else ratio, **overrides}
    else:
        overrides = {**({} if bands is None else {"bands": bands}), **({} if ratio is None else {"ratio": ratio}),
                     **overrides}
    return info.cls(**overrides)
