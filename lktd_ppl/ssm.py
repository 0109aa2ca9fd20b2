"""A plain NumPyro model read as an RL/regression state-space model (spec sections 1-2).

``from_numpyro(model, batch)`` traces ``model(batch)`` once, eagerly, and returns a
:class:`StateSpaceModel`:

* every latent ``sample`` site is a parameter; all of them together, in NumPyro's unconstrained
  space, raveled into one flat vector ``theta`` of length ``p``;
* exactly one observed site is the measurement.  For LKTD it must be Gaussian (``Normal``, possibly
  wrapped in ``Independent``, ``expand`` or ``mask``): its loc is ``h(theta, batch)``, its scale
  ``sigma`` (known: a constant or data, not a latent).  SGLD and SGHMC accept any likelihood,
  a learned scale included (their gradient is the log-likelihood's, the scale's part with it);
* every ``numpyro.factor`` is part of the log prior: added to log pi(theta), not weighted by
  N/n.  A factor must not depend on the data (the batch): a data term is a likelihood term, which
  the samplers weight by N/n only in the measurement site; such a factor is refused;
* n (``obs_size``, the N/n of the tempering) counts every row of the measurement, masked rows
  included: a masked row contributes zero to the log-likelihood but still counts.  The
  minibatch's rows stand for ``pseudo_population`` rows counted the same way, so that with
  N = the number of rows of the data (``lktd_ppl.sample``'s default) the full batch samples the
  ordinary posterior of the unmasked rows, and a random minibatch's log-likelihood times N/n is
  an unbiased estimate of the data's;
* each latent's transform to the unconstrained space is fixed at the first trace; a latent whose
  support depends on another latent (e.g. ``Uniform(a, a + 1)`` with ``a`` a latent) is refused.
  A support must not depend on the data either (that is not detected): the first trace's batch
  would fix it.

Everything that the requested sampler cannot use is refused with a :class:`ModelError` that names
the site and says what to do, before anything is compiled: here, or (what only LKTD refuses: a
non-Gaussian measurement, a learned scale) by :meth:`StateSpaceModel.require_gaussian`, which the
LKTD kernel calls.

A prior that changes over training (the annealed spike-and-slab) reads the training-stage index
from ``batch[STAGE_KEY]``; the samplers put it there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal
from jax.flatten_util import ravel_pytree
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

STAGE_KEY = "stage"
"""Batch key under which samplers pass the training-stage index (an int32 scalar) to the model."""

Batch = dict[str, Any]


class ModelError(ValueError):
    """A model that the requested sampler cannot use; the message says which site and why."""


class Measurement(NamedTuple):
    """The Gaussian measurement of one minibatch: y ~ N(loc, scale**2), weighted by ``weight``."""

    loc: jax.Array  # h(theta, batch), shaped like the observation
    scale: jax.Array  # sigma, broadcast to the observation's shape
    # 1.0, or 0.0 where the observation is masked out (a masked row still counts in n)
    weight: jax.Array
    value: jax.Array  # the observation y (rewards in RL)


@dataclass(frozen=True)
class Site:
    name: str
    shape: tuple[int, ...]
    support: Any


def leading_size(data: Batch) -> int:
    """The common leading (data) axis of every array in ``data`` except ``STAGE_KEY``."""
    if not isinstance(data, dict):
        raise ModelError(
            f"data must be a dict of arrays with a common leading axis, got {type(data)}"
        )
    sizes = {}
    for key, leaf in data.items():
        if key == STAGE_KEY:
            continue
        for path, arr in jax.tree_util.tree_flatten_with_path(leaf)[0]:
            name = key + jax.tree_util.keystr(path)
            if np.ndim(arr) == 0:
                raise ModelError(
                    f"data[{name!r}] is a scalar; every entry needs the data axis first "
                    "(pass constants to the model another way, e.g. a closure)"
                )
            sizes[name] = np.shape(arr)[0]
    if not sizes:
        raise ModelError("data holds no arrays")
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ModelError(f"data arrays do not share a common leading axis ({listing})")
    return next(iter(sizes.values()))


def _unwrap_gaussian(fn: dist.Distribution) -> tuple[dist.Normal | None, Any]:
    """Peel Independent / Expanded / Masked wrappers; return (Normal or None, mask or None)."""
    mask = None
    while True:
        if isinstance(fn, dist.Independent | dist.ExpandedDistribution):
            fn = fn.base_dist
        elif isinstance(fn, dist.MaskedDistribution):
            m = fn._mask
            if m is not False:
                mask = m if mask is None else jnp.logical_and(mask, m)
            else:
                mask = jnp.zeros((), bool)
            fn = fn.base_dist
        else:
            break
    return (fn if type(fn) is dist.Normal else None), mask


class StateSpaceModel:
    """The pieces of a NumPyro model that the kernels need, as pure functions of ``theta``."""

    def __init__(self, model: Callable, batch: Batch):
        self.model = model
        tr = _trace_eagerly(model, batch)
        self._example = (batch, tr)  # reused by has_site on the same batch
        self.sites, self.obs_name, self.factors = _read_sites(tr)
        obs_site = tr[self.obs_name]
        self.obs_shape = tuple(np.shape(obs_site["value"]))
        # n of the tempering N/n: every row of the measurement, masked rows included (see the
        # module's docstring)
        self.obs_size = int(np.prod(self.obs_shape))
        self.obs_distribution = type(obs_site["fn"]).__name__
        self.transforms = {s.name: biject_to(s.support) for s in self.sites}
        example = {s.name: self.transforms[s.name].inv(tr[s.name]["value"]) for s in self.sites}
        flat, self.unravel = ravel_pytree(example)
        self.p = int(flat.shape[0])
        self.dtype = flat.dtype
        _check_shapes(obs_site, self.obs_name)
        _check_data_free_factors(model, batch, self.constrain(flat), self.factors)
        # the model at two other parameter values: do supports or the scale move with them?
        shifted = [self._trace(flat + shift, batch)[0] for shift in (0.37, -1.3)]
        self._check_fixed_supports(example, shifted)
        self.gaussian_error = _gaussian_problem(obs_site, self.obs_name)
        if self.gaussian_error is None:
            self.gaussian_error = self._scale_problem(flat, batch, shifted)

    # -- tracing -----------------------------------------------------------------------------
    def _trace(self, theta: jax.Array, batch: Batch) -> dict:
        unconstrained = self.unravel(theta)
        values = {k: self.transforms[k](u) for k, u in unconstrained.items()}
        seeded = handlers.seed(handlers.substitute(self.model, data=values), rng_seed=0)
        return handlers.trace(seeded).get_trace(batch), unconstrained, values

    def _log_prior_from(self, tr: dict, unconstrained: dict, values: dict) -> jax.Array:
        total = jnp.zeros((), self.dtype)
        for s in self.sites:
            site = tr[s.name]
            lp = site["fn"].log_prob(site["value"])
            if site.get("mask") is not None:
                lp = jnp.where(site["mask"], lp, 0.0)
            total = total + jnp.sum(lp)
            t = self.transforms[s.name]
            total = total + jnp.sum(t.log_abs_det_jacobian(unconstrained[s.name], values[s.name]))
        for name in self.factors:  # numpyro.factor: part of the prior, untempered
            site = tr[name]
            lf = site["fn"].log_prob(site["value"])
            if site.get("mask") is not None:
                lf = jnp.where(site["mask"], lf, 0.0)
            total = total + jnp.sum(lf)
        return total

    def _measurement_from(self, tr: dict) -> Measurement:
        site = tr[self.obs_name]
        normal, mask = _unwrap_gaussian(site["fn"])
        if site.get("mask") is not None:
            mask = site["mask"] if mask is None else jnp.logical_and(mask, site["mask"])
        shape = self.obs_shape
        weight = jnp.ones(shape) if mask is None else jnp.broadcast_to(mask, shape).astype(float)
        return Measurement(
            loc=jnp.broadcast_to(normal.loc, shape),
            scale=jnp.broadcast_to(normal.scale, shape),
            weight=weight,
            value=jnp.asarray(site["value"]),
        )

    # -- public pure functions ---------------------------------------------------------------
    def log_prior(self, theta: jax.Array, batch: Batch) -> jax.Array:
        """log pi(theta) in the unconstrained space (Jacobians of the transforms included)."""
        tr, u, v = self._trace(theta, batch)
        return self._log_prior_from(tr, u, v)

    def prior_and_measure(self, theta: jax.Array, batch: Batch) -> tuple[jax.Array, Measurement]:
        """(log pi(theta), the Gaussian measurement) from one trace of the model."""
        tr, u, v = self._trace(theta, batch)
        return self._log_prior_from(tr, u, v), self._measurement_from(tr)

    def measure(self, theta: jax.Array, batch: Batch) -> Measurement:
        tr, _, _ = self._trace(theta, batch)
        return self._measurement_from(tr)

    def prior_and_loglik(self, theta: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
        """(log pi(theta), log-likelihood of the batch), for any observation distribution."""
        tr, u, v = self._trace(theta, batch)
        site = tr[self.obs_name]
        ll = site["fn"].log_prob(site["value"])
        if site.get("mask") is not None:
            ll = jnp.where(site["mask"], ll, 0.0)
        return self._log_prior_from(tr, u, v), jnp.sum(ll)

    def deterministic(self, theta: jax.Array, batch: Batch, name: str) -> jax.Array:
        """The value of the ``numpyro.deterministic`` site ``name`` (e.g. the Q-values "q")."""
        tr, _, _ = self._trace(theta, batch)
        return tr[name]["value"]

    def has_site(self, name: str, batch: Batch, kind: str = "deterministic") -> bool:
        tr = self._example[1] if batch is self._example[0] else _trace_eagerly(self.model, batch)
        return name in tr and tr[name]["type"] == kind

    def constrain(self, theta: jax.Array) -> dict[str, jax.Array]:
        """Site values (constrained space) of a flat unconstrained ``theta``."""
        return {k: self.transforms[k](u) for k, u in self.unravel(theta).items()}

    def sample_prior(self, key: jax.Array, batch: Batch) -> jax.Array:
        """One draw of theta from the prior (unconstrained, flat)."""
        tr = handlers.trace(handlers.seed(self.model, rng_seed=key)).get_trace(batch)
        unconstrained = {
            s.name: self.transforms[s.name].inv(tr[s.name]["value"]) for s in self.sites
        }
        return ravel_pytree(unconstrained)[0]

    def require_gaussian(self, sampler: str = "LKTD") -> None:
        """Refuse (:class:`ModelError`) a measurement that is no Gaussian with a known scale."""
        if self.gaussian_error is not None:
            raise ModelError(self.gaussian_error.replace("{sampler}", sampler))

    def _scale_problem(self, theta: jax.Array, batch: Batch, shifted: list[dict]) -> str | None:
        """Why the Gaussian measurement's scale is not known (it moves with the parameters), as a
        ``{sampler}`` template; None if it is known.  SGLD and SGHMC take a learned scale."""
        s0 = self.measure(theta, batch).scale
        for tr in shifted:
            s1 = self._measurement_from(tr).scale
            if not np.allclose(np.asarray(s0), np.asarray(s1)):
                return (
                    f"the scale of the measurement site {self.obs_name!r} depends on a latent "
                    "parameter; {sampler} needs a known noise scale sigma (a constant or data). "
                    "Fix sigma, or use method='sgld'/'sghmc', which accept any likelihood."
                )
        return None

    def _check_fixed_supports(self, example: dict, shifted: list[dict]) -> None:
        """Refuse a latent whose support moves with the other latents: its transform is fixed at
        the first trace, so the sampler would leave the support once they move."""
        for s in self.sites:
            u = example[s.name]
            first = np.asarray(self.transforms[s.name](u))
            for tr in shifted:
                moved = np.asarray(biject_to(tr[s.name]["fn"].support)(u))
                if not np.allclose(first, moved, equal_nan=True):
                    raise ModelError(
                        f"the support of latent site {s.name!r} ({tr[s.name]['fn'].support}) "
                        "depends on other latent parameters; the samplers map each latent to "
                        "the unconstrained space with a transform fixed at the first trace of "
                        "the model, so they would leave its support. Sample a latent with a "
                        "fixed support and move it with a numpyro.deterministic instead (e.g. "
                        "u ~ Uniform(0, 1), b = a + (hi - lo) * u)."
                    )


def from_numpyro(model: Callable, batch: Batch) -> StateSpaceModel:
    """Read ``model(batch)`` as a state-space model; raise :class:`ModelError` if it is unusable."""
    if not callable(model):
        raise ModelError(f"model must be a callable NumPyro model, got {type(model).__name__}")
    return StateSpaceModel(model, batch)


def _unconstrained_zero(msg: dict) -> jax.Array | None:
    """The value of a continuous latent site at 0 in its unconstrained space (None: sample it)."""
    if msg["type"] != "sample" or msg["is_observed"] or msg["fn"].is_discrete:
        return None
    fn = msg["fn"]
    shape = tuple(msg["kwargs"].get("sample_shape", ())) + fn.batch_shape + fn.event_shape
    try:
        transform = biject_to(fn.support)
    except NotImplementedError:
        return None
    return transform(jnp.zeros(transform.inverse_shape(shape)))


def _trace_eagerly(model: Callable, batch: Batch) -> dict:
    name = getattr(model, "__name__", repr(model))
    try:
        # continuous latents take the value 0 in the unconstrained space instead of a prior draw:
        # the trace only reads the model's structure, and sampling eagerly compiles every
        # sampler's small operations (about 1.7 s of a 2.6 s trace of models/mlp_q.py)
        quiet = handlers.substitute(model, substitute_fn=_unconstrained_zero)
        tr = handlers.trace(handlers.seed(quiet, rng_seed=0)).get_trace(batch)
    except ModelError:
        raise
    except Exception as e:  # the user's model failed on this batch: say so in one line
        raise ModelError(f"calling model {name}(batch) failed: {type(e).__name__}: {e}") from e
    if not any(site["type"] == "sample" for site in tr.values()):
        raise ModelError(
            f"{name} has no numpyro.sample sites: is it a NumPyro model? (declare the parameters "
            "with numpyro.sample and the measurement with numpyro.sample(..., obs=...))"
        )
    return tr


def _read_sites(tr: dict) -> tuple[tuple[Site, ...], str, tuple[str, ...]]:
    """(latent sites, the measurement site's name, the numpyro.factor sites' names)."""
    latents, observed, factors = [], [], []
    for name, site in tr.items():
        if site["type"] == "param":
            raise ModelError(
                f"site {name!r} is a numpyro.param; LKTD samples every parameter: declare it "
                "with numpyro.sample and a prior"
            )
        if site["type"] != "sample":
            continue
        if site.get("scale") is not None:
            plates = ", ".join(f"{f.name!r} (size {f.size})" for f in site["cond_indep_stack"])
            raise ModelError(
                f"site {name!r} is scaled by {float(site['scale']):g} (plate {plates or '-'} with "
                "subsample_size, or handlers.scale): the sampler already weights the minibatch "
                "by pseudo_population/n, so this would temper twice. Declare the plate without "
                "subsample_size and set pseudo_population instead."
            )
        if isinstance(site["fn"], dist.distribution.Unit):  # numpyro.factor
            factors.append(name)
        elif site["is_observed"]:
            observed.append(name)
        else:
            if site["fn"].is_discrete:
                raise ModelError(
                    f"latent site {name!r} is discrete ({type(site['fn']).__name__}); Langevin "
                    "samplers need continuous parameters (marginalise it out)"
                )
            latents.append(Site(name, tuple(np.shape(site["value"])), site["fn"].support))
    if not latents:
        raise ModelError("the model has no latent sample sites: nothing to sample")
    if not observed:
        raise ModelError(
            "the model has no observed site: pass the measurement as "
            "numpyro.sample(name, dist.Normal(h, sigma), obs=batch[...])"
        )
    if len(observed) > 1:
        raise ModelError(
            f"the model has {len(observed)} observed sites ({', '.join(map(repr, observed))}); "
            "LKTD needs exactly one measurement site: stack the observations into one site"
        )
    return tuple(latents), observed[0], tuple(factors)


def outputs_computed_from(f: Callable, *example: Any) -> list[bool] | None:
    """For each output leaf of ``f(*example)``: whether it is computed from the arguments, read off
    the jaxpr (traced abstractly: nothing runs or compiles); None if ``f`` cannot be traced.
    Conservative: an equation's outputs all count as computed from the arguments when any of its
    inputs is, so that inner jaxprs (jit, scan, cond) need no look inside."""
    try:
        jaxpr = jax.make_jaxpr(f)(*example).jaxpr
    except Exception:  # a model that cannot take traced inputs fails later, with its own error
        return None
    dependent = set(jaxpr.invars)

    def hit(v: Any) -> bool:
        return not isinstance(v, Literal) and v in dependent

    for eqn in jaxpr.eqns:
        if any(hit(v) for v in eqn.invars):
            dependent.update(eqn.outvars)
    return [hit(v) for v in jaxpr.outvars]


def _check_data_free_factors(
    model: Callable, batch: Batch, values: dict, factors: tuple[str, ...]
) -> None:
    """Refuse a numpyro.factor computed from the data: the samplers add factors to the log prior,
    untempered, so a data term there would not be weighted by N/n.  The training stage
    (``STAGE_KEY``) is no data: a factor may follow it, as an annealed prior does."""
    if not factors:
        return
    data = {k: v for k, v in batch.items() if k != STAGE_KEY}
    rest = {k: v for k, v in batch.items() if k == STAGE_KEY}

    def log_factors(data: Batch) -> list[jax.Array]:
        seeded = handlers.seed(handlers.substitute(model, data=values), rng_seed=0)
        tr = handlers.trace(seeded).get_trace({**data, **rest})
        return [jnp.asarray(tr[name]["fn"].log_factor) for name in factors]

    computed = outputs_computed_from(log_factors, data)
    for name, dependent in zip(factors, computed or [False] * len(factors), strict=True):
        if dependent:
            raise ModelError(
                f"the numpyro.factor site {name!r} depends on the data: the samplers add "
                "factors to the log prior, untempered, while the data's log-likelihood is "
                "weighted by pseudo_population/n. Put the data term into the measurement site "
                "(SGLD and SGHMC accept any distribution there), or make the factor a function "
                "of the parameters only."
            )


def _check_shapes(site: dict, name: str) -> None:
    obs_shape = tuple(np.shape(site["value"]))
    dist_shape = tuple(site["fn"].shape())
    if dist_shape != obs_shape:
        raise ModelError(
            f"the measurement site {name!r} has distribution shape {dist_shape} but its "
            f"observation has shape {obs_shape}: loc/scale would broadcast against the "
            "observation (e.g. (n, 1) against (n,)). Make loc the observation's shape."
        )
    if len(obs_shape) == 0:
        raise ModelError(
            f"the measurement site {name!r} is a scalar; it needs the minibatch axis first"
        )


def _gaussian_problem(site: dict, name: str) -> str | None:
    """Why this observed site is no Gaussian measurement LKTD can use (None if it is one)."""
    fn = site["fn"]
    normal, _ = _unwrap_gaussian(fn)
    if normal is None:
        return (
            f"the measurement site {name!r} has a {type(fn).__name__} distribution; {{sampler}} "
            "needs a Gaussian measurement (dist.Normal, possibly wrapped by to_event/expand/"
            "mask). Use method='sgld' or 'sghmc', which accept any likelihood."
        )
    return None
