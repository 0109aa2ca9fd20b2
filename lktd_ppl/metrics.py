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
- ``calibration``: for each nominal level L in ``LEVELS``, the coverage of the equal-tailed
  L-interval (q_(1-L)/2 < truth < q_(1+L)/2).

Quantiles are NumPy's default (linear interpolation), over the filled part of the buffer.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lktd_ppl.names import LEVELS


class Metrics(NamedTuple):
    mse: jax.Array  # (A,)
    coverage: jax.Array  # (A,) the paper's
    coverage_equal_tailed: jax.Array  # (A,)
    width: jax.Array  # (A,)
    calibration: jax.Array  # (len(LEVELS), A)
    start_sq_error: jax.Array  # (A,) at the start cell
    start_coverage: jax.Array  # (A,) the paper's, at the start cell
    start_coverage_equal_tailed: jax.Array  # (A,)


PROBS = tuple(sorted({q for lv in LEVELS for q in ((1 - lv) / 2, (1 + lv) / 2)}))


def _quantiles_numpy(values: np.ndarray, valid: np.ndarray, probs: tuple[float, ...]) -> np.ndarray:
    """NumPy's linear-interpolation quantiles along the last axis over the valid columns.

    ``values`` (..., rows, slots), ``valid`` (..., slots) -> (..., len(probs), rows).  NumPy's
    vectorised sort is much cheaper on CPU than XLA's sort or two ``lax.top_k``
    (``experiments/results/code_choices.md``); invalid columns sort last as +inf.
    """
    if not valid.all():  # a full buffer (most of a run) needs no masked copy before the sort
        values = np.where(valid[..., None, :], values, np.inf)
    srt = _sort_rows(values)
    with np.errstate(invalid="ignore"):  # an empty buffer gives inf - inf = nan, as it should
        return _lerp_quantiles(srt, valid, probs)


_MAX_SORT_THREADS = 2  # NumPy's sort releases the GIL: halves of the rows sort in parallel


def _sort_threads() -> int:
    """Threads for the sort: up to 2, no more than the cores this process may run on (a worker
    pinned to one core sorts on one thread)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_SORT_THREADS, cores))


@functools.cache
def _sort_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="lktd-sort")


def _sort_rows(values: np.ndarray) -> np.ndarray:
    """``np.sort(values, axis=-1)``, the rows split over threads (the XLA computation waits for
    this callback, so the other cores are free)."""
    flat = values.reshape(-1, values.shape[-1])
    threads = _sort_threads()
    if threads == 1 or flat.shape[0] < 2 * threads:
        return np.sort(values, axis=-1)
    out = np.empty_like(flat)
    bounds = np.linspace(0, flat.shape[0], threads + 1).astype(int)

    def sort_part(i: int) -> None:
        out[bounds[i] : bounds[i + 1]] = np.sort(flat[bounds[i] : bounds[i + 1]], axis=-1)

    list(_sort_pool(threads).map(sort_part, range(threads)))
    return out.reshape(values.shape)


def _lerp_quantiles(srt: np.ndarray, valid: np.ndarray, probs: tuple[float, ...]) -> np.ndarray:
    n = valid.sum(axis=-1)  # (...)
    out = []
    for p in probs:
        pos = p * (np.maximum(n, 1) - 1)
        lower = np.floor(pos).astype(np.int64)
        upper = np.minimum(lower + 1, np.maximum(n - 1, 0))
        t = (pos - lower)[..., None].astype(srt.dtype)
        a = np.take_along_axis(
            srt, np.broadcast_to(lower[..., None, None], srt.shape[:-1] + (1,)), -1
        )
        b = np.take_along_axis(
            srt, np.broadcast_to(upper[..., None, None], srt.shape[:-1] + (1,)), -1
        )
        a, b = a[..., 0], b[..., 0]
        diff = b - a
        lerp = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's own lerp
        out.append(lerp)
    return np.stack(out, axis=-2)


def _quantiles_jax(values: jax.Array, valid: jax.Array, probs: tuple[float, ...]) -> jax.Array:
    """``_quantiles_numpy`` computed on the device (XLA sort): what an accelerator uses, where a
    host callback would copy the sample buffer out at every evaluation.  The position p (n - 1)
    is split into its integer and fractional parts exactly (p as a fraction), as float64 does."""
    srt = jnp.sort(jnp.where(valid[..., None, :], values, jnp.inf), axis=-1)
    n = jnp.sum(valid, axis=-1, dtype=jnp.int32)
    last = srt.shape[:-1] + (1,)
    out = []
    for p in probs:
        frac = Fraction(p).limit_denominator(1000)
        scaled = (jnp.maximum(n, 1) - 1) * frac.numerator
        lower = scaled // frac.denominator
        upper = jnp.minimum(lower + 1, jnp.maximum(n - 1, 0))
        t = ((scaled % frac.denominator) / frac.denominator).astype(srt.dtype)[..., None]
        a = jnp.take_along_axis(srt, jnp.broadcast_to(lower[..., None, None], last), -1)[..., 0]
        b = jnp.take_along_axis(srt, jnp.broadcast_to(upper[..., None, None], last), -1)[..., 0]
        diff = b - a  # an empty buffer: inf - inf = nan, as in NumPy
        out.append(jnp.where(t >= 0.5, b - diff * (1 - t), a + diff * t))
    return jnp.stack(out, axis=-2)


def quantiles(values: jax.Array, valid: jax.Array, probs: tuple[float, ...] = PROBS) -> jax.Array:
    """Quantiles ``probs`` of ``values`` (rows, slots) over the valid slots -> (len(probs), rows).

    On CPU a host callback (NumPy sort) once per evaluation, not per step: see
    ``_quantiles_numpy``; on an accelerator, the same computed on the device (``_quantiles_jax``).
    """
    if jax.default_backend() != "cpu":
        return _quantiles_jax(values, valid, probs)
    shape = jax.ShapeDtypeStruct((len(probs), values.shape[-2]), values.dtype)
    return jax.pure_callback(
        lambda v, ok: _quantiles_numpy(np.asarray(v), np.asarray(ok), probs).astype(v.dtype),
        shape,
        values,
        valid,
        vmap_method="expand_dims",
    )


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
    ``truth`` may carry a leading axis (k, cells, A) of several truths (e.g. Q of the
    epsilon-greedy policy and Q*): the quantiles are computed once, the metrics per truth.
    """
    cells, num_actions = mask.shape
    n = jnp.maximum(jnp.sum(valid), 1)
    vals = ring.reshape(cells, num_actions, -1)
    mean = jnp.sum(jnp.where(valid, vals, 0.0), axis=-1) / n
    q = quantiles(ring, valid).reshape(len(PROBS), cells, num_actions)

    def against(t):
        return _metrics_against(mean, q, latest, t, mask, start_cell)

    return jax.vmap(against)(truth) if truth.ndim == 3 else against(truth)


