"""Tiny trainable models for the engine tests (registered only when a test imports this module,
or in subprocesses through STFCAT_PLUGINS=_engine_models with tests/ on PYTHONPATH). Re-importing
the module registers the same classes again, which the registry accepts."""

from __future__ import annotations

import torch
from torch import nn

from stfcat.models import Budget, FusionModel, OptimSpec, Recipe, Stage, register_model

RECIPE = Recipe(OptimSpec(name="adam", lr=1e-3, scheduler="step", scheduler_args={"step_size": 1, "gamma": 0.7}),
                quick=Budget(epochs=3, patch=32, batch=4, steps_per_epoch=3),
                paper=Budget(epochs=4, patch=32, batch=4, steps_per_epoch=3))


@register_model("tiny-test", paper=None, family="cnn", params=None, recipe=RECIPE)
class TinyTest(FusionModel):
    """Residual 3x3 conv on (F1, C1, C2) with dropout, so RNG state matters for resuming."""

    halo = 2

    def __init__(self, bands: int = 6, ratio: int = 16, width: int = 8) -> None:
        super().__init__(bands, ratio)
        self.body = nn.Sequential(nn.Conv2d(3 * bands, width, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1),
                                  nn.Conv2d(width, bands, 3, padding=1))

    def forward(self, b):
        return b["f1"] + (b["c2"] - b["c1"]) + self.body(torch.cat([b["f1"], b["c1"], b["c2"]], 1))

@register_model("tiny-plain", paper=None, family="cnn", params=None, recipe=RECIPE)
class TinyPlain(FusionModel):
    """Deterministic (no dropout), so data-parallel and single-process runs can be compared."""

    halo = 1

    def __init__(self, bands: int = 6, ratio: int = 16) -> None:
        super().__init__(bands, ratio)
        self.conv = nn.Conv2d(3 * bands, bands, 3, padding=1)

    def forward(self, b):
        return b["f1"] + self.conv(torch.cat([b["f1"], b["c1"], b["c2"]], 1))

@register_model("tiny-continued", paper=None, family="cnn", params=None, recipe=RECIPE)
class TinyContinued(TinyPlain):
    """Two stages of one optimisation: a loss term is switched on half-way (``continues``)."""

    def stages(self):
        def more(batch, target):
            return self.loss(batch, target) + nn.functional.l1_loss(self(batch), target)

        return [Stage("mse", loss=self.loss, share=0.5), Stage("mse+l1", loss=more, share=0.5, continues=True)]

@register_model("tiny-two-stage", paper=None, family="gan", params=None, recipe=RECIPE)
class TinyTwoStage(FusionModel):
    """Two stages: a plain loss stage, then a custom-step stage with its own optimiser."""

    halo = 1
    n_refs = 2

    def __init__(self, bands: int = 6, ratio: int = 16) -> None:
        super().__init__(bands, ratio)
        self.a = nn.Conv2d(5 * bands, bands, 3, padding=1)
        self.b = nn.Conv2d(bands, bands, 1)

    def forward(self, x):
        z = torch.cat([x["f1"], x["c1"], x["c2"], x["f3"], x["c3"]], 1)
        return x["f1"] + self.b(self.a(z))

    def stages(self):
        def step(batch, target, opts):
            opts["b"].zero_grad()
            loss = nn.functional.l1_loss(self(batch), target)
            loss.backward()
            opts["b"].step()
            return {"l1": loss.detach()}

        return [Stage("warm", loss=self.loss, share=0.5),
                Stage("refine", step=step, optimizers={"b": (list(self.b.parameters()), OptimSpec(lr=1e-3))},
                      share=0.5)]


def make_small_series(folder, demo_dir, *, size: int = 64, n_dates: int = 6, n_test: int = 2, bands=None):
    """A small user-style series folder (GeoTIFF + manifest.json) cropped from the demo scene, so
    engine tests run on real-looking content in a fraction of the demo's time."""
    from pathlib import Path

    from stfcat.data.manifest import Manifest, write_manifest
    from stfcat.data.readers import write_geotiff
    from stfcat.data.series import load_series

    demo = load_series("demo", data_dir=demo_dir)
    folder = Path(folder)
    dates = demo.dates[:n_dates]
    idx = list(range(len(demo.bands))) if bands is None else list(bands)
    win = (0, 0, size, size)
    tf = list(demo.profile["transform"]) if demo.profile["transform"] else None
    pairs = []
    for d in dates:
        write_geotiff(folder / "fine" / f"{d}.tif", demo.read_fine(d, win)[idx], crs=demo.profile["crs"], transform=tf)
        write_geotiff(folder / "coarse" / f"{d}.tif", demo.read_coarse(d, win)[idx], crs=demo.profile["crs"],
                      transform=tf)
        pairs.append({"date": d, "fine": {"path": f"fine/{d}.tif"}, "coarse": {"path": f"coarse/{d}.tif"}})
    m = Manifest(name=folder.name, bands=[demo.bands[i] for i in idx], scale_factor=1.0, fine_resolution=30.0,
                 coarse_resolution=480.0, ratio=16, shape=(size, size), crs=demo.profile["crs"], transform=tf,
                 split={"train": dates[:-n_test], "test": dates[-n_test:]}, pairs=pairs)
    write_manifest(m, folder)
    return folder
