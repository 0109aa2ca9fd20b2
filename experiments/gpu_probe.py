"""Where a GPU's time goes in the escape harness: milliseconds per env step (compile excluded)
for a few batch shapes of the 10-chain headline configuration.

    python3 experiments/gpu_probe.py [--cases 86x3000,86x30,8x3000,1x3000] [--chains 10]

Each case SEEDSxSAMPLES runs SEEDS seeds vmapped with a sample ring of SAMPLES stages per chain,
6 000 steps in windows of 2 000 (evaluations from step 1 000 on); the time is that of windows 2-3
(the first holds the compilation).  Works on any backend (on CPU the chains run one after another).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax


def probe(seeds: int, samples: int, chains: int) -> float:
    from lktd_ppl.study.runner import make_train_for

    headline = dict(compat=False, pseudo_population=10_000, step_size=2.2e-5, num_chains=chains)
    escape = dict(window=2_000, sample_size=samples)
    train, _ = make_train_for("lktd", "paper", {**headline, "escape": escape}, 6_000)
    stamps = []
    keys = jax.numpy.stack([jax.random.key(s) for s in range(seeds)])
    train(keys, progress=False, log=lambda line: stamps.append(time.perf_counter()))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) / 2_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default="86x3000,86x30,8x3000,1x3000")
    ap.add_argument("--chains", type=int, default=10)
    args = ap.parse_args(argv)
    print(f"backend {jax.default_backend()}, {jax.devices()[0].device_kind}, {args.chains} chains")
    print("| seeds | samples per chain | ms per env step | seed-steps/s |")
    print("|---|---|---|---|")
    for case in args.cases.split(","):
        seeds, samples = (int(x) for x in case.split("x"))
        t = probe(seeds, samples, args.chains)
        print(f"| {seeds} | {samples} | {1e3 * t:.3f} | {seeds / t:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
