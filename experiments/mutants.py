"""Mutant table: does each new test of the kernel's factors fail when a factor is dropped?

For each mutant, ``lktd_ppl.filter.gibbs_xi`` or ``lktd_ppl.filter.augmented_drift`` is replaced by
a mutated copy (the kernel looks both up as module attributes when it is traced), JAX's caches are
cleared, and every statistic of ``tests/test_kernel_factors.py`` is measured with that test's own
function and compared with that test's threshold.  The mutants wrap the current functions and
change only what they return, so they follow whatever the kernel's internals are:

(a) the Gibbs draw of xi with variance alpha (1 - alpha) sigma^2 (no n/N);
(b) the xi-block of the drift without N/n (default mode);
(c) xi <- r at the stage start in the default mode (the official code's start);
(d) the likelihood part of the theta-block of the drift without N/n.

Usage: ``python experiments/mutants.py [--seeds 0 1 2 ...] [--out PATH]``.  ``--seeds`` measures
the regression statistic at those keys (the test uses key 0); each cell shows their range.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_kernel_factors as tkf  # noqa: E402

from lktd_ppl import filter as lktd_filter  # noqa: E402

ORIGINAL = {
    "gibbs_xi": lktd_filter.gibbs_xi,
    "augmented_drift": lktd_filter.augmented_drift,
}


def _gibbs_variance_without_n_over_N(config, meas, key, z=None):
    """(a): the draw's deviation from its mean times sqrt(N/n), i.e. its variance times N/n."""
    gibbs = ORIGINAL["gibbs_xi"]
    c = config.pseudo_population / meas.value.size
    mean = gibbs(config, meas, None, z=jnp.zeros_like(meas.value))
    draw = gibbs(config, meas, key, z)
    return mean + jnp.sqrt(c) * (draw - mean)


def _xi_drift_without_N_over_n(ssm, config, state, batch, fwd=None):
    """(b): the default mode's xi-block divided by N/n."""
    (g_theta, g_xi), meas = ORIGINAL["augmented_drift"](ssm, config, state, batch, fwd)
    if config.compat:  # the compat mode has no N/n there to drop
        return (g_theta, g_xi), meas
    c = config.pseudo_population / state.xi.size
    return (g_theta, g_xi / c), meas


def _xi_starts_at_r(config, meas, key, z=None):
    """(c): xi <- r at the stage start, whatever the mode."""
    return meas.value


def _theta_drift_without_N_over_n(ssm, config, state, batch, fwd=None):
    """(d): the theta-block's likelihood part divided by N/n.  The prior's part is the theta-block
    at xi = h (where the likelihood part vanishes)."""
    drift = ORIGINAL["augmented_drift"]
    (g_theta, g_xi), meas = drift(ssm, config, state, batch, fwd)
    (g_prior, _), _ = drift(ssm, config, state._replace(xi=meas.loc), batch, fwd)
    c = config.pseudo_population / state.xi.size
    return (g_prior + (g_theta - g_prior) / c, g_xi), meas


MUTANTS: dict[str, dict[str, Callable]] = {
    "none (the kernel as it is)": {},
    "(a) Gibbs variance without n/N": {"gibbs_xi": _gibbs_variance_without_n_over_N},
    "(b) xi-drift without N/n": {"augmented_drift": _xi_drift_without_N_over_n},
    "(c) xi <- r in the default mode": {"gibbs_xi": _xi_starts_at_r},
    "(d) theta-drift without N/n": {"augmented_drift": _theta_drift_without_N_over_n},
}

# (column, test, threshold, the measured values: one, or one per regression key)
COLUMNS = [
    ("Gibbs mean, z fixed", "gibbs", tkf.GIBBS_EXACT_TOL, lambda s: [s["gibbs"]["exact_mean"]]),
    ("Gibbs sd, z fixed", "gibbs", tkf.GIBBS_EXACT_TOL, lambda s: [s["gibbs"]["exact_sd"]]),
    ("Gibbs mean, draws", "gibbs", tkf.GIBBS_DRAWS_TOL, lambda s: [s["gibbs"]["draws_mean"]]),
    ("Gibbs sd, draws", "gibbs", tkf.GIBBS_DRAWS_TOL, lambda s: [s["gibbs"]["draws_sd"]]),
    ("drift theta, default", "drift", tkf.DRIFT_TOL, lambda s: [s["drift"]["default_theta"]]),
    ("drift xi, default", "drift", tkf.DRIFT_TOL, lambda s: [s["drift"]["default_xi"]]),
    ("drift theta, compat", "drift", tkf.DRIFT_TOL, lambda s: [s["drift"]["compat_theta"]]),
    ("drift xi, compat", "drift", tkf.DRIFT_TOL, lambda s: [s["drift"]["compat_xi"]]),
    ("regression cov error", "regression", tkf.REG_COV_TOL, lambda s: s["reg_cov"]),
    ("regression mean error", "regression", tkf.REG_MEAN_TOL, lambda s: s["reg_mean"]),
]
TESTS = {
    "gibbs": "test_gibbs_draw_of_xi_at_n_over_N_one_hundredth",
    "drift": "test_augmented_drift_at_n_over_N_one_hundredth",
    "regression": "test_minibatch_regression_at_n_over_N_one_tenth",
}


