"""Would intervals calibrated in every run also land outside the targets on a batch of seeds?
(issue 5, calibrated row)

The calibrated row's verdict moves with the batch of seeds (held-out batches of 18 and 32 seeds
fell under and over the band) because its runs' coverage is long-tailed. Two things make it so,
and only one is a fault of the intervals:

- the width does not follow the run's own error (a run that errs twice as much gets the same
  width): a scale mismatch per run, which calibrated intervals would not have;
- the errors of one run are correlated over the grid (a network's error is a smooth field, a few
  modes), so that even a run whose error is one draw from its own posterior covers 70% or 100% of
  its cells by luck, and a batch of seeds inherits that spread.

This script tells them apart on runs that kept their last window per cell (the study's ``c_*``
arrays, ``lktd_ppl.metrics.final_cells``). Per run it standardises the pooled mean's error at
every legal (cell, action) by the 95% interval's Gaussian sd (half-width / 1.96): ``z``. Its
run-level scale ``k`` = RMS of ``z`` is the run's RMSE / (width / 3.92). It reports

- the field the runs share (their mean ``z``: calibrated runs share none) and how much of the
  mean error the runs' own acting explains (``behaviour_q``: on-policy SARSA learns the Q of the
  policy it acts by, which is not the spec's truth);
- the number of independent modes of the error over the grid, ``n_eff = n^2 / E[(u_i . u_j)^2]``
  over pairs of runs i != j of the fields ``u`` scaled to unit mean square (unbiased for any
  number of runs);
- two calibrated nulls, runs whose error is a draw from their own intervals' Gaussian by
  construction: A with the measured fields' correlation over the grid, shared field included (as
  if it were luck), B with the shared field taken out (as if its cause were corrected);
- for the measured runs and both nulls: the spread of ``k``, the per-run coverage, and how often
  a batch of 20/32/50/100 runs meets the calibrated targets (Gaussian intervals everywhere, five
  identical windows a run, MSE set to pass).

    .venv/bin/python experiments/archive/error_correlation.py ROW [--from-seed S] [--out FILE.md]

Archived: a one-off tool of the calibration search (experiments/archive/README.md).  The committed study keeps
no per-cell fields (``c_*``): rerun the row's seeds into a folder of their own, which keeps its
per-seed files, and point ``--results`` at it, e.g.

    .venv/bin/python experiments/escape_study.py --configs ROW --seeds 150 --workers 2 \
        --out /tmp/cells --no-aggregate
    .venv/bin/python experiments/archive/error_correlation.py ROW --from-seed 100 --results /tmp/cells
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

from lktd_ppl.envs.escape import evaluation_mask, exit_cell
from lktd_ppl.envs.truth import q_epsilon_greedy_of
from lktd_ppl.metrics import LEVELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import DEFAULT_OUT, REPORTS, write_report  # noqa: E402

from lktd_ppl.study.aggregate import (
    ACTIONS,
    LAST_WINDOWS,
    aggregate,
    calibrated_verdict,
    take_runs,
)

Z = {lv: NormalDist().inv_cdf((1 + lv) / 2) for lv in LEVELS}  # two-sided Gaussian quantiles
BATCHES = (20, 32, 50, 100)


def load_cells(results: Path, row: str, from_seed: int = 0) -> dict[str, np.ndarray]:
    """The per-cell last windows of a row's runs that kept them (seed >= ``from_seed``)."""
    parts = []
    for f in sorted((results / "runs" / row).glob("seeds_*.npz")):
        with np.load(f) as d:
            if "c_mean" in d.files and int(d["seeds"][0]) >= from_seed:
                keys = ("seeds", "c_mean", "c_chain_mean", "c_quantiles", "c_truth")
                parts.append({k: d[k] for k in keys})
                mask = d["c_mask"][0]
    if not parts:
        raise SystemExit(f"error_correlation: no run of {row!r} kept its cells (c_* arrays)")
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    escape = json.loads((results / "runs" / row / "config.json").read_text())["escape"]
    return dict(
        seeds=data["seeds"],
        mean=data["c_mean"],
        chain_mean=data["c_chain_mean"],
        gamma=escape["gamma"],
        epsilon=escape["truth_epsilon"],
        quantiles=data["c_quantiles"],
        truth=data["c_truth"][0],
        mask=mask,
    )


