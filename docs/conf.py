"""Sphinx configuration: the pyro-csg documentation site.

Built offline by ``make docs`` (``sphinx-build -W``: a warning fails the build). The
notebooks are rendered from their stored outputs by myst-nb and never executed here.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

# The notebooks live in notebooks/ beside the package, where Jupyter users open them;
# Sphinx reads only its source folder, so the build copies them in (docs/notebooks is
# ignored by git).
_rendered = DOCS / "notebooks"
_rendered.mkdir(exist_ok=True)
for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    target = _rendered / notebook.name
    if not target.exists() or target.read_bytes() != notebook.read_bytes():
        shutil.copyfile(notebook, target)

from pyro_csg import __version__  # noqa: E402

project = "pyro-csg"
author = "the pyro-csg developers"
copyright = "2026, the pyro-csg developers"
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax shipped with the site: no CDN, the site opens offline
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# Notebooks: their stored outputs, as committed (each is run at full size by hand and at a
# reduced size by the test suite); the docs build never runs one.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "amsmath"]
myst_heading_anchors = 3

# The API reference: every public name, its signature as help() shows it, its docstring.
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"pyro-csg {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
