"""A study row's per-run data: written one file per seed while it runs, folded into one compact
file per row, read back as one dict of per-run arrays.

While a row runs, every finished seed gets its own ``seeds_SSS-SSS.npz`` in the row's folder
(written whole, then renamed), so that an interrupted study resumes where it stopped; such a file
holds every window of every metric and the run's last window per cell (``c_*``,
:func:`lktd_ppl.metrics.final_cells`).  :func:`compact_row` folds them into the row's
``runs.npz`` (atomically: a temporary file, then a rename) and removes them.  The compact file
keeps what the tables, the plots and the targets read, per run:

- ``w_<metric>`` / ``s_<metric>`` (float32, exact): the last ``LAST_WINDOWS`` windows of every
  metric, against Q of the epsilon-greedy policy / against Q*;
- ``curve_coverage`` / ``curve_coverage_equal_tailed`` (float16): the action-averaged coverage
  of every window (the coverage-over-time plot), with the row's ``window_steps``;
- ``policy_frequency`` (float16): the final mean policy per cell;
- ``seeds``, ``wall_time`` (of the run's batch), ``batch_size``, ``backend``.

The per-cell fields and the earlier windows are not kept: rerunning the row's seeds into another
folder with ``--no-aggregate`` (which leaves the per-seed files as they are) regenerates them.
:func:`load_runs` reads the compact file and any per-seed files beside it, in seed order.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from lktd_ppl.study.aggregate import LAST_WINDOWS

COMPACT = "runs.npz"
CURVES = ("coverage", "coverage_equal_tailed")  # action-averaged over every window
SHORT = np.float16  # the plots' fields: three significant digits are plenty for a line


def seed_file(folder: Path, seed: int) -> Path:
    """The per-seed file of ``seed`` in a row's folder."""
    return folder / f"seeds_{seed:03d}-{seed:03d}.npz"


def seed_files(folder: Path) -> list[Path]:
    """The finished per-seed files of a row's folder (``seeds_AAA-BBB.npz``), by name."""
    return sorted(folder.glob("seeds_*.npz"))


def file_seeds(path: Path) -> range:
    """The seeds a per-seed file holds, from its name (``seeds_AAA-BBB.npz``: AAA to BBB)."""
    first, last = (int(x) for x in path.stem.removeprefix("seeds_").split("-"))
    return range(first, last + 1)


def covered_seeds(folder: Path) -> set[int]:
    """The seeds whose runs finished: those of the compact file and of the per-seed files."""
    done = {s for f in seed_files(folder) for s in file_seeds(f)}
    if (folder / COMPACT).is_file():
        with np.load(folder / COMPACT) as z:
            done.update(z["seeds"].tolist())
    return done


def write_npz(path: Path, arrays: dict) -> None:
    """``arrays`` into ``path`` (compressed), whole or not at all: a temporary file, renamed."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def write_seed_files(
    folder: Path, seeds: list[int], res: dict, wall: float, backend: str
) -> list[Path]:
    """One file per seed of a batch's results (``res``: a harness ``train``'s output for the
    seeds side by side; ``wall``: the batch's wall time in seconds)."""
    from lktd_ppl.agents.harness import window_means
    from lktd_ppl.metrics import final_cells

    w, w_star = window_means(res), window_means(res, "metrics_qstar")
    m = res["config"]["evals_per_window"]
    last = res["final"]
    members = last["latest"].shape[1]
    diverged = res.get("divergence", {}).get("diverged", np.zeros(len(seeds), bool))
    paths = []
    for j, seed in enumerate(seeds):
        cells = final_cells(
            last["samples"][j], last["valid"][j], last["slot"][j], members, res["truth"].shape
        )
        path = seed_file(folder, seed)
        write_npz(
            path,
            dict(
                seeds=np.array([seed]),
                diverged=np.array([bool(diverged[j])]),  # frozen by the divergence guard
                window_steps=res["eval_steps"][m - 1 :: m],
                mean_return=res["mean_return"][j : j + 1],
                policy_frequency=last["policy_frequency"][j : j + 1],
                wall_time=wall,  # of the whole batch (batch_size seeds side by side)
                batch_size=len(seeds),
                backend=backend,
                **{f"w_{k}": v[j : j + 1] for k, v in w.items()},
                **{f"s_{k}": v[j : j + 1] for k, v in w_star.items()},
                # the last window per cell (``final_cells``) and what it is scored against
                **{f"c_{k}": v[None] for k, v in cells.items()},
                c_truth=res["truth"][None],
                c_mask=res["mask"][None],
            ),
        )
        paths.append(path)
    return paths


