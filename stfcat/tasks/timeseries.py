"""Multi-station time-series forecasting (air quality, traffic, weather stations): from the last
``window`` hours of every station, forecast the next ``horizon`` hours of every station.

* data: a :class:`StationSeries`, a folder with ``manifest.json`` (``"kind": "stations"``) and a
  CSV of values (one row per time step, one column per station, empty = missing); ``"demo"`` is
  the embedded demo of correlated stations (:mod:`stfcat.tasks.timeseries_demo`);
* split: chronological periods (``train``, ``val``, ``test``) given as first and last time step;
* cases: one per split period (:class:`StationCase`); a forecast origin's input window may reach
  back into the previous period (as fusion references may come from any date), its targets never
  leave the period; origins whose window or targets miss a value are left out of training, and
  missing targets are masked out of the metrics;
* batch: ``x`` ``(N, window, S)`` values, ``hours_in`` ``(N, window)`` and ``hours_out``
  ``(N, horizon)`` hour of day (float); target ``(N, horizon, S)``;
* models: :class:`stfcat.models.forecast.ForecastModel` subclasses built with ``n_stations``,
  ``window``, ``horizon``; :meth:`TimeseriesTask.prepare_model` gives each the training period's
  per-station mean, standard deviation and hour-of-day climatology;
* baselines: ``persistence``, ``same-hour-yesterday``, ``hour-of-day-mean``;
* metrics: MAE and RMSE over all stations and horizon steps, and per horizon step
  (``mae_h1`` ... ``rmse_h6``), in the data's unit;
* figure: observed series and the model's 1-step and ``horizon``-step forecasts for a few stations.
* contract tests: :meth:`TimeseriesTask.example_data`, four days of any number of stations in memory.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Task, TaskError, register_task

SPLITS = ("train", "val", "test")


class StationSeries:
    """Hourly (or ``freq_hours``) values of several stations, read from a manifest + CSV."""

    def __init__(self, root: Path, manifest: dict[str, Any], times: list[str], values: np.ndarray) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.name: str = str(manifest.get("name") or self.root.name)
        self.stations: list[str] = list(manifest["stations"])
        self.unit: str = str(manifest.get("unit", ""))
        self.freq_hours: float = float(manifest.get("freq_hours", 1))
        self.window: int = int(manifest.get("window", 24))
        self.horizon: int = int(manifest.get("horizon", 6))
        self.times = times
        self.values = values  # (T, S) float32, NaN = missing
        self.hours = np.array([_dt.datetime.fromisoformat(t).hour for t in times], dtype=np.int64)
        self.split: dict[str, tuple[int, int]] = self._split(manifest.get("split") or {})

    @classmethod
    def from_folder(cls, folder: Path) -> StationSeries:
        folder = Path(folder)
        mf = folder / "manifest.json"
        try:
            manifest = json.loads(mf.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TaskError(f"{mf}: not a readable manifest ({exc})") from None
        if manifest.get("kind") != "stations":
            raise TaskError(f"{mf}: 'kind' is {manifest.get('kind')!r}, a station series needs \"stations\" "
                            "(is this an image-fusion dataset?)")
        for key in ("stations", "values"):
            if key not in manifest:
                raise TaskError(f"{mf}: missing field {key!r}")
        csv = folder / manifest["values"]
        try:
            lines = csv.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TaskError(f"{csv}: cannot read the values ({exc.strerror})") from None
        head = lines[0].split(",") if lines else []
        if head[1:] != list(manifest["stations"]):
            raise TaskError(f"{csv}: header columns {head[1:]} differ from the manifest's 'stations'")
        times, rows = [], []
        for i, line in enumerate(lines[1:], start=2):
            parts = line.split(",")
            if len(parts) != len(head):
                raise TaskError(f"{csv}, line {i}: {len(parts)} fields, expected {len(head)}")
            times.append(parts[0])
            try:
                rows.append([float(v) if v.strip() else np.nan for v in parts[1:]])
            except ValueError:
                raise TaskError(f"{csv}, line {i}: a value is not a number") from None
        values = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(head) - 1)
        return cls(folder, manifest, times, values)

    def _split(self, spec: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """``{split: (start, end)}`` indices (end exclusive) from ``[first, last]`` times."""
        index = {t: i for i, t in enumerate(self.times)}
        out: dict[str, tuple[int, int]] = {}
        for name, period in spec.items():
            if name not in SPLITS:
                raise TaskError(f"{self.root / 'manifest.json'}: unknown split {name!r} (use {', '.join(SPLITS)})")
            try:
                a, b = index[period[0]], index[period[1]]
            except (KeyError, IndexError, TypeError):
                raise TaskError(f"{self.root / 'manifest.json'}: split {name!r} = {period!r} is not "
                                "[first time, last time] of values.csv") from None
            out[name] = (a, b + 1)
        if not out:  # no split: the last 15 % of the time steps are the test period
            cut = int(len(self.times) * 0.85)
            out = {"train": (0, cut), "test": (cut, len(self.times))}
        return out

    def __repr__(self) -> str:
        return f"StationSeries({self.name!r}, {len(self.stations)} stations, {len(self.times)} steps)"


@dataclass
class StationCase:
    """Every forecast of one split period: origins are the last input step of each window."""

    series: StationSeries
    split: str
    start: int
    end: int
    own_inputs: bool  # training: the input window stays inside the period too

    @property
    def id(self) -> str:
        return f"{self.split} {self.series.times[self.start]}..{self.series.times[self.end - 1]}"

    def origins(self, *, complete: bool) -> np.ndarray:
        """Origin indices ``t`` (inputs ``t-window+1..t``, targets ``t+1..t+horizon``); with
        ``complete`` only those whose inputs and targets have every value."""
        s = self.series
        w, h = s.window, s.horizon
        first = max(w - 1, self.start + w - 1 if self.own_inputs else self.start - 1)
        t = np.arange(first, self.end - h)
        ok = np.isfinite(s.values).all(axis=1)
        csum = np.concatenate([[0], np.cumsum(~ok)])
        inputs_ok = (csum[t + 1] - csum[t + 1 - w]) == 0
        if not complete:
            return t[inputs_ok]
        targets_ok = (csum[t + 1 + h] - csum[t + 1]) == 0
        return t[inputs_ok & targets_ok]

    def arrays(self, origins: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Batch arrays and targets ``(N, horizon, S)`` of ``origins``."""
        s = self.series
        w, h = s.window, s.horizon
        x_idx = origins[:, None] + np.arange(-w + 1, 1)[None]
        y_idx = origins[:, None] + np.arange(1, h + 1)[None]
        batch = {"x": s.values[x_idx], "hours_in": s.hours[x_idx].astype(np.float32),
                 "hours_out": s.hours[y_idx].astype(np.float32)}
        return batch, s.values[y_idx]


