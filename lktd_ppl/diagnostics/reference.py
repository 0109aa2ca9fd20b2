"""The spec's metrics against the truth (section 4) in NumPy: the reference the jitted JAX version
(:mod:`lktd_ppl.metrics`) is tested against, and what ``lktd diagnose`` reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lktd_ppl.envs.escape import START_CELL
from lktd_ppl.names import LEVELS as DEFAULT_LEVELS


def _check_grid(name: str, arr: np.ndarray, shape: tuple[int, int]) -> None:
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape (cell, action) = {shape}, got {arr.shape}")


def _prepare(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"samples must have shape (S, cell, action), got shape {samples.shape}")
    truth = np.asarray(truth, dtype=np.float64)
    _check_grid("truth", truth, samples.shape[1:])
    mask = np.isfinite(truth) if mask is None else np.asarray(mask, dtype=bool)
    _check_grid("mask", mask, samples.shape[1:])
    return samples, truth, mask


def _cell_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the cell axis (second to last) of ``values`` where ``mask``; NaN if none."""
    total = np.where(mask, values, 0.0).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / mask.sum(axis=-2)


def interval_metrics(
    samples: np.ndarray,
    latest: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    prob: float = 0.95,
) -> dict[str, np.ndarray]:
    """The spec's section-4 metrics, per action, averaged over the cells where ``mask`` is True.

    Args:
        samples: pooled Q samples, ``(S, cell, action)``.
        latest: the most recent sample ``(cell, action)``; or one per chain ``(m, cell, action)``,
            then the paper's coverage is averaged over chains (each interval centred at its own
            chain's latest sample, spec section 4).
        truth: ground-truth Q ``(cell, action)`` (NaN allowed where ``mask`` is False).
        mask: bool ``(cell, action)``, entries to score; default ``isfinite(truth)``.
        levels: nominal levels of the calibration curve.
        prob: level of the interval behind ``coverage``, ``coverage_equal_tailed`` and ``width``.

    With ``lo_p, hi_p`` the ``(1 -/+ p) / 2`` sample quantiles (NumPy's default linear
    interpolation) of each entry, returns arrays with the action axis last:

    - ``mse`` (A,): mean over cells of ``(mean of samples - truth)**2``;
    - ``coverage`` (A,): the paper's, fraction of cells with
      ``latest - h < truth < latest + h``, ``h = (hi_prob - lo_prob) / 2``;
    - ``coverage_equal_tailed`` (A,): fraction of cells with ``lo_prob < truth < hi_prob``;
    - ``width`` (A,): mean of ``hi_prob - lo_prob``;
    - ``calibration`` (len(levels), A): row ``i`` is the fraction of cells with
      ``lo_L < truth < hi_L``, ``L = levels[i]``.

    An action with no scored cell gets NaN.
    """
    samples, truth, mask = _prepare(samples, truth, mask)
    latest = np.asarray(latest, dtype=np.float64)
    if latest.shape[-2:] != samples.shape[1:] or latest.ndim not in (2, 3):
        raise ValueError(
            f"latest must have shape (cell, action) or (chain, cell, action) with (cell, action) "
            f"= {samples.shape[1:]}, got {latest.shape}"
        )
    levels = [float(level) for level in levels]
    for level in [prob, *levels]:
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval levels must lie in (0, 1), got {level}")

    probs = [(1.0 - prob) / 2.0, (1.0 + prob) / 2.0]
    for level in levels:
        probs += [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    quant = np.quantile(samples, probs, axis=0)  # (2 + 2 * len(levels), cell, action)
    lo, hi = quant[0], quant[1]

    half = (hi - lo) / 2.0
    centre = latest.reshape(-1, *latest.shape[-2:])  # (m, cell, action)
    covered = ((centre - half < truth) & (truth < centre + half)).mean(axis=0)
    calibration = [
        _cell_mean((quant[2 + 2 * i] < truth) & (truth < quant[3 + 2 * i]), mask)
        for i in range(len(levels))
    ]
    n_action = samples.shape[-1]
    return {
        "mse": _cell_mean((samples.mean(axis=0) - truth) ** 2, mask),
        "coverage": _cell_mean(covered, mask),
        "coverage_equal_tailed": _cell_mean((lo < truth) & (truth < hi), mask),
        "width": _cell_mean(hi - lo, mask),
        "calibration": np.reshape(calibration, (len(levels), n_action)),
    }


def start_cell_metrics(
    samples: np.ndarray,
    latest: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    cell: int = START_CELL,
    levels: Sequence[float] = DEFAULT_LEVELS,
    prob: float = 0.95,
) -> dict[str, np.ndarray]:
    """:func:`interval_metrics` at one cell (the spec's ``start_cr``, ``start_mse``, ...).

    Same keys and shapes; an action that is not scored at ``cell`` gets NaN (at the start cell of
    the escape room only E and N are legal).
    """
    samples, truth, mask = _prepare(samples, truth, mask)
    latest = np.asarray(latest)
    one = slice(cell, cell + 1)
    return interval_metrics(
        samples[:, one], latest[..., one, :], truth[one], mask[one], levels=levels, prob=prob
    )


def pit_values(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """PIT of the truth under the samples: fraction of samples strictly below the truth.

    Returns a 1-D array over the entries where ``mask`` is True (row-major (cell, action) order).
    Uniform on [0, 1] for a calibrated posterior (up to the 1/S discreteness).
    """
    samples, truth, mask = _prepare(samples, truth, mask)
    return (samples < truth).mean(axis=0)[mask]


def pit_calibration(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> np.ndarray:
    """Calibration read off the PIT: per level L and action, the fraction of scored cells with
    ``(1 - L) / 2 < PIT < (1 + L) / 2``; ``(len(levels), action)``.

    A quantile-free shortcut for ``interval_metrics(...)["calibration"]``. The two differ only when
    the truth falls inside the gap between the two order statistics that a linear-interpolated
    quantile blends (an event of probability O(1/S) per entry), so they agree to O(1/S).
    """
    samples, truth, mask = _prepare(samples, truth, mask)
    pit = (samples < truth).mean(axis=0)
    rows = [
        _cell_mean(((1.0 - level) / 2.0 < pit) & (pit < (1.0 + level) / 2.0), mask)
        for level in levels
    ]
    return np.reshape(rows, (len(levels), samples.shape[-1]))


def greedy_policy_probs(samples: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """Mean policy probability (spec section 4): fraction of samples whose greedy LEGAL action at
    each cell is ``a``; ``(cell, action)``, rows of cells with no legal action are 0."""
    samples = np.asarray(samples, dtype=np.float64)
    legal = np.asarray(legal, dtype=bool)
    if samples.ndim != 3:
        raise ValueError(f"samples must have shape (S, cell, action), got shape {samples.shape}")
    _check_grid("legal", legal, samples.shape[1:])
    greedy = np.where(legal, samples, -np.inf).argmax(axis=-1)  # (S, cell)
    probs = (greedy[..., None] == np.arange(samples.shape[-1])).mean(axis=0)
    return np.where(legal.any(axis=-1, keepdims=True), probs, 0.0)


def paper_coverage_if_calibrated(nominal: float = 0.95) -> float:
    """The paper's coverage of a perfectly calibrated Gaussian posterior: ``2 Phi(z / sqrt 2) - 1``
    with ``z = Phi^-1((1 + nominal) / 2)``, as ``latest - truth`` has twice the posterior
    variance (0.834 at 0.95)."""
    from scipy.stats import norm

    z = norm.ppf((1.0 + nominal) / 2.0)
    return float(2.0 * norm.cdf(z / np.sqrt(2.0)) - 1.0)
