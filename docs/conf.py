"""Sphinx configuration of the koji-messagebus docs site (markdown pages through MyST).

Build: .venv/bin/python -m sphinx -W -b html docs docs/_build/html   (pip install '.[docs]')
Generated pages (configuration, messages/*, benchmarks) come from scripts/make-docs.py."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from koji_messagebus import __version__

project = "koji-messagebus"
author = "the koji-messagebus authors"
copyright = "koji-messagebus authors, LGPL-2.1-or-later"
version = release = __version__

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
html_theme = "alabaster"
html_title = f"koji-messagebus {version}"
