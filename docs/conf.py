"""Sphinx configuration of fastbn's documentation.

Build it offline, warnings as errors::

    python -m pip install ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The guide's pages are MyST text notebooks (``file_format: mystnb``): their
code cells run at build time, so every printed number and figure on them comes
from fastbn itself.  The tables of the experiment and performance pages are
generated before the build from the committed data (``docs/_ext/generate.py``).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

# The guide's cells and autodoc import fastbn from the environment the docs
# are built in (``pip install ".[docs]"`` installs it).  Kernels stay in the
# user's compile cache, so a second build loads them instead of compiling.

project = "fastbn"
author = "the fastbn developers"
copyright = "2026, the fastbn developers"

import fastbn  # noqa: E402

release = version = fastbn.__version__

extensions = [
    "myst_nb",  # MyST Markdown and executed text notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax from the site itself: pages render offline
    "numpydoc",
    "sphinx_copybutton",
    "fastbn_docs",  # docs/_ext: tables and figures generated from committed data
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "_generated/*.md", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# --- MyST and notebook execution ----------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist", "attrs_block"]
myst_heading_anchors = 3
nb_execution_mode = "cache"
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing example fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_render_markdown_format = "myst"

# --- API reference ------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# --- offline ------------------------------------------------------------------------------
intersphinx_mapping = {}  # nothing is fetched at build time

# --- HTML ---------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"fastbn {release}"
html_static_path = ["_static"]
html_css_files = ["fastbn.css"]
html_theme_options = {
    "navbar_align": "left",
    "header_links_before_dropdown": 8,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
html_context = {"default_mode": "light"}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
