"""Speed and memory of the classical baselines: fuse one synthetic scene with each method.

    python benchmarks/bench_classical.py                     # 1000 x 1000 x 6, all methods
    python benchmarks/bench_classical.py --size 500 --bands 3 --methods starfm --starfm4py

Each method runs in its own subprocess (peak RSS from ``resource.getrusage`` of that process,
so the numbers do not mix); ``rss_before_mb`` is the RSS just before the timed call (interpreter,
torch and the scene) and ``extra_mb`` the peak above it, i.e. the method's own working memory. With ``--starfm4py`` (and the GPL package importable, e.g. a clone's
``src`` folder given by ``--starfm4py-path``; it is not a dependency and not installed in CI) the
same STARFM case is also run with starfm4py in the same script, and the ratio is reported.
Prints one JSON line per run and a table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ("starfm", "starfm-2ref", "estarfm", "fsdaf", "fitfc")


def make_scene(size: int, bands: int, ratio: int, seed: int = 0):
    """A synthetic Landsat/MODIS-like series: patchy fine images, block-mean coarse ones."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = size // 8 + 1
    base = rng.uniform(0.03, 0.4, (bands, n, n)).astype(np.float32)
    f = {}
    for i, gain in enumerate((1.0, 1.12, 1.2)):
        x = np.kron(base * gain, np.ones((8, 8), np.float32))[:, :size, :size]
        f[i] = x + rng.normal(0, 0.01, x.shape).astype(np.float32)

    def coarse(x):
        b, h, w = x.shape
        hc, wc = -(-h // ratio), -(-w // ratio)
        pad = np.pad(x, ((0, 0), (0, hc * ratio - h), (0, wc * ratio - w)), mode="edge")
        c = pad.reshape(b, hc, ratio, wc, ratio).mean((2, 4))
        return np.repeat(np.repeat(c, ratio, 1), ratio, 2)[:, :h, :w].astype(np.float32)

    return {"f1": f[0], "c1": coarse(f[0]), "c2": coarse(f[1]), "f3": f[2], "c3": coarse(f[2]), "f2": f[1]}


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def child(args: argparse.Namespace) -> None:
    import resource
    import time

    import numpy as np

    scene = make_scene(args.size, args.bands, args.ratio)
    if args.method == "starfm4py":
        # starfm4py works on DN-like numbers (its weights add 1 to |differences|): feed x 1e4
        sys.path.insert(0, args.starfm4py_path)
        os.chdir(tempfile.mkdtemp())
        import starfm4py as stp

        h, w = scene["f1"].shape[1:]
        rows = max(d for d in range(1, 151) if h % d == 0)  # its slices must divide the height
        rss0 = current_rss_mb()
        t0 = time.perf_counter()
        preds = []
        for b in range(args.bands):
            stacks = {}
            for key in ("f1", "c1", "c2"):
                folder = f"{key}_{b}/"
                stp.partition(scene[key][b] * 1e4, folder)
                stacks[key] = stp.da_stack(folder, (h, w))
            band = [
                stp.starfm(*(stacks[k][i : i + rows * w] for k in ("f1", "c1", "c2")), None, (rows, w))
                for i in range(0, h * w, rows * w)
            ]
            preds.append(np.concatenate(band, 0) * 1e-4)
        pred = np.stack(preds)
        seconds = time.perf_counter() - t0
    else:
        import torch

        from stfcat.models import create_model

        torch.set_num_threads(args.threads)
        # the classical methods pin their own thread count while predicting: hand it over
        model = create_model(args.method, bands=args.bands, ratio=args.ratio, threads=args.threads)
        keys = ("f1", "c1", "f3", "c3", "c2") if model.n_refs == 2 else ("f1", "c1", "c2")
        batch = {k: torch.from_numpy(scene[k])[None] for k in keys}
        rss0 = current_rss_mb()
        t0 = time.perf_counter()
        pred = model(batch)[0].numpy()
        seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rmse = float(np.sqrt(np.mean((pred - scene["f2"]) ** 2)))
    print(
        json.dumps(
            {
                "method": args.method,
                "size": args.size,
                "bands": args.bands,
                "threads": args.threads,
                "seconds": round(seconds, 3),
                "peak_rss_mb": round(rss_mb, 1),
                # RSS just before the call (interpreter, torch, the scene) and the peak above it
                "rss_before_mb": round(rss0, 1),
                "extra_mb": round(max(0.0, rss_mb - rss0), 1),
                "rmse": round(rmse, 5),
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1000, help="scene side in fine pixels (default 1000)")
    p.add_argument("--bands", type=int, default=6)
    p.add_argument("--ratio", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads per method (default 1)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--starfm4py", action="store_true", help="also run starfm4py on the same scene")
    p.add_argument(
        "--starfm4py-path",
        default=os.environ.get("STARFM4PY_SRC", ""),
        help="folder holding starfm4py.py and parameters.py",
    )
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.method:
        child(args)
        return
    runs = list(args.methods)
    if args.starfm4py:
        if not args.starfm4py_path or not (Path(args.starfm4py_path) / "starfm4py.py").is_file():
            print("starfm4py not found (give --starfm4py-path); skipping the comparison", file=sys.stderr)
        else:
            runs.append("starfm4py")
    results = []
    for m in runs:
        cmd = [
            sys.executable,
            __file__,
            "--method",
            m,
            "--size",
            str(args.size),
            "--bands",
            str(args.bands),
            "--ratio",
            str(args.ratio),
            "--threads",
            str(args.threads),
            "--starfm4py-path",
            args.starfm4py_path,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{m}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
        print(line, flush=True)
        results.append(json.loads(line))
    by = {r["method"]: r for r in results}
    print(f"\n{'method':<12} {'seconds':>9} {'peak MB':>9} {'before':>8} {'extra MB':>9} {'RMSE':>8}")
    for r in results:
        print(
            f"{r['method']:<12} {r['seconds']:>9.2f} {r['peak_rss_mb']:>9.0f} {r['rss_before_mb']:>8.0f}"
            f" {r['extra_mb']:>9.0f} {r['rmse']:>8.4f}"
        )
    if "starfm" in by and "starfm4py" in by:
        print(
            f"\nstarfm4py / stfcat starfm time ratio: {by['starfm4py']['seconds'] / by['starfm']['seconds']:.1f}x"
        )


if __name__ == "__main__":
    main()
