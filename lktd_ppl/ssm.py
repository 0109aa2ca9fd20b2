"""A plain NumPyro model read as an RL/regression state-space model (spec sections 1-2).

``from_numpyro(model, batch)`` traces ``model(batch)`` once, eagerly, and returns a
:class:`StateSpaceModel`:

* every latent ``sample`` site is a parameter; all of them together, in NumPyro's unconstrained
  space, raveled into one flat vector ``theta`` of length ``p``;
* exactly one observed site is the measurement.  For LKTD it must be Gaussian (``Normal``, possibly
  wrapped in ``Independent``, ``expand`` or ``mask``): its loc is ``h(theta, batch)``, its scale
  ``sigma`` (known, not a latent).  SGLD and SGHMC accept any likelihood.

Everything that LKTD cannot use is refused here, with a :class:`ModelError` that names the site and
says what to do, before anything is compiled.

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
    weight: jax.Array  # 1.0, or 0.0 where the observation is masked out
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
        self.sites, self.obs_name = _read_sites(tr)
        obs_site = tr[self.obs_name]
        self.obs_shape = tuple(np.shape(obs_site["value"]))
        self.obs_size = int(np.prod(self.obs_shape))  # n: the number of measurements per batch
        self.obs_distribution = type(obs_site["fn"]).__name__
        self.transforms = {s.name: biject_to(s.support) for s in self.sites}
        example = {s.name: self.transforms[s.name].inv(tr[s.name]["value"]) for s in self.sites}
        flat, self.unravel = ravel_pytree(example)
        self.p = int(flat.shape[0])
        self.dtype = flat.dtype
        _check_shapes(obs_site, self.obs_name)
        self.gaussian_error = _gaussian_problem(obs_site, self.obs_name)
        if self.gaussian_error is None:
            self._check_known_scale(batch, flat)

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
        if self.gaussian_error is not None:
            raise ModelError(self.gaussian_error.replace("{sampler}", sampler))

    def _check_known_scale(self, batch: Batch, theta: jax.Array) -> None:
        """sigma must be known: refuse a scale that moves with the parameters."""
        s0 = self.measure(theta, batch).scale
        for shift in (0.37, -1.3):
            s1 = self.measure(theta + shift, batch).scale
            if not np.allclose(np.asarray(s0), np.asarray(s1)):
                raise ModelError(
                    f"the scale of the measurement site {self.obs_name!r} depends on a latent "
                    "parameter; LKTD needs a known noise scale sigma (a constant or data). Fix "
                    "sigma, or use method='sgld'/'sghmc', which accept any likelihood."
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


def _read_sites(tr: dict) -> tuple[tuple[Site, ...], str]:
    latents, observed = [], []
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
        if site["is_observed"]:
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
    return tuple(latents), observed[0]


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
