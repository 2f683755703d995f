"""Sphinx configuration: Furo, MyST Markdown pages, the API reference from the docstrings.

Built by ``nox -s docs`` with warnings as errors; no extension here needs the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this checkout, not an installed copy

import koala_async  # noqa: E402

project = "koala-async"
author = "koala-async contributors"
copyright = "2026, koala-async contributors"
release = version = koala_async.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings are Google style (Args:, Returns:, Raises:)
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "conftest.py"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # `[text](page.md#a-heading)` links are checked at build time

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"koala-async {release}"
html_static_path: list[str] = []

# `-b linkcheck` checks what is ours: links between pages and to their anchors. Links out
# of the site are not fetched (the build needs no network, and Koala's own site may be gone).
linkcheck_ignore = [r"https?://.*"]
linkcheck_anchors = True
