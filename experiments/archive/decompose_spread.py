"""Where the spread of a multi-chain escape run's samples comes from (issue 5, calibration).

Runs one seed of a study configuration (``escape_study.py``'s names), keeps its final sample ring
(the last 3000 stages x m chains of Q-grids) and prints, per action over the legal cells (RMS over
cells): the error of the pooled mean, the sd of all samples, of one chain's samples (within), of
the chains' means (between), how far each chain's mean moves between the window's halves, one
chain's error, and the coverage of the pooled 95% and 50% intervals for the whole window and for
its last 1000 and 300 stages. ``--subsets`` adds what fewer chains would give: the intervals pooled
over k of the m chains (every k-subset, or 20 drawn at random), scored at the calibration levels.
``--set`` changes fields of the named configuration (JSON), e.g. another prior or step size; the
table's first row is the pooled mean's signed error averaged over cells (an error the chains share
keeps its sign over the cells, the chains' independent errors average out).

    .venv/bin/python experiments/archive/decompose_spread.py explore_N10000_m10_anneal1.5 --seed 7
    .venv/bin/python experiments/archive/decompose_spread.py --from-npz saved.npz   # samples kept before
    .venv/bin/python experiments/archive/decompose_spread.py --from-npz saved.npz --subsets
    .venv/bin/python experiments/archive/decompose_spread.py explore_N10000_m4 --set '{"step_size": 4.4e-5}'
    .venv/bin/python experiments/archive/decompose_spread.py --from-npz saved.npz --plot errors.png

Archived: a one-off tool of the calibration search (experiments/archive/README.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from lktd_ppl.metrics import (  # LEVELS: the calibration levels of the study's tables
    LEVELS,
    chronological_samples,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # escape_study.py's rows


def run_samples(name: str, seed: int, changes: dict | None = None) -> dict:
    """(cells, A, stages, chains) samples, truth and mask of one 1M-step run.

    ``changes``: fields set over the configuration's own (e.g. ``{"model": "file.py:fn"}``).
    """
    import jax
    from escape_study import rows

    from lktd_ppl.study.runner import make_train_for

    row = rows()[name]
    train, cfg = make_train_for(
        row.algo, row.preset, {**row.overrides, **(changes or {})}, 1_000_000
    )
    res = train(jax.random.key(seed)[None], progress=False)
    f = res["final"]
    vals = chronological_samples(
        f["samples"][0], f["valid"][0], f["slot"][0], cfg.num_chains, res["truth"].shape
    )
    return {"vals": vals, "truth": res["truth"], "mask": res["mask"]}


def decompose(vals: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> list[str]:
    v = vals.astype(np.float64)
    chain_means = v.mean(2)  # (cells, A, m)
    pooled = v.reshape(*v.shape[:2], -1)
    err = pooled.mean(-1) - truth
    half = v.shape[2] // 2
    stats = {
        "pooled mean error": err,
        "sd, all samples": pooled.std(-1),
        "sd within a chain": np.sqrt((v.var(2)).mean(-1)),
        "sd between chain means": chain_means.std(-1, ddof=1),
        "half-window move": np.abs(v[:, :, half:].mean(2) - v[:, :, :half].mean(2)).mean(-1),
        "one chain's mean error": np.sqrt(((chain_means - truth[..., None]) ** 2).mean(-1)),
    }
    lines = ["| quantity | E | N | W | S |", "|---|---|---|---|---|"]
    signed = [np.mean(err[mask[:, a], a]) for a in range(4)]
    lines.append("| pooled mean error (mean) | " + " | ".join(f"{r:+.4f}" for r in signed) + " |")
    for label, x in stats.items():
        row = [np.sqrt(np.mean(x[mask[:, a], a] ** 2)) for a in range(4)]
        lines.append(f"| {label} (RMS) | " + " | ".join(f"{r:.4f}" for r in row) + " |")
    for last in (v.shape[2], 1000, 300):
        cover = equal_tailed_cover(
            v[:, :, -last:].reshape(*v.shape[:2], -1), truth, mask, (0.95, 0.5)
        )
        for level, row in zip((0.95, 0.5), cover, strict=True):
            lines.append(
                f"| {level:.0%} interval covers, last {last} stages | "
                + " | ".join(f"{r:.3f}" for r in row)
                + " |"
            )
    return lines


def error_grids(vals: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(A, size, size) pooled mean minus truth, ``[a, x, y]`` for cell (x, y); NaN where illegal."""
    err = vals.astype(np.float64).mean((2, 3)) - truth
    err = np.where(mask, err, np.nan)
    size = int(round(np.sqrt(err.shape[0])))
    return err.T.reshape(err.shape[1], size, size)  # cell index x * size + y


