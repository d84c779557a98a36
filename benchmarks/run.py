"""Speed and memory of every model, measured against a reference taken in the same run.

    python benchmarks/run.py [--models ID ...] [--quick] [--threads N] [--json OUT.json]

For each model, in a fresh subprocess (so ``ru_maxrss`` is that model's own peak):

* whole-scene fusion with ``stfcat.engine.fuse.fuse_files`` (tiled reader, 256 px tiles, coarse
  inputs on their native grid) of a synthetic 2040 x 1720 x 6 int16 scene (``--quick``: 512 x 512):
  wall time, megapixels per second, peak resident memory (the issue's bound: 1.5 GB);
* the model's FLOPs per 256 x 256 tile (``torch.utils.flop_counter.FlopCounterMode``) and the
  FLOP/s its forward achieves, as a fraction of this machine's conv2d FLOP/s (a 64->64 3x3
  convolution measured in the same process just before): how well the model uses the hardware;
* one training step (batch 4 of 6 x 128 x 128, the model's first stage, its recipe's optimiser):
  seconds per step (the deep-model issue's reference: 0.97 s/step for EDCSTFN).

Numbers depend on the machine and its load; compare ratios within one run.

    python benchmarks/run.py --overlap-cost [--models edcstfn] [--shape 1020 860] [--threads N]

The price of seam-free tiles, in one process: the same synthetic in-memory scene predicted by
``stfcat.engine.predict.predict_scene`` with the default layout (tiles overlapping by twice the
model's receptive field, cropped, no blend), with non-overlapping 256 px tiles (seamed, the reference)
with the previous rule (256 px tiles overlapping by ``2 * halo + 8``), and with the default's tiles
spread evenly but without overlap (what the overlap alone costs): network pixels
processed / scene pixels, forward wall seconds and CPU seconds of the whole prediction (best of
``--repeat``, interleaved) with their ratios to non-overlapping tiles, and the largest seam
(|non-overlapping - default|).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL = (2040, 1720)
QUICK = (512, 512)
BANDS = 6
RATIO = 16


def conv_reference(threads: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    x = torch.rand(1, 64, 256, 256)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            conv(x)
        flops = fc.get_total_flops()
        conv(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            conv(x)
            n += 1
        dt = (time.perf_counter() - t0) / n
    return {"conv2d_flops": flops, "conv2d_seconds": dt, "machine_flops_per_s": flops / dt}


def make_scene(folder: Path, shape: tuple[int, int]) -> dict[str, Path]:
    """F1, C1, C2, F3, C3 GeoTIFFs (int16 x 1e-4, nodata -9999), coarse on a 480 m grid."""
    import numpy as np
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    h, w = shape
    ch, cw = -(-h // RATIO), -(-w // RATIO)
    paths = {}
    fine_tf = Affine(30, 0, 500000, 0, -30, 4000000)
    coarse_tf = Affine(480, 0, 500000, 0, -480, 4000000)
    base = rng.uniform(0.05, 0.4, (BANDS, ch, cw))
    for key, grid in (("f1", "fine"), ("c1", "coarse"), ("c2", "coarse"), ("f3", "fine"), ("c3", "coarse")):
        if grid == "fine":
            up = np.kron(base, np.ones((RATIO, RATIO)))[:, :h, :w]
            data = up + rng.normal(0, 0.02, (BANDS, h, w))
            tf, (hh, ww) = fine_tf, (h, w)
        else:
            data = base * rng.uniform(0.9, 1.1)
            tf, (hh, ww) = coarse_tf, (ch, cw)
        arr = np.clip(data * 10000, 0, 16000).astype(np.int16)
        p = folder / f"{key}.tif"
        with rasterio.open(p, "w", driver="GTiff", height=hh, width=ww, count=BANDS, dtype="int16",
                           crs="EPSG:32650", transform=tf, nodata=-9999, tiled=True) as ds:
            ds.write(arr)
        paths[key] = p
    return paths


def peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux: ``VmHWM`` of the current address space, which
    starts afresh at exec; ``ru_maxrss`` would also count the parent's memory copied at fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS


def worker(model_id: str, scene: Path, shape: tuple[int, int], threads: int, out_json: Path) -> None:
    """Runs in its own process: fuse the scene, count FLOPs, time a training step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stfcat.engine.checkpoint import model_record, save_checkpoint
    from stfcat.engine.fuse import fuse_files
    from stfcat.models import count_parameters, create_model, model_info
    from stfcat.models.base import REQUIRED_KEYS

    torch.manual_seed(0)
    info = model_info(model_id)
    model = create_model(model_id, bands=BANDS, ratio=RATIO)
    res: dict = {"model": model_id, "params": count_parameters(model), "trainable": info.trainable}
    weights = None
    with tempfile.TemporaryDirectory() as tmp:
        if info.trainable:
            weights = save_checkpoint(Path(tmp) / "ck.pt", {**model_record(model_id, model, band_names=None,
                                                                           scale_factor=1e-4),
                                                            "model_state": model.state_dict()})
        paths = {k: scene / f"{k}.tif" for k in ("f1", "c1", "c2", "f3", "c3")}
        os.environ["STFCAT_NUM_THREADS"] = str(threads)
        t0 = time.perf_counter()
        fuse_files(model_id, fine_ref=paths["f1"], coarse_ref=paths["c1"], coarse_target=paths["c2"],
                   fine_ref2=paths["f3"] if info.n_refs == 2 else None,
                   coarse_ref2=paths["c3"] if info.n_refs == 2 else None,
                   out=Path(tmp) / "out.tif", weights=weights, scale=1e-4, device="cpu")
        res["fuse_seconds"] = time.perf_counter() - t0
    res["megapixels_per_s"] = shape[0] * shape[1] / 1e6 / res["fuse_seconds"]
    res["peak_rss_mb"] = peak_rss_mb()
    res.update(conv_reference(threads))  # the machine's conv2d FLOP/s now, in this process
    # model-only forward on one 256 x 256 tile
    model.eval()
    keys = REQUIRED_KEYS[info.n_refs]
    tile = {k: torch.rand(1, BANDS, 256, 256) * 0.4 for k in keys}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            model(tile)
        res["flops_per_tile"] = fc.get_total_flops()
        model(tile)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0 or n < 2:
            model(tile)
            n += 1
        res["tile_forward_seconds"] = (time.perf_counter() - t0) / n
    res["achieved_flops_per_s"] = res["flops_per_tile"] / res["tile_forward_seconds"]
    if info.trainable:
        from stfcat.engine.optim import make_optimizer

        model.train()
        stage = model.stages()[0]
        batch = {k: torch.rand(4, BANDS, 128, 128) * 0.4 for k in keys}
        target = torch.rand(4, BANDS, 128, 128) * 0.4
        if stage.loss is not None:
            opt = make_optimizer(stage.params if stage.params is not None else model.parameters(), info.recipe.optim)

            def step():
                opt.zero_grad(set_to_none=True)
                stage.loss(batch, target).backward()
                opt.step()
        else:
            opts = {k: make_optimizer(ps, spec) for k, (ps, spec) in stage.optimizers.items()}

            def step():
                stage.step(batch, target, opts)
        step()  # warm-up (allocations, lazy init)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3.0 or n < 2:
            step()
            n += 1
        res["train_step_seconds"] = (time.perf_counter() - t0) / n
    out_json.write_text(json.dumps(res))


