"""``lktd diagnose``: read a run folder back and report on its sampled Q-values (ArviZ
convergence diagnostics, selected entries, metrics against the exact truth, calibration, plots)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lktd_ppl.config import RunError, spec_from_folder
from lktd_ppl.run_folder import _fmt, _nanmean

_CONVERGENCE = [
    ("R-hat median", "r_hat", np.median, ".3f"),
    ("R-hat max", "r_hat", np.max, ".3f"),
    ("ESS bulk min", "ess_bulk", np.min, ".0f"),
    ("ESS bulk median", "ess_bulk", np.median, ".0f"),
    ("ESS tail min", "ess_tail", np.min, ".0f"),
    ("MCSE mean (median)", "mcse_mean", np.median, ".2e"),
]
# (header, summary column, format)
_ENTRY = [
    ("mean", "mean", ".4f"),
    ("sd", "sd", ".4f"),
    ("eti95 lo", "eti95_lb", ".4f"),
    ("eti95 hi", "eti95_ub", ".4f"),
    ("R-hat", "r_hat", ".3f"),
    ("ESS bulk", "ess_bulk", ".0f"),
    ("ESS tail", "ess_tail", ".0f"),
    ("MCSE mean", "mcse_mean", ".2e"),
]
# (header, interval_metrics key, format)
_AGAINST_TRUTH = [
    ("coverage", "coverage", ".4f"),
    ("equal-tailed", "coverage_equal_tailed", ".4f"),
    ("MSE", "mse", ".3e"),
    ("width", "width", ".4f"),
]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def diagnose(folder: str | Path, *, trace_cells: Sequence[tuple[int, int]] | None = None) -> str:
    """Read a run folder, write the diagnostic plots and tables into it, return the report.

    ``trace_cells``: the (cell, action) pairs of the trace plot and the "selected Q-values"
    table (default :func:`default_trace_cells`: start cell E and N, next to the exit E and W).
    """
    from lktd_ppl import diagnostics as dg

    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"run folder {str(folder)!r} does not exist")
    if not (folder / "samples.nc").is_file():
        if every_seed_diverged(folder):
            raise RunError(
                f"{str(folder)!r} has no samples.nc: every seed of the run diverged (see its "
                "summary.md); there are no finite draws to diagnose"
            )
        raise RunError(f"{str(folder / 'samples.nc')!r} does not exist: is it a run folder?")
    spec = spec_from_folder(folder)
    tree = dg.load_datatree(folder / "samples.nc")
    if spec.control is not None:
        return diagnose_control(folder, spec, tree)
    q = np.asarray(tree.posterior["q"].values)  # (chain, draw, cell, action)
    truth = np.asarray(tree["constant_data"][dg.TRUTH_VAR].values)
    mask = np.asarray(tree["constant_data"][dg.MASK_VAR].values, dtype=bool)
    size = int(tree.attrs.get("grid_size", spec.escape.size))
    members = int(tree.attrs.get("members_per_seed", 1))
    first_step = int(tree.attrs.get("first_draw_step", 0))
    draw_step = int(tree.attrs.get("draw_step", 0))
    names = [str(a) for a in tree.posterior["action"].values]
    n_chain, n_draw, cells, num_actions = q.shape
    seeds = n_chain // members
    if n_draw < 4:
        raise RunError(f"{str(folder)!r} holds only {n_draw} draws per chain; too few to diagnose")
    trace_cells = list(trace_cells or default_trace_cells(size, mask))

    # ArviZ summary of every scored entry: the mixing verdict first, then the tables
    table = dg.posterior_summary(tree, mask=mask)
    table.to_csv(folder / "diagnostics.csv")
    lines = [
        f"# Diagnostics: {spec.algo} on {spec.env} ({folder})",
        "",
        mixing_verdict(table, n_chain),
        *non_finite_lines(q, members, tree.attrs),
        "",
        f"{n_chain} chain(s) = {seeds} seed(s) x {members} member(s), {n_draw} draws each "
        f"(environment steps {first_step:,}..{first_step + (n_draw - 1) * draw_step:,}), "
        f"{int(mask.sum())} scored (cell, action) entries.",
    ]
    if n_chain < 2:
        lines.append(
            "R-hat needs at least 2 chains: train with --set num_chains=4 (LKTD family) or "
            "--seeds 2."
        )
    if seeds > 1:
        lines.append(
            "Chains of different seeds are independent runs (different replay data): R-hat "
            "across them also measures run-to-run agreement."
        )

    rows = convergence_rows(table, names)
    lines += ["", "## Convergence over scored entries (ArviZ)", ""]
    lines += _md_table(["action", "entries", *(h for h, *_ in _CONVERGENCE)], rows)

    rows = []
    for cell, action in trace_cells:
        x, y = divmod(cell, size)
        row = table.loc[(cell, names[action])] if (cell, names[action]) in table.index else None
        values = [_fmt(row[c], fm) if row is not None else "-" for _, c, fm in _ENTRY]
        rows.append([f"({x}, {y}) {names[action]}", _fmt(truth[cell, action], ".4f"), *values])
    lines += ["", "## Selected Q-values", ""]
    lines += _md_table(["cell (x, y) action", "truth", *(h for h, *_ in _ENTRY)], rows)

    # against the truth: per seed (its members pooled, the paper's coverage centred at each
    # member's last draw), then averaged over seeds
    by_seed = q.reshape(seeds, members, n_draw, cells, num_actions)
    per_seed = [
        dg.interval_metrics(s.reshape(-1, cells, num_actions), s[:, -1], truth, mask)
        for s in by_seed
    ]
    avg = {k: np.mean([m[k] for m in per_seed], axis=0) for k in per_seed[0]}
    rows = [
        [names[a]] + [_fmt(avg[k][a], fm) for _, k, fm in _AGAINST_TRUTH]
        for a in range(num_actions)
    ]
    rows.append(["avg"] + [_fmt(_nanmean(avg[k]), fm) for _, k, fm in _AGAINST_TRUTH])
    lines += ["", "## Against the exact truth (from these draws; per seed, mean over seeds)", ""]
    lines += _md_table(["action", *(h for h, *_ in _AGAINST_TRUTH)], rows)

    weights = mask.sum(axis=0)
    cal = avg["calibration"]  # (levels, A)
    pooled = np.nansum(cal * weights, axis=-1) / max(int(weights.sum()), 1)
    rows = [
        [f"{lv:.0%}", *(_fmt(c, ".4f") for c in cal[i]), _fmt(pooled[i], ".4f")]
        for i, lv in enumerate(dg.DEFAULT_LEVELS)
    ]
    lines += ["", "## Calibration (equal-tailed coverage at nominal level)", ""]
    lines += _md_table(["nominal", *names, "all"], rows)
    first = q[:members].reshape(-1, cells, num_actions)  # the first seed's draws, pooled
    pit = dg.pit_values(first, truth, mask)
    outside = np.mean((pit < 0.025) | (pit > 0.975))
    lines += [
        "",
        f"PIT of the truth under the first seed's draws: mean {pit.mean():.3f} (0.5 if "
        f"calibrated), share below 0.025 or above 0.975: {outside:.3f} (0.05 if calibrated).",
    ]

    # plots
    written = ["calibration.png", "trace.png", "interval_heatmaps.png"]
    first_seed = int(np.atleast_1d(tree.attrs.get("seeds", spec.first_seed))[0])  # kept seeds
    title = f"{spec.algo}, seed {first_seed}"
    dg.plot_calibration(first, truth, mask, title=title, path=folder / "calibration.png")
    dg.plot_trace(q, trace_cells, truth, size=size, path=folder / "trace.png")
    dg.plot_interval_heatmaps(
        first, truth, mask, size, title=f"95% intervals: {title}", path=folder / written[2]
    )
    if n_chain >= 2:
        ends, rhat = rhat_over_time(q, mask)
        dg.plot_rhat_over_time(
            first_step + (ends - 1) * draw_step,
            rhat,
            title=f"{spec.algo}: max R-hat over scored entries, draws up to each step",
            path=folder / "rhat_over_time.png",
        )
        written.append("rhat_over_time.png")
        lines += ["", "Max R-hat over scored entries, draws up to each point: "]
        lines[-1] += ", ".join(f"{r:.3f}" for r in rhat) + "."
    lines += ["", f"Wrote {', '.join(written)}, diagnostics.csv (ArviZ summary) and diagnose.md."]
    report = "\n".join(lines) + "\n"
    (folder / "diagnose.md").write_text(report)
    return report


RHAT_MAX = 1.01  # mixed: every entry's rank-normalised split R-hat below this
ESS_MIN = 400  # and its bulk and tail ESS at least this


def mixing_verdict(table: Any, n_chain: int) -> str:
    """The report's one-line verdict on mixing from the ArviZ summary ``table``: mixed when
    every entry's R-hat < 1.01 and bulk and tail ESS >= 400 (a non-finite value: not mixed).
    One chain gets the split R-hat of its two halves, labelled so."""
    worst = float(np.max(table["r_hat"].to_numpy()))
    bulk = float(np.min(table["ess_bulk"].to_numpy()))
    tail = float(np.min(table["ess_tail"].to_numpy()))
    mixed = worst < RHAT_MAX and bulk >= ESS_MIN and tail >= ESS_MIN
    label = "split R-hat within one chain" if n_chain < 2 else "rank-normalised split R-hat"
    return (
        f"Mixing ({label}): {'mixed' if mixed else 'not mixed'} (max R-hat {worst:.3f}, wanted "
        f"< {RHAT_MAX}; min bulk ESS {bulk:.0f}, min tail ESS {tail:.0f}, wanted >= {ESS_MIN}). "
        "This is about mixing, not calibration."
    )


def non_finite_lines(q: np.ndarray, members: int, attrs: Any) -> list[str]:
    """Lines that flag non-finite draws (by chain) and seeds left out because they diverged."""
    lines = []
    bad = ~np.isfinite(q)
    if bad.any():
        chains = np.flatnonzero(bad.reshape(q.shape[0], -1).any(axis=1))
        lines.append(
            f"Non-finite draws: {int(bad.sum())} of {bad.size} Q-values, in chain(s) "
            f"{', '.join(str(c) for c in chains)} (seed-major, {members} member(s) per seed): "
            "the run diverged; its R-hat, ESS and intervals are not meaningful."
        )
    if "diverged_seeds" in attrs:
        gone = ", ".join(str(s) for s in np.atleast_1d(attrs["diverged_seeds"]))
        lines.append(f"Seed(s) {gone} diverged and are left out of samples.nc (see summary.md).")
    return lines


def every_seed_diverged(folder: Path) -> bool:
    """Whether ``folder``'s metrics.csv marks every seed diverged (its last rows)."""
    from lktd_ppl.run_folder import read_metrics

    try:
        cols = read_metrics(folder)
    except RunError:
        return False
    if "diverged" not in cols:
        return False
    last = cols["step"] == cols["step"].max()
    return bool(np.all(cols["diverged"][last] == 1))


