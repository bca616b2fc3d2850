"""Sphinx configuration of the gsn documentation.

Build with ``python -m sphinx -W -b html docs docs/_build`` (``pip install -e ".[docs]"``). The
tutorials under ``tutorials/`` are MyST notebooks that myst-nb executes during the build; they read
the real crops from ``../shared/data`` (or ``GSN_DATA``).
"""

from __future__ import annotations

import os
from importlib.metadata import version as _version

# The notebook kernels inherit this environment; a non-interactive MPLBACKEND (as set for tests)
# would stop matplotlib's inline backend from putting the figures into the pages.
os.environ.pop("MPLBACKEND", None)

project = "gsn"
author = "gsn developers"
copyright = "2026, gsn developers"
release = _version("gsn")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "jupyter_execute", "default_model_training.log"]
templates_path = ["_templates"]

# API reference: one page per function or class, generated from the numpydoc docstrings.
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Markdown pages and notebooks.
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath"]
myst_heading_anchors = 3
nb_execution_mode = "cache"  # CI passes -D nb_execution_mode=force so every build runs the code
nb_execution_cache_path = os.path.join(os.path.dirname(__file__), "_build", ".jupyter_cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = f"gsn {release}"
html_theme_options = {"show_toc_level": 2}
html_static_path = []
