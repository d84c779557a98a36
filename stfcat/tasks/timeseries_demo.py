"""The ``demo`` dataset of the time-series task: hourly readings of correlated stations.

Deterministic (seeded numpy, no download, well under a second), written like a real station
dataset: ``values.csv`` (one row per hour, one column per station, empty = missing) and
``manifest.json`` (stations, time step, chronological split, forecast window and horizon).

Signal of station ``s`` at hour ``t`` (a temperature-like quantity in degrees C):

* a level ``base_s`` and a daily cycle ``amp_s * cos(2 pi (hour - peak_s) / 24)``;
* a shared weather process ``w`` (AR(1), phi 0.98: fronts lasting days) that reaches each station
  with its own delay ``lag_s`` (0-8 h: stations lie along the wind) and gain ``gain_s``. Upwind
  stations therefore announce what downwind ones will see: the gain a multi-station model can
  have over a per-station one;
* a local AR(1) disturbance (phi 0.9) and white measurement noise (sigma 0.2);
* one 12 h gap (missing values) at station 4 in the training part exercises masking.

60 days from 2021-03-01, 12 stations; split by days: 42 train, 9 validation, 9 test. The task
forecasts the next 6 hours from the last 24.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

DEMO_NAME = "demo-stations"
DEMO_VERSION = 1  # bump when the generator changes, so cached copies are regenerated
SEED = 20210301
N_STATIONS = 12
DAYS = 60
START = "2021-03-01T00:00"
SPLIT_DAYS = {"train": (0, 42), "val": (42, 51), "test": (51, 60)}
WINDOW = 24
HORIZON = 6
MANIFEST = "manifest.json"
VALUES = "values.csv"


def station_names(n: int = N_STATIONS) -> list[str]:
    return [f"st{i + 1:02d}" for i in range(n)]


def generate(seed: int = SEED, n_stations: int = N_STATIONS, days: int = DAYS) -> np.ndarray:
    """Values ``(T, S)`` float32 (``T = 24 * days``), NaN = missing."""
    rng = np.random.default_rng(seed)
    t_len = 24 * days
    max_lag = 8
    eps = rng.normal(0.0, 0.35, t_len + max_lag + 200)
    w = np.zeros_like(eps)
    for i in range(1, len(w)):
        w[i] = 0.98 * w[i - 1] + eps[i]
    w = w[200:]  # drop the burn-in so the process starts stationary
    hours = np.arange(t_len) % 24
    base = rng.uniform(8.0, 18.0, n_stations)
    amp = rng.uniform(2.0, 6.0, n_stations)
    peak = rng.uniform(13.0, 16.0, n_stations)
    lag = np.sort(rng.integers(0, max_lag + 1, n_stations))
    gain = rng.uniform(0.6, 1.4, n_stations)
    out = np.empty((t_len, n_stations), dtype=np.float64)
    for s in range(n_stations):
        local = np.zeros(t_len)
        le = rng.normal(0.0, 0.3, t_len)
        for i in range(1, t_len):
            local[i] = 0.9 * local[i - 1] + le[i]
        weather = w[max_lag - lag[s] : max_lag - lag[s] + t_len]
        cycle = amp[s] * np.cos(2 * np.pi * (hours - peak[s]) / 24.0)
        out[:, s] = base[s] + cycle + gain[s] * weather + local + rng.normal(0.0, 0.2, t_len)
    if n_stations > 3 and days > 12:
        out[24 * 10 + 6 : 24 * 10 + 18, 3] = np.nan
    return out.astype(np.float32)


def _times(n: int) -> list[str]:
    t0 = _dt.datetime.fromisoformat(START)
    return [(t0 + _dt.timedelta(hours=i)).isoformat(timespec="minutes") for i in range(n)]


def write_demo(folder: Path, seed: int = SEED) -> Path:
    """Generate the demo into ``folder`` (``values.csv`` + ``manifest.json``), atomically: the
    files are written to a temporary sibling folder that is then moved into place."""
    folder = Path(folder)
    values = generate(seed)
    times = _times(len(values))
    names = station_names(values.shape[1])
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        lines = ["time," + ",".join(names)]
        for t, row in zip(times, values, strict=True):
            lines.append(t + "," + ",".join("" if not np.isfinite(v) else f"{v:.3f}" for v in row))
        (tmp / VALUES).write_text("\n".join(lines) + "\n", encoding="utf-8")
        split = {k: [times[24 * a], times[24 * b - 1]] for k, (a, b) in SPLIT_DAYS.items()}
        manifest = {
            "kind": "stations", "format_version": 1, "name": DEMO_NAME, "values": VALUES,
            "stations": names, "freq_hours": 1, "unit": "degC", "window": WINDOW, "horizon": HORIZON,
            "split": split,
            "source": {"dataset": DEMO_NAME, "layout": "generated", "seed": seed, "demo_version": DEMO_VERSION},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / MANIFEST).is_file():  # another process won the race: keep theirs
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def ensure_demo(folder: Path, seed: int = SEED) -> Path:
    """``folder`` holding the demo, generated when absent or from another generator version."""
    folder = Path(folder)
    mf = folder / MANIFEST
    if mf.is_file() and (folder / VALUES).is_file():
        try:
            src = json.loads(mf.read_text(encoding="utf-8")).get("source", {})
            if src.get("demo_version") == DEMO_VERSION and src.get("seed") == seed:
                return folder
        except (OSError, ValueError):  # a broken cached demo is simply regenerated
            pass
    return write_demo(folder, seed)
