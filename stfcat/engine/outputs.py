"""Files a run writes besides metrics.json: prediction GeoTIFFs, quick-look PNGs, loss curve."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EngineError

RUN_RESULTS = ("checkpoint.pt", "metrics.json")
BENCH_RESULTS = ("leaderboard.json", "leaderboard.md")
# temporary files the engine leaves beside an output when killed (see stfcat.data.safe_fs)
# (``tempfile.mkstemp`` names: ".<output name>.<8 random characters><suffix>")
LEFTOVERS = (".stfcat-fuse-*", ".*.????????.tmp", ".*.????????.tmp.tif", ".*.????????.png")


def _guard_dir(out: Path, flag: str) -> None:
    from stfcat.data.errors import DataError
    from stfcat.data.safe_fs import check_writable_dir, clean_stale

    try:
        check_writable_dir(out, flag)
    except DataError as exc:
        raise EngineError(str(exc)) from None
    clean_stale(out, LEFTOVERS)


def refuse_finished_run(out: Path | None, *, overwrite: bool = False, resume: bool = False,
                        flag: str = "--out") -> None:
    """A run folder holding a checkpoint or metrics is continued with ``--resume`` or replaced
    with ``--overwrite``, never silently overwritten; a folder that cannot be written is named."""
    if out is None:
        return
    out = Path(out)
    found = [n for n in RUN_RESULTS if (out / n).exists()]
    if found and not (overwrite or resume):
        raise EngineError(f"{flag} {out} holds a run ({', '.join(found)}); continue it with --resume, "
                          "replace it with --overwrite, or choose another folder")
    _guard_dir(out, flag)
    from stfcat.data.safe_fs import clean_stale

    for sub in ("predictions", "quicklook"):
        clean_stale(out / sub, LEFTOVERS)


def refuse_finished_bench(out: Path, run_dirs: list[Path], *, overwrite: bool = False, merge: bool = False) -> None:
    """``bench`` refuses, before running anything, to replace a leaderboard or a finished run
    folder it would write, unless ``--overwrite`` (replace) or ``--merge`` (replace the pairs run
    now, keep the leaderboard's other rows) says so."""
    out = Path(out)
    if not (overwrite or merge):
        clash = [out / n for n in BENCH_RESULTS if (out / n).exists()]
        clash += [d for d in run_dirs if any((Path(d) / n).exists() for n in RUN_RESULTS)]
        if clash:
            shown = ", ".join(str(c) for c in clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
            raise EngineError(f"--out {out}: would replace finished results ({shown}); add --overwrite, or "
                              "--merge to replace only the pairs run now, or choose another folder")
    _guard_dir(out, "--out")


def check_output_file(out: Path, *, overwrite: bool = False, flag: str = "-o") -> Path:
    """An output file path that can be written: not a folder, not under a file, not an existing
    file unless ``overwrite``; its folder is created and cleared of stale leftovers."""
    out = Path(out)
    if out.is_dir():
        raise EngineError(f"{flag} {out}: is a folder; give a file name (e.g. {out / 'fused.tif'})")
    if out.exists() and not overwrite:
        raise EngineError(f"{out} exists; add --overwrite to replace it")
    _guard_dir(out.parent, flag)
    return out


def publish(tmp: str | Path, path: Path) -> None:
    """Move a finished temporary file into place with the permissions of a normally created file:
    ``mkstemp`` makes it owner-only (0600), which would hide results from the user's group."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o)}")

    # inf/nan (PSNR of a perfect band) are written as null so any JSON reader accepts the file
    return atomic_write_text(path, json.dumps(_finite(obj), indent=2, default=default) + "\n")


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


def rgb_bands(names: list[str]) -> tuple[tuple[int, int, int], str]:
    """Band indices of a natural-colour (red, green, blue) composite, or false colour
    (nir, red, green), or the first three bands; and a label saying which."""
    low = [n.lower() for n in names]

    def find(*keys: str) -> int | None:
        for k in keys:
            for i, n in enumerate(low):
                if n == k or (len(k) > 1 and n.startswith(k)):
                    return i
        return None

    r, g, b, nir = find("red", "r"), find("green", "g"), find("blue", "b"), find("nir", "nir1")
    if None not in (r, g, b):
        return (r, g, b), "natural colour (red, green, blue)"  # type: ignore[return-value]
    if None not in (nir, r, g):
        return (nir, r, g), "false colour (nir, red, green)"  # type: ignore[return-value]
    n = len(names)
    idx = tuple(min(i, n - 1) for i in (0, 1, 2))
    return idx, f"bands {', '.join(names[i] for i in idx)}"  # type: ignore[return-value]


def _stretch(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = (img - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]
    return np.clip(np.nan_to_num(out), 0, 1).transpose(1, 2, 0)


def quicklook_png(path: Path, panels: dict[str, np.ndarray], truth: np.ndarray | None, pred: np.ndarray,
                  band_names: list[str], title: str, outline: tuple[int, int, int, int] | None = None) -> Path:
    """F1, C1, C2, prediction, truth (RGB, one common 2-98 % stretch per channel taken from the
    truth, or F1 without one) and the absolute error (mean over bands). ``outline``
    ``(row0, row1, col0, col1)`` is drawn as a rectangle on every panel (a spatial split's test region)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx, label = rgb_bands(band_names)
    h, w = pred.shape[1:]
    step = max(1, int(np.ceil(max(h, w) / 800)))  # bound the figure's memory on big scenes
    sub = (list(idx), slice(None, None, step), slice(None, None, step))
    ref = truth if truth is not None else panels["F1"]
    ref_rgb = ref[sub]
    lo = np.nanpercentile(ref_rgb.reshape(3, -1), 2, axis=1)
    hi = np.nanpercentile(ref_rgb.reshape(3, -1), 98, axis=1)
    shown = [(k, v) for k, v in panels.items()] + [("prediction", pred)]
    if truth is not None:
        shown.append(("truth", truth))
    ncol = len(shown) + (1 if truth is not None else 0)
    fig, axes = plt.subplots(1, ncol, figsize=(3.2 * ncol, 3.6), squeeze=False)
    for ax, (name, img) in zip(axes[0], shown, strict=False):
        ax.imshow(_stretch(img[sub], lo, hi), interpolation="nearest")
        ax.set_title(name)
    if truth is not None:
        with warnings.catch_warnings():  # all-invalid pixels give NaN (shown blank), not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            err = np.nanmean(np.abs(pred - truth), axis=0)[::step, ::step]
        ax = axes[0][-1]
        vmax = float(np.nanpercentile(err, 98)) or 1e-3
        im = ax.imshow(err, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title("|prediction - truth|")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="reflectance")
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
        if outline is not None:
            from matplotlib.patches import Rectangle

            r0, r1, c0, c1 = outline
            ax.add_patch(Rectangle(((c0 - 0.5) / step, (r0 - 0.5) / step), (c1 - c0) / step, (r1 - r0) / step,
                                   fill=False, edgecolor="cyan", linewidth=1.5, gid="split-region"))
    fig.suptitle(f"{title} - {label}, 2-98 % stretch")
    fig.tight_layout()
    return _save_fig(fig, path)


def loss_curve_png(path: Path, history: list[dict[str, Any]], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    keys = sorted({k for h in history for k in h if k not in ("stage", "epoch")})
    x = np.arange(1, len(history) + 1)
    stages = [h["stage"] for h in history]
    names = list(dict.fromkeys(stages))
    # one line per stage and loss: stages train different losses (or networks), joining them would
    # draw a change between two unrelated numbers
    for k in keys:
        for st in names:
            sel = [i for i, s in enumerate(stages) if s == st]
            ys = [history[i].get(k, np.nan) for i in sel]
            label = k if len(names) == 1 else f"{st}: {k}"
            ax.plot(x[sel], ys, marker="o", ms=3, label=label)
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i + 0.5, color="grey", ls="--", lw=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (all stages)")
    ax.set_ylabel("training loss (epoch mean)")
    if keys and all(h.get(k, 1) > 0 for h in history for k in keys if isinstance(h.get(k), float)):
        ax.set_yscale("log")
    ax.set_title(title)
    if keys:
        ax.legend()
    if not history:
        ax.text(0.5, 0.5, "not trainable: no training", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _save_fig(fig, path)


def _save_fig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        publish(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


def write_prediction(path: Path, pred: np.ndarray, profile: dict[str, Any], band_names: list[str]) -> Path:
    """Prediction as float32 GeoTIFF with the series' CRS/transform, NaN nodata, band names."""
    from stfcat.data.readers import write_geotiff

    write_geotiff(path, pred.astype(np.float32), crs=profile.get("crs"), transform=profile.get("transform"),
                  nodata=float("nan"), dtype="float32")
    _set_descriptions(path, band_names)
    return path


def _set_descriptions(path: Path, names: list[str]) -> None:
    import rasterio

    with rasterio.open(path, "r+") as ds:
        for i, n in enumerate(names[: ds.count], start=1):
            ds.set_band_description(i, n)
