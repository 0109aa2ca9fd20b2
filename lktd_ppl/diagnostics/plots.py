"""Plots of sampled Q-posteriors: matplotlib ``Figure`` objects built without pyplot (no GUI
backend is touched); each saves a PNG when given ``path``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lktd_ppl.diagnostics.export import _action_names
from lktd_ppl.diagnostics.reference import (
    _prepare,
    interval_metrics,
    paper_coverage_if_calibrated,
    pit_values,
)
from lktd_ppl.envs.escape import ACTION_DELTAS
from lktd_ppl.names import ACTION_NAMES
from lktd_ppl.names import LEVELS as DEFAULT_LEVELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    """A matplotlib Figure with an Agg canvas, outside pyplot (no GUI backend, no global state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def _action_colours(n: int) -> list[str]:
    return [f"C{i}" for i in range(n)]


def plot_calibration(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    band_prob: float = 0.95,
    n_simulations: int = 1000,
    seed: int = 0,
    action_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Calibration of the Q-posterior against the truth, two panels in one figure.

    Left: PIT Delta-ECDF (ECDF of :func:`pit_values` minus the uniform CDF) with the simultaneous
    ``band_prob`` band of ``arviz_stats.ecdf_utils.ecdf_pit`` (Säilynoja et al. 2022), and the
    p-value of arviz_stats' ``pot_c`` uniformity test. The band assumes independent PIT values;
    cells that share a Q-network are not, so read it as a guide. Right: nominal vs empirical
    equal-tailed coverage at ``levels``, per action and pooled over all scored entries, with
    the diagonal.
    """
    from arviz_stats.base import array_stats
    from arviz_stats.ecdf_utils import ecdf_pit

    samples, truth, mask = _prepare(samples, truth, mask)
    pit = pit_values(samples, truth, mask)
    fig = _figure(10.0, 4.2)
    ax_pit, ax_cal = fig.subplots(1, 2)

    if pit.size >= 2:
        x, ecdf, lower, upper = ecdf_pit(
            pit, band_prob, n_simulations, rng=np.random.default_rng(seed)
        )
        ax_pit.fill_between(
            x,
            lower - x,
            upper - x,
            step="post",
            color="0.6",
            alpha=0.35,
            lw=0,
            label=f"{band_prob:.0%} simultaneous band",
        )
        ax_pit.step(x, ecdf - x, where="post", color="C0", lw=1.5, label="PIT ECDF - uniform")
        outside = bool(np.any((ecdf < lower) | (ecdf > upper)))
        p_value = float(array_stats.uniformity_test(pit, axis=-1, method="pot_c")[0])
        ax_pit.text(
            0.02,
            0.04,
            f"n = {pit.size}, pot_c p = {p_value:.3f}, outside band: {'yes' if outside else 'no'}",
            transform=ax_pit.transAxes,
            fontsize=8,
        )
    ax_pit.axhline(0.0, color="k", lw=0.8, ls="--")
    ax_pit.set_xlim(0.0, 1.0)
    ax_pit.set_xlabel("PIT of the truth")
    ax_pit.set_ylabel(r"$\Delta$ ECDF")
    ax_pit.set_title("PIT ECDF")
    ax_pit.legend(loc="upper right", fontsize=8)

    levels_arr = np.asarray(levels, dtype=np.float64)
    calib = interval_metrics(samples, samples[-1], truth, mask, levels=levels_arr)["calibration"]
    n_action = truth.shape[-1]
    names = _action_names(n_action, action_names)
    for a, colour in zip(range(n_action), _action_colours(n_action), strict=True):
        if mask[:, a].any():
            ax_cal.plot(levels_arr, calib[:, a], "o-", color=colour, ms=4, label=str(names[a]))
    weights = mask.sum(axis=0)
    pooled = np.nansum(calib * weights, axis=-1) / max(int(weights.sum()), 1)
    ax_cal.plot(levels_arr, pooled, "s-", color="k", lw=2, ms=5, label="all")
    ax_cal.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="ideal")
    lo_lim = max(0.0, min(levels_arr.min(), np.nanmin(calib, initial=1.0)) - 0.05)
    ax_cal.set_xlim(lo_lim, 1.0)
    ax_cal.set_ylim(lo_lim, 1.01)
    ax_cal.set_xlabel("nominal level")
    ax_cal.set_ylabel("empirical equal-tailed coverage")
    ax_cal.set_title("Calibration")
    ax_cal.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_interval_heatmaps(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None,
    size: int,
    *,
    prob: float = 0.95,
    action_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One panel per action over the ``size x size`` grid: colour = width of the equal-tailed
    ``prob`` interval, a cross where that interval misses the truth (unscored entries blank).

    x grows to the right, y upwards (N at the top), as in the escape room.
    """
    from matplotlib.colors import Normalize

    samples, truth, mask = _prepare(samples, truth, mask)
    if samples.shape[1] != size * size:
        raise ValueError(f"{samples.shape[1]} cells do not form a {size}x{size} grid")
    lo, hi = np.quantile(samples, [(1.0 - prob) / 2.0, (1.0 + prob) / 2.0], axis=0)
    width = np.where(mask, hi - lo, np.nan)
    missed = mask & ~((lo < truth) & (truth < hi))
    n_action = truth.shape[-1]
    names = _action_names(n_action, action_names)
    finite = width[np.isfinite(width)]
    norm = Normalize(*(finite.min(), finite.max()) if finite.size else (0.0, 1.0))

    fig = _figure(3.2 * n_action + 1.0, 3.4)
    axes = np.atleast_1d(fig.subplots(1, n_action))
    image = None
    for a, ax in enumerate(axes):
        grid = width[:, a].reshape(size, size)  # [x, y]
        image = ax.imshow(grid.T, origin="lower", cmap="viridis", norm=norm, aspect="equal")
        xs, ys = np.divmod(np.flatnonzero(missed[:, a]), size)
        ax.scatter(xs, ys, marker="x", color="red", s=30, lw=1.5)
        ax.set_title(f"{names[a]}: {int(missed[:, a].sum())}/{int(mask[:, a].sum())} missed")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    if image is not None:
        fig.colorbar(image, ax=list(axes), label=f"{prob:.0%} interval width", shrink=0.85)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_policy_quiver(
    policy_probs: np.ndarray,
    size: int,
    *,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Arrows of the mean policy probability (e.g. :func:`greedy_policy_probs`) per action at each
    cell of the ``size x size`` grid: an arrow of length ``0.45 * p`` cells in the direction of
    each action. Start cell (0, 0) and exit (size-1, size-1) are marked."""
    probs = np.asarray(policy_probs, dtype=np.float64)
    if probs.shape != (size * size, len(ACTION_NAMES)):
        raise ValueError(f"policy_probs must have shape {(size * size, 4)}, got {probs.shape}")
    xs, ys = np.divmod(np.arange(size * size), size)
    fig = _figure(5.5, 5.5)
    ax = fig.subplots()
    for a, colour in zip(range(len(ACTION_NAMES)), _action_colours(4), strict=True):
        p = probs[:, a]
        keep = p > 0
        dx, dy = ACTION_DELTAS[a]
        ax.quiver(
            xs[keep],
            ys[keep],
            0.45 * p[keep] * dx,
            0.45 * p[keep] * dy,
            angles="xy",
            scale_units="xy",
            scale=1.0,
            color=colour,
            width=0.006,
            label=ACTION_NAMES[a],
        )
    ax.plot(0, 0, "o", color="tab:blue", ms=10, alpha=0.4, label="start")
    ax.plot(size - 1, size - 1, "s", color="tab:green", ms=12, alpha=0.4, label="exit")
    ax.set_xlim(-0.6, size - 0.4)
    ax.set_ylim(-0.6, size - 0.4)
    ax.set_aspect("equal")
    ax.set_xticks(range(size))
    ax.set_yticks(range(size))
    ax.grid(True, color="0.9")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(title or "mean policy probability")
    return _finish(fig, path)


def plot_coverage_over_time(
    steps: np.ndarray,
    coverage: np.ndarray,
    equal_tailed: np.ndarray | None = None,
    nominal: float = 0.95,
    *,
    action_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Coverage per action over training windows: ``coverage`` (window, action) solid (the paper's),
    ``equal_tailed`` (window, action) dashed, the nominal level, and the paper's coverage of a
    calibrated posterior (:func:`paper_coverage_if_calibrated`) dotted."""
    steps = np.asarray(steps)
    coverage = np.asarray(coverage, dtype=np.float64).reshape(len(steps), -1)
    n_action = coverage.shape[-1]
    names = _action_names(n_action, action_names)
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    for a, colour in zip(range(n_action), _action_colours(n_action), strict=True):
        ax.plot(steps, coverage[:, a], "-", color=colour, label=f"{names[a]} (paper)")
    if equal_tailed is not None:
        et = np.asarray(equal_tailed, dtype=np.float64).reshape(len(steps), -1)
        for a, colour in zip(range(n_action), _action_colours(n_action), strict=True):
            ax.plot(steps, et[:, a], "--", color=colour, label=f"{names[a]} (equal-tailed)")
    ax.axhline(nominal, color="k", lw=1, label=f"nominal {nominal:.2f}")
    calibrated = paper_coverage_if_calibrated(nominal)
    ax.axhline(
        calibrated, color="0.4", lw=1, ls=":", label=f"paper's if calibrated {calibrated:.3f}"
    )
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("environment step")
    ax.set_ylabel("coverage")
    ax.legend(loc="lower right", fontsize=7, ncol=2)
    ax.set_title(title or "coverage over time")
    return _finish(fig, path)


def plot_trace(
    q: np.ndarray,
    cells_actions: Sequence[tuple[int, int]],
    truth: np.ndarray | None = None,
    *,
    action_names: Sequence[str] | None = None,
    size: int | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Trace plot (arviz_plots ``plot_trace``) of ``q`` (chain, draw, cell, action) at the given
    ``(cell, action)`` pairs, one panel each, one line per chain; the truth as a black line.

    Panels are titled ``cell c (x, y) A`` when ``size`` is given, ``cell c A`` otherwise.
    """
    import arviz_plots as azp
    import xarray as xr

    q = np.asarray(q)
    if q.ndim != 4:
        raise ValueError(f"q must have shape (chain, draw, cell, action), got shape {q.shape}")
    if not cells_actions:
        raise ValueError("cells_actions must name at least one (cell, action) pair")
    names = _action_names(q.shape[-1], action_names)
    labels = []
    for cell, action in cells_actions:
        where = f" ({cell // size}, {cell % size})" if size else ""
        labels.append(f"cell {cell}{where} {names[action]}")
    cells = np.array([c for c, _ in cells_actions])
    actions = np.array([a for _, a in cells_actions])
    values = q[:, :, cells, actions]  # (chain, draw, entry)
    data = xr.Dataset(
        {"q": (("chain", "draw", "entry"), values)},
        coords={"chain": np.arange(q.shape[0]), "draw": np.arange(q.shape[1]), "entry": labels},
    )
    n = len(labels)
    n_cols = min(n, 3)
    n_rows = -(-n // n_cols)
    pc = azp.plot_trace(
        xr.DataTree.from_dict({"posterior": data}),
        backend="matplotlib",
        col_wrap=n_cols,
        figure_kwargs={"figsize": (4.2 * n_cols, 2.8 * n_rows), "layout": "constrained"},
    )
    fig = pc.viz["figure"].item()
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        for label, cell, action in zip(labels, cells, actions, strict=True):
            if np.isfinite(truth[cell, action]):
                ax = pc.get_viz("plot", "q", sel={"entry": label})
                ax.axhline(truth[cell, action], color="k", lw=1.5, ls="--", label="truth")
    _close_pyplot(fig)
    return _finish(fig, path)


def _close_pyplot(fig: Figure) -> None:
    """Drop a pyplot-made figure from pyplot's registry (it stays usable and savable)."""
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_rhat_over_time(
    steps: np.ndarray,
    rhat: np.ndarray,
    *,
    threshold: float = 1.01,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """R-hat over training windows (``rhat`` (window,), e.g. :func:`max_rhat` per window, or
    (window, k) for k lines), with the ``threshold`` line (1.01, Vehtari et al. 2021)."""
    steps = np.asarray(steps)
    rhat = np.asarray(rhat, dtype=np.float64).reshape(len(steps), -1)
    fig = _figure(7.0, 3.6)
    ax = fig.subplots()
    ax.plot(steps, rhat, "o-", ms=3)
    ax.axhline(threshold, color="r", ls="--", lw=1, label=f"R-hat = {threshold}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("environment step")
    ax.set_ylabel("R-hat")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "R-hat over time")
    return _finish(fig, path)


def plot_learning_curve(
    steps: np.ndarray,
    returns: np.ndarray,
    *,
    label: str | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Return over training, ``returns`` (seed, window): the median over seeds as a line and the
    interquartile range (25th-75th percentiles over seeds) as a band; ``label`` names the method."""
    steps = np.asarray(steps)
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim == 1:
        returns = returns[None]
    if returns.shape[-1] != len(steps):
        raise ValueError(f"returns must have shape (seed, {len(steps)}), got {returns.shape}")
    q25, median, q75 = np.nanpercentile(returns, [25, 50, 75], axis=0)
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    ax.fill_between(steps, q25, q75, color="C0", alpha=0.3, lw=0, label="IQR over seeds")
    prefix = f"{label}: " if label else ""
    ax.plot(steps, median, color="C0", lw=2, label=f"{prefix}median of {returns.shape[0]} seeds")
    ax.set_xlabel("environment step")
    ax.set_ylabel("return")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "learning curve")
    return _finish(fig, path)
