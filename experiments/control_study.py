"""The classic-control study (spec section 7): every method x control environment x 10 seeds, resumable.

Rows per environment (settings in ``lktd_ppl/presets.py``: ``CONTROL_STUDY_ENVS``, ``ZOO_DQN``,
``ZOO_NETWORK``, ``ZOO_QUANTILES``):
- dqn, qrdqn, bootdqn: the RL-Baselines3-Zoo DQN row of the environment ([256, 256], Huber loss,
  no double-Q; QR-DQN with the zoo's quantile counts; BootDQN with 10 heads);
- lmcdqn: the DQN row's replay, schedule and network with the Langevin update (its a, beta, J from
  ``LMCDQN``);
- lktd, sgld, sghmc: the ``mlp_control:sarsa_gaussian`` model (64-64, no target network), buffer
  1e4, a stage every 4 steps, the step size from ``LKTD_STEP``;
- lktd_variant: where a sweep chose one (``LKTD_VARIANT``), LKTD with the variant's changes to that
  protocol (``SWEEP_LKTD_VARIANTS``: the Q-learning measurement, a target network, a stage every
  step, ...);
- kova: [64, 64] (the [256, 256] covariance, 67 000^2 floats, does not fit).

    .venv/bin/python experiments/control_study.py --envs CartPole-v1 --rows lktd,dqn
    .venv/bin/python experiments/control_study.py --aggregate-only
    .venv/bin/python experiments/control_study.py --time 0.1 --envs CartPole-v1   # the plan

``--sweep`` runs the sweeps instead (``SWEEPS``: the LKTD step size, and LMCDQN's a and beta, per
environment at the full budget) on seeds 100, 101, ... (never evaluation seeds) into ``OUT/sweeps``;
the chosen values go into ``LKTD_STEP`` and ``LMCDQN``.

``--time F`` runs every chosen row on 2 seeds at F of its budget twice in one process (the second
call reuses the compiled code) and writes ``OUT/timing.csv``: compile time and the projected
seconds per seed at the full budget, for the CPU-hour plan.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

from lktd_ppl.presets import CONTROL_STUDY_ENVS, ZOO_DQN, ZOO_NETWORK, ZOO_QUANTILES
from lktd_ppl.study.control import (
    ControlRow,
    batch_path,
    load_row,
    pending,
    plot_curves,
    row_spec,
    run_batch,
    write_tables,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "experiments" / "results" / "control"
EVAL_SEEDS = list(range(10))
SWEEP_FIRST_SEED = 100
METHODS = ("lktd", "lktd_variant", "dqn", "qrdqn", "lmcdqn", "bootdqn", "sgld", "sghmc", "kova")
# the LKTD family's step size per environment (the sweep's best final IQM: sweeps/table.md;
# environments not swept yet take the control default)
LKTD_STEP = {
    "CartPole-v1": 1e-4,
    "Acrobot-v1": 1.25e-5,
    "MountainCar-v0": 8e-4,
    "LunarLander-v3": 1.25e-5,
}
# Adam LMCDQN's bias factor and inverse temperature per environment (the sweep's best final IQM;
# environments not swept yet take the control defaults, a 0.1 and beta 1e5)
LMCDQN = {
    "CartPole-v1": {"bias_factor": 1.0, "inverse_temperature": 1e5},
    "MountainCar-v0": {"bias_factor": 1.0, "inverse_temperature": 1e5},
    "Acrobot-v1": {"bias_factor": 1.0, "inverse_temperature": 1e5},
    "LunarLander-v3": {"bias_factor": 0.1, "inverse_temperature": 1e5},
}
LKTD_PROTOCOL = {"buffer_size": 10_000, "train_start": 1000, "train_every": 4, "gradient_steps": 1}


def _fields(method: str) -> set[str]:
    from lktd_ppl import registry

    return {f.name for f in dataclasses.fields(registry.get(method).config_class)}


def network_row(env: str, method: str) -> ControlRow:
    """A DQN-type method under the zoo's DQN row of ``env``."""
    control, agent = ZOO_DQN[env]
    fields = _fields(method)
    agent = {**agent, **{k: v for k, v in ZOO_NETWORK.items() if k in fields}}
    if method == "qrdqn":
        agent.update(num_quantiles=ZOO_QUANTILES[env], max_grad_norm=None)
    if method == "lmcdqn":
        agent.pop("learning_rate", None)
        agent.update(step_size=ZOO_DQN[env][1]["learning_rate"], **LMCDQN.get(env, {}))
    agent = {k: v for k, v in agent.items() if k in fields}
    return ControlRow(env, method, agent, {**CONTROL_STUDY_ENVS[env], **control})


