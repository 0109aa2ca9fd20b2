"""What the data of one run allow (issue 5, the headline's MSE target of 5e-4).

Runs one seed of a study configuration (``escape_study.py``'s names; default the headline,
``lktd_N10000_m10``) for 1M steps and keeps its final replay buffer (10 000 SARSA transitions) and
its chains' final positions.  Then, with that buffer held fixed:

- frozen: the same chains go on with the same kernel, minibatch size and eps0 (the stage counter
  past the prior's annealing) for ``--warmup`` stages, then ``--keep`` stages whose Q-grids are kept;
  the pooled mean of those is the posterior mean given that buffer, free of the moving data's lag;
- mode: the maximum of the same target, log prior + (N / buffer size) x log-likelihood of the whole
  buffer (semi-gradient, as the model stops the bootstrap's gradient), by full-batch Adam from each
  chain's final position.

It prints, per action over the legal cells, the MSE against the truth of the run's own pooled mean
(the study's figure for that run), of the frozen-buffer posterior mean, of the modes' mean and of
one mode, and how many of the buffer's transitions take each action.  If the frozen posterior mean
errs as much as the run's, the run's error is the posterior's: what the buffer's data and the model
allow, which no sampler setting at these settings removes.  It also scores the intervals of both
sample sets (equal-tailed coverage at the study's levels, 95% width): with ``--frozen-set`` the
frozen phase takes its own step size (``--frozen-phases`` lowers it by degrees first), which shows
how far the sampler's law at a step is from the posterior's.

    .venv/bin/python experiments/archive/frozen_buffer.py --seeds 7
    .venv/bin/python experiments/archive/frozen_buffer.py --seeds 0 1 2 3 --out RESULTS.md
    .venv/bin/python experiments/archive/frozen_buffer.py --seeds 0 --set '{"escape": {"buffer_size": 30000}}'
    .venv/bin/python experiments/archive/frozen_buffer.py --seeds 0 --warmup 120000 \
        --frozen-phases 2.2e-6:40000,7e-7:40000 --frozen-set '{"step_size": 2.2e-7}'

Archived: a one-off tool of the calibration search (experiments/archive/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # escape_study.py's rows
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_final(
    name: str,
    seed: int,
    steps: int = 1_000_000,
    changes: dict | None = None,
    windows: tuple[int, ...] = (),
) -> dict:
    """One run's final buffer (dict of (size, ...) arrays), positions (m, p), pooled-mean MSE.

    ``changes``: fields set over the configuration's own (``"escape"``: a dict of its fields).
    ``windows``: also the pooled mean's MSE over the last w stages for each w (at most the run's
    ``sample_size``), under ``"window_mse"``.
    """
    from escape_study import rows

    from lktd_ppl.metrics import chronological_samples
    from lktd_ppl.study.runner import make_train_for

    row = rows()[name]
    changes = dict(changes or {})
    escape = {**row.overrides.get("escape", {}), **changes.pop("escape", {})}
    overrides = {**row.overrides, **changes, "escape": escape}
    train, cfg = make_train_for(row.algo, row.preset, overrides, steps)
    res = train(jax.random.key(seed)[None], progress=False)
    state = res["state"]
    buffer = jax.tree.map(lambda a: np.asarray(a[0, 0]), state.replay.experience)
    truth, mask = res["truth"], res["mask"]
    f = res["final"]
    vals = chronological_samples(  # (cells, A, stages, chains), oldest stage first
        f["samples"][0], f["valid"][0], f["slot"][0], cfg.num_chains, truth.shape
    )
    pooled = vals.mean((2, 3))
    window_mse = {w: per_action_mse(vals[:, :, -w:].mean((2, 3)), truth, mask) for w in windows}
    return {
        "config": cfg,
        "buffer": buffer,
        "full": bool(np.asarray(state.replay.is_full)[0]),
        "positions": np.asarray(state.learner.position[0]),
        "truth": truth,
        "mask": mask,
        "run_mse": per_action_mse(pooled, truth, mask),
        "run_samples": vals.reshape(*vals.shape[:2], -1),  # (cells, A, stages x chains)
        "window_mse": window_mse,
        "stages": steps // cfg.escape.train_every,
        "wall": res["wall_time"],
    }


def per_action_mse(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(A,) mean over legal cells of (estimate - truth)^2."""
    return per_action_mean((np.asarray(estimate, np.float64) - truth) ** 2, mask)