def measure(seeds: list[int]) -> dict:
    """Every statistic of the new tests under the functions ``lktd_ppl.filter`` holds now."""
    jax.clear_caches()
    regression = [tkf.regression_errors(s) for s in seeds]
    return {
        "gibbs": tkf.gibbs_moments(),
        "drift": tkf.drift_values(),
        "reg_cov": [r[0] for r in regression],
        "reg_mean": [r[1] for r in regression],
    }


def run_mutant(patches: dict[str, Callable], seeds: list[int]) -> dict:
    try:
        for name, fn in patches.items():
            setattr(lktd_filter, name, fn)
        return measure(seeds)
    finally:
        for name, fn in ORIGINAL.items():
            setattr(lktd_filter, name, fn)
        jax.clear_caches()


def _cell(values: list[float], tol: float, mutated: bool) -> tuple[str, bool]:
    """The cell's text (the value, or the range over keys, and the verdict), and whether the test
    fails at every key."""
    failed = sum(not v < tol for v in values)
    shown = f"{values[0]:.3g}" if len(values) == 1 else f"{min(values):.3g}-{max(values):.3g}"
    if not mutated:
        verdict = "pass" if failed == 0 else f"FAILS at {failed}/{len(values)} keys"
    elif failed == len(values):
        verdict = "**KILLED**"
    else:
        verdict = "survived" if failed == 0 else f"killed at {failed}/{len(values)} keys"
    return f"{shown} {verdict}", failed == len(values)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %cI", "--", "lktd_ppl/filter.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "lktd_ppl/filter.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        state = " (uncommitted changes)" if dirty.stdout.strip() else ""
        return f"HEAD {head.stdout.strip()}; filter.py last changed in {out.stdout.strip()}{state}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(results: dict[str, dict]) -> str:
    header = ["mutant"] + [f"{name} (< {tol:g})" for name, _, tol, _ in COLUMNS] + ["killed by"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mutant, stats in results.items():
        mutated = bool(MUTANTS[mutant])
        cells, killers = [], []
        for _, test, tol, get in COLUMNS:
            text, killed = _cell(get(stats), tol, mutated)
            cells.append(text)
            if killed and TESTS[test] not in killers:
                killers.append(TESTS[test])
        if mutated:
            last = ", ".join(killers) or "SURVIVES every test"
        else:
            last = "(unmutated: every test passes)" if not killers else "unmutated kernel FAILS"
        lines.append("| " + " | ".join([mutant, *cells, last]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=str(ROOT / "experiments/results/mutants.md"))
    args = parser.parse_args(argv)
    results = {}
    for name, patches in MUTANTS.items():
        results[name] = run_mutant(patches, args.seeds)
        print(name, results[name], flush=True)
    command = "python experiments/mutants.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    text = "\n".join(
        [
            "# Mutants of the LKTD kernel's factors against tests/test_kernel_factors.py",
            "",
            f"Made by: `{command.strip()}`",
            "",
            f"Machine: {platform.node()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, "
            f"JAX {jax.__version__} on {jax.default_backend()}; {_git_commit()}.",
            "",
            "Each cell: the test's statistic (a relative error; the Gibbs draws' mean error and "
            "the regression's mean error in posterior sds) and whether the test's threshold (in "
            "the header) fails it; KILLED: the test fails at every key. "
            f"Regression keys: {args.seeds} (the range over them shown). Mutants wrap the kernel's functions "
            "(see the script's docstring): (a) Gibbs draw of xi with variance alpha(1-alpha)"
            "sigma^2, no n/N; (b) the xi-block of the drift without N/n; (c) xi <- r at the stage "
            "start in the default mode; (d) the likelihood part of the theta-drift without N/n.",
            "",
            table(results),
            "",
            "Why (b) survives the regression: the unmutated xi-block moves xi towards h by "
            "eps_k/(2 alpha sigma^2) of the distance per inner step (its N/n cancels the step's "
            "n/N; the mutant moves it N/n times less), i.e. sum_k eps_k/(2 alpha sigma^2) = 2.43 "
            "eps0 = 0.7% per stage at eps0 = 3e-3, alpha sigma^2 = 0.5, and the Gibbs draw puts "
            "xi at its conditional at every stage start: in a static model the xi-block's factor "
            "changes the chain by a fraction of a percent. A step large enough to show it (eps0 "
            "near 0.1) is near the theta-block's stability limit. The drift test pins the factor "
            "exactly.",
            "",
        ]
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
