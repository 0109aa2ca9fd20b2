"""The indoor-escape study (spec section 4): every configuration ("row") over many seeds, resumable.

Each row is (algorithm, preset, overrides, seed count): the ``paper`` preset
(:mod:`lktd_ppl.presets`: every setting written out) with the row's changes on top.  The study
runs each row's seeds that have no run yet, ``--batch`` seeds vmapped at a time, one file per
seed under ``OUT/runs/<row>/`` (so an interrupted study resumes), folds them into the row's
compact ``runs.npz``, then aggregates as the spec says (rows = the last 5 windows of each run;
median, and mean/sd after dropping rows outside the Tukey fences per metric family) and writes
tables (CSV, Markdown) and plots (PNG) into ``OUT`` (:mod:`lktd_ppl.study`).

    .venv/bin/python experiments/escape_study.py                      # every row, its seeds
    .venv/bin/python experiments/escape_study.py --seeds 4 --configs lktd_N10000_compat
    .venv/bin/python experiments/escape_study.py --aggregate-only
    .venv/bin/python experiments/escape_study.py --workers 2 --batch 2 ...  # 2 processes

``--deadline-s S`` stops a batch projected (from its last window) to end more than S seconds from
now (exit code 3): for a machine lent for a fixed time (``experiments/gpu_study.sh``).
``--workers W`` runs the study as W local processes of one ``jax.distributed`` job (each pinned to
its share of the cores) that split every batch's seeds; ``--devices N`` splits them over N
devices of each process (:mod:`lktd_ppl.scale`).

A row's seed count is the number of seeds its results hold (seeds 0..count-1); raise it and rerun
to add seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lktd_ppl.study.command import main as study_main
from lktd_ppl.study.runner import Row

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "experiments" / "results" / "escape"
# the algorithms whose targets converge to Q* (epsilon = 0): scored against it as well
Q_STAR_ALGOS = ("dqn", "bootdqn", "qrdqn", "kova")


AFTER = "explore_N50000_buffer50000_m10_drop{}_after"
# row -> (the seeds its own settings were chosen on, the rows it derives from): a seed is fresh
# for a row when no setting of it, or of a row it derives from, was chosen on that seed (runs of
# rows that differ only in the last step are identical until stage 88 000). Rows not named
# have the paper's settings or settings fixed before any of their runs.
CHOICES = {
    # the afterstate network, ten chains and the drops: designed from the 5-chain afterstate
    # and action-input rows (seeds 0-7)
    AFTER.format(100): (range(0, 8), ()),
    AFTER.format(150): (range(0, 30), (AFTER.format(100),)),  # the step, on seeds 0-29
    AFTER.format(225): (range(0, 50), (AFTER.format(150),)),  # the step, on seeds 0-49
}


def lktd(seeds: int, **overrides) -> Row:
    """An LKTD row under the paper preset."""
    return Row("lktd", "paper", overrides, seeds)


def rows() -> dict[str, Row]:
    """name -> Row, in the tables' order."""
    c: dict[str, Row] = {}
    # The paper's LKTD rows (compatibility mode: xi <- r, no N/n on the xi-drift, the doubled
    # likelihood drift) at its three N, and the spec's default mode beside each
    for n, seeds in ((2500, 20), (5000, 20), (10_000, 100)):
        c[f"lktd_N{n}_compat"] = lktd(seeds, pseudo_population=n, compat=True)
        c[f"lktd_N{n}"] = lktd(100 if n == 10_000 else 20, pseudo_population=n, compat=False)
    # the default mode at the official runs' learning speed (spec: eps0 = (2/alpha) 1e-5)
    default = dict(pseudo_population=10_000, step_size=2.2e-5, compat=False)
    c["lktd_N10000_eqspeed"] = lktd(20, **default)
    # the paper's SGLD and SGHMC ablations on the same model and N
    for algo in ("sgld", "sghmc"):
        c[f"{algo}_N10000_compat"] = Row(
            algo, "paper", dict(pseudo_population=10_000, compat=True), 20
        )
    # the multi-chain headline: ten chains in the default mode, the paper's settings otherwise
    c["lktd_N10000_m10"] = lktd(100, **default, num_chains=10)
    # twenty chains: the pooled mean's error falls with the chains' independent part (about 1/m
    # of one chain's variance) while their shared part stays
    c["explore_N10000_m20"] = lktd(4, **default, num_chains=20)
    # towards a calibrated configuration (beyond the paper): sharper targets (larger N), several
    # chains, a smaller step, a larger minibatch
    c["explore_N40000"] = lktd(2, **{**default, "pseudo_population": 40_000})
    c["explore_N40000_compat"] = lktd(2, pseudo_population=40_000, compat=True)
    c["explore_N10000_m4"] = lktd(1, **default, num_chains=4)
    c["explore_N40000_m4"] = lktd(1, **{**default, "pseudo_population": 40_000}, num_chains=4)
    c["explore_N10000_eps5e-6"] = lktd(2, **{**default, "step_size": 5e-6})
    c["explore_N10000_batch500"] = lktd(2, **default, escape=dict(batch_size=500))
    # the baselines with the official networks (every weight and bias N(0, 0.1^2); BootDQN's:
    # PyTorch's default) and settings (spec section 4's table)
    for algo, seeds in (("dqn", 20), ("bootdqn", 20), ("qrdqn", 20)):
        c[algo] = Row(algo, "paper", {}, seeds)
    # KOVA: the paper's row (compat: the official first-difference quirk) and plain KOVA, whose
    # one run diverges (its covariance winds up in directions the data never excite)
    c["kova_compat"] = Row("kova", "paper", dict(compat=True), 5)
    c["kova"] = Row("kova", "paper", dict(compat=False), 1)
    # the same baselines with flax's initialisation (LeCun-normal weights, zero biases): how much
    # of their coverage the initialisation makes
    for algo, seeds in (("dqn", 20), ("qrdqn", 20), ("bootdqn", 3)):
        c[f"{algo}_flax_init"] = Row(algo, "paper", dict(init_sd=None), seeds)
    # eps0 annealed over the stages, (1 + t / 10 000)^-decay: a smaller within-chain spread
    anneal = dict(**default, step_size_decay=1.0)
    c["explore_N10000_anneal1"] = lktd(4, **anneal)
    c["explore_N10000_m4_anneal1"] = lktd(4, **anneal, num_chains=4)
    # stronger annealing: the within-chain spread shrinks, the between-chain spread (wider where
    # data are scarce) remains
    for decay in (1.5, 2.0):
        for m in (4, 10):
            c[f"explore_N10000_m{m}_anneal{decay:g}"] = lktd(
                4, **{**anneal, "step_size_decay": decay}, num_chains=m
            )
    # three acting chains: intervals pooled over 3 of a run's 10 chains matched W/S
    # (experiments/archive/decompose_spread.py --subsets); does a run with three chains?
    annealed = {**anneal, "step_size_decay": 1.5}
    c["explore_N10000_m3_anneal1.5"] = lktd(8, **annealed, num_chains=3)
    # sharper targets for 10 chains at the headline's drift: N x k with eps0 / k keeps eps0 N (the
    # drift) and divides the injected noise's variance by k (a temperature of 1/k); N = 640 000
    # is not run yet
    for n, seeds in ((40_000, 3), (160_000, 3), (640_000, 4)):
        base = dict(default, pseudo_population=n, step_size=2.2e-5 * 10_000 / n, num_chains=10)
        c[f"explore_N{n}_m10"] = lktd(seeds, **base)
        c[f"explore_N{n}_m10_anneal1.5"] = lktd(seeds, **base, step_size_decay=1.5)
    # less minibatch noise for the annealed 10 chains: is their spread the drift's gradient noise?
    # (batch 250 is not run yet)
    for b, seeds in ((250, 4), (500, 2)):
        c[f"explore_N10000_m10_anneal1.5_batch{b}"] = lktd(
            seeds, **annealed, num_chains=10, escape=dict(batch_size=b)
        )
    # chains that differ by their noise only (one shared start): is the annealed chains' spread
    # their different starts?
    c["explore_N10000_m10_anneal1.5_shared"] = lktd(2, **annealed, num_chains=10, shared_init=True)
    # colder theta-noise (temperature T): is the chains' disagreement noise-driven? The prior
    # keeps its weight (unlike a larger N).  (T = 0.1 is not run yet)
    for t, seeds in ((0.25, 2), (0.1, 4)):
        c[f"explore_N10000_m10_anneal1.5_T{t:g}"] = lktd(
            seeds, **annealed, num_chains=10, temperature=t
        )
    # the headline's 10 chains with twice its eps0: faster-moving chains, if the W/S error they
    # share is history the chains forget slowly
    c["explore_N10000_m10_eps4.4e-5"] = lktd(4, **{**default, "step_size": 4.4e-5}, num_chains=10)
    # a diagonal preconditioner on the theta-forecast (pSGLD's idea, capped): parameters the data
    # barely move (a rare action's output weights) take larger steps, so that one chain may
    # travel across what ten chains only span between them; annealed too (a smaller spread where
    # the data are many, E/N, while the preconditioned directions keep moving)
    for cap in (10, 100, 1000):
        pre = dict(**default, precondition_max=float(cap))
        c[f"explore_N10000_precond{cap}"] = lktd(4, **pre)
        if cap > 10:
            for decay in (1.0, 1.5):
                c[f"explore_N10000_precond{cap}_anneal{decay:g}"] = lktd(
                    4, **pre, step_size_decay=decay
                )
    # the headline's ten chains, preconditioned: chains that travel further may agree more
    c["explore_N10000_m10_precond100"] = lktd(4, **default, num_chains=10, precondition_max=100.0)
    # the headline's ten chains between no annealing and decay 1.5
    c["explore_N10000_m10_anneal1"] = lktd(4, **anneal, num_chains=10)
    # twice the sample window (the paper keeps 3000 stages): the pooled mean then averages the
    # posteriors of more buffers' data
    c["explore_N10000_m10_window6000"] = lktd(
        16, **default, num_chains=10, escape=dict(sample_size=6000)
    )
    # a plain N(0, 0.5^2) prior (no spike): the W/S error is the network's extrapolation where
    # the agent seldom goes, which the prior shapes
    c["explore_N10000_m10_gauss"] = lktd(8, **default, num_chains=10, model="mlp_q:sarsa_gaussian")
    # a replay buffer of 50 000 with N matched to it (not the paper's 10 000): the posterior of
    # five times the data
    big = dict(default, pseudo_population=50_000, num_chains=10, escape=dict(buffer_size=50_000))
    c["explore_N50000_buffer50000_m10_anneal1.5"] = lktd(2, **big, step_size_decay=1.5)
    c["explore_N50000_buffer50000_m10"] = lktd(8, **big)
    # eps0 lowered by degrees near the end only (the full step until stage 70 000 of 99 900; the
    # study's last 5 windows keep stages 92 900-99 900): the posterior of a fixed buffer sampled
    # at a hundredth of the step was the nearest to calibrated (experiments/archive/
    # frozen_buffer.py); buffers of 30 000 and 50 000, last factors 1/30, 1/50, 1/100
    late = ((70_000, 0.1), (80_000, 1 / 30))
    drop100 = (*late, (88_000, 0.01))
    for n, drops, seeds in (
        (30_000, drop100, 2),
        (50_000, late, 2),
        (50_000, (*late, (88_000, 0.02)), 2),
        (50_000, drop100, 8),
    ):
        c[f"explore_N{n}_buffer{n}_m10_drop{round(1 / drops[-1][1])}"] = lktd(
            seeds,
            **{**big, "pseudo_population": n, "escape": dict(buffer_size=n)},
            step_size_drops=drops,
        )
    # after the drop the chains barely move, so the intervals are quantiles of m near-points:
    # twenty of them
    c["explore_N50000_buffer50000_m20_drop100"] = lktd(
        2, **{**big, "num_chains": 20}, step_size_drops=drop100
    )
    # the chains' W/S disagreement at the small step: the diagonal preconditioner moves the
    # parameters the data barely touch up to 100x faster
    c["explore_N50000_buffer50000_m10_drop100_precond100"] = lktd(
        2, **big, step_size_drops=drop100, precondition_max=100.0
    )
    # twice the data again (buffer and N 100 000): does more W/S data narrow the disagreement?
    c["explore_N100000_buffer100000_m10_drop100"] = lktd(
        2,
        **{**big, "pseudo_population": 100_000, "escape": dict(buffer_size=100_000)},
        step_size_drops=drop100,
    )
    # the drops 20 000 stages earlier: longer at the small step
    early = ((50_000, 0.1), (60_000, 1 / 30), (70_000, 0.01))
    c["explore_N50000_buffer50000_m10_drop100_early"] = lktd(2, **big, step_size_drops=early)
    # one shared start for the drop's chains: if their W/S disagreement is their different
    # starts, slowly forgotten where the data are scarce, a shared start narrows W/S more than E/N
    c["explore_N50000_buffer50000_m10_drop100_shared"] = lktd(
        2, **big, step_size_drops=drop100, shared_init=True
    )
    # a model change: the action-input network (models/mlp_q.py), whose every action's value
    # goes through the same hidden layers, so that W/S are tied to E/N by the network rather
    # than by their own scarce transitions
    actin = "mlp_q:sarsa_action_input_spike_slab"
    c["explore_N50000_buffer50000_m10_drop100_actin"] = lktd(
        2, **big, step_size_drops=drop100, model=actin
    )
    # fewer chains.  After the drop a chain barely moves, so the pooled samples are m near-points
    # about their mean; if the chains scatter independently about the truth with sd b, the
    # pooled mean errs with variance b^2 / m while the points spread about it with variance
    # b^2 (m - 1) / m: the two agree at m = 2 only.  The milder last factor (1/30) leaves each
    # chain more of its own spread, which widens the tails more than the centre (with the truth
    # at the centre of m scattered near-points, the 50% interval covers it with probability
    # about 0.63 at m = 5 and 0.5 at m = 4, the 95% interval about 0.94 and 0.86).
    # (two chains at 1/30 are not run yet)
    for m, drops, seeds in (
        (2, drop100, 2),
        (3, drop100, 2),
        (5, drop100, 8),
        (2, late, 4),
        (3, late, 2),
        (4, late, 4),
    ):
        c[f"explore_N50000_buffer50000_m{m}_drop{round(1 / drops[-1][1])}_actin"] = lktd(
            seeds, **{**big, "num_chains": m}, step_size_drops=drops, model=actin
        )
    # two networks that tie a rare action's value (a W or S transition is 1 in 400) to the
    # common ones' data more tightly than a one-hot input (models/mlp_q.py): the action as its
    # move (W = -E), and the afterstate (Q(s, a) = f(s + d_a), exact in this room), with which
    # every transition into a cell informs every action aiming there.  The afterstate rows vary
    # the chains and the drops: 20 000 stages earlier (is the chains' scatter a leftover that
    # time removes?), a colder posterior (temperature 0.5: is the width the posterior's?),
    # smaller last factors (1/150, 1/225, 1/300: the sampler's law at its last step sets the
    # width; 1/150 was chosen on seeds 0-29, so seeds 30 and up are held out, and 1/225 is the
    # next step down by the same factor).  No drops at all: do the drops make the error the
    # 1/225 row's runs share?
    after_rows = {
        "m5_drop100_move": (2, dict(num_chains=5, model="sarsa_move_input_spike_slab")),
        "m5_drop100_after": (2, dict(num_chains=5)),
        "m5_drop30_after": (2, dict(num_chains=5, step_size_drops=late)),
        "m3_drop100_after": (2, dict(num_chains=3)),
        "m4_drop100_after": (2, dict(num_chains=4)),
        "m10_drop100_after": (30, dict(num_chains=10)),
        "m5_drop100_early_after": (2, dict(num_chains=5, step_size_drops=early)),
        "m5_drop100_after_temp0.5": (2, dict(num_chains=5, temperature=0.5)),
        "m5_drop300_after": (2, dict(num_chains=5, step_size_drops=(*late, (88_000, 1 / 300)))),
        "m10_drop150_after": (50, dict(num_chains=10, step_size_drops=(*late, (88_000, 1 / 150)))),
        "m10_drop225_after": (150, dict(num_chains=10, step_size_drops=(*late, (88_000, 1 / 225)))),
        "m10_nodrop_after": (20, dict(num_chains=10, step_size_drops=())),
    }
    for suffix, (seeds, knobs) in after_rows.items():
        model = knobs.pop("model", "sarsa_afterstate_spike_slab")
        c[f"explore_N50000_buffer50000_{suffix}"] = lktd(
            seeds, **{**big, "step_size_drops": drop100, **knobs, "model": f"mlp_q:{model}"}
        )
    # the same five afterstate chains at the paper's buffer and N (10 000)
    c["explore_N10000_m5_drop100_after"] = lktd(
        2,
        **default,
        num_chains=5,
        step_size_drops=drop100,
        model="mlp_q:sarsa_afterstate_spike_slab",
    )
    # the headline's ten chains (the paper's buffer and N) with eps0 lowered once, mildly, from
    # stage 70 000: a factor that leaves the chains moving keeps the paper's coverage (a frozen
    # chain's latest sample is its own extreme) while the drop may cut the W/S error
    for k, seeds in ((3, 100), (10, 2)):
        c[f"explore_N10000_m10_drop{k}at70k"] = lktd(
            seeds, **default, num_chains=10, step_size_drops=((70_000, 1 / k),)
        )
    # the official Bootstrapped DQN draws a fresh mask per minibatch (not one per transition)
    c["bootdqn_official_masks"] = Row("bootdqn", "paper", dict(mask_per_update=True), 10)
    return c


def main(argv: list[str] | None = None) -> int:
    table = rows()
    q_star = {name for name, row in table.items() if row.algo in Q_STAR_ALGOS}
    return study_main(
        table,
        argv,
        script=Path(__file__).resolve(),
        default_out=DEFAULT_OUT,
        q_star=q_star,
        description=__doc__,
        choices=CHOICES,
    )


if __name__ == "__main__":
    sys.exit(main())