def standardized_errors(cells: dict) -> tuple[np.ndarray, np.ndarray]:
    """(z (runs, n): each run's pooled-mean error over its 95% interval's Gaussian sd at the n
    legal entries, the action of each entry (n,))."""
    q = cells["quantiles"]
    sd = (q[:, -1] - q[:, 0]) / (2 * Z[0.95])
    z = (cells["mean"] - cells["truth"]) / sd
    mask = cells["mask"]
    actions = np.broadcast_to(np.arange(mask.shape[1]), mask.shape)[mask]
    return z[:, mask], actions


def run_scale(z: np.ndarray) -> np.ndarray:
    """k per run: the RMS of its standardised errors (its RMSE over width / 3.92)."""
    return np.sqrt(np.mean(z**2, axis=1))


def effective_modes(u: np.ndarray) -> float:
    """n^2 / E[(u_i . u_j)^2] over pairs of runs i != j, for fields ``u`` (runs, n) scaled to
    unit mean square: ``n`` for independent entries, ``m`` for a field of m equal independent
    modes. The pair average is unbiased for tr(C^2), so few runs do not shrink the estimate."""
    u = u / np.sqrt(np.mean(u**2, axis=1, keepdims=True))
    n = u.shape[1]
    dots = u @ u.T
    off = dots[~np.eye(len(u), dtype=bool)]
    return float(n**2 / np.mean(off**2))


