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
from stfcat.models import list_models, model_info

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
    out = fuse_files("delta", **scene, out=tmp_path / "out.tif", scale=1e-4, tile=32, device="cpu",
                     nodata_rule="any-input")
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
    assert got[0, 0, 0] == -9999 and not ok[0, 0]  # --nodata-rule any-input: F1's nodata pixel stays nodata
    assert np.abs(got[:, ok] - np.rint(expected[:, ok])).max() <= 1
    # the default rule predicts it from the filled F1 (C1 and C2 are valid there)
    fuse_files("delta", **scene, out=tmp_path / "out2.tif", scale=1e-4, tile=32, device="cpu")
    with rasterio.open(tmp_path / "out2.tif") as ds:
        got2 = ds.read()
        assert ds.tags()["STFCAT_NODATA_RULE"] == "no-input"
    assert (got2[:, 0, 0] != -9999).all() and np.array_equal(got2[:, ok], got[:, ok])


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


# -- the coarse/fine ratio (issue #13 point 8) ------------------------------------------------

R20 = 20
FINE25 = Affine(25, 0, 500000, 0, -25, 4000000)


def _ratio20_scene(folder: Path, *, native: bool) -> tuple[dict[str, Path], np.ndarray]:
    """Three land covers in 10 px patches with class-specific change; coarse = exact block means of
    the fine at ratio 20 (25 m / 500 m), on the 500 m grid (``native``) or replicated on the fine grid."""
    rng = np.random.default_rng(0)
    h, w, b = 120, 160, 3
    cls = np.kron(rng.integers(0, 3, (h // 10, w // 10)), np.ones((10, 10), int))
    refl = np.array([[0.05, 0.1, 0.3], [0.08, 0.2, 0.25], [0.12, 0.15, 0.4]])
    chg = np.array([[0.02, 0.05, -0.03], [0.0, -0.04, 0.06], [0.03, 0.02, 0.01]])
    f1 = np.stack([refl[cls, i] for i in range(b)]).astype(np.float32)
    f2 = (f1 + np.stack([chg[cls, i] for i in range(b)])).astype(np.float32)

    def coarse(f):
        m = f.reshape(b, h // R20, R20, w // R20, R20).mean((2, 4)).astype(np.float32)
        return m if native else np.kron(m, np.ones((R20, R20))).astype(np.float32)

    ctf = Affine(500, 0, 500000, 0, -500, 4000000) if native else FINE25
    folder.mkdir(exist_ok=True)
    paths = {"fine_ref": _write(folder / "f1.tif", f1, FINE25, nodata=None),
             "coarse_ref": _write(folder / "c1.tif", coarse(f1), ctf, nodata=None),
             "coarse_target": _write(folder / "c2.tif", coarse(f2), ctf, nodata=None)}
    return paths, f2


def _rmse(path: Path, truth: np.ndarray) -> float:
    with rasterio.open(path) as ds:
        return float(np.sqrt(np.mean((ds.read() - truth) ** 2)))


def test_fuse_builds_classical_methods_with_the_datas_ratio(tmp_path, monkeypatch):
    """Native 500 m coarse images over a 25 m fine grid: ratio 20, not 16; --ratio overrides."""
    import stfcat.models as models

    built: list[tuple[str, int]] = []
    real = models.create_model

    def spy(name, **kw):
        built.append((name, kw["ratio"]))
        return real(name, **kw)

    monkeypatch.setattr(models, "create_model", spy)
    paths, truth = _ratio20_scene(tmp_path / "s", native=True)
    for name in ("fitfc", "starfm"):
        fuse_files(name, **paths, out=tmp_path / f"{name}.tif", device="cpu")
    fuse_files("fitfc", **paths, out=tmp_path / "fitfc16.tif", device="cpu", ratio=16)
    assert built == [("fitfc", 20), ("starfm", 20), ("fitfc", 16)]
    assert _rmse(tmp_path / "fitfc.tif", truth) < _rmse(tmp_path / "fitfc16.tif", truth)


def test_fsdaf_with_the_right_ratio_is_near_exact(tmp_path):
    """Coarse images that are exact ratio-20 block means: FSDAF at ratio 20 recovers the fine change
    (the issue's case: the fixed ratio 16 mixed land covers across coarse pixels)."""
    paths, truth = _ratio20_scene(tmp_path / "s", native=False)
    with pytest.raises(EngineError, match="--ratio"):  # on the fine grid: nothing to derive it from
        fuse_files("fsdaf", **paths, out=tmp_path / "x.tif", device="cpu")
    assert not (tmp_path / "x.tif").exists()
    fuse_files("fsdaf", **paths, out=tmp_path / "r20.tif", device="cpu", ratio=20)
    fuse_files("fsdaf", **paths, out=tmp_path / "r16.tif", device="cpu", ratio=16)
    assert _rmse(tmp_path / "r20.tif", truth) < 1e-4
    assert _rmse(tmp_path / "r16.tif", truth) > 0.01


def test_derive_ratio_refuses_non_integer_anisotropic_and_inconsistent_grids(tmp_path):
    from stfcat.data.readers import raster_info
    from stfcat.engine.fuse import derive_ratio

    f = _write(tmp_path / "f.tif", np.zeros((1, 100, 100), np.float32), FINE25, nodata=None)
    grids = {"500": Affine(500, 0, 500000, 0, -500, 4000000), "490": Affine(490, 0, 500000, 0, -490, 4000000),
             "aniso": Affine(500, 0, 500000, 0, -400, 4000000), "400": Affine(400, 0, 500000, 0, -400, 4000000)}
    info = {k: raster_info(_write(tmp_path / f"c{k}.tif", np.zeros((1, 5, 5), np.float32), tf, nodata=None))
            for k, tf in grids.items()}
    fine = raster_info(f)
    assert derive_ratio(fine, {"c1": info["500"], "c2": info["500"]}) == 20
    assert derive_ratio(fine, {"c1": info["400"]}) == 16
    assert derive_ratio(fine, {"c1": fine}) is None  # on the fine grid
    for bad, what in (({"c1": info["490"]}, "c490.tif.*19.6"), ({"c2": info["aniso"]}, "--coarse-target.*20 x 16"),
                      ({"c1": info["500"], "c2": info["400"]}, "disagree.*--coarse-ref 20.*--coarse-target 16")):
        with pytest.raises(EngineError, match=what):
            derive_ratio(fine, bad)


# -- input validation and the output's nodata (issue #13 point 9) ------------------------------


@pytest.mark.parametrize("args,option", [(["--scale", "0"], "--scale"), (["--scale", "-1"], "--scale"),
                                         (["--scale", "nan"], "--scale"), (["--scale", "inf"], "--scale"),
                                         (["--scale", "-inf"], "--scale"), (["--ratio", "0"], "--ratio"),
                                         (["--ratio", "-3"], "--ratio"), (["--min-valid", "1.5"], "--min-valid"),
                                         (["--min-valid", "nan"], "--min-valid"),
                                         (["--nodata-rule", "some"], "--nodata-rule")])
def test_fuse_refuses_invalid_option_values(scene, tmp_path, args, option):
    out = tmp_path / "o.tif"
    base = ["fuse", "--model", "delta", "--fine-ref", str(scene["fine_ref"]), "--coarse-ref",
            str(scene["coarse_ref"]), "--coarse-target", str(scene["coarse_target"]), "-o", str(out),
            "--device", "cpu"]
    res = CliRunner().invoke(app, [*base, *(["--scale", "0.0001"] if args[0] != "--scale" else []), *args])
    assert res.exit_code == 2, res.output
    assert option in res.output and "Traceback" not in res.output
    assert not out.exists() and not list(tmp_path.glob(".o.tif*")) and not list(tmp_path.glob(".stfcat-fuse-*"))


def test_fuse_refuses_an_input_without_valid_pixels_naming_it(scene, tmp_path):
    empty_nan = _write(tmp_path / "nan.tif", np.full((B, H, W), np.nan, np.float32), FINE_TF, nodata=None)
    empty_nodata = _write(tmp_path / "nd.tif", np.full((B, H // R, W // R), -9999, np.int16), COARSE_TF)
    out = tmp_path / "o.tif"
    out.write_bytes(b"previous result")
    for kw, name in (({"fine_ref": empty_nan}, "--fine-ref .*nan.tif"),
                     ({"coarse_target": empty_nodata}, "--coarse-target .*nd.tif")):
        with pytest.raises(EngineError, match=f"{name}: no valid pixel"):
            fuse_files("delta", **{**scene, **kw}, out=out, scale=1e-4, device="cpu", overwrite=True)
    # a wrong --scale puts every value out of the reflectance range: same error, not an empty output
    with pytest.raises(EngineError, match="no valid pixel"):
        fuse_files("delta", **scene, out=out, scale=1.0, device="cpu", overwrite=True)
    assert out.read_bytes() == b"previous result"  # nothing on disk lost
    assert not list(tmp_path.glob(".stfcat-fuse-*")) and not list(tmp_path.glob(".o.tif*"))
    res = CliRunner().invoke(app, ["fuse", "--model", "delta", "--fine-ref", str(empty_nan), "--coarse-ref",
                                   str(scene["coarse_ref"]), "--coarse-target", str(scene["coarse_target"]),
                                   "-o", str(tmp_path / "cli.tif"), "--scale", "1e-4", "--device", "cpu"])
    assert res.exit_code == 2 and "nan.tif" in res.output and "Traceback" not in res.output


def test_fuse_warns_on_a_mostly_invalid_input(scene, tmp_path):
    f1 = rasterio.open(scene["fine_ref"]).read()
    f1[:, : int(H * 0.7)] = -9999  # 70 % nodata
    holes = _write(tmp_path / "holes.tif", f1, FINE_TF)
    warned: list[str] = []
    fuse_files("delta", **{**scene, "fine_ref": holes}, out=tmp_path / "o.tif", scale=1e-4, device="cpu",
               warn=warned.append)
    assert len(warned) == 1 and "--fine-ref" in warned[0] and "holes.tif" in warned[0] and "30.2 %" in warned[0]  # 29 of 96 rows
    warned.clear()
    fuse_files("delta", **{**scene, "fine_ref": holes}, out=tmp_path / "o2.tif", scale=1e-4, device="cpu",
               warn=warned.append, min_valid=0.2)
    assert warned == []
    res = CliRunner().invoke(app, ["fuse", "--model", "delta", "--fine-ref", str(holes), "--coarse-ref",
                                   str(scene["coarse_ref"]), "--coarse-target", str(scene["coarse_target"]),
                                   "-o", str(tmp_path / "cli.tif"), "--scale", "1e-4", "--device", "cpu"])
    assert res.exit_code == 0 and "warning: --fine-ref" in res.output and (tmp_path / "cli.tif").is_file()


def test_fuse_predicts_pixels_where_one_input_is_invalid(tmp_path):
    """Synthetic: F3 slightly negative (-0.02, below the reading rule's -0.01) on a few pixels, and
    one pixel where every input is nodata. ESTARFM predicts the first (filled inputs), the output is
    nodata only at the second; --nodata-rule any-input keeps the stricter mask."""
    rng = np.random.default_rng(3)
    h, w, b = 48, 40, 3
    tf = Affine(30, 0, 500000, 0, -30, 4000000)
    base = rng.uniform(0.05, 0.3, (b, h, w)).astype(np.float32)
    imgs = {k: (base + rng.normal(0, 0.01, base.shape)).astype(np.float32) for k in ("f1", "f3")}
    imgs.update({k: np.kron(imgs["f1" if k == "c1" else "f3"].reshape(b, h // 8, 8, w // 8, 8).mean((2, 4)),
                            np.ones((8, 8))).astype(np.float32) for k in ("c1", "c3")})
    imgs["c2"] = (imgs["c1"] + imgs["c3"]) / 2
    imgs["f3"][:, 10:12, 5:9] = -0.02
    for v in imgs.values():
        v[:, 30, 30] = np.nan
    p = {k: _write(tmp_path / f"{k}.tif", v, tf, nodata=None) for k, v in imgs.items()}
    kw = dict(fine_ref=p["f1"], coarse_ref=p["c1"], coarse_target=p["c2"], fine_ref2=p["f3"], coarse_ref2=p["c3"],
              device="cpu", ratio=8)
    fuse_files("estarfm", **kw, out=tmp_path / "o.tif")
    fuse_files("estarfm", **kw, out=tmp_path / "strict.tif", nodata_rule="any-input")
    got, strict = rasterio.open(tmp_path / "o.tif").read(), rasterio.open(tmp_path / "strict.tif").read()
    nan = np.isnan(got).any(0)
    assert nan.sum() == 1 and nan[30, 30]
    assert np.isfinite(got[:, 10:12, 5:9]).all() and (np.abs(got[:, 10:12, 5:9] - base[:, 10:12, 5:9]) < 0.1).all()
    assert np.isnan(strict[:, 10:12, 5:9]).all() and np.isnan(strict).any(0).sum() == 9
    ok = ~np.isnan(strict).any(0)
    np.testing.assert_allclose(got[:, ok], strict[:, ok])


CIA = next((d for d in (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "cia-e2starfm-250",
                        Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "cia-e2starfm-250",
                        Path(os.environ.get("STFCAT_REAL_DATA", "/nonexistent")) / "cia-e2starfm-250")
            if (d / "L_2001-10-08.tif").is_file()), None)


@pytest.mark.skipif(CIA is None, reason="real fixture cia-e2starfm-250 absent (the shared fixtures live in "
                                        "../shared/data/real, or set STFCAT_REAL_DATA)")
def test_fuse_estarfm_on_real_cia_leaves_no_holes(tmp_path):
    """Real CIA: F3 is slightly negative over water (0.17 % of pixels below -0.01); those pixels
    used to come out as NaN holes. A 100 x 100 crop holding such pixels keeps the test quick."""
    from rasterio.windows import Window

    names = {"f1": "L_2001-10-08", "c1": "M_2001-10-08", "c2": "M_2001-10-17", "f3": "L_2001-11-02",
             "c3": "M_2001-11-02"}
    with rasterio.open(CIA / "L_2001-11-02.tif") as ds:
        neg = (ds.read() < -0.01).any(0)
    r, c = (int(v) for v in np.argwhere(neg)[0])
    win = Window(min(max(c - 50, 0), 150), min(max(r - 50, 0), 150), 100, 100)
    p = {}
    for k, n in names.items():  # crops into tmp_path (the fixture itself is never copied into the repo)
        with rasterio.open(CIA / f"{n}.tif") as ds:
            p[k] = _write(tmp_path / f"{n}.tif", ds.read(window=win), ds.window_transform(win), nodata=None)
    kw = dict(fine_ref=p["f1"], coarse_ref=p["c1"], coarse_target=p["c2"], fine_ref2=p["f3"], coarse_ref2=p["c3"],
              device="cpu", ratio=10)
    fuse_files("estarfm", **kw, out=tmp_path / "o.tif")
    fuse_files("estarfm", **kw, out=tmp_path / "strict.tif", nodata_rule="any-input")
    got, strict = rasterio.open(tmp_path / "o.tif").read(), rasterio.open(tmp_path / "strict.tif").read()
    holes = np.isnan(strict).any(0)
    assert holes.any()  # the crop holds the case
    assert np.isfinite(got).all()
    assert np.nanmin(got) > -0.05 and np.nanmax(got) < 1.0


def test_derive_ratio_without_georeferencing_uses_the_image_sizes(tmp_path):
    from stfcat.data.readers import RasterInfo
    from stfcat.engine.fuse import derive_ratio

    def info(h, w):
        return RasterInfo(path=tmp_path / f"{h}x{w}", driver="ENVI", count=1, shape=(h, w), dtype="int16",
                          crs=None, transform=None, nodata=None)

    assert derive_ratio(info(480, 480), {"c1": info(24, 24)}) == 20
    assert derive_ratio(info(480, 470), {"c1": info(24, 24)}) == 20  # a partial last column
    with pytest.raises(EngineError, match="--coarse-ref .*25x24"):
        derive_ratio(info(480, 480), {"c1": info(25, 24)})


ZOO = [m for m in list_models(task="fusion") if model_info(m).cls.__module__.split(".")[0] in {"stfcat", "stfcat_zoo"}]


@pytest.mark.parametrize("name", [m for m in ZOO if not model_info(m).cls.uses_ratio])
def test_models_that_declare_no_use_of_the_ratio_ignore_it(name):
    """``uses_ratio = False`` lets fuse run them without a ratio: their output must not depend on it."""
    import inspect

    from stfcat.models import create_model
    from stfcat.models.base import REQUIRED_KEYS

    info = model_info(name)
    small = {"window": 7} if "window" in inspect.signature(info.cls.__init__).parameters else {}
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(1, 3, 32, 32, generator=g) * 0.4 + 0.05 for k in REQUIRED_KEYS[info.n_refs]}
    outs = [create_model(name, bands=3, ratio=r, **small).eval()(batch) for r in (4, 8, 16)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_fuse_runs_ratio_free_methods_on_fine_grid_coarse_images(tmp_path):
    paths, truth = _ratio20_scene(tmp_path / "s", native=False)
    fuse_files("starfm", **paths, out=tmp_path / "st.tif", device="cpu")  # no --ratio needed
    assert _rmse(tmp_path / "st.tif", truth) < 0.05
