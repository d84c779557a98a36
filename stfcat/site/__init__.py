"""The survey website: a jinja2 generator of a mkdocs-material site from the catalog.

Rendering is plain Python + jinja2 (:mod:`stfcat.site.render`), not a MkDocs plugin, so the
generator does not depend on MkDocs internals; MkDocs (``<2``) only turns the generated Markdown
into HTML (:mod:`stfcat.site.build`). :mod:`stfcat.site.figure` draws the static timeline PNG
that the README embeds.
"""

from __future__ import annotations

from stfcat.site.render import render_docs, safe_url

__all__ = ["render_docs", "safe_url"]