def calibrated_null(u: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` fields (count, n) with the correlation of the runs' shapes ``u`` (runs, n)
    (their second moment, made unit at every entry): runs whose error is a draw from their own
    intervals' Gaussian, correlated over the grid as the measured runs' errors are."""
    u = u / np.sqrt(np.mean(u**2, axis=1, keepdims=True))
    u = u / np.sqrt(np.mean(u**2, axis=0, keepdims=True))
    return rng.standard_normal((count, len(u))) @ u / np.sqrt(len(u))


def per_run_coverage(z: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(runs, levels, A): the fraction of each action's entries inside the Gaussian interval at
    each level of ``LEVELS``."""
    inside = np.stack([np.abs(z) < Z[lv] for lv in LEVELS], axis=1)  # (runs, L, n)
    return np.stack([inside[..., actions == a].mean(-1) for a in np.unique(actions)], axis=-1)


def as_study_runs(coverage: np.ndarray) -> dict[str, np.ndarray]:
    """Runs in the study's layout (every run's last windows alike; MSE 0, so that only the
    coverage targets decide) for ``lktd_ppl.study.aggregate.aggregate``."""
    runs, _, actions = coverage.shape
    windows = np.repeat(coverage[:, None], LAST_WINDOWS, axis=1)  # (runs, W, L, A)
    zeros = np.zeros((runs, LAST_WINDOWS, actions))
    data = {f"w_{k}": zeros for k in ("coverage", "width", "start_sq_error", "mse")}
    data |= {f"w_start_{k}": zeros for k in ("coverage", "coverage_equal_tailed")}
    data["w_calibration"] = windows
    data["w_coverage_equal_tailed"] = windows[:, :, LEVELS.index(0.95)]
    data["seeds"] = np.arange(runs)
    return data


def batch_odds(
    coverage: np.ndarray, runs: int, draws: int, rng: np.random.Generator
) -> dict[str, float]:
    """How often ``runs`` runs drawn with replacement from ``coverage`` (runs, L, A) meet the
    band and the gap (``calibrated_verdict``), and the median of the band's reading
    (the trimmed mean of the equal-tailed 95% coverage, averaged over the actions)."""
    data = as_study_runs(coverage)
    n = len(coverage)
    hits = {"equal_tailed": 0, "gap": 0, "both": 0}
    readings = []
    for _ in range(draws):
        summary = aggregate(take_runs(data, rng.integers(0, n, runs)))
        v = calibrated_verdict(summary)
        readings.append(float(np.mean(summary["coverage_equal_tailed"]["mean"])))
        hits["equal_tailed"] += v["equal_tailed"]
        hits["gap"] += v["gap"]
        hits["both"] += v["equal_tailed"] and v["gap"]
    return {k: h / draws for k, h in hits.items()} | {"reading": float(np.median(readings))}


def spread_test(
    z: np.ndarray, null: np.ndarray, rng: np.random.Generator, sets: int = 2000
) -> tuple[float, float, float]:
    """(sd of log k over the measured runs, its median over sets of as many null runs, the
    fraction of those sets whose sd is at least the measured one: a p-value for "the widths
    follow the errors as well as calibrated intervals would")."""
    measured = float(np.std(np.log(run_scale(z)), ddof=1))
    k_null = np.log(run_scale(null))
    sims = np.array(
        [np.std(k_null[rng.integers(0, len(k_null), len(z))], ddof=1) for _ in range(sets)]
    )
    return measured, float(np.median(sims)), float(np.mean(sims >= measured))


def behaviour_q(chain_mean: np.ndarray, gamma: float, epsilon: float) -> np.ndarray:
    """Exact Q (cells, A) of the policy a run acts by at its end, averaged over its chains: each
    chain epsilon-greedy on its own mean Q-grid over the legal actions (Thompson sampling draws
    one chain an episode). On-policy SARSA learns this, not the spec's truth (the epsilon-greedy
    policy of the optimal actions), so ``behaviour_q - truth`` is the part of a run's error its
    own acting explains."""
    cells, _, members = chain_mean.shape
    size = int(round(np.sqrt(cells)))
    legal = evaluation_mask(size)
    out = []
    for i in range(members):
        actions = np.where(legal, chain_mean[..., i], -np.inf).argmax(axis=1)
        actions[exit_cell(size)] = -1
        out.append(q_epsilon_greedy_of(actions, size, gamma, epsilon))
    return np.mean(out, axis=0)


def systematic_share(z: np.ndarray) -> float:
    """The share of the runs' mean squared standardised error that is the field they share (the
    mean over runs): 0 when every run errs its own way, 1 when all err alike."""
    return float(np.sum(z.mean(axis=0) ** 2) / np.mean(np.sum(z**2, axis=1)))


def report(row: str, cells: dict, draws: int = 1000, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    z, actions = standardized_errors(cells)
    k = run_scale(z)
    shared = z.mean(axis=0)
    own = z - shared  # each run's error with the runs' shared field taken out
    nulls = {
        "null A": calibrated_null(z / k[:, None], 4000, rng),
        "null B": calibrated_null(own / run_scale(own)[:, None], 4000, rng),
    }
    cov = {"measured": per_run_coverage(z, actions)}
    cov |= {name: per_run_coverage(f, actions) for name, f in nulls.items()}
    scale = {"measured": k} | {name: run_scale(f) for name, f in nulls.items()}
    i95 = LEVELS.index(0.95)
    sd_m, sd_n, p = spread_test(z, nulls["null A"], rng)
    seeds, mask = cells["seeds"], cells["mask"]
    err = (cells["mean"] - cells["truth"])[:, mask]
    behaviour = np.stack(
        [
            (behaviour_q(c, cells["gamma"], cells["epsilon"]) - cells["truth"])[mask]
            for c in cells["chain_mean"]
        ]
    )

    def q(x) -> str:
        return "/".join(f"{v:.2f}" for v in np.percentile(x, [10, 50, 90]))

    def three(f) -> str:
        return ", ".join(f"{name} {f(name)}" for name in cov)

    lines = [
        f"# {row}: are the runs' misses what calibrated intervals would give?",
        "",
        f"Runs: seeds {seeds.min()}-{seeds.max()} ({len(seeds)} runs that kept their last window "
        f"per cell); {z.shape[1]} legal (cell, action) entries per run; z = the pooled mean's "
        "error over the 95% interval's Gaussian sd (half-width / 1.96), and Gaussian intervals "
        "(mean +- z sd) on every side below. Null A: runs calibrated by construction whose errors "
        "have the measured runs' correlation over the grid, shared field included (as if it were "
        "luck); null B: the same with the field the runs share taken out (as if its cause were "
        "corrected).",
        "",
        "## The error field",
        "",
        f"- shared by the runs: their mean z is {shared.mean():+.2f} (per action "
        + "/".join(f"{shared[actions == i].mean():+.2f}" for i in range(len(ACTIONS)))
        + f"), and {np.mean(err.mean(axis=1) < 0):.0%} of the runs err low on average; the "
        f"shared field is {systematic_share(z):.0%} of the mean squared z",
        f"- independent modes over the grid: n_eff = {effective_modes(z):.1f} of {z.shape[1]} "
        f"entries, {effective_modes(own):.1f} once the shared field is taken out",
        f"- the runs' acting explains {behaviour.mean() / err.mean():.0%} of their mean error: Q "
        "of the policy each run acts by at its end (each chain epsilon-greedy on its own mean, "
        f"exact by DP) sits {behaviour.mean():+.4f} from the truth on average, the runs' pooled "
        f"means {err.mean():+.4f} (per run, correlation over the runs "
        f"{np.corrcoef(behaviour.mean(axis=1), err.mean(axis=1))[0, 1]:+.2f})",
        "",
        "## Per run",
        "",
        "- k = RMSE / (width / 3.92), 10/50/90th percentiles: " + three(lambda n: q(scale[n])),
        f"- sd of log k: measured {sd_m:.3f}, null A {sd_n:.3f} (median over sets of {len(z)} "
        f"runs); null-A sets at least as spread: {p:.3f}",
        "- coverage at 95% (all actions), 10/50/90th percentiles: "
        + three(lambda n: q(cov[n][:, i95].mean(-1))),
        f"- curve averaged over runs and actions at {'/'.join(f'{lv:.0%}' for lv in LEVELS)}: "
        + three(lambda n: "/".join(f"{v:.3f}" for v in cov[n].mean(axis=(0, 2)))),
        "",
        "## Batches of runs",
        "",
        f"How often a batch drawn with replacement ({draws} draws) meets the band (0.93-0.97 "
        "every action, the spec's trimmed mean) / the gap (<= 0.05) / both, and the median "
        "band reading (averaged over the actions):",
        "",
        "| runs | " + " | ".join(cov) + " |",
        "|---|" + "---|" * len(cov),
    ]
    for runs in BATCHES:
        cells_ = []
        for c in cov.values():
            o = batch_odds(c, runs, draws, rng)
            cells_.append(
                f"{o['equal_tailed']:.0%} / {o['gap']:.0%} / {o['both']:.0%} "
                f"(band {o['reading']:.3f})"
            )
        lines.append(f"| {runs} | " + " | ".join(cells_) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", help="a study row (runs/ folder name)")
    ap.add_argument("--from-seed", type=int, default=0, help="only seeds from this one on")
    ap.add_argument("--results", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--out", type=Path, default=None, help="default RESULTS/error_correlation_<row>.md"
    )
    args = ap.parse_args(argv)
    lines = report(args.row, load_cells(args.results, args.row, args.from_seed))
    flag = f" --from-seed {args.from_seed}" if args.from_seed else ""
    if args.out is not None:
        flag += f" --out {args.out}"
    made_by = (
        f"Made by `.venv/bin/python experiments/archive/error_correlation.py {args.row}{flag}`."
    )
    write_report(lines, made_by, args.out or REPORTS / f"error_correlation_{args.row}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
