"""Interface of time-series forecasting models (task ``timeseries``) and its trivial baselines.

A batch holds ``x`` ``(N, window, S)`` (the last ``window`` values of ``S`` stations, in the
data's unit), ``hours_in`` ``(N, window)`` and ``hours_out`` ``(N, horizon)`` (hour of day of
each input and forecast step, float). ``forward(batch)`` returns ``(N, horizon, S)`` forecasts
in the data's unit. Before training (and for non-trainable models, before prediction) the task
calls :meth:`ForecastModel.fit_statistics` with the training period, so every model has the
per-station mean, standard deviation and hour-of-day climatology as buffers (saved in
checkpoints) to normalise with.

Baselines (always scored next to a forecasting model):

* ``persistence``: the last observed value, for every horizon step;
* ``same-hour-yesterday``: the value 24 steps before each forecast step (needs ``window >= 24``);
* ``hour-of-day-mean``: the training period's mean at the forecast step's hour, per station.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from .base import Batch, Stage
from .registry import register_model


class ForecastModel(nn.Module):
    """Base class of the models of the ``timeseries`` task."""

    n_refs: ClassVar[int] = 0  # no reference pairs: not an image-fusion model
    trainable: ClassVar[bool] = True

    def __init__(self, n_stations: int = 12, window: int = 24, horizon: int = 6) -> None:
        super().__init__()
        for name, v in (("n_stations", n_stations), ("window", window), ("horizon", horizon)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.n_stations, self.window, self.horizon = int(n_stations), int(window), int(horizon)
        self.register_buffer("mean", torch.zeros(self.n_stations))
        self.register_buffer("std", torch.ones(self.n_stations))
        self.register_buffer("climatology", torch.zeros(24, self.n_stations))

    def fit_statistics(self, values: np.ndarray, hours: np.ndarray) -> None:
        """Per-station mean, standard deviation and hour-of-day mean of the training period
        (``values`` ``(T, S)`` with NaN for missing, ``hours`` ``(T,)`` in 0..23)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.n_stations:
            raise ValueError(f"fit_statistics: values {v.shape} must be (T, {self.n_stations})")
        mean = np.nan_to_num(np.nanmean(v, axis=0))
        std = np.nan_to_num(np.nanstd(v, axis=0), nan=1.0)
        clim = np.tile(mean, (24, 1))
        for h in range(24):
            rows = v[np.asarray(hours) == h]
            if len(rows):
                m = np.nanmean(rows, axis=0)
                clim[h] = np.where(np.isfinite(m), m, mean)
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(np.maximum(std, 1e-6)))
        self.climatology.copy_(torch.from_numpy(clim))

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def denormalise(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean

    def forward(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, batch: Batch, target: Tensor) -> Tensor:
        """MSE in per-station standard units (every station weighs the same)."""
        return nn.functional.mse_loss(self.normalise(self(batch)), self.normalise(target))

    def stages(self) -> list[Stage]:
        return [Stage("forecast", loss=self.loss)]

    def config(self) -> dict:
        return {"n_stations": self.n_stations, "window": self.window, "horizon": self.horizon}


class _Trivial(ForecastModel):
    trainable = False


@register_model("persistence", paper=None, family="trivial", params=0, task="timeseries")
class Persistence(_Trivial):
    """Last observed value repeated over the horizon."""

    def forward(self, batch: Batch) -> Tensor:
        return batch["x"][:, -1:, :].expand(-1, self.horizon, -1).clone()


@register_model("same-hour-yesterday", paper=None, family="trivial", params=0, task="timeseries")
class SameHourYesterday(_Trivial):
    """Value 24 steps before each forecast step."""

    def __init__(self, n_stations: int = 12, window: int = 24, horizon: int = 6) -> None:
        super().__init__(n_stations, window, horizon)
        if window < 24 or horizon > 24:
            raise ValueError(f"same-hour-yesterday needs window >= 24 and horizon <= 24, got {window}, {horizon}")

    def forward(self, batch: Batch) -> Tensor:
        # forecast step k (1-based) is 24 - k steps after the window's first value of yesterday
        start = self.window - 24
        return batch["x"][:, start : start + self.horizon, :].clone()


@register_model("hour-of-day-mean", paper=None, family="trivial", params=0, task="timeseries")
class HourOfDayMean(_Trivial):
    """Training-period mean of each station at the forecast step's hour of day."""

    def forward(self, batch: Batch) -> Tensor:
        return self.climatology[batch["hours_out"].long() % 24]


TRIVIAL_FORECAST_BASELINES = ("persistence", "same-hour-yesterday", "hour-of-day-mean")
