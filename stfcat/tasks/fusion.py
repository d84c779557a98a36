"""Image fusion (reflectance, LST): predict the fine image at a target date from coarse images and
one or two fine/coarse reference pairs. The worked example of the task contract.

* data: a :class:`~stfcat.data.series.PairSeries` (a folder with ``manifest.json``, a fetched
  catalog dataset, or ``"demo"``, the embedded Landsat/MODIS-like series);
* cases: :meth:`PairSeries.cases` with the model's ``n_refs`` (test cases need a fine target);
* batch: ``f1, c1, c2`` (+ ``f3, c3`` for two references), ``(N, B, H, W)``; target ``(N, B, H, W)``;
* training samples: random patches, :class:`~stfcat.data.sampler.PatchSampler`;
* baselines: ``copy-f1``, ``upsample-c2``, ``delta`` (:mod:`stfcat.models.trivial`);
* prediction: the whole scene, tiled with a halo and blended
  (:func:`stfcat.engine.predict.predict_case_multi`, imported when called: the engine owns the
  one tiled predictor that ``run``, ``bench`` and ``fuse`` share);
* metrics: :func:`stfcat.metrics.compute_all` with the dataset's fine/coarse resolution ratio;
* figures: a quick-look PNG (F1, C1, C2, truth, prediction, error) and the prediction GeoTIFF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from .base import Task, TaskError, register_task


@dataclass(frozen=True)
class FusionSplit:
    """A fusion run's split: ``kind`` "temporal" or "spatial"; the model's ``receptive_field``
    (the guard band's width); the spatial ``regions`` (None when temporal, or when the scene is too
    small for the guard band of a method that does not train and only needs the test region)."""

    kind: str
    receptive_field: int
    regions: Any = None


@register_task
class FusionTask(Task):
    name: ClassVar[str] = "fusion"
    paper_tasks: ClassVar[tuple[str, ...]] = ("reflectance", "land-surface-temperature")
    baselines: ClassVar[tuple[str, ...]] = ("copy-f1", "upsample-c2", "delta")
    reference_baseline: ClassVar[str] = "delta"
    primary_metric: ClassVar[str] = "rmse"
    board_columns: ClassVar[tuple[str, ...]] = ("rmse", "mae", "psnr", "ssim", "sam", "ergas", "cc", "uiqi",
                                                "r2", "edge", "lbp")
    reported_metrics: ClassVar[tuple[str, ...]] = ("rmse", "ssim")

    # -- data ---------------------------------------------------------------------------------
    def ensure_demo(self, data_dir: Path | None = None) -> Path:
        from stfcat.data.demo import ensure_demo
        from stfcat.data.paths import dataset_dir

        return ensure_demo(dataset_dir("demo", data_dir))

    def open(self, dataset: str | Path, *, catalog: Path | None = None, data_dir: Path | None = None):
        """``load_series`` with its errors turned into one-line messages (unknown id with close
        names, not fetched with the fetch command, bad manifest)."""
        from stfcat.data.errors import DataError
        from stfcat.data.series import load_series

        try:
            cat = None
            if catalog is not None:
                from stfcat.catalog import load_catalog

                cat = load_catalog(Path(catalog))
            from stfcat.data.checks import check_series

            return check_series(load_series(dataset, catalog=cat, data_dir=data_dir))  # bad files named up front
        except KeyError as exc:
            msg = exc.args[0] if exc.args else str(exc)
            raise TaskError(f"--dataset: {msg} (or give the path of a series folder with manifest.json)") from None
        except DataError as exc:
            raise TaskError(f"--dataset {dataset}: {exc}") from None
        except Exception as exc:
            from stfcat.catalog import CatalogError

            if isinstance(exc, CatalogError):
                raise TaskError(f"--catalog: the catalog is invalid ({len(exc.problems)} problem(s)); "
                                "run `stfcat validate`") from None
            raise

    def split_plan(self, data, info, model, requested: str | None) -> FusionSplit:
        from stfcat.data.errors import DataError
        from stfcat.data.splits import default_split, receptive_field, spatial_regions

        if requested not in (None, "temporal", "spatial"):
            raise TaskError(f"--split must be 'temporal' or 'spatial', got {requested!r}")
        kind = requested or default_split(data, info.n_refs, trainable=info.trainable)
        if kind == "spatial" and data.spatial is None:
            raise TaskError(f"--split spatial: dataset {data.name!r} declares no spatial split (split.spatial)")
        rf = receptive_field(model)
        regions = None
        if kind == "spatial":
            try:
                regions = spatial_regions(data.spatial, data.shape, rf, data.name)
            except DataError as exc:  # the scene is too small for this model's guard band
                if info.trainable:
                    raise TaskError(f"model {info.id!r}, spatial split: {exc}") from None
            # the test region is fixed by the declaration: a method without training is still scored
        return FusionSplit(kind, rf, regions)

    def cases(self, data, split: str, info, plan: FusionSplit | None = None) -> list:
        from stfcat.data.errors import DataError

        kind = plan.kind if plan is not None else "temporal"
        if split not in data.split and kind == "temporal":  # e.g. "val" on a series without one
            if split in ("train", "test"):
                raise TaskError(f"dataset {data.name!r} has no {split!r} split")
            return []
        if split == "val" and kind == "spatial" and plan.regions is None:
            return []
        # the guard band (receptive field) shrinks the training rectangle; val/test regions are fixed
        rf = plan.receptive_field if plan is not None and split != "test" else None
        try:
            cases = data.cases(n_refs=info.n_refs, split=split, kind=kind, receptive_field=rf)
        except DataError as exc:  # e.g. a scene too small for a spatial split's guard band
            raise TaskError(f"model {info.id!r}, {kind} split: {exc}") from None
        if split in ("test", "val"):
            cases = [c for c in cases if c.has_target]
        if not cases and split != "val":
            need = ("two reference pairs (one before and one after each target date)" if info.n_refs == 2
                    else "one reference pair")
            raise TaskError(
                f"model {info.id!r} needs {need}, but dataset {data.name!r} has no {split} case with that "
                f"({len(data.dates)} dates: {', '.join(data.dates)}; {split} dates: "
                f"{', '.join(data.split.get(split, [])) or 'none'}). Choose a dataset with more dates or a "
                "1-reference model" + (", or --split spatial." if split == "train" and kind == "temporal"
                                       and data.spatial is not None else ".")
            )
        return cases

    def batch_keys(self, info) -> tuple[str, ...]:
        from stfcat.models.base import REQUIRED_KEYS

        return REQUIRED_KEYS[int(info.n_refs)]

    # -- models -------------------------------------------------------------------------------
    def model_kwargs(self, data) -> dict[str, Any]:
        return {"bands": len(data.bands), "ratio": data.ratio}

    def record_fields(self, data) -> dict[str, Any]:
        return {"band_names": data.bands, "scale_factor": data.scale_factor}

    # -- training -----------------------------------------------------------------------------
    def fit_budget(self, budget, data, cases: Sequence = ()):
        shape = cases[0].series.shape if cases else data.shape  # a spatial split trains on a cropped view
        return replace(budget, patch=min(budget.patch, *shape))

    def fingerprint(self, data) -> str | None:
        from stfcat.data.fingerprint import dataset_fingerprint

        return dataset_fingerprint(data)

    def training_sampler(self, data, cases: Sequence, budget, *, seed: int):
        from stfcat.data.sampler import PatchSampler

        return PatchSampler(cases, budget.patch, budget.batch, seed=seed)

    # -- evaluation ---------------------------------------------------------------------------
    def predict(self, methods, case, *, device: Any = "cpu", tile: int = 256, progress: bool = False):
        from stfcat.engine.predict import predict_case_multi

        return predict_case_multi(methods, case, device=device, tile=tile, progress=progress)

    @staticmethod
    def resolution_ratio(data) -> float:
        """Fine over coarse pixel size (ERGAS's h / l)."""
        if data.fine_resolution and data.coarse_resolution:
            return data.fine_resolution / data.coarse_resolution
        return 1.0 / max(data.ratio, 1)

    def metrics(self, pred, target, valid, data) -> dict[str, float]:
        from stfcat.metrics import compute_all

        return compute_all(pred, target, valid, resolution_ratio=self.resolution_ratio(data))

    def case_record(self, case, valid) -> dict[str, Any]:
        return {"id": case.id, "target_date": case.target_date, "ref_dates": list(case.ref_dates),
                "valid_fraction": float(valid.mean())}

    def describe(self, data, info, *, plan: FusionSplit | None = None, cases: Sequence = ()) -> dict[str, Any]:
        from stfcat.data.splits import SPATIAL_LABEL

        kind = plan.kind if plan is not None else "temporal"
        spatial = None
        if kind == "spatial":
            spatial = (plan.regions.as_dict() if plan.regions is not None
                       else {"kind": "spatial", "test": list(cases[0].region) if cases else None})
        return {"split": SPATIAL_LABEL if kind == "spatial" else "test", "split_kind": kind, "spatial_split": spatial,
                "n_refs": info.n_refs, "bands": data.bands, "resolution_ratio": self.resolution_ratio(data)}

    def write_case_outputs(self, out: Path, data, case, model_id: str, preds, target, valid) -> None:
        import numpy as np

        from stfcat.engine.outputs import quicklook_png, write_prediction

        stem = f"{case.target_date}"
        write_prediction(out / "predictions" / f"{model_id}_{stem}.tif", preds[model_id], data.profile, data.bands)
        inputs, _, _ = case.read()  # the whole scene: it already fits in memory as the output
        truth = None
        if target is not None:
            truth = target.copy()
            truth[:, ~np.asarray(valid, dtype=bool)] = np.nan
        from stfcat.data.splits import SPATIAL_LABEL

        region = getattr(case, "region", None)
        quicklook_png(out / "quicklook" / f"{stem}.png", {"F1": inputs["f1"], "C1": inputs["c1"], "C2": inputs["c2"]},
                      truth, preds[model_id], data.bands,
                      f"{model_id} on {data.name}: {case.id}" + (f" ({SPATIAL_LABEL})" if region else ""),
                      outline=region)

    # -- leaderboard --------------------------------------------------------------------------
    def board_group(self, metrics: dict[str, Any]) -> str:
        refs = int(metrics.get("n_refs") or 1)
        title = (f"{metrics['dataset']}: {'one reference pair' if refs == 1 else 'two reference pairs'}, "
                 f"{len(metrics['cases'])} test case(s)")
        if metrics.get("split_kind") == "spatial":  # another region, and a weaker protocol: its own table
            title += (", spatial split (scored on the test region only; the models have seen the target date's "
                      "fine image outside it)")
        return title
