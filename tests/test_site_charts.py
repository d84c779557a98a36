"""The leaderboard and training charts (inline SVG) and the run material of the model sections,
without a browser: parse the SVG as XML and count its marks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stfcat.site.charts import leaderboard_chart, training_chart
from stfcat.site.context import load_board
from stfcat.site.runs import load_runs

REPO = Path(__file__).resolve().parents[1]
BENCH_BOARD = REPO / "tests" / "fixtures" / "site" / "leaderboard_bench.json"
NS = "{http://www.w3.org/2000/svg}"


def _svg(markup) -> ET.Element:
    return ET.fromstring(str(markup))


def _marks(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{NS}g") if "data-method" in g.attrib]


def test_one_mark_per_row_and_baselines_as_reference_lines():
    rows = load_board(BENCH_BOARD).rows
    svg = _svg(leaderboard_chart(rows, "rmse", dataset="demo", split="test"))
    marks = _marks(svg)
    assert [m.get("data-method") for m in marks] == [r.model for r in rows if r.metrics["rmse"] is not None]
    assert len(marks) == 5  # 4 reproduced rows + starfm's reported row
    for m, r in zip(marks, rows, strict=True):
        assert float(m.get("data-value")) == pytest.approx(r.metrics["rmse"], abs=1e-4)
    refs = {g.get("data-baseline"): float(g.get("data-value")) for g in svg.iter(f"{NS}g") if g.get("data-baseline")}
    assert refs == pytest.approx({"copy-f1": 0.026019, "upsample-c2": 0.047096, "delta": 0.019459}, abs=1e-4)
    # bar lengths follow the values: the worst row (upsample-c2) has the longest bar
    widths = {m.get("data-method") + m.get("data-source"): float(m.find(f"{NS}rect").get("width")) for m in marks}
    assert max(widths, key=widths.get).startswith("upsample-c2")
    assert svg.get("data-metric") == "rmse" and "lower is better" in svg.find(f"{NS}title").text


def test_ssim_axis_does_not_start_at_zero_and_rows_without_value_have_no_mark():
    rows = load_board(BENCH_BOARD).rows
    svg = _svg(leaderboard_chart(rows, "ssim", dataset="demo", split="test"))
    ticks = [float(t.text) for t in svg.iter(f"{NS}text") if t.get("text-anchor") == "middle" and t.text[0].isdigit()]
    assert min(ticks) > 0.3  # SSIM 0.72..0.93 would be indistinguishable from 0
    assert len(_marks(svg)) == 5
    mae = _svg(leaderboard_chart(rows, "mae", dataset="demo", split="test"))
    assert len(_marks(mae)) == 4  # the reported row has no MAE
    assert leaderboard_chart([], "rmse", dataset="x", split="y") is None


def test_chart_text_is_escaped():
    from stfcat.site.context import ResultRow

    rows = [ResultRow(model='<script>alert("x")</script>', dataset="d", split="s", metrics={"rmse": 0.1},
                      source="reproduced here")]
    text = str(leaderboard_chart(rows, "rmse", dataset="d<b>", split="s"))
    assert "<script>" not in text and "&lt;script&gt;" in text and "d&lt;b&gt;" in text
    _svg(text)  # still well-formed XML


def test_training_chart_needs_untrained_scores():
    assert training_chart([("stfdcnn-demo", None, 0.02)], "rmse", model="stfdcnn") is None
    svg = _svg(training_chart([("stfdcnn-demo", 0.05, 0.02), ("stfdcnn-kranj", None, 0.03)], "rmse",
                              model="stfdcnn"))
    bars = [(g.get("data-run"), g.get("data-state"), float(g.get("data-value"))) for g in svg.iter(f"{NS}g")
            if g.get("data-state")]
    assert bars == [("stfdcnn-demo", "untrained", 0.05), ("stfdcnn-demo", "trained", 0.02)]


def tiny_png(w: int = 24, h: int = 16) -> bytes:
    """A valid RGB PNG (a colour ramp), so a browser can decode it."""
    import struct
    import zlib

    rows = b"".join(b"\0" + bytes(c for x in range(w) for c in (x * 10 % 256, y * 15 % 256, 128)) for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_run(root: Path, name: str, model: str, *, untrained: dict | None, looks: int = 1) -> dict:
    """A run folder as `stfcat run` writes it (metrics.json, quicklook/*.png); returns its runs entry."""
    folder = root / "runs" / name
    (folder / "quicklook").mkdir(parents=True)
    metrics = {"model": model, "mean": {model: {"rmse": 0.021, "ssim": 0.91}, "delta": {"rmse": 0.019}}}
    if untrained is not None:
        metrics["untrained"] = {"mean": untrained, "cases": []}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for i in range(looks):
        (folder / "quicklook" / f"2021-08-0{i + 1}+2021-10-11->2021-09-09.png").write_bytes(tiny_png())
    return {"model": model, "dataset": "demo", "out": f"results/runs/{name}"}


def test_runs_are_read_from_the_leaderboards_folder(tmp_path):
    board = json.loads(BENCH_BOARD.read_text())
    board["runs"] = [write_run(tmp_path, "stfdcnn-demo", "stfdcnn", untrained={"rmse": 0.05, "ssim": 0.6}),
                     write_run(tmp_path, "starfm-demo", "starfm", untrained=None, looks=0),
                     {"model": "x", "dataset": "demo", "out": "results/runs/x-demo", "error": "boom"},
                     {"model": "gone", "dataset": "demo", "out": "results/runs/gone-demo"}]
    path = tmp_path / "leaderboard.json"
    path.write_text(json.dumps(board))
    runs = {r.label: r for r in load_runs(path)}
    assert set(runs) == {"stfdcnn-demo", "starfm-demo", "gone-demo"}  # failed runs are not shown
    s = runs["stfdcnn-demo"]
    assert s.untrained == {"rmse": 0.05, "ssim": 0.6} and s.trained == {"rmse": 0.021, "ssim": 0.91}
    [(src, rel, caption)] = s.looks()
    assert src.is_file() and rel == "assets/runs/stfdcnn-demo/2021-08-01-2021-10-11--2021-09-09.png"
    assert caption == "2021-08-01+2021-10-11->2021-09-09"
    assert runs["starfm-demo"].untrained is None and runs["gone-demo"].folder is None


def test_paper_page_shows_training_chart_and_quicklooks(tmp_path):
    from stfcat.site.build import render_site

    board = json.loads(BENCH_BOARD.read_text())
    board["runs"] = [write_run(tmp_path, "stfdcnn-demo", "stfdcnn", untrained={"rmse": 0.05, "ssim": 0.6}),
                     write_run(tmp_path, "starfm-demo", "starfm", untrained=None)]
    path = tmp_path / "leaderboard.json"
    path.write_text(json.dumps(board))
    res = render_site(tmp_path / "site", None, path)
    page = (res.docs_dir / "papers" / "stfdcnn.md").read_text()
    assert "untrained vs trained" in page and 'data-state="untrained"' in page and "0.0500" in page
    assert "](../assets/runs/stfdcnn-demo/2021-08-01-2021-10-11--2021-09-09.png)" in page
    assert (res.docs_dir / "assets" / "runs" / "stfdcnn-demo" / "2021-08-01-2021-10-11--2021-09-09.png").is_file()
    starfm = (res.docs_dir / "papers" / "starfm.md").read_text()
    assert "No run of this model records untrained scores." in starfm and "assets/runs/starfm-demo/" in starfm
    models = (res.docs_dir / "models.md").read_text()
    assert models.count('class="stfcat-chart"') == 2  # RMSE and SSIM of the one (demo, test) table
