"""Priors used by the shipped models (any NumPyro distribution works as a prior)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro import distributions as dist


def spike_and_slab(lam: jax.Array, slab_sd: float = 0.5, spike_sd: float = 0.05):
    """lam * N(0, slab_sd^2) + (1 - lam) * N(0, spike_sd^2), per weight (the official code's prior)."""
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
