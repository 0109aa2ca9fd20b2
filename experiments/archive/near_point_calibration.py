"""What calibration curve a few near-point chains can give (issue 5, the calibrated configuration).

After a large late drop of eps0 a chain barely moves over the sample window, so the pooled
samples are m narrow clusters. The equal-tailed interval at level L then runs between two of the
m clusters, fixed by L and m alone (for m = 5 the 50% interval spans the 2nd to the 4th cluster
and the 80, 90 and 95% intervals all span the 1st to the 5th), and its coverage is a property of
where the truth sits among the clusters, whatever their scale.

This script models one cell and action: the truth is 0, the chains' centres are b + sigma z_i
(z_i iid N(0, 1), a common offset b ~ N(0, (shared sigma)^2)), each chain's samples jitter about
its centre with sd ``within`` sigma, and the interval is NumPy's linear-interpolation quantile of
the pooled samples (what ``lktd_ppl.metrics`` computes). Two limits are distribution-free:

- shared = 0 (the chains scatter about the truth): the truth is covered when enough chains fall
  on each side, a binomial(m, 1/2) count; for m = 5, 0.625 at 50% and 0.9375 at 80-95%;
- shared = 1 (the truth is one more draw, what a calibrated posterior gives): the truth's rank
  among m + 1 draws is uniform; for m = 5, 1/3 at 50% and 2/3 at 80-95%.

It prints the curve for m = 2..40 in both limits and in between, the smallest gap to the diagonal
over (m, shared, within), and fits (shared, within) to the curves the study measured, per action,
so that one sees which knob could close the gap and which cannot.

    .venv/bin/python experiments/archive/near_point_calibration.py   # writes near_point_calibration.md

Archived: a one-off tool of the calibration search (experiments/archive/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lktd_ppl.metrics import LEVELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # escape_study.py's rows

RUNS = Path(__file__).resolve().parents[1] / "results" / "escape"  # the study's runs
REPORTS = Path(__file__).resolve().parent / "results"
ACTIONS = "ENWS"
_ACTIN = "explore_N50000_buffer50000_m{}_drop{}_actin"
ROWS = tuple(_ACTIN.format(m, 100) for m in (2, 3, 5, 10)) + (
    "explore_N50000_buffer50000_m10_drop100",
    _ACTIN.format(3, 30),
    _ACTIN.format(4, 30),
)
# the chains are independent given the data, so a row's per-action (shared, within), in units of
# one chain's scatter, should carry over to the same settings with another chain count
TRANSFER = tuple(f"{_ACTIN.format(5, 100)}={_ACTIN.format(m, 100)}" for m in (2, 3, 10)) + (
    f"{_ACTIN.format(3, 30)}={_ACTIN.format(4, 30)}",
)


def near_point_curve(
    m: int,
    shared: float,
    within: float,
    draws: int = 20_000,
    per_chain: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Coverage at each of ``LEVELS`` of the pooled equal-tailed intervals of m chains.

    ``shared``: sd of the chains' common offset from the truth, ``within``: sd of one chain's
    samples about its centre, both in units of the chains' scatter about their common centre.
    """
    if m < 1 or per_chain < 1 or shared < 0 or within < 0:
        raise ValueError(
            f"need m >= 1, per_chain >= 1, shared >= 0, within >= 0; got "
            f"m={m}, per_chain={per_chain}, shared={shared}, within={within}"
        )
    rng = np.random.default_rng(seed)
    centres = shared * rng.standard_normal((draws, 1)) + rng.standard_normal((draws, m))
    jitter = within * rng.standard_normal((draws, m, per_chain))
    pooled = (centres[..., None] + jitter).reshape(draws, -1)
    probs = [p for lv in LEVELS for p in ((1 - lv) / 2, (1 + lv) / 2)]
    q = np.quantile(pooled, probs, axis=-1).reshape(len(LEVELS), 2, draws)
    return ((q[:, 0] < 0) & (0 < q[:, 1])).mean(axis=-1)


