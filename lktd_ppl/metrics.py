"""Q-posterior metrics against ground truth (spec section 4), in JAX for use inside jitted runs.

Samples live in a ring buffer laid out as ``(cells * actions, slots)`` (one column per stored sample:
``slots = capacity * members``), with a validity flag per column while the buffer fills.  Metrics
are per action, over the entries where ``mask`` is True (legal actions, exit excluded):

- ``mse``: (mean of samples - truth)^2, averaged over cells;
- ``coverage`` (the paper's): the interval centred at the latest sample with half-width
  (q97.5 - q2.5)/2 covers the truth (strictly); with several chains, each chain's own latest sample,
  averaged over chains;
- ``coverage_equal_tailed``: q2.5 < truth < q97.5;
- ``width``: q97.5 - q2.5;
- ``calibration``: for each nominal level L in ``LEVELS``, the fraction of entries whose PIT (the
  fraction of samples below the truth) lies in ((1-L)/2, (1+L)/2): the equal-tailed L-interval's
  coverage read off the PIT, which needs no further quantiles.

Quantiles use NumPy's default (linear interpolation); order statistics come from ``lax.top_k``
(about 9x cheaper than a full sort on CPU) with a dynamic pick while the buffer fills.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

LEVELS = (0.5, 0.8, 0.9, 0.95)


class Metrics(NamedTuple):
    mse: jax.Array  # (A,)
    coverage: jax.Array  # (A,) the paper's
    coverage_equal_tailed: jax.Array  # (A,)
    width: jax.Array  # (A,)
    calibration: jax.Array  # (len(LEVELS), A)
    start_sq_error: jax.Array  # (A,) at the start cell
    start_coverage: jax.Array  # (A,) the paper's, at the start cell
    start_coverage_equal_tailed: jax.Array  # (A,)


def _order_stat_k(p: float, n_max: int) -> int:
    """How many extreme order statistics the tail quantile p (<= 0.5) needs, at most."""
    return min(n_max, int(math.floor(p * (n_max - 1))) + 2)


def tail_quantiles(
    values: jax.Array, valid: jax.Array, p: float = 0.025
) -> tuple[jax.Array, jax.Array]:
    """Linear-interpolation quantiles p and 1-p along the last axis, over the valid columns."""
    n_max = values.shape[-1]
    n = jnp.sum(valid)
    k = _order_stat_k(p, n_max)
    low = -jax.lax.top_k(jnp.where(valid, -values, -jnp.inf), k)[0]  # ascending smallest
    high = jax.lax.top_k(jnp.where(valid, values, -jnp.inf), k)[0]  # descending largest

    def pick(sorted_k, q, from_top):
        pos = q * (n - 1)
        i = jnp.floor(pos).astype(jnp.int32)
        frac = pos - i
        if from_top:  # order statistic i (from the bottom) is index n-1-i from the top
            a = jnp.take(sorted_k, jnp.clip(n - 1 - i, 0, k - 1), axis=-1)
            b = jnp.take(sorted_k, jnp.clip(n - 2 - i, 0, k - 1), axis=-1)
        else:
            a = jnp.take(sorted_k, jnp.clip(i, 0, k - 1), axis=-1)
            b = jnp.take(sorted_k, jnp.clip(i + 1, 0, k - 1), axis=-1)
        return a + frac * (b - a)

    return pick(low, p, False), pick(high, 1.0 - p, True)


def interval_metrics(
    ring: jax.Array,
    valid: jax.Array,
    latest: jax.Array,
    truth: jax.Array,
    mask: jax.Array,
    start_cell: int = 0,
) -> Metrics:
    """Metrics of the samples in ``ring`` (cells*A, slots) against ``truth`` (cells, A).

    ``latest`` (members, cells, A): each member's most recent sample; ``mask`` (cells, A) bool.
    """
    cells, num_actions = truth.shape
    n = jnp.maximum(jnp.sum(valid), 1)
    vals = ring.reshape(cells, num_actions, -1)
    mean = jnp.sum(jnp.where(valid, vals, 0.0), axis=-1) / n
    lo, hi = tail_quantiles(ring, valid)
    lo, hi = lo.reshape(cells, num_actions), hi.reshape(cells, num_actions)
    t = jnp.where(mask, truth, 0.0)
    half = 0.5 * (hi - lo)
    paper = jnp.mean(
        (latest - half < t) & (t < latest + half), axis=0
    )  # per entry, averaged over members
    equal = (lo < t) & (t < hi)
    below = jnp.sum(jnp.where(valid, vals < t[..., None], False), axis=-1) / n
    levels = jnp.asarray(LEVELS)[:, None, None]
    calib = (below > (1 - levels) / 2) & (below < (1 + levels) / 2)
    w = mask.astype(ring.dtype)
    count = jnp.maximum(jnp.sum(w, axis=0), 1.0)

    def avg(x):
        return jnp.sum(w * x, axis=-2) / count

    sq = (mean - t) ** 2
    s = start_cell
    return Metrics(
        mse=avg(sq),
        coverage=avg(paper),
        coverage_equal_tailed=avg(equal),
        width=avg(hi - lo),
        calibration=avg(calib),
        start_sq_error=jnp.where(mask[s], sq[s], jnp.nan),
        start_coverage=jnp.where(mask[s], paper[s], jnp.nan),
        start_coverage_equal_tailed=jnp.where(mask[s], equal[s], jnp.nan),
    )


def greedy_policy_frequency(ring: jax.Array, valid: jax.Array, mask: jax.Array) -> jax.Array:
    """Fraction of stored samples whose greedy legal action at each cell is a: (cells, A)."""
    cells, num_actions = mask.shape
    vals = ring.reshape(cells, num_actions, -1)
    legal = jnp.any(mask, axis=-1, keepdims=True)
    q = jnp.where(mask[..., None] | ~legal[..., None], vals, -jnp.inf)
    best = jax.nn.one_hot(jnp.argmax(q, axis=1), num_actions, axis=1)  # (cells, A, slots)
    return jnp.sum(jnp.where(valid, best, 0.0), axis=-1) / jnp.maximum(jnp.sum(valid), 1)