# SGHMC's momentum (friction 0.1) multiplies its steps by about 1/friction: its eps0 is LKTD's
# times the friction (not swept; LKTD's own eps0 made CartPole collapse)
STEP_FACTOR = {"sghmc": 0.1}


def lktd_row(env: str, method: str) -> ControlRow:
    batch = 64 if env == "CartPole-v1" else 128
    control = {**CONTROL_STUDY_ENVS[env], **LKTD_PROTOCOL, "batch_size": batch}
    step = LKTD_STEP[env] * STEP_FACTOR.get(method, 1.0)
    return ControlRow(env, method, {"sampler.step_size": step}, control)


def kova_row(env: str) -> ControlRow:
    control, _ = ZOO_DQN[env]
    return ControlRow(
        env, "kova", {"hidden": (64, 64)}, {**CONTROL_STUDY_ENVS[env], **control}, "kova_64x64"
    )


# KOVA runs only where its EKF steps fit this per-seed budget, at KOVA_FLOPS_PER_S (a quiet core)
KOVA_BUDGET_S = 1800.0
KOVA_FLOPS_PER_S = 50e9


def kova_estimate_s(row: ControlRow) -> float:
    """Seconds per seed of a KOVA row's EKF steps, to leading order (:func:`kova_update_flops`)."""
    from lktd_ppl.agents.kova import kova_update_flops, mlp_num_params

    spec = row_spec(row, [0])
    c, a = spec.control, spec.agent
    updates = (c.total_steps - c.train_start) // c.train_every * c.gradient_steps
    p = mlp_num_params(a.obs_dim, tuple(a.hidden), a.num_actions)
    return updates * kova_update_flops(p, c.batch_size) / KOVA_FLOPS_PER_S


def with_knobs(base: ControlRow, knobs: dict, label: str) -> ControlRow:
    """``base`` with agent settings (and a ``control`` dict of protocol settings) replaced."""
    agent = {k: v for k, v in knobs.items() if k != "control"}
    control = {**base.control, **knobs.get("control", {})}
    return base._replace(agent={**base.agent, **agent}, control=control, label=label)


# where the sweeps' LKTD variants (SWEEP_LKTD_VARIANTS) beat the step-size sweep, the best one
# per environment: the study's ``lktd_variant`` row (beside ``lktd``, the shared protocol)
LKTD_VARIANT: dict[str, str] = {
    # 14.4 on seeds 100-102 against -59.4 for the step-size sweep's best (sweeps/table.md)
    "LunarLander-v3": "lktd_every1_target250_eps1.25e-05",
}


def study_rows(envs: list[str], methods: list[str]) -> list[ControlRow]:
    rows = []
    for env in envs:
        for method in methods:
            if method == "lktd_variant":
                if env in LKTD_VARIANT:
                    knobs = SWEEP_LKTD_VARIANTS[env][LKTD_VARIANT[env]]
                    rows.append(with_knobs(lktd_row(env, "lktd"), knobs, method))
            elif method in ("lktd", "sgld", "sghmc"):
                rows.append(lktd_row(env, method))
            elif method == "kova":
                rows.append(kova_row(env))
            else:
                rows.append(network_row(env, method))
    return rows


