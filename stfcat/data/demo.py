"""The embedded ``demo`` dataset: a synthetic but realistic Landsat-like / MODIS-like series.

Generated deterministically from a seed (no download, well under 2 s) and written like a real
dataset (GeoTIFF int16 x 10000, nodata -9999, a made-up UTM 50N grid, ``manifest.json``) so the
demo runs through the same manifest, readers and coarse resampling as real data.

Scene (256 x 256 fine pixels at 30 m; coarse 16 x 16 pixels at 480 m, ratio 16; 6 bands like
Landsat TM: blue, green, red, NIR, SWIR1, SWIR2; 8 dates in 2021, DOY 60..284 every 32 days):

* Land-cover parcels (Voronoi fields): summer crop, winter crop, grassland, forest, water, urban,
  plus a river, roads and buildings/ponds of 2-9 px, smaller than a coarse pixel.
* Class-specific phenology: vegetated classes mix a soil and a leaf spectrum with a class
  greenness curve (per-parcel phase shift of a few days), so each class changes differently and
  the coarse image only shows the area-weighted mixture of those changes. This is what makes
  fusion learnable: a model that recognises classes in F1 can attribute the coarse change.
* Abrupt changes: the winter crop is harvested between dates 3 and 4 (train); vegetated low land
  along the river floods twice: upstream (left) on date 2, gone by date 3 (train), and
  downstream (right) on date 7, drying on date 8 (test). The flood seen in training makes the
  test flood learnable; the coarse images show both only in aggregate.
* Coarse images: the fine scene without noise, shifted by (2, -1) fine pixels (misregistration),
  blurred by a Gaussian point-spread function (sigma 10 fine px, FWHM about 1.5 coarse pixels,
  i.e. wider than the 16 px block), block-averaged 16 x 16, with a small sensor gain/offset and
  noise (sigma 0.003). Fine images get noise sigma 0.004. Coarse files stay on their native
  480 m grid; reading resamples them (bilinear) onto the fine grid.
* A 12 x 12 px no-data gap (cloud mask) in the fine image of the last date exercises masking.

Split (recorded in the manifest): dates 1, 2, 3 and 5 train, date 4 validation, dates 6-8 test.
With references allowed from any date, one-reference test cases are 5->6, 6->7, 7->8 and
two-reference test cases are (5, 7)->6 and (6, 8)->7, so two cases exist for each reference count
the flood hits. The validation cases are 3->4 and (3, 5)->4 (references from train dates only):
date 4 is the first date after the harvest, so a recipe that selects a checkpoint on it is judged
on a change it has not been trained to reproduce at that date. Taking date 4 (not 5) as the
validation date keeps the test cases unchanged.
"""

from __future__ import annotations

import datetime as _dt
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .manifest import (
    MANIFEST_NAME,
    ImageEntry,
    Manifest,
    PairEntry,
    SplitEntry,
    read_manifest,
    write_manifest,
)
from .paths import publish_mode
from .readers import write_geotiff

DEMO_VERSION = 2  # bump when the generator or the manifest changes (2: validation date), so cached copies are regenerated
SEED = 20210301
SIZE = 256
RATIO = 16
BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]
DOYS = [60, 92, 124, 156, 188, 220, 252, 284]
YEAR = 2021
CRS = "EPSG:32650"
ORIGIN = (500000.0, 4000020.0)
NODATA = -9999
N_TRAIN = 5  # dates 1..5 come before the test dates; VAL_INDEX among them is validation
VAL_INDEX = 3  # date 4

# Spectra (reflectance, 6 bands) -----------------------------------------------------------
SOIL = np.array([0.09, 0.12, 0.16, 0.22, 0.30, 0.25])
LEAF = np.array([0.03, 0.07, 0.035, 0.45, 0.22, 0.10])
DRY = np.array([0.07, 0.10, 0.13, 0.26, 0.34, 0.26])  # stubble after harvest
WATER = np.array([0.06, 0.07, 0.05, 0.02, 0.01, 0.005])
MUDDY = np.array([0.08, 0.10, 0.09, 0.06, 0.03, 0.015])
URBAN = np.array([0.11, 0.12, 0.13, 0.18, 0.22, 0.20])
ROOF = np.array([0.16, 0.17, 0.19, 0.22, 0.27, 0.25])
CLASSES = ["summer-crop", "winter-crop", "grass", "forest", "water", "urban"]


def dates() -> list[str]:
    return [(_dt.date(YEAR, 1, 1) + _dt.timedelta(days=d - 1)).isoformat() for d in DOYS]


def _greenness(cls: int, doy: np.ndarray) -> np.ndarray:
    """Class greenness (0..1) at day-of-year ``doy`` (array, per-parcel shifted)."""
    if cls == 0:  # summer crop: sown in April, peak in July, senescence in September
        return 0.05 + 0.85 * np.exp(-(((doy - 200) / 38.0) ** 2))
    if cls == 1:  # winter crop: green in spring, harvested (see below) in early June
        return 0.15 + 0.7 * np.clip((doy - 50) / 60.0, 0, 1)
    if cls == 2:  # grass: mild seasonal cycle
        return 0.35 + 0.3 * np.exp(-(((doy - 160) / 70.0) ** 2))
    if cls == 3:  # forest: evergreen-ish
        return 0.65 + 0.15 * np.exp(-(((doy - 180) / 80.0) ** 2))
    return np.zeros_like(doy, dtype=float)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return f / (f.std() + 1e-12)


