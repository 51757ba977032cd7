"""Convergence checks over several chains on summaries that the likelihood identifies.

The BPMF likelihood is invariant under ``U -> U A``, ``V -> V A^{-T}`` for any invertible ``A``
(sign flips and rotations included), so per-coordinate R-hat of ``U``, ``mu_U`` or the entries of
``Lambda_U`` can flag chains that agree on everything that matters, or miss chains that disagree.
The summaries here are invariant under rotations and sign flips of the latent space: the trace
and log-determinant of each ``Lambda``, the norms ``|mu_U|``, ``|mu_V|``, and the scalar sites
(noise precision, offset, bias precisions). R-hat is the rank-normalised split R-hat and ESS the
bulk ESS of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), computed by ArviZ.
"""

from __future__ import annotations

import warnings

import numpy as np

from bayesmf.errors import ConvergenceWarning

RHAT_MAX = 1.05
ESS_MIN = 100.0


def identified_summaries(draws: dict) -> dict[str, np.ndarray]:
    """Rotation- and sign-invariant summaries, each (chains, draws), of a sampler's kept draws
    ``{site: (chains, draws, ...)}``: ``tr_Lambda_*``, ``logdet_Lambda_*``, ``norm_mu_*`` and the
    scalar sites that vary (``alpha``, ``offset``, ``bias_precision_*``)."""
    out = {}
    for side in ("U", "V"):
        lam = np.asarray(draws[f"Lambda_{side}"], np.float64)
        out[f"tr_Lambda_{side}"] = np.trace(lam, axis1=-2, axis2=-1)
        out[f"logdet_Lambda_{side}"] = np.linalg.slogdet(lam)[1]
        out[f"norm_mu_{side}"] = np.linalg.norm(np.asarray(draws[f"mu_{side}"], np.float64), axis=-1)
    for name in ("alpha", "offset", "bias_precision_U", "bias_precision_V"):
        value = draws.get(name)
        if value is not None and np.ptp(np.asarray(value)) > 0:
            out[name] = np.asarray(value, np.float64)
    return out


def diagnose(summaries: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """``{summary: (R-hat, bulk ESS)}`` over its chains (ArviZ)."""
    import arviz as az

    return {name: (float(az.rhat(values)), float(az.ess(values, method="bulk")))
            for name, values in summaries.items()}


def warn_if_unconverged(diagnostics: dict[str, tuple[float, float]], desc: str, stacklevel: int = 3) -> bool:
    """One :class:`ConvergenceWarning` naming every summary whose R-hat exceeds
    :data:`RHAT_MAX` or whose bulk ESS is below :data:`ESS_MIN`, with the figures; True if warned."""
    failing = {name: (rhat, ess) for name, (rhat, ess) in diagnostics.items()
               if not (rhat <= RHAT_MAX) or not (ess >= ESS_MIN)}
    if not failing:
        return False
    figures = ", ".join(f"{name} R-hat {rhat:.3f} ESS {ess:.0f}" for name, (rhat, ess) in failing.items())
    warnings.warn(f"{desc}: the chains have not converged on {len(failing)} of {len(diagnostics)} identified "
                  f"summaries (thresholds R-hat <= {RHAT_MAX}, bulk ESS >= {ESS_MIN:.0f}): {figures}. "
                  "Run more sweeps (n_warmup, n_samples) or more chains before trusting the posterior.",
                  ConvergenceWarning, stacklevel=stacklevel)
    return True