def plot_errors(vals: np.ndarray, truth: np.ndarray, mask: np.ndarray, path: Path) -> np.ndarray:
    """A map per action of the pooled mean's signed error over the grid (x right, y up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = error_grids(vals, truth, mask)
    lim = np.nanmax(np.abs(grids))
    fig, axes = plt.subplots(
        1, len(grids), figsize=(3.2 * len(grids), 3.2), squeeze=False, layout="constrained"
    )
    for ax, grid, name in zip(axes[0], grids, "ENWS", strict=False):
        im = ax.imshow(grid.T, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        mean, rms = np.nanmean(grid), np.sqrt(np.nanmean(grid**2))
        ax.set_title(f"{name}: mean {mean:+.3f}, RMS {rms:.3f}", fontsize=9)
        ax.set_xticks(range(0, grid.shape[0], 3))
        ax.set_yticks(range(0, grid.shape[1], 3))
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="pooled mean - truth")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return grids


def equal_tailed_cover(
    pooled: np.ndarray, truth: np.ndarray, mask: np.ndarray, levels: tuple[float, ...] = LEVELS
) -> np.ndarray:
    """(levels, A): fraction of legal cells whose truth lies inside each equal-tailed interval."""
    out = np.empty((len(levels), truth.shape[1]))
    for i, level in enumerate(levels):
        lo, hi = np.quantile(pooled, [(1 - level) / 2, (1 + level) / 2], axis=-1)
        inside = (lo < truth) & (truth < hi)
        out[i] = [inside[mask[:, a], a].mean() for a in range(truth.shape[1])]
    return out


def chain_subsets(
    vals: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    windows: tuple[int, ...] = (3000, 1000),
    max_subsets: int = 20,
    seed: int = 0,
) -> list[str]:
    """Calibration of intervals pooled over k of the run's m chains, averaged over k-subsets."""
    v = vals.astype(np.float64)
    m = v.shape[3]
    rng = np.random.default_rng(seed)
    head = " | ".join(f"{level:.0%} E/N/W/S" for level in LEVELS)
    lines = [
        f"| chains | window | {head} | largest gap | MSE E/N/W/S |",
        "|---|---|" + "---|" * len(LEVELS) + "---|---|",
    ]
    for k in sorted({1, 2, 3, 4, m // 2, m} - {0}):
        subsets = list(itertools.combinations(range(m), k))
        if len(subsets) > max_subsets:
            subsets = [subsets[i] for i in rng.choice(len(subsets), max_subsets, replace=False)]
        for last in windows:
            covers, mses = [], []
            for sub in subsets:
                pooled = v[:, :, -last:, list(sub)].reshape(*v.shape[:2], -1)
                covers.append(equal_tailed_cover(pooled, truth, mask))
                err = pooled.mean(-1) - truth
                mses.append([np.mean(err[mask[:, a], a] ** 2) for a in range(truth.shape[1])])
            cover = np.mean(covers, 0)
            gap = np.max(np.abs(cover - np.array(LEVELS)[:, None]))
            cells = " | ".join("/".join(f"{c:.2f}" for c in row) for row in cover)
            mse = "/".join(f"{x:.1e}" for x in np.mean(mses, 0))
            lines.append(f"| {k} | {last} | {cells} | {gap:.2f} | {mse} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("config", nargs="?", default="explore_N10000_m10_anneal1.5")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--from-npz", type=Path, help="samples saved by an earlier --save")
    ap.add_argument("--save", type=Path, help="keep the samples (npz) for later analyses")
    ap.add_argument("--subsets", action="store_true", help="also score intervals of k < m chains")
    ap.add_argument("--set", type=json.loads, default={}, help="config fields to change (JSON)")
    ap.add_argument("--plot", type=Path, help="PNG: the pooled mean's error per cell and action")
    args = ap.parse_args(argv)
    if args.from_npz:
        data = dict(np.load(args.from_npz))
    else:
        data = run_samples(args.config, args.seed, args.set)
    if args.save:
        np.savez_compressed(args.save, **data)
    print("\n".join(decompose(data["vals"], data["truth"], data["mask"])))
    if args.plot:
        plot_errors(data["vals"], data["truth"], data["mask"], args.plot)
    if args.subsets:
        print()
        print("\n".join(chain_subsets(data["vals"], data["truth"], data["mask"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