def generate(seed: int = SEED) -> dict:
    """Build the demo scene in memory: fine (T,B,H,W) and coarse (T,B,h,w) reflectance, class map."""
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    n = SIZE
    yy, xx = np.mgrid[0:n, 0:n]
    # Parcels: jittered Voronoi cells of varied size.
    n_parcels = 70
    seeds = rng.uniform(0, n, size=(n_parcels, 2))
    _, parcel = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], 1))
    parcel = parcel.reshape(n, n)
    p_class = rng.choice(6, size=n_parcels, p=[0.3, 0.22, 0.15, 0.15, 0.06, 0.12])
    cls = p_class[parcel]
    # A meandering river (water, 3-5 px wide) through the scene.
    river_y = n * 0.62 + 14 * np.sin(xx / 23.0) + 6 * np.sin(xx / 7.3)
    river = np.abs(yy - river_y) < 2.2
    cls = np.where(river, 4, cls)
    # Roads (urban, 1-2 px) and small objects: buildings and ponds smaller than a coarse pixel.
    cls[(np.abs(xx - 0.37 * n - 0.15 * yy) < 1.0)] = 5
    cls[(np.abs(yy - 0.22 * n) < 0.8)] = 5
    small = np.zeros((n, n), dtype=np.int8)  # 1 roof, 2 pond
    for _ in range(90):
        h, w = rng.integers(2, 10, size=2)
        r, c = rng.integers(0, n - h), rng.integers(0, n - w)
        kind = 1 if rng.random() < 0.75 else 2
        small[r : r + h, c : c + w] = kind
    cls = np.where(small == 2, 4, np.where(small == 1, 5, cls))
    # Flood zone: parcels touching the river band's neighbourhood, lower part of the scene.
    # Flood zones: vegetated land within 26 px of the river, mostly (low-lying), a spring flood on the
    # left part (train dates) and an autumn flood on the right part (test dates).
    near_river = (np.abs(yy - river_y) < 26) & np.isin(cls, (0, 1, 2))
    lowland = near_river & (_smooth_noise(rng, (n, n), 6.0) > -0.8)
    spring_flood = lowland & (xx < 0.45 * n)
    flood = lowland & (xx >= 0.4 * n)

    phase = rng.normal(0, 6, size=n_parcels)[parcel]  # per-parcel sowing/phenology shift (days)
    brightness = 1.0 + 0.08 * rng.standard_normal(n_parcels)[parcel] + 0.04 * _smooth_noise(rng, (n, n), 1.5)
    moisture = 0.03 * _smooth_noise(rng, (n, n), 4.0)
    urban_mix = np.clip(0.5 + 0.25 * _smooth_noise(rng, (n, n), 1.0), 0, 1)

    T, B = len(DOYS), len(BANDS)
    clean = np.zeros((T, B, n, n))
    for t, doy in enumerate(DOYS):
        img = np.zeros((B, n, n))
        for c in range(4):
            m = cls == c
            g = np.clip(_greenness(c, doy + phase[m]), 0, 1)
            spec = SOIL[:, None] * (1 - g) + LEAF[:, None] * g
            if c == 1 and doy >= 150:  # harvest of the winter crop between date 3 and 4
                spec = DRY[:, None] * np.ones_like(g)
            spec = spec * brightness[m] - moisture[m] * np.array([0, 0, 0, 0, 1, 1])[:, None] * (1 - g)
            img[:, m] = spec
        img[:, cls == 4] = WATER[:, None] * (1 + 0.2 * moisture[cls == 4] / 0.03 * 0.1)
        um = cls == 5
        img[:, um] = (URBAN[:, None] * (1 - urban_mix[um]) + ROOF[:, None] * urban_mix[um]) * brightness[um]
        if t == 1:  # spring flood (train), gone by date 3 apart from wetter soil
            img[:, spring_flood] = MUDDY[:, None]
        if t == 2:
            img[:, spring_flood] *= 0.9
        if t == 6:  # autumn flood (test)
            img[:, flood] = MUDDY[:, None]
        if t == 7:  # drying: half the flooded area is wet soil
            wet = flood & (xx % 64 < 32)
            img[:, wet] = 0.5 * MUDDY[:, None] + 0.5 * SOIL[:, None] * 0.8
        clean[t] = img
    fine = clean + rng.normal(0, 0.004, size=clean.shape)
    # Coarse: misregistration, PSF, block average, gain/offset, noise.
    shifted = np.roll(clean, shift=(2, -1), axis=(2, 3))
    blurred = gaussian_filter(shifted, sigma=(0, 0, 10, 10), mode="nearest")
    k = n // RATIO
    coarse = blurred.reshape(T, B, k, RATIO, k, RATIO).mean(axis=(3, 5))
    coarse = coarse * 1.02 + 0.004 + rng.normal(0, 0.003, size=coarse.shape)
    # A cloud gap (no-data) in the last fine image.
    gap = (slice(150, 162), slice(40, 52))
    fine_mask = np.ones((T, n, n), dtype=bool)
    fine_mask[7][gap] = False
    return {"fine": fine, "coarse": coarse, "classes": cls, "flood": flood, "fine_valid": fine_mask}


