"""Wall time of escape runs (issue: speed targets), on this machine, compile included.

    .venv/bin/python experiments/bench_escape_run.py [--steps 1000000] [--short 100000]

1. one ``--steps`` LKTD run (the paper's settings, 1 chain), compile included, in this process;
2. seeds vmapped: ``--short``-step runs of 1, 2 and 4 seeds (compiled first), time per seed;
3. chains: ``--short``-step runs with m = 1, 4, 10 chains, time relative to one chain.

    .venv/bin/python experiments/bench_escape_run.py --chains-only --chain-steps 1000000

runs only the chains' comparison, at full length, each run from cold caches (compile included).

    .venv/bin/python experiments/bench_escape_run.py --precond-only --chain-steps 1000000

times one chain with the diagonal preconditioner (``precondition_max=100``) against one without,
alternating, twice each, cold caches.
Reference (issue): the official PyTorch code needs about 1.25 hours per 1M-step run on this CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import jax
import numpy as np

from lktd_ppl.agents.harness import EscapeConfig
from lktd_ppl.agents.lktd import LKTDAgentConfig, make_lktd_train

OFFICIAL_SECONDS_PER_1M = 1.25 * 3600


def timed(cfg: LKTDAgentConfig, seeds: int, compile_first: bool) -> float:
    train = make_lktd_train(cfg)
    keys = jax.random.split(jax.random.key(0), seeds)
    if compile_first:
        train(keys, progress=False)
    t = time.perf_counter()
    train(keys, progress=False)
    return time.perf_counter() - t


def cold_run(cfg: LKTDAgentConfig, seed: int = 0) -> float:
    """Seconds for one run of ``cfg`` from cold caches: compile and setup included."""
    jax.clear_caches()
    t = time.perf_counter()
    make_lktd_train(cfg)(jax.random.key(seed)[None], progress=False)
    return time.perf_counter() - t


def compare_chains(steps: int, chains: tuple[int, ...] = (1, 4, 10)) -> None:
    """Wall time of one run with m chains against one chain, compile included (cold caches)."""
    times = {}
    for m in chains:
        cfg = LKTDAgentConfig(
            num_chains=m, step_size=2.2e-5, escape=EscapeConfig(total_steps=steps)
        )
        times[m] = cold_run(cfg)
        print(
            f"{m:2d} chain(s), {steps:,} steps, compile included: {times[m]:.1f} s "
            f"({times[m] / times[chains[0]]:.2f}x one chain)",
            flush=True,
        )


def compare_precond(steps: int, repeats: int = 2) -> None:
    """Wall time of one preconditioned chain against a plain one (cold caches, alternating)."""
    times: dict[float, list[float]] = {1.0: [], 100.0: []}
    for _ in range(repeats):
        for cap in times:
            cfg = LKTDAgentConfig(
                step_size=2.2e-5, precondition_max=cap, escape=EscapeConfig(total_steps=steps)
            )
            times[cap].append(cold_run(cfg))
    plain, pre = (float(np.median(times[c])) for c in times)
    print(
        f"one chain, {steps:,} steps, compile included: plain {plain:.1f} s "
        f"({', '.join(f'{x:.1f}' for x in times[1.0])}), preconditioned {pre:.1f} s "
        f"({', '.join(f'{x:.1f}' for x in times[100.0])}): {pre / plain:.2f}x"
    )


def main() -> None:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--short", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3, help="cold-cache repeats of the long run")
    ap.add_argument(
        "--chains-only",
        action="store_true",
        help="only the m-chains comparison, each run from cold caches (compile included)",
    )
    ap.add_argument("--chain-steps", type=int, help="steps of the m-chains runs (default: --short)")
    ap.add_argument(
        "--precond-only", action="store_true", help="only preconditioned against plain, one chain"
    )
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
        f"({jax.devices()[0].platform})"
    )
    if args.chains_only:
        compare_chains(args.chain_steps or args.short)
        return
    if args.precond_only:
        compare_precond(args.chain_steps or args.short)
        return
    cfg = LKTDAgentConfig(compat=True, escape=EscapeConfig(total_steps=args.steps))
    runs = [cold_run(cfg, seed=r) for r in range(args.repeats)]
    one = float(np.median(runs))
    print(
        f"one {args.steps:,}-step LKTD run, compile included: {one:.1f} s, median of "
        f"{', '.join(f'{x:.1f}' for x in runs)} "
        f"(official code: {OFFICIAL_SECONDS_PER_1M * args.steps / 1e6:.0f} s; "
        f"{OFFICIAL_SECONDS_PER_1M * args.steps / 1e6 / one:.0f}x faster)"
    )
    short = EscapeConfig(total_steps=args.short)
    base = None
    for seeds in (1, 2, 4):
        dt = timed(LKTDAgentConfig(escape=short), seeds, True)
        base = base or dt
        print(
            f"{seeds} seed(s) vmapped, {args.short:,} steps: {dt:.1f} s, {dt / seeds:.1f} s per seed"
        )
    per_seed_1m = base * args.steps / args.short
    print(
        f"-> 100 seeds x 1M steps, one seed at a time: about {100 * per_seed_1m / 60:.0f} min "
        "(extrapolated from the short runs)"
    )
    for m in (1, 4, 10):
        dt = timed(LKTDAgentConfig(num_chains=m, escape=short), 1, True)
        print(f"{m:2d} chain(s), {args.short:,} steps: {dt:.1f} s ({dt / base:.2f}x one chain)")


if __name__ == "__main__":
    main()
