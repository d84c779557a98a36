"""Leaderboard charts as inline SVG, generated at build time (no JavaScript, no plotting library).

Inline SVG, not an ``<img>``: the marks are part of the page, so they follow the theme's colours,
show a tooltip (``<title>``) and can be counted by the browser test. Every mark carries
``data-method`` (the row's model) and ``data-value``; the trivial baselines' values are also drawn
as dashed reference lines (``data-baseline``) across the chart, so a bar that does not pass the
``delta`` line is visibly no better than the coarse change added to F1.

The output depends only on the rows (fixed number formats, no ids from counters), so two builds
give the same bytes. All text is escaped: model names come from result files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from stfcat.site.context import HIGHER_IS_BETTER, TRIVIAL_BASELINES, ResultRow

WIDTH = 640
LABEL_W = 190  # room for the method name left of the bars
VALUE_W = 64  # room for the value right of the bars
BAR_H = 16
GAP = 6
TOP = 48  # title + two rows of baseline labels
AXIS_H = 26
COLORS = {"method": "#3f51b5", "baseline": "#9e9e9e", "reported": "#9fa8da", "untrained": "#bdbdbd"}
BASELINE_DASH = {"copy-f1": "6 3", "upsample-c2": "2 3", "delta": "8 3 2 3"}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    kind: str  # a COLORS key
    attrs: dict[str, str]
    tip: str


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def _nice_step(span: float) -> float:
    raw = span / 5 if span > 0 else 1.0
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _domain(values: Sequence[float], from_zero: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if from_zero and lo >= 0:
        lo = 0.0
    else:  # e.g. SSIM 0.80..0.95: start near the smallest value so differences are visible
        pad = (hi - lo) * 0.15 or abs(hi) * 0.05 or 0.05
        lo = lo - pad
    hi = hi + (hi - lo) * 0.05 or 1.0
    step = _nice_step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _attrs(attrs: dict[str, str]) -> str:
    return "".join(f' {k}="{escape(v)}"' for k, v in sorted(attrs.items()))


def bar_chart_svg(bars: Sequence[Bar], *, title: str, refs: dict[str, float] | None = None,
                  from_zero: bool = True, svg_attrs: dict[str, str] | None = None) -> Markup | None:
    """Horizontal bars, one per ``bars`` entry in order, with dashed reference lines ``refs``
    (label -> value). None when there is nothing to draw."""
    if not bars:
        return None
    refs = refs or {}
    lo, hi = _domain([b.value for b in bars] + list(refs.values()), from_zero)
    plot_w = WIDTH - LABEL_W - VALUE_W
    height = TOP + len(bars) * (BAR_H + GAP) + AXIS_H

    def x(v: float) -> float:
        return LABEL_W + (v - lo) / (hi - lo) * plot_w

    bottom = TOP + len(bars) * (BAR_H + GAP)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="stfcat-chart" viewBox="0 0 {WIDTH} {height}" '
           f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}"'
           f'{_attrs(svg_attrs or {})}>',
           f"<title>{escape(title)}</title>",
           f'<text class="stfcat-chart-title" x="{LABEL_W}" y="14" font-size="13" font-weight="600" '
           f'fill="currentColor">{escape(title)}</text>']
    step = _nice_step(hi - lo)
    n_ticks = round((hi - lo) / step)
    for i in range(n_ticks + 1):
        v = lo + i * step
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{TOP - 4}" y2="{bottom}" stroke="currentColor" '
                   f'stroke-opacity="0.12"/>'
                   f'<text x="{x(v):.1f}" y="{bottom + 16}" font-size="10" text-anchor="middle" '
                   f'fill="currentColor">{_fmt(v)}</text>')
    for i, b in enumerate(bars):
        y = TOP + i * (BAR_H + GAP)
        x0, x1 = x(lo), x(b.value)
        dashed = ' stroke="#3f51b5" stroke-dasharray="3 2"' if b.kind == "reported" else ""
        out.append(f'<g class="stfcat-mark stfcat-mark-{b.kind}"{_attrs(b.attrs)} data-value="{_fmt(b.value)}">'
                   f"<title>{escape(b.tip)}</title>"
                   f'<text x="{LABEL_W - 6}" y="{y + BAR_H - 4}" font-size="11" text-anchor="end" '
                   f'fill="currentColor">{escape(b.label)}</text>'
                   f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.0):.1f}" height="{BAR_H}" '
                   f'fill="{COLORS[b.kind]}"{dashed}/>'
                   f'<text x="{max(x1, x0) + 4:.1f}" y="{y + BAR_H - 4}" font-size="10" '
                   f'fill="currentColor">{_fmt(b.value)}</text></g>')
    for j, (name, v) in enumerate(sorted(refs.items(), key=lambda kv: kv[1])):
        out.append(f'<g class="stfcat-ref" data-baseline="{escape(name)}" data-value="{_fmt(v)}">'
                   f"<title>{escape(name)}: {_fmt(v)}</title>"
                   f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{TOP - 6}" y2="{bottom}" stroke="#e53935" '
                   f'stroke-width="1.2" stroke-dasharray="{BASELINE_DASH.get(name, "4 3")}"/>'
                   f'<text x="{x(v):.1f}" y="{TOP - 9 - 10 * (j % 2)}" font-size="9" text-anchor="middle" '
                   f'fill="#e53935">{escape(name)}</text></g>')
    out.append("</svg>")
    return Markup("".join(out))


def leaderboard_chart(rows: Sequence[ResultRow], metric: str, *, dataset: str, split: str) -> Markup | None:
    """One mark per row with a value of ``metric`` (in the rows' order); the reproduced trivial
    baselines are also reference lines."""
    bars, refs = [], {}
    for r in rows:
        v = r.metrics.get(metric)
        if v is None:
            continue
        baseline = r.model in TRIVIAL_BASELINES
        kind = "reported" if not r.reproduced and r.source else ("baseline" if baseline else "method")
        label = r.model + (" (reported)" if kind == "reported" else "")
        bars.append(Bar(label, v, kind, {"data-method": r.model, "data-source": r.source or ""},
                        f"{label}: {metric.upper()} {_fmt(v)}" + (f" ({r.source})" if r.source else "")))
        if baseline and kind != "reported":
            refs[r.model] = v
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    return bar_chart_svg(bars, title=f"{dataset}, {split}: test {metric.upper()} ({better} is better)", refs=refs,
                         from_zero=metric not in HIGHER_IS_BETTER,
                         svg_attrs={"data-dataset": dataset, "data-split": split, "data-metric": metric})


def training_chart(runs: Sequence[tuple[str, float | None, float | None]], metric: str, *, model: str) -> Markup | None:
    """Untrained against trained ``metric``, two bars per run label; None without any untrained value."""
    bars = []
    for label, untrained, trained in runs:
        if untrained is None or trained is None:
            continue
        for state, v in (("untrained", untrained), ("trained", trained)):
            bars.append(Bar(f"{label}, {state}", v, "untrained" if state == "untrained" else "method",
                            {"data-run": label, "data-state": state}, f"{model} {state} on {label}: {_fmt(v)}"))
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    return bar_chart_svg(bars, title=f"{model}: test {metric.upper()} untrained vs trained ({better} is better)",
                         from_zero=metric not in HIGHER_IS_BETTER,
                         svg_attrs={"data-model": model, "data-metric": metric, "data-chart": "training"})