def _to_int16(refl: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    out = np.clip(np.round(refl * 10000.0), -100, 16000).astype(np.int16)
    if valid is not None:
        out[:, ~valid] = NODATA
    return out


FINE_TF = [30.0, 0.0, ORIGIN[0], 0.0, -30.0, ORIGIN[1]]
COARSE_TF = [30.0 * RATIO, 0.0, ORIGIN[0], 0.0, -30.0 * RATIO, ORIGIN[1]]


def demo_content(seed: int = SEED) -> tuple[Manifest, dict[str, np.ndarray]]:
    """The demo's manifest and its stored int16 arrays by relative path, in memory."""
    scene = generate(seed)
    pairs, arrays = [], {}
    for t, d in enumerate(dates()):
        fpath, cpath = f"fine/L_{d}.tif", f"coarse/M_{d}.tif"
        arrays[fpath] = _to_int16(scene["fine"][t], scene["fine_valid"][t])
        arrays[cpath] = _to_int16(scene["coarse"][t])
        pairs.append(PairEntry(date=d, fine=ImageEntry(path=fpath), coarse=ImageEntry(path=cpath, grid="native")))
    all_dates = dates()
    manifest = Manifest(
        name="demo",
        bands=BANDS,
        scale_factor=1e-4,
        nodata=NODATA,
        fine_resolution=30.0,
        coarse_resolution=30.0 * RATIO,
        ratio=RATIO,
        shape=(SIZE, SIZE),
        crs=CRS,
        transform=FINE_TF,
        split=SplitEntry(
            train=[d for i, d in enumerate(all_dates[:N_TRAIN]) if i != VAL_INDEX],
            val=[all_dates[VAL_INDEX]],
            test=all_dates[N_TRAIN:],
            note="dates 1-3 and 5 train, 4 validation, 6-8 test; test references may come from any date, "
            "validation references from train dates",
        ),
        pairs=pairs,
        source={"dataset": "demo", "layout": "generated", "seed": seed, "demo_version": DEMO_VERSION},
    )
    return manifest, arrays


def generator_fingerprint(seed: int = SEED) -> str:
    """The fingerprint (:mod:`stfcat.data.fingerprint`) of the demo this generator writes
    (computed once per process and seed: about 1.5 s)."""
    return _generator_fingerprint(int(seed))


@functools.lru_cache(maxsize=4)
def _generator_fingerprint(seed: int) -> str:
    from .fingerprint import array_digest, combine

    manifest, arrays = demo_content(seed)
    digests = []
    for p in manifest.pairs:
        for role in ("fine", "coarse"):
            entry = getattr(p, role)
            digests.append((p.date, role, array_digest(arrays[entry.path])))
    return combine(manifest, digests)


def write_demo(folder: Path, seed: int = SEED) -> Path:
    """Generate the demo into ``folder`` (files + manifest.json) and return the folder.

    Everything is written into a temporary sibling folder first and moved into place at the end
    (an old demo is renamed aside first and removed after), so an interrupted generation never
    leaves a half-written demo behind.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    manifest, arrays = demo_content(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for rel, arr in arrays.items():
            tf = FINE_TF if rel.startswith("fine/") else COARSE_TF
            write_geotiff(tmp / rel, arr, crs=CRS, transform=tf, nodata=NODATA)
        write_manifest(manifest, tmp)
        publish_mode(tmp)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=folder.parent))
            try:
                folder.replace(old / "demo")
            except OSError:
                old = None  # vanished or replaced meanwhile: the replace below decides
        try:
            tmp.replace(folder)
        except OSError:
            # another process generated the demo at the same time: keep theirs
            if not (folder / MANIFEST_NAME).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def ensure_demo(folder: Path, seed: int = SEED) -> Path:
    """Return ``folder`` holding the demo. A cached copy is used only when its fingerprint (its
    manifest and the arrays in its files) equals the generator's; otherwise, and when absent or
    unreadable, the demo is regenerated (atomically)."""
    from .fingerprint import folder_fingerprint

    folder = Path(folder)
    if (folder / MANIFEST_NAME).is_file():
        try:
            src = read_manifest(folder).source
            if (src.get("demo_version") == DEMO_VERSION and src.get("seed") == seed
                    and folder_fingerprint(folder) == generator_fingerprint(seed)):
                return folder
        except Exception:  # noqa: BLE001 - a broken cached demo is simply regenerated
            pass
    return write_demo(folder, seed)
