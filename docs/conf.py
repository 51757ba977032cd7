"""Sphinx configuration of the bayesmf documentation (``make docs``).

The API reference is generated from the numpydoc docstrings (autosummary, one page per module,
class and function); the notebooks in ``notebooks/`` at the top of the source tree are executed at
build time by myst-nb with ``BAYESMF_FAST=1`` and rendered with their outputs; the user guide is
MyST Markdown in ``docs/guide``. Everything builds offline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import sphinx.ext.autosummary  # noqa: E402

import bayesmf  # noqa: E402

# Notebooks shrink their budgets under this variable and run the same code; the kernels that
# myst-nb starts inherit the environment of the build.
os.environ.setdefault("BAYESMF_FAST", "1")

# The notebooks stay where users find them (``notebooks/`` at the top level); the docs see them
# through a link, so every ``notebooks/*.ipynb`` is picked up by the glob in notebooks.md and each
# runs with ``notebooks/`` as its working directory.
_link = DOCS / "notebooks"
if not _link.exists():
    _link.symlink_to(Path("..") / "notebooks", target_is_directory=True)

_project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

project = "bayesmf"
author = "the bayesmf authors"
copyright = "the bayesmf authors"  # noqa: A001
version = release = bayesmf.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.extlinks",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
]

root_doc = "index"
templates_path = ["_templates"]
# only the notebooks themselves come from notebooks/ (not its README or data files)
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints", "notebooks/.*", "notebooks/*.md",
                    "notebooks/*.rst", "notebooks/**/*.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# --- API reference --------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False  # every object is documented once, in the module defining it
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc sections state the types
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
add_module_names = False


def _summary_outside_literals(doc, settings):
    """Autosummary's one-line summary, never cut inside an inline literal.

    Docstrings here write dot products as "p_u . q_i" inside literals; autosummary's
    first-sentence rule would end the summary at that " . " and leave the literal unterminated.
    When it does, the summary runs to the first full stop outside literals of the first paragraph.
    """
    summary = _extract_summary(doc, settings)
    if summary.count("``") % 2 == 0:
        return summary
    lines = list(doc)
    while lines and not lines[0].strip():
        lines.pop(0)
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    parts = " ".join(line.strip() for line in lines[:end]).split("``")
    for i in range(0, len(parts), 2):  # even parts lie outside literals
        text = parts[i] + " "
        if ". " in text:
            return "``".join([*parts[:i], text[: text.index(". ") + 1]])
    return "``".join(parts)


_extract_summary = sphinx.ext.autosummary.extract_summary
sphinx.ext.autosummary.extract_summary = _summary_outside_literals

# no network at build time: cross-references to NumPy, JAX, ... stay plain text
intersphinx_mapping: dict = {}

# Source files of the repository (README, benchmarks/RESULTS.md, ARCHITECTURE.md) are linked
# where they are published.
_source = _project["urls"]["Source"].rstrip("/")
extlinks = {"source": (f"{_source}/blob/main/%s", "%s")}

# --- notebooks (myst-nb) ----------------------------------------------------------------------
nb_execution_mode = "force"  # executed on every build: a notebook that no longer runs fails the docs
nb_execution_timeout = int(os.environ.get("BAYESMF_NB_TIMEOUT", "300"))  # seconds per cell
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "substitution"]
myst_substitutions = {"version": release}
myst_heading_anchors = 3

# --- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"bayesmf {release}"
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list = []
html_show_sourcelink = False
