"""timm-style model registry: ``@register_model``, ``create_model``, ``list_models``.

Methods register themselves when their module is imported. Discovery imports
:mod:`stfcat.models.trivial`, every module of the ``stfcat_zoo`` package (the repository's
``code/`` folder) and the modules named in ``STFCAT_PLUGINS``, so adding a model is one module in
``code/`` plus its catalog entry. A module that fails to import stops discovery with a
:class:`ModelImportError` naming it (never a silently partial registry).

A *variant* is a registered model that is another one with some settings fixed (one reference
pair instead of two, a smaller width): it is registered with :func:`variant_of` (or
``register_model(..., parent=..., fixed=...)``) and listed with its parent. A subclass of a
registered model under the same paper must say so: discovery refuses an undeclared variant.

Tests that register models of their own do it inside :func:`scoped`, which restores the registry.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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
    fixed: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments a variant fixes (``create_model`` passes them; overriding one is an error)."""


class RegistryError(Exception):
    """The registry cannot be trusted: a model module does not import, or variants are inconsistent."""


class VariantError(RegistryError, ValueError):
    """A variant's parent is missing, or a subclass of a registered model does not declare its parent."""


class ModelImportError(RegistryError, ImportError):
    """A module that should register models does not import (discovery stops: no partial registry)."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        lines = [f"{mod}: {type(exc).__name__}: {exc}" for mod, exc in failures]
        super().__init__("model module(s) failed to import, the registry would be incomplete:\n  "
                         + "\n  ".join(lines))
        self.failures = failures
        self.modules = [mod for mod, _ in failures]


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
    fixed: Mapping[str, Any] | None = None,
) -> Callable[[type[FusionModel]], type[FusionModel]]:
    """Class decorator. ``params`` is the canonical trainable-parameter count (6 bands, the
    paper's widths), asserted by the test suite. ``parent`` and ``fixed`` declare a variant (see
    :func:`variant_of`, which fills in the parent's paper, family, recipe and task)."""
    if fixed and parent is None:
        raise ValueError(f"model {name!r}: 'fixed' settings make a variant; give its 'parent'")

    def wrap(cls: type[FusionModel]) -> type[FusionModel]:
        if name in _REGISTRY and not _same_class(_REGISTRY[name].cls, cls):
            raise ValueError(f"model id {name!r} registered twice ({_REGISTRY[name].cls} and {cls})")
        if cls.trainable and recipe is None:
            raise ValueError(f"trainable model {name!r} needs a training recipe")
        if parent is not None and parent == name:
            raise ValueError(f"model {name!r} cannot be its own parent")
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
            fixed=dict(fixed or {}),
        )
        return cls

    return wrap


def _same_class(a: type, b: type) -> bool:
    # re-importing a module (importlib.reload, a plugin imported under two names) re-creates its
    # classes: that is the same model registered again, not a clash of ids
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def variant_of(parent: str, name: str, *, cls: type[FusionModel] | None = None, description: str | None = None,
               params: int | None = None, **fixed: Any) -> ModelInfo:
    """Register ``name`` as a variant of the registered ``parent``: the parent's code with the
    constructor arguments ``fixed`` (e.g. ``width=32``), or ``cls``, a subclass of the parent's
    class that changes class-level settings (e.g. ``n_refs = 1``). Paper, family, recipe and task
    are the parent's; ``params`` defaults to the parent's count when nothing is fixed."""
    if parent not in _REGISTRY:
        raise ValueError(f"variant {name!r}: parent model {parent!r} is not registered (register it first)")
    base = _REGISTRY[parent]
    if cls is None:
        if not fixed:
            raise ValueError(f"variant {name!r} of {parent!r}: give fixed settings or a subclass (cls=)")
        # a class of its own, so the variant's id, n_refs and description are not the parent's
        cls = type(base.cls.__name__ + "Variant", (base.cls,), {
            "__doc__": description or f"{base.description} (variant: {_kwargs_text(fixed)})",
            "__module__": base.cls.__module__, "__qualname__": f"{base.cls.__qualname__}[{name}]"})
    elif not issubclass(cls, base.cls):
        raise ValueError(f"variant {name!r}: {cls.__qualname__} is not a subclass of {parent!r}'s class")
    elif description:
        cls.__doc__ = description
    if params is None and not fixed:
        params = base.params
    register_model(name, paper=base.paper, family=base.family, params=params, recipe=base.recipe,
                   task=base.task, parent=parent, fixed=fixed)(cls)
    return _REGISTRY[name]


