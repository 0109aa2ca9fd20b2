"""Diagnostics and plots of sampled Q-posteriors (spec section 4), on plain NumPy arrays.

Everything here takes NumPy arrays, so it does not care how an agent produced its samples.
Shapes (grid environments; cell index ``x * size + y``, actions ``0 E, 1 N, 2 W, 3 S``):

- ``q``: Q-posterior samples by chain, ``(chain, draw, cell, action)``;
- ``samples``: pooled samples, ``(S, cell, action)`` (e.g. ``q.reshape(-1, cells, actions)``);
- ``latest``: the most recent sample, ``(cell, action)``, or one per chain ``(m, cell, action)``;
- ``truth``: ground-truth Q, ``(cell, action)``, NaN where none exists;
- ``mask``: bool ``(cell, action)``, the entries that are scored (``evaluation_mask(size)``).

Contents:

- ArviZ export: :func:`q_samples_to_datatree`, :func:`save_datatree` / :func:`load_datatree`,
  :func:`posterior_summary` (R-hat, ESS, MCSE, mean, sd, 95% equal-tailed interval),
  :func:`max_rhat`.
- The spec's metrics, in NumPy, as the reference the jitted JAX version is tested against:
  :func:`interval_metrics`, :func:`start_cell_metrics`, plus :func:`pit_values`,
  :func:`pit_calibration` and :func:`greedy_policy_probs`.
- Plots (matplotlib ``Figure`` objects built without pyplot, so no GUI backend is touched; each
  saves a PNG when given ``path``): :func:`plot_calibration`, :func:`plot_interval_heatmaps`,
  :func:`plot_policy_quiver`, :func:`plot_coverage_over_time`, :func:`plot_trace`,
  :func:`plot_rhat_over_time`, :func:`plot_learning_curve`.

ArviZ, xarray and matplotlib are imported inside the functions that need them, so importing this
module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lktd_ppl.envs.escape import ACTION_DELTAS, ACTION_NAMES, START_CELL

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
"""Nominal levels of the calibration curve (spec section 4)."""

TRUTH_VAR = "q_true"
"""Name of the ground truth in the ``constant_data`` group."""

MASK_VAR = "mask"
"""Name of the scored-entry mask in the ``constant_data`` group."""


# --------------------------------------------------------------------------------------------
# ArviZ DataTree export
# --------------------------------------------------------------------------------------------


def _action_names(n_actions: int, action_names: Sequence[str] | None) -> list[str] | np.ndarray:
    if action_names is not None:
        if len(action_names) != n_actions:
            raise ValueError(f"{len(action_names)} action names given for {n_actions} actions")
        return list(action_names)
    if n_actions == len(ACTION_NAMES):
        return list(ACTION_NAMES)
    return np.arange(n_actions)


def q_samples_to_datatree(
    q: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    params: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
    action_names: Sequence[str] | None = None,
) -> xr.DataTree:
    """ArviZ DataTree of Q-posterior samples ``q`` (chain, draw, cell, action).

    Groups:

    - ``posterior``: ``q`` with dims ``(chain, draw, cell, action)``, coords ``cell`` = integer
      index and ``action`` = ``["E", "N", "W", "S"]`` (for 4 actions; integers otherwise, or
      ``action_names``), plus every entry of ``params`` (name -> ``(chain, draw, ...)`` array;
      its other dims are named ``{name}_dim_{i}`` by ArviZ).
    - ``constant_data`` (only when ``truth`` or ``mask`` is given): ``q_true`` and ``mask``, both
      ``(cell, action)``; ``mask`` defaults to ``isfinite(truth)``. The truth is a known reference
      value, not data the model conditions on, so it is not ``observed_data`` (ArviZ's
      posterior-predictive tools would read ``observed_data`` as the observations ``y``).

    ``attrs`` become attributes of the root node (keep them netCDF-friendly: numbers, strings,
    lists of them).
    """
    import arviz_base as azb

    q = np.asarray(q)
    if q.ndim != 4:
        raise ValueError(f"q must have shape (chain, draw, cell, action), got shape {q.shape}")
    n_chain, n_draw, n_cell, n_action = q.shape
    coords: dict[str, Any] = {
        "cell": np.arange(n_cell),
        "action": _action_names(n_action, action_names),
    }
    posterior: dict[str, np.ndarray] = {"q": q}
    dims: dict[str, list[str]] = {"q": ["cell", "action"]}
    for name, value in (params or {}).items():
        if name == "q":
            raise ValueError("params may not contain a variable named 'q'")
        value = np.asarray(value)
        if value.shape[:2] != (n_chain, n_draw):
            raise ValueError(
                f"params[{name!r}] must start with (chain, draw) = {(n_chain, n_draw)}, "
                f"got shape {value.shape}"
            )
        posterior[name] = value
    data: dict[str, dict[str, np.ndarray]] = {"posterior": posterior}
    if truth is not None or mask is not None:
        constant: dict[str, np.ndarray] = {}
        if truth is not None:
            truth = np.asarray(truth, dtype=np.float64)
            _check_grid("truth", truth, (n_cell, n_action))
            constant[TRUTH_VAR] = truth
            dims[TRUTH_VAR] = ["cell", "action"]
            if mask is None:
                mask = np.isfinite(truth)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            _check_grid("mask", mask, (n_cell, n_action))
            constant[MASK_VAR] = mask
            dims[MASK_VAR] = ["cell", "action"]
        data["constant_data"] = constant
    tree_attrs = {"/": dict(attrs)} if attrs else None
    return azb.from_dict(data, coords=coords, dims=dims, attrs=tree_attrs)


def save_datatree(tree: xr.DataTree, path: str | Path) -> Path:
    """Write ``tree`` to one netCDF-4 file (HDF5 groups, engine ``h5netcdf``); returns the path.

    Needs ``h5py`` (h5netcdf's writing backend) installed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        encoding = {  # zlib-compressed variables: Q samples compress about 2x
            node.path: {name: {"zlib": True, "complevel": 4} for name in node.data_vars}
            for node in tree.subtree
            if node.data_vars
        }
        tree.to_netcdf(path, engine="h5netcdf", encoding=encoding)
    except ImportError as err:  # h5netcdf >= 1.7 no longer pulls in h5py by itself
        raise ImportError(
            f"writing {path} needs h5py (the HDF5 backend of h5netcdf): pip install h5py ({err})"
        ) from err
    return path


