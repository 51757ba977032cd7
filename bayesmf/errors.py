"""Exception types raised by bayesmf.

Every error the package raises on bad input derives from :class:`BayesmfError`, so a caller can
catch the package's complaints without also catching unrelated bugs. The data errors also derive
from :class:`ValueError` (or :class:`FileNotFoundError`) so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "BayesmfError", "CholeskyRetryWarning", "ConfigError", "ConvergenceWarning", "DataError", "DataNotFoundError",
    "DivergenceError", "OutputBusyError", "ParseError", "ResumeWarning",
]


class BayesmfError(Exception):
    """Base class of every error bayesmf raises on purpose."""


class DataError(BayesmfError, ValueError):
    """Ratings, indices, IDs or options that cannot be accepted as given."""


class ParseError(DataError):
    """A malformed line in a data file; carries the file path and the 1-based line number."""

    def __init__(self, path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DataNotFoundError(BayesmfError, FileNotFoundError):
    """A data set's files are not where they are expected and could not be downloaded."""


class ConfigError(BayesmfError, ValueError):
    """An invalid option, hyperparameter or configuration value."""


class ResumeWarning(UserWarning):
    """A fit continues from a checkpoint written by an earlier, interrupted run of the same configuration."""


class ConvergenceWarning(UserWarning):
    """Several chains of a sampler disagree (R-hat above its threshold) or their draws carry too
    little information (bulk ESS below its threshold) on identified summaries of the posterior."""


class OutputBusyError(BayesmfError):
    """An experiment's output directory is locked by another running bayesmf command."""


class DivergenceError(BayesmfError, FloatingPointError):
    """An engine produced NaN/inf (diverging learning rate, failed factorisation, ...).

    Parameters
    ----------
    message : str
        What diverged, naming the iteration and the state fields.
    partial : object, optional
        What was computed before it, when the engine keeps something (a sampler's draws up to
        the failing sweep), else None; stored as ``.partial``.
    """

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


class CholeskyRetryWarning(RuntimeWarning):
    """A batched Cholesky factorisation failed (matrix not positive definite in floating point)
    and the half step was solved again with a small jitter."""