def per_action_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(A,) mean over the legal cells of a (cells, A) array (NaN where none is legal)."""
    return np.array(
        [
            values[mask[:, a], a].mean() if mask[:, a].any() else np.nan
            for a in range(values.shape[1])
        ]
    )


def _grid_fn(ssm, num_actions: int):
    """theta -> its (cells, A) Q-grid."""
    from lktd_ppl.agents.lktd import q_batch
    from lktd_ppl.envs.escape import cell_observations

    batch = q_batch(jnp.asarray(cell_observations()), num_actions)
    return lambda theta: ssm.deterministic(theta, batch, "q")


def frozen_posterior(
    final: dict,
    key: jax.Array,
    warmup: int,
    keep: int,
    stage0: int,
    phases: tuple[tuple[float, int], ...] = (),
) -> np.ndarray:
    """(cells, A, keep, m) Q-grids of the chains continued on the fixed buffer.

    ``phases``: (eps0, stages) pairs run first, in order, each with its own step size (a step
    lowered by degrees, so that the chains contract towards the narrower law of a small step),
    before the ``warmup`` and ``keep`` stages at the configuration's own step."""
    from lktd_ppl.agents.lktd import lktd_kernel
    from lktd_ppl.rng import uniform
    from lktd_ppl.ssm import STAGE_KEY

    cfg = final["config"]
    n = cfg.escape.batch_size
    ssm, kernel, _ = lktd_kernel(cfg, n)
    phase_kernels = [
        (lktd_kernel(dataclasses.replace(cfg, step_size=eps), n)[1], stages)
        for eps, stages in phases
    ]
    grid = _grid_fn(ssm, final["truth"].shape[1])
    data = jax.tree.map(jnp.asarray, final["buffer"])
    size = next(iter(final["buffer"].values())).shape[0]

    def stage(kern, s, xs):
        t, k = xs
        k_batch, k_step = jax.random.split(k)
        idx = jnp.minimum((uniform(k_batch, (n,)) * size).astype(jnp.int32), size - 1)
        batch = {**jax.tree.map(lambda a: a[idx], data), STAGE_KEY: t}
        return kern.step(k_step, s, batch)[0]

    def run(kern, s, t0, stages, k):
        ts = t0 + jnp.arange(stages, dtype=jnp.int32)
        s, _ = jax.lax.scan(
            lambda s, xs: (stage(kern, s, xs), None), s, (ts, jax.random.split(k, stages))
        )
        return s

    def chain(args):
        k, position = args
        k_warm, k_keep = jax.random.split(k)
        s, t0 = kernel.init(position), stage0
        for i, (kern, stages) in enumerate(phase_kernels):
            s = run(kern, s, t0, stages, jax.random.fold_in(k, i + 1))
            t0 += stages
        s = run(kernel, s, t0, warmup, k_warm)
        ts = t0 + warmup + jnp.arange(keep, dtype=jnp.int32)
        _, grids = jax.lax.scan(
            lambda s, xs: (lambda s2: (s2, grid(s2.position)))(stage(kernel, s, xs)),
            s,
            (ts, jax.random.split(k_keep, keep)),
        )
        return grids  # (keep, cells, A)

    positions = jnp.asarray(final["positions"])
    keys = jax.random.split(key, positions.shape[0])
    grids = jax.jit(lambda ks, ps: jax.lax.map(chain, (ks, ps)))(keys, positions)
    return np.asarray(grids).transpose(2, 3, 1, 0)


def posterior_modes(
    final: dict, iters: int, lr: float, stage0: int
) -> tuple[np.ndarray, np.ndarray]:
    """The target's modes reached from each chain's final position: (m, p) and their (m, cells, A)
    Q-grids."""
    import optax

    from lktd_ppl.agents.lktd import lktd_kernel
    from lktd_ppl.ssm import STAGE_KEY

    cfg = final["config"]
    ssm, _, _ = lktd_kernel(cfg, cfg.escape.batch_size)
    grid = _grid_fn(ssm, final["truth"].shape[1])
    data = {**jax.tree.map(jnp.asarray, final["buffer"]), STAGE_KEY: jnp.int32(stage0)}
    size = next(iter(final["buffer"].values())).shape[0]
    scale = cfg.pseudo_population / size

    def loss(theta):
        lp, ll = ssm.prior_and_loglik(theta, data)
        return -(lp + scale * ll) / cfg.pseudo_population

    opt = optax.adam(lr)

    def fit(theta):
        def step(carry, _):
            th, st = carry
            g = jax.grad(loss)(th)
            upd, st = opt.update(g, st, th)
            return (optax.apply_updates(th, upd), st), None

        (th, _), _ = jax.lax.scan(step, (theta, opt.init(theta)), None, length=iters)
        return th, grid(th)

    thetas, grids = jax.jit(lambda ps: jax.lax.map(fit, ps))(jnp.asarray(final["positions"]))
    return np.asarray(thetas), np.asarray(grids)


