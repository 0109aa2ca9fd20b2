"""The classic-control study (spec section 7): methods x control environments x evaluation
seeds, resumable per batch of seeds.

A row is one method on one environment with its settings (agent settings and control-protocol
settings, resolved by the config layer like ``lktd train --env ENV --algo METHOD --set ...``).
Each batch of seeds (vmapped in one call) writes one compact file
``OUT/runs/<env>/<row>/seeds_<first>-<last>.npz`` (evaluation returns per evaluation, the mean
training return since the previous evaluation, the best-model return, wall time), so an
interrupted study resumes at the next batch.

Scores per seed: the final evaluation return (the mean of the last ``LAST_EVALS`` evaluations),
the training return over the same evaluations, and the best-model return (the best evaluated
learner re-evaluated on fresh episodes).  Per environment and row: the IQM over seeds with a 95%
stratified bootstrap interval (:mod:`lktd_ppl.study.iqm`), learning curves with bands, and wall
time.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lktd_ppl.study.data import write_npz
from lktd_ppl.study.iqm import stratified_bootstrap

LAST_EVALS = 3  # evaluations averaged into a seed's final score
SCORES = ("final", "train", "best")
SCORE_TITLES = {
    "final": "evaluation return (greedy; mean of the last 3 evaluations)",
    "train": "training return (with exploration; same evaluations)",
    "best": "best-model return (best evaluation's learner on 100 fresh episodes)",
}


class ControlRow(NamedTuple):
    """``method`` (a registry name) on ``env`` with ``agent`` and ``control`` settings (dotted
    keys, as in a config file's ``agent`` and ``control`` sections); ``label`` names the row
    (default: the method)."""

    env: str
    method: str
    agent: dict
    control: dict
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.method


def row_spec(row: ControlRow, seeds: Iterable[int]) -> Any:
    """The :class:`~lktd_ppl.config.RunSpec` of ``row`` on consecutive ``seeds``."""
    from lktd_ppl.config import build_spec

    seeds = list(seeds)
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"a batch's seeds must be consecutive, got {seeds}")
    return build_spec(
        algo=row.method,
        env=row.env,
        config={"agent": dict(row.agent), "control": dict(row.control)},
        seeds=len(seeds),
        first_seed=seeds[0],
        where=f"row {row.env}/{row.name}",
    )


def batch_path(out: Path, row: ControlRow, seeds: list[int]) -> Path:
    return out / "runs" / row.env / row.name / f"seeds_{seeds[0]:03d}-{seeds[-1]:03d}.npz"


def batches(seeds: list[int], size: int) -> list[list[int]]:
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def run_batch(
    row: ControlRow, seeds: list[int], out: Path, log: Callable[[str], None] | None = None
) -> Path:
    """Train ``row`` on ``seeds`` (vmapped) and write the batch's compact file."""
    import jax
    import jax.numpy as jnp

    from lktd_ppl.divergence import mask_after
    from lktd_ppl.training import make_train

    spec = row_spec(row, seeds)
    t0 = time.perf_counter()
    train = make_train(spec)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    res = train(keys, progress=False, log=log)
    wall = time.perf_counter() - t0
    div = res["divergence"]  # a diverged seed's returns from its divergence on: NaN
    steps = np.asarray(res["eval_steps"])
    path = batch_path(out, row, seeds)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(
        path,
        {
            "seeds": np.asarray(seeds),
            "eval_steps": np.asarray(res["eval_steps"]),
            "eval_return": mask_after(res["eval_return"], steps, div).astype(np.float32),
            "train_return": mask_after(res["train_return"], steps, div).astype(np.float32),
            "diverged": np.asarray(div["diverged"], bool),
            "train_episodes": np.asarray(res["train_episodes"], np.int32),
            "best_return": np.asarray(res["best_return"], np.float32),
            "wall_time": np.float64(wall),  # the batch's, compilation included
            "batch_size": np.int32(len(seeds)),
        },
    )
    return path


def pending(row: ControlRow, seeds: list[int], batch: int, out: Path) -> list[list[int]]:
    """The batches of ``seeds`` whose file is not written yet."""
    return [b for b in batches(seeds, batch) if not batch_path(out, row, b).exists()]


def load_row(out: Path, row: ControlRow, seeds: list[int] | None = None) -> dict | None:
    """The row's runs (arrays with a leading seed axis, sorted by seed; ``wall_time`` per seed =
    its batch's wall time / batch size), restricted to ``seeds``; None if there are none."""
    folder = out / "runs" / row.env / row.name
    parts = []
    for path in sorted(folder.glob("seeds_*.npz")):
        with np.load(path) as z:
            part = {k: z[k] for k in z.files}
        n = len(part["seeds"])
        part["wall_time"] = np.full(n, float(part["wall_time"]) / n)
        part["batch_size"] = np.full(n, int(part["batch_size"]))
        part.setdefault("diverged", np.zeros(n, bool))  # a file from before the guard
        parts.append(part)
    if not parts:
        return None
    steps = parts[0]["eval_steps"]
    keys = [k for k in parts[0] if k != "eval_steps"]
    data = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    order = np.argsort(data["seeds"])
    data = {k: v[order] for k, v in data.items()}
    if seeds is not None:
        keep = np.isin(data["seeds"], seeds)
        data = {k: v[keep] for k, v in data.items()}
    if not len(data["seeds"]):
        return None
    data["eval_steps"] = steps
    return data


def seed_scores(data: dict) -> dict[str, np.ndarray]:
    """Per seed: ``final`` (mean of the last evaluations), ``train`` (mean training return over
    the same evaluations, NaN-skipping) and ``best`` (the best-model return)."""
    with np.errstate(invalid="ignore"):
        train = np.nanmean(data["train_return"][:, -LAST_EVALS:], axis=1)
    return {
        "final": data["eval_return"][:, -LAST_EVALS:].mean(axis=1),
        "train": train,
        "best": np.asarray(data["best_return"], float),
    }


def summarise_row(data: dict) -> dict[str, Any]:
    """IQM and 95% stratified bootstrap interval of each score; wall time per seed."""
    out: dict[str, Any] = {"runs": len(data["seeds"]), "diverged": int(np.sum(data["diverged"]))}
    for name, scores in seed_scores(data).items():
        finite = scores[np.isfinite(scores)]
        point, lo, hi = stratified_bootstrap(finite) if len(finite) else (np.nan,) * 3
        out[name] = (point, lo, hi)
    out["wall_per_seed"] = float(np.mean(data["wall_time"]))
    out["batch_size"] = int(np.max(data["batch_size"]))
    out["seeds"] = data["seeds"]
    return out


def fmt_interval(v: tuple[float, float, float]) -> str:
    point, lo, hi = v
    if not np.isfinite(point):
        return "-"
    if not np.isfinite(lo):
        return f"{point:.1f}"
    return f"{point:.1f} [{lo:.1f}, {hi:.1f}]"


def seed_range(seeds: np.ndarray) -> str:
    seeds = np.asarray(seeds)
    if len(seeds) and np.array_equal(seeds, np.arange(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(int(s)) for s in seeds)


def write_tables(out: Path, rows: list[ControlRow], seeds: list[int]) -> dict[str, dict]:
    """``OUT/table.md`` and ``OUT/table.csv``: per environment and row, the IQM [95% interval]
    of each score over ``seeds``, the runs, and wall time; returns the summaries by row."""
    summaries: dict[str, dict] = {}
    lines = [
        "# Classic control: IQM over seeds [95% stratified bootstrap interval]",
        "",
        "Scores per seed: " + "; ".join(f"**{k}** = {t}" for k, t in SCORE_TITLES.items()) + ".",
        "Wall time per seed: its batch's wall time (seeds vmapped, compilation included) divided "
        "by the batch's seeds. Diverged: seeds the divergence guard froze (their returns from "
        "the divergence on are left out of the scores).",
        "",
    ]
    csv_rows = []
    for env in dict.fromkeys(r.env for r in rows):
        lines += [
            f"## {env}",
            "",
            "| row | runs (seeds) | final | train | best | wall s/seed (batch) | diverged |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in rows if r.env == env):
            data = load_row(out, row, seeds)
            if data is None:
                lines.append(f"| {row.name} | 0 | - | - | - | - | - |")
                continue
            s = summarise_row(data)
            summaries[f"{env}/{row.name}"] = s
            lines.append(
                f"| {row.name} | {s['runs']} ({seed_range(s['seeds'])}) | "
                + " | ".join(fmt_interval(s[k]) for k in SCORES)
                + f" | {s['wall_per_seed']:.1f} ({s['batch_size']}) | {s['diverged']} |"
            )
            csv_rows.append(
                {
                    "env": env,
                    "row": row.name,
                    "runs": s["runs"],
                    "diverged": s["diverged"],
                    **{
                        f"{k}_{p}": s[k][i]
                        for k in SCORES
                        for i, p in enumerate(("iqm", "lo", "hi"))
                    },
                    "wall_per_seed": s["wall_per_seed"],
                }
            )
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines))
    if csv_rows:
        with open(out / "table.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
            writer.writeheader()
            for r in csv_rows:
                writer.writerow(
                    {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}
                )
    return summaries


def curve_bands(returns: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """Per evaluation: the IQM over seeds and its bootstrap interval; ``returns`` (seeds, evals)."""
    points = [
        stratified_bootstrap(returns[:, j], level=level, reps=500) for j in range(returns.shape[1])
    ]
    return tuple(np.array(x) for x in zip(*points, strict=True))


def plot_curves(out: Path, rows: list[ControlRow], seeds: list[int]) -> list[Path]:
    """One PNG per environment: each row's evaluation return (IQM over seeds, 95% band) against
    environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env in dict.fromkeys(r.env for r in rows):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        drawn = 0
        for row in (r for r in rows if r.env == env):
            data = load_row(out, row, seeds)
            if data is None:
                continue
            mid, lo, hi = curve_bands(data["eval_return"])
            steps = data["eval_steps"]
            width = 2.5 if row.method == "lktd" else 1.2
            (line,) = ax.plot(steps, mid, lw=width, label=f"{row.name} ({len(data['seeds'])})")
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
            drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("environment steps")
        ax.set_ylabel("greedy evaluation return (IQM, 95% band)")
        ax.set_title(env)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"curves_{env}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
