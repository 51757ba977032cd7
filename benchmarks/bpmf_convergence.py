"""Convergence diagnostics of BPMF Gibbs on MovieLens-100K u1 (ArviZ R-hat and bulk ESS).

    BAYESMF_DATA=../shared/data python benchmarks/bpmf_convergence.py

Two chains x 200 draws after 100 burn-in, rank 10, learned noise, biases. Factors are not
identifiable (rotations, signs), so the diagnostics are for identifiable quantities: alpha, the
bias precisions, trace(Lambda) of each side, and the noise-free predictions at 200 test pairs.
"""

import json
import time

import arviz as az
import numpy as np

from bayesmf import splits
from bayesmf.models.bpmf import BPMF

tr, te = splits.predefined("movielens-100k", "u1")
t = time.time()
m = BPMF(rank=10, chains=2, n_samples=200, n_warmup=100, noise_prior=(1.0, 1.0), biases=True, seed=0).fit(tr)
fit = time.time() - t
U, V, BU, BV = m.user_samples_, m.item_samples_, m.b_U_samples_, m.b_V_samples_
sel = np.random.default_rng(0).choice(te.nnz, 200, replace=False)
u, i = te.users[sel], te.items[sel]
pred = m.global_mean_ + BU[:, :, u] + BV[:, :, i] + np.einsum("csnk,csnk->csn", U[:, :, u], V[:, :, i])
posterior = {"alpha": m.alpha_samples_, "bias_precision_U": m.bias_precision_U_samples_,
             "bias_precision_V": m.bias_precision_V_samples_,
             "trace_Lambda_U": np.trace(m.Lambda_U_samples_, axis1=-2, axis2=-1),
             "trace_Lambda_V": np.trace(m.Lambda_V_samples_, axis1=-2, axis2=-1), "pred": pred}
idata = az.from_dict(posterior=posterior)
rhat, ess = az.rhat(idata), az.ess(idata)
out = {"fit_seconds": fit, "rmse": float(np.sqrt(np.mean((m.predict_ratings(te) - te.values) ** 2)))}
for v in posterior:
    out[v] = {"rhat_max": float(np.max(rhat[v])), "ess_bulk_min": float(np.min(ess[v])),
              "ess_bulk_median": float(np.median(ess[v]))}
print(json.dumps(out, indent=1))