def interval_scores(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed coverage (levels, A) at the study's levels and the mean 95% width (A,) of
    (cells, A, S) samples, per action over the legal cells."""
    from decompose_spread import equal_tailed_cover

    lo, hi = np.quantile(samples, [0.025, 0.975], axis=-1)
    return equal_tailed_cover(samples, truth, mask), per_action_mean(hi - lo, mask)


def calibration_lines(final: dict, frozen: np.ndarray | None) -> list[str]:
    """A Markdown table of ``interval_scores`` for the run's pooled samples and for the
    frozen-buffer posterior's."""
    from lktd_ppl.metrics import LEVELS

    sets = {"the run's pooled samples": final["run_samples"]}
    if frozen is not None:
        sets["frozen buffer: posterior samples"] = frozen.reshape(*frozen.shape[:2], -1)
    head = " | ".join(f"{lv:.0%} E/N/W/S" for lv in LEVELS)
    lines = ["", f"| equal-tailed coverage | {head} | 95% width E/N/W/S |", "|---" * 6 + "|"]
    for label, samples in sets.items():
        cover, width = interval_scores(samples, final["truth"], final["mask"])
        cells = " | ".join("/".join(f"{c:.2f}" for c in row) for row in cover)
        lines.append(f"| {label} | {cells} | " + "/".join(f"{w:.3f}" for w in width) + " |")
    return lines


def report(
    seed: int, final: dict, frozen: np.ndarray | None, modes: np.ndarray | None
) -> list[str]:
    truth, mask = final["truth"], final["mask"]
    rows = {f"the run's pooled mean (last {w} stages)": e for w, e in final["window_mse"].items()}
    rows[f"the run's pooled mean (last {final['config'].escape.sample_size} stages)"] = final[
        "run_mse"
    ]
    if frozen is not None:
        rows["frozen buffer: posterior mean"] = per_action_mse(frozen.mean((2, 3)), truth, mask)
    if modes is not None:
        rows["frozen buffer: mean of the modes"] = per_action_mse(modes.mean(0), truth, mask)
        rows["frozen buffer: one mode"] = np.mean(
            [per_action_mse(q, truth, mask) for q in modes], axis=0
        )
    counts = np.bincount(final["buffer"]["action"], minlength=truth.shape[1])
    lines = [
        f"seed {seed} (run {final['wall']:.0f} s; buffer of {final['config'].escape.buffer_size}, "
        f"full: {final['full']}; "
        f"transitions per action E/N/W/S {'/'.join(str(c) for c in counts)})",
        "",
        "| MSE against the truth | E | N | W | S | average |",
        "|---|---|---|---|---|---|",
    ]
    for label, mse in rows.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{x:.1e}" for x in mse) + f" | {mse.mean():.1e} |"
        )
    return lines + calibration_lines(final, frozen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="lktd_N10000_m10")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7])
    ap.add_argument("--warmup", type=int, default=20_000, help="frozen stages before keeping")
    ap.add_argument("--keep", type=int, default=3_000, help="frozen stages kept (per chain)")
    ap.add_argument("--mode-iters", type=int, default=5_000, help="0: no modes")
    ap.add_argument("--mode-lr", type=float, default=1e-3)
    ap.add_argument(
        "--set",
        default="{}",
        help="JSON fields over the configuration's own, e.g. "
        '\'{"escape": {"buffer_size": 30000}}\'',
    )
    ap.add_argument(
        "--windows",
        type=int,
        nargs="*",
        default=[],
        help="also the run's pooled mean over its last W stages, for each W (<= sample_size)",
    )
    ap.add_argument(
        "--frozen-set",
        default="{}",
        help="JSON fields of the chains' configuration for the frozen phase only, e.g. "
        "'{\"step_size\": 2.2e-6}' (a smaller step: closer to the posterior itself)",
    )
    ap.add_argument(
        "--frozen-phases",
        default="",
        help="step-size phases before the warmup, EPS:STAGES,EPS:STAGES,... (e.g. "
        "'2.2e-6:40000,7e-7:40000' with --frozen-set '{\"step_size\": 2.2e-7}')",
    )
    ap.add_argument(
        "--run-only", action="store_true", help="the run's own figures only (no frozen buffer)"
    )
    ap.add_argument("--out", type=Path, help="append the tables to this Markdown file")
    args = ap.parse_args(argv)
    for seed in args.seeds:
        t0 = time.time()
        final = run_final(
            args.config, seed, changes=json.loads(args.set), windows=tuple(args.windows)
        )
        stage0 = final["stages"]
        frozen = modes = None
        if not args.run_only:
            key = jax.random.key(10_000 + seed)
            frozen_cfg = dataclasses.replace(final["config"], **json.loads(args.frozen_set))
            phases = tuple(
                (float(eps), int(stages))
                for eps, stages in (p.split(":") for p in args.frozen_phases.split(",") if p)
            )
            frozen = frozen_posterior(
                {**final, "config": frozen_cfg}, key, args.warmup, args.keep, stage0, phases
            )
            if args.mode_iters > 0:
                _, modes = posterior_modes(final, args.mode_iters, args.mode_lr, stage0)
        lines = report(seed, final, frozen, modes)
        lines.append(f"\n({time.time() - t0:.0f} s in all)\n")
        print("\n".join(lines), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
