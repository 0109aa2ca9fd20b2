"""Run folders: write one run's results, read them back.

A run is one algorithm on one environment over ``seeds`` seeds (vmapped), described by a
:class:`RunSpec` (the algorithm's config dataclass, the escape protocol, seeds, thinning).
:func:`lktd_ppl.training.execute` trains it and calls :func:`write_run`.

A run folder holds:

- ``config.json``: the resolved :class:`RunSpec` (``lktd train --config DIR/config.json``
  reproduces the run: same config and seeds give the same metrics);
- ``metrics.csv``: one row per seed x evaluation: ``step, seed, episodes, mean_return`` (NaN when no
  episode ended since the previous evaluation), then every metric per action (``mse_E``,
  ``coverage_E``, ``coverage_equal_tailed_E``, ``width_E``, ``calibration50_E``,
  ``start_sq_error_E``, ...); NaN before the burn-in ends; ``diverged`` (after ``mean_return``)
  is 1 from the evaluation at which a seed diverged (:mod:`lktd_ppl.divergence`) on, and that
  seed's metrics there are NaN;
- ``samples.nc``: ArviZ DataTree (netCDF): group ``posterior`` with ``q`` dims
  ``(chain, draw, cell, action)``, the sampled Q-grids of the last ``sample_size`` training stages,
  in time order, thinned to at most ``max_draws`` draws per chain; chains are seed-major
  ``(seed, member)`` pairs (member = LKTD chain, BootDQN head; 1 for the point-estimate
  baselines; the seeds that diverged are left out, named by the root attribute
  ``diverged_seeds``, and a run whose every seed diverged has no ``samples.nc``); group
  ``constant_data`` with the truth ``q_true`` and the scored-entry ``mask``;
  group ``final_parameters`` with the final flat parameter vector (``theta``, dims
  ``(chain, param)`` for the LKTD family, ``(seed, param)`` otherwise); root attributes name the
  algorithm, the seeds, members per seed and the environment step of each draw
  (``first_draw_step + draw * draw_step``);
- ``checkpoint.npz``: the final learner state of every seed (a diverged seed's: its last finite
  one), one array per pytree leaf named by its path (leading axis = seed); :func:`load_checkpoint`
  rebuilds the pytree. The replay buffer and the
  sample ring are not saved: it is a final state to inspect or start from (the resume point of an
  unfinished run is ``resume.npz``, below);
- ``status.json``: ``running``, ``finished``, ``interrupted`` or ``failed``, the step reached, a
  message, and the process that wrote it; ``run.json``: the command line that started the run and
  each that resumed it, the package versions and the host;
- ``resume.npz`` (while the run is unfinished): the harness's whole carry (learner, replay buffer,
  environment, keys, sample ring) and its outputs so far (:mod:`lktd_ppl.checkpoint`), with
  ``metrics.csv`` so far, rewritten atomically between jitted calls; ``lktd train --resume``
  continues from it and removes it when the run finishes;
- ``summary.md``: the table the command prints (last window, mean over seeds);
- ``model.py`` (LKTD family): the run's copy of the NumPyro model file; ``config.json``'s
  ``agent.model`` points at it (a relative model path in a config file is relative to the file's
  folder) and ``model_source`` records where it was copied from, so a rerun uses the model as it
  was, whatever happened to the original since;
- plots (PNG): ``coverage_over_time``, ``learning_curve`` (median and IQR over seeds),
  ``interval_heatmaps`` (first seed), ``policy_quiver`` (mean over seeds).

A control task's run folder (``--env CartPole-v1``, :func:`write_control_run`) holds
``config.json``, ``model.py`` and ``checkpoint.npz`` as above, and

- ``metrics.csv``: one row per seed x evaluation: ``step, seed, eval_return`` (mean greedy return
  over the protocol's ``eval_episodes``), ``train_return`` (mean return of the training episodes
  that ended since the previous evaluation; NaN if none), ``diverged`` (as above);
- ``episodes.csv``: every training episode: ``seed, episode, step`` (the step that ended it),
  ``return, length``;
- ``samples.nc``: ``posterior`` ``q`` dims ``(chain, draw, cell, action)``: every member's Q at the
  run's probe states (``cell`` = probe) at every evaluation (``draw``); group ``probe_states``
  holds the probe observations ``obs (seed, cell, obs_dim)``;
- ``summary.md`` and ``learning_curve.png`` (greedy return, median and IQR over seeds).

:func:`diagnose` reads a folder back and adds ``diagnose.md``, ``diagnostics.csv`` (the ArviZ
summary of every scored entry) and ``calibration``, ``trace``, ``interval_heatmaps`` and (with
several chains) ``rhat_over_time`` plots.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lktd_ppl.config import RunError, RunSpec, spec_from_folder
from lktd_ppl.divergence import after_divergence, diverged_seeds, mask_after, summary_lines
from lktd_ppl.names import ACTION_NAMES, LEVELS
from lktd_ppl.run_status import write_status

PER_ACTION = (
    "mse",
    "coverage",
    "coverage_equal_tailed",
    "width",
    "start_sq_error",
    "start_coverage",
    "start_coverage_equal_tailed",
)
RUN_FILES = ("config.json", "metrics.csv", "samples.nc", "checkpoint.npz", "summary.md")
MAX_PARAMS_SAVED = 5_000_000  # final parameters go into samples.nc below this many floats


def metric_rows(spec: RunSpec, results: dict) -> list[dict]:
    """One dict per (seed, evaluation), in the order of ``metrics.csv``; from a seed's divergence
    on, its metrics are NaN and ``diverged`` is 1."""
    steps = np.asarray(results["eval_steps"])
    div = results.get("divergence")
    m = {k: mask_after(v, steps, div) for k, v in results["metrics"].items()}
    gone = after_divergence(steps, div) if div is not None else np.zeros((spec.seeds, len(steps)))
    episodes = np.asarray(results["episodes"])
    returns = np.where(episodes > 0, np.asarray(results["mean_return"], np.float64), np.nan)
    returns = mask_after(returns, steps, div)
    rows = []
    for i, seed in enumerate(spec.seed_list):
        for j, step in enumerate(steps):
            row: dict[str, Any] = {
                "step": int(step),
                "seed": seed,
                "episodes": int(episodes[i, j]),
                "mean_return": float(returns[i, j]),
                "diverged": int(gone[i, j]),
            }
            for name in PER_ACTION:
                for a, action in enumerate(ACTION_NAMES):
                    row[f"{name}_{action}"] = float(m[name][i, j, a])
            for li, lv in enumerate(LEVELS):
                for a, action in enumerate(ACTION_NAMES):
                    row[f"calibration{round(lv * 100)}_{action}"] = float(
                        m["calibration"][i, j, li, a]
                    )
            rows.append(row)
    return rows


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """``metrics.csv`` from its rows, written atomically (a temporary file, then a rename)."""
    from lktd_ppl.checkpoint import write_atomic

    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()}
            )

    write_atomic(path, write, mode="w")


# -- the run's progress ---------------------------------------------------------------------


def write_progress(folder: Path, spec: RunSpec, partial: dict) -> None:
    """After a checkpoint: ``metrics.csv`` so far and the status with the step reached."""
    if spec.control is not None:
        from lktd_ppl.control_run import control_metric_rows

        rows = control_metric_rows(spec, partial)
    else:
        rows = metric_rows(spec, partial)
    if rows:
        write_metrics_csv(folder / "metrics.csv", rows)
    steps = partial["eval_steps"]
    write_status(folder, "running", step=int(steps[-1]) if len(steps) else 0)


def read_metrics(folder: str | Path) -> dict[str, np.ndarray]:
    """``metrics.csv`` as columns (float arrays; ``step``, ``seed``, ``episodes`` as integers)."""
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        raise RunError(f"{str(path)!r} does not exist: is {str(folder)!r} a run folder?")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RunError(f"{str(path)!r} holds no rows")
    cols = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    for k in ("step", "seed", "episodes", "diverged"):
        if k in cols:
            cols[k] = cols[k].astype(np.int64)
    return cols


def last_window_means(cols: dict[str, np.ndarray], total_steps: int, window: int) -> dict:
    """Metric -> mean over seeds of the per-seed mean over the last window's evaluations."""
    last = cols["step"] > total_steps - window
    seeds = np.unique(cols["seed"])
    out = {}
    for k, v in cols.items():
        if k in ("step", "seed", "diverged"):
            continue
        per_seed = [_nanmean(v[last & (cols["seed"] == s)]) for s in seeds]
        out[k] = _nanmean(np.array(per_seed))
    return out


