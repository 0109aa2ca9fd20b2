"""Diagnostics and plots of sampled Q-posteriors (spec section 4), on plain NumPy arrays.

Everything here takes NumPy arrays, so it does not care how an agent produced its samples.
Shapes (grid environments; cell index ``x * size + y``, actions ``0 E, 1 N, 2 W, 3 S``):

- ``q``: Q-posterior samples by chain, ``(chain, draw, cell, action)``;
- ``samples``: pooled samples, ``(S, cell, action)`` (e.g. ``q.reshape(-1, cells, actions)``);
- ``latest``: the most recent sample, ``(cell, action)``, or one per chain ``(m, cell, action)``;
- ``truth``: ground-truth Q, ``(cell, action)``, NaN where none exists;
- ``mask``: bool ``(cell, action)``, the entries that are scored (``evaluation_mask(size)``).

Contents (one module each; every public name is importable from ``lktd_ppl.diagnostics``):

- ArviZ export (:mod:`.export`): :func:`q_samples_to_datatree`, :func:`save_datatree` / :func:`load_datatree`,
  :func:`posterior_summary` (R-hat, ESS, MCSE, mean, sd, 95% equal-tailed interval),
  :func:`max_rhat`.
- The spec's metrics, in NumPy, as the reference the jitted JAX version is tested against
  (:mod:`.reference`):
  :func:`interval_metrics`, :func:`start_cell_metrics`, plus :func:`pit_values`,
  :func:`pit_calibration` and :func:`greedy_policy_probs`.
- Plots (:mod:`.plots`; matplotlib ``Figure`` objects built without pyplot, so no GUI backend is touched; each
  saves a PNG when given ``path``): :func:`plot_calibration`, :func:`plot_interval_heatmaps`,
  :func:`plot_policy_quiver`, :func:`plot_coverage_over_time`, :func:`plot_trace`,
  :func:`plot_rhat_over_time`, :func:`plot_learning_curve`.

- ``lktd diagnose`` (:mod:`.report`): :func:`diagnose` reads a run folder back and reports.

ArviZ, xarray and matplotlib are imported inside the functions that need them, so importing this
package stays cheap.
"""

from __future__ import annotations

from lktd_ppl.diagnostics.export import (
    MASK_VAR,
    TRUTH_VAR,
    load_datatree,
    max_rhat,
    posterior_summary,
    q_samples_to_datatree,
    save_datatree,
)
from lktd_ppl.diagnostics.plots import (
    plot_calibration,
    plot_coverage_over_time,
    plot_interval_heatmaps,
    plot_learning_curve,
    plot_policy_quiver,
    plot_rhat_over_time,
    plot_trace,
)
from lktd_ppl.diagnostics.reference import (
    DEFAULT_LEVELS,
    greedy_policy_probs,
    interval_metrics,
    paper_coverage_if_calibrated,
    pit_calibration,
    pit_values,
    start_cell_metrics,
)
from lktd_ppl.diagnostics.report import diagnose

__all__ = [
    "DEFAULT_LEVELS",
    "MASK_VAR",
    "TRUTH_VAR",
    "diagnose",
    "greedy_policy_probs",
    "interval_metrics",
    "load_datatree",
    "max_rhat",
    "paper_coverage_if_calibrated",
    "pit_calibration",
    "pit_values",
    "plot_calibration",
    "plot_coverage_over_time",
    "plot_interval_heatmaps",
    "plot_learning_curve",
    "plot_policy_quiver",
    "plot_rhat_over_time",
    "plot_trace",
    "posterior_summary",
    "q_samples_to_datatree",
    "save_datatree",
    "start_cell_metrics",
]