class WindowSampler:
    """Random complete (window, horizon) samples of the training cases, seeded."""

    def __init__(self, cases: Sequence[StationCase], batch: int, *, seed: int = 0) -> None:
        if batch < 1:
            raise ValueError(f"WindowSampler: batch must be >= 1, got {batch}")
        self.items = [(c, c.origins(complete=True)) for c in cases]
        self.items = [(c, o) for c, o in self.items if len(o)]
        if not self.items:
            raise TaskError("no complete training window (window + horizon steps without a missing value)")
        self.batch = int(batch)
        self.rng = np.random.default_rng(seed)
        self._sizes = np.array([len(o) for _, o in self.items])

    def sample(self):
        """One batch: ``(batch dict of tensors, target (N, horizon, S))``."""
        import torch

        flat = self.rng.integers(int(self._sizes.sum()), size=self.batch)
        bounds = np.cumsum(self._sizes)
        which = np.searchsorted(bounds, flat, side="right")
        parts_b, parts_t = [], []
        for k in range(len(self.items)):
            sel = flat[which == k] - (bounds[k] - self._sizes[k])
            if len(sel):
                case, origins = self.items[k]
                b, t = case.arrays(origins[sel])
                parts_b.append(b)
                parts_t.append(t)
        batch = {key: torch.from_numpy(np.ascontiguousarray(np.concatenate([b[key] for b in parts_b])))
                 for key in parts_b[0]}
        return batch, torch.from_numpy(np.ascontiguousarray(np.concatenate(parts_t)))