def compact_part(part: dict) -> dict:
    """The compact fields (module docstring) of one per-seed file's arrays."""
    seeds = np.asarray(part["seeds"], dtype=np.int64)
    runs = len(seeds)
    out = {"seeds": seeds, "window_steps": np.asarray(part["window_steps"])}
    # files written before the divergence guard: not diverged by flag (the NaN check still holds)
    out["diverged"] = np.asarray(part.get("diverged", np.zeros(runs, bool)), bool)
    for k, v in part.items():
        if k.startswith(("w_", "s_")):
            out[k] = np.asarray(v)[:, -LAST_WINDOWS:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # windows before the burn-in ends hold NaN
        for k in CURVES:
            out[f"curve_{k}"] = np.nanmean(part[f"w_{k}"], axis=-1).astype(SHORT)
    out["policy_frequency"] = np.asarray(part["policy_frequency"]).astype(SHORT)
    out["wall_time"] = np.full(runs, float(part["wall_time"]))
    out["batch_size"] = np.full(runs, int(part.get("batch_size", runs)))
    out["backend"] = np.full(runs, str(part.get("backend", "cpu")))
    return out


def join_parts(parts: list[dict]) -> dict:
    """One dict of per-run arrays (in seed order) from compact parts of one row; a later part's
    seed replaces an earlier part's."""
    steps = parts[0]["window_steps"]
    if any(not np.array_equal(p["window_steps"], steps) for p in parts):
        raise ValueError("runs of different lengths (window_steps) in one row's folder")
    keys = set.intersection(*(set(p) for p in parts)) - {"window_steps"}
    data = {k: np.concatenate([p[k] for p in parts]) for k in sorted(keys)}
    seeds = data["seeds"]
    last = {s: i for i, s in enumerate(seeds.tolist())}  # the last part that has the seed
    order = np.array([last[s] for s in sorted(last)], dtype=np.int64)
    data = {k: v[order] for k, v in data.items()}
    data["window_steps"] = steps
    return data


def folded_parts(folder: Path, files: list[Path] | None = None) -> list[dict]:
    """The compact parts of a row's folder: its compact file's, then each per-seed file's (of
    ``files``; default: all of them)."""
    parts = [dict(np.load(folder / COMPACT))] if (folder / COMPACT).is_file() else []
    for part in parts:  # a compact file written before the divergence guard
        part.setdefault("diverged", np.zeros(len(part["seeds"]), bool))
    for f in seed_files(folder) if files is None else files:
        with np.load(f) as z:
            parts.append(compact_part({k: z[k] for k in z.files if not k.startswith("c_")}))
    return parts


def load_runs(out: Path, name: str) -> dict | None:
    """Row ``name``'s runs under ``out/runs/`` (compact file and per-seed files, in seed order;
    the float16 fields widened to float32), or None when it has none."""
    parts = folded_parts(out / "runs" / name)
    if not parts:
        return None
    return {
        k: v.astype(np.float32) if v.dtype == SHORT else v for k, v in join_parts(parts).items()
    }


def compact_row(folder: Path) -> int:
    """Folds the per-seed files of a row's folder into its compact file, then removes them;
    returns how many runs were folded in (0: nothing to do)."""
    files = seed_files(folder)
    if not files:
        return 0
    write_npz(folder / COMPACT, join_parts(folded_parts(folder, files)))
    for f in files:
        f.unlink()
    return sum(len(file_seeds(f)) for f in files)
