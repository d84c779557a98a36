"""GRU forecaster: the reference model of the ``timeseries`` task (multi-station forecasting).

Not a published method: the small recurrent baseline the station-forecasting papers of the
catalog (air quality, traffic) compare with, here to prove the task end to end.

Each input step is the vector of every station's value in per-station standard units (training
mean and deviation) plus the hour of day as (sin, cos). One GRU layer reads the window; its last
state, with the (sin, cos) hours of the forecast steps, goes through a linear head to a change
per station and horizon step, added to the last observed value (so an untrained head starts
from persistence). All stations are read together, so the model can learn that upwind stations
announce what downwind ones will see.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stfcat.models import Batch, Budget, OptimSpec, Recipe, register_model
from stfcat.models.forecast import ForecastModel

RECIPE = Recipe(
    optim=OptimSpec(name="adam", lr=3e-3),
    quick=Budget(epochs=4, patch=1, batch=64, steps_per_epoch=100),
    paper=Budget(epochs=30, patch=1, batch=64, steps_per_epoch=200),
    notes="Our choice (no paper): Adam 3e-3, batches of 64 random windows; `patch` is unused by this task.",
)


def _hour_features(hours: Tensor) -> Tensor:
    angle = hours * (2 * math.pi / 24.0)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)


@register_model("gru-forecast", paper=None, family="rnn", params=20904, recipe=RECIPE, task="timeseries")
class GRUForecast(ForecastModel):
    """One-layer GRU over all stations, linear head to the horizon's changes."""

    def __init__(self, n_stations: int = 12, window: int = 24, horizon: int = 6, hidden: int = 64) -> None:
        super().__init__(n_stations, window, horizon)
        self.hidden = int(hidden)
        self.gru = nn.GRU(n_stations + 2, self.hidden, batch_first=True)
        self.head = nn.Linear(self.hidden + 2 * horizon, horizon * n_stations)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: Batch) -> Tensor:
        z = self.normalise(batch["x"])
        seq = torch.cat([z, _hour_features(batch["hours_in"])], dim=-1)
        _, h = self.gru(seq)
        when = _hour_features(batch["hours_out"]).flatten(1)
        delta = self.head(torch.cat([h[-1], when], dim=-1)).view(-1, self.horizon, self.n_stations)
        return self.denormalise(z[:, -1:, :] + delta)

    def config(self) -> dict:
        return {**super().config(), "hidden": self.hidden}