def binomial_centred(m: int) -> np.ndarray:
    """shared = 0, within -> 0: P(the truth lies between the two clusters the interval spans)."""
    from math import comb

    out = []
    for lv in LEVELS:
        # the quantile p of m equal clusters lies in cluster ceil(p m) (1-based; p m not whole)
        lo, hi = int(np.ceil((1 - lv) / 2 * m)), int(np.ceil((1 + lv) / 2 * m))
        # covered when at least lo centres are below 0 and at least m - hi + 1 above
        out.append(sum(comb(m, k) for k in range(lo, hi)) / 2**m)
    return np.array(out)


def rank_uniform(m: int) -> np.ndarray:
    """shared = 1 and within -> 0, the truth exchangeable with the m centres."""
    out = []
    for lv in LEVELS:
        lo, hi = int(np.ceil((1 - lv) / 2 * m)), int(np.ceil((1 + lv) / 2 * m))
        out.append((hi - lo) / (m + 1))
    return np.array(out)


def gap(curve: np.ndarray) -> float:
    return float(np.max(np.abs(curve - np.array(LEVELS))))


SHARED_GRID = tuple(np.round(np.arange(0.0, 2.01, 0.1), 2))
WITHIN_GRID = (0.05, 0.15, 0.3, 0.5, 1.0, 2.0)


def grid_curves(m: int, draws: int) -> np.ndarray:
    """(shared, within, level) model curves of m chains over ``SHARED_GRID`` x ``WITHIN_GRID``."""
    return np.array(
        [[near_point_curve(m, sh, w, draws=draws) for w in WITHIN_GRID] for sh in SHARED_GRID]
    )


def nearest(curves: np.ndarray, target: np.ndarray) -> tuple[float, float, np.ndarray, float]:
    """(shared, within, model curve, largest |model - target|) of the grid point nearest target."""
    dist = np.max(np.abs(curves - target), axis=-1)
    i, j = np.unravel_index(np.argmin(dist), dist.shape)
    return SHARED_GRID[i], WITHIN_GRID[j], curves[i, j], float(dist[i, j])


def chains(name: str) -> int:
    """The chain count of a study row."""
    import escape_study as es

    return int(es.rows()[name].overrides.get("num_chains", 1))


