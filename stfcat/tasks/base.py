"""The task contract: everything the engine needs to know about one kind of data.

The engine (``stfcat run``, ``stfcat bench``, the training loop) is written against this class only.
A *task* (image fusion, station time-series forecasting, ...) says how its data are opened, which
problems ("cases") each split holds, how random training samples are drawn, which trivial
baselines every model is compared with, how a prediction is made and scored, and what the
leaderboard and the figures show. Adding a kind of task is one module in :mod:`stfcat.tasks` that
subclasses :class:`Task` and calls :func:`register_task`; the training loop is not touched.

A model declares its task with ``register_model(..., task="<name>")``.

Terms
-----
*data*
    What :meth:`Task.open` returns for a ``--dataset`` argument (fusion: a
    :class:`~stfcat.data.series.PairSeries`). It must have a ``name`` (used in run folder names).
*case*
    One evaluation problem with an ``id`` (fusion: predict one target date). :meth:`Task.predict`
    scores every method of a run on one case at once.
*batch*
    ``dict[str, Tensor]`` given to ``model(batch)`` and to the losses, keys
    :meth:`Task.batch_keys`; the *target* is one tensor.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar


class TaskError(ValueError):
    """A request the task cannot serve (no case in a split, unknown dataset...): one-line message.
    The engine turns it into an :class:`~stfcat.engine.errors.EngineError`."""


class Task(abc.ABC):
    """Base class of a task. Class attributes and every abstract method are the contract."""

    name: ClassVar[str]
    """Registry name; models declare it with ``register_model(..., task=name)``."""

    paper_tasks: ClassVar[tuple[str, ...]] = ()
    """Catalog ``task`` values (``catalog/papers/*.yaml``) a model of this task may implement;
    ``stfcat validate`` reports a paper implemented by a model of another task."""

    baselines: ClassVar[tuple[str, ...]] = ()
    """Ids of registered non-trainable models of this task scored next to every model of the task
    on the same cases, in this order."""

    reference_baseline: ClassVar[str]
    """The baseline ``stfcat bench`` runs first on each dataset (its run scores every baseline)."""

    primary_metric: ClassVar[str]
    """Metric the leaderboard sorts by (ascending: an error)."""

    board_columns: ClassVar[tuple[str, ...]]
    """Metric keys shown in the leaderboard table, in order."""

    reported_metrics: ClassVar[tuple[str, ...]] = ()
    """Metrics of a paper's own numbers (``results/reported.json``) shown beside ours."""

    # -- data ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def ensure_demo(self, data_dir: Path | None = None) -> Path:
        """Folder of the task's deterministic demo dataset, generated when absent (no download)."""

    @abc.abstractmethod
    def open(self, dataset: str | Path, *, catalog: Path | None = None, data_dir: Path | None = None) -> Any:
        """Open the data for a ``--dataset`` argument (``"demo"`` is the task's own demo).
        Raises :class:`TaskError` with a one-line message for bad input."""

    def split_plan(self, data: Any, info: Any, model: Any, requested: str | None) -> Any:
        """How a run of ``model`` splits ``data`` (passed back to :meth:`cases`, :meth:`describe`).
        ``requested`` is the ``--split`` kind. Default: the data's own split only (``None``); a
        requested kind is refused. Fusion: "temporal" or "spatial" (a test region with a guard
        band as wide as the model's receptive field)."""
        if requested is not None:
            raise TaskError(f"--split {requested}: task {self.name!r} has no split kinds")
        return None

    @abc.abstractmethod
    def cases(self, data: Any, split: str, info: Any, plan: Any = None) -> list:
        """Cases of ``split`` ("train", "val" where the data have one, "test") for model ``info``
        (a :class:`~stfcat.models.ModelInfo`) under ``plan`` (:meth:`split_plan`); test cases all
        have a target; "val" may be empty. Raises :class:`TaskError` naming what is missing when
        there is no train or test case."""

    def fingerprint(self, data: Any) -> str | None:
        """Hash of the data as read (``metrics.json`` records it; ``bench`` refuses to mix rows of
        different fingerprints). Default: none."""
        return None

    @abc.abstractmethod
    def batch_keys(self, info: Any) -> tuple[str, ...]:
        """Keys of the batch dict a model of ``info`` receives."""

    # -- models -------------------------------------------------------------------------------
    @abc.abstractmethod
    def model_kwargs(self, data: Any) -> dict[str, Any]:
        """Constructor arguments every model of the task takes from the data
        (fusion: ``bands``, ``ratio``)."""

    def prepare_model(self, model: Any, data: Any) -> None:
        """Give a freshly built model what it learns from the training part without gradient
        steps (e.g. normalisation statistics, a climatology). Default: nothing. Runs before
        training, for trainable and non-trainable models alike."""
        return None

    def record_fields(self, data: Any) -> dict[str, Any]:
        """Extra fields of the checkpoint's model record (fusion: band names and scale)."""
        return {}

    # -- training -----------------------------------------------------------------------------
    def fit_budget(self, budget: Any, data: Any, cases: Sequence = ()) -> Any:
        """The training budget adapted to the data and its training ``cases`` (fusion: the patch
        fits the training region)."""
        return budget

    @abc.abstractmethod
    def training_sampler(self, data: Any, cases: Sequence, budget: Any, *, seed: int) -> Any:
        """Random training samples of ``cases``: an object with ``sample() -> (batch, target)``
        (``budget.batch`` samples stacked) and ``rng``, a :class:`numpy.random.Generator` whose
        state checkpoints save so a resumed run draws the same samples."""

    # -- evaluation ---------------------------------------------------------------------------
    @abc.abstractmethod
    def predict(self, methods: dict[str, Any], case: Any, *, device: Any = "cpu", tile: int = 256,
                progress: bool = False) -> tuple[dict[str, Any], Any, Any, dict[str, float]]:
        """Predict one case with every method at once (whole scene, tiled, for rasters; every
        forecast origin for sequences). Returns ``(predictions by method id, target, valid mask,
        seconds spent in each method)``."""

    @abc.abstractmethod
    def metrics(self, pred: Any, target: Any, valid: Any, data: Any) -> dict[str, float]:
        """Every metric of one prediction against its target (flat ``{name: float}``)."""

    def mean_metrics(self, per_case: list[dict[str, float]]) -> dict[str, float]:
        """Summary over cases; default: the mean of each metric."""
        from stfcat.metrics import mean_metrics

        return mean_metrics(per_case)

    @abc.abstractmethod
    def case_record(self, case: Any, valid: Any) -> dict[str, Any]:
        """What ``metrics.json`` says about a case besides its scores (at least ``id``)."""

    def describe(self, data: Any, info: Any, *, plan: Any = None, cases: Sequence = ()) -> dict[str, Any]:
        """Task-specific fields of ``metrics.json`` (fusion: ``n_refs``, ``bands``, ratio, the
        split kind and region), given the run's ``plan`` and test ``cases``."""
        return {}

    @abc.abstractmethod
    def write_case_outputs(self, out: Path, data: Any, case: Any, model_id: str, preds: dict[str, Any],
                           target: Any, valid: Any) -> None:
        """The quick-look figure of a case (and, for rasters, the predicted image) under ``out``."""

    # -- contract tests -----------------------------------------------------------------------
    def example_data(self, width: int = 3, *, seed: int = 0) -> Any:
        """A tiny in-memory dataset of the task with ``width`` channels (stations, bands), made
        without files or downloads in well under a second, on which :meth:`model_kwargs`,
        :meth:`prepare_model`, :meth:`cases` (``"train"``) and :meth:`training_sampler` work.
        ``tests/test_contract.py`` builds, feeds and trains every registered model of the task
        through these methods, so a new task's models are covered by the registry-wide contract.
        Default: none (:class:`NotImplementedError`); fusion's contract inputs are scenes on disk,
        built in the test module, because its tiled prediction and end-to-end checks need files."""
        raise NotImplementedError(f"task {self.name!r} provides no example data")

    # -- leaderboard --------------------------------------------------------------------------
    def board_group(self, metrics: dict[str, Any]) -> str:
        """Title of the leaderboard table a run's rows go to: rows of one table are scored on the
        same cases (and the baselines are shown once per table)."""
        return f"{metrics['dataset']} ({self.name}), {len(metrics['cases'])} test case(s)"


_TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available to :func:`get_task`."""
    if getattr(cls, "name", None) in _TASKS and type(_TASKS[cls.name]) is not cls:
        raise ValueError(f"task {cls.name!r} registered twice")
    _TASKS[cls.name] = cls()
    return cls


def _load_builtin() -> None:
    from . import fusion, timeseries  # noqa: F401 - registers the built-in tasks


def get_task(name: str) -> Task:
    """The task called ``name``; :class:`TaskError` listing the known tasks otherwise."""
    _load_builtin()
    if name not in _TASKS:
        raise TaskError(f"unknown task {name!r} (known tasks: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]


def list_tasks() -> list[str]:
    _load_builtin()
    return sorted(_TASKS)