# the values each sweep tries (the full budget of the environment, seeds from SWEEP_FIRST_SEED)
SWEEP_LKTD_STEPS = (2.5e-5, 5e-5, 1e-4, 2e-4)
# where the best value sat at an end of the grid, the grid goes on that way (on LunarLander
# every seed diverged at every value of the grid: it goes on downwards)
SWEEP_LKTD_MORE = {
    "MountainCar-v0": (4e-4, 8e-4, 1.6e-3),
    "Acrobot-v1": (1.25e-5, 6.25e-6),
    "LunarLander-v3": (1.25e-5, 6.25e-6, 3.125e-6),
}
# beyond the step size, where LKTD stays behind at every step size, by label: the Q-learning
# measurement, a target network (``target_every`` stages; 63 stages of 4 steps ~ the zoo's sync
# every 250 env steps), the forecast's diagonal preconditioner, a stage every step (``control``:
# the protocol's settings that differ)
_TARGET = {"target_every": 63}
_QLEARNING = {"model": "mlp_control:qlearning_gaussian", **_TARGET}
_EVERY1 = {"control": {"train_every": 1}, "target_every": 250}  # the target every 250 steps
_EVERY1_BUFFER50K = {**_EVERY1, "control": {"train_every": 1, "buffer_size": 50_000}}
SWEEP_LKTD_VARIANTS: dict[str, dict[str, dict]] = {
    "MountainCar-v0": {
        "lktd_qlearning_target_eps0.0002": {**_QLEARNING, "sampler.step_size": 2e-4},
        "lktd_qlearning_target_eps0.0004": {**_QLEARNING, "sampler.step_size": 4e-4},
        # 4 chains: Thompson sampling over them (a chain drawn per episode), epsilon-greedy on top
        "lktd_chains4_eps0.0002": {"num_chains": 4, "sampler.step_size": 2e-4},
    },
    "Acrobot-v1": {
        "lktd_qlearning_target_eps5e-05": {**_QLEARNING, "sampler.step_size": 5e-5},
        "lktd_qlearning_target_eps0.0001": {**_QLEARNING, "sampler.step_size": 1e-4},
        "lktd_every1_target250_eps1.25e-05": {**_EVERY1, "sampler.step_size": 1.25e-5},
    },
    "LunarLander-v3": {
        "lktd_target_eps5e-05": {**_TARGET, "sampler.step_size": 5e-5},
        "lktd_qlearning_target_eps1.25e-05": {**_QLEARNING, "sampler.step_size": 1.25e-5},
        "lktd_qlearning_target_eps5e-05": {**_QLEARNING, "sampler.step_size": 5e-5},
        "lktd_qlearning_target_eps0.0001": {**_QLEARNING, "sampler.step_size": 1e-4},
        "lktd_qlearning_target_eps0.0002": {**_QLEARNING, "sampler.step_size": 2e-4},
        # pSGLD's diagonal preconditioner on the forecast, capped at 100 (``precondition_max``)
        "lktd_target_precond100_eps1.25e-05": {
            **_TARGET,
            "sampler.precondition_max": 100.0,
            "sampler.step_size": 1.25e-5,
        },
        "lktd_precond100_eps1.25e-05": {
            "sampler.precondition_max": 100.0,
            "sampler.step_size": 1.25e-5,
        },
        # a stage every step (the DQN rows' one update per step), the target synced every 250
        "lktd_every1_target250_eps1.25e-05": {**_EVERY1, "sampler.step_size": 1.25e-5},
        "lktd_every1_qlearning_target250_eps5e-05": {
            **_QLEARNING,
            **_EVERY1,
            "sampler.step_size": 5e-5,
        },
        "lktd_every1_qlearning_target250_eps2.5e-05": {
            **_QLEARNING,
            **_EVERY1,
            "sampler.step_size": 2.5e-5,
        },
        # the best variant with the DQN rows' replay buffer (50 000 transitions, not 10 000)
        "lktd_every1_target250_buffer50k_eps1.25e-05": {
            **_EVERY1_BUFFER50K,
            "sampler.step_size": 1.25e-5,
        },
        "lktd_every1_target250_buffer50k_eps2.5e-05": {
            **_EVERY1_BUFFER50K,
            "sampler.step_size": 2.5e-5,
        },
    },
}
SWEEP_LMCDQN = tuple(
    {"bias_factor": a, "inverse_temperature": b} for a in (0.1, 1.0) for b in (1e5, 1e7)
)


def sweep_rows(envs: list[str]) -> list[ControlRow]:
    """Every setting each sweep tries, one row per setting (labelled with it)."""
    rows = []
    for env in envs:
        base = lktd_row(env, "lktd")
        for eps in SWEEP_LKTD_STEPS + SWEEP_LKTD_MORE.get(env, ()):
            agent = {**base.agent, "sampler.step_size": eps}
            rows.append(base._replace(agent=agent, label=f"lktd_eps{eps:g}"))
        for label, knobs in SWEEP_LKTD_VARIANTS.get(env, {}).items():
            rows.append(with_knobs(base, knobs, label))
        base = network_row(env, "lmcdqn")
        for knobs in SWEEP_LMCDQN:
            label = "lmcdqn_" + "_".join(f"{k.split('_')[0]}{v:g}" for k, v in knobs.items())
            rows.append(base._replace(agent={**base.agent, **knobs}, label=label))
    return rows


def table_rows(out: Path, seeds: list[int], sweep: bool) -> list[ControlRow]:
    """The rows of ``OUT/table.md``: every environment and row with results on disk, not only the
    ones a call ran (the study's rows and Stable-Baselines3's DQN, or every sweep setting)."""
    every_env = list(CONTROL_STUDY_ENVS)
    rows = sweep_rows(every_env) if sweep else study_rows(every_env, list(METHODS))
    if not sweep:  # Stable-Baselines3's DQN (experiments/sb3_reference.py), where it ran
        rows += [ControlRow(env, "dqn", {}, {}, "sb3_dqn") for env in every_env]
    with_data = {r.env for r in rows if load_row(out, r, seeds) is not None}
    return [r for r in rows if r.env in with_data]