class _GridLayout:
    """Non-overlapping ``tile`` px tiles on a fixed grid (the last row/column smaller): the seamed
    reference of the issue (LibSTF predicts in such 256 px tiles)."""

    overlap, align = 0, 1

    def __init__(self, tile: int = 256) -> None:
        self.tile = tile

    def windows(self, shape):
        from rasterio.windows import Window

        t = self.tile
        return [Window(c, r, min(t, shape[1] - c), min(t, shape[0] - r))
                for r in range(0, shape[0], t) for c in range(0, shape[1], t)]


class _PreviousLayout:
    """The rule before receptive fields: 256 px tiles overlapping by ``2 * halo + 8``."""

    def __init__(self, model, tile: int = 256) -> None:
        from stfcat.engine.predict import tile_align

        halo = int(getattr(model, "halo", 0))
        self.overlap, self.align, self.tile = 2 * halo + (8 if halo else 0), tile_align(model), tile
        self.tile = max(tile, 2 * self.overlap + 16, min(3 * self.overlap, 512), self.overlap + self.align)

    def windows(self, shape):
        from stfcat.data.tiling import iter_tiles

        return list(iter_tiles(shape, self.tile, self.overlap, self.align))


def overlap_cost(model_id: str, shape: tuple[int, int], threads: int, repeat: int) -> dict:
    """Time and pixels of the default (exact) layout against non-overlapping tiles, same run."""
    import numpy as np
    import torch

    from stfcat.engine.predict import TileLayout, predict_scene, tile_layout
    from stfcat.models import create_model, model_info
    from stfcat.models.base import REQUIRED_KEYS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_id, bands=BANDS, ratio=RATIO).eval()
    rng = np.random.default_rng(0)
    h, w = shape
    base = np.kron(rng.uniform(0.05, 0.4, (BANDS, -(-h // RATIO), -(-w // RATIO))), np.ones((RATIO, RATIO)))
    scene = {k: (base[:, :h, :w] + rng.normal(0, 0.02, (BANDS, h, w))).astype(np.float32)
             for k in REQUIRED_KEYS[model_info(model_id).n_refs]}

    def read(win):
        r, c, hh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        return {k: v[:, r : r + hh, c : c + ww] for k, v in scene.items()}

    exact = tile_layout(model)
    layouts = {"non-overlapping": _GridLayout(256), "default": exact,
               "even, no overlap": TileLayout(exact.core, 0, exact.align), "previous": _PreviousLayout(model)}
    res: dict = {"model": model_id, "shape": list(shape), "receptive_field": model.receptive_field,
                 "core": exact.core, "overlap": exact.overlap}
    preds = {}
    best = dict.fromkeys(layouts, float("inf"))
    best_cpu = dict.fromkeys(layouts, float("inf"))  # CPU time: robust to other processes on a shared machine
    for _ in range(repeat):  # interleaved, so a load change on the machine hits every layout
        for name, lay in layouts.items():
            stats: dict = {}
            c0 = time.process_time()
            out, secs = predict_scene({"m": model}, read, shape, BANDS, layout=lay, stats=stats)
            best_cpu[name] = min(best_cpu[name], time.process_time() - c0)
            best[name] = min(best[name], secs["m"])
            res[f"{name}_pixels_ratio"] = stats["network_pixels"] / stats["scene_pixels"]
            res[f"{name}_tiles"] = stats["tiles"]
            preds[name] = out["m"]
    for name in layouts:
        res[f"{name}_seconds"] = best[name]
        res[f"{name}_time_ratio"] = best[name] / best["non-overlapping"]
        res[f"{name}_cpu_seconds"] = best_cpu[name]
        res[f"{name}_cpu_ratio"] = best_cpu[name] / best_cpu["non-overlapping"]
    res["seam_max_abs"] = float(np.abs(preds["non-overlapping"] - preds["default"]).max())
    res["previous_vs_default_max_abs"] = float(np.abs(preds["previous"] - preds["default"]).max())
    return res


def print_overlap_cost(r: dict) -> None:
    print(f"{r['model']} on {r['shape'][0]}x{r['shape'][1]}x{BANDS}: receptive field {r['receptive_field']} px, "
          f"default tiles {r['core']}+{r['overlap']} px")
    print(f"{'layout':<18}{'tiles':>6}{'net px/scene px':>17}{'forward s':>11}{'ratio':>7}{'CPU s':>8}{'ratio':>7}")
    for name in ("non-overlapping", "default", "even, no overlap", "previous"):
        print(f"{name:<18}{r[name + '_tiles']:>6}{r[name + '_pixels_ratio']:>17.3f}{r[name + '_seconds']:>11.2f}"
              f"{r[name + '_time_ratio']:>7.3f}{r[name + '_cpu_seconds']:>8.2f}{r[name + '_cpu_ratio']:>7.3f}")
    print("(ratio: to non-overlapping 256 px tiles, best of the repeats; CPU s: process time of the whole prediction,"
          " less sensitive to other load on the machine)")
    print(f"largest seam of non-overlapping tiles: {r['seam_max_abs']:.2e} (reflectance); "
          f"previous rule vs default: {r['previous_vs_default_max_abs']:.2e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="model ids (default: every registered model)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK[0]}x{QUICK[1]} scene instead of {FULL[0]}x{FULL[1]}")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--overlap-cost", action="store_true",
                    help="time seam-free (overlapping) tiles against non-overlapping ones instead")
    ap.add_argument("--shape", type=int, nargs=2, default=(1020, 860), metavar=("H", "W"),
                    help="scene of --overlap-cost (default 1020 860)")
    ap.add_argument("--repeat", type=int, default=2, help="--overlap-cost: best of this many runs")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape = QUICK if args.quick else FULL
    if args.overlap_cost:
        rows = [overlap_cost(m, tuple(args.shape), args.threads, args.repeat) for m in (args.models or ["edcstfn"])]
        for r in rows:
            print_overlap_cost(r)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return 0
    if args.worker:
        worker(args.worker, args.scene, shape, args.threads, args.result)
        return 0
    from stfcat.models import list_models

    models = args.models or list_models()
    ref = conv_reference(args.threads)
    print(f"machine: conv2d 64->64 3x3 on 256x256 = {ref['machine_flops_per_s'] / 1e9:.2f} GFLOP/s "
          f"({args.threads} threads; measured again in each model's process for its 'frac')")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene"
        scene.mkdir()
        make_scene(scene, shape)
        for m in models:
            out = Path(tmp) / f"{m}.json"
            cmd = [sys.executable, __file__, "--worker", m, "--scene", str(scene), "--result", str(out),
                   "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not out.is_file():
                rows.append({"model": m, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
                print(f"{m}: FAILED {rows[-1]['error']}")
                continue
            r = json.loads(out.read_text())
            r["flops_fraction"] = r["achieved_flops_per_s"] / r["machine_flops_per_s"]
            rows.append(r)
    head = (f"{'model':<16}{'params':>11}{'scene s':>9}{'MP/s':>8}{'peak MB':>9}{'GFLOP/tile':>11}"
            f"{'GFLOP/s':>9}{'ref':>7}{'frac':>7}{'train s/step':>13}")
    print(f"scene {shape[0]}x{shape[1]}x{BANDS}, 256 px tiles")
    print(head)
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<16} FAILED: {r['error']}")
            continue
        ts = r.get("train_step_seconds")
        print(f"{r['model']:<16}{r['params']:>11,}{r['fuse_seconds']:>9.2f}{r['megapixels_per_s']:>8.2f}"
              f"{r['peak_rss_mb']:>9.0f}{r['flops_per_tile'] / 1e9:>11.3f}{r['achieved_flops_per_s'] / 1e9:>9.2f}"
              f"{r['machine_flops_per_s'] / 1e9:>7.1f}{r['flops_fraction']:>7.2f}{(f'{ts:.3f}' if ts else '—'):>13}")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "threads": args.threads, "reference": ref,
                                         "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
