"""A multilayer perceptron whose weights are NumPyro sample sites (the Q-network of the models).

Two details keep the forward and backward passes cheap on CPU, where these networks are tiny (batch
100, widths 32) and a matrix product's fixed cost rivals its arithmetic
(``experiments/results/bench_inner_step.md``):

- a first layer with at most ``SMALL_FAN_IN`` inputs (the escape room's (x, y)) and at most
  ``SMALL_FAN_OUT`` outputs is written as broadcast multiply-adds, which XLA fuses with the bias and
  the ReLU, instead of a product with an inner dimension of 2 (wider layers keep the product, which
  is cheaper there);
- :func:`mlp_apply_at` evaluates the output layer only at one action per row, ``Q(s_i, a_i)``: what a
  TD measurement needs, without the (n, A) table; for hidden layers wider than ``SMALL_FAN_OUT`` it
  takes the action from the full table, which is cheaper there.

The measurements behind both choices are in ``experiments/results/code_choices.md``; the values are
the same either way up to float rounding.
"""

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


SMALL_FAN_IN = 4  # first layers with at most this many inputs ...
SMALL_FAN_OUT = 32  # ... and at most this many outputs skip the matrix product

Layers = Sequence[tuple[jax.Array, jax.Array]]


def dense(w: jax.Array, b: jax.Array, x: jax.Array) -> jax.Array:
    """``x @ w + b``; for a small layer (see ``SMALL_FAN_IN``), as fused multiply-adds."""
    if w.shape[0] <= SMALL_FAN_IN and w.shape[1] <= SMALL_FAN_OUT:
        return b + sum(x[..., i : i + 1] * w[i] for i in range(w.shape[0]))
    return x @ w + b


def mlp_features(layers: Layers, x: jax.Array) -> jax.Array:
    """The last hidden layer's activations (every layer but the output one, ReLU)."""
    for w, b in layers[:-1]:
        x = jax.nn.relu(dense(w, b, x))
    return x


def mlp_apply(layers: Layers, x: jax.Array) -> jax.Array:
    """ReLU MLP forward pass; linear output layer: Q(x, .) of shape (n, A)."""
    w, b = layers[-1]
    return dense(w, b, mlp_features(layers, x))


def mlp_apply_at(layers: Layers, x: jax.Array, action: jax.Array) -> jax.Array:
    """``mlp_apply(layers, x)[i, action[i]]`` without the other outputs: Q(x_i, a_i), shape (n,)."""
    w, b = layers[-1]
    if w.shape[0] > SMALL_FAN_OUT:
        return take_action(mlp_apply(layers, x), action)
    a = action.astype(jnp.int32)
    return jnp.sum(mlp_features(layers, x) * w.T[a], axis=-1) + b[a]


def take_action(q: jax.Array, action: jax.Array) -> jax.Array:
    """Q(s_i, a_i) from an (n, A) table and (n,) actions."""
    return jnp.take_along_axis(q, action[:, None].astype(jnp.int32), axis=1)[:, 0]


def bootstrap_discount(batch: dict, gamma: float, dtype: jnp.dtype) -> jax.Array:
    """gamma (1 - terminated) of each transition, shape (n,): the protocol's, ``batch["discount"]``,
    where the agent hands it over (the LKTD family does), otherwise ``gamma`` (a model file's own
    GAMMA, for batches built by hand)."""
    if "discount" in batch:
        return batch["discount"].astype(dtype)
    return gamma * (1.0 - batch["terminated"].astype(dtype))
