"""Plain NumPyro PMF job (Salakhutdinov & Mnih 2007), fitted by SVI or MAP.

Model, for rank ``D``, fixed prior scales and a learned noise scale::

    U[u] ~ N(0, prior_scale^2 I_D),   V[i] ~ N(0, prior_scale^2 I_D),   sigma ~ HalfNormal(1)
    r_ui ~ N(mean + U[u] . V[i], sigma^2)            (mean = training mean, a constant)

``algo="SVI"``: mean-field Gaussian guide (``AutoNormal``); ``algo="MAP"``: point guide
(``AutoDelta``). Both optimise the ELBO with Adam on the full batch for ``num_steps`` steps, in
one ``lax.scan`` (``SVI.run``). Predictions plug in the guide's median (the variational mean).
This is the textbook NumPyro recipe, written once here so that bayesmf's PMF has a plain
probabilistic-programming baseline.
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoDelta, AutoNormal  # noqa: E402


def pmf(users, items, n_users, n_items, rank, prior_scale, mean, ratings=None):
    U = numpyro.sample("U", dist.Normal(0.0, prior_scale).expand([n_users, rank]).to_event(2))
    V = numpyro.sample("V", dist.Normal(0.0, prior_scale).expand([n_items, rank]).to_event(2))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    loc = mean + jnp.sum(U[users] * V[items], axis=-1)
    with numpyro.plate("ratings", users.shape[0]):
        numpyro.sample("r", dist.Normal(loc, sigma), obs=ratings)


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    p = dict(args.params)
    mean = float(data["train_values"].mean())
    model_args = (jnp.asarray(data["train_users"]), jnp.asarray(data["train_items"]), data["n_users"],
                  data["n_items"], p["rank"], p["prior_scale"], mean)
    guide = (AutoNormal if args.algo == "SVI" else AutoDelta)(pmf, init_loc_fn=numpyro.infer.init_to_sample)
    svi = SVI(pmf, guide, numpyro.optim.Adam(p["lr"]), Trace_ELBO())
    with _common.Timer() as fit:
        result = svi.run(jax.random.PRNGKey(args.seed), p["num_steps"], *model_args,
                         ratings=jnp.asarray(data["train_values"]), progress_bar=False)
        median = jax.block_until_ready(guide.median(result.params))
    with _common.Timer() as predict:
        U, V = median["U"], median["V"]
        pred = np.asarray(jax.block_until_ready(
            mean + jnp.sum(U[data["test_users"]] * V[data["test_items"]], axis=-1)))
    _common.finish(data, library="numpyro", version=numpyro.__version__, fit_seconds=fit.seconds,
                   n_iter=p["num_steps"], predict_seconds=predict.seconds, pred=pred,
                   final_loss=float(result.losses[-1]), jax_version=jax.__version__)


if __name__ == "__main__":
    main()
