"""A multilayer perceptron whose weights are NumPyro sample sites (the Q-network of the models)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpyro


def mlp_sites(
    in_dim: int, hidden: Sequence[int], out_dim: int, prior: Callable[[str, tuple], object]
) -> list[tuple[jax.Array, jax.Array]]:
    """Declare W{i}, b{i} as sample sites with ``prior(name, shape)``; return [(W, b), ...]."""
    sizes = [in_dim, *hidden, out_dim]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = numpyro.sample(f"W{i}", prior(f"W{i}", (a, b)))
        bias = numpyro.sample(f"b{i}", prior(f"b{i}", (b,)))
        layers.append((w, bias))
    return layers


def mlp_apply(layers: Sequence[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    """ReLU MLP forward pass; linear output layer."""
    for w, b in layers[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = layers[-1]
    return x @ w + b


def take_action(q: jax.Array, action: jax.Array) -> jax.Array:
    """Q(s_i, a_i) from an (n, A) table and (n,) actions."""
    return jnp.take_along_axis(q, action[:, None].astype(jnp.int32), axis=1)[:, 0]