def forecast_errors(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """MAE and RMSE over valid values, overall and per horizon step (``mae_h1``...)."""
    err = np.where(valid, np.asarray(pred, np.float64) - np.asarray(target, np.float64), 0.0)
    if not valid.any():
        raise ValueError("no valid target value to compute metrics on")
    n = valid.sum()
    out = {"mae": float(np.abs(err).sum() / n), "rmse": float(np.sqrt((err**2).sum() / n))}
    for k in range(err.shape[1]):
        nk = valid[:, k].sum()
        out[f"mae_h{k + 1}"] = float(np.abs(err[:, k]).sum() / nk) if nk else float("nan")
        out[f"rmse_h{k + 1}"] = float(np.sqrt((err[:, k] ** 2).sum() / nk)) if nk else float("nan")
    return out


@register_task
class TimeseriesTask(Task):
    name: ClassVar[str] = "timeseries"
    paper_tasks: ClassVar[tuple[str, ...]] = ("air-quality", "traffic")
    baselines: ClassVar[tuple[str, ...]] = ("persistence", "same-hour-yesterday", "hour-of-day-mean")
    reference_baseline: ClassVar[str] = "persistence"
    primary_metric: ClassVar[str] = "rmse"
    board_columns: ClassVar[tuple[str, ...]] = ("rmse", "mae", "rmse_h1", "mae_h1", "rmse_h6", "mae_h6")
    reported_metrics: ClassVar[tuple[str, ...]] = ("rmse", "mae")
    predict_batch: ClassVar[int] = 512

    # -- data ---------------------------------------------------------------------------------
    def ensure_demo(self, data_dir: Path | None = None) -> Path:
        from stfcat.data.paths import dataset_dir

        from .timeseries_demo import DEMO_NAME, ensure_demo

        return ensure_demo(dataset_dir(DEMO_NAME, data_dir))

    def open(self, dataset: str | Path, *, catalog: Path | None = None, data_dir: Path | None = None):
        if str(dataset) in ("demo", "demo-stations"):
            return StationSeries.from_folder(self.ensure_demo(data_dir))
        folder = Path(dataset)
        if not (folder / "manifest.json").is_file():
            from stfcat.data.paths import dataset_dir

            folder = dataset_dir(str(dataset), data_dir)
        if not (folder / "manifest.json").is_file():
            raise TaskError(f"--dataset {dataset}: no station series there (a folder with manifest.json "
                            "of kind \"stations\" and a values CSV; or 'demo')")
        return StationSeries.from_folder(folder)

    def cases(self, data: StationSeries, split: str, info, plan: Any = None) -> list:
        if split not in SPLITS:
            raise TaskError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split not in data.split:
            if split == "val":
                return []
            raise TaskError(f"dataset {data.name!r} has no {split!r} period")
        a, b = data.split[split]
        case = StationCase(data, split, a, b, own_inputs=split == "train")
        if not len(case.origins(complete=split == "train")):
            raise TaskError(f"dataset {data.name!r}: the {split} period ({b - a} steps) holds no forecast of "
                            f"{data.window} input + {data.horizon} target steps")
        return [case]

    def batch_keys(self, info) -> tuple[str, ...]:
        return ("x", "hours_in", "hours_out")

    # -- models -------------------------------------------------------------------------------
    def model_kwargs(self, data: StationSeries) -> dict[str, Any]:
        return {"n_stations": len(data.stations), "window": data.window, "horizon": data.horizon}

    def prepare_model(self, model, data: StationSeries) -> None:
        fit = getattr(model, "fit_statistics", None)
        if fit is not None:
            a, b = data.split["train"]
            fit(data.values[a:b], data.hours[a:b])

    def record_fields(self, data: StationSeries) -> dict[str, Any]:
        return {"band_names": data.stations, "unit": data.unit}

    # -- training -----------------------------------------------------------------------------
    def training_sampler(self, data, cases: Sequence, budget, *, seed: int) -> WindowSampler:
        return WindowSampler(cases, budget.batch, seed=seed)

    # -- evaluation ---------------------------------------------------------------------------
    def predict(self, methods, case: StationCase, *, device: Any = "cpu", tile: int = 256, progress: bool = False):
        import time

        import torch

        origins = case.origins(complete=False)
        arrays, target = case.arrays(origins)
        valid = np.isfinite(target)
        device = torch.device(device)
        preds: dict[str, np.ndarray] = {}
        seconds = dict.fromkeys(methods, 0.0)
        with torch.inference_mode():
            for k, m in methods.items():
                was = m.training
                m.eval().to(device)
                outs = []
                for i in range(0, len(origins), self.predict_batch):
                    batch = {key: torch.from_numpy(np.ascontiguousarray(v[i : i + self.predict_batch])).to(device)
                             for key, v in arrays.items()}
                    t0 = time.perf_counter()
                    outs.append(m(batch).float().cpu().numpy())
                    seconds[k] += time.perf_counter() - t0
                m.train(was)
                preds[k] = np.concatenate(outs)
        return preds, target, valid, seconds

    def metrics(self, pred, target, valid, data) -> dict[str, float]:
        return forecast_errors(pred, target, valid)

    def case_record(self, case: StationCase, valid) -> dict[str, Any]:
        return {"id": case.id, "split": case.split, "first": case.series.times[case.start],
                "last": case.series.times[case.end - 1], "forecasts": int(valid.shape[0]),
                "valid_fraction": float(valid.mean())}

    def fingerprint(self, data: StationSeries) -> str:
        import hashlib

        h = hashlib.sha256(json.dumps({"stations": list(data.stations), "times": list(data.times)}).encode())
        h.update(np.ascontiguousarray(data.values, dtype=np.float32).tobytes())
        return h.hexdigest()

    def describe(self, data: StationSeries, info, *, plan: Any = None, cases=()) -> dict[str, Any]:
        return {"stations": data.stations, "window": data.window, "horizon": data.horizon, "unit": data.unit,
                "freq_hours": data.freq_hours}

    def write_case_outputs(self, out: Path, data: StationSeries, case: StationCase, model_id: str, preds,
                           target, valid) -> None:
        _forecast_csv(out / "predictions" / f"{model_id}_{case.split}.csv", case, preds[model_id])
        _forecast_png(out / "quicklook" / f"{case.split}.png", case, model_id, preds, target)

    # -- contract tests -----------------------------------------------------------------------
    def example_data(self, width: int = 3, *, seed: int = 0) -> StationSeries:
        """Four days of ``width`` hourly stations in memory (three to train, one to test), with the
        demo's 24 h window and 6 h horizon so every baseline applies (same-hour-yesterday needs a
        full day). A daily cycle plus a random walk: the hour of day and the last value both carry
        signal, so a few training steps of a forecaster have something to learn."""
        if width < 1:
            raise ValueError(f"example_data: width (stations) must be >= 1, got {width}")
        rng = np.random.default_rng(seed)
        steps = 24 * 4
        t0 = _dt.datetime(2021, 1, 1)
        times = [(t0 + _dt.timedelta(hours=i)).isoformat(timespec="minutes") for i in range(steps)]
        hours = np.arange(steps) % 24
        cycle = np.cos(2 * np.pi * (hours[:, None] - rng.uniform(12, 16, width)) / 24.0)
        walk = np.cumsum(rng.normal(0.0, 0.2, (steps, width)), axis=0)
        values = (10.0 + rng.uniform(2, 5, width) * cycle + walk).astype(np.float32)
        manifest = {"name": f"example-{width}-stations", "kind": "stations", "unit": "degC",
                    "stations": [f"st{i + 1:02d}" for i in range(width)], "window": 24, "horizon": 6,
                    "split": {"train": [times[0], times[71]], "test": [times[72], times[-1]]}}
        return StationSeries(Path(manifest["name"]), manifest, times, values)

    def board_group(self, metrics: dict[str, Any]) -> str:
        return (f"{metrics['dataset']}: {len(metrics.get('stations') or [])} stations, "
                f"{metrics.get('window')} h -> {metrics.get('horizon')} h forecasts, "
                f"{len(metrics['cases'])} test case(s)")


def _forecast_csv(path: Path, case: StationCase, pred: np.ndarray) -> None:
    from stfcat.engine.outputs import atomic_write_text

    s = case.series
    origins = case.origins(complete=False)
    head = "origin,station," + ",".join(f"h{k + 1}" for k in range(pred.shape[1]))
    lines = [head]
    for i, t in enumerate(origins):
        for j, st in enumerate(s.stations):
            lines.append(f"{s.times[t]},{st}," + ",".join(f"{v:.4f}" for v in pred[i, :, j]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _forecast_png(path: Path, case: StationCase, model_id: str, preds, target, n_show: int = 3) -> None:
    """Observed values and forecasts ``+1`` and ``+horizon`` steps ahead, each drawn at the time
    it forecasts, for ``n_show`` stations spread over the list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stfcat.engine.outputs import _save_fig

    s = case.series
    origins = case.origins(complete=False)
    h = target.shape[1]
    show = np.linspace(0, len(s.stations) - 1, min(n_show, len(s.stations))).round().astype(int)
    fig, axes = plt.subplots(len(show), 1, figsize=(10, 2.4 * len(show)), sharex=True, squeeze=False)
    for ax, j in zip(axes[:, 0], show, strict=True):
        x1, xh = origins + 1, origins + h
        span = np.arange(origins[0] + 1, origins[-1] + h + 1)
        ax.plot(span, s.values[span, j], color="black", lw=1.2, label="observed")
        ax.plot(x1, preds[model_id][:, 0, j], lw=1, label=f"{model_id} +1 h")
        ax.plot(xh, preds[model_id][:, h - 1, j], lw=1, label=f"{model_id} +{h} h")
        if "persistence" in preds and model_id != "persistence":
            ax.plot(xh, preds["persistence"][:, h - 1, j], lw=0.8, ls="--", color="grey", label=f"persistence +{h} h")
        ax.set_ylabel(f"{s.stations[j]} ({s.unit})" if s.unit else s.stations[j])
    ticks = origins[:: max(1, len(origins) // 6)]
    axes[-1, 0].set_xticks(ticks + 1, [s.times[t + 1][:13] for t in ticks], fontsize=7)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
    fig.suptitle(f"{model_id} on {s.name}: {case.id}")
    fig.tight_layout()
    _save_fig(fig, path)
