"""Priors used by the shipped models (any NumPyro distribution works as a prior)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from numpyro import distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes


class SpikeAndSlab(dist.Distribution):
    """lam * N(0, slab_sd^2) + (1 - lam) * N(0, spike_sd^2), elementwise (slab_sd > spike_sd).

    The same density as :func:`spike_and_slab_mixture` (NumPyro's ``MixtureSameFamily``), written as
    ``log p(x) = a(x) + log(lam/slab_sd + (1 - lam)/spike_sd * exp(d(x)))`` with
    ``a = -x^2 / (2 slab_sd^2)`` and ``d = -x^2 (1/(2 spike_sd^2) - 1/(2 slab_sd^2)) <= 0``: stable
    (``exp(d) <= 1``, ``lam = 1`` is fine) and about ten times cheaper to differentiate than the
    mixture's logsumexp, which matters because the prior is evaluated on every weight at every
    inner step (``experiments/archive/bench_inner_step.py``).
    """

    arg_constraints = {
        "lam": constraints.unit_interval,
        "slab_sd": constraints.positive,
        "spike_sd": constraints.positive,
    }
    support = constraints.real
    reparametrized_params = []

    def __init__(self, lam, slab_sd=0.5, spike_sd=0.05, *, validate_args=None):
        self.lam, self.slab_sd, self.spike_sd = promote_shapes(lam, slab_sd, spike_sd)
        batch_shape = jax.lax.broadcast_shapes(
            jnp.shape(lam), jnp.shape(slab_sd), jnp.shape(spike_sd)
        )
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def log_prob(self, value):
        x2 = value * value
        a = -x2 / (2.0 * self.slab_sd**2)
        d = -x2 * (0.5 / self.spike_sd**2 - 0.5 / self.slab_sd**2)
        mix = self.lam / self.slab_sd + (1.0 - self.lam) / self.spike_sd * jnp.exp(d)
        return a + jnp.log(mix) - 0.5 * math.log(2.0 * math.pi)

    def sample(self, key, sample_shape=()):
        key_c, key_z = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        slab = jax.random.bernoulli(key_c, self.lam, shape)
        return jnp.where(slab, self.slab_sd, self.spike_sd) * jax.random.normal(key_z, shape)


def spike_and_slab(lam: jax.Array, slab_sd: float = 0.5, spike_sd: float = 0.05) -> SpikeAndSlab:
    """The official code's prior per weight: lam N(0, slab_sd^2) + (1 - lam) N(0, spike_sd^2)."""
    return SpikeAndSlab(lam, slab_sd, spike_sd)


def spike_and_slab_mixture(lam: jax.Array, slab_sd: float = 0.5, spike_sd: float = 0.05):
    """The same prior as NumPyro's ``MixtureSameFamily`` (the reference form; slower gradients)."""
    probs = jnp.stack([lam, 1.0 - lam])
    return dist.MixtureSameFamily(
        dist.Categorical(probs=probs), dist.Normal(0.0, jnp.array([slab_sd, spike_sd]))
    )


def annealed_lambda(
    stage: jax.Array, start: float = 1.0, end: float = 0.5, num_stages: int = 10_000
) -> jax.Array:
    """lambda annealed linearly from ``start`` to ``end`` over the first ``num_stages`` stages."""
    frac = jnp.clip(jnp.asarray(stage, jnp.result_type(float)) / num_stages, 0.0, 1.0)
    return start + (end - start) * frac