def convergence_rows(table: Any, names: Sequence[str]) -> list[list[str]]:
    """One row per action and one for all: entries, then the ``_CONVERGENCE`` columns."""
    actions = table.index.get_level_values("action").astype(str)
    rows = []
    for label in [*names, "all"]:
        t = table if label == "all" else table[actions == label]
        if len(t):
            rows.append([label, str(len(t))] + [_fmt(f(t[c]), fm) for _, c, f, fm in _CONVERGENCE])
    return rows


def diagnose_control(folder: Path, spec: Any, tree: Any) -> str:
    """The report on a control-task run: no exact truth, so convergence (ArviZ, over the draws
    of the second half of the evaluations) and interval widths at the run's probe states, and
    how far the seeds' posterior means lie apart against those widths."""
    from lktd_ppl import diagnostics as dg

    q = np.asarray(tree.posterior["q"].values)  # (chain, draw = evaluation, probe, action)
    members = int(tree.attrs.get("members_per_seed", 1))
    names = [str(a) for a in tree.posterior["action"].values]
    n_chain, n_draw, probes, num_actions = q.shape
    seeds = n_chain // members
    kept = q[:, n_draw // 2 :]  # the first half of the evaluations is burn-in
    if kept.shape[1] < 4:
        raise RunError(
            f"{str(folder)!r} holds {n_draw} evaluations per chain; at least 8 are needed "
            "(4 after the burn-in half): lower control.eval_every"
        )
    every = spec.control.eval_every
    table = dg.posterior_summary(kept, mask=np.ones((probes, num_actions), bool))
    table.to_csv(folder / "diagnostics.csv")
    lines = [
        f"# Diagnostics: {spec.algo} on {spec.env} ({folder})",
        "",
        mixing_verdict(table, n_chain),
        *non_finite_lines(q, members, tree.attrs),
        "",
        f"{n_chain} chain(s) = {seeds} seed(s) x {members} member(s); Q at {probes} probe "
        f"states (early observations of each seed's run), one draw per evaluation "
        f"(every {every:,} steps); the last {kept.shape[1]} of {n_draw} draws are used (the "
        "first half is burn-in). A control task has no exact truth: this report is about "
        "mixing and spread, not calibration.",
    ]
    rows = convergence_rows(table, names)
    lines += [
        "",
        "## Convergence over probe entries (ArviZ)",
        "",
    ]
    lines += _md_table(["action", "entries", *(h for h, *_ in _CONVERGENCE)], rows)
    by_seed = kept.reshape(seeds, members * kept.shape[1], probes, num_actions)
    lo, hi = np.quantile(by_seed, [0.025, 0.975], axis=1)  # (seeds, probes, A)
    width = (hi - lo).mean(axis=(0, 1))
    means = by_seed.mean(axis=1)  # (seeds, probes, A)
    spread = means.std(axis=0, ddof=1).mean(axis=0) if seeds > 1 else np.full(num_actions, np.nan)
    rows = [
        [names[a], _fmt(means[..., a].mean(), ".3f"), _fmt(width[a], ".3f"), _fmt(spread[a], ".3f")]
        for a in range(num_actions)
    ]
    lines += ["", "## Posterior Q at the probe states (per seed, then averaged)", ""]
    lines += _md_table(["action", "mean Q", "95% interval width", "sd of seeds' means"], rows)
    lines += [
        "",
        "Width: each seed's equal-tailed 95% interval over its members' draws; the seeds' "
        "means are independent runs on different data, so their spread beside the width shows "
        "how much of the run-to-run variation the intervals hold.",
        "",
        "Wrote diagnostics.csv (ArviZ summary) and diagnose.md.",
    ]
    report = "\n".join(lines) + "\n"
    (folder / "diagnose.md").write_text(report)
    return report


def default_trace_cells(size: int, mask: np.ndarray) -> list[tuple[int, int]]:
    """Start cell E and N, then the cells next to the exit: (size-2, size-1) E and W."""
    from lktd_ppl.envs.escape import START_CELL

    cells = [(START_CELL, 0), (START_CELL, 1)]
    near_exit = (size - 2) * size + (size - 1)
    cells += [(near_exit, 0), (near_exit, 2)]
    return [(c, a) for c, a in cells if c < mask.shape[0] and mask[c, a]]


def rhat_over_time(q: np.ndarray, mask: np.ndarray, points: int = 10) -> tuple[np.ndarray, Any]:
    """Max R-hat over the scored entries of the first ``k`` draws, at ``points`` values of k."""
    from lktd_ppl.diagnostics import max_rhat

    n = q.shape[1]
    ends = np.unique(np.linspace(max(4, n // points), n, points).astype(int))
    return ends, np.array([max_rhat(q[:, :k], mask) for k in ends])
