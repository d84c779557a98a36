"""`stfcat fuse` on a user's own files: native-grid coarse inputs, windowed reads, georeferencing,
atomic no-overwrite output, checkpoint checks."""

from __future__ import annotations

import os
from pathlib import Path

import _engine_models  # noqa: F401  (registers tiny-test)
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from typer.testing import CliRunner

from stfcat.cli.main import app
from stfcat.engine.errors import EngineError
from stfcat.engine.fuse import fuse_files

H, W, B, R = 96, 80, 4, 16
CRS = "EPSG:32650"
FINE_TF = Affine(30, 0, 500000, 0, -30, 4000000)
COARSE_TF = Affine(480, 0, 500000, 0, -480, 4000000)
NAMES = ["blue", "green", "red", "nir"]


def _write(path: Path, data: np.ndarray, tf: Affine, nodata=-9999, names=None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype.name, crs=CRS, transform=tf, nodata=nodata) as ds:
        ds.write(data)
        for i, n in enumerate(names or [], start=1):
            ds.set_band_description(i, n)
    return path


@pytest.fixture()
def scene(tmp_path):
    rng = np.random.default_rng(1)
    f1 = (rng.uniform(0.05, 0.4, (B, H, W)) * 10000).astype(np.int16)
    f1[:, 0, 0] = -9999  # one nodata pixel
    c1 = (rng.uniform(0.05, 0.4, (B, H // R, W // R)) * 10000).astype(np.int16)
    c2 = (c1 * 1.1).astype(np.int16)
    return {
        "fine_ref": _write(tmp_path / "f1.tif", f1, FINE_TF, names=NAMES),
        "coarse_ref": _write(tmp_path / "c1.tif", c1, COARSE_TF),
        "coarse_target": _write(tmp_path / "c2.tif", c2, COARSE_TF),
    }


def test_fuse_delta_keeps_georeferencing_and_reads_windows(scene, tmp_path, monkeypatch):
    from stfcat.data import readers

    seen: list[tuple[int, int]] = []
    real_refl, real_res = readers.read_reflectance, readers.read_resampled

    def spy_refl(path, **kw):
        out = real_refl(path, **kw)
        seen.append(out.shape[1:])
        return out

    def spy_res(path, **kw):
        out = real_res(path, **kw)
        seen.append(out.shape[1:])
        return out

    monkeypatch.setattr(readers, "read_reflectance", spy_refl)
    monkeypatch.setattr(readers, "read_resampled", spy_res)
    out = fuse_files("delta", **scene, out=tmp_path / "out.tif", scale=1e-4, tile=32, device="cpu")
    assert seen and all(h * w < H * W for h, w in seen), "inputs must be read tile by tile"
    assert len(seen) >= 3 * 6  # 3 inputs x at least (96/32) * (80/32) tiles
    monkeypatch.undo()

    with rasterio.open(out) as ds, rasterio.open(scene["fine_ref"]) as ref:
        assert ds.crs == ref.crs and ds.transform == ref.transform and ds.nodata == ref.nodata
        assert ds.dtypes[0] == "int16" and list(ds.descriptions) == NAMES
        got = ds.read()
    # independent: F1 + (C2 - C1), coarse resampled onto the whole fine grid at once
    kw = dict(scale_factor=1e-4, fine_shape=(H, W), fine_crs=CRS, fine_transform=tuple(FINE_TF)[:6], ratio=None)
    f1 = readers.read_reflectance(scene["fine_ref"], scale_factor=1e-4)
    c1 = readers.read_resampled(scene["coarse_ref"], **kw)
    c2 = readers.read_resampled(scene["coarse_target"], **kw)
    expected = (f1 + (c2 - c1)) / 1e-4
    ok = np.isfinite(expected).all(0)
    assert got[0, 0, 0] == -9999 and not ok[0, 0]
    assert np.abs(got[:, ok] - np.rint(expected[:, ok])).max() <= 1


def test_fuse_never_overwrites_without_flag(scene, tmp_path):
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    with pytest.raises(EngineError, match="--overwrite"):
        fuse_files("copy-f1", **scene, out=out, scale=1e-4, device="cpu")
    assert out.read_bytes() == b"precious"
    fuse_files("copy-f1", **scene, out=out, scale=1e-4, device="cpu", overwrite=True)
    with rasterio.open(out) as ds:
        assert ds.shape == (H, W)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_fuse_checks_model_weights_and_scale(scene, tmp_path):
    with pytest.raises(EngineError, match="--weights"):
        fuse_files("tiny-test", **scene, out=tmp_path / "a.tif", scale=1e-4, device="cpu")
    with pytest.raises(EngineError, match="--scale"):
        fuse_files("delta", **scene, out=tmp_path / "b.tif", device="cpu")
    from stfcat.engine.checkpoint import model_record, save_checkpoint
    from stfcat.models import create_model

    for bands, ok in ((6, False), (B, True)):
        m = create_model("tiny-test", bands=bands, ratio=R)
        ck = save_checkpoint(tmp_path / f"ck{bands}.pt", {**model_record("tiny-test", m, band_names=None,
                                                                         scale_factor=1e-4),
                                                          "model_state": m.state_dict()})
        if not ok:
            with pytest.raises(EngineError, match="6 bands"):
                fuse_files("tiny-test", **scene, out=tmp_path / "c.tif", weights=ck, device="cpu")
            with pytest.raises(EngineError, match="trained for model 'tiny-test'"):
                fuse_files("delta", **scene, out=tmp_path / "c.tif", weights=ck, device="cpu")
        else:
            out = fuse_files("tiny-test", **scene, out=tmp_path / "c.tif", weights=ck, device="cpu")
            # same result as the model on the whole scene (tiles cropped by the halo and blended)
            from stfcat.data import readers

            kw = dict(scale_factor=1e-4, fine_shape=(H, W), fine_crs=CRS, fine_transform=tuple(FINE_TF)[:6],
                      ratio=None)
            from stfcat.data.series import fill_invalid

            batch = {"f1": readers.read_reflectance(scene["fine_ref"], scale_factor=1e-4),
                     "c1": readers.read_resampled(scene["coarse_ref"], **kw),
                     "c2": readers.read_resampled(scene["coarse_target"], **kw)}
            valid = np.isfinite(np.stack(list(batch.values()))).all((0, 1))
            with torch.no_grad():
                whole = m.eval()({k: torch.from_numpy(fill_invalid(v))[None] for k, v in batch.items()})[0].numpy()
            with rasterio.open(out) as ds:
                got = ds.read().astype(float)
            assert np.abs(got[:, valid] - np.rint(whole[:, valid] / 1e-4)).max() <= 1


def test_fuse_cli_exit_codes(scene, tmp_path):
    args = ["fuse", "--model", "delta", "--fine-ref", str(scene["fine_ref"]), "--coarse-ref", str(scene["coarse_ref"]),
            "--coarse-target", str(scene["coarse_target"]), "--scale", "0.0001", "-o", str(tmp_path / "o.tif"),
            "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--overwrite" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, [*args[:2], "delat", *args[3:]])
    assert res.exit_code == 2 and "delta" in res.output


REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "fsdaf-testdata-lgc"


@pytest.mark.skipif(not (REAL / "Landsat20041126").is_file(), reason=f"real test data not found at {REAL}")
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the files have no georeferencing
def test_fuse_real_envi_lgc(tmp_path):
    """ENVI BSQ int16 files (FSDAF's LGC crop, no georeferencing): delta equals F1 + C2 - C1."""
    out = fuse_files("delta", fine_ref=REAL / "Landsat20041126", coarse_ref=REAL / "MODIS20041126",
                     coarse_target=REAL / "MODIS20041228", out=tmp_path / "lgc.tif", scale=1e-4, device="cpu")
    read = lambda p: rasterio.open(p).read().astype(np.int64)  # noqa: E731
    f1, c1, c2 = read(REAL / "Landsat20041126"), read(REAL / "MODIS20041126"), read(REAL / "MODIS20041228")
    got = read(out)
    assert got.shape == (3, 480, 480)
    # values pass through float32 reflectance: allow one stored unit of rounding
    assert np.abs(got - (f1 + c2 - c1))[:, (f1 > 0).all(0)].max() <= 1


@pytest.fixture()
def alpha_model():
    """A non-trainable model that implements the fixture catalog's 'alpha-net' paper (removed afterwards)."""
    from stfcat.models import register_model, scoped
    from stfcat.models.trivial import Delta

    cls = type("AlphaDelta", (Delta,), {"__doc__": "delta under the alpha-net paper id (test only)."})
    with scoped():
        register_model("alpha-delta", paper="alpha-net", family="trivial", params=0)(cls)
        yield "alpha-delta"


def test_fuse_catalog_names_the_paper_in_the_output(scene, tmp_path, alpha_model):
    ok = Path(__file__).parent / "fixtures" / "catalog_ok"
    args = ["fuse", "--model", alpha_model, "--fine-ref", str(scene["fine_ref"]), "--coarse-ref",
            str(scene["coarse_ref"]), "--coarse-target", str(scene["coarse_target"]), "--scale", "0.0001",
            "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "a.tif"), "--catalog", str(ok)])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "a.tif") as ds:
        tags = ds.tags()
    assert tags["STFCAT_MODEL"] == alpha_model and tags["STFCAT_PAPER"] == "alpha-net"
    assert tags["STFCAT_METHOD"] == "AlphaNet" and tags["STFCAT_PAPER_DOI"].startswith("10.")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.tif").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's owner-only 0600
    # the env var selects the catalog too; the shipped catalog has no 'alpha-net': a clear error, no file
    res = CliRunner(env={"STFCAT_CATALOG": str(ok)}).invoke(app, [*args, "-o", str(tmp_path / "b.tif")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "c.tif")])
    assert res.exit_code == 2 and "'alpha-net'" in res.output and "lacks" in res.output, res.output
    assert not (tmp_path / "c.tif").exists()
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "d.tif"), "--catalog", str(tmp_path / "nocat")])
    assert res.exit_code == 2 and "nocat" in res.output and not (tmp_path / "d.tif").exists()
