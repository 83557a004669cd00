"""Sphinx configuration for the flask_chatstream manual: ``make docs`` builds it, warnings as errors."""

from __future__ import annotations

import flask_chatstream

project = "flask_chatstream"
author = "the flask_chatstream authors"
copyright = "2026, the flask_chatstream authors"
release = version = flask_chatstream.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "screenshots"]

myst_heading_anchors = 3  # GitHub's anchors, so "page.md#a-heading" links work as they do on GitHub
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"flask_chatstream {release}"
html_static_path: list[str] = []
