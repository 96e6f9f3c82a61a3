"""Sphinx configuration of the coarsekl documentation site.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` (warnings are errors).
The build needs no network: there is no intersphinx, and nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import coarsekl  # noqa: E402

project = "coarsekl"
author = "The coarsekl developers"
copyright = "The coarsekl developers"
release = coarsekl.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "config_reference",
    "executed_gallery",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "images/README*"]

# Markdown pages: $…$ and $$…$$ maths, ::: fences, heading anchors for #links.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The API reference documents what a user imports; the attrs classes carry their own
# generated signatures. numpydoc renders the docstrings without autosummary stubs.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()

html_theme = "pydata_sphinx_theme"
html_title = f"coarsekl {release}"
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
