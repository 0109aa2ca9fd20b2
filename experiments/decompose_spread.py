"""Where the spread of a multi-chain escape run's samples comes from (issue 5, calibration).

Runs one seed of a study configuration (``escape_study.py``'s names), keeps its final sample ring
(the last 3000 stages x m chains of Q-grids) and prints, per action over the legal cells (RMS over
cells): the error of the pooled mean, the sd of all samples, of one chain's samples (within), of
the chains' means (between), how far each chain's mean moves between the window's halves, one
chain's error, and the coverage of the pooled 95% and 50% intervals for the whole window and for
its last 1000 and 300 stages.

    .venv/bin/python experiments/decompose_spread.py explore_N10000_m10_anneal1.5 --seed 7
    .venv/bin/python experiments/decompose_spread.py --from-npz saved.npz   # samples kept before
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_samples(name: str, seed: int) -> dict:
    """(cells, A, stages, chains) samples, truth and mask of one 1M-step run."""
    import jax
    from escape_study import configs, make_train_for

    overrides, _ = configs()[name]
    train, cfg = make_train_for(overrides, 1_000_000)
    res = train(jax.random.key(seed)[None], progress=False)
    ring = np.asarray(res["final"]["samples"][0])  # (cells*A, stages*m), column = slot*m + chain
    cells, num_actions = res["truth"].shape
    vals = ring.reshape(cells, num_actions, -1, cfg.num_chains)
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
    for label, x in stats.items():
        row = [np.sqrt(np.mean(x[mask[:, a], a] ** 2)) for a in range(4)]
        lines.append(f"| {label} (RMS) | " + " | ".join(f"{r:.4f}" for r in row) + " |")
    for last in (v.shape[2], 1000, 300):
        p = v[:, :, -last:].reshape(*v.shape[:2], -1)
        for level in (0.95, 0.5):
            lo, hi = np.quantile(p, [(1 - level) / 2, (1 + level) / 2], axis=-1)
            inside = (lo < truth) & (truth < hi)
            row = [inside[mask[:, a], a].mean() for a in range(4)]
            lines.append(
                f"| {level:.0%} interval covers, last {last} stages | "
                + " | ".join(f"{r:.3f}" for r in row)
                + " |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("config", nargs="?", default="explore_N10000_m10_anneal1.5")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--from-npz", type=Path, help="samples saved by an earlier --save")
    ap.add_argument("--save", type=Path, help="keep the samples (npz) for later analyses")
    args = ap.parse_args(argv)
    data = dict(np.load(args.from_npz)) if args.from_npz else run_samples(args.config, args.seed)
    if args.save:
        np.savez_compressed(args.save, **data)
    print("\n".join(decompose(data["vals"], data["truth"], data["mask"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