def timing(rows: list[ControlRow], fraction: float, out: Path) -> None:
    """Per row: 2 seeds at ``fraction`` of the budget, twice; compile time and projected seconds
    per seed at the full budget into ``OUT/timing.csv``."""
    import jax
    import jax.numpy as jnp

    from lktd_ppl.training import make_train

    records = []
    for row in rows:
        total = int(row.control["total_steps"])
        every = int(row.control["eval_every"])
        steps = max(every, int(round(total * fraction / every)) * every)
        short = row._replace(control={**row.control, "total_steps": steps})
        spec = row_spec(short, [900, 901])
        train = make_train(spec)
        keys = jnp.stack([jax.random.key(s) for s in (900, 901)])
        t0 = time.perf_counter()
        train(keys, progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        train(keys, progress=False)
        second = time.perf_counter() - t0
        per_seed = second / 2 * total / steps
        rec = {
            "env": row.env,
            "row": row.name,
            "steps_timed": steps,
            "compile_s": round(first - second, 1),
            "run_s_per_seed_full": round(per_seed, 1),
            "batch_of_10_s": round(first - second + 10 * per_seed, 1),
        }
        print(rec, flush=True)
        records.append(rec)
        del train
        jax.clear_caches()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "timing.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def parse_seeds(text: str, sweep: bool) -> tuple[list[int], list[int]]:
    """``--seeds``: (the seeds to run, the seeds the tables cover).  ``N``: the first N evaluation
    seeds (sweeps: from ``SWEEP_FIRST_SEED``), the tables over the same; ``A-B``: seeds A..B, the
    tables over those and the first 10 (the evaluation seeds, or the sweep's), so a process that
    runs part of a row writes tables of the whole row."""
    first = SWEEP_FIRST_SEED if sweep else 0
    lo, dash, hi = text.partition("-")
    if not dash:
        if not lo.isdigit() or int(lo) < 1:
            raise SystemExit(f"--seeds must be a count N >= 1 or a range A-B, got {text!r}")
        seeds = list(range(first, first + int(lo)))
        return seeds, seeds
    if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
        raise SystemExit(f"--seeds must be a count N >= 1 or a range A-B with A <= B, got {text!r}")
    seeds = list(range(int(lo), int(hi) + 1))
    if sweep and seeds[0] < SWEEP_FIRST_SEED:
        raise SystemExit(f"--seeds {text}: sweep seeds start at {SWEEP_FIRST_SEED}")
    if not sweep and seeds[-1] >= SWEEP_FIRST_SEED:
        raise SystemExit(f"--seeds {text}: seeds from {SWEEP_FIRST_SEED} on are the sweeps'")
    return seeds, sorted(set(range(first, first + len(EVAL_SEEDS))) | set(seeds))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--envs", default=",".join(CONTROL_STUDY_ENVS), help="comma-separated ids")
    ap.add_argument("--rows", default=",".join(METHODS), help="comma-separated methods")
    ap.add_argument(
        "--seeds",
        default=str(len(EVAL_SEEDS)),
        help="N: seeds 0..N-1 (sweeps: 100..100+N-1); A-B: seeds A to B only (e.g. 6-9, to share "
        "a row's batches between processes), the tables still over every seed on disk",
    )
    ap.add_argument("--batch", type=int, default=5, help="seeds vmapped per call (default 5)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="run the sweeps (seeds from 100)")
    ap.add_argument("--time", type=float, default=0.0, help="timing mode at this budget fraction")
    args = ap.parse_args(argv)
    envs = [e for e in args.envs.split(",") if e]
    methods = [m for m in args.rows.split(",") if m]
    seeds, table_seeds = parse_seeds(args.seeds, args.sweep)
    if args.sweep:
        rows = [r for r in sweep_rows(envs) if r.method in methods]
        args.out = args.out / "sweeps"
    else:
        rows = study_rows(envs, methods)
    if args.time:
        timing(rows, args.time, args.out)
        return 0
    if not args.aggregate_only:
        for row in rows:  # every row's settings (a sweep's every value) checked before any runs
            row_spec(row, seeds[: args.batch])
        for row in rows:
            if row.method == "kova" and (need := kova_estimate_s(row)) > KOVA_BUDGET_S:
                print(
                    f"{row.env}/{row.name}: refused: its EKF steps take about {need / 60:.0f} min "
                    f"per seed at {KOVA_FLOPS_PER_S / 1e9:.0f} GFLOP/s (budget "
                    f"{KOVA_BUDGET_S / 60:.0f} min)",
                    flush=True,
                )
                continue
            for batch in pending(row, seeds, args.batch, args.out):
                if batch_path(args.out, row, batch).exists():  # another process ran it meanwhile
                    continue
                t0 = time.perf_counter()
                print(f"{row.env}/{row.name}: seeds {batch[0]}-{batch[-1]} ...", flush=True)
                run_batch(row, batch, args.out)
                print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = table_rows(args.out, table_seeds, args.sweep)
    write_tables(args.out, rows, table_seeds)
    plot_curves(args.out, rows, table_seeds)
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