def _metrics_against(mean, q, latest, truth, mask, s) -> Metrics:
    qi = {p: q[i] for i, p in enumerate(PROBS)}
    lo, hi = qi[PROBS[0]], qi[PROBS[-1]]  # 2.5% and 97.5%
    t = jnp.where(mask, truth, 0.0)
    half = 0.5 * (hi - lo)
    paper = jnp.mean((latest - half < t) & (t < latest + half), axis=0)  # averaged over members
    equal = (lo < t) & (t < hi)
    calib = jnp.stack([(qi[(1 - lv) / 2] < t) & (t < qi[(1 + lv) / 2]) for lv in LEVELS])
    w = mask.astype(mean.dtype)
    count = jnp.maximum(jnp.sum(w, axis=0), 1.0)

    def avg(x):
        return jnp.sum(w * x, axis=-2) / count

    sq = (mean - t) ** 2
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


def chronological_samples(
    ring: np.ndarray, valid: np.ndarray, slot: int, members: int, shape: tuple[int, int]
) -> np.ndarray:
    """A saved ring's samples in the order they were stored: (cells, A, stages, members).

    ``ring`` (cells*A, capacity*members), column ``slot*members + member``; ``slot`` is the next
    stage slot to be written (the oldest stored stage once the ring is full); ``valid`` marks the
    columns written (all of them once the ring has wrapped).
    """
    shift = -int(slot) * members
    order = np.roll(np.arange(ring.shape[1]), shift)
    cols = order[np.asarray(valid)[order]]
    return np.asarray(ring)[:, cols].reshape(*shape, -1, members)


def final_cells(
    ring: np.ndarray, valid: np.ndarray, slot: int, members: int, shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """A run's last sample window per cell, small enough to keep beside its metrics.

    ``mean`` (cells, A): the pooled mean; ``chain_mean`` (cells, A, members): each member's mean;
    ``quantiles`` (len(PROBS), cells, A): the pooled quantiles at ``PROBS``, the same numbers the
    run's last evaluation made its intervals from (so its coverage can be recomputed from them).
    """
    vals = chronological_samples(ring, valid, slot, members, shape)  # (cells, A, stages, members)
    q = _quantiles_numpy(np.asarray(ring), np.asarray(valid), PROBS)
    return {
        "mean": vals.mean(axis=(2, 3)),
        "chain_mean": vals.mean(axis=2),
        "quantiles": q.reshape(len(PROBS), *shape),
    }
