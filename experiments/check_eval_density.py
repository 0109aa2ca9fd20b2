"""Spec section 4: metrics evaluated M = 10 times per window against M = 1000 (every stage).

The same seed gives the same trajectory (evaluation only reads the sample buffer), so the two runs
differ only in how densely each window is sampled.

    .venv/bin/python experiments/check_eval_density.py [--steps 300000] [--out FILE]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import jax

from lktd_ppl.agents.harness import window_means
from lktd_ppl.study.runner import make_train_for

KEYS = ("coverage", "coverage_equal_tailed", "mse", "width")


def main() -> None:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=300_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = {}
    for m in (10, 1000):
        paper = dict(compat=True, escape=dict(evals_per_window=m))  # the official configuration
        train, _ = make_train_for("lktd", "paper", paper, args.steps)
        res[m] = window_means(train(jax.random.key(0)[None], progress=False))
    lines = [
        f"LKTD compat N=10000, one seed, {args.steps:,} steps; window means per action (E/N/W/S)",
        "",
        "| window end | metric | M = 10 | M = 1000 |",
        "|---|---|---|---|",
    ]
    windows = res[10]["mse"].shape[1]
    for w in range(windows - 3, windows):
        for k in KEYS:
            a, b = res[10][k][0, w], res[1000][k][0, w]
            fmt = "{:.2e}" if k == "mse" else "{:.3f}"
            lines.append(
                f"| {(w + 1) * 10_000:,} | {k} | {'/'.join(fmt.format(x) for x in a)} | "
                f"{'/'.join(fmt.format(x) for x in b)} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
