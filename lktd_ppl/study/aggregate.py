"""The study's statistics over a row's runs (spec section 4, aggregation).

A row's data is a dict of per-run arrays (first axis: runs) as :mod:`lktd_ppl.study.data` loads it:
``w_<metric>`` scored against Q of the epsilon-greedy policy, ``s_<metric>`` against Q*, each
(runs, windows, actions) or, for ``calibration``, (runs, windows, levels, actions); ``seeds``.

- :func:`aggregate`: rows = the last 5 windows of every run; per metric family the median, the
  trimmed mean and sd after Tukey's fences on the action-averaged metric (the paper's convention
  for its own measure), and the untrimmed mean with its standard error across runs (a run's
  windows averaged first); the calibration curve (untrimmed, pooled over runs and windows, with its
  standard error across runs) and each run's MSE by seed (for paired comparisons).
- :func:`chosen_seeds`, :func:`fresh_mask`: a row's fresh seeds, those no setting of the row
  (or of a row it derives from) was chosen on; :func:`summarise` adds their summary.
- :func:`paired_ratio`: per-seed MSE ratios of two rows, on the log scale.
- :func:`calibrated_verdict`: the calibrated configuration's three targets on one row; the
  bootstrap over a row's runs of those readings (:func:`bootstrap_readings`), their odds
  (:func:`bootstrap_calibrated`) and 95% intervals (:func:`bootstrap_interval`).
"""

from __future__ import annotations

import warnings

import numpy as np

from lktd_ppl.names import ACTION_NAMES, LEVELS

ACTIONS = ACTION_NAMES
LAST_WINDOWS = 5  # a run's last windows, the rows it contributes
FAMILIES = (
    "coverage",
    "coverage_equal_tailed",
    "mse",
    "width",
    "start_coverage",
    "start_coverage_equal_tailed",
    "start_mse",
)
# the family -> the metric's name in the run data (the start cell's MSE is a squared error)
FAMILY_KEYS = {f: "start_sq_error" if f == "start_mse" else f for f in FAMILIES}
BOOTSTRAP_DRAWS = 1000
# the calibrated configuration's targets: equal-tailed 95% coverage within ET_BAND on every
# action, the calibration curve within GAP_MAX of the diagonal, MSE average <= MSE_MAX
ET_BAND = (0.93, 0.97)
GAP_MAX = 0.05
MSE_MAX = 5e-4
MIN_RUNS_CLOSEST = 4  # the targets' closest calibrated row: a gap over 2 runs has s.e. ~0.06


def split_diverged(data: dict) -> tuple[dict | None, int]:
    """(the runs whose last windows are finite, the number of runs that diverged).

    A run diverged when the divergence guard froze it (``diverged``, :mod:`lktd_ppl.divergence`)
    or its Q-grid became NaN or infinite (its MSE in the last windows is not finite); such runs
    are left out of the rows and counted in the tables instead."""
    runs = data["w_mse"].shape[0]
    ok = np.isfinite(data["w_mse"][:, -LAST_WINDOWS:]).all(axis=(1, 2))
    ok &= ~np.asarray(data.get("diverged", np.zeros(runs, bool)), bool)
    if ok.all():
        return data, 0
    if not ok.any():
        return None, runs
    return take_runs(data, ok), int(runs - ok.sum())


def take_runs(data: dict, idx: np.ndarray) -> dict:
    """The runs ``idx`` (indices, repeats allowed, or a boolean mask) of a row's data: every
    per-run array indexed, the rest (``window_steps``) kept."""
    runs = data["w_mse"].shape[0]
    return {
        k: (np.asarray(v)[idx] if k != "window_steps" and np.ndim(v) and len(v) == runs else v)
        for k, v in data.items()
    }


def tukey_keep(values: np.ndarray) -> np.ndarray:
    """Which values lie inside Tukey's fences [Q1 - 1.5 IQR, Q3 + 1.5 IQR]."""
    q1, q3 = np.nanpercentile(values, [25, 75])
    iqr = q3 - q1
    return (values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)


def run_se(values: np.ndarray) -> np.ndarray:
    """Standard error across runs of a metric's mean over each run's windows: ``values`` is
    (runs, windows, ...); a run's windows are not independent of each other, so each run counts
    once (the windows averaged first). NaN with fewer than two runs."""
    per_run = np.nanmean(values, axis=1)
    runs = per_run.shape[0]
    if runs < 2:
        return np.full(per_run.shape[1:], np.nan)
    return np.nanstd(per_run, axis=0, ddof=1) / np.sqrt(runs)


def chosen_seeds(row: str, choices: dict[str, tuple[range | frozenset, tuple[str, ...]]]) -> set:
    """The seeds on which a setting of ``row``, or of a row it derives from, was chosen.

    ``choices``: row -> (the seeds its own settings were chosen on, the rows it derives from);
    rows not named chose nothing (their settings are the paper's or fixed beforehand)."""
    seeds, parents = choices.get(row, ((), ()))
    out = set(seeds)
    for p in parents:
        out |= chosen_seeds(p, choices)
    return out


