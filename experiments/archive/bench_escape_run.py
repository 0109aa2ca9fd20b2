"""Wall time of escape runs on this machine, compile included.

    .venv/bin/python experiments/bench_escape_run.py [--steps 1000000] [--repeats 3]

1. one ``--steps`` LKTD run in the paper's configuration (the ``paper`` preset, every setting written out:
   compat mode, N = 10 000, eps0 = 1e-5, alpha = 0.9, kappa = 5, one chain, the shipped
   ``models/mlp_q.py:sarsa_spike_slab`` of the code under test), each run in a fresh process
   (cold caches, compile and setup included); wall and CPU seconds, median of ``--repeats``.

    .venv/bin/python experiments/bench_escape_run.py --compare /tmp/lktd_old [--new /tmp/lktd_new]

times the same run for the code at ``/tmp/lktd_old`` (a worktree, put first on ``PYTHONPATH``) and
for this checkout (or the worktree ``--new``), alternating old and new, each run in a fresh
process, and prints both medians and new / old.

    .venv/bin/python experiments/bench_escape_run.py --seeds-only --chain-steps 100000

seeds vmapped in one process (1, 2, 4 seeds; compiled first), time per seed.

    .venv/bin/python experiments/bench_escape_run.py --chains-only --chain-steps 1000000
    .venv/bin/python experiments/bench_escape_run.py --precond-only --chain-steps 1000000

the m-chains comparison (m = 1, 4, 10) and the diagonal preconditioner (``precondition_max=100``)
against none, default mode, eps0 = 2.2e-5, each from cold caches.
Reference: the official PyTorch code needs about 1.25 hours per 1M-step run on this CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

OFFICIAL_SECONDS_PER_1M = 1.25 * 3600


def paper_config(steps: int, **overrides):
    """(agent config, escape protocol) of the paper's LKTD run: the ``paper`` preset (every
    setting written out), ``overrides`` (bare setting names, e.g. ``num_chains=4``) on top."""
    from lktd_ppl.config import build_spec

    spec = build_spec(algo="lktd", preset="paper", config={"agent": overrides}, steps=steps)
    return spec.agent, spec.escape


def one_run(steps: int, seed: int = 0, **overrides) -> dict:
    """Wall and CPU seconds of one run in this process (call it in a fresh one: cold caches)."""
    import jax

    from lktd_ppl.agents.lktd import make_lktd_train

    wall, cpu = time.perf_counter(), time.process_time()
    config, escape = paper_config(steps, **overrides)
    make_lktd_train(config, escape)(jax.random.key(seed)[None], progress=False)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def run_in_process(steps: int, tree: str | None = None, seed: int = 0, **overrides) -> dict:
    """:func:`one_run` in a fresh interpreter, with ``tree`` first on PYTHONPATH if given."""
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    spec = json.dumps({"steps": steps, "seed": seed, **overrides})
    out = subprocess.run(
        [sys.executable, __file__, "--one-run", spec],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(runs: list[dict], key: str) -> str:
    return ", ".join(f"{r[key]:.1f}" for r in runs)


def compare(old_tree: str, new_tree: str | None, steps: int, repeats: int) -> None:
    """Old and new alternating, each run in a fresh process; medians and the ratio."""
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(repeats):
        for name, tree in (("old", old_tree), ("new", new_tree)):
            runs[name].append(run_in_process(steps, tree, seed=i))
            r = runs[name][-1]
            print(f"  {name} run {i + 1}: wall {r['wall']:.1f} s, cpu {r['cpu']:.1f} s", flush=True)
    med = {
        n: {k: float(np.median([r[k] for r in rs])) for k in ("wall", "cpu")}
        for n, rs in runs.items()
    }
    for name in runs:
        print(
            f"{name}: {steps:,}-step run, compile included: wall {med[name]['wall']:.1f} s "
            f"(median of {_fmt(runs[name], 'wall')}), cpu {med[name]['cpu']:.1f} s "
            f"({_fmt(runs[name], 'cpu')})"
        )
    pairs = [n["wall"] / o["wall"] for o, n in zip(runs["old"], runs["new"], strict=True)]
    print(
        f"new / old: wall {med['new']['wall'] / med['old']['wall']:.3f} (medians; per pair "
        f"{', '.join(f'{p:.3f}' for p in pairs)}), cpu {med['new']['cpu'] / med['old']['cpu']:.3f}"
    )


def compare_settings(name: str, values: list, steps: int, repeats: int = 1) -> None:
    """One chain against others: each setting of ``name`` (default mode, eps0 = 2.2e-5)."""
    times: dict = {v: [] for v in values}
    for _ in range(repeats):
        for v in values:
            over = {"compat": False, "step_size": 2.2e-5, name: v}
            times[v].append(run_in_process(steps, **over)["wall"])
    base = float(np.median(times[values[0]]))
    for v in values:
        t = float(np.median(times[v]))
        print(f"{name} = {v}: {steps:,} steps, compile included: {t:.1f} s ({t / base:.2f}x)")


def compare_seeds(steps: int) -> None:
    """1, 2 and 4 seeds vmapped in one run of this process (compiled first), time per seed."""
    import jax

    from lktd_ppl.agents.lktd import make_lktd_train

    config, escape = paper_config(steps, compat=False)
    train = make_lktd_train(config, escape)
    for seeds in (1, 2, 4):
        keys = jax.random.split(jax.random.key(0), seeds)
        train(keys, progress=False)
        t = time.perf_counter()
        train(keys, progress=False)
        dt = time.perf_counter() - t
        print(f"{seeds} seed(s) vmapped, {steps:,} steps: {dt:.1f} s, {dt / seeds:.1f} s per seed")


def main() -> None:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3, help="cold-process repeats of each run")
    ap.add_argument("--compare", metavar="OLD_TREE", help="alternate with the code at OLD_TREE")
    ap.add_argument("--new", metavar="NEW_TREE", help="with --compare: the new code's worktree")
    ap.add_argument("--chains-only", action="store_true", help="only m = 1, 4, 10 chains")
    ap.add_argument("--seeds-only", action="store_true", help="only 1, 2, 4 seeds vmapped")
    ap.add_argument("--precond-only", action="store_true", help="only preconditioned vs plain")
    ap.add_argument("--chain-steps", type=int, default=100_000)
    ap.add_argument("--one-run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_run:
        spec = json.loads(args.one_run)
        print(json.dumps(one_run(spec.pop("steps"), spec.pop("seed"), **spec)))
        return
    import jax

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
        f"({jax.devices()[0].platform})",
        flush=True,
    )
    if args.compare:
        compare(args.compare, args.new, args.steps, args.repeats)
    elif args.seeds_only:
        compare_seeds(args.chain_steps)
    elif args.chains_only:
        compare_settings("num_chains", [1, 4, 10], args.chain_steps)
    elif args.precond_only:
        compare_settings("precondition_max", [1.0, 100.0], args.chain_steps, repeats=2)
    else:
        runs = [run_in_process(args.steps, seed=r) for r in range(args.repeats)]
        one = float(np.median([r["wall"] for r in runs]))
        official = OFFICIAL_SECONDS_PER_1M * args.steps / 1e6
        print(
            f"one {args.steps:,}-step LKTD run, compile included: {one:.1f} s, median of "
            f"{_fmt(runs, 'wall')} (cpu {_fmt(runs, 'cpu')}; official code: {official:.0f} s, "
            f"{official / one:.0f}x)"
        )


if __name__ == "__main__":
    main()
