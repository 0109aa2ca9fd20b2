"""ArviZ export of sampled Q-values: a DataTree with dims (chain, draw, cell, action), the truth
and the scored-entry mask in ``constant_data``; netCDF save/load; ArviZ's summary and R-hat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lktd_ppl.diagnostics.reference import _check_grid
from lktd_ppl.names import ACTION_NAMES

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

TRUTH_VAR = "q_true"
"""Name of the ground truth in the ``constant_data`` group."""

MASK_VAR = "mask"
"""Name of the scored-entry mask in the ``constant_data`` group."""


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

    from lktd_ppl.settings import RunError

    try:
        with xr.open_datatree(Path(path), engine="h5netcdf") as tree:
            return tree.load()
    except (OSError, ValueError) as err:  # not HDF5/NetCDF, truncated, or not a DataTree
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RunError(f"{str(path)!r} cannot be read as a NetCDF DataTree ({first})") from None


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
