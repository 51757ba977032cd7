"""The result of :func:`~bayesmf.metrics.evaluate_ratings` and :func:`~bayesmf.metrics.evaluate_ranking`.

An :class:`EvaluationResult` is a ``dict`` (every key and value the evaluation computed, so
``res["rmse"]``, iteration, ``in``, ``.keys()``, ``dict(res)`` and JSON serialisation of the
scalars work as on a plain dict) that shows itself as a compact table of its scalar metrics, in
a terminal (``repr``) and in a notebook (``_repr_html_``). The curves it holds as arrays are
offered as pandas DataFrames (:attr:`~EvaluationResult.calibration`,
:attr:`~EvaluationResult.risk_coverage_curve`, :attr:`~EvaluationResult.rmse_by_std`) and
drawn by ``plot_*`` helpers that return a matplotlib ``Axes``.
"""

from __future__ import annotations

import html
import numbers

import numpy as np

from bayesmf.errors import ConfigError, DataError

__all__ = ["EvaluationResult"]

# curves: key in the dict -> (DataFrame property, what computes it)
_CURVES = {
    "calibration_curve": ("calibration", "a predictive distribution"),
    "risk_coverage": ("risk_coverage_curve", "a predictive distribution"),
    "rmse_by_std_decile": ("rmse_by_std", "a predictive distribution"),
    "reliability": ("plot_reliability", "a predictive distribution over rating levels"),
}
_KINDS = ("ratings", "ranking")


