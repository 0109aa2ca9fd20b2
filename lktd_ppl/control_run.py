"""A control task's run folder (the layout is in :mod:`lktd_ppl.run_folder`'s docstring): written
from the control harness's results (:func:`lktd_ppl.agents.control.make_control_train`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lktd_ppl.config import RunSpec
from lktd_ppl.run_folder import (
    read_metrics,
    run_facts,
    sample_attrs,
    write_checkpoint,
    write_config,
    write_metrics_csv,
)

METRICS = ("step", "seed", "eval_return", "train_return")


def control_metric_rows(spec: RunSpec, results: dict) -> list[dict]:
    """One dict per (seed, evaluation), in the order of ``metrics.csv``."""
    steps = np.asarray(results["eval_steps"])
    rows = []
    for i, seed in enumerate(spec.seed_list):
        for j, step in enumerate(steps):
            rows.append(
                {
                    "step": int(step),
                    "seed": seed,
                    "eval_return": float(results["eval_return"][i, j]),
                    "train_return": float(results["train_return"][i, j]),
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
    best = np.array([np.max(cols["eval_return"][cols["seed"] == s]) for s in seeds])
    train_last = cols["train_return"][last]
    sd = float(np.std(final, ddof=1)) if len(final) > 1 else 0.0
    return "\n".join(
        [
            f"# {spec.algo} on {spec.env}",
            "",
            run_facts(spec, wall_time),
            "",
            "| measure | mean over seeds | min | max |",
            "|---|---|---|---|",
            f"| final greedy return (sd {sd:.1f}) | {np.mean(final):.1f} | {np.min(final):.1f} "
            f"| {np.max(final):.1f} |",
            f"| best greedy return | {np.mean(best):.1f} | {np.min(best):.1f} "
            f"| {np.max(best):.1f} |",
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

    probe_q = np.asarray(results["probe_q"])  # (seeds, evals, members, probes, A)
    seeds, evals, members, probes, actions = probe_q.shape
    q = np.transpose(probe_q, (0, 2, 1, 3, 4)).reshape(seeds * members, evals, probes, actions)
    steps = np.asarray(results["eval_steps"])
    attrs = {
        **sample_attrs(spec, members, steps),
        "cell": "probe state (see group probe_states)",
        "config": json.dumps(config),
    }
    tree = dg.q_samples_to_datatree(q, attrs=attrs, action_names=[str(a) for a in range(actions)])
    tree["probe_states"] = xr.DataTree(
        xr.Dataset({"obs": (("seed", "cell", "obs_dim"), np.asarray(results["probes"]))})
    )
    dg.save_datatree(tree, out / "samples.nc")
    write_checkpoint(out, results["state"].learner)

    cols = read_metrics(out)
    (out / "summary.md").write_text(control_summary(spec, cols, results.get("wall_time")))
    dg.plot_learning_curve(
        steps,
        np.asarray(results["eval_return"]),
        label=spec.algo,
        title=f"{spec.algo} on {spec.env}: greedy return",
        path=out / "learning_curve.png",
    )
    return out
