"""Reproducible experiments: a TOML file in, results.csv / results.json / report.md out.

* :mod:`~bayesmf.experiments.schema` — the file format and its validation (``load_experiment``), and
  the experiment files shipped in the package (``load_template``);
* :mod:`~bayesmf.experiments.catalogue` — metric and model names an experiment may use;
* :mod:`~bayesmf.experiments.grid` — grid expansion, per-run seeds, run keys;
* :mod:`~bayesmf.experiments.data` — data presence checks, preprocessing, split instances;
* :mod:`~bayesmf.experiments.measure` — evaluating one fitted model (metrics and curves);
* :mod:`~bayesmf.experiments.runner` — the grid loop: cache, progress, failures, Ctrl-C;
* :mod:`~bayesmf.experiments.results` — results.csv, results.json, environment;
* :mod:`~bayesmf.experiments.report` — report.md with tables and PNG figures.

Command line: ``bayesmf run FILE.toml --out DIR [--force]`` and ``bayesmf report DIR``.
"""

from bayesmf.experiments.grid import derive_seed, expand, run_key
from bayesmf.experiments.report import write_report
from bayesmf.experiments.results import CSV_COLUMNS, read_results
from bayesmf.experiments.runner import run_experiment
from bayesmf.experiments.schema import (
    Experiment,
    load_experiment,
    load_template,
    parse_experiment,
    template_names,
    template_text,
)

__all__ = [
    "CSV_COLUMNS", "Experiment", "derive_seed", "expand", "load_experiment", "load_template", "parse_experiment",
    "read_results", "run_experiment", "run_key", "template_names", "template_text", "write_report",
]
