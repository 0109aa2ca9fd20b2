"""Aggregate scores over runs the way rliable does (Agarwal et al., 2021): the interquartile mean
(IQM) and a stratified bootstrap interval.

Scores are an array (runs, tasks).  The IQM is the mean of the middle 50% of all scores pooled
(25% cut from each end, :func:`scipy.stats.trim_mean`).  The stratified bootstrap resamples runs
with replacement within each task (the strata) independently, recomputes the statistic, and takes
the percentile interval.  Written here because rliable's dependency ``arch`` does not import with
the project's pandas 3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP_REPS = 2000


def iqm(scores: np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """The mean of the middle 50% of ``scores`` (all entries pooled, or along ``axis``)."""
    scores = np.asarray(scores, float)
    if axis is None:
        return float(stats.trim_mean(scores.reshape(-1), 0.25))
    return stats.trim_mean(scores, 0.25, axis=axis)


def stratified_resamples(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` resamples of ``scores`` (runs, tasks): each task's runs drawn with replacement,
    independently per task; shape (reps, runs, tasks)."""
    scores = np.asarray(scores, float)
    if scores.ndim == 1:
        scores = scores[:, None]
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    return np.take_along_axis(scores[None], idx, axis=1)


def stratified_bootstrap(
    scores: np.ndarray,
    statistic: Callable[..., Any] = iqm,
    *,
    level: float = 0.95,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, lower, upper): ``statistic`` of ``scores`` (runs, tasks) or (runs,) and
    its percentile interval at ``level`` over ``reps`` stratified bootstrap resamples.
    ``statistic(x, axis=None)`` pools every entry; with ``axis=1`` it reduces each row of a
    (reps, runs * tasks) array (:func:`iqm` and :func:`numpy.mean` both do)."""
    scores = np.asarray(scores, float)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.shape[0] < 2:
        return float(statistic(scores)), float("nan"), float("nan")
    boot = stratified_resamples(scores, reps, np.random.default_rng(seed))
    values = np.asarray(statistic(boot.reshape(reps, -1), axis=1))
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(statistic(scores)), float(lo), float(hi)
