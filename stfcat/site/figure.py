"""The static timeline figure (papers per year, stacked by category) that the README embeds.

Drawn with matplotlib's Agg canvas directly (no pyplot, so no global backend switch) and saved
without the ``Software`` PNG text chunk, so the same catalog always gives the same bytes with a
given matplotlib version.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from stfcat.schemas import Paper
from stfcat.site.render import CATEGORIES


def timeline_png(papers: Iterable[Paper], *, dpi: int = 110) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    papers = list(papers)
    counts = Counter((p.year, p.category.value) for p in papers)
    years = list(range(min(p.year for p in papers), max(p.year for p in papers) + 1)) if papers else []
    fig = Figure(figsize=(8.0, 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = [0] * len(years)
    for cat, (label, color) in CATEGORIES.items():
        heights = [counts[(y, cat)] for y in years]
        if not any(heights):
            continue
        ax.bar(years, heights, bottom=bottom, color=color, label=label, width=0.75,
               edgecolor="white", linewidth=0.5)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(years)
    ax.set_xticklabels([str(y) for y in years], rotation=45 if len(years) > 12 else 0)
    ax.set_ylabel("papers")
    ax.set_title(f"STF papers in the stfcat catalog per year ({len(papers)} papers)")
    ax.set_ylim(0, max(bottom, default=0) + 1)  # headroom: the tallest bar does not touch the frame
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.spines[["top", "right"]].set_visible(False)
    if papers:
        ax.legend(frameon=False, fontsize=8, loc="upper left", ncols=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write_timeline_png(papers: Iterable[Paper], path: Path) -> Path:
    """Write the figure to ``path`` through a temporary file in the same folder."""
    data = timeline_png(papers)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