def load_datatree(path: str | Path) -> xr.DataTree:
    """Read a DataTree written by :func:`save_datatree` fully into memory (the file is closed)."""
    import xarray as xr

    with xr.open_datatree(Path(path), engine="h5netcdf") as tree:
        return tree.load()


def posterior_summary(
    tree: xr.DataTree | np.ndarray,
    var: str = "q",
    *,
    mask: np.ndarray | None = None,
    ci_prob: float = 0.95,
) -> pd.DataFrame:
    """ArviZ summary of ``var`` in the posterior: one row per (cell, action).

    Columns (raw numbers, no rounding): ``mean, sd, eti95_lb, eti95_ub`` (equal-tailed interval,
    NumPy-linear quantiles ``(1 -/+ ci_prob) / 2``), ``ess_bulk, ess_tail, r_hat`` (rank-normalised
    split R-hat), ``mcse_mean, mcse_sd``. The index is a (cell, action) MultiIndex (the variable's
    own dims for other variables). Rows where ``mask`` is False are dropped; ``mask`` defaults to
    ``constant_data/mask`` when the tree has one and ``var`` has dims (cell, action). An array
    ``(chain, draw, cell, action)`` is accepted in place of a tree.
    """
    import arviz_stats as azs

    if isinstance(tree, np.ndarray):
        tree = q_samples_to_datatree(tree)
    table = azs.summary(
        tree, var_names=[var], fmt="xarray", round_to="none", ci_kind="eti", ci_prob=ci_prob
    )[var]
    grid_dims = ("cell", "action")
    if mask is None and set(grid_dims) <= set(table.dims) and "constant_data" in tree.children:
        constant = tree["constant_data"]
        if MASK_VAR in constant.data_vars:
            mask = constant[MASK_VAR].values
    if table.ndim == 1:  # a scalar variable
        frame = table.to_pandas().to_frame(var).T
    else:
        frame = table.to_dataset(dim="summary").to_dataframe()
    if mask is not None:
        if not set(grid_dims) <= set(table.dims):
            raise ValueError(f"mask needs a variable with dims {grid_dims}; {var} has {table.dims}")
        keep = table.isel(summary=0).copy(data=np.asarray(mask, dtype=bool)).to_series()
        frame = frame[keep.reindex(frame.index).to_numpy()]
    frame.columns.name = None
    return frame


def max_rhat(q: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Largest rank-normalised split R-hat (arviz_stats) over the (cell, action) entries of
    ``q`` (chain, draw, cell, action) where ``mask`` is True. NaN with fewer than 2 chains."""
    import arviz_stats as azs

    q = np.asarray(q)
    if q.ndim != 4:
        raise ValueError(f"q must have shape (chain, draw, cell, action), got shape {q.shape}")
    r = np.asarray(azs.rhat(q, chain_axis=0, draw_axis=1))
    if mask is not None:
        r = r[np.asarray(mask, dtype=bool)]
    return float(np.max(r)) if r.size else float("nan")


# --------------------------------------------------------------------------------------------
# Metrics against the truth (NumPy reference)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


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