def fresh_mask(seeds: np.ndarray, chosen: set) -> np.ndarray:
    """Which runs have a fresh seed: one no setting of their row was chosen on."""
    return np.array([int(s) not in chosen for s in np.asarray(seeds).tolist()], dtype=bool)


def aggregate(data: dict, prefix: str = "w_", errors: bool = True) -> dict:
    """Rows = the last windows of each run; per metric: median, trimmed mean and sd per action.

    ``prefix``: "w_" against Q of the epsilon-greedy policy, "s_" against Q*; ``errors``: the
    untrimmed means' standard errors across runs too (``se``, ``avg_se``; the bootstrap, which
    reads none, leaves them out)."""
    out = {}
    for fam, key in FAMILY_KEYS.items():
        values = data[prefix + key]
        rows = values[:, -LAST_WINDOWS:].reshape(-1, values.shape[-1])  # (runs*5, A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keep = tukey_keep(np.nanmean(rows, axis=1))
            out[fam] = {
                "median": np.nanmedian(rows, axis=0),
                "mean": np.nanmean(rows[keep], axis=0),
                "plain": np.nanmean(rows, axis=0),  # every window, no fences
                "sd": np.nanstd(rows[keep], axis=0),
                "rows": int(rows.shape[0]),
                "kept": int(keep.sum()),
            }
            if errors:  # of "plain" across runs, per action and action-averaged
                last = values[:, -LAST_WINDOWS:]
                out[fam]["se"] = run_se(last)
                out[fam]["avg_se"] = float(run_se(np.nanmean(last, axis=-1)))
    cal = data[prefix + "calibration"][:, -LAST_WINDOWS:]  # (runs, 5, L, A)
    out["calibration"] = np.nanmean(cal, axis=(0, 1))  # (L, A)
    # the same curve over the windows the equal-tailed column keeps (Tukey's fences on their
    # action-averaged equal-tailed coverage), so that its 95% point is that column's mean
    et_rows = data[prefix + "coverage_equal_tailed"][:, -LAST_WINDOWS:].reshape(-1, cal.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep = tukey_keep(np.nanmean(et_rows, axis=1))
        out["calibration_trimmed"] = np.nanmean(cal.reshape(-1, *cal.shape[2:])[keep], axis=0)
    # its standard error across runs (the runs' windows are not independent of each other)
    per_run = np.nanmean(cal, axis=1)  # (runs, L, A)
    runs = per_run.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = np.nanstd(per_run, axis=0, ddof=1) if runs > 1 else np.full(per_run.shape[1:], np.nan)
    out["calibration_se"] = sd / np.sqrt(runs)
    out["runs"] = int(data["w_mse"].shape[0])
    # per run: the MSE averaged over its last windows and the actions, by seed (paired comparisons)
    run_mse = np.nanmean(data[prefix + "mse"][:, -LAST_WINDOWS:], axis=(1, 2))
    out["run_mse"] = dict(zip(np.asarray(data["seeds"]).tolist(), run_mse.tolist(), strict=True))
    return out


def paired_ratio(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """(geometric mean over the seeds both have of a[seed] / b[seed], its standard error, the count).

    Runs of two configurations on the same seed share the seed's start and early history, so the
    per-seed ratio is a much sharper comparison than the ratio of two row means. The mean is taken
    on the log scale (one seed whose MSE doubles must not outweigh one whose MSE halves); the
    standard error is the delta method's, exp(mean) * s.e. of the log ratios."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return float("nan"), float("nan"), len(common)
    log_r = np.log([a[k] / b[k] for k in common])
    gm = float(np.exp(log_r.mean()))
    return gm, gm * float(log_r.std(ddof=1) / np.sqrt(len(log_r))), len(common)


def calibration_gap(summary: dict) -> float:
    """Largest distance of a row's calibration curve from the diagonal (any level, any action)."""
    return calibration_gap_where(summary)[0]


def calibration_gap_where(summary: dict) -> tuple[float, float, int, float]:
    """(largest gap, its nominal level, its action index, the standard error across runs of the
    curve there; NaN when unknown)."""
    dist = np.abs(summary["calibration"] - np.array(LEVELS)[:, None])
    lv, a = np.unravel_index(np.nanargmax(dist), dist.shape)
    se = summary.get("calibration_se")
    se = float(se[lv, a]) if se is not None else float("nan")
    return float(dist[lv, a]), float(LEVELS[lv]), int(a), se


def calibrated_verdict(summary: dict) -> dict[str, bool]:
    """The calibrated configuration's three targets on one row: equal-tailed 95% coverage in
    0.93-0.97 on every action (untrimmed: pooled over every run and window), the curve within
    0.05 of the diagonal, MSE average <= 5e-4 (the trimmed mean, the paper's measure); and
    whether all three hold."""
    et = summary["coverage_equal_tailed"]["plain"]
    v = dict(
        equal_tailed=bool(np.all((et >= ET_BAND[0]) & (et <= ET_BAND[1]))),
        gap=calibration_gap(summary) <= GAP_MAX,
        mse=float(np.nanmean(summary["mse"]["mean"])) <= MSE_MAX,
    )
    v["all"] = all(v.values())
    return v


def nearest_calibrated(summaries: dict, k: int = 3, min_runs: int = 1) -> list[str]:
    """The k rows (LKTD and its ablations, the knobs included) nearest to the diagonal, among
    those with at least ``min_runs`` runs."""
    ours = [
        n
        for n in summaries
        if " vs " not in n
        and n.startswith(("lktd", "explore", "sgld", "sghmc"))
        and summaries[n].get("runs", min_runs) >= min_runs
    ]
    return sorted(ours, key=lambda n: calibration_gap(summaries[n]))[:k]


def bootstrap_readings(
    data: dict, runs: int, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> dict[str, np.ndarray]:
    """The calibrated targets' readings on ``draws`` sets of ``runs`` runs drawn with replacement
    from a row's runs: ``equal_tailed`` (draws, A) (untrimmed), ``gap`` and ``mse_avg``
    (draws,), and each target's verdict per draw as ``v_<target>`` (``calibrated_verdict``;
    bools, (draws,))."""
    rng = np.random.default_rng(seed)
    n = data["w_mse"].shape[0]
    scored = {k: data[k] for k in data if k.startswith("w_") or k == "seeds"}
    verdicts = ("v_equal_tailed", "v_gap", "v_mse", "v_all")
    out: dict[str, list] = {k: [] for k in ("equal_tailed", "gap", "mse_avg", *verdicts)}
    for _ in range(draws):
        s = aggregate(take_runs(scored, rng.integers(0, n, runs)), errors=False)
        out["equal_tailed"].append(s["coverage_equal_tailed"]["plain"])
        out["gap"].append(calibration_gap(s))
        out["mse_avg"].append(float(np.nanmean(s["mse"]["mean"])))
        for k, v in calibrated_verdict(s).items():
            out[f"v_{k}"].append(v)
    return {k: np.array(v) for k, v in out.items()}


def bootstrap_calibrated(
    data: dict, runs: int, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> dict[str, float]:
    """How often ``runs`` runs drawn with replacement from a row's runs meet each calibrated
    target and all three (``calibrated_verdict``): the chance that a fresh set of that many seeds
    would, if the row's runs are a fair sample of its seeds. A verdict on the edge of a target
    reads about 0.5 here, whatever side the measured runs fell on."""
    r = bootstrap_readings(data, runs, draws, seed)
    return {k: float(r[f"v_{k}"].mean()) for k in ("equal_tailed", "gap", "mse", "all")}


def bootstrap_interval(data: dict, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """The row's own readings of the calibrated targets with a 95% percentile interval over its
    runs (as many drawn with replacement as it has): how well its runs pin down the value the
    configuration would read over many seeds. (2, A) for ``equal_tailed``, (2,) for the rest."""
    r = bootstrap_readings(data, data["w_mse"].shape[0], draws, seed)
    return {
        k: np.nanpercentile(r[k], [2.5, 97.5], axis=0) for k in ("equal_tailed", "gap", "mse_avg")
    }


def summarise(
    all_data: dict,
    q_star: set[str] | frozenset[str] = frozenset(),
    bootstrap: bool = True,
    choices: dict | None = None,
) -> tuple[dict, dict]:
    """(summaries by row, diverged runs by row as (diverged, runs)) of every row's data; rows named
    in ``q_star`` (algorithms whose targets converge to Q*) are scored against Q* as well, as
    ``"<row> vs Q*"``. The closest calibrated row (``MIN_RUNS_CLOSEST`` runs or more) gets its
    bootstrap interval and the odds of 20, as many and 100 runs (``bootstrap``; the table.md's
    targets print them, table.csv has none). Rows whose every run diverged
    are dropped from ``all_data`` (in place); the others keep their finite runs only.

    ``choices`` (:func:`chosen_seeds`): every summary gets ``fresh_runs``, its runs on fresh
    seeds, and, where some seeds are not fresh, ``fresh``: the summary of the fresh runs alone
    (None when none is fresh)."""
    summaries, diverged = {}, {}
    for n in list(all_data):
        d, bad = split_diverged(all_data[n])
        if bad:
            diverged[n] = (bad, int(all_data[n]["w_mse"].shape[0]))
        if d is None:
            del all_data[n]
            continue
        all_data[n] = d
        fresh = fresh_mask(d["seeds"], chosen_seeds(n, choices or {}))
        for prefix, name in (("w_", n), ("s_", f"{n} vs Q*")):
            if prefix == "s_" and not (n in q_star and "s_mse" in d):
                continue
            summaries[name] = aggregate(d, prefix)
            summaries[name]["fresh_runs"] = int(fresh.sum())
            if not fresh.all():
                sub = take_runs(d, fresh) if fresh.any() else None
                summaries[name]["fresh"] = aggregate(sub, prefix) if sub else None
    for n in nearest_calibrated(summaries, 1, min_runs=MIN_RUNS_CLOSEST) if bootstrap else []:
        summaries[n]["interval"] = bootstrap_interval(all_data[n])
        summaries[n]["bootstrap"] = {
            runs: bootstrap_calibrated(all_data[n], runs)
            for runs in (20, summaries[n]["runs"], 100)
        }
    return summaries, diverged
