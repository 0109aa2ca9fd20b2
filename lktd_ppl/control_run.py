"""A control task's run folder (the layout is in :mod:`lktd_ppl.run_folder`'s docstring): written
from the control harness's results (:func:`lktd_ppl.agents.control.make_control_train`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lktd_ppl.config import RunSpec
from lktd_ppl.divergence import after_divergence, diverged_seeds, mask_after
from lktd_ppl.run_folder import (
    divergence_notes,
    read_metrics,
    run_facts,
    sample_attrs,
    write_checkpoint,
    write_config,
    write_metrics_csv,
)

METRICS = ("step", "seed", "eval_return", "train_return", "diverged")


def control_metric_rows(spec: RunSpec, results: dict) -> list[dict]:
    """One dict per (seed, evaluation), in the order of ``metrics.csv``; from a seed's divergence
    on, its returns are NaN and ``diverged`` is 1."""
    steps = np.asarray(results["eval_steps"])
    div = results.get("divergence")
    evals = mask_after(results["eval_return"], steps, div)
    trains = mask_after(results["train_return"], steps, div)
    gone = after_divergence(steps, div) if div is not None else np.zeros(evals.shape, bool)
    rows = []
    for i, seed in enumerate(spec.seed_list):
        for j, step in enumerate(steps):
            rows.append(
                {
                    "step": int(step),
                    "seed": seed,
                    "eval_return": float(evals[i, j]),
                    "train_return": float(trains[i, j]),
                    "diverged": int(gone[i, j]),
                }
            )
    return rows


def write_episodes_csv(path: Path, spec: RunSpec, episodes: dict) -> None:
    """Every training episode: seed, episode (per seed, from 0), step, return, length."""
    seeds = spec.seed_list
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "episode", "step", "return", "length"])
        count: dict[int, int] = {}
        for i, step, ret, length in zip(
            episodes["seed_index"],
            episodes["step"],
            episodes["return"],
            episodes["length"],
            strict=True,
        ):
            seed = seeds[int(i)]
            k = count.get(seed, 0)
            count[seed] = k + 1
            writer.writerow([seed, k, int(step), f"{float(ret):.9g}", int(length)])


def control_summary(spec: RunSpec, cols: dict[str, np.ndarray], wall_time: float | None) -> str:
    """The Markdown summary of a control run: greedy and training returns over seeds."""
    c = spec.control
    seeds = np.unique(cols["seed"])
    last = cols["step"] == cols["step"].max()
    final = cols["eval_return"][last]
    best = np.array([np.nanmax(cols["eval_return"][cols["seed"] == s]) for s in seeds])
    train_last = cols["train_return"][last]
    sd = float(np.nanstd(final, ddof=1)) if np.isfinite(final).sum() > 1 else 0.0
    return "\n".join(
        [
            f"# {spec.algo} on {spec.env}",
            "",
            run_facts(spec, wall_time),
            "",
            "| measure | mean over seeds | min | max |",
            "|---|---|---|---|",
            f"| final greedy return (sd {sd:.1f}) | {np.nanmean(final):.1f} | "
            f"{np.nanmin(final):.1f} | {np.nanmax(final):.1f} |",
            f"| best greedy return | {np.nanmean(best):.1f} | {np.nanmin(best):.1f} "
            f"| {np.nanmax(best):.1f} |",
            f"| training return, last interval | {np.nanmean(train_last):.1f} | "
            f"{np.nanmin(train_last):.1f} | {np.nanmax(train_last):.1f} |",
            "",
            f"Greedy return: the mean over {c.eval_episodes} episodes, acting greedily on the "
            f"members' mean Q, every {c.eval_every:,} steps; training return: the mean of the "
            "training episodes (with exploration) that ended in the interval.",
            "",
        ]
    )


def write_control_run(
    out: str | Path, spec: RunSpec, results: dict, config: dict | None = None
) -> Path:
    """Write a control task's run folder from the control harness's ``results`` (``config``:
    the ``config.json`` already written, else it is written)."""
    import xarray as xr

    from lktd_ppl import diagnostics as dg

    out = Path(out)
    config = write_config(out, spec) if config is None else config
    write_metrics_csv(out / "metrics.csv", control_metric_rows(spec, results))
    write_episodes_csv(out / "episodes.csv", spec, results["episodes"])

    # samples.nc: the chains of the seeds that did not diverge (none: no samples.nc)
    bad = diverged_seeds(spec.seed_list, results.get("divergence"))
    kept = np.array([s not in bad for s in spec.seed_list])
    probe_q = np.asarray(results["probe_q"])[kept]  # (seeds, evals, members, probes, A)
    seeds, evals, members, probes, actions = probe_q.shape
    q = np.transpose(probe_q, (0, 2, 1, 3, 4)).reshape(seeds * members, evals, probes, actions)
    steps = np.asarray(results["eval_steps"])
    attrs = {
        **sample_attrs(spec, members, steps),
        "cell": "probe state (see group probe_states)",
        "config": json.dumps(config),
    }
    if bad:
        attrs["seeds"] = [s for s in spec.seed_list if s not in bad]
        attrs["diverged_seeds"] = bad
    if seeds:
        names = [str(a) for a in range(actions)]
        tree = dg.q_samples_to_datatree(q, attrs=attrs, action_names=names)
        obs = np.asarray(results["probes"])[kept]
        tree["probe_states"] = xr.DataTree(xr.Dataset({"obs": (("seed", "cell", "obs_dim"), obs)}))
        dg.save_datatree(tree, out / "samples.nc")
    write_checkpoint(out, results["state"].learner)

    cols = read_metrics(out)
    summary = control_summary(spec, cols, results.get("wall_time"))
    summary += "\n".join(divergence_notes(spec, results))
    (out / "summary.md").write_text(summary)
    dg.plot_learning_curve(
        steps,
        np.asarray(results["eval_return"]),
        label=spec.algo,
        title=f"{spec.algo} on {spec.env}: greedy return",
        path=out / "learning_curve.png",
    )
    return out
