r"""Gaussian variational families on a NumPyro model's unconstrained coordinates, as pure functions.

All latent sample sites of the model, each mapped to the real line by ``biject_to(support)``,
are stacked into one vector ``z`` of length ``P`` (sites in the model's order, each flattened
row-major). The guide is

.. math::

    z \sim \mathcal N\bigl(m,\ S (I + W W^\top) S\bigr), \quad S = \operatorname{diag}(s), \qquad
    x_{\text{site}} = T_{\text{site}}(z_{\text{site}}),

mean-field when ``rank == 0`` (no ``W``; the family of NumPyro's ``AutoNormal``) and low-rank plus
diagonal otherwise (``W`` is ``(P, rank)``, the family of ``AutoLowRankMultivariateNormal``, which
also scales its factor by ``s``: a factor in units of ``s`` starts and moves on the scale of
the coordinates, where an absolute ``W`` starting at 0 beside ``s = 0.01`` is mostly noise for
the first thousand steps).
Parameters (named :data:`LOC`, :data:`SCALE`, :data:`COV_FACTOR`): ``m`` ``(P,)``, ``s`` ``(P,)``
(positive, softplus-constrained) and ``W`` ``(P, rank)``. Each constrained site enters the
guide's trace (replayed into the model) as a ``Delta`` carrying ``-log |det dT/dz|``, so the
guide's density is that of ``x`` and NumPyro's ``Trace_ELBO`` estimates
``E_q[log p(x, y) - log q(x)]``.

Why not the autoguides themselves: they learn the model's site shapes by running the model
and its gradient eagerly, one XLA compilation per operation (a large share of a small fit).
Here the sites come from an abstract trace (``jax.eval_shape``: no computation), and starting
values and draws are functions of the parameters that jit as a whole (fit times before and
after: benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LATENT = "_gaussian_latent"
# parameter names, prefixed so that they cannot collide with a model's site names (SVI
# substitutes parameters into the model by name)
LOC, SCALE, COV_FACTOR = "gaussian_guide_loc", "gaussian_guide_scale", "gaussian_guide_cov_factor"


class LatentSite(NamedTuple):
    """One latent site: its name, shape (a draw's) and support (a NumPyro constraint)."""

    name: str
    shape: tuple
    support: object

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def latent_sites(model, *args, **kwargs) -> tuple[LatentSite, ...]:
    """The non-observed sample sites of ``model(*args, **kwargs)`` in the order the model draws
    them, found by tracing it abstractly (shapes only, nothing computed or compiled)."""
    from numpyro import handlers
    from numpyro.distributions import biject_to

    from bayesmf.errors import ConfigError

    found = []

    def trace_shapes():
        tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
        found.extend(LatentSite(name, tuple(site["value"].shape), site["fn"].support)
                     for name, site in tr.items() if site["type"] == "sample" and not site["is_observed"])
        return 0

    jax.eval_shape(trace_shapes)
    for site in found:
        if tuple(biject_to(site.support).inverse_shape(site.shape)) != site.shape:
            raise ConfigError(f"site {site.name!r}: its support {site.support} changes shape on the "
                              "unconstrained scale, which these guides and starts do not handle")
    return tuple(found)


def constrain(sites: tuple[LatentSite, ...], unconstrained: dict) -> dict:
    """``{site: T(unconstrained[site])}`` (``T = biject_to(support)``), any leading batch dimensions."""
    from numpyro.distributions import biject_to

    return {site.name: biject_to(site.support)(unconstrained[site.name]) for site in sites}


def unconstrain(sites: tuple[LatentSite, ...], values: dict, dtype=None) -> dict:
    """``{site: T^{-1}(values[site])}`` (``T = biject_to(support)``) in ``dtype`` (default JAX's
    float), any leading batch dimensions."""
    from numpyro.distributions import biject_to

    dtype = dtype or jnp.result_type(float)
    return {site.name: biject_to(site.support).inv(jnp.asarray(values[site.name], dtype)).astype(dtype)
            for site in sites}


def unconstrained_start(sites: tuple[LatentSite, ...], key, values: dict | None = None, dtype=None) -> dict:
    """:func:`unconstrain` of ``values`` (broadcast to each site's shape); sites without a value
    start uniformly in (-2, 2), NumPyro's default."""
    dtype = dtype or jnp.result_type(float)
    values = values or {}
    given = tuple(site for site in sites if site.name in values)
    start = unconstrain(given, {site.name: jnp.broadcast_to(jnp.asarray(values[site.name], dtype), site.shape)
                                for site in given}, dtype)
    for site, subkey in zip(sites, jax.random.split(key, len(sites))):
        if site.name not in values:
            start[site.name] = jax.random.uniform(subkey, site.shape, dtype, -2.0, 2.0)
    return {site.name: start[site.name] for site in sites}


class GaussianGuide:
    """A NumPyro guide (callable as ``guide(*args, **kwargs)``; the arguments are ignored) over
    ``sites`` (:func:`latent_sites`), ``rank`` 0 for mean-field (module docstring)."""

    def __init__(self, sites: tuple[LatentSite, ...], rank: int = 0):
        from numpyro.distributions import biject_to

        if rank < 0:
            from bayesmf.errors import ConfigError

            raise ConfigError(f"guide rank must be >= 0, got {rank!r}")
        self.sites, self.rank = tuple(sites), int(rank)
        self.transforms = [biject_to(site.support) for site in self.sites]
        self.offsets = np.cumsum([0] + [site.size for site in self.sites])

    @property
    def dim(self) -> int:
        """``P``, the length of the stacked unconstrained vector."""
        return int(self.offsets[-1])

    def init_params(self, key, values: dict | None = None, init_scale: float = 0.01, dtype=None) -> dict:
        """Starting parameters: ``loc`` at :func:`unconstrained_start` (``values[site]`` where
        given, else uniform in (-2, 2)); ``scale = init_scale``; ``cov_factor = 0``."""
        dtype = dtype or jnp.result_type(float)
        start = unconstrained_start(self.sites, key, values, dtype)
        pieces = [jnp.ravel(start[site.name]) for site in self.sites]
        params = {LOC: jnp.concatenate(pieces).astype(dtype), SCALE: jnp.full(self.dim, init_scale, dtype)}
        if self.rank:
            params[COV_FACTOR] = jnp.zeros((self.dim, self.rank), dtype)
        return params

    def distribution(self, params):
        """``q(z)``, the Gaussian over the stacked unconstrained vector; its covariance is
        ``S (I + W W^T) S`` (module docstring)."""
        import numpyro.distributions as dist

        if self.rank:
            scale = params[SCALE]
            return dist.LowRankMultivariateNormal(params[LOC], scale[:, None] * params[COV_FACTOR], scale**2)
        return dist.Normal(params[LOC], params[SCALE]).to_event(1)

    def unpack(self, z) -> dict:
        """``{site: z_site}`` (unconstrained) from stacked vectors ``z`` (..., P), any leading batch dimensions."""
        batch = z.shape[:-1]
        return {site.name: z[..., lo:hi].reshape(batch + site.shape)
                for site, lo, hi in zip(self.sites, self.offsets[:-1], self.offsets[1:])}

    def __call__(self, *args, **kwargs):
        import numpyro
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        # init values are placeholders: SVI.init is always given ``init_params`` (run_svi)
        params = {LOC: numpyro.param(LOC, jnp.zeros(self.dim)),
                  SCALE: numpyro.param(SCALE, jnp.ones(self.dim), constraint=constraints.softplus_positive)}
        if self.rank:
            params[COV_FACTOR] = numpyro.param(COV_FACTOR, jnp.zeros((self.dim, self.rank)))
        z = numpyro.sample(LATENT, self.distribution(params), infer={"is_auxiliary": True})
        for (site, transform), unconstrained in zip(zip(self.sites, self.transforms), self.unpack(z).values()):
            value = transform(unconstrained)
            # q(x) = q(z) |dT/dz|^{-1}: the Delta carries the change of variables
            log_det = jnp.sum(transform.log_abs_det_jacobian(unconstrained, value))
            numpyro.sample(site.name, dist.Delta(value, log_density=-log_det, event_dim=len(site.shape)))

    def sample(self, key, params, n: int) -> dict:
        """``n`` draws ``{site: (n, *shape)}`` of the constrained latent sites."""
        return constrain(self.sites, self.unpack(self.distribution(params).sample(key, (n,))))