def fmt(v) -> str:
    return "/".join(f"{x:.3f}" for x in v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=20_000)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), help="study rows to fit")
    ap.add_argument(
        "--transfer",
        nargs="*",
        default=list(TRANSFER),
        metavar="SOURCE=TARGET",
        help="predict TARGET's curve from SOURCE's fit (the same settings, another chain count)",
    )
    ap.add_argument("--out", type=Path, default=REPORTS / "near_point_calibration.md")
    args = ap.parse_args(argv)
    lines = [
        "# Near-point chains: the calibration curve their intervals can give",
        "",
        "Made by `.venv/bin/python experiments/archive/near_point_calibration.py` (the model is in its",
        f"docstring; Monte Carlo with {args.draws} draws per point, s.e. at most 0.004).",
        f"Levels {'/'.join(f'{lv:.0%}' for lv in LEVELS)}; gap: the largest distance from the",
        "diagonal. `shared` and `within` are in units of the chains' scatter about their centre.",
        "",
        "## The two limits (near-points, within = 0.05)",
        "",
        "| m | truth at the centre (shared 0): exact, Monte Carlo | gap | truth one more draw "
        "(shared 1): exact, Monte Carlo | gap |",
        "|---|---|---|---|---|",
    ]
    for m in (2, 3, 4, 5, 10, 20, 40):
        c0 = near_point_curve(m, 0.0, 0.05, draws=args.draws)
        c1 = near_point_curve(m, 1.0, 0.05, draws=args.draws)
        lines.append(
            f"| {m} | {fmt(binomial_centred(m))}, {fmt(c0)} | {gap(c0):.3f} | "
            f"{fmt(rank_uniform(m))}, {fmt(c1)} | {gap(c1):.3f} |"
        )
    grids: dict[int, np.ndarray] = {}

    def grid(m: int) -> np.ndarray:
        if m not in grids:
            grids[m] = grid_curves(m, args.draws // 4)
        return grids[m]

    lines += [
        "",
        "## The nearest the model gets to the diagonal, per chain count",
        "",
        f"Over shared {SHARED_GRID[0]}-{SHARED_GRID[-1]} (steps of 0.1) and within "
        f"{'/'.join(map(str, WITHIN_GRID))}; the point found is re-scored with all the draws.",
        "",
        "| m | shared | within | curve | gap |",
        "|---|---|---|---|---|",
    ]
    for m in (2, 3, 4, 5, 10, 20):
        sh, w, _, _ = nearest(grid(m), np.array(LEVELS))
        c = near_point_curve(m, sh, w, draws=args.draws)
        lines.append(f"| {m} | {sh:.1f} | {w:.2f} | {fmt(c)} | {gap(c):.3f} |")
    lines += [
        "",
        "## The study's rows, fitted per action",
        "",
        "Observed: the curve as the table computes it (plain mean over the runs' last 5 windows)",
        "and over the windows the equal-tailed column keeps (trimmed). Fit: the grid's (shared,",
        "within) whose model curve is nearest the trimmed curve, and how far it stays from it.",
        "",
        "| row | runs | action | observed (plain) | observed (trimmed) | fit shared, within | "
        "model curve | misfit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    from lktd_ppl.study.aggregate import aggregate, split_diverged
    from lktd_ppl.study.data import load_runs

    summaries: dict[str, dict] = {}
    fits: dict[str, list[tuple]] = {}
    for name in dict.fromkeys([*args.rows, *(p for t in args.transfer for p in t.split("="))]):
        data = load_runs(RUNS, name)
        if data is None:
            print(f"{name}: no runs in {RUNS / 'runs' / name}, skipped", file=sys.stderr)
            continue
        summaries[name] = aggregate(split_diverged(data)[0])
        m = chains(name)
        fits[name] = [
            nearest(grid(m), summaries[name]["calibration_trimmed"][:, a]) for a in range(4)
        ]
    for name in args.rows:
        if name not in summaries:
            continue
        s = summaries[name]
        for a, (sh, w, c, err) in enumerate(fits[name]):
            lines.append(
                f"| {name} | {s['runs']} | {ACTIONS[a]} | {fmt(s['calibration'][:, a])} | "
                f"{fmt(s['calibration_trimmed'][:, a])} | {sh:.1f}, {w:.2f} | {fmt(c)} | {err:.3f} |"
            )
    lines += [
        "",
        "## Another chain count predicted from a row's fit",
        "",
        "The source row's per-action (shared, within), scored at the target row's chain count,",
        "against the target's trimmed curve (none yet: the prediction only); the largest difference",
        "with the target curve's standard error across its runs at that level (plain mean's).",
        "",
        "| source -> target | action | predicted | observed (trimmed) | largest difference |",
        "|---|---|---|---|---|",
    ]
    for pair in args.transfer:
        source, target = pair.split("=")
        if source not in fits:
            continue
        m = chains(target)
        for a, (sh, w, _, _) in enumerate(fits[source]):
            pred = near_point_curve(m, sh, w, draws=args.draws)
            if target in summaries:
                obs = summaries[target]["calibration_trimmed"][:, a]
                i = int(np.argmax(np.abs(pred - obs)))
                se = summaries[target]["calibration_se"][i, a]  # across the target's runs
                seen, diff = fmt(obs), f"{abs(pred[i] - obs[i]):.3f} (s.e. {se:.3f})"
            else:
                seen, diff = "-", "-"
            lines.append(
                f"| {source} -> m = {m} ({target}) | {ACTIONS[a]} | {fmt(pred)} | {seen} | {diff} |"
            )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