def _kwargs_text(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _check_variants() -> None:
    """Every parent is registered; a subclass of a registered model under the same paper is a
    declared variant (so ``stfcat list models`` can show it with its parent)."""
    problems = []
    for info in _REGISTRY.values():
        if info.parent is not None and info.parent not in _REGISTRY:
            problems.append(f"{info.id!r}: parent {info.parent!r} is not a registered model")
        if info.parent is None and info.paper is not None:
            for other in _REGISTRY.values():
                if (other.id != info.id and other.paper == info.paper and other.cls is not info.cls
                        and issubclass(info.cls, other.cls)):
                    problems.append(f"{info.id!r} subclasses {other.id!r} (paper {info.paper!r}): register it "
                                    f"with variant_of({other.id!r}, ...) or parent={other.id!r}")
                    break
    if problems:
        raise VariantError("model registry: " + "; ".join(problems))


def _discovery_modules() -> list[str]:
    zoo = importlib.import_module("stfcat_zoo")
    names = ["stfcat.models.trivial", "stfcat.models.forecast"]
    names += [f"stfcat_zoo.{m.name}" for m in sorted(pkgutil.iter_modules(zoo.__path__), key=lambda m: m.name)
              if not m.name.startswith("_")]
    # Extra modules that register models (a user's own methods; the tests' tiny models in
    # subprocesses such as torchrun): comma-separated importable module names.
    names += [s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(",") if s.strip()]
    return names


def _discover() -> None:
    """Import every module that registers models, once. A module that fails raises
    :class:`ModelImportError` (each call, until it imports): all failures are named at once."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    failures: list[tuple[str, BaseException]] = []
    for name in _discovery_modules():
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - SyntaxError, ImportError, a bug at import time
            failures.append((name, exc))
    if failures:
        raise ModelImportError(failures) from failures[0][1]
    _check_variants()
    _DISCOVERED = True


@contextlib.contextmanager
def scoped() -> Iterator[None]:
    """Registrations made inside the block are undone on exit (for tests that register models of
    their own): the discovered registry is snapshotted on entry and restored in place."""
    _discover()
    saved = dict(_REGISTRY)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def registered() -> dict[str, ModelInfo]:
    """What is registered now, without running discovery (e.g. to report the models that did
    import after a :class:`ModelImportError`)."""
    return dict(_REGISTRY)


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
    """Build a registered model; ``overrides`` go to the model's constructor (a variant's fixed
    settings are passed too and cannot be overridden: use the parent for other values). Fusion
    models get ``bands`` (default 6) and ``ratio`` (default 16); models of other tasks take their
    task's arguments (:meth:`stfcat.tasks.Task.model_kwargs`) as keywords."""
    info = model_info(name)
    clash = {k: v for k, v in overrides.items() if k in info.fixed and v != info.fixed[k]}
    if clash:
        raise ValueError(f"model {name!r} is a variant of {info.parent!r} with {_kwargs_text(info.fixed)} fixed; "
                         f"cannot override {_kwargs_text(clash)} (use {info.parent!r})")
    if info.task == "fusion":
        overrides = {"bands": 6 if bands is None else bands, "ratio": 16 if ratio is None else ratio, **overrides}
    else:
        overrides = {**({} if bands is None else {"bands": bands}), **({} if ratio is None else {"ratio": ratio}),
                     **overrides}
    return info.cls(**{**info.fixed, **overrides})
