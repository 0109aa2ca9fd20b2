"""The study's plots (PNG): coverage and MSE per action of every row (``boxplots.png``), coverage
over the run (``coverage_over_time.png``), the calibration curves (``calibration.png``, and per
action for the rows nearest calibrated, ``calibration_per_action.png``) and the headline's mean
policy (``policy_quiver.png``).

They read a row's data as :mod:`lktd_ppl.study.data` loads it: the last windows per run, the
action-averaged coverage curves over every window (``curve_*``), the policy frequencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lktd_ppl.names import LEVELS
from lktd_ppl.study.aggregate import ACTIONS, LAST_WINDOWS, calibration_gap, nearest_calibrated

HEADLINE_POLICY = "lktd_N10000_m10"  # the row whose mean policy the quiver plot shows


def labelled_rows(names: list[str], summaries: dict, explore: int = 3) -> list[str]:
    """The rows a plot names: every row but the ``explore_*`` knobs, and of those the
    ``explore`` nearest to calibrated (the rest are drawn grey, unnamed, so that the legend of
    sixty-odd rows does not bury the axes)."""
    knobs = [n for n in names if n.startswith("explore")]
    nearest = sorted(knobs, key=lambda n: calibration_gap(summaries[n]))[:explore]
    return [n for n in names if n not in knobs or n in nearest]


def plots(all_data: dict, summaries: dict, out: Path) -> None:
    """Every plot of the study into ``out`` (rows in ``all_data``'s order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(all_data)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharey="row")
    for row, (fam, key) in enumerate([("coverage", "w_coverage"), ("MSE", "w_mse")]):
        for a, ax in enumerate(axes[row]):
            vals = [all_data[n][key][:, -LAST_WINDOWS:, a].ravel() for n in names]
            ax.boxplot(vals, showfliers=False)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=70, fontsize=7)
            ax.set_title(f"{fam}, action {ACTIONS[a]}")
            if fam == "MSE":
                ax.set_yscale("log")
            else:
                ax.axhline(0.95, color="k", ls=":", lw=1)
    fig.tight_layout()
    fig.savefig(out / "boxplots.png", dpi=90)
    plt.close(fig)

    named = labelled_rows(names, summaries)
    colour = dict(zip(named, plt.cm.tab20(np.linspace(0, 1, len(named))), strict=True))
    grey = dict(color="0.8", lw=0.6, zorder=1)
    outside = dict(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    outside |= dict(title="grey: other knobs", title_fontsize=6)
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.5), layout="constrained")
    for n in names:
        d = all_data[n]
        style = dict(label=n, color=colour[n], lw=1.2, zorder=2) if n in named else grey
        for ax, key in zip(axes, ("curve_coverage", "curve_coverage_equal_tailed"), strict=True):
            ax.plot(d["window_steps"], np.nanmedian(d[key], 0), **style)
    for ax, t in zip(
        axes, ["paper's coverage (median over runs)", "equal-tailed coverage"], strict=True
    ):
        ax.axhline(0.95, color="k", ls=":", lw=1)
        ax.set_title(t)
        ax.set_xlabel("env step")
    axes[1].legend(**outside)
    fig.savefig(out / "coverage_over_time.png", dpi=90)
    plt.close(fig)

    from lktd_ppl.diagnostics import plot_policy_quiver

    head = HEADLINE_POLICY if HEADLINE_POLICY in all_data else names[0]
    freq = np.mean(all_data[head]["policy_frequency"], axis=0)
    plot_policy_quiver(freq, 10, path=out / "policy_quiver.png")

    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    levels = np.array(LEVELS)
    for n in names:
        style = dict(label=n, color=colour[n], marker="o", lw=1.2, zorder=2) if n in named else grey
        ax.plot(levels, np.nanmean(summaries[n]["calibration"], -1), **style)
    ax.plot([0.45, 1], [0.45, 1], "k:", lw=1)
    ax.set_xlabel("nominal level")
    ax.set_ylabel("equal-tailed coverage (mean over actions)")
    ax.legend(**outside)
    fig.savefig(out / "calibration.png", dpi=90)
    plt.close(fig)
    plot_calibration_per_action(summaries, nearest_calibrated(summaries), out, plt)


def plot_calibration_per_action(summaries: dict, names: list[str], out: Path, plt) -> None:
    """The calibration curve of each named row per action, with +-1 s.e. across runs and the
    target's band (the diagonal +-0.05): the mean over actions can hide a gap on one action."""
    levels = np.array(LEVELS)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), sharey=True, layout="constrained")
    for a, ax in enumerate(axes):
        ax.fill_between([0.45, 1], [0.40, 0.95], [0.50, 1.05], color="0.9", label="diagonal +-0.05")
        ax.plot([0.45, 1], [0.45, 1], "k:", lw=1)
        for i, n in enumerate(names):
            s = summaries[n]
            shift = (i - (len(names) - 1) / 2) * 0.006  # keep the error bars apart
            label = f"{n} ({s['runs']} runs)"
            se = s.get("calibration_se", np.full_like(s["calibration"], np.nan))[:, a]
            ax.errorbar(
                levels + shift, s["calibration"][:, a], yerr=se, marker="o", capsize=3, label=label
            )
        ax.set_title(f"action {ACTIONS[a]}")
        ax.set_xlabel("nominal level")
    axes[0].set_ylabel("equal-tailed coverage (mean over runs, +-1 s.e.)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.savefig(out / "calibration_per_action.png", dpi=90)
    plt.close(fig)
