"""Overhead of the progress bar and the per-window log lines on a run (issue 7: at most 5%).

.venv/bin/python experiments/bench_progress.py [--steps 300000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import time
import warnings
from contextlib import redirect_stderr

import jax
import numpy as np

from lktd_ppl.study.runner import make_train_for


def main() -> None:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    train, _ = make_train_for("lktd", "paper", dict(compat=False), args.steps)  # default mode
    keys = jax.random.key(0)[None]
    train(keys, progress=False)  # compile
    times = {"silent": [], "progress bar + log lines": []}
    for _ in range(args.repeats):
        for name in times:
            t = time.perf_counter()
            if name == "silent":
                train(keys, progress=False)
            else:
                with redirect_stderr(io.StringIO()):
                    train(keys, progress=True, log=lambda s: None)
            times[name].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>26}: {v:.2f} s (median of {args.repeats})")
    print(f"overhead: {100 * (med['progress bar + log lines'] / med['silent'] - 1):+.1f}%")


if __name__ == "__main__":
    main()