def _is_scalar(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _interval(value) -> tuple[float, float] | None:
    """``(lo, hi)`` when ``value`` is a pair of real numbers (a bootstrap interval), else None."""
    if isinstance(value, tuple) and len(value) == 2 and all(_is_scalar(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def _format(value) -> str:
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    return f"{float(value):.4g}" if abs(float(value)) >= 1e4 or 0 < abs(float(value)) < 1e-3 else f"{value:.4f}"


class EvaluationResult(dict):
    """Metrics of one evaluation: a ``dict`` that prints as a table of its scalar metrics.

    Parameters
    ----------
    metrics : mapping
        What the evaluation computed, by name: scalar metrics (``float`` or ``int``: ``rmse``,
        ``coverage@0.9``, ``ndcg@10``, ...), bootstrap intervals (``(lo, hi)`` tuples under
        ``<metric>_ci``), curves (dicts of NumPy arrays: ``calibration_curve``,
        ``risk_coverage``, ``rmse_by_std_decile``) and settings (``clipped_to``, ``protocol``,
        ``warning``, ...). Kept as given, in order.
    kind : {"ratings", "ranking"}
        Which evaluation produced it; shown in the table's title.

    Notes
    -----
    The table lists every scalar entry with, for ``rmse`` and ``mae``, the bootstrap interval
    stored under ``rmse_ci`` / ``mae_ci`` beside the value; curves are listed by name and size,
    never printed. Everything stays reachable with dict access, so code written for the plain
    ``dict`` these functions returned before keeps working.
    """

    def __init__(self, metrics=(), *, kind: str = "ratings"):
        if kind not in _KINDS:
            raise ConfigError(f"kind must be one of {_KINDS}, got {kind!r}")
        super().__init__(metrics)
        self.kind = kind

    # ----------------------------------------------------------------------------------------
    # tables
    def scalars(self) -> dict[str, float]:
        """The scalar metrics as ``{name: float}``, in the result's order (the row a results table
        stores); booleans, intervals, curves and settings are left out."""
        return {name: float(value) for name, value in self.items() if _is_scalar(value)}

    def table(self):
        """The scalar metrics as a ``pandas.DataFrame`` indexed by metric name.

        Returns
        -------
        pandas.DataFrame
            Columns ``value`` (float) and ``lo``, ``hi`` — the bootstrap interval stored under
            ``<metric>_ci`` when there is one (``rmse``, ``mae``), NaN otherwise.
        """
        import pandas as pd

        rows = []
        for name, value in self.scalars().items():
            lo, hi = _interval(self.get(f"{name}_ci")) or (np.nan, np.nan)
            rows.append((name, value, lo, hi))
        frame = pd.DataFrame(rows, columns=["metric", "value", "lo", "hi"]).set_index("metric")
        return frame

    def _rows(self) -> list[tuple[str, str, str]]:
        """``(name, value, interval or "")`` for every scalar, formatted for display."""
        rows = []
        for name, value in self.items():
            if not _is_scalar(value):
                continue
            ci = _interval(self.get(f"{name}_ci"))
            rows.append((name, _format(value), f"[{_format(ci[0])}, {_format(ci[1])}]" if ci else ""))
        return rows

    def _title(self) -> str:
        size = f"n={self['n']:,}" if _is_scalar(self.get("n")) else ""
        protocol = f"protocol={self['protocol']}" if isinstance(self.get("protocol"), str) else ""
        details = ", ".join(part for part in (protocol, size) if part)
        return f"EvaluationResult({self.kind}{', ' + details if details else ''})"

    def _notes(self) -> list[str]:
        """One line per curve (name and size) and per text setting worth seeing."""
        notes = []
        for key, (attr, _) in _CURVES.items():
            if isinstance(self.get(key), dict):
                arrays = [np.asarray(v) for v in self[key].values() if np.ndim(v) == 1]
                size = min((a.size for a in arrays), default=0)  # bins: 11 edges, 10 counts
                notes.append(f"curve {key!r}: {size:,} points (.{attr}, .plot_{attr.removesuffix('_curve')}())")
        if isinstance(self.get("warning"), str):
            notes.append(f"warning: {self['warning']}")
        return notes

    def __repr__(self) -> str:
        rows = self._rows()
        width = max((len(name) for name, _, _ in rows), default=0)
        vwidth = max((len(value) for _, value, _ in rows), default=0)
        lines = [self._title()]
        lines += [f"  {name:<{width}}  {value:>{vwidth}}  {ci}".rstrip() for name, value, ci in rows]
        lines += [f"  {note}" for note in self._notes()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        body = "".join(f"<tr><th style='text-align:left'>{esc(name)}</th><td>{esc(value)}</td><td>{esc(ci)}</td></tr>"
                       for name, value, ci in self._rows())
        notes = "".join(f"<li>{esc(note)}</li>" for note in self._notes())
        return (f"<div><strong>{esc(self._title())}</strong><table>"
                f"<thead><tr><th>metric</th><th>value</th><th>interval</th></tr></thead><tbody>{body}</tbody>"
                f"</table>{f'<ul>{notes}</ul>' if notes else ''}</div>")

    # ----------------------------------------------------------------------------------------
    # curves as DataFrames
    def _curve(self, key: str) -> dict:
        if not isinstance(self.get(key), dict):
            attr, needs = _CURVES[key]
            raise DataError(f"this {self.kind} evaluation has no {key!r} curve (.{attr} needs {needs}: "
                            "evaluate a model with predict_dist, a PredictiveDistribution or (mean, std))")
        return self[key]

    @property
    def calibration(self):
        """Calibration curve: ``pandas.DataFrame`` with columns ``nominal`` (level ``p`` of the
        central predictive interval) and ``observed`` (fraction of test ratings inside it)."""
        import pandas as pd

        curve = self._curve("calibration_curve")
        return pd.DataFrame({"nominal": np.asarray(curve["nominal"]), "observed": np.asarray(curve["observed"])})

    @property
    def risk_coverage_curve(self):
        """Risk-coverage curve: ``pandas.DataFrame`` with columns ``coverage`` (fraction of test
        ratings kept, those with the smallest predictive std first) and ``risk`` (RMSE of the kept
        predictions); its mean over all coverages is ``aurc``."""
        import pandas as pd

        curve = self._curve("risk_coverage")
        return pd.DataFrame({"coverage": np.asarray(curve["coverage"]), "risk": np.asarray(curve["risk"])})

    @property
    def rmse_by_std(self):
        """RMSE inside quantile bins of the predictive std: ``pandas.DataFrame`` with one row per
        bin, columns ``std_lo``, ``std_hi`` (bin edges), ``count``, ``rmse`` and ``rms_std`` (the
        root mean predictive variance in the bin; equal to ``rmse`` for a calibrated model)."""
        import pandas as pd

        bins = self._curve("rmse_by_std_decile")
        edges = np.asarray(bins["edges"])
        return pd.DataFrame({"std_lo": edges[:-1], "std_hi": edges[1:], "count": np.asarray(bins["count"]),
                             "rmse": np.asarray(bins["rmse"]), "rms_std": np.asarray(bins["rms_std"])})

    # ----------------------------------------------------------------------------------------
    # plots
    def plot_calibration(self, ax=None, label: str | None = None):
        """Observed coverage of the central predictive intervals against their nominal level,
        with the diagonal a calibrated model follows.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw (a new figure when None); several results can share one.
        label : str, optional
            Legend entry of this curve.

        Returns
        -------
        matplotlib.axes.Axes
        """
        curve = self.calibration
        ax = _axes(ax)
        ax.plot(curve["nominal"], curve["observed"], label=label)
        if not any(line.get_label() == "calibrated" for line in ax.get_lines()):
            ax.plot([0, 1], [0, 1], "k:", label="calibrated")
        ax.set(xlabel="nominal level", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1))
        ax.legend()
        return ax

    def plot_reliability(self, ax=None, label: str | None = None):
        """The top-label reliability diagram (:mod:`bayesmf.metrics.categorical`): observed
        frequency of the most probable category being right against the mean confidence, per
        non-empty bin, with the diagonal a calibrated model follows.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw (a new figure when None).
        label : str, optional
            Legend entry (default: ``ECE`` and its value).

        Returns
        -------
        matplotlib.axes.Axes
        """
        bins = self._curve("reliability")
        count = np.asarray(bins["count"])
        filled = count > 0
        ax = _axes(ax)
        if label is None and _is_scalar(self.get("ece")):
            label = f"ECE {self['ece']:.4f}"
        ax.plot(np.asarray(bins["confidence"])[filled], np.asarray(bins["frequency"])[filled], "o-", label=label)
        if not any(line.get_label() == "calibrated" for line in ax.get_lines()):
            ax.plot([0, 1], [0, 1], "k:", label="calibrated")
        ax.set(xlabel="confidence (top category)", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
        ax.legend()
        return ax

    def plot_risk_coverage(self, ax=None, label: str | None = None):
        """Risk (RMSE) of the predictions kept against the fraction kept, the most
        certain first; an informative predictive std gives a curve rising from left to right.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw (a new figure when None).
        label : str, optional
            Legend entry of this curve (default: ``AURC`` and its value).

        Returns
        -------
        matplotlib.axes.Axes
        """
        curve = self.risk_coverage_curve
        ax = _axes(ax)
        if label is None and _is_scalar(self.get("aurc")):
            label = f"AURC {self['aurc']:.4f}"
        ax.plot(curve["coverage"], curve["risk"], label=label)
        ax.set(xlabel="coverage (fraction of predictions kept)", ylabel="risk (RMSE of the kept)", xlim=(0, 1))
        if label is not None:
            ax.legend()
        return ax

    def plot_rmse_by_std(self, ax=None, label: str | None = None):
        """RMSE in each bin of the predictive std against the bin's root mean predictive
        variance, with the diagonal a calibrated model follows.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw (a new figure when None).
        label : str, optional
            Legend entry of this curve.

        Returns
        -------
        matplotlib.axes.Axes
        """
        bins = self.rmse_by_std
        ax = _axes(ax)
        ax.plot(bins["rms_std"], bins["rmse"], "o-", label=label)
        top = float(np.nanmax(np.r_[bins["rms_std"], bins["rmse"]]))
        if not any(line.get_label() == "calibrated" for line in ax.get_lines()):
            ax.plot([0, top], [0, top], "k:", label="calibrated")
        ax.set(xlabel="predictive std (root mean variance in the bin)", ylabel="RMSE in the bin")
        ax.legend()
        return ax


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(4.5, 4.0), layout="constrained")
    return ax