def _nanmean(x: np.ndarray, axis: int | None = None) -> Any:
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    count = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)[()]


def _fmt(v: float, spec: str) -> str:
    return "-" if not np.isfinite(v) else format(float(v), spec)


def run_facts(spec: RunSpec, wall_time: float | None) -> str:
    """The summary's first line: seeds, members, steps and (if known) the wall time."""
    members, total = spec.members, spec.protocol.total_steps
    facts = (
        f"{spec.seeds} seed{'s' if spec.seeds > 1 else ''} ({spec.first_seed}.."
        f"{spec.first_seed + spec.seeds - 1}) x {members} member{'s' if members > 1 else ''}, "
        f"{total:,} environment steps"
    )
    if wall_time is not None:
        rate = total * spec.seeds / max(wall_time, 1e-9)
        facts += f", {wall_time:.1f} s ({rate:,.0f} steps/s, compile included)"
    return facts + "."


def summary_table(spec: RunSpec, cols: dict[str, np.ndarray], wall_time: float | None) -> str:
    """The Markdown summary the command prints and writes to ``summary.md``."""
    e = spec.escape
    means = last_window_means(cols, e.total_steps, e.window)
    first = max(e.total_steps - e.window, 0) + 1
    lines = [f"# {spec.algo} on {spec.env}", ""]
    lines += [
        run_facts(spec, wall_time),
        f"Last window (steps {first:,}-{e.total_steps:,}), mean over seeds; truth: Q of the "
        f"epsilon-greedy (epsilon = {e.truth_epsilon}) optimal policy, computed exactly.",
        "",
        "| action | coverage | equal-tailed | MSE | width | start coverage | start sq. error |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label: str, get: Callable[[str], float]) -> str:
        return (
            f"| {label} | {_fmt(get('coverage'), '.4f')} | "
            f"{_fmt(get('coverage_equal_tailed'), '.4f')} | {_fmt(get('mse'), '.3e')} | "
            f"{_fmt(get('width'), '.4f')} | {_fmt(get('start_coverage'), '.4f')} | "
            f"{_fmt(get('start_sq_error'), '.3e')} |"
        )

    for a in ACTION_NAMES:
        lines.append(row(a, lambda name, a=a: means[f"{name}_{a}"]))
    lines.append(
        row("avg", lambda name: _nanmean(np.array([means[f"{name}_{a}"] for a in ACTION_NAMES])))
    )
    cal = [
        _nanmean(np.array([means[f"calibration{round(lv * 100)}_{a}"] for a in ACTION_NAMES]))
        for lv in LEVELS
    ]
    ret = means["mean_return"]
    lines += [
        "",
        "Calibration (equal-tailed coverage at nominal "
        + " / ".join(f"{lv:.0%}" for lv in LEVELS)
        + ", avg over actions): "
        + " / ".join(_fmt(c, ".4f") for c in cal)
        + f". Mean return: {_fmt(ret, '.2f')}.",
        "",
        "coverage: the paper's (95% interval centred at the latest sample; a calibrated posterior "
        "scores about 0.834); equal-tailed: q2.5 < truth < q97.5 (calibrated: 0.95). MSE and width "
        "over legal cells; start: the start cell (only E and N are legal there).",
    ]
    return "\n".join(lines) + "\n"


def ordered_draws(final: dict, seed_index: int, sample_size: int, members: int) -> np.ndarray:
    """The stored Q-grids of one seed in time order: (members, draws, cells * actions)."""
    ring = np.asarray(final["samples"][seed_index])  # (cells*A, S*m)
    valid = np.asarray(final["valid"][seed_index]).reshape(sample_size, members).all(axis=1)
    slot = int(final["slot"][seed_index])
    order = (slot + np.arange(sample_size)) % sample_size
    order = order[valid[order]]
    grids = ring.reshape(ring.shape[0], sample_size, members)[:, order]  # (cells*A, n, m)
    return np.transpose(grids, (2, 1, 0))


def thin_index(n: int, max_draws: int) -> np.ndarray:
    """Evenly strided indices into ``n`` draws, at most ``max_draws``, always keeping the last."""
    stride = max(1, math.ceil(n / max_draws))
    return np.arange(n - 1, -1, -stride)[::-1]


def _leaf_name(path: tuple) -> str:
    import jax

    return jax.tree_util.keystr(path).lstrip(".") or "leaf"


def _to_numpy(leaf: Any) -> np.ndarray:
    import jax

    if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def write_config(out: Path, spec: RunSpec) -> dict:
    """Create the folder and write ``config.json`` (and, for the LKTD family, the run's copy of
    the model, ``model.py``); returns the config as written."""
    out.mkdir(parents=True, exist_ok=True)
    config = spec.to_dict()
    if spec.algorithm.samples_model:  # the run folder keeps its own copy of the model
        from lktd_ppl.api import resolve_model

        source, name = resolve_model(spec.agent.model)
        if source.resolve() != (out / "model.py").resolve():
            shutil.copyfile(source, out / "model.py")
        config["agent"]["model"] = f"model.py:{name}"
        config["model_source"] = spec.agent.model
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return config


def write_checkpoint(out: Path, learner_state: Any) -> None:
    """``checkpoint.npz``: one array per leaf of the learner state, named by its path."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(learner_state))[0]
    np.savez_compressed(out / "checkpoint.npz", **{_leaf_name(p): _to_numpy(v) for p, v in leaves})


def sample_attrs(spec: RunSpec, members: int, steps: np.ndarray) -> dict[str, Any]:
    """The root attributes of ``samples.nc`` that every run folder has: what ran, the chain
    layout, and the environment step of each draw (``first_draw_step + draw * draw_step``)."""
    return {
        "algo": spec.algo,
        "env": spec.env,
        "seeds": spec.seed_list,
        "members_per_seed": members,
        "chain_layout": "seed-major: chain = seed_index * members_per_seed + member",
        "first_draw_step": int(steps[0]) if len(steps) else 0,
        "draw_step": int(steps[1] - steps[0]) if len(steps) > 1 else 0,
    }


def write_run(out: str | Path, spec: RunSpec, results: dict, config: dict | None = None) -> Path:
    """Write the run folder (see the module docstring) from the harness's ``results``;
    ``config``: the ``config.json`` already written (by the run's start), else it is written."""

    from lktd_ppl import diagnostics as dg

    if spec.control is not None:
        from lktd_ppl.control_run import write_control_run

        return write_control_run(out, spec, results, config)
    out = Path(out)
    e = spec.escape
    config = write_config(out, spec) if config is None else config
    rows = metric_rows(spec, results)
    write_metrics_csv(out / "metrics.csv", rows)

    # samples.nc: the chains of the seeds that did not diverge (none: no samples.nc)
    members = spec.members
    final = results["final"]
    truth = np.where(results["mask"], results["truth"], np.nan)
    cells, num_actions = truth.shape
    bad = diverged_seeds(spec.seed_list, results.get("divergence"))
    kept = [i for i, s in enumerate(spec.seed_list) if s not in bad]
    per_seed = [ordered_draws(final, i, e.sample_size, members) for i in kept]
    learner_state = results["state"].learner
    if per_seed:
        n = per_seed[0].shape[1]
        idx = thin_index(n, spec.max_draws)
        q = np.concatenate([d[:, idx] for d in per_seed]).reshape(-1, len(idx), cells, num_actions)
        steps = e.total_steps - (n - 1 - idx) * e.train_every
        attrs = {
            **sample_attrs(spec, members, steps),
            "stored_stages": int(n),
            "grid_size": int(e.size),
            "config": json.dumps(config),
        }
        if bad:
            attrs["seeds"] = [spec.seed_list[i] for i in kept]
            attrs["diverged_seeds"] = bad
        tree = dg.q_samples_to_datatree(q, truth=truth, mask=results["mask"], attrs=attrs)
        params = spec.algorithm.flat_parameters(learner_state)
        if params[1].size <= MAX_PARAMS_SAVED:
            import xarray as xr

            dims, theta = params
            tree["final_parameters"] = xr.DataTree(xr.Dataset({"theta": (dims, theta)}))
        dg.save_datatree(tree, out / "samples.nc")

    write_checkpoint(out, learner_state)

    # summary and plots
    cols = read_metrics(out)
    summary = summary_table(spec, cols, results.get("wall_time"))
    summary += "\n".join(divergence_notes(spec, results))
    (out / "summary.md").write_text(summary)
    title = f"{spec.algo}, {e.total_steps:,} steps, {spec.seeds} seed(s)"
    evals = np.asarray(results["eval_steps"])
    m = results["metrics"]
    win_steps, win_cov = window_average(evals, m["coverage"], e.window, e.total_steps)
    _, win_et = window_average(evals, m["coverage_equal_tailed"], e.window, e.total_steps)
    dg.plot_coverage_over_time(
        win_steps,
        _nanmean(win_cov, axis=0),
        _nanmean(win_et, axis=0),
        title=f"coverage (window means): {title}",
        path=out / "coverage_over_time.png",
    )
    returns = np.where(results["episodes"] > 0, results["mean_return"], np.nan)
    dg.plot_learning_curve(evals, returns, label=spec.algo, path=out / "learning_curve.png")
    first_seed = per_seed[0].reshape(-1, cells, num_actions) if per_seed else np.zeros((0,))
    if first_seed.shape[0] >= 2:
        dg.plot_interval_heatmaps(
            first_seed,
            truth,
            results["mask"],
            e.size,
            title=f"95% intervals, seed {spec.seed_list[kept[0]]}: {title}",
            path=out / "interval_heatmaps.png",
        )
    dg.plot_policy_quiver(
        np.mean(np.asarray(final["policy_frequency"]), axis=0),
        e.size,
        title=f"mean greedy-policy probability: {title}",
        path=out / "policy_quiver.png",
    )
    return out


def divergence_notes(spec: RunSpec, results: dict) -> list[str]:
    """summary.md's lines on diverged seeds (none: empty), ending with a newline."""
    lines = summary_lines(spec.seed_list, spec.members, results.get("divergence"))
    if lines and not any(
        s not in diverged_seeds(spec.seed_list, results["divergence"]) for s in spec.seed_list
    ):
        lines.append("Every seed diverged: no samples.nc was written.")
    return [*lines, ""] if lines else []


def window_average(
    steps: np.ndarray, values: np.ndarray, window: int, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-window means of ``values`` (seeds, evals, ...) over the evaluations at ``steps``:
    (window end steps, (seeds, windows, ...)); the paper logs its metrics this way."""
    ids = (np.asarray(steps) - 1) // window
    keys = np.unique(ids)
    means = np.stack([_nanmean(values[:, ids == k], axis=1) for k in keys], axis=1)
    return np.minimum((keys + 1) * window, total), means


def load_checkpoint(folder: str | Path) -> Any:
    """The final learner state saved in ``folder/checkpoint.npz``, as the learner's pytree (every
    leaf with a leading seed axis)."""
    import jax

    folder = Path(folder)
    spec = spec_from_folder(folder)
    path = folder / "checkpoint.npz"
    if not path.is_file():
        raise RunError(f"{str(path)!r} does not exist")
    from lktd_ppl.training import make_learner

    learner = make_learner(spec)
    shapes = jax.eval_shape(learner.init, jax.random.key(0))
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    with np.load(path) as data:
        leaves = [data[_leaf_name(p)] for p, _ in paths]
    return jax.tree_util.tree_unflatten(treedef, leaves)
